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

/// A self-signed certificate for `hostname`, made once and reused from `dir` so clients
/// that pinned it keep working across restarts. The key file is 0600.
pub fn self_signed(hostname: &str, dir: &Path) -> Result<Loaded, TlsError> {
    let cert_path = dir.join("self-signed.crt");
    let key_path = dir.join("self-signed.key");
    // Made again when missing, unreadable, or for another hostname.
    let current = from_files(&cert_path, &key_path, "self-signed")
        .ok()
        .filter(|c| {
            c.info
                .names
                .iter()
                .any(|n| n == &hostname.to_ascii_lowercase())
        });
    if let Some(current) = current {
        return Ok(current);
    }
    {
        let names = vec![hostname.to_string(), "localhost".to_string()];
        let certified = rcgen::generate_simple_self_signed(names)?;
        write_private(&key_path, certified.signing_key.serialize_pem().as_bytes())?;
        std::fs::write(&cert_path, certified.cert.pem()).map_err(io(&cert_path))?;
    }
    from_files(&cert_path, &key_path, "self-signed")
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
