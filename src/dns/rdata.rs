//! Record data between the zone-file spelling the spec and plans use ("10 mx.d.test.")
//! and hickory's wire types, both ways, for the record types ferrymail publishes.

use std::str::FromStr;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, NULL, SRV, TXT};
use hickory_proto::rr::{Name, RData, RecordType};

use super::records::{Kind, caa_parts, txt_strings};

#[derive(Debug, thiserror::Error)]
#[error("{kind} data \"{data}\": {reason}")]
pub struct RdataError {
    kind: Kind,
    data: String,
    reason: String,
}

pub fn record_type(kind: Kind) -> RecordType {
    match kind {
        Kind::A => RecordType::A,
        Kind::AAAA => RecordType::AAAA,
        Kind::MX => RecordType::MX,
        Kind::TXT => RecordType::TXT,
        Kind::CNAME => RecordType::CNAME,
        Kind::SRV => RecordType::SRV,
        Kind::CAA => RecordType::CAA,
    }
}

/// The TXT records among `answers`, each one text (its strings joined).
pub fn txt_texts(answers: &[hickory_proto::rr::Record]) -> Vec<String> {
    answers
        .iter()
        .filter(|r| matches!(r.data, RData::TXT(_)))
        .map(|r| text_of(&r.data))
        .collect()
}

/// Data in the spelling `Record::data` uses, for any type hickory decodes (other types
/// print as hickory shows them: they are only ever listed, never compared).
pub fn text_of(rdata: &RData) -> String {
    match rdata {
        RData::A(a) => a.to_string(),
        RData::AAAA(a) => a.to_string(),
        RData::MX(mx) => format!("{} {}", mx.preference, mx.exchange),
        // One TXT record may be split into several strings; they are one text.
        RData::TXT(txt) => txt
            .txt_data
            .iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect::<String>(),
        RData::CNAME(c) => c.0.to_string(),
        RData::SRV(srv) => format!(
            "{} {} {} {}",
            srv.priority, srv.weight, srv.port, srv.target
        ),
        RData::CAA(caa) => format!(
            "{} {} \"{}\"",
            caa.flags(),
            caa.tag,
            String::from_utf8_lossy(&caa.value)
        ),
        other => other.to_string(),
    }
}

fn name(kind: Kind, data: &str, host: &str) -> Result<Name, RdataError> {
    let absolute = format!("{}.", host.trim_end_matches('.'));
    Name::from_str(if host == "." { "." } else { &absolute }).map_err(|e| RdataError {
        kind,
        data: data.to_string(),
        reason: e.to_string(),
    })
}

/// Wire data for a record the spec or the desired set describes.
pub fn to_rdata(kind: Kind, data: &str) -> Result<RData, RdataError> {
    let fail = |reason: &str| RdataError {
        kind,
        data: data.to_string(),
        reason: reason.to_string(),
    };
    let fields: Vec<&str> = data.split_ascii_whitespace().collect();
    let number = |s: &str| s.parse::<u16>().map_err(|_| fail("not a number"));
    Ok(match (kind, fields.as_slice()) {
        (Kind::A, _) => RData::A(A(data.trim().parse().map_err(|_| fail("not IPv4"))?)),
        (Kind::AAAA, _) => RData::AAAA(AAAA(data.trim().parse().map_err(|_| fail("not IPv6"))?)),
        (Kind::MX, [preference, host]) => {
            RData::MX(MX::new(number(preference)?, name(kind, data, host)?))
        }
        (Kind::CNAME, [host]) => RData::CNAME(CNAME(name(kind, data, host)?)),
        (Kind::SRV, [priority, weight, port, host]) => RData::SRV(SRV::new(
            number(priority)?,
            number(weight)?,
            number(port)?,
            name(kind, data, host)?,
        )),
        // A DKIM key is longer than one string may be (255 bytes): split, never in the
        // middle of a character (the data is ASCII in practice).
        (Kind::TXT, _) => RData::TXT(TXT::from_bytes(txt_strings(data))),
        // CAA's wire form is flags, tag length, tag, value (RFC 8659 §4.1); hickory's
        // CAA type cannot be built from parts outside the crate, so it goes as raw data.
        (Kind::CAA, _) => {
            let (flags, tag, value) = caa_parts(data).ok_or_else(|| fail("not FLAGS TAG VALUE"))?;
            let mut wire = vec![flags, tag.len() as u8];
            wire.extend_from_slice(tag.as_bytes());
            wire.extend_from_slice(value.as_bytes());
            RData::Unknown {
                code: RecordType::CAA,
                rdata: NULL::with(wire),
            }
        }
        _ => return Err(fail("wrong number of fields")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::records::canonical;

    #[test]
    fn data_survives_the_round_trip_through_wire_types() {
        for (kind, data) in [
            (Kind::A, "192.0.2.1"),
            (Kind::AAAA, "2001:db8::1"),
            (Kind::MX, "10 mx.d.test."),
            (Kind::CNAME, "mx.d.test."),
            (Kind::SRV, "0 1 993 mx.d.test."),
            (Kind::SRV, "0 0 0 ."),
            (Kind::TXT, "v=spf1 mx -all"),
        ] {
            let rdata = to_rdata(kind, data).unwrap();
            assert_eq!(canonical(kind, &text_of(&rdata)), canonical(kind, data));
        }
        let long = "p=".to_string() + &"A".repeat(600);
        let RData::TXT(txt) = to_rdata(Kind::TXT, &long).unwrap() else {
            panic!()
        };
        assert_eq!(txt.txt_data.len(), 3);
        assert!(to_rdata(Kind::MX, "mx.d.test").is_err());
    }
}
