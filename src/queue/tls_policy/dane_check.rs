//! An MX's certificate checked against its TLSA records (RFC 7672 §3.1): DANE-EE by the
//! certificate or key alone, DANE-TA by a chain to the named authority, valid for the MX name.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::Digest;

use super::dane::Tlsa;

/// Authorities in a chain tried as DANE-TA at most: a chain is a handful of certificates,
/// and each try is a full path check.
const MAX_TA_TRIES: usize = 4;

/// A connector whose handshake succeeds only with a certificate one of `records` names
/// (all of them usable: DANE-TA or DANE-EE). Under DANE-TA the certificate must be valid
/// for the MX name, or for `target`, the name the records were found at.
pub fn connector(records: Vec<Tlsa>, target: Option<String>) -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let target = target.and_then(|t| ServerName::try_from(t).ok());
    let verifier = DaneVerifier {
        records,
        target,
        provider: provider.clone(),
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|_| rustls::ClientConfig::builder())
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Whether `record` names `cert` (RFC 6698 §2.1.2–2.1.3): its DER or its public key's,
/// as is, SHA-256 or SHA-512.
pub fn names(record: &Tlsa, cert: &[u8]) -> bool {
    let selected: &[u8] = match record.selector {
        0 => cert,
        1 => match x509_parser::parse_x509_certificate(cert) {
            Ok((_, parsed)) => parsed.tbs_certificate.subject_pki.raw,
            Err(_) => return false,
        },
        _ => return false,
    };
    match record.matching {
        0 => selected == record.data.as_slice(),
        1 => sha2::Sha256::digest(selected).as_slice() == record.data.as_slice(),
        2 => sha2::Sha512::digest(selected).as_slice() == record.data.as_slice(),
        _ => false,
    }
}

#[derive(Debug)]
struct DaneVerifier {
    records: Vec<Tlsa>,
    target: Option<ServerName<'static>>,
    provider: Arc<CryptoProvider>,
}

/// The failure a TLS report counts as "tlsa-invalid": the error's text says so in logs.
fn no_match(why: &str) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
        TlsaMismatch(why.to_string()),
    ))))
}

/// The certificate is not one the host's TLSA records name.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsaMismatch(String);

impl ServerCertVerifier for DaneVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // DANE-EE: the key or certificate itself; neither names nor dates are checked
        // (RFC 7672 §3.1.1), as the record already says which one it is.
        if self
            .records
            .iter()
            .any(|r| r.usage == 3 && names(r, end_entity))
        {
            return Ok(ServerCertVerified::assertion());
        }
        // DANE-TA: an authority the server sends in its chain, trusted as a root for this
        // one check; the chain to it must hold and name the MX host (§3.1.2).
        let mut last = None;
        let mut tried: Vec<&[u8]> = Vec::new();
        for ta in intermediates {
            // A chain padded with copies of the authority costs one check, not one each.
            if tried.len() >= MAX_TA_TRIES || tried.contains(&ta.as_ref()) {
                continue;
            }
            if !self.records.iter().any(|r| r.usage == 2 && names(r, ta)) {
                continue;
            }
            tried.push(ta.as_ref());
            let mut roots = RootCertStore::empty();
            if roots.add(ta.clone()).is_err() {
                continue;
            }
            let checked =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                    .build()
                    .map_err(|e| rustls::Error::General(e.to_string()))
                    .and_then(|webpki| {
                        let checked = webpki.verify_server_cert(
                            end_entity,
                            intermediates,
                            server_name,
                            ocsp_response,
                            now,
                        );
                        match (&checked, &self.target) {
                            (Err(_), Some(target)) => webpki.verify_server_cert(
                                end_entity,
                                intermediates,
                                target,
                                ocsp_response,
                                now,
                            ),
                            _ => checked,
                        }
                    });
            match checked {
                Ok(ok) => return Ok(ok),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            no_match("the certificate is not one the host's TLSA records name (DANE)")
        }))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_name_a_certificate_by_its_der_or_key_in_each_matching_type() {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["mx.example.test".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let der = cert.der().to_vec();
        let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
        let r = |selector, matching, data: Vec<u8>| Tlsa {
            usage: 3,
            selector,
            matching,
            data,
        };
        assert!(names(&r(0, 0, der.clone()), &der));
        assert!(names(&r(0, 1, sha2::Sha256::digest(&der).to_vec()), &der));
        assert!(names(&r(1, 0, spki.clone()), &der));
        assert!(names(&r(1, 1, sha2::Sha256::digest(&spki).to_vec()), &der));
        assert!(names(&r(1, 2, sha2::Sha512::digest(&spki).to_vec()), &der));
        // Another key, a hash of the wrong kind, rubbish for a certificate.
        assert!(!names(&r(1, 1, sha2::Sha256::digest(&der).to_vec()), &der));
        assert!(!names(&r(1, 2, sha2::Sha256::digest(&spki).to_vec()), &der));
        assert!(!names(
            &r(1, 1, sha2::Sha256::digest(&spki).to_vec()),
            b"junk"
        ));
    }
}
