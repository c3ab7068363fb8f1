//! `dns check`: each desired record looked up live, through the spec's resolver, and
//! found ok, missing (nothing of that name and type) or wrong (something else there).

use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::{RData, RecordType};

use super::records::{Kind, Record};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Missing,
    /// What is published instead.
    Wrong(Vec<String>),
}

fn record_type(kind: Kind) -> RecordType {
    match kind {
        Kind::A => RecordType::A,
        Kind::AAAA => RecordType::AAAA,
        Kind::MX => RecordType::MX,
        Kind::TXT => RecordType::TXT,
        Kind::CNAME => RecordType::CNAME,
        Kind::SRV => RecordType::SRV,
    }
}

/// An answer's data in the form `Record::data` uses.
fn data_of(rdata: &RData) -> Option<String> {
    Some(match rdata {
        RData::A(a) => a.to_string(),
        RData::AAAA(a) => a.to_string(),
        RData::MX(mx) => format!("{} {}", mx.preference, mx.exchange),
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
        _ => return None,
    })
}

/// Looks `record` up and compares. Several TXT records may share a name (SPF beside
/// site verifications): one equal to ours is enough.
pub async fn check(resolver: &TokioResolver, record: &Record) -> Verdict {
    let kind = record_type(record.kind);
    let found: Vec<String> = match resolver.lookup(format!("{}.", record.name), kind).await {
        Ok(lookup) => lookup
            .answers()
            .iter()
            .filter(|r| r.record_type() == kind)
            .filter_map(|r| data_of(&r.data))
            .collect(),
        Err(_) => Vec::new(),
    };
    if found.is_empty() {
        Verdict::Missing
    } else if found.iter().any(|f| f.eq_ignore_ascii_case(&record.data)) {
        Verdict::Ok
    } else {
        Verdict::Wrong(found)
    }
}
