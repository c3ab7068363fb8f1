//! Self-service: what a mailbox's owner changes on their own page without the operator
//! (password, app passwords, forwarding, vacation), and which of it is in effect.

pub mod app_password;
pub mod settings;

pub use settings::{AppPassword, Forwarding, Own, OwnPassword, SettingsError};

use sha2::{Digest, Sha256};

use crate::spec::model::{SelfService, Vacation};
use crate::store::records::AccountRecord;

/// App passwords one account keeps.
pub const MAX_APP_PASSWORDS: usize = 20;
/// Characters of an app password's name.
pub const MAX_NAME_CHARS: usize = 60;
/// Addresses mail may be forwarded to: each is a Sieve redirect, and a run makes at
/// most this many.
pub const MAX_FORWARDS: usize = crate::sieve::MAX_REDIRECTS;
/// Characters of a vacation reply's subject and text.
pub const MAX_SUBJECT_CHARS: usize = 200;
/// A reply's text in bytes, with CRLF line ends: the Sieve compiler takes strings of
/// 4 KiB at most.
pub const MAX_REPLY_BYTES: usize = 4_000;

/// What the owner's settings say of the spec's hash they replaced.
pub fn fingerprint(spec_hash: &str) -> String {
    hex::encode(Sha256::digest(spec_hash.as_bytes()))
}

/// The main password's hash in effect: the owner's own while the spec still holds the
/// hash it replaced; a new hash in the spec (an operator's reset) wins over it.
pub fn main_hash<'a>(record: &'a AccountRecord, own: &'a Own) -> &'a str {
    match &own.password {
        Some(p)
            if record.allows(SelfService::Password)
                && p.over == fingerprint(&record.password_hash) =>
        {
            &p.hash
        }
        _ => &record.password_hash,
    }
}

/// Whether a login needs the owner's settings: their own password or app passwords.
pub fn keeps_credentials(record: &AccountRecord) -> bool {
    record.allows(SelfService::Password) || record.allows(SelfService::AppPasswords)
}

/// Whether delivery needs the owner's settings: their forwarding or vacation reply.
pub fn keeps_delivery_settings(record: &AccountRecord) -> bool {
    record.allows(SelfService::Forwarding) || record.allows(SelfService::Vacation)
}

/// The app passwords that open the account now: made while the main password in effect
/// was the one it is now. A new password, the owner's or an operator's reset, ends the
/// others: one made with a leaked password must not outlive it.
pub fn live_app_passwords<'a>(
    record: &'a AccountRecord,
    own: &'a Own,
) -> impl Iterator<Item = &'a AppPassword> {
    let main = fingerprint(main_hash(record, own));
    own.app_passwords
        .iter()
        .filter(move |a| record.allows(SelfService::AppPasswords) && a.over == main)
}

/// The vacation reply in effect: the owner's, when they may set one and did, else the
/// spec's.
pub fn vacation<'a>(record: &'a AccountRecord, own: &'a Own) -> Option<&'a Vacation> {
    match &own.vacation {
        Some(v) if record.allows(SelfService::Vacation) => Some(v),
        _ => record.vacation.as_ref(),
    }
}

/// The script run in the declared vacation's place for an owner who set their own
/// vacation or forwarding: the reply in effect on `today` (theirs, else the spec's), then
/// their redirects. None: nothing of theirs applies and the declared reply runs as
/// before; Some("") is an owner's choice of no reply and no forwarding.
pub fn owner_script(record: &AccountRecord, own: &Own, today: chrono::NaiveDate) -> Option<String> {
    let forwarding = own
        .forwarding
        .as_ref()
        .filter(|f| record.allows(SelfService::Forwarding) && !f.to.is_empty());
    let own_reply = own.vacation.is_some() && record.allows(SelfService::Vacation);
    if forwarding.is_none() && !own_reply {
        return None;
    }
    let mut actions = String::new();
    if let Some(v) = vacation(record, own).filter(|v| crate::sieve::vacation::in_effect(v, today)) {
        actions.push_str(&crate::sieve::vacation::action(v));
    }
    if let Some(f) = forwarding {
        let copy = if f.keep { ":copy " } else { "" };
        for to in f.to.iter().take(MAX_FORWARDS) {
            let to = crate::sieve::vacation::quoted(to);
            actions.push_str(&format!("redirect {copy}{to};\n"));
        }
    }
    if actions.is_empty() {
        return Some(String::new());
    }
    Some(format!("require [\"vacation\", \"copy\"];\n{actions}"))
}

/// Why a name, address list or reply is refused, in words for the owner.
pub fn check_forwarding(to: &[String], own_address: &str) -> Result<(), String> {
    if to.len() > MAX_FORWARDS {
        return Err(format!("at most {MAX_FORWARDS} addresses"));
    }
    for address in to {
        let parsed = crate::address::Address::parse(address)
            .map_err(|_| format!("{address:?} is not an address"))?;
        if parsed.to_string().eq_ignore_ascii_case(own_address) {
            return Err("mail cannot be forwarded to the mailbox itself".into());
        }
    }
    Ok(())
}

pub fn check_vacation(v: &Vacation) -> Result<(), String> {
    if v.body.trim().is_empty() {
        return Err("the reply needs a text".into());
    }
    let crlf = v.body.replace("\r\n", "\n").replace('\n', "\r\n");
    if crlf.len() > MAX_REPLY_BYTES {
        return Err(format!(
            "the reply is at most {MAX_REPLY_BYTES} bytes ({} now; letters outside English take two to four each)",
            crlf.len()
        ));
    }
    if v.subject
        .as_deref()
        .is_some_and(|s| s.chars().count() > MAX_SUBJECT_CHARS || s.contains(['\r', '\n']))
    {
        return Err(format!(
            "the subject is one line of at most {MAX_SUBJECT_CHARS} characters"
        ));
    }
    for (what, day) in [("first", &v.from), ("last", &v.until)] {
        if let Some(day) = day
            && crate::sieve::vacation::parse_date(day).is_none()
        {
            return Err(format!("the {what} day {day:?} is not a date (2026-12-20)"));
        }
    }
    // What is saved runs at delivery: it must compile now, not fail then.
    crate::sieve::compile(crate::sieve::vacation::script(v).as_bytes())
        .map(drop)
        .map_err(|e| format!("the reply cannot be sent as written ({e})"))
}
