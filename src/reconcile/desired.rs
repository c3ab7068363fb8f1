//! The desired objects a spec asks for: domains, DKIM keys, accounts, aliases, patterns,
//! normalised exactly as they are stored, plus the checks that need the whole picture
//! (forward loops, password references).

use std::collections::HashMap;

use crate::address::{Address, normalize_domain, normalize_local};
use crate::routing::{Target, expand_placeholders_for_check, find_loops};
use crate::snapshot::build_router;
use crate::spec::{
    self, Alias, LoadedSpec, PasswordRef, SecretRef, SpecError, SpecErrors, SpecPath,
};
use crate::store::records::*;
use crate::store::{Kind, Object};

/// Default largest message: 50 MB, as the MX advertises in SIZE.
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 50_000_000;
pub const DEFAULT_MAX_FORWARDS: u32 = 10;
pub const DEFAULT_DKIM_SELECTOR: &str = "ferrymail";
/// The shortest API token accepted: guessing one must be hopeless.
pub const API_TOKEN_MIN: usize = 32;

/// The DKIM keys a domain (its normalised name `dname`) asks for, with their store ids:
/// the declared ones, or one RSA key under the default selector.
fn dkim_keys(dname: &str, domain: &spec::Domain) -> Vec<(String, DkimKeyRecord)> {
    let default_keys = [spec::DkimKey {
        selector: DEFAULT_DKIM_SELECTOR.into(),
        algorithm: spec::DkimAlgorithm::Rsa2048,
    }];
    domain
        .dkim
        .as_deref()
        .unwrap_or(&default_keys)
        .iter()
        .map(|key| {
            let selector = key.selector.to_lowercase();
            let id = dkim_key_id(&selector, dname);
            let record = DkimKeyRecord {
                domain: dname.to_string(),
                selector,
                algorithm: key.algorithm.as_str().into(),
            };
            (id, record)
        })
        .collect()
}

/// Every DKIM key the spec asks for, without the rest of the desired objects (DNS
/// planning needs only these, and computing all objects of a large spec costs time).
pub fn desired_dkim_keys(loaded: &LoadedSpec) -> Vec<DkimKeyRecord> {
    let spec = &loaded.spec;
    spec.domains
        .iter()
        .filter_map(|(name, domain)| Some((normalize_domain(name).ok()?, domain)))
        .flat_map(|(dname, domain)| dkim_keys(&dname, domain))
        .map(|(_, record)| record)
        .collect()
}

