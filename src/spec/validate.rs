//! Field-level checks on a loaded spec: names, addresses, targets, regexes, references
//! between sections. Each problem becomes a located `SpecError`; all are collected.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use super::location::SpecPath;
use super::model::*;
use super::{LoadedSpec, SecretRef, SpecError};
use crate::address::{Address, normalize_domain, normalize_local};
use crate::features;
use crate::routing::{Target, expand_placeholders_for_check};

pub const MAX_FORWARDS_LIMIT: u32 = 1000;

pub fn validate(loaded: &LoadedSpec) -> Vec<SpecError> {
    let mut v = Validator {
        base_dir: loaded.base_dir.clone(),
        errors: Vec::new(),
        accounts: HashSet::new(),
        shares: Vec::new(),
    };
    let spec = &loaded.spec;
    v.server(&spec.server);
    v.tls(&spec.tls, &spec.listeners, dns01_possible(spec));
    v.backends(spec);
    v.dns(&spec.dns);
    v.limits(&spec.limits);
    v.spam(&spec.spam);
    v.domains(spec);
    if let Some(b) = &spec.backups {
        let p = SpecPath::keys(&["backups"]);
        v.secret(&p.key("encryption_key"), &b.encryption_key);
        for (name, s) in [("access_key", &b.access_key), ("secret_key", &b.secret_key)] {
            if let Some(s) = s {
                v.secret(&p.key(name), s);
            }
        }
        match crate::backup::TargetConfig::public(&b.target, &loaded.base_dir, b.endpoint.clone()) {
            Err(e) => v.err(p.key("target"), e.to_string()),
            Ok(crate::backup::TargetConfig::S3 { .. }) if !cfg!(feature = "s3") => {
                v.err(p.key("target"), features::missing("an s3:// backup target", "s3"))
            }
            Ok(crate::backup::TargetConfig::Dir(dir))
                if dir.starts_with(std::path::absolute(loaded.data_dir()).unwrap_or_else(|_| loaded.data_dir())) =>
            {
                v.err(
                    p.key("target"),
                    "the backup directory lies inside server.data_dir: each backup would hold the ones before it, and a lost disk loses both",
                )
            }
            Ok(_) => {}
        }
        if let Err(crate::backup::BackupError::Schedule { message, .. }) =
            crate::backup::Schedule::parse(&b.schedule)
        {
            v.err(p.key("schedule"), message);
        }
        if b.keep == 0 {
            v.err(p.key("keep"), "keep must be at least 1");
        }
    }
    for (name, user) in &spec.admin.users {
        let p = SpecPath::keys(&["admin", "users", name]);
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
        {
            v.err(
                p.clone(),
                format!("admin name {name:?}: letters, digits and . _ - @ only"),
            );
        }
        v.password(&p.key("password"), &user.password);
    }
    for (name, token) in &spec.admin.api_tokens {
        v.secret(&SpecPath::keys(&["admin", "api_tokens", name]), token);
    }
    if let Some(from) = &spec.reports.from {
        let p = SpecPath::keys(&["reports", "from"]);
        match crate::address::Address::parse(from) {
            Err(_) => v.err(p, format!("\"{from}\" is not an e-mail address")),
            // Its domain's key signs the reports: unsigned ones are thrown away.
            Ok(a)
                if !spec.domains.keys().any(|d| {
                    crate::address::Address::parse(&format!("x@{d}"))
                        .is_ok_and(|ours| ours.domain == a.domain)
                }) =>
            {
                v.err(
                p,
                format!(
                    "\"{from}\" is not at a domain of this spec, so no DKIM key of ours could sign the reports"
                ),
            )
            }
            Ok(_) => {}
        }
    }
    if let Some(text) = &spec.mta_sts.max_age {
        let p = SpecPath::keys(&["mta_sts", "max_age"]);
        match humantime::parse_duration(text) {
            Err(e) => v.err(p, format!("max_age {text:?}: {e} (e.g. \"7d\")")),
            // RFC 8461 §3.2: at most 31557600 seconds.
            Ok(d) if d.as_secs() > 31_557_600 => v.err(p, "max_age is at most a year (RFC 8461)"),
            Ok(_) => {}
        }
    }
    v.errors
}

/// What a rule does, as far as the checks care.
struct RuleShape<'a> {
    forward: &'a [String],
    reject: bool,
    mailbox: bool,
    message: bool,
}

impl<'a> RuleShape<'a> {
    fn alias(alias: &'a Alias) -> Self {
        RuleShape {
            forward: &alias.forward,
            reject: alias.reject.is_some(),
            mailbox: alias.mailbox.is_some(),
            message: alias.message.is_some(),
        }
    }
}

struct Validator {
    /// Where files the spec names (Sieve scripts) are read from.
    base_dir: std::path::PathBuf,
    errors: Vec<SpecError>,
    /// Every mailbox address, for the shares to name.
    accounts: HashSet<String>,
    /// Each share: where it is written, the owner, the mailbox it names.
    shares: Vec<(SpecPath, String, String)>,
}

