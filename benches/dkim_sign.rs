//! The private-key work of a forward: DKIM signatures per second with RSA-2048 and Ed25519
//! through the code ferrymail signs with (mail-auth over aws-lc-rs, a 10 KB message), the
//! bare RSA operation, and OpenSSL's `openssl speed rsa2048` beside them in the same run.

#[path = "support/machine.rs"]
mod machine;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{Ed25519KeyPair, RSA_PKCS1_SHA256};
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use std::process::Command;
use std::time::{Duration, Instant};

/// How long each measurement runs, per thread count.
const RUN: Duration = Duration::from_secs(3);

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("dkim_sign bench: skipped (run it with `cargo bench --bench dkim_sign`)");
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("# DKIM signing cost\n");
    println!("machine: {cores} cores ({})\n", machine::cpu_model());
    let message = message();

    let rsa_pair = RsaKeyPair::generate(KeySize::Rsa2048).expect("an RSA-2048 key");
    let rsa_der: Pkcs8V1Der = rsa_pair.as_der().expect("its PKCS#8");
    let ed_pair = Ed25519KeyPair::generate().expect("an Ed25519 key");
    let ed_der: Pkcs8V1Der = ed_pair.as_der().expect("its PKCS#8");
    // One signer per key, made once and reused, as ferrymail keeps its parsed keys.
    let rsa_key = RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        rsa_der.as_ref().to_vec(),
    )))
    .expect("mail-auth takes the RSA key");
    let ed_key = Ed25519Key::from_pkcs8_maybe_unchecked_der(ed_der.as_ref())
        .expect("mail-auth takes the Ed25519 key");
    let headers = ["From", "To", "Subject", "Date", "Message-ID"];
    let rsa_signer = DkimSigner::from_key(rsa_key)
        .domain("bench.test")
        .selector("fm1")
        .headers(headers);
    let ed_signer = DkimSigner::from_key(ed_key)
        .domain("bench.test")
        .selector("fm2")
        .headers(headers);

    println!("| operation | 1 thread | {cores} threads |");
    println!("| --- | ---: | ---: |");
    let rng = SystemRandom::new();
    let digest = [7u8; 64];
    row("RSA-2048 sign, aws-lc-rs alone", cores, || {
        let mut sig = vec![0u8; rsa_pair.public_modulus_len()];
        rsa_pair
            .sign(&RSA_PKCS1_SHA256, &rng, &digest, &mut sig)
            .expect("signing");
    });
    row(
        "DKIM-Signature rsa-sha256, 10 KB (mail-auth)",
        cores,
        || {
            std::hint::black_box(rsa_signer.sign(&message).expect("signing").to_header());
        },
    );
    row(
        "DKIM-Signature ed25519-sha256, 10 KB (mail-auth)",
        cores,
        || {
            std::hint::black_box(ed_signer.sign(&message).expect("signing").to_header());
        },
    );
    row("SHA-256 of the 10 KB body alone", cores, || {
        std::hint::black_box(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            &message,
        ));
    });

    println!(
        "\nOpenSSL on the same machine (`openssl speed -seconds 3 [-multi {cores}] rsa2048`):\n"
    );
    for multi in [None, Some(cores)] {
        let mut cmd = Command::new("openssl");
        cmd.args(["speed", "-seconds", "3"]);
        if let Some(n) = multi {
            cmd.args(["-multi", &n.to_string()]);
        }
        cmd.arg("rsa2048");
        match cmd.output() {
            Ok(out) => {
                let text = String::from_utf8_lossy(&out.stdout);
                let line = text
                    .lines()
                    .rev()
                    .find(|l| l.trim_start().starts_with("rsa 2048") || l.contains("rsa  2048"))
                    .unwrap_or("(no rsa 2048 line)");
                println!(
                    "    {} thread(s): {}",
                    multi.unwrap_or(1),
                    line.split_whitespace().collect::<Vec<_>>().join(" ")
                );
            }
            Err(e) => println!("    openssl: {e}"),
        }
    }
    println!(
        "\nOpenSSL's columns: sign s, verify s, sign/s, verify/s (or the encrypt/decrypt columns of OpenSSL 3)."
    );
}

/// Operations per second of `op` on 1 thread and on `cores` threads.
fn row(name: &str, cores: usize, op: impl Fn() + Sync) {
    let rate = |threads: usize| -> f64 {
        let start = Instant::now();
        let done: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        let mut n = 0usize;
                        while start.elapsed() < RUN {
                            op();
                            n += 1;
                        }
                        n
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
        });
        done as f64 / start.elapsed().as_secs_f64()
    };
    println!("| {name} | {:.0}/s | {:.0}/s |", rate(1), rate(cores));
}

/// A 10 KB message like the MX bench's.
fn message() -> Vec<u8> {
    let mut m = b"From: sender@sender.test\r\nTo: hello@bench.test\r\nSubject: bench\r\n\
Date: Sat, 05 Dec 2026 12:00:00 +0000\r\nMessage-ID: <bench@sender.test>\r\n\r\n"
        .to_vec();
    while m.len() < 10_240 {
        m.extend_from_slice(b"All work and no play makes a mail server a dull server.\r\n");
    }
    m
}
