//! The lookup table for recipients: exact alias beats pattern beats catch-all; `+tag`
//! resolves to the base alias and is kept on forward.

use std::collections::HashMap;

use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

use super::{RejectMode, Target};
use crate::address::{Address, AddressError};

/// Compiled-size cap per pattern: the regex crate guarantees linear-time matching, this
/// bounds memory so one spec cannot make the server build a huge automaton.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Above this many patterns in a domain, one RegexSet pass finds the first match.
const PATTERNS_BEFORE_SET: usize = 8;

/// What one alias, pattern or catch-all does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    /// Target templates (patterns may hold `$1`…); already validated.
    pub forward: Vec<String>,
    /// Deliver into the mailbox of this (base) address too.
    pub mailbox: bool,
    pub reject: Option<RejectMode>,
    pub message: Option<String>,
    pub enabled: bool,
}

impl Rule {
    /// An enabled rule that forwards to `targets`.
    pub fn forwarding(targets: &[&str]) -> Rule {
        Rule {
            forward: targets.iter().map(|s| s.to_string()).collect(),
            enabled: true,
            ..Default::default()
        }
    }
}

/// The routes of one domain.
#[derive(Debug, Default)]
pub struct DomainRoutes {
    pub(super) aliases: HashMap<String, Rule>,
    pub(super) patterns: Vec<(Regex, Rule)>,
    set: Option<RegexSet>,
    pub(super) catch_all: Option<Rule>,
    subaddressing: bool,
    /// A +tag is passed on to forward targets on other servers too, not only to this
    /// server's own addresses.
    external_tags: bool,
}

impl DomainRoutes {
    pub fn new(subaddressing: bool, catch_all: Option<Rule>) -> Self {
        DomainRoutes {
            subaddressing,
            catch_all,
            ..Default::default()
        }
    }

    /// Whether forwards to other servers keep the +tag (`b+news@elsewhere.net`): off by
    /// default, since many receivers refuse a subaddress they do not know.
    pub fn external_forward_tags(mut self, on: bool) -> Self {
        self.external_tags = on;
        self
    }

    /// Adds an exact alias by normalised local part.
    pub fn add_alias(&mut self, local: String, rule: Rule) {
        self.aliases.insert(local, rule);
    }

    /// Adds a compiled pattern (in priority order); disabled ones are left out.
    pub fn add_pattern(&mut self, regex: Regex, rule: Rule) {
        if rule.enabled {
            self.patterns.push((regex, rule));
        }
    }

    fn finish(&mut self) -> Result<(), regex::Error> {
        // A set pays off only with many patterns; a few are cheaper tried in order.
        if self.patterns.len() <= PATTERNS_BEFORE_SET {
            return Ok(());
        }
        let set = RegexSetBuilder::new(self.patterns.iter().map(|(r, _)| r.as_str()))
            .case_insensitive(true)
            .size_limit(REGEX_SIZE_LIMIT * self.patterns.len().max(1))
            .build()?;
        self.set = Some(set);
        Ok(())
    }
}

/// Compiles a user pattern with the same options everywhere: case-insensitive, bounded.
pub fn compile(regex: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(regex)
        .case_insensitive(true)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
}

/// Which kind of entry matched a recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matched {
    Exact,
    /// Index of the pattern in the domain's list.
    Pattern(usize),
    CatchAll,
}

/// What to do with mail for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Deliver {
        /// The account whose mailbox keeps a copy.
        mailbox: Option<Address>,
        forward: Vec<Target>,
    },
    Reject {
        mode: RejectMode,
        message: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The recipient as normalised.
    pub recipient: Address,
    /// The address of the alias that matched (without +tag).
    pub alias: Address,
    pub tag: Option<String>,
    pub matched: Matched,
    pub action: Action,
}

/// All domains' routes.
#[derive(Debug, Default)]
pub struct Router {
    pub(super) domains: HashMap<String, DomainRoutes>,
}