impl Validator {
    fn err(&mut self, path: SpecPath, message: impl Into<String>) {
        self.errors.push(SpecError::new(path, message));
    }

    fn secret(&mut self, path: &SpecPath, s: &SecretRef) {
        if let Err(e) = s.check_shape() {
            self.err(path.clone(), e.to_string());
        }
    }

    fn server(&mut self, server: &Server) {
        let p = SpecPath::keys(&["server", "hostname"]);
        if server.hostname.is_empty() {
            self.err(SpecPath::keys(&["server"]), "server.hostname is required (the name this server answers as, e.g. \"mx.example.com\")");
        } else if let Err(e) = normalize_domain(&server.hostname) {
            self.err(p, e.to_string());
        }
    }

    fn tls(&mut self, tls: &Tls, listeners: &Listeners, dns01_possible: bool) {
        let p = SpecPath::keys(&["tls"]);
        match tls.mode {
            TlsMode::Acme if tls.acme.is_none() => self.err(
                p.key("mode"),
                "tls.mode = \"acme\" needs a [tls.acme] section with at least `contact`",
            ),
            TlsMode::Files if tls.files.is_none() => self.err(
                p.key("mode"),
                "tls.mode = \"files\" needs a [tls.files] section with `cert` and `key`",
            ),
            _ => {}
        }
        if let Some(acme) = &tls.acme {
            if Address::parse(&acme.contact).is_err() {
                self.err(
                    p.key("acme").key("contact"),
                    format!("\"{}\" is not a valid address", acme.contact),
                );
            }
            if url::Url::parse(&acme.directory).is_err() {
                self.err(
                    p.key("acme").key("directory"),
                    format!("\"{}\" is not a URL", acme.directory),
                );
            }
            if let Some(k) = &acme.eab_hmac_key {
                self.secret(&p.key("acme").key("eab_hmac_key"), k);
            }
            if acme.eab_kid.is_some() != acme.eab_hmac_key.is_some() {
                self.err(
                    p.key("acme"),
                    "External Account Binding needs both `eab_kid` and `eab_hmac_key`",
                );
            }
            // The CA comes to port 80 (HTTP-01) or 443 (TLS-ALPN-01) of each name.
            if tls.mode == TlsMode::Acme {
                let (needed, present) = match acme.challenge {
                    AcmeChallenge::Http01 => ("http", listeners.http.is_some()),
                    AcmeChallenge::TlsAlpn01 => ("https", listeners.https.is_some()),
                    AcmeChallenge::Dns01 => ("", true),
                };
                if acme.challenge == AcmeChallenge::Dns01 && !dns01_possible {
                    self.err(
                        p.key("acme").key("challenge"),
                        "dns-01 publishes its answers through the DNS provider of the domain the server's hostname is in: give that domain a dns_provider that is not manual".to_string(),
                    );
                }
                if !present {
                    self.err(
                        p.key("acme").key("challenge"),
                        format!("this challenge is answered by the `{needed}` listener: declare listeners.{needed} (the CA connects to it)"),
                    );
                }
            }
        }
    }

    fn backends(&mut self, spec: &Spec) {
        if spec.store.kind == StoreKind::Mongodb && !cfg!(feature = "mongodb") {
            self.err(
                SpecPath::keys(&["store", "kind"]),
                features::missing("store.kind = \"mongodb\"", "mongodb"),
            );
        }
        if spec.cache.kind == CacheKind::Redis && !cfg!(feature = "redis") {
            self.err(
                SpecPath::keys(&["cache", "kind"]),
                features::missing("cache.kind = \"redis\"", "redis"),
            );
        }
        if spec.store.kind == StoreKind::Mongodb && spec.store.url.is_none() {
            self.err(
                SpecPath::keys(&["store", "kind"]),
                "store.kind = \"mongodb\" needs store.url",
            );
        }
        // Mailboxes live in MongoDB then, sealed with the master key: every node needs
        // the same one, and a key made up by one node would lock the others out.
        if spec.store.kind == StoreKind::Mongodb && spec.server.master_key.is_none() {
            self.err(
                SpecPath::keys(&["store", "kind"]),
                "store.kind = \"mongodb\" needs server.master_key: every node seals and opens the mailboxes kept there with it",
            );
        }
        if let Some(u) = &spec.store.url
            && let Err(e) = u.check()
        {
            self.err(SpecPath::keys(&["store", "url"]), e.to_string());
        }
        if spec.cache.kind == CacheKind::Redis && spec.cache.url.is_none() {
            self.err(
                SpecPath::keys(&["cache", "kind"]),
                "cache.kind = \"redis\" needs cache.url",
            );
        }
        if let Some(u) = &spec.cache.url
            && let Err(e) = u.check()
        {
            self.err(SpecPath::keys(&["cache", "url"]), e.to_string());
        }
        if let Some(key) = &spec.server.master_key {
            self.secret(&SpecPath::keys(&["server", "master_key"]), key);
        }
        if let Some(pw) = &spec.delivery.relay_password {
            self.secret(&SpecPath::keys(&["delivery", "relay_password"]), pw);
        }
        if let Some(key) = &spec.delivery.webhook_secret {
            self.secret(&SpecPath::keys(&["delivery", "webhook_secret"]), key);
        }
        for (key, value) in [
            ("expire_after", &spec.delivery.expire_after),
            ("delay_warning", &spec.delivery.delay_warning),
            ("log_retention", &spec.delivery.log_retention),
        ] {
            if let Some(text) = value
                && humantime::parse_duration(text).is_err()
            {
                self.err(
                    SpecPath::keys(&["delivery", key]),
                    format!("\"{text}\" is not a duration (e.g. \"5d\", \"4h\")"),
                );
            }
        }
    }

