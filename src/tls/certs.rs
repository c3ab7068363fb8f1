//! The certificates every TLS listener serves: one resolver shared by all of them,
//! choosing by SNI, its table swapped atomically when a certificate changes.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::Serialize;

use super::TlsError;

/// What a served certificate says about itself, for `status` and `plan`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct CertInfo {
    /// DNS names in the certificate (subjectAltName).
    pub names: Vec<String>,
    pub issuer: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// Where it came from: "self-signed", "files", "acme".
    pub source: String,
    /// SHA-256 of the certificate (DER), hex: what `openssl x509 -fingerprint -sha256` shows.
    pub sha256: String,
}

/// A chain and key ready to serve, with what it is.
#[derive(Clone)]
pub struct Loaded {
    pub key: Arc<CertifiedKey>,
    pub info: CertInfo,
}

/// Reads a PEM chain and key, checks that they belong together, and what they are for.
pub fn load_pem(chain_pem: &[u8], key_pem: &[u8], source: &str) -> Result<Loaded, TlsError> {
    let pem = |what: &str, e: String| TlsError::Pem {
        path: format!("{source} {what}"),
        message: e,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| pem("certificate", e.to_string()))?;
    if chain.is_empty() {
        return Err(pem("certificate", "no certificate in it".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| pem("key", e.to_string()))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let certified = CertifiedKey::from_der(chain.clone(), key, &provider)
        .map_err(|e| pem("key", format!("does not fit the certificate: {e}")))?;
    let info = describe(&chain[0], source)?;
    Ok(Loaded {
        key: Arc::new(certified),
        info,
    })
}

/// Names, issuer and validity of an end-entity certificate.
fn describe(cert: &CertificateDer<'_>, source: &str) -> Result<CertInfo, TlsError> {
    use x509_parser::prelude::*;
    let (_, parsed) = X509Certificate::from_der(cert.as_ref()).map_err(|e| TlsError::Pem {
        path: source.to_string(),
        message: format!("unreadable certificate: {e}"),
    })?;
    let mut names: Vec<String> = parsed
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        names.extend(
            parsed
                .subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(|cn| cn.to_ascii_lowercase()),
        );
    }
    Ok(CertInfo {
        names,
        issuer: parsed.issuer().to_string(),
        not_before: parsed.validity().not_before.timestamp(),
        not_after: parsed.validity().not_after.timestamp(),
        source: source.to_string(),
        sha256: {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(cert.as_ref()))
        },
    })
}

struct Table {
    by_name: HashMap<String, Arc<CertifiedKey>>,
    /// Served when the client names nothing we know (or no name at all).
    fallback: Arc<CertifiedKey>,
    served: Vec<CertInfo>,
}

/// The resolver all TLS listeners share.
pub struct Certificates {
    table: ArcSwap<Table>,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates")
            .field("served", &self.table.load().served)
            .finish()
    }
}

impl Certificates {
    /// Starts with one certificate, also the fallback.
    pub fn new(first: Loaded) -> Arc<Certificates> {
        let mut by_name = HashMap::new();
        for name in &first.info.names {
            by_name.insert(name.clone(), first.key.clone());
        }
        Arc::new(Certificates {
            table: ArcSwap::from_pointee(Table {
                by_name,
                fallback: first.key,
                served: vec![first.info],
            }),
        })
    }

    /// Serves `cert` from now on for its names (and as the fallback when `fallback`):
    /// handshakes already under way finish with what they had.
    pub fn install(&self, cert: Loaded, fallback: bool) {
        let old = self.table.load();
        let mut by_name = old.by_name.clone();
        for name in &cert.info.names {
            by_name.insert(name.clone(), cert.key.clone());
        }
        let mut served: Vec<CertInfo> = old
            .served
            .iter()
            .filter(|i| !i.names.iter().all(|n| cert.info.names.contains(n)))
            .cloned()
            .collect();
        served.push(cert.info.clone());
        self.table.store(Arc::new(Table {
            by_name,
            fallback: if fallback {
                cert.key
            } else {
                old.fallback.clone()
            },
            served,
        }));
    }

    /// What is being served now.
    pub fn served(&self) -> Vec<CertInfo> {
        self.table.load().served.clone()
    }

    /// A rustls configuration that takes its certificates from here.
    pub fn server_config(self: &Arc<Self>) -> Arc<ServerConfig> {
        Arc::new(
            ServerConfig::builder()
                .with_no_client_auth()
                .with_cert_resolver(self.clone()),
        )
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let table = self.table.load();
        let Some(name) = hello.server_name().map(|n| n.to_ascii_lowercase()) else {
            return Some(table.fallback.clone());
        };
        let wildcard = name.split_once('.').map(|(_, rest)| format!("*.{rest}"));
        table
            .by_name
            .get(&name)
            .or_else(|| wildcard.and_then(|w| table.by_name.get(&w)))
            .cloned()
            .or_else(|| Some(table.fallback.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make(names: &[&str]) -> (String, String) {
        let c = rcgen::generate_simple_self_signed(
            names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    #[test]
    fn a_chain_and_key_are_read_with_their_names_and_must_belong_together() {
        let (cert, key) = make(&["mx.d.test", "imap.d.test"]);
        let loaded = load_pem(cert.as_bytes(), key.as_bytes(), "files").unwrap();
        assert_eq!(loaded.info.names, ["mx.d.test", "imap.d.test"]);
        assert!(loaded.info.not_after > loaded.info.not_before);
        let (_, other_key) = make(&["x.test"]);
        let err = load_pem(cert.as_bytes(), other_key.as_bytes(), "files")
            .err()
            .unwrap();
        assert!(err.to_string().contains("does not fit"), "{err}");
        assert!(load_pem(b"not pem", key.as_bytes(), "files").is_err());
    }

    #[test]
    fn a_new_certificate_replaces_the_old_for_its_names() {
        let (c1, k1) = make(&["mx.d.test"]);
        let certs =
            Certificates::new(load_pem(c1.as_bytes(), k1.as_bytes(), "self-signed").unwrap());
        let (c2, k2) = make(&["mx.d.test"]);
        certs.install(
            load_pem(c2.as_bytes(), k2.as_bytes(), "acme").unwrap(),
            true,
        );
        let served = certs.served();
        assert_eq!(served.len(), 1);
        assert_eq!(served[0].source, "acme");
    }
}
