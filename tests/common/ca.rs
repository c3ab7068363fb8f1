//! A test certificate authority made with openssl: its root for SSL_CERT_FILE, leaf
//! certificates for given names, and the digests DANE's TLSA records name them by.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use sha2::Digest;

/// A test CA, and leaf certificates it signs for given names.
pub struct Ca {
    pub dir: PathBuf,
}

impl Ca {
    pub fn new(dir: &Path) -> Ca {
        let dir = dir.join("ca");
        std::fs::create_dir_all(&dir).expect("ca dir");
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=ferrymail test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
            ],
            &dir,
        );
        Ca { dir }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// A certificate for `name`, as (certificate, key) paths: a leaf (CA:FALSE).
    pub fn issue(&self, name: &str) -> (PathBuf, PathBuf) {
        let (crt, key, csr, ext) = (
            format!("{name}.crt"),
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.ext"),
        );
        std::fs::write(
            self.dir.join(&ext),
            format!("basicConstraints=critical,CA:FALSE\nsubjectAltName=DNS:{name}\n"),
        )
        .expect("extensions");
        openssl(
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &key,
                "-out",
                &csr,
            ],
            &self.dir,
        );
        openssl(
            &[
                "x509", "-req", "-in", &csr, "-CA", "ca.crt", "-CAkey", "ca.key", "-days", "2",
                "-extfile", &ext, "-out", &crt,
            ],
            &self.dir,
        );
        (self.dir.join(crt), self.dir.join(key))
    }
}

fn openssl(args: &[&str], dir: &Path) {
    let made = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(made.status.success(), "openssl {args:?}: {made:?}");
}

impl Ca {
    /// A file with the leaf for `name` followed by this CA's certificate: the chain a
    /// server sends when its TLSA record names the authority (DANE-TA).
    pub fn chain(&self, name: &str) -> (PathBuf, PathBuf) {
        let (crt, key) = self.issue(name);
        let chain = self.dir.join(format!("{name}.chain.crt"));
        let mut text = std::fs::read_to_string(&crt).expect("leaf");
        text.push_str(&std::fs::read_to_string(self.root()).expect("root"));
        std::fs::write(&chain, text).expect("chain");
        (chain, key)
    }
}

/// The DER of the first certificate in a PEM file.
pub fn der(pem_file: &Path) -> Vec<u8> {
    let text = std::fs::read(pem_file).expect("certificate file");
    let (_, pem) = x509_parser::pem::parse_x509_pem(&text).expect("PEM");
    pem.contents
}

/// Hex SHA-256 of a certificate's public key (SubjectPublicKeyInfo): a "3 1 1" TLSA record's data.
pub fn spki_sha256(pem_file: &Path) -> String {
    let der = der(pem_file);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("certificate");
    hex(&sha2::Sha256::digest(cert.tbs_certificate.subject_pki.raw))
}

/// Hex SHA-256 of a whole certificate: a "2 0 1" TLSA record's data.
pub fn cert_sha256(pem_file: &Path) -> String {
    hex(&sha2::Sha256::digest(der(pem_file)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
