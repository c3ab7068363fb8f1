//! Fuzzes the 7-bit copy a forward makes for a next hop without 8BITMIME or SMTPUTF8
//! (mime::downgrade): it may not panic, and the copy must be what delivery relies on.
#![no_main]

use ferrymail::mime::downgrade::{Shape, downgrade};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(Some(copy)) = downgrade(data) else {
        return;
    };
    // The body is 7-bit, so a host without 8BITMIME may be sent it; unless a part's
    // header keeps 8-bit (a raw UTF-8 file name), and then its container says 8bit.
    if Shape::of(&copy).eight_bit_body {
        let label = b"Content-Transfer-Encoding: 8bit";
        assert!(copy.windows(label.len()).any(|w| w == label));
    }
    // Made once: the copy sealed on arrival is the copy rebuilt at delivery.
    assert_eq!(downgrade(&copy), Ok(None));
    // Trace fields added above it in between change nothing below them.
    let mut traced = b"Received: from a by b; Sun, 6 Dec 2026 06:00:00 +0000\r\n".to_vec();
    traced.extend_from_slice(data);
    let again = downgrade(&traced).ok().flatten().unwrap_or(traced);
    assert!(again.ends_with(&copy));
});