    /// The token travels in every request: only over HTTPS, or to this machine.
    fn api_url(&mut self, at: SpecPath, text: &str) {
        match url::Url::parse(text) {
            Ok(u) if u.scheme() == "https" => {}
            Ok(u)
                if u.scheme() == "http"
                    && matches!(u.host_str(), Some("127.0.0.1" | "localhost" | "[::1]")) => {}
            Ok(_) => self.err(
                at,
                format!(
                    "\"{text}\" must be an https:// URL (the API token is sent with every request)"
                ),
            ),
            Err(e) => self.err(at, format!("\"{text}\" is not a URL: {e}")),
        }
    }

    fn spam(&mut self, spam: &super::model::Spam) {
        let p = SpecPath::keys(&["spam"]);
        for (key, value) in [("url", &spam.url), ("controller_url", &spam.controller_url)] {
            if let Some(text) = value {
                match url::Url::parse(text) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                    Ok(_) => self.err(
                        p.key(key),
                        format!("\"{text}\" must be an http:// or https:// URL with a host"),
                    ),
                    Err(e) => self.err(
                        p.key(key),
                        format!("\"{text}\" is not a URL ({e}); e.g. \"http://127.0.0.1:11333\""),
                    ),
                }
            }
        }
        if let Some(password) = &spam.password {
            self.secret(&p.key("password"), password);
        }
        if let Some(av) = &spam.antivirus {
            let at = p.key("antivirus");
            match (&av.address, &av.socket) {
                (Some(address), None) => {
                    let port = address
                        .rsplit_once(':')
                        .and_then(|(host, port)| (!host.is_empty()).then_some(port))
                        .and_then(|port| port.parse::<u16>().ok());
                    if port.is_none() {
                        self.err(
                            at.key("address"),
                            format!("\"{address}\" is not HOST:PORT (e.g. \"127.0.0.1:3310\")"),
                        );
                    }
                }
                (None, Some(socket)) if !socket.starts_with('/') => self.err(
                    at.key("socket"),
                    format!("\"{socket}\": give the socket's absolute path"),
                ),
                (None, Some(_)) => {}
                _ => self.err(
                    at.clone(),
                    "give clamd's address or its socket, one of the two",
                ),
            }
            if let Some(size) = &av.max_size
                && parse_size(size).is_none()
            {
                self.err(
                    at.key("max_size"),
                    format!("\"{size}\" is not a size (e.g. \"25MB\")"),
                );
            }
            if let Some(timeout) = &av.timeout
                && humantime::parse_duration(timeout).is_err()
            {
                self.err(
                    at.key("timeout"),
                    format!("\"{timeout}\" is not a duration (e.g. \"60s\")"),
                );
            }
        }
        if let Some(timeout) = &spam.timeout {
            match humantime::parse_duration(timeout) {
                Ok(d) if !d.is_zero() && d <= std::time::Duration::from_secs(300) => {}
                Ok(_) => self.err(
                    p.key("timeout"),
                    format!("\"{timeout}\": between 1s and 5m (the sender waits for it)"),
                ),
                Err(_) => self.err(
                    p.key("timeout"),
                    format!("\"{timeout}\" is not a duration (e.g. \"20s\")"),
                ),
            }
        }
    }

    fn domain_spam(&mut self, p: &SpecPath, spam: &super::model::DomainSpam) {
        for (key, score) in [
            ("reject_score", spam.reject_score),
            ("junk_score", spam.junk_score),
        ] {
            if score.is_some_and(|s| !s.is_finite() || s.abs() > 1_000_000.0) {
                self.err(
                    p.key(key),
                    "a score is a number between -1000000 and 1000000",
                );
            }
        }
        if let (Some(junk), Some(reject)) = (spam.junk_score, spam.reject_score)
            && junk > reject
        {
            self.err(
                p.key("junk_score"),
                format!("junk_score {junk} is above reject_score {reject}: nothing would be junk"),
            );
        }
        if let Some(address) = &spam.junk_forward
            && crate::address::Address::parse(address).is_err()
        {
            self.err(
                p.key("junk_forward"),
                format!("\"{address}\" is not an e-mail address"),
            );
        }
    }

    fn junk_forward(&mut self, p: &SpecPath, alias: &Alias) {
        if let Some(address) = &alias.junk_forward
            && crate::address::Address::parse(address).is_err()
        {
            self.err(p.clone(), format!("\"{address}\" is not an e-mail address"));
        }
    }

    fn limits(&mut self, limits: &super::model::Limits) {
        if let Some(size) = &limits.message_memory
            && parse_size(size).is_none()
        {
            self.err(
                SpecPath::keys(&["limits", "message_memory"]),
                format!("\"{size}\" is not a size (e.g. \"1GiB\")"),
            );
        }
        for (key, value) in [
            ("smtp_timeout", &limits.smtp_timeout),
            ("smtp_data_timeout", &limits.smtp_data_timeout),
        ] {
            let Some(text) = value else { continue };
            let at = SpecPath::keys(&["limits", key]);
            match humantime::parse_duration(text) {
                Err(_) => self.err(at, format!("\"{text}\" is not a duration (e.g. \"5m\")")),
                Ok(d) if d.as_secs() == 0 => {
                    self.err(at, "a timeout under a second would refuse every client")
                }
                Ok(_) => {}
            }
        }
        if limits.max_connections == Some(0) {
            self.err(
                SpecPath::keys(&["limits", "max_connections"]),
                "max_connections = 0 would refuse every client",
            );
        }
        if limits.refused_recipients == 0 {
            self.err(
                SpecPath::keys(&["limits", "refused_recipients"]),
                "refused_recipients = 0 would close every session at its first RCPT",
            );
        }
    }

    fn dns(&mut self, dns: &Dns) {
        for (key, value) in [
            ("resync_interval", &dns.resync_interval),
            ("keep_retired_dkim", &dns.keep_retired_dkim),
        ] {
            if let Some(text) = value
                && humantime::parse_duration(text).is_err()
            {
                self.err(
                    SpecPath::keys(&["dns", key]),
                    format!("\"{text}\" is not a duration (e.g. \"7d\", \"1h\", \"0s\")"),
                );
            }
        }
        if dns.max_delete_percent.is_some_and(|p| p > 100) {
            self.err(
                SpecPath::keys(&["dns", "max_delete_percent"]),
                "max_delete_percent is a share of the zone, 0 to 100".to_string(),
            );
        }
        for (name, provider) in &dns.providers {
            let p = SpecPath::keys(&["dns", "providers", name]);
            let need = |field: &str, present: bool, this: &mut Self| {
                if !present {
                    this.err(
                        p.clone(),
                        format!("a {:?} provider needs `{field}`", provider.kind).to_lowercase(),
                    );
                }
            };
            match provider.kind {
                DnsProviderKind::Cloudflare => {
                    if !cfg!(feature = "cloudflare") {
                        self.err(
                            p.key("kind"),
                            features::missing("kind = \"cloudflare\"", "cloudflare"),
                        );
                    }
                    need("api_token", provider.api_token.is_some(), self);
                    if let Some(url) = &provider.api_url {
                        self.api_url(p.key("api_url"), url);
                        let cloudflare = url::Url::parse(url)
                            .is_ok_and(|u| u.host_str() == Some("api.cloudflare.com"));
                        if !cloudflare && !provider.api_stand_in {
                            self.err(
                                p.key("api_url"),
                                format!(
                                    "\"{url}\" is not Cloudflare's API (api.cloudflare.com), and the API token would be sent there; set api_stand_in = true if it stands in for Cloudflare on purpose"
                                ),
                            );
                        }
                    }
                }
                DnsProviderKind::Rfc2136 => {
                    need("server", provider.server.is_some(), self);
                    need("tsig_name", provider.tsig_name.is_some(), self);
                    need("tsig_secret", provider.tsig_secret.is_some(), self);
                }
                DnsProviderKind::Manual => {}
            }
            if let Some(alg) = &provider.tsig_algorithm
                && !["hmac-sha256", "hmac-sha384", "hmac-sha512"].contains(&alg.as_str())
            {
                self.err(
                    p.key("tsig_algorithm"),
                    format!(
                        "unknown TSIG algorithm \"{alg}\" (hmac-sha256, hmac-sha384 or hmac-sha512)"
                    ),
                );
            }
            for (field, s) in [
                ("api_token", &provider.api_token),
                ("tsig_secret", &provider.tsig_secret),
            ] {
                if let Some(s) = s {
                    self.secret(&p.key(field), s);
                }
            }
        }
    }

    /// Top-level aliases keyed by full address: the domain must be declared, and the
    /// address must not also be declared under its domain.
    fn flat_aliases(&mut self, spec: &Spec) {
        let declared: HashMap<String, &Domain> = spec
            .domains
            .iter()
            .filter_map(|(n, d)| normalize_domain(n).ok().map(|n| (n, d)))
            .collect();
        let names: Vec<String> = declared.keys().cloned().collect();
        for (address, alias) in &spec.aliases {
            let ap = SpecPath::keys(&["aliases", address]);
            let parsed = match Address::parse(address) {
                Ok(a) => a,
                Err(e) => {
                    self.err(ap, e.to_string());
                    continue;
                }
            };
            let Some(domain) = declared.get(&parsed.domain) else {
                let hint = super::load::did_you_mean(&parsed.domain, &names)
                    .map(|d| format!(", did you mean \"{d}\"?"))
                    .unwrap_or_else(|| format!(" (add [domains.\"{}\"])", parsed.domain));
                self.err(
                    ap,
                    format!(
                        "alias {address} is on domain \"{}\", which is not declared{hint}",
                        parsed.domain
                    ),
                );
                continue;
            };
            if domain
                .aliases
                .keys()
                .any(|l| normalize_local(l).is_ok_and(|l| l == parsed.local))
            {
                self.err(ap.clone(), format!("{address} is also declared under [domains.\"{}\".aliases]; declare it once", parsed.domain));
            }
            let max_forwards = domain.max_forwards.unwrap_or(10);
            self.rule(&|| ap.clone(), RuleShape::alias(alias), max_forwards, None);
            self.junk_forward(&ap.key("junk_forward"), alias);
            if let Some(mailbox) = &alias.mailbox {
                self.mailbox(&ap.key("mailbox"), &parsed.to_string(), mailbox);
            }
        }
    }

    fn domains(&mut self, spec: &Spec) {
        self.flat_aliases(spec);
        let mut seen: HashMap<String, &str> = HashMap::new();
        for (name, domain) in &spec.domains {
            let p = SpecPath::keys(&["domains", name]);
            match normalize_domain(name) {
                Ok(norm) => {
                    if let Some(other) = seen.insert(norm.clone(), name) {
                        self.err(p.clone(), format!("domain \"{name}\" is the same as \"{other}\" ({norm}); declare it once"));
                    }
                }
                Err(e) => self.err(p.clone(), e.to_string()),
            }
            self.domain(spec, name, &p, domain);
        }
        self.shares();
    }

    /// A collection is shared with another mailbox of this server, never its owner's own.
    fn shares(&mut self) {
        for (p, owner, with) in std::mem::take(&mut self.shares) {
            match Address::parse(&with) {
                Err(e) => self.err(p, e.to_string()),
                Ok(a) if a.to_string() == owner => {
                    self.err(p, "a collection is its owner's already: share it with others")
                }
                Ok(a) if !self.accounts.contains(&a.to_string()) => self.err(
                    p,
                    format!(
                        "{with} has no mailbox here: only mailboxes of this server log in to calendars and contacts"
                    ),
                ),
                Ok(_) => {}
            }
        }
    }

    fn domain(&mut self, spec: &Spec, domain_name: &str, p: &SpecPath, domain: &Domain) {
        for (key, value) in [
            ("dmarc_reports", &domain.dmarc_reports),
            ("tls_reports", &domain.tls_reports),
        ] {
            if let Some(address) = value
                && crate::address::Address::parse(address).is_err()
            {
                self.err(
                    p.key(key),
                    format!("\"{address}\" is not an e-mail address"),
                );
            }
        }
        if let Some(provider) = &domain.dns_provider
            && !spec.dns.providers.contains_key(provider)
        {
            let known: Vec<String> = spec.dns.providers.keys().cloned().collect();
            let hint = super::load::did_you_mean(provider, &known)
                .map(|b| format!(", did you mean \"{b}\"?"))
                .unwrap_or_else(|| " (declare it under [dns.providers])".into());
            self.err(
                p.key("dns_provider"),
                format!("unknown DNS provider \"{provider}\"{hint}"),
            );
        }
        for (i, record) in domain.dns_records.iter().enumerate() {
            let at = p.key("dns_records").index(i);
            let name = record.name.as_str();
            let label_ok = |l: &str| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'*')
            };
            if name != "@" && !name.split('.').all(label_ok) {
                self.err(
                    at.key("name"),
                    format!("\"{name}\" is not a name relative to the domain (e.g. \"_dmarc\", \"www\", or \"@\" for the domain itself)"),
                );
            }
            let kind = record.kind.to_ascii_uppercase();
            if !DNS_RECORD_TYPES.contains(&kind.as_str()) {
                self.err(
                    at.key("type"),
                    format!(
                        "\"{}\" is not a record type ferrymail publishes ({})",
                        record.kind,
                        DNS_RECORD_TYPES.join(", ")
                    ),
                );
            } else if let Some(problem) = record_value_problem(&kind, &record.value) {
                self.err(at.key("value"), format!("\"{}\" {problem}", record.value));
            }
        }
        let max_forwards = domain.max_forwards.unwrap_or(10);
        if max_forwards == 0 || max_forwards > MAX_FORWARDS_LIMIT {
            self.err(
                p.key("max_forwards"),
                format!("max_forwards must be between 1 and {MAX_FORWARDS_LIMIT}"),
            );
        }
        if let Some(size) = &domain.max_message_size
            && parse_size(size).is_none()
        {
            self.err(
                p.key("max_message_size"),
                format!("\"{size}\" is not a size (e.g. \"25MB\", \"50MiB\")"),
            );
        }
        if let Some(spam) = &domain.spam {
            self.domain_spam(&p.key("spam"), spam);
        }
        if let Some(delay) = &domain.greylist_delay
            && humantime::parse_duration(delay).is_err()
        {
            self.err(
                p.key("greylist_delay"),
                format!("\"{delay}\" is not a duration (e.g. \"5m\", \"90s\")"),
            );
        }
        for (list, entries) in [
            ("allowlist", &domain.allowlist),
            ("denylist", &domain.denylist),
        ] {
            for (i, entry) in entries.iter().enumerate() {
                if !is_sender_match(entry) {
                    self.err(
                        p.key(list).index(i),
                        format!("\"{entry}\" is not an IP, CIDR, domain or address"),
                    );
                }
            }
        }
        if let Some(keys) = &domain.dkim {
            let mut selectors = BTreeMap::new();
            for (i, key) in keys.iter().enumerate() {
                let kp = p.key("dkim").index(i);
                if normalize_local(&key.selector).is_err() || key.selector.contains(['+', '@']) {
                    self.err(
                        kp.key("selector"),
                        format!("\"{}\" is not a valid DKIM selector", key.selector),
                    );
                }
                if selectors.insert(key.selector.to_lowercase(), i).is_some() {
                    self.err(
                        kp.key("selector"),
                        format!("DKIM selector \"{}\" is declared twice", key.selector),
                    );
                }
            }
        }
        if let Some(rule) = &domain.catch_all {
            let shape = RuleShape {
                forward: &rule.forward,
                reject: rule.reject.is_some(),
                mailbox: false,
                message: rule.message.is_some(),
            };
            self.rule(&|| p.key("catch_all"), shape, max_forwards, None);
        }
        let mut locals: HashMap<String, &str> = HashMap::new();
        for (local, alias) in &domain.aliases {
            let ap = || p.key("aliases").key(local);
            match normalize_local(local) {
                Ok(norm) => {
                    if let Some(other) = locals.insert(norm, local) {
                        self.err(ap(), format!("alias \"{local}\" is the same address as \"{other}\" (local parts are case-insensitive)"));
                    }
                }
                Err(e) => self.err(ap(), e.to_string()),
            }
            self.rule(&ap, RuleShape::alias(alias), max_forwards, None);
            self.junk_forward(&ap().key("junk_forward"), alias);
            if let Some(mailbox) = &alias.mailbox {
                let address = match (normalize_local(local), normalize_domain(domain_name)) {
                    (Ok(l), Ok(d)) => format!("{l}@{d}"),
                    _ => String::new(),
                };
                self.mailbox(&ap().key("mailbox"), &address, mailbox);
            }
        }
        let mut regexes = HashMap::new();
        for (i, pattern) in domain.patterns.iter().enumerate() {
            let pp = p.key("patterns").index(i);
            let groups = match crate::routing::compile_pattern(&pattern.regex) {
                Ok(re) => Some(re),
                Err(e) => {
                    let first = e
                        .to_string()
                        .lines()
                        .last()
                        .unwrap_or("")
                        .trim()
                        .to_string();
                    self.err(
                        pp.key("regex"),
                        format!("invalid regex {:?}: {first}", pattern.regex),
                    );
                    None
                }
            };
            if regexes.insert(pattern.regex.clone(), i).is_some() {
                self.err(
                    pp.key("regex"),
                    format!(
                        "pattern {:?} is declared twice in this domain",
                        pattern.regex
                    ),
                );
            }
            let shape = RuleShape {
                forward: &pattern.forward,
                reject: pattern.reject.is_some(),
                mailbox: false,
                message: pattern.message.is_some(),
            };
            self.rule(&|| pp.clone(), shape, max_forwards, groups.as_ref());
        }
    }

    /// Checks what an alias, pattern or catch-all does. `p` builds the path only when
    /// there is something to report.
    fn rule(
        &mut self,
        p: &dyn Fn() -> SpecPath,
        shape: RuleShape<'_>,
        max_forwards: u32,
        pattern: Option<&regex::Regex>,
    ) {
        let RuleShape {
            forward,
            reject,
            mailbox,
            message,
        } = shape;
        if reject && (mailbox || !forward.is_empty()) {
            self.err(p().key("reject"), "a rejecting address cannot also forward or keep a mailbox; remove `reject` or the targets");
        }
        if !reject && !mailbox && forward.is_empty() {
            self.err(
                p(),
                "this address does nothing: give it `forward`, `mailbox` or `reject`",
            );
        }
        if message && !reject {
            self.err(
                p().key("message"),
                "`message` is the text sent with a rejection; it needs `reject`",
            );
        }
        let mut unique = Vec::new();
        for (i, target) in forward.iter().enumerate() {
            let tp = || p().key("forward").index(i);
            let (checked, groups) = expand_placeholders_for_check(target);
            if let Some(re) = pattern {
                for g in &groups {
                    let exists = match g.parse::<usize>() {
                        Ok(n) => n < re.captures_len(),
                        Err(_) => re.capture_names().flatten().any(|n| n == g),
                    };
                    if !exists {
                        self.err(
                            tp(),
                            format!("\"{target}\" uses ${g}, but the regex has no such group"),
                        );
                    }
                }
            } else if !groups.is_empty() && target.contains('$') {
                self.err(
                    tp(),
                    format!("\"{target}\" uses a $ capture, which only patterns have"),
                );
                continue;
            }
            match Target::parse(&checked) {
                Ok(t) => {
                    if !unique.contains(&t) {
                        unique.push(t);
                    }
                }
                Err(e) => self.err(tp(), e.to_string()),
            }
        }
        if unique.len() > max_forwards as usize {
            self.err(
                p().key("forward"),
                format!("{} forward targets exceed this domain's limit of {max_forwards} (raise `max_forwards`, at most {MAX_FORWARDS_LIMIT})", unique.len()),
            );
        }
    }

    fn password(&mut self, p: &SpecPath, pw: &PasswordRef) {
        let n = [pw.hash.is_some(), pw.env.is_some(), pw.file.is_some()]
            .iter()
            .filter(|x| **x)
            .count();
        if n != 1 {
            self.err(
                p.clone(),
                "password needs exactly one of `hash`, `env` or `file`",
            );
        }
        if let Some(hash) = &pw.hash
            && let Err(e) = check_password_hash(hash)
        {
            self.err(p.key("hash"), e);
        }
    }

    fn mailbox(&mut self, p: &SpecPath, address: &str, mailbox: &Mailbox) {
        match &mailbox.password {
            None => self.err(p.clone(), "a mailbox needs a password: `password = { hash = \"...\" }` (make one with `ferrymail passwd`)"),
            Some(pw) => self.password(&p.key("password"), pw),
        }
        if mailbox.main_password == MainPassword::Web
            && !mailbox.self_service.contains(&SelfService::AppPasswords)
        {
            self.err(
                p.key("main_password"),
                "with the main password on the web only, mail clients need app passwords: add \"app-passwords\" to `self_service`",
            );
        }
        if let Some(q) = &mailbox.quota
            && parse_size(q).is_none()
        {
            self.err(
                p.key("quota"),
                format!("\"{q}\" is not a size (e.g. \"10GiB\")"),
            );
        }
        for (key, declared) in [
            ("calendars", &mailbox.calendars),
            ("address_books", &mailbox.address_books),
        ] {
            self.collection_names(&p.key(key), declared);
            for (i, d) in declared.iter().enumerate() {
                for with in d.share().into_iter().flat_map(|s| s.keys()) {
                    let at = p.key(key).index(i).key("share").key(with);
                    self.shares.push((at, address.to_string(), with.clone()));
                }
            }
        }
        if let Some(source) = &mailbox.sieve {
            match source.text(&self.base_dir) {
                Err(e) => self.err(p.key("sieve"), e),
                Ok(text) => {
                    if let Err(e) = crate::sieve::compile(text.as_bytes()) {
                        let where_ = source.name();
                        self.err(
                            p.key("sieve"),
                            format!(
                                "in {where_}, line {}, column {}: {}",
                                e.line, e.column, e.message
                            ),
                        );
                    }
                }
            }
        }
        if let Some(vacation) = &mailbox.vacation {
            self.vacation(&p.key("vacation"), vacation);
        }
        if !address.is_empty() {
            self.accounts.insert(address.to_string());
        }
    }

    fn vacation(&mut self, p: &SpecPath, vacation: &Vacation) {
        for (key, text) in [("from", &vacation.from), ("until", &vacation.until)] {
            if let Some(text) = text
                && crate::sieve::vacation::parse_date(text).is_none()
            {
                self.err(
                    p.key(key),
                    format!("{text:?} is not a date (e.g. \"2026-12-20\")"),
                );
            }
        }
        if let (Some(from), Some(until)) = (
            vacation
                .from
                .as_deref()
                .and_then(crate::sieve::vacation::parse_date),
            vacation
                .until
                .as_deref()
                .and_then(crate::sieve::vacation::parse_date),
        ) && until < from
        {
            self.err(
                p.key("until"),
                "until is before from: the reply would never go out",
            );
        }
        if vacation.body.trim().is_empty() {
            self.err(p.key("body"), "the reply needs a body");
        }
        if vacation.days == Some(0) {
            self.err(p.key("days"), "days is at least 1 (RFC 5230)");
        }
        if let Some(subject) = &vacation.subject
            && subject.contains(['\r', '\n'])
        {
            self.err(p.key("subject"), "the subject is one line");
        }
        if let Err(e) = crate::sieve::compile(crate::sieve::vacation::script(vacation).as_bytes()) {
            self.err(
                p.clone(),
                format!("the reply cannot be written as Sieve: {e}"),
            );
        }
    }

    /// Declared calendars or address books: named, few, and each to a URL of its own.
    fn collection_names(&mut self, p: &SpecPath, declared: &[DeclaredCollection]) {
        let names: Vec<&str> = declared.iter().map(DeclaredCollection::name).collect();
        if names.len() > crate::collections::DECLARED_PER_KIND {
            self.err(
                p.clone(),
                format!(
                    "at most {} may be declared",
                    crate::collections::DECLARED_PER_KIND
                ),
            );
        }
        let mut seen = std::collections::HashSet::new();
        for (i, name) in names.iter().enumerate() {
            let slug = crate::collections::slug(name);
            if name.trim().is_empty()
                || name.chars().count() > 100
                || name.chars().any(char::is_control)
            {
                self.err(
                    p.index(i),
                    "a name of 1 to 100 characters, no control characters",
                );
            } else if slug.is_empty() {
                self.err(
                    p.index(i),
                    "the name needs a letter or a digit (it becomes part of a URL)",
                );
            } else if !seen.insert(slug.clone()) {
                self.err(
                    p.index(i),
                    format!("\"{name}\" has the same URL (…/{slug}/) as a name before it"),
                );
            }
        }
    }
}

