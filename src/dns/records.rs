//! The DNS records a mail domain needs, computed from the spec and the store's DKIM keys:
//! MX, SPF, DKIM, DMARC, the host names and SRV records clients use to find the services.

use std::fmt;

use crate::spec::{Listeners, Spec};

/// Records are published with this TTL unless the spec says otherwise.
pub const TTL: u32 = 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Kind {
    MX,
    TXT,
    CNAME,
    SRV,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::MX => "MX",
            Kind::TXT => "TXT",
            Kind::CNAME => "CNAME",
            Kind::SRV => "SRV",
        })
    }
}

/// One record: an absolute name (no trailing dot), its type and its data as written in
/// a zone file (TXT data unquoted; it is quoted and split on output).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Record {
    pub name: String,
    pub kind: Kind,
    pub ttl: u32,
    pub data: String,
}

impl Record {
    fn new(name: impl Into<String>, kind: Kind, data: impl Into<String>) -> Record {
        Record {
            name: name.into(),
            kind,
            ttl: TTL,
            data: data.into(),
        }
    }

    /// The record as a zone-file line (RFC 1035 master file format).
    pub fn zone_line(&self) -> String {
        let data = match self.kind {
            Kind::TXT => quote_txt(&self.data),
            _ => self.data.clone(),
        };
        format!("{}. {} IN {} {}", self.name, self.ttl, self.kind, data)
    }
}

/// TXT data as quoted strings of at most 255 bytes each (a DKIM key is longer).
fn quote_txt(text: &str) -> String {
    let escaped: Vec<String> = text
        .as_bytes()
        .chunks(255)
        .map(|chunk| {
            let s = String::from_utf8_lossy(chunk);
            format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
        })
        .collect();
    escaped.join(" ")
}

/// A DKIM key as the store holds it: selector, algorithm and public key (DER).
pub struct DkimKey {
    pub selector: String,
    pub algorithm: String,
    pub public: Vec<u8>,
}

/// RFC 6186 services a listener provides: (SRV service label, listener address).
fn services(listeners: &Listeners) -> [(&'static str, Option<std::net::SocketAddr>); 6] {
    [
        ("_submission._tcp", listeners.submission),
        ("_submissions._tcp", listeners.submissions),
        ("_imap._tcp", listeners.imap),
        ("_imaps._tcp", listeners.imaps),
        ("_pop3._tcp", listeners.pop3),
        ("_pop3s._tcp", listeners.pop3s),
    ]
}

/// Every record `domain` needs. `dkim` holds the keys the store generated for it (empty
/// before the first apply).
pub fn for_domain(spec: &Spec, domain: &str, dkim: &[DkimKey]) -> Vec<Record> {
    let host = spec.server.hostname.trim_end_matches('.');
    let mut out = vec![
        // Mail for the domain goes to this server.
        Record::new(domain, Kind::MX, format!("10 {host}.")),
        // Everything the domain sends leaves from this server (the MX host); forwarded
        // mail carries an SRS sender of this domain, so it passes too.
        Record::new(domain, Kind::TXT, "v=spf1 mx -all"),
        // Every message this server sends for the domain is DKIM-signed and aligned.
        Record::new(
            format!("_dmarc.{domain}"),
            Kind::TXT,
            "v=DMARC1; p=quarantine",
        ),
    ];
    for key in dkim {
        out.push(Record::new(
            format!("{}._domainkey.{domain}", key.selector),
            Kind::TXT,
            crate::dkim::txt_record(&key.algorithm, &key.public),
        ));
    }
    // RFC 6186: clients find submission, IMAP and POP3 here; a service that is not
    // offered says so with the target ".".
    for (service, addr) in services(&spec.listeners) {
        let data = match addr {
            Some(a) => format!("0 1 {} {host}.", a.port()),
            None => "0 0 0 .".to_string(),
        };
        out.push(Record::new(format!("{service}.{domain}"), Kind::SRV, data));
    }
    // The names mail clients and setup guides try (Thunderbird's autoconfig, Outlook's
    // autodiscover, mail./imap./smtp.), all to this server.
    for label in ["autoconfig", "autodiscover", "mail", "imap", "smtp"] {
        let name = format!("{label}.{domain}");
        if name != host {
            out.push(Record::new(name, Kind::CNAME, format!("{host}.")));
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_txt_data_is_split_into_quoted_strings() {
        let long = "p=".to_string() + &"A".repeat(400);
        let line = Record::new("k._domainkey.d.test", Kind::TXT, long).zone_line();
        assert!(line.starts_with("k._domainkey.d.test. 3600 IN TXT \"p=AAA"));
        let strings: Vec<&str> = line.split("\" \"").collect();
        assert_eq!(strings.len(), 2, "{line}");
        assert_eq!(quote_txt("say \"hi\""), "\"say \\\"hi\\\"\"");
    }
}
