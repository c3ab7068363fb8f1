//! Who is asking: sessions (a random cookie, HttpOnly, SameSite=Strict, Secure over
//! https; new at every login, so a planted one is worthless), a CSRF token per session,
//! and logins checked against the admins or the mailbox accounts, rate limited per IP.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use sha2::{Digest, Sha256};

pub const COOKIE: &str = "ferrymail_session";
/// The cookie that carries the login form's CSRF token before there is a session.
pub const LOGIN_COOKIE: &str = "ferrymail_login";
const LIFETIME: Duration = Duration::from_secs(12 * 3600);
const MAX_SESSIONS: usize = 10_000;
/// Failed logins per client IP within WINDOW before further ones are refused unchecked.
pub const FAILURES_PER_IP: u32 = 10;
pub const WINDOW: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Admin,
    /// A mailbox user, who sees their own account only.
    Mailbox(String),
}

#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    pub role: Role,
    pub csrf: String,
    /// A digest of the credential the login used (the password hash, or the first-boot
    /// password): a session ends when that credential is changed or removed.
    pub credential: [u8; 32],
    created: Instant,
}

/// The digest a session keeps of the credential it was opened with.
pub fn fingerprint(credential: &str) -> [u8; 32] {
    Sha256::digest(credential.as_bytes()).into()
}

/// Random bytes as URL-safe base64 (cookies, CSRF tokens).
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    // aws-lc's generator does not fail once the library is up; an all-zero token would
    // still be refused below as a session nobody holds.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The sessions of this process (a restart logs everyone out).
#[derive(Default)]
pub struct Sessions {
    // Keyed by the token's hash: a memory dump does not hand out live cookies.
    map: Mutex<HashMap<[u8; 32], Session>>,
}

impl Sessions {
    /// A new session; returns its cookie value.
    pub fn create(&self, user: String, role: Role, credential: [u8; 32]) -> String {
        let token = random_token();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, s| s.created.elapsed() < LIFETIME);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.created).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        map.insert(
            key(&token),
            Session {
                user,
                role,
                csrf: random_token(),
                credential,
                created: Instant::now(),
            },
        );
        token
    }

    pub fn get(&self, token: &str) -> Option<Session> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&key(token))
            .filter(|s| s.created.elapsed() < LIFETIME)
            .cloned()
    }

    pub fn remove(&self, token: &str) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key(token));
    }
}

/// A cookie's value from the request's Cookie headers.
pub fn cookie(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// A Set-Cookie value: HttpOnly, SameSite=Strict, Secure when the request came over TLS.
pub fn set_cookie(name: &str, value: &str, secure: bool, max_age: Option<u64>) -> String {
    let mut text = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
    if secure {
        text.push_str("; Secure");
    }
    if let Some(age) = max_age {
        text.push_str(&format!("; Max-Age={age}"));
    }
    text
}

/// Equal without telling, by its timing, how much of a secret was right.
pub fn same(a: &str, b: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_random_and_found_only_by_their_token() {
        let sessions = Sessions::default();
        let a = sessions.create("alice".into(), Role::Admin, fingerprint("x"));
        let b = sessions.create(
            "bob".into(),
            Role::Mailbox("bob@example.test".into()),
            fingerprint("y"),
        );
        assert_ne!(a, b);
        assert_eq!(sessions.get(&a).unwrap().user, "alice");
        assert!(sessions.get("forged").is_none());
        assert_ne!(
            sessions.get(&a).unwrap().csrf,
            sessions.get(&b).unwrap().csrf
        );
        sessions.remove(&a);
        assert!(sessions.get(&a).is_none());
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            axum::http::header::COOKIE,
            format!("x=1; {COOKIE}={b}").parse().unwrap(),
        );
        assert_eq!(cookie(&headers, COOKIE).as_deref(), Some(b.as_str()));
        assert!(set_cookie(COOKIE, "v", true, None).contains("HttpOnly; SameSite=Strict; Secure"));
    }
}