/// Computes every desired object, or every reason it cannot.
pub fn desired_objects(loaded: &LoadedSpec) -> Result<Vec<Object>, SpecErrors> {
    let mut errors = Vec::new();
    let mut objects = Vec::new();

    // Top-level aliases ("local@domain" keys), grouped by domain once.
    let mut flat: HashMap<String, Vec<(&str, &Alias, &str)>> = HashMap::new();
    for (address, alias) in &loaded.spec.aliases {
        if let Some((local, domain)) = address.rsplit_once('@')
            && let Ok(domain) = normalize_domain(domain)
        {
            flat.entry(domain)
                .or_default()
                .push((local, alias, address));
        }
    }

    for (name, domain) in &loaded.spec.domains {
        let Ok(dname) = normalize_domain(name) else {
            continue;
        };
        objects.push(Object::new(Kind::Domain, &dname, &domain_record(domain)));

        for (id, record) in dkim_keys(&dname, domain) {
            objects.push(Object::new(Kind::DkimKey, id, &record));
        }

        // Error paths are built only when there is an error: most specs have none.
        let nested = domain.aliases.iter().map(|(local, alias)| {
            let path: Box<dyn Fn() -> SpecPath> =
                Box::new(move || SpecPath::keys(&["domains", name, "aliases", local]));
            (local.as_str(), alias, path)
        });
        let top =
            flat.remove(&dname)
                .unwrap_or_default()
                .into_iter()
                .map(|(local, alias, address)| {
                    let path: Box<dyn Fn() -> SpecPath> =
                        Box::new(move || SpecPath::keys(&["aliases", address]));
                    (local, alias, path)
                });
        for (local, alias, path) in nested.chain(top) {
            let Ok(local) = normalize_local(local) else {
                continue;
            };
            let address = format!("{local}@{dname}");
            if let Some(mailbox) = &alias.mailbox {
                let password_path = || path().key("mailbox").key("password");
                match mailbox
                    .password
                    .as_ref()
                    .map(|p| password_hash(p, loaded, &password_path))
                {
                    Some(Ok(password_hash)) => {
                        // Read again here (validate read it too): the plan shows the
                        // text that will run.
                        let sieve = match mailbox.sieve.as_ref().map(|s| s.text(&loaded.base_dir)) {
                            Some(Ok(text)) => Some(text),
                            Some(Err(e)) => {
                                errors.push(SpecError::new(path().key("mailbox").key("sieve"), e));
                                None
                            }
                            None => None,
                        };
                        let quota = mailbox.quota.as_deref().and_then(spec::parse_size);
                        objects.push(Object::new(
                            Kind::Account,
                            &address,
                            &AccountRecord {
                                password_hash,
                                quota,
                                save_sent: mailbox.save_sent,
                                calendars: names(&mailbox.calendars),
                                address_books: names(&mailbox.address_books),
                                shares: shares(mailbox),
                                sending: mailbox.sending,
                                sieve,
                                vacation: mailbox.vacation.clone(),
                                self_service: mailbox.self_service.clone(),
                                main_password: mailbox.main_password,
                            },
                        ));
                    }
                    Some(Err(e)) => errors.push(e),
                    None => {}
                }
            }
            let record = AliasRecord {
                forward: targets(&alias.forward),
                mailbox: alias.mailbox.is_some(),
                reject: alias.reject,
                message: alias.message.clone(),
                enabled: alias.enabled,
                junk_forward: alias.junk_forward.as_deref().map(str::to_lowercase),
            };
            objects.push(Object::new(Kind::Alias, address, &record));
        }

        for (i, pattern) in domain.patterns.iter().enumerate() {
            let record = PatternRecord {
                domain: dname.clone(),
                regex: pattern.regex.clone(),
                position: i as u32,
                forward: pattern_targets(&pattern.forward),
                reject: pattern.reject,
                message: pattern.message.clone(),
                enabled: pattern.enabled,
            };
            objects.push(Object::new(
                Kind::Pattern,
                pattern_id(&dname, &pattern.regex),
                &record,
            ));
        }
    }

    match build_router(&objects) {
        Ok(router) => {
            for (node, target) in dangling_local_targets(&objects, &router) {
                errors.push(SpecError::new(
                    node_path(loaded, &node).key("forward"),
                    format!("{node} forwards to {target}, which is not an address on this server (declare it, or fix the target)"),
                ));
            }
            for cycle in find_loops(&router) {
                let message = format!("forward loop: {}", cycle.join(" → "));
                errors.push(SpecError::new(node_path(loaded, &cycle[0]), message));
            }
        }
        Err(e) => errors.push(SpecError::new(SpecPath::keys(&["domains"]), e.to_string())),
    }

    if errors.is_empty() {
        Ok(objects)
    } else {
        Err(loaded.errors(errors))
    }
}

/// The checks above run on the parts of a spec that parsed when other parts did not (a
/// type error elsewhere): `validate` shows a forward loop at once, not after the typo is
/// fixed. Only the errors not already in `found` are returned.
pub fn whole_spec_errors_despite(path: &std::path::Path, found: &SpecErrors) -> Vec<String> {
    let Ok(partial) = spec::load_unchecked(path) else {
        return Vec::new();
    };
    match desired_objects(&partial) {
        Ok(_) => Vec::new(),
        Err(more) => more
            .0
            .into_iter()
            .filter(|e| !found.0.contains(e))
            .collect(),
    }
}

