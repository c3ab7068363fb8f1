//! Certificates as reconciled resources: which names the server's certificate must
//! cover, and what `serve` will do about it (issue, renew, re-issue for new names).

use serde::{Deserialize, Serialize};

use crate::spec::{AcmeChallenge, DnsProviderKind, Spec, TlsMode};
use crate::store::{Store, StoreError};
use crate::tls::acme::renewal_time;

/// The id the server's certificate is stored under: its hostname, as DNS writes it.
pub fn certificate_id(spec: &Spec) -> String {
    spec.server
        .hostname
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// The names the server's certificate must cover: its own, plus the names clients are
/// pointed at (imap., smtp., autoconfig....) in domains whose records ferrymail
/// publishes and that lead here (one name that does not fails the whole order).
pub fn acme_names(spec: &Spec) -> Vec<String> {
    let host = spec
        .server
        .hostname
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let mut names = vec![host];
    for (name, domain) in &spec.domains {
        let Ok(domain_name) = crate::address::normalize_domain(name) else {
            continue;
        };
        let publishes = domain
            .dns_provider
            .as_ref()
            .and_then(|p| spec.dns.providers.get(p))
            .is_some_and(|p| p.kind != DnsProviderKind::Manual);
        if !publishes {
            continue;
        }
        // Only the names that lead here: a name the spec gives its own record (mail.
        // pointing at a webmail host, say) would fail the whole order.
        let target = format!("{}.", names[0]);
        for record in crate::dns::records::for_domain(spec, &domain_name, &[]) {
            if record.kind == crate::dns::records::Kind::CNAME
                && record.data.eq_ignore_ascii_case(&target)
                && !names.contains(&record.name)
                && names.len() < MAX_NAMES
            {
                names.push(record.name);
            }
        }
    }
    names
}

/// Let's Encrypt puts at most 100 names in one certificate.
const MAX_NAMES: usize = 100;

/// What will happen to a certificate, done by `serve` (it answers the challenges).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertChange {
    /// "issue" | "renew" | "reissue".
    pub action: String,
    pub id: String,
    pub names: Vec<String>,
    /// How it is validated, e.g. "acme, http-01".
    pub how: String,
    /// Why, for renew/reissue.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub why: String,
}

/// The certificate change the spec calls for, if any.
pub fn plan(
    spec: &Spec,
    store: Option<&dyn Store>,
    now: i64,
) -> Result<Option<CertChange>, StoreError> {
    let (TlsMode::Acme, Some(acme)) = (spec.tls.mode, &spec.tls.acme) else {
        return Ok(None);
    };
    let names = acme_names(spec);
    let id = names[0].clone();
    let challenge = match acme.challenge {
        AcmeChallenge::Http01 => "http-01",
        AcmeChallenge::TlsAlpn01 => "tls-alpn-01",
        AcmeChallenge::Dns01 => "dns-01",
    };
    let change = |action: &str, why: String| CertChange {
        action: action.into(),
        id: id.clone(),
        names: names.clone(),
        how: format!("acme, {challenge}"),
        why,
    };
    let stored = match store {
        Some(store) => store.certificate(&id)?,
        None => None,
    };
    let Some(cert) = stored else {
        return Ok(Some(change("issue", String::new())));
    };
    let (mut have, mut want) = (cert.names.clone(), names.clone());
    have.sort();
    want.sort();
    if have != want {
        let added: Vec<&String> = want.iter().filter(|n| !have.contains(n)).collect();
        let gone: Vec<&String> = have.iter().filter(|n| !want.contains(n)).collect();
        let mut why = Vec::new();
        if !added.is_empty() {
            why.push(format!(
                "+{}",
                added
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" +")
            ));
        }
        if !gone.is_empty() {
            why.push(format!(
                "-{}",
                gone.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" -")
            ));
        }
        return Ok(Some(change(
            "reissue",
            format!("names changed: {}", why.join(" ")),
        )));
    }
    let days = (cert.not_after - now).max(0) / 86_400;
    if cert.renew_requested {
        return Ok(Some(change("renew", "a renewal was asked for".into())));
    }
    if now >= renewal_time(&cert) {
        return Ok(Some(change("renew", format!("expires in {days} days"))));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{SqliteStore, StoredCertificate};

    fn spec(extra: &str) -> Spec {
        toml::from_str(&format!(
            "[server]\nhostname = \"mx.d.test\"\n[tls]\nmode = \"acme\"\n[tls.acme]\ncontact = \"a@d.test\"\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn missing_due_and_renamed_certificates_are_planned() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let s = spec("");
        let first = plan(&s, Some(&store), 0).unwrap().unwrap();
        assert_eq!(
            (first.action.as_str(), first.how.as_str()),
            ("issue", "acme, http-01")
        );
        let day = 86_400;
        store
            .put_certificate(&StoredCertificate {
                id: "mx.d.test".into(),
                names: vec!["mx.d.test".into()],
                chain_pem: String::new(),
                key_pem: String::new(),
                not_after: 90 * day,
                issued_at: 0,
                renew_requested: false,
            })
            .unwrap();
        assert_eq!(plan(&s, Some(&store), 10 * day).unwrap(), None);
        let due = plan(&s, Some(&store), 78 * day).unwrap().unwrap();
        assert_eq!(
            (due.action.as_str(), due.why.as_str()),
            ("renew", "expires in 12 days")
        );
        let with_provider = spec(
            "[dns.providers.p]\nkind = \"cloudflare\"\napi_token = { env = \"T\" }\n[domains.\"d.test\"]\ndns_provider = \"p\"\n",
        );
        let renamed = plan(&with_provider, Some(&store), day).unwrap().unwrap();
        assert_eq!(renamed.action, "reissue");
        assert!(
            renamed.why.starts_with("names changed: +autoconfig.d.test"),
            "{}",
            renamed.why
        );
    }
}