/// Parses "25MB", "10GiB", "1048576".
pub fn parse_size(s: &str) -> Option<u64> {
    s.trim()
        .parse::<bytesize::ByteSize>()
        .ok()
        .map(|b| b.as_u64())
        .filter(|n| *n > 0)
}

/// The record types a domain's `dns_records` may declare (what the DNS code publishes).
pub const DNS_RECORD_TYPES: [&str; 7] = ["A", "AAAA", "CAA", "CNAME", "MX", "SRV", "TXT"];

/// Whether a DNS provider that writes publishes the domain the hostname is in.
fn dns01_possible(spec: &Spec) -> bool {
    let host = spec
        .server
        .hostname
        .trim_end_matches('.')
        .to_ascii_lowercase();
    spec.domains.iter().any(|(name, domain)| {
        let name = name.to_ascii_lowercase();
        (host == name || host.ends_with(&format!(".{name}")))
            && domain
                .dns_provider
                .as_ref()
                .and_then(|p| spec.dns.providers.get(p))
                .is_some_and(|p| p.kind != DnsProviderKind::Manual)
    })
}

/// What is wrong with a declared record's value for its type, if anything.
fn record_value_problem(kind: &str, value: &str) -> Option<&'static str> {
    let fields: Vec<&str> = value.split_ascii_whitespace().collect();
    let number = |s: &str| s.parse::<u16>().is_ok();
    let host = |s: &str| {
        let s = s.trim_end_matches('.');
        !s.is_empty()
            && s.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
    };
    let ok = match kind {
        _ if value.trim().is_empty() => return Some("is empty: the record has no value"),
        "A" => value.parse::<std::net::Ipv4Addr>().is_ok(),
        "AAAA" => value.parse::<std::net::Ipv6Addr>().is_ok(),
        "CNAME" => fields.len() == 1 && host(fields[0]),
        "MX" => fields.len() == 2 && number(fields[0]) && host(fields[1]),
        "SRV" => {
            fields.len() == 4
                && fields[..3].iter().all(|f| number(f))
                && (fields[3] == "." || host(fields[3]))
        }
        "CAA" => {
            fields.len() >= 3
                && fields[0].parse::<u8>().is_ok()
                && ["issue", "issuewild", "iodef"]
                    .contains(&fields[1].to_ascii_lowercase().as_str())
        }
        _ => true,
    };
    (!ok).then_some(match kind {
        "A" => "is not an IPv4 address",
        "AAAA" => "is not an IPv6 address",
        "CNAME" => "is not a host name",
        "MX" => "is not \"PREFERENCE HOST\" (e.g. \"10 mx.example.net\")",
        "SRV" => "is not \"PRIORITY WEIGHT PORT HOST\" (e.g. \"0 1 993 imap.example.net\")",
        _ => "is not \"FLAGS TAG VALUE\" with tag issue, issuewild or iodef (e.g. \"0 issue letsencrypt.org\")",
    })
}

/// Accepts a PHC string of an argon2 hash (what `ferrymail passwd` prints).
pub fn check_password_hash(hash: &str) -> Result<(), String> {
    if !hash.starts_with("$argon2") {
        return Err("password hash must be an argon2 PHC string (\"$argon2id$v=19$...\"); make one with `ferrymail passwd`".into());
    }
    crate::password::parse_hash(hash)
        .map(|_| ())
        .map_err(|e| format!("password hash is malformed: {e}"))
}

fn is_sender_match(entry: &str) -> bool {
    entry.parse::<IpAddr>().is_ok()
        || entry.parse::<ipnet::IpNet>().is_ok()
        || (entry.contains('@') && Address::parse(entry).is_ok())
        || normalize_domain(entry).is_ok()
}
