//! A failed DNS lookup in words, for logs, `queue list`, bounces and `doctor`: hickory's
//! own Display prints Rust Debug text (`no records found for Query { name: Name(…) … }`).

use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;

/// Why a lookup failed, without the name asked (the caller says what it looked up):
/// "no such domain (NXDOMAIN)", "the DNS server failed to answer (SERVFAIL)", "no answer
/// from the DNS server (timed out)".
pub fn explain(e: &NetError) -> String {
    match e {
        NetError::Dns(DnsError::NoRecordsFound(none)) => match none.response_code {
            ResponseCode::NXDomain => "no such domain (NXDOMAIN)".into(),
            _ => "no such record".into(),
        },
        NetError::Dns(DnsError::ResponseCode(code)) => answered(*code),
        NetError::Dns(DnsError::DnssecBogus) => "the answer failed DNSSEC validation".into(),
        NetError::Dns(DnsError::Nsec { .. }) => "no such record (proven by DNSSEC)".into(),
        NetError::Timeout => "no answer from the DNS server (timed out)".into(),
        NetError::Io(io) => format!("the DNS server cannot be reached: {io}"),
        NetError::NoConnections => "no DNS server can be reached".into(),
        NetError::Busy => "the resolver is busy; try again".into(),
        NetError::Proto(p) => format!("the DNS answer cannot be read: {p}"),
        other => other.to_string(),
    }
}

/// An error response code from the server, named as dig names it.
fn answered(code: ResponseCode) -> String {
    match code {
        ResponseCode::ServFail => "the DNS server failed to answer (SERVFAIL)".into(),
        ResponseCode::Refused => "the DNS server refused the query (REFUSED)".into(),
        ResponseCode::NXDomain => "no such domain (NXDOMAIN)".into(),
        other => format!(
            "the DNS server answered \"{other}\" (response code {})",
            u16::from(other)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::net::NoRecords;
    use hickory_resolver::proto::op::Query;
    use hickory_resolver::proto::rr::{Name, RecordType};

    #[test]
    fn every_kind_of_failure_is_said_in_words() {
        let query = Query::query(Name::from_ascii("x.example.").unwrap(), RecordType::MX);
        let nx = NetError::Dns(DnsError::NoRecordsFound(NoRecords::new(
            query.clone(),
            ResponseCode::NXDomain,
        )));
        let empty = NetError::Dns(DnsError::NoRecordsFound(NoRecords::new(
            query,
            ResponseCode::NoError,
        )));
        let cases = [
            (nx, "no such domain (NXDOMAIN)"),
            (empty, "no such record"),
            (
                NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail)),
                "the DNS server failed to answer (SERVFAIL)",
            ),
            (
                NetError::Timeout,
                "no answer from the DNS server (timed out)",
            ),
        ];
        for (error, words) in cases {
            // hickory's own text has the Debug form this replaces.
            assert_eq!(explain(&error), words, "{error}");
            assert!(!explain(&error).contains("Query {"));
        }
    }
}

/// What a negative answer said: no such name, or the name without that record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Absent {
    NoDomain,
    NoRecord,
}

/// Whether a failed lookup was a plain "not there", as a validating resolver reports it
/// too (proven by NSEC, or in an unsigned zone); None for a failure or a bogus answer.
pub fn absent(e: &NetError) -> Option<Absent> {
    let code = match e {
        NetError::Dns(DnsError::NoRecordsFound(none)) => none.response_code,
        NetError::Dns(DnsError::Nsec {
            response, proof, ..
        }) if !proof.is_bogus() => response.response_code,
        _ => return None,
    };
    Some(if code == ResponseCode::NXDomain {
        Absent::NoDomain
    } else {
        Absent::NoRecord
    })
}
