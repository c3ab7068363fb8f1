//! The DNS records a mail domain needs, computed from the spec and the store's DKIM keys:
//! MX, SPF, DKIM, DMARC, the host names and SRV records clients use to find the services.

use std::fmt;

use crate::spec::{DmarcPolicy, Listeners, Spec};

/// The names in every mail domain that lead clients to this server (Thunderbird's
/// autoconfig, Outlook's autodiscover, the mail./imap./smtp. setup guides use).
pub const CLIENT_NAMES: [&str; 5] = ["autoconfig", "autodiscover", "mail", "imap", "smtp"];

/// Records are published with this TTL unless the spec says otherwise.
pub const TTL: u32 = 3600;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Kind {
    A,
    AAAA,
    MX,
    TXT,
    CNAME,
    SRV,
    CAA,
}

impl Kind {
    /// The type a spec names ("mx", "TXT"...), when it is one ferrymail publishes.
    pub fn parse(name: &str) -> Option<Kind> {
        Some(match name.to_ascii_uppercase().as_str() {
            "A" => Kind::A,
            "AAAA" => Kind::AAAA,
            "MX" => Kind::MX,
            "TXT" => Kind::TXT,
            "CNAME" => Kind::CNAME,
            "SRV" => Kind::SRV,
            "CAA" => Kind::CAA,
            _ => return None,
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::A => "A",
            Kind::AAAA => "AAAA",
            Kind::MX => "MX",
            Kind::TXT => "TXT",
            Kind::CNAME => "CNAME",
            Kind::SRV => "SRV",
            Kind::CAA => "CAA",
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

    /// Whether this declared record takes the place of the computed `other`: same name
    /// and type, and for TXT also the same tag (a declared `v=spf1` replaces the computed
    /// SPF; a site verification at the same name sits beside it); and any record declared
    /// where ferrymail would put a CNAME (`mail A 192.0.2.1` keeps mail.domain an A).
    fn replaces(&self, other: &Record) -> bool {
        self.name == other.name
            && ((self.kind == other.kind
                && (self.kind != Kind::TXT || txt_tag(&self.data) == txt_tag(&other.data)))
                // A CNAME cannot share its name: any record declared there replaces it.
                || other.kind == Kind::CNAME)
    }

    /// The data in one spelling for comparison: names lower-case with a final dot,
    /// addresses as the standard library prints them, CAA values quoted.
    pub fn canonical_data(&self) -> String {
        canonical(self.kind, &self.data)
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

/// What a TXT record is for, when it says: "v=spf1", "v=DMARC1", "v=STSv1"... (a second
/// SPF record at a name makes SPF fail, so two of a tag never stand side by side).
pub fn txt_tag(data: &str) -> Option<String> {
    let first = data.split([';', ' ']).next()?.trim();
    first
        .to_ascii_lowercase()
        .starts_with("v=")
        .then(|| first.to_ascii_lowercase())
}

/// Whether two lists of `kind` data hold the same records, however spelled or ordered.
pub fn same_set(kind: Kind, a: &[String], b: &[String]) -> bool {
    let set = |v: &[String]| {
        v.iter()
            .map(|d| canonical(kind, d))
            .collect::<std::collections::BTreeSet<_>>()
    };
    set(a) == set(b)
}

/// CAA data as (flags, tag, value): `0 issue "letsencrypt.org"`, quotes optional.
pub fn caa_parts(data: &str) -> Option<(u8, String, String)> {
    let mut fields = data.trim().splitn(3, char::is_whitespace);
    let flags = fields.next()?.parse().ok()?;
    let tag = fields.next()?.to_ascii_lowercase();
    let value = fields
        .next()
        .unwrap_or("")
        .trim()
        .trim_matches('"')
        .to_string();
    Some((flags, tag, value))
}

/// TXT data as the strings of at most 255 bytes a record carries it in.
pub fn txt_strings(data: &str) -> Vec<&[u8]> {
    data.as_bytes().chunks(255).collect()
}

fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.').to_ascii_lowercase())
}

/// `data` of a `kind` record in the one spelling records are compared in.
pub fn canonical(kind: Kind, data: &str) -> String {
    let data = data.trim();
    let fields: Vec<&str> = data.split_ascii_whitespace().collect();
    match (kind, fields.as_slice()) {
        (Kind::A, _) => data
            .parse::<std::net::Ipv4Addr>()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| data.to_string()),
        (Kind::AAAA, _) => data
            .parse::<std::net::Ipv6Addr>()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| data.to_string()),
        (Kind::MX, [preference, host]) => format!("{preference} {}", fqdn(host)),
        (Kind::CNAME, [host]) => fqdn(host),
        (Kind::SRV, [priority, weight, port, host]) => {
            format!("{priority} {weight} {port} {}", fqdn(host))
        }
        (Kind::CAA, _) => match caa_parts(data) {
            Some((flags, tag, value)) => format!("{flags} {tag} \"{value}\""),
            None => data.to_string(),
        },
        _ => data.to_string(),
    }
}

/// A host name in declared data made absolute: one label ("mail") is relative to the
/// domain, as in a zone file; a name with dots is taken as written ("mx.example.net").
fn qualify(kind: Kind, data: &str, domain: &str) -> String {
    let host = |h: &str| {
        if h == "." || h.contains('.') {
            h.to_string()
        } else {
            format!("{h}.{domain}.")
        }
    };
    let fields: Vec<&str> = data.split_ascii_whitespace().collect();
    match (kind, fields.as_slice()) {
        (Kind::CNAME, [target]) => host(target),
        (Kind::MX, [preference, exchange]) => format!("{preference} {}", host(exchange)),
        (Kind::SRV, [priority, weight, port, target]) => {
            format!("{priority} {weight} {port} {}", host(target))
        }
        _ => data.to_string(),
    }
}

/// TXT data as quoted strings of at most 255 bytes each (a DKIM key is longer).
fn quote_txt(text: &str) -> String {
    let escaped: Vec<String> = txt_strings(text)
        .into_iter()
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
pub fn services(listeners: &Listeners) -> [(&'static str, Option<std::net::SocketAddr>); 6] {
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
    ];
    let declared_domain = spec
        .domains
        .iter()
        .find(|(name, _)| crate::address::normalize_domain(name).is_ok_and(|n| n == domain))
        .map(|(_, d)| d);
    // Every message this server sends for the domain is DKIM-signed and aligned, so a
    // policy stricter than "none" is safe from the start.
    let policy = declared_domain
        .and_then(|d| d.dmarc_policy)
        .unwrap_or(DmarcPolicy::Quarantine);
    let mut dmarc = format!("v=DMARC1; p={}", policy.as_str());
    if let Some(reports) = declared_domain.and_then(|d| d.dmarc_reports.as_deref()) {
        dmarc.push_str(&format!("; rua=mailto:{reports}"));
    }
    out.push(Record::new(format!("_dmarc.{domain}"), Kind::TXT, dmarc));
    if let Some(reports) = declared_domain.and_then(|d| d.tls_reports.as_deref()) {
        out.push(Record::new(
            format!("_smtp._tls.{domain}"),
            Kind::TXT,
            format!("v=TLSRPTv1; rua=mailto:{reports}"),
        ));
    }
    // RFC 7489 §7.1: this domain agrees to take the DMARC reports of the spec's other
    // domains that name an address here. Only an address at a domain or below it needs
    // no such record: receivers that check strictly (mail-auth does) ask for one even
    // when a subdomain sends its reports to its parent.
    for (name, other) in &spec.domains {
        let Ok(other_name) = crate::address::normalize_domain(name) else {
            continue;
        };
        let here = other
            .dmarc_reports
            .as_deref()
            .and_then(|a| a.rsplit_once('@'))
            .is_some_and(|(_, d)| d.trim_end_matches('.').eq_ignore_ascii_case(domain));
        let internal = domain == other_name || domain.ends_with(&format!(".{other_name}"));
        if here && !internal {
            out.push(Record::new(
                format!("{other_name}._report._dmarc.{domain}"),
                Kind::TXT,
                "v=DMARC1",
            ));
        }
    }
    // The server's own name, when it lives in this domain and its addresses are known.
    if host == domain || host.ends_with(&format!(".{domain}")) {
        for ip in &spec.server.addresses {
            let kind = if ip.is_ipv4() { Kind::A } else { Kind::AAAA };
            out.push(Record::new(host, kind, ip.to_string()));
        }
    }
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
    for label in CLIENT_NAMES {
        let name = format!("{label}.{domain}");
        if name != host {
            out.push(Record::new(name, Kind::CNAME, format!("{host}.")));
        }
    }
    // MTA-STS only where the policy is served (https), so the TXT never points senders
    // at a policy nobody answers for; the mta-sts. name is then in the certificate too.
    if spec.listeners.https.is_some() {
        let policy = crate::dns::mta_sts::policy(
            spec.mta_sts.mode.as_str(),
            host,
            spec.mta_sts.max_age_secs(),
        );
        out.push(Record::new(
            format!("_mta-sts.{domain}"),
            Kind::TXT,
            format!("v=STSv1; id={}", crate::dns::mta_sts::policy_id(&policy)),
        ));
        let name = format!("mta-sts.{domain}");
        if name != host {
            out.push(Record::new(name, Kind::CNAME, format!("{host}.")));
        }
    }
    // CalDAV and CardDAV (RFC 6764): the port that serves each (its own listener, else
    // https) and the context path; the caldav./carddav. names setup guides use.
    for (service, label, own) in [
        ("_caldavs._tcp", "caldav", spec.listeners.caldav),
        ("_carddavs._tcp", "carddav", spec.listeners.carddav),
    ] {
        let Some(addr) = own.or(spec.listeners.https) else {
            continue;
        };
        let srv = format!("{service}.{domain}");
        out.push(Record::new(
            &srv,
            Kind::SRV,
            format!("0 1 {} {host}.", addr.port()),
        ));
        out.push(Record::new(
            &srv,
            Kind::TXT,
            format!("path={}", crate::dav::BASE),
        ));
        let name = format!("{label}.{domain}");
        if name != host {
            out.push(Record::new(name, Kind::CNAME, format!("{host}.")));
        }
    }
    // RFC 5804 §1.8: where ManageSieve clients find the server.
    if let Some(addr) = spec.listeners.managesieve {
        out.push(Record::new(
            format!("_sieve._tcp.{domain}"),
            Kind::SRV,
            format!("0 1 {} {host}.", addr.port()),
        ));
    }
    // The spec's own records; a declared name and type replaces the computed ones.
    let declared: Vec<Record> = declared_domain
        .into_iter()
        .flat_map(|d| d.dns_records.iter())
        .filter_map(|r| {
            let kind = Kind::parse(&r.kind)?;
            let name = match r.name.trim_end_matches('.') {
                "@" | "" => domain.to_string(),
                relative => format!("{}.{domain}", relative.to_ascii_lowercase()),
            };
            Some(Record {
                name,
                kind,
                ttl: r.ttl.unwrap_or(TTL),
                data: qualify(kind, &r.value, domain),
            })
        })
        .collect();
    out.retain(|r| !declared.iter().any(|d| d.replaces(r)));
    out.extend(declared);
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_records_replace_computed_ones_of_the_same_name_and_type() {
        let spec: Spec = toml::from_str(
            r#"
[server]
hostname = "mx.d.test"
[domains."d.test"]
dns_records = [
  { name = "@", type = "TXT", value = "v=spf1 mx include:_spf.mailer.test -all" },
  { name = "_dmarc", type = "TXT", value = "v=DMARC1; p=reject; rua=mailto:dmarc@d.test" },
  { name = "www", type = "A", value = "192.0.2.10", ttl = 300 },
]
"#,
        )
        .unwrap();
        let records = for_domain(&spec, "d.test", &[]);
        let txt: Vec<&str> = records
            .iter()
            .filter(|r| r.kind == Kind::TXT)
            .map(|r| r.data.as_str())
            .collect();
        assert!(txt.contains(&"v=spf1 mx include:_spf.mailer.test -all"));
        assert!(
            !txt.contains(&"v=spf1 mx -all"),
            "the computed SPF is replaced"
        );
        assert!(txt.contains(&"v=DMARC1; p=reject; rua=mailto:dmarc@d.test"));
        assert!(!txt.contains(&"v=DMARC1; p=quarantine"));
        let www = records.iter().find(|r| r.name == "www.d.test").unwrap();
        assert_eq!(www.zone_line(), "www.d.test. 300 IN A 192.0.2.10");
        assert!(records.iter().any(|r| r.kind == Kind::MX), "the rest stays");
    }

    #[test]
    fn a_declared_txt_of_another_tag_sits_beside_the_computed_spf() {
        let spec: Spec = toml::from_str(
            r#"
[server]
hostname = "mx.d.test"
[domains."d.test"]
dns_records = [{ name = "@", type = "TXT", value = "site-verification=abc" }]
"#,
        )
        .unwrap();
        let apex: Vec<String> = for_domain(&spec, "d.test", &[])
            .into_iter()
            .filter(|r| r.name == "d.test" && r.kind == Kind::TXT)
            .map(|r| r.data)
            .collect();
        assert_eq!(apex, ["site-verification=abc", "v=spf1 mx -all"]);
    }

    #[test]
    fn a_domain_agrees_to_take_the_reports_other_domains_send_to_it() {
        let spec: Spec = toml::from_str(
            r#"
[server]
hostname = "mx.d.test"
[domains."d.test"]
dmarc_reports = "dmarc@d.test"
[domains."other.test"]
dmarc_reports = "dmarc@d.test"
[domains."sub.d.test"]
dmarc_reports = "dmarc@d.test"
[domains."e.test"]
dmarc_reports = "dmarc@reports.e.test"
[domains."reports.e.test"]
"#,
        )
        .unwrap();
        let agreed = |domain: &str| -> Vec<String> {
            for_domain(&spec, domain, &[])
                .into_iter()
                .filter(|r| r.name.contains("._report._dmarc."))
                .map(|r| format!("{} {}", r.name, r.data))
                .collect()
        };
        assert_eq!(
            agreed("d.test"),
            [
                "other.test._report._dmarc.d.test v=DMARC1",
                "sub.d.test._report._dmarc.d.test v=DMARC1"
            ]
        );
        assert!(agreed("other.test").is_empty());
        // An address below the domain itself needs no agreement.
        assert!(agreed("reports.e.test").is_empty());
    }

    /// d.test's records whose names contain `part`, with `listeners` declared.
    fn records_named(listeners: &str, part: &str) -> Vec<String> {
        let spec: Spec = toml::from_str(&format!(
            "[server]\nhostname = \"mx.d.test\"\n[listeners]\n{listeners}\n[domains.\"d.test\"]\n"
        ))
        .unwrap();
        for_domain(&spec, "d.test", &[])
            .into_iter()
            .filter(|r| r.name.contains(part))
            .map(|r| format!("{} {:?} {}", r.name, r.kind, r.data))
            .collect()
    }

    #[test]
    fn calendars_and_contacts_are_found_by_srv_txt_and_their_names() {
        let records = |listeners: &str| records_named(listeners, "dav");
        assert!(records("").is_empty(), "not offered, not published");
        assert_eq!(
            records("https = \"0.0.0.0:443\"\ncaldav = \"0.0.0.0:5000\""),
            [
                "_caldavs._tcp.d.test TXT path=/dav/",
                "_caldavs._tcp.d.test SRV 0 1 5000 mx.d.test.",
                "_carddavs._tcp.d.test TXT path=/dav/",
                "_carddavs._tcp.d.test SRV 0 1 443 mx.d.test.",
                "caldav.d.test CNAME mx.d.test.",
                "carddav.d.test CNAME mx.d.test.",
            ]
        );
    }

    #[test]
    fn managesieve_is_found_by_its_srv_record_when_offered() {
        let records = |listeners: &str| records_named(listeners, "sieve");
        assert!(records("").is_empty());
        assert_eq!(
            records("managesieve = \"0.0.0.0:4190\""),
            ["_sieve._tcp.d.test SRV 0 1 4190 mx.d.test."]
        );
    }

    #[test]
    fn a_single_label_in_declared_data_is_relative_to_the_domain() {
        assert_eq!(qualify(Kind::MX, "10 mail", "d.test"), "10 mail.d.test.");
        assert_eq!(
            qualify(Kind::MX, "10 mx.other.test", "d.test"),
            "10 mx.other.test"
        );
        assert_eq!(qualify(Kind::SRV, "0 0 0 .", "d.test"), "0 0 0 .");
        assert_eq!(qualify(Kind::CNAME, "www", "d.test"), "www.d.test.");
    }

    #[test]
    fn data_compares_in_one_spelling() {
        assert_eq!(canonical(Kind::MX, "10  MX.D.test"), "10 mx.d.test.");
        assert_eq!(
            canonical(Kind::SRV, "0 1 993 mx.d.test."),
            "0 1 993 mx.d.test."
        );
        assert_eq!(canonical(Kind::AAAA, "2001:DB8:0::1"), "2001:db8::1");
        assert_eq!(
            canonical(Kind::CAA, "0 Issue letsencrypt.org"),
            "0 issue \"letsencrypt.org\""
        );
        assert_eq!(txt_tag("v=DMARC1; p=none").as_deref(), Some("v=dmarc1"));
        assert_eq!(txt_tag("google-site-verification=x"), None);
    }

    #[test]
    fn every_type_the_spec_accepts_is_one_that_is_published() {
        for name in crate::spec::DNS_RECORD_TYPES {
            assert!(Kind::parse(name).is_some(), "{name}");
        }
        assert!(Kind::parse("SPF").is_none());
    }

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
