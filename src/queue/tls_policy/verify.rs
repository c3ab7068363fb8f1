//! An MX's certificate checked as its domain's MTA-STS policy asks (RFC 8461 §4.2): a
//! chain to a trusted root and valid for the MX name; refused in enforce mode, noted in testing.

use std::sync::{Arc, Mutex, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

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
                    "no trusted root certificates found: deliveries to domains with an MTA-STS policy in enforce mode will wait (install ca-certificates)"
                );
            }
            Arc::new(store)
        })
        .clone()
}

/// What testing mode would have refused, noted by the verifier for after the handshake.
pub type Noted = Arc<Mutex<Option<rustls::Error>>>;

/// A connector for an MX under a policy, and where a testing-mode failure is noted.
pub fn connector(enforce: bool) -> Result<(tokio_rustls::TlsConnector, Noted), rustls::Error> {
    let webpki = WebPkiServerVerifier::builder(roots())
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    let noted = Arc::new(Mutex::new(None));
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

#[derive(Debug)]
struct PolicyVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    enforce: bool,
    noted: Noted,
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
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(verified) => Ok(verified),
            Err(e) if self.enforce => Err(e),
            // Testing mode: deliver anyway, and say what enforce would have refused.
            Err(e) => {
                if let Ok(mut noted) = self.noted.lock() {
                    *noted = Some(e);
                }
                Ok(ServerCertVerified::assertion())
            }
        }
    }

    // The handshake's own signatures are checked whatever the mode: they prove the
    // peer holds the key of the certificate it showed.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}
