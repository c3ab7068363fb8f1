//! An MX's certificate checked as its domain's MTA-STS policy asks (RFC 8461 §4.2): a
//! chain to a trusted root and valid for the MX name; refused in enforce mode, noted in testing.

use std::sync::{Arc, Mutex, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::tally::Outcome;

/// The system's trusted roots (or `SSL_CERT_FILE`/`SSL_CERT_DIR`), read once.
fn roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "reading the trusted root certificates");
            }
            let mut store = RootCertStore::empty();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::warn!(
                    "no trusted root certificates found: mail to domains whose MTA-STS policy enforces TLS will wait (install ca-certificates)"
                );
            }
            Arc::new(store)
        })
        .clone()
}

/// What testing mode would have refused (how TLS reports count it, and in words), noted
/// by the verifier for after the handshake.
pub type Noted = Arc<Mutex<Option<(Outcome, String)>>>;

/// A connector for an MX under a policy, and where a testing-mode failure is noted. In
/// testing mode the handshake succeeds wherever an opportunistic one would: what would
/// fail under enforce (no trusted roots here included) is only noted.
pub fn connector(enforce: bool) -> Result<(tokio_rustls::TlsConnector, Noted), String> {
    let noted: Noted = Arc::new(Mutex::new(None));
    let webpki = match WebPkiServerVerifier::builder(roots()).build() {
        Ok(webpki) => Some(webpki),
        Err(e) if enforce => return Err(format!("no certificate can be checked here: {e}")),
        Err(e) => {
            let why = format!("no certificate can be checked here: {e}");
            note(&noted, (Outcome::ValidationFailure, why));
            None
        }
    };
    let verifier = PolicyVerifier {
        webpki,
        enforce,
        noted: noted.clone(),
    };
    let config = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok((tokio_rustls::TlsConnector::from(Arc::new(config)), noted))
}

fn note(noted: &Noted, why: (Outcome, String)) {
    let mut noted = noted.lock().unwrap_or_else(|p| p.into_inner());
    noted.get_or_insert(why);
}

#[derive(Debug)]
struct PolicyVerifier {
    /// None only in testing mode, when no trusted roots could be read.
    webpki: Option<Arc<WebPkiServerVerifier>>,
    enforce: bool,
    noted: Noted,
}

impl PolicyVerifier {
    /// Enforce: the check's result. Testing: pass, noting a failure.
    fn judge<T>(&self, checked: Result<T, rustls::Error>, pass: T) -> Result<T, rustls::Error> {
        match checked {
            Ok(ok) => Ok(ok),
            Err(e) if self.enforce => Err(e),
            Err(e) => {
                let why = crate::error_chain::tls_words(&e);
                note(&self.noted, (Outcome::of_certificate(&e), why));
                Ok(pass)
            }
        }
    }
}

impl ServerCertVerifier for PolicyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(webpki) = &self.webpki else {
            return Ok(ServerCertVerified::assertion());
        };
        let checked =
            webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now);
        self.judge(checked, ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let Some(webpki) = &self.webpki else {
            return Ok(HandshakeSignatureValid::assertion());
        };
        let checked = webpki.verify_tls12_signature(message, cert, dss);
        self.judge(checked, HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let Some(webpki) = &self.webpki else {
            return Ok(HandshakeSignatureValid::assertion());
        };
        let checked = webpki.verify_tls13_signature(message, cert, dss);
        self.judge(checked, HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        match (&self.webpki, self.enforce) {
            (Some(webpki), true) => webpki.supported_verify_schemes(),
            // Testing mode offers what an opportunistic handshake offers: every scheme,
            // so no MX that takes plain STARTTLS is refused for its key type.
            _ => vec![
                SignatureScheme::ECDSA_NISTP256_SHA256,
                SignatureScheme::ECDSA_NISTP384_SHA384,
                SignatureScheme::ECDSA_NISTP521_SHA512,
                SignatureScheme::ED25519,
                SignatureScheme::ED448,
                SignatureScheme::RSA_PSS_SHA256,
                SignatureScheme::RSA_PSS_SHA384,
                SignatureScheme::RSA_PSS_SHA512,
                SignatureScheme::RSA_PKCS1_SHA256,
                SignatureScheme::RSA_PKCS1_SHA384,
                SignatureScheme::RSA_PKCS1_SHA512,
                SignatureScheme::ECDSA_SHA1_Legacy,
                SignatureScheme::RSA_PKCS1_SHA1,
            ],
        }
    }
}