impl Router {
    pub fn insert(&mut self, domain: String, mut routes: DomainRoutes) -> Result<(), regex::Error> {
        routes.finish()?;
        self.domains.insert(domain, routes);
        Ok(())
    }

    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.domains.contains_key(domain)
    }

    pub fn domains(&self) -> impl Iterator<Item = &str> {
        self.domains.keys().map(String::as_str)
    }

    /// The alias `local` of `domain`, as its rule (for the admin's edit form).
    pub fn alias(&self, domain: &str, local: &str) -> Option<&Rule> {
        self.domains.get(domain)?.aliases.get(local)
    }

    /// A domain's patterns in order, as (regex, rule), and its catch-all.
    pub fn rules_of(&self, domain: &str) -> (Vec<(String, &Rule)>, Option<&Rule>) {
        match self.domains.get(domain) {
            Some(routes) => (
                routes
                    .patterns
                    .iter()
                    .map(|(re, rule)| (re.as_str().to_string(), rule))
                    .collect(),
                routes.catch_all.as_ref(),
            ),
            None => (Vec::new(), None),
        }
    }

    /// `listing()` narrowed to the entries whose address or a target contains `needle`
    /// (lower case; everything when empty).
    pub fn search(&self, needle: &str) -> Vec<(&str, String, &Rule)> {
        self.listing()
            .into_iter()
            .filter(|(domain, local, rule)| {
                needle.is_empty()
                    || format!("{local}@{domain}").contains(needle)
                    || rule
                        .forward
                        .iter()
                        .any(|f| f.to_lowercase().contains(needle))
            })
            .collect()
    }

    /// Every alias, pattern and catch-all, for people to read: (domain, what matches —
    /// a local part, `/regex/` or `*` —, the rule), sorted by domain then local part.
    pub fn listing(&self) -> Vec<(&str, String, &Rule)> {
        let mut out = Vec::new();
        let mut domains: Vec<(&String, &DomainRoutes)> = self.domains.iter().collect();
        domains.sort_by_key(|(d, _)| *d);
        for (domain, routes) in domains {
            let mut aliases: Vec<(&String, &Rule)> = routes.aliases.iter().collect();
            aliases.sort_by_key(|(local, _)| *local);
            out.extend(
                aliases
                    .into_iter()
                    .map(|(l, r)| (domain.as_str(), l.clone(), r)),
            );
            out.extend(
                routes
                    .patterns
                    .iter()
                    .map(|(re, r)| (domain.as_str(), format!("/{}/", re.as_str()), r)),
            );
            if let Some(rule) = &routes.catch_all {
                out.push((domain.as_str(), "*".to_string(), rule));
            }
        }
        out
    }

    /// Resolves a recipient. `Ok(None)`: not a local domain, or no such address here.
    pub fn resolve(&self, recipient: &str) -> Result<Option<Resolution>, AddressError> {
        let recipient = Address::parse(recipient)?;
        let Some(routes) = self.domains.get(&recipient.domain) else {
            return Ok(None);
        };
        // This server's own addresses always take the tag; others only when the domain
        // says so.
        let keep_tag = |t: &Target| match t {
            Target::Address(a) => routes.external_tags || self.domains.contains_key(&a.domain),
            _ => true,
        };

        if let Some(rule) = routes.aliases.get(&recipient.local) {
            return Ok(finish(
                &keep_tag,
                &recipient,
                &recipient.local,
                None,
                Matched::Exact,
                rule,
                None,
            ));
        }
        let (base, tag) = match recipient.local.split_once('+') {
            Some((base, tag)) if routes.subaddressing && !base.is_empty() => (base, Some(tag)),
            _ => (recipient.local.as_str(), None),
        };
        if tag.is_some()
            && let Some(rule) = routes.aliases.get(base)
        {
            return Ok(finish(
                &keep_tag,
                &recipient,
                base,
                tag,
                Matched::Exact,
                rule,
                None,
            ));
        }
        let first_match = match &routes.set {
            Some(set) => set.matches(base).iter().next(),
            None => routes.patterns.iter().position(|(re, _)| re.is_match(base)),
        };
        if let Some(i) = first_match {
            let (re, rule) = &routes.patterns[i];
            let caps = re.captures(base);
            return Ok(finish(
                &keep_tag,
                &recipient,
                base,
                tag,
                Matched::Pattern(i),
                rule,
                caps.as_ref(),
            ));
        }
        if let Some(rule) = &routes.catch_all {
            return Ok(finish(
                &keep_tag,
                &recipient,
                base,
                tag,
                Matched::CatchAll,
                rule,
                None,
            ));
        }
        Ok(None)
    }
}

