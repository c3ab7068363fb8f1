//! DKIM keys: generated once at apply (RSA-2048 or Ed25519), kept in the store, and the
//! TXT record that publishes a key's public half, ready for the DNS capability.

pub mod signing;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;

use crate::store::KeyMaterial;

#[derive(Debug, thiserror::Error)]
#[error("could not generate a {0} DKIM key")]
pub struct KeygenError(pub &'static str);

/// Generates fresh key material for `algorithm` ("rsa-2048" or "ed25519").
pub fn generate(algorithm: &str) -> Result<KeyMaterial, KeygenError> {
    match algorithm {
        "ed25519" => {
            let pair = Ed25519KeyPair::generate().map_err(|_| KeygenError("ed25519"))?;
            let private: Pkcs8V1Der = pair.as_der().map_err(|_| KeygenError("ed25519"))?;
            Ok(KeyMaterial {
                private_der: private.as_ref().to_vec(),
                public: pair.public_key().as_ref().to_vec(),
            })
        }
        "rsa-2048" => {
            let pair =
                RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| KeygenError("rsa-2048"))?;
            let private: Pkcs8V1Der = pair.as_der().map_err(|_| KeygenError("rsa-2048"))?;
            let public: PublicKeyX509Der = pair
                .public_key()
                .as_der()
                .map_err(|_| KeygenError("rsa-2048"))?;
            Ok(KeyMaterial {
                private_der: private.as_ref().to_vec(),
                public: public.as_ref().to_vec(),
            })
        }
        _ => Err(KeygenError("unknown algorithm")),
    }
}

/// The TXT record value for `selector._domainkey.domain` (RFC 6376 §3.6.1, RFC 8463).
pub fn txt_record(algorithm: &str, public: &[u8]) -> String {
    let k = if algorithm == "ed25519" {
        "ed25519"
    } else {
        "rsa"
    };
    let p = base64::engine::general_purpose::STANDARD.encode(public);
    format!("v=DKIM1; k={k}; p={p}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_fresh_and_publishable() {
        let a = generate("ed25519").unwrap();
        let b = generate("ed25519").unwrap();
        assert_ne!(a.private_der, b.private_der);
        assert_eq!(a.public.len(), 32);
        assert!(txt_record("ed25519", &a.public).starts_with("v=DKIM1; k=ed25519; p="));
        let rsa = generate("rsa-2048").unwrap();
        // SubjectPublicKeyInfo of a 2048-bit key is 294 bytes.
        assert_eq!(rsa.public.len(), 294);
        assert!(txt_record("rsa-2048", &rsa.public).starts_with("v=DKIM1; k=rsa; p=MIIBIjAN"));
    }
}