/// What is wrong with the declared API tokens: unreadable, or too short to be safe. Only
/// `serve` reads them (CI applying the spec need not hold them), so its reconcile fails
/// on these, rather than leaving a token out with a log line while `status` said ok.
pub fn api_token_errors(loaded: &LoadedSpec) -> Vec<SpecError> {
    let mut errors = Vec::new();
    for (name, token) in &loaded.spec.admin.api_tokens {
        let path = SpecPath::keys(&["admin", "api_tokens", name]);
        match token.resolve(&loaded.base_dir) {
            Err(e) => errors.push(SpecError::new(path, format!("API token {name}: {e}"))),
            Ok(t) if t.expose().trim().len() < API_TOKEN_MIN => errors.push(SpecError::new(
                path,
                format!(
                    "API token {name} has fewer than {API_TOKEN_MIN} characters (make one with `openssl rand -hex 32`)"
                ),
            )),
            Ok(_) => {}
        }
    }
    errors
}

fn domain_record(domain: &spec::Domain) -> DomainRecord {
    DomainRecord {
        dns_provider: domain.dns_provider.clone(),
        max_message_size: domain
            .max_message_size
            .as_deref()
            .and_then(spec::parse_size)
            .unwrap_or(DEFAULT_MAX_MESSAGE_SIZE),
        max_forwards: domain.max_forwards.unwrap_or(DEFAULT_MAX_FORWARDS),
        allowlist: domain.allowlist.clone(),
        denylist: domain.denylist.clone(),
        greylisting: domain.greylisting,
        greylist_delay: domain
            .greylist_delay
            .as_deref()
            .and_then(|d| humantime::parse_duration(d).ok())
            .map(|d| d.as_secs())
            .unwrap_or(DEFAULT_GREYLIST_DELAY),
        require_tls: domain.require_tls,
        reject_spf_fail: domain.reject_spf_fail,
        reject_dmarc_fail: domain.reject_dmarc_fail,
        subaddressing: domain.subaddressing,
        external_forward_tags: domain.external_forward_tags,
        dmarc_reports: domain
            .dmarc_reports
            .as_ref()
            .map(|a| a.to_ascii_lowercase()),
        catch_all: domain.catch_all.as_ref().map(|r| RuleRecord {
            forward: targets(&r.forward),
            reject: r.reject,
            message: r.message.clone(),
            enabled: r.enabled,
        }),
        spam: domain
            .spam
            .as_ref()
            .map(|s| SpamPolicy {
                reject_score: s.reject_score.map(SpamPolicy::hundredths),
                junk_score: s.junk_score.map(SpamPolicy::hundredths),
                junk_forward: s.junk_forward.as_deref().map(str::to_lowercase),
            })
            .unwrap_or_default(),
    }
}

/// Where in the spec a routing node ("a@d", "pattern #2 of d", "catch-all of d") is
/// declared; only called to report an error.
fn node_path(loaded: &LoadedSpec, node: &str) -> SpecPath {
    let domain_key = |d: &str| {
        loaded
            .spec
            .domains
            .keys()
            .find(|k| normalize_domain(k).is_ok_and(|n| n == d))
            .cloned()
            .unwrap_or_default()
    };
    if let Some(d) = node.strip_prefix("catch-all of ") {
        return SpecPath::keys(&["domains", &domain_key(d), "catch_all"]);
    }
    if let Some((n, d)) = node
        .strip_prefix("pattern #")
        .and_then(|r| r.split_once(" of "))
    {
        let i = n.parse::<usize>().unwrap_or(1).saturating_sub(1);
        return SpecPath::keys(&["domains", &domain_key(d), "patterns"]).index(i);
    }
    let Some((local, d)) = node.rsplit_once('@') else {
        return SpecPath::root();
    };
    let key = domain_key(d);
    if let Some(domain) = loaded.spec.domains.get(&key)
        && let Some(l) = domain
            .aliases
            .keys()
            .find(|l| normalize_local(l).is_ok_and(|l| l == local))
    {
        return SpecPath::keys(&["domains", &key, "aliases", l]);
    }
    let flat = loaded
        .spec
        .aliases
        .keys()
        .find(|a| Address::parse(a).is_ok_and(|a| a.to_string() == node));
    flat.map(|a| SpecPath::keys(&["aliases", a]))
        .unwrap_or_else(|| SpecPath::keys(&["domains", &key]))
}