fn finish(
    keep_tag: &dyn Fn(&Target) -> bool,
    recipient: &Address,
    base: &str,
    tag: Option<&str>,
    matched: Matched,
    rule: &Rule,
    caps: Option<&regex::Captures<'_>>,
) -> Option<Resolution> {
    if !rule.enabled {
        return None;
    }
    let alias = Address {
        local: base.to_string(),
        domain: recipient.domain.clone(),
    };
    let action = match rule.reject {
        Some(mode) => Action::Reject {
            mode,
            message: rule.message.clone(),
        },
        None => {
            let mut forward: Vec<Target> = Vec::new();
            for template in &rule.forward {
                let text = match caps {
                    Some(caps) => {
                        let mut out = String::new();
                        caps.expand(template, &mut out);
                        out
                    }
                    None => template.clone(),
                };
                // A capture can make a target invalid (e.g. a dot at the end): skip it.
                if let Ok(t) = Target::parse(&text) {
                    let t = t.for_recipient(&recipient.local, tag.filter(|_| keep_tag(&t)));
                    if !forward.contains(&t) {
                        forward.push(t);
                    }
                }
            }
            let mailbox = rule.mailbox.then(|| alias.clone());
            Action::Deliver { mailbox, forward }
        }
    };
    Some(Resolution {
        recipient: recipient.clone(),
        alias,
        tag: tag.map(str::to_string),
        matched,
        action,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fwd(targets: &[&str]) -> Rule {
        Rule::forwarding(targets)
    }

    fn router() -> Router {
        let mut d = DomainRoutes::new(true, Some(fwd(&["owner@elsewhere.net"])));
        d.add_alias("hello".into(), fwd(&["user@gmail.com"]));
        d.add_alias("support-7".into(), fwd(&["seven@x.net"]));
        d.add_alias(
            "off".into(),
            Rule {
                enabled: false,
                ..fwd(&["a@b.net"])
            },
        );
        d.add_alias(
            "me".into(),
            Rule {
                mailbox: true,
                ..fwd(&[])
            },
        );
        d.add_alias(
            "nope".into(),
            Rule {
                reject: Some(RejectMode::Hard),
                message: Some("gone".into()),
                ..fwd(&[])
            },
        );
        d.add_alias("relay".into(), fwd(&["other.example"]));
        d.add_pattern(
            compile(r"^support-(\d+)$").unwrap(),
            fwd(&["tickets+$1@helpdesk.net"]),
        );
        d.add_pattern(
            compile(r"^(?P<team>sales|ops)-.*$").unwrap(),
            fwd(&["${team}@corp.net"]),
        );
        let mut r = Router::default();
        r.insert("example.test".into(), d).unwrap();
        r
    }

    fn forwards(r: &Router, rcpt: &str) -> Vec<String> {
        match r.resolve(rcpt).unwrap().unwrap().action {
            Action::Deliver { forward, .. } => forward.iter().map(|t| t.to_string()).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn exact_beats_pattern_beats_catch_all() {
        let r = router();
        assert_eq!(forwards(&r, "support-7@example.test"), ["seven@x.net"]);
        assert_eq!(
            forwards(&r, "support-42@example.test"),
            ["tickets+42@helpdesk.net"]
        );
        assert_eq!(forwards(&r, "SALES-emea@example.test"), ["sales@corp.net"]);
        assert_eq!(forwards(&r, "random@example.test"), ["owner@elsewhere.net"]);
        assert_eq!(
            r.resolve("random@example.test").unwrap().unwrap().matched,
            Matched::CatchAll
        );
    }

    #[test]
    fn subaddress_resolves_to_base_and_keeps_tag_on_this_servers_addresses() {
        let r = router();
        let res = r.resolve("Hello+News@EXAMPLE.test").unwrap().unwrap();
        assert_eq!(res.alias.to_string(), "hello@example.test");
        assert_eq!(res.tag.as_deref(), Some("news"));
        // Another server's address: the tag stays here (receivers refuse unknown ones).
        assert_eq!(forwards(&r, "hello+x@example.test"), ["user@gmail.com"]);
        // A host target takes the whole local part, as sent.
        assert_eq!(
            forwards(&r, "relay+y@example.test"),
            ["relay+y@other.example"]
        );
        // This server's own address keeps it.
        let mut r = router();
        let mut local = DomainRoutes::new(true, None);
        local.add_alias("team".into(), fwd(&["me@example.test", "b@elsewhere.net"]));
        r.insert("local.test".into(), local).unwrap();
        assert_eq!(
            forwards(&r, "team+news@local.test"),
            ["me+news@example.test", "b@elsewhere.net"]
        );
        // Unless the domain passes tags on everywhere.
        let mut everywhere = DomainRoutes::new(true, None).external_forward_tags(true);
        everywhere.add_alias("team".into(), fwd(&["b@elsewhere.net"]));
        r.insert("tags.test".into(), everywhere).unwrap();
        assert_eq!(
            forwards(&r, "team+news@tags.test"),
            ["b+news@elsewhere.net"]
        );
    }

    #[test]
    fn disabled_is_unknown_and_reject_carries_its_message() {
        let r = router();
        assert_eq!(r.resolve("off@example.test").unwrap(), None);
        let res = r.resolve("nope@example.test").unwrap().unwrap();
        assert_eq!(
            res.action,
            Action::Reject {
                mode: RejectMode::Hard,
                message: Some("gone".into())
            }
        );
        assert_eq!(r.resolve("x@not-local.test").unwrap(), None);
        let me = r.resolve("me@example.test").unwrap().unwrap();
        assert!(matches!(
            me.action,
            Action::Deliver {
                mailbox: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn idna_domains_are_matched_in_any_form() {
        let mut r = Router::default();
        let mut d = DomainRoutes::new(true, None);
        d.add_alias("info".into(), fwd(&["a@b.net"]));
        r.insert(
            crate::address::normalize_domain("bücher.example").unwrap(),
            d,
        )
        .unwrap();
        assert!(r.resolve("info@BÜCHER.example").unwrap().is_some());
        assert!(r.resolve("info@xn--bcher-kva.example").unwrap().is_some());
    }
}
