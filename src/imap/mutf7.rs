//! IMAP's modified UTF-7 for folder names on the wire (RFC 3501 §5.1.3): what clients
//! send and expect, while the mailbox store keeps names in UTF-8.

use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};

const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::IMAP_MUTF7,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone),
);

/// A wire name to UTF-8; None when it is not valid modified UTF-7.
pub fn decode(wire: &[u8]) -> Option<String> {
    let mut out = String::new();
    let mut rest = wire;
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'&' {
            let end = tail.iter().position(|&c| c == b'-')?;
            let (encoded, after) = (&tail[..end], &tail[end + 1..]);
            if encoded.is_empty() {
                out.push('&');
            } else {
                let bytes = B64.decode(encoded).ok()?;
                if bytes.len() % 2 != 0 {
                    return None;
                }
                let units: Vec<u16> = bytes
                    .chunks(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
                    .collect();
                out.push_str(&String::from_utf16(&units).ok()?);
            }
            rest = after;
        } else if (0x20..0x7f).contains(&b) {
            out.push(b as char);
            rest = tail;
        } else {
            return None;
        }
    }
    Some(out)
}

/// A UTF-8 name to its wire form.
pub fn encode(name: &str) -> String {
    let mut out = String::new();
    let mut pending: Vec<u16> = Vec::new();
    let flush = |pending: &mut Vec<u16>, out: &mut String| {
        if !pending.is_empty() {
            let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
            out.push('&');
            out.push_str(&B64.encode(bytes));
            out.push('-');
            pending.clear();
        }
    };
    for c in name.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut pending, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut units = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut units));
        }
    }
    flush(&mut pending, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_the_rfc_examples() {
        assert_eq!(
            encode("~peter/mail/台北/日本語"),
            "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
        );
        assert_eq!(
            decode(b"~peter/mail/&U,BTFw-/&ZeVnLIqe-").unwrap(),
            "~peter/mail/台北/日本語"
        );
        assert_eq!(encode("Tom & Jerry"), "Tom &- Jerry");
        assert_eq!(decode(b"Tom &- Jerry").unwrap(), "Tom & Jerry");
        assert_eq!(
            decode(encode("Entwürfe 📨").as_bytes()).unwrap(),
            "Entwürfe 📨"
        );
        assert!(decode(b"&Jjo").is_none());
        assert!(decode("é".as_bytes()).is_none());
    }
}
