//! Fuzzes MTA-STS policy files as a delivery reads them from a receiving domain's HTTPS
//! server (RFC 8461 §3.2), and the MX matching that follows: neither may panic, and a
//! policy that parses must keep its promises.
#![no_main]

use ferrymail::queue::tls_policy::{MAX_POLICY_BYTES, Mode, Policy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A fetch never hands over more than this.
    let data = &data[..data.len().min(MAX_POLICY_BYTES)];
    let Ok(policy) = Policy::parse(data) else {
        return;
    };
    assert!(policy.max_age <= 31_557_600);
    assert!(policy.mode == Mode::None || !policy.mx.is_empty());
    for pattern in &policy.mx {
        // Every listed name matches itself, and its wildcard one label below.
        match pattern.strip_prefix("*.") {
            Some(parent) => assert!(policy.allows(&format!("mx.{parent}"))),
            None => assert!(policy.allows(pattern)),
        }
    }
    // Host names taken from the input itself: matching any of them must not panic.
    if let Ok(text) = std::str::from_utf8(data) {
        for word in text.split_whitespace().take(64) {
            let _ = policy.allows(word);
        }
    }
});
