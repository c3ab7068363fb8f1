//! TLS for every listener: one certificate resolver (certs.rs) fed from the source the
//! spec names: `self-signed` (generated, kept in data_dir), `files` (PEM, reloaded).

pub mod acme;
pub mod certs;
pub mod files;

use std::path::Path;

pub use certs::{CertInfo, Certificates, Loaded, without_tickets};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Pem { path: String, message: String },
    #[error("generating a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Installs the process-wide crypto provider once (several crates enable ring as well as
/// aws-lc-rs, and rustls refuses to guess between them).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A self-signed certificate lasts a year, as a CA's would at most; it is made again
/// at a start within its last 30 days.
const SELF_SIGNED_DAYS: i64 = 365;
const SELF_SIGNED_RENEW_DAYS: i64 = 30;

/// Where `self_signed` keeps its certificate and key in the data directory.
pub fn self_signed_paths(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    (dir.join("self-signed.crt"), dir.join("self-signed.key"))
}

/// A self-signed certificate for `hostname` (its common name, and a name with
/// "localhost"), made once and reused from `dir` so clients that pinned it keep working
/// across restarts, until it nears its end. The key file is 0600.
pub fn self_signed(hostname: &str, dir: &Path) -> Result<Loaded, TlsError> {
    self_signed_at(hostname, dir, crate::store::unix_now())
}

/// For a server that runs for months: serves a new self-signed certificate when the one
/// served nears its end (`self_signed`'s rule at time `now`). True if it changed.
pub fn renew_self_signed(
    certs: &Certificates,
    hostname: &str,
    dir: &Path,
    now: i64,
) -> Result<bool, TlsError> {
    let fresh = self_signed_at(hostname, dir, now)?;
    if certs.served().iter().any(|c| c.sha256 == fresh.info.sha256) {
        return Ok(false);
    }
    certs.install(fresh, true);
    Ok(true)
}

fn self_signed_at(hostname: &str, dir: &Path, now: i64) -> Result<Loaded, TlsError> {
    let (cert_path, key_path) = self_signed_paths(dir);
    // Made again when missing, unreadable, for another hostname, or ending soon.
    let current = from_files(&cert_path, &key_path, "self-signed")
        .ok()
        .filter(|c| {
            c.info
                .names
                .iter()
                .any(|n| n == &hostname.to_ascii_lowercase())
                && c.info.not_after - now > SELF_SIGNED_RENEW_DAYS * 86_400
        });
    if let Some(current) = current {
        return Ok(current);
    }
    {
        let mut params =
            rcgen::CertificateParams::new(vec![hostname.to_string(), "localhost".to_string()])?;
        let mut subject = rcgen::DistinguishedName::new();
        subject.push(rcgen::DnType::CommonName, hostname);
        params.distinguished_name = subject;
        // A day back: a client whose clock is a little behind still accepts it.
        let (y, m, d) = day_of(now - 86_400);
        params.not_before = rcgen::date_time_ymd(y, m, d);
        let (y, m, d) = day_of(now + SELF_SIGNED_DAYS * 86_400);
        params.not_after = rcgen::date_time_ymd(y, m, d);
        let key = rcgen::KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        write_private(&key_path, key.serialize_pem().as_bytes())?;
        std::fs::write(&cert_path, cert.pem()).map_err(io(&cert_path))?;
    }
    from_files(&cert_path, &key_path, "self-signed")
}

/// The UTC day (year, month, day) `unix` falls on, as rcgen takes validity dates.
fn day_of(unix: i64) -> (i32, u8, u8) {
    use chrono::Datelike as _;
    let day = chrono::DateTime::from_timestamp(unix, 0).unwrap_or_default();
    (day.year(), day.month() as u8, day.day() as u8)
}

/// A certificate chain and its private key from PEM files.
pub fn from_files(cert: &Path, key: &Path, source: &str) -> Result<Loaded, TlsError> {
    let chain = std::fs::read(cert).map_err(io(cert))?;
    let key_pem = std::fs::read(key).map_err(io(key))?;
    certs::load_pem(&chain, &key_pem, source).map_err(|e| match e {
        TlsError::Pem { path, message } => TlsError::Pem {
            path: format!("{path} ({}, {})", cert.display(), key.display()),
            message,
        },
        other => other,
    })
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    crate::private_file::write(path, bytes).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_server_renews_its_self_signed_certificate_near_its_end() {
        install_crypto_provider();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let now = crate::store::unix_now();
        let first = self_signed_at("mx.example.test", dir.path(), now).expect("made");
        let first_end = first.info.not_after;
        let certs = Certificates::new(first);
        // A day later it is kept; 340 days later (25 before its end) it is made again.
        assert!(!renew_self_signed(&certs, "mx.example.test", dir.path(), now + 86_400).unwrap());
        let later = now + 340 * 86_400;
        assert!(renew_self_signed(&certs, "mx.example.test", dir.path(), later).unwrap());
        let served = certs.served();
        assert_eq!(served.len(), 1, "the old one is replaced: {served:?}");
        assert!(served[0].not_after > first_end + 300 * 86_400, "{served:?}");
        assert!(served[0].names.contains(&"mx.example.test".to_string()));
    }
}