/// Forward targets on one of our own domains that no alias, pattern or catch-all takes:
/// mail to them would bounce, so the spec is wrong.
fn dangling_local_targets(
    objects: &[Object],
    router: &crate::routing::Router,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for o in objects {
        let (node, forward) = match o.kind {
            Kind::Alias => match o.record::<AliasRecord>() {
                Ok(a) if a.enabled && a.reject.is_none() => (o.id.clone(), a.forward),
                _ => continue,
            },
            Kind::Domain => match o.record::<DomainRecord>().ok().and_then(|d| d.catch_all) {
                Some(c) if c.enabled && c.reject.is_none() => {
                    (format!("catch-all of {}", o.id), c.forward)
                }
                _ => continue,
            },
            _ => continue,
        };
        for target in forward {
            if let Ok(Target::Address(a)) = Target::parse(&target)
                && router.is_local_domain(&a.domain)
                && matches!(router.resolve(&target), Ok(None))
            {
                out.push((node.clone(), target));
            }
        }
    }
    out
}

/// Targets in canonical form, de-duplicated, order kept.
fn targets(raw: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in raw
        .iter()
        .filter_map(|t| Target::parse(t).ok())
        .map(|t| t.to_string())
    {
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

/// Pattern targets keep their `$n` templates; only exact duplicates are dropped.
fn pattern_targets(raw: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in raw {
        let canonical = if expand_placeholders_for_check(t).1.is_empty() {
            Target::parse(t)
                .map(|t| t.to_string())
                .unwrap_or_else(|_| t.clone())
        } else {
            t.trim().to_string()
        };
        if !out.contains(&canonical) {
            out.push(canonical);
        }
    }
    out
}

/// Resolves a mailbox password to its hash; env/file references are read here, the only
/// place that needs them, and a hash read from them is checked like an inline one.
pub(crate) fn password_hash(
    p: &PasswordRef,
    loaded: &LoadedSpec,
    path: &dyn Fn() -> SpecPath,
) -> Result<String, SpecError> {
    let hash = match (&p.hash, &p.env, &p.file) {
        (Some(hash), None, None) => return Ok(hash.clone()),
        (None, env, file) if env.is_some() != file.is_some() => {
            let r = SecretRef {
                env: env.clone(),
                file: file.clone(),
            };
            r.resolve(&loaded.base_dir)
                .map_err(|e| SpecError::new(path(), e.to_string()))?
        }
        _ => {
            return Err(SpecError::new(
                path(),
                "password needs exactly one of `hash`, `env` or `file`",
            ));
        }
    };
    spec::check_password_hash(hash.expose())
        .map_err(|e| SpecError::new(path(), format!("{e} (read from {})", describe(p))))?;
    Ok(hash.expose().to_string())
}

fn describe(p: &PasswordRef) -> String {
    match (&p.env, &p.file) {
        (Some(e), _) => format!("env {e}"),
        (_, Some(f)) => format!("file {}", f.display()),
        _ => "inline hash".into(),
    }
}

/// The display names of declared collections.
fn names(declared: &[spec::model::DeclaredCollection]) -> Vec<String> {
    declared.iter().map(|d| d.name().to_string()).collect()
}

/// Every (collection, mailbox) sharing of a mailbox, in the spec's order.
fn shares(mailbox: &spec::model::Mailbox) -> Vec<crate::store::records::ShareRecord> {
    let mut out = Vec::new();
    for (kind, declared) in [
        ("calendar", &mailbox.calendars),
        ("address book", &mailbox.address_books),
    ] {
        for d in declared {
            for (with, access) in d.share().into_iter().flatten() {
                out.push(crate::store::records::ShareRecord {
                    kind: kind.to_string(),
                    name: d.name().to_string(),
                    with: with.to_lowercase(),
                    access: match access {
                        spec::model::ShareAccess::Read => "read",
                        spec::model::ShareAccess::Write => "write",
                    }
                    .to_string(),
                });
            }
        }
    }
    out
}
