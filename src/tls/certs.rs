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
    /// What is served, newest last; a name goes to the newest certificate that has it.
    active: Vec<Loaded>,
    /// Served when the client names nothing we know (or no name at all).
    fallback: Arc<CertifiedKey>,
    by_name: HashMap<String, Arc<CertifiedKey>>,
}

impl Table {
    fn new(active: Vec<Loaded>, fallback: Arc<CertifiedKey>) -> Table {
        let mut by_name = HashMap::new();
        for cert in &active {
            for name in &cert.info.names {
                by_name.insert(name.clone(), cert.key.clone());
            }
        }
        Table {
            active,
            fallback,
            by_name,
        }
    }
}

/// The resolver all TLS listeners share.
pub struct Certificates {
    table: ArcSwap<Table>,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates")
            .field("served", &self.served())
            .finish()
    }
}

impl Certificates {
    /// Starts with one certificate, also the fallback.
    pub fn new(first: Loaded) -> Arc<Certificates> {
        let fallback = first.key.clone();
        Arc::new(Certificates {
            table: ArcSwap::from_pointee(Table::new(vec![first], fallback)),
        })
    }

    /// Serves `cert` from now on for its names (and as the fallback when `fallback`).
    /// It replaces the certificate it takes over from (the fallback, or one whose names
    /// it all covers): a name the new one leaves out is no longer served from the old.
    /// Handshakes already under way finish with what they had.
    pub fn install(&self, cert: Loaded, fallback: bool) {
        self.table.rcu(|old| {
            let mut active: Vec<Loaded> = old
                .active
                .iter()
                .filter(|c| {
                    let replaced_fallback = fallback && Arc::ptr_eq(&c.key, &old.fallback);
                    let covered = c.info.names.iter().all(|n| cert.info.names.contains(n));
                    !replaced_fallback && !covered
                })
                .cloned()
                .collect();
            active.push(cert.clone());
            let next_fallback = if fallback {
                cert.key.clone()
            } else {
                old.fallback.clone()
            };
            Table::new(active, next_fallback)
        });
    }

    /// What is being served now.
    pub fn served(&self) -> Vec<CertInfo> {
        self.table
            .load()
            .active
            .iter()
            .map(|c| c.info.clone())
            .collect()
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

/// `config` without TLS 1.3 session tickets, for IMAP. Clients built on imaplib2
/// (offlineimap) read and write one TLS socket from two threads; the tickets a TLS 1.3
/// server sends right after the handshake reach it while one thread reads and the other
/// writes, and OpenSSL fails there ("[SSL] internal error"). IMAP connections live long
/// (IDLE), so the resumption tickets would buy is small.
pub fn without_tickets(config: &ServerConfig) -> Arc<ServerConfig> {
    let mut config = config.clone();
    config.send_tls13_tickets = 0;
    Arc::new(config)
}

impl Certificates {
    /// The certificate for a name the client asked for (SNI): exact, then a wildcard one
    /// level up, then the server's own.
    fn lookup(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        let table = self.table.load();
        let Some(name) = sni.map(|n| n.to_ascii_lowercase()) else {
            return table.fallback.clone();
        };
        let wildcard = name.split_once('.').map(|(_, rest)| format!("*.{rest}"));
        table
            .by_name
            .get(&name)
            .or_else(|| wildcard.and_then(|w| table.by_name.get(&w)))
            .cloned()
            .unwrap_or_else(|| table.fallback.clone())
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.lookup(hello.server_name()))
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

    fn name_served(certs: &Certificates, sni: Option<&str>) -> String {
        let key = certs.lookup(sni);
        describe(&key.cert[0], "x").unwrap().names.join(",")
    }

    #[test]
    fn names_wildcards_and_the_fallback_are_served_and_dropped_names_go() {
        let load = |names: &[&str]| {
            let (c, k) = make(names);
            load_pem(c.as_bytes(), k.as_bytes(), "files").unwrap()
        };
        let certs = Certificates::new(load(&["mx.d.test", "old.d.test"]));
        certs.install(load(&["*.other.test"]), false);
        assert_eq!(name_served(&certs, Some("imap.other.test")), "*.other.test");
        assert_eq!(
            name_served(&certs, Some("unknown.test")),
            "mx.d.test,old.d.test"
        );
        assert_eq!(name_served(&certs, None), "mx.d.test,old.d.test");
        // The renewed server certificate leaves old.d.test out: it is no longer served
        // from the certificate it replaced.
        certs.install(load(&["mx.d.test"]), true);
        assert_eq!(name_served(&certs, Some("old.d.test")), "mx.d.test");
        assert_eq!(certs.served().len(), 2, "the wildcard one stays");
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
