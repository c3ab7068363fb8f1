//! Forward Email's free-plan TXT records (`forward-email=…` on the domain): catch-all
//! targets, `name:target` aliases, `/regex/:target` rules and `!name` rejections.

use super::{Imported, Rule, checked_target};
use crate::routing::RejectMode;

/// The regex endings Forward Email accepts, longest first: flags before the colon.
const REGEX_ENDINGS: [&str; 5] = ["/gi:", "/ig:", "/g:", "/i:", "/:"];

/// Reads the TXT records of `domain` (each record's strings already joined).
pub fn parse(domain: &str, records: &[String], imported: &mut Imported) {
    let mut found = false;
    for record in records {
        let lower = record.to_ascii_lowercase();
        if lower.starts_with("forward-email-port=") {
            imported.notes.push(format!(
                "{domain}: \"{record}\": delivery to another port is for the forwarding service, not needed here"
            ));
            continue;
        }
        let Some(value) = lower
            .starts_with("forward-email=")
            .then(|| &record["forward-email=".len()..])
        else {
            continue;
        };
        found = true;
        for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if let Err(why) = entry_into(domain, entry, imported) {
                imported.notes.push(format!("{domain}: \"{entry}\": {why}"));
            }
        }
    }
    if !found {
        let paid = records.iter().any(|r| {
            r.to_ascii_lowercase()
                .starts_with("forward-email-site-verification=")
        });
        imported.notes.push(if paid {
            format!(
                "{domain}: its aliases are kept in a Forward Email account (a paid plan), not in DNS: export them there"
            )
        } else {
            format!("{domain}: no forward-email= TXT record")
        });
        return;
    }
    if let Some(entry) = imported.domains.get_mut(domain) {
        let notes = every_matching_rule(entry);
        imported
            .notes
            .extend(notes.into_iter().map(|n| format!("{domain}: {n}")));
    }
}

/// Forward Email sends a message to every rule that matches its address (an exact name
/// and each matching regex), and any matching rejection wins; the spec takes the exact
/// alias, else the first matching pattern. So each alias takes what the patterns that
/// match its name add, and overlapping patterns are pointed out.
fn every_matching_rule(domain: &mut super::ImportedDomain) -> Vec<String> {
    let mut notes = Vec::new();
    let compiled: Vec<(regex::Regex, Rule)> = domain
        .patterns
        .iter()
        .filter_map(|(r, rule)| {
            regex::RegexBuilder::new(r)
                .case_insensitive(true)
                .build()
                .ok()
                .map(|re| (re, rule.clone()))
        })
        .collect();
    for (name, rule) in domain.aliases.iter_mut() {
        for (re, pattern_rule) in &compiled {
            let Some(captures) = re.captures(name) else {
                continue;
            };
            match pattern_rule {
                Rule::Reject(mode) => *rule = Rule::Reject(*mode),
                Rule::Forward(targets) => {
                    let expanded = targets
                        .iter()
                        .map(|t| {
                            let mut out = String::new();
                            captures.expand(t, &mut out);
                            out
                        })
                        .collect();
                    rule.add(expanded);
                }
            }
        }
    }
    if domain.patterns.len() > 1 {
        notes.push(
            "Forward Email sends to every regex rule that matches; the spec takes the first that matches, in the order above: check that no address needs two"
                .to_string(),
        );
    }
    notes
}

fn entry_into(domain: &str, entry: &str, imported: &mut Imported) -> Result<(), String> {
    // Rejections: ! accepts and drops, !! asks to retry (421), !!! refuses (550).
    if let Some(rest) = entry.strip_prefix('!') {
        let (mode, name) = match rest.strip_prefix('!') {
            Some(rest) => match rest.strip_prefix('!') {
                Some(name) => (RejectMode::Hard, name),
                None => (RejectMode::Soft, rest),
            },
            None => (RejectMode::Quiet, rest),
        };
        // A rejection may be a regex rule too ("!!!/^old-/"), with or without a target.
        if name.starts_with('/') {
            let regex = regex_entry(&format!("{}:", name.split(':').next().unwrap_or(name)))?.0;
            let patterns = &mut imported.domain(domain).patterns;
            patterns.retain(|(r, _)| *r != regex);
            patterns.push((regex, Rule::Reject(mode)));
            return Ok(());
        }
        let name = name
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if name.is_empty() {
            return Err("a rejection names no alias".into());
        }
        imported
            .domain(domain)
            .aliases
            .insert(name, Rule::Reject(mode));
        return Ok(());
    }
    if entry.starts_with('/') {
        let (regex, target) = regex_entry(entry)?;
        let target = checked_target(target)?;
        let patterns = &mut imported.domain(domain).patterns;
        match patterns.iter_mut().find(|(r, _)| *r == regex) {
            Some((_, rule)) => rule.add(vec![target]),
            None => patterns.push((regex, Rule::Forward(vec![target]))),
        }
        return Ok(());
    }
    // A URL has a colon of its own; anything else with one is "name:target".
    let lower = entry.to_ascii_lowercase();
    let is_url = lower.starts_with("https://") || lower.starts_with("http://");
    match entry.split_once(':').filter(|_| !is_url) {
        Some((name, target)) => {
            let target = checked_target(target)?;
            let name = name.to_ascii_lowercase();
            let aliases = &mut imported.domain(domain).aliases;
            aliases
                .entry(name)
                .and_modify(|rule| rule.add(vec![target.clone()]))
                .or_insert(Rule::Forward(vec![target]));
        }
        // A bare target takes every address no alias or rule matches.
        None => {
            let target = checked_target(entry)?;
            let entry = imported.domain(domain);
            match &mut entry.catch_all {
                Some(rule) => rule.add(vec![target]),
                None => entry.catch_all = Some(Rule::Forward(vec![target])),
            }
        }
    }
    Ok(())
}

/// `/^(support|info)$/i:me+$1@example.net` → ("^(support|info)$", "me+$1@example.net").
/// A rejection's regex comes without a target: `/^old-/` is read as `/^old-/:`.
/// Every rule of the spec matches without regard to case, as these do.
fn regex_entry(entry: &str) -> Result<(String, &str), String> {
    let (at, ending) = REGEX_ENDINGS
        .iter()
        .filter_map(|ending| Some((entry.rfind(ending)?, *ending)))
        .filter(|(at, _)| *at > 0)
        .max_by_key(|(at, ending)| (*at, ending.len()))
        .ok_or("a regex rule without its closing \"/:\"")?;
    let regex = entry[1..at].to_string();
    regex::Regex::new(&regex).map_err(|e| format!("the regex does not compile here: {e}"))?;
    Ok((regex, &entry[at + ending.len()..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(records: &[&str]) -> Imported {
        let mut imported = Imported::default();
        let records: Vec<String> = records.iter().map(|r| r.to_string()).collect();
        parse("example.com", &records, &mut imported);
        imported
    }

    #[test]
    fn every_kind_of_entry_becomes_its_spec_rule() {
        let imported = read(&[
            "v=spf1 include:spf.forwardemail.net -all",
            "forward-email=hello:one@gmail.test,hello:two@gmail.test,catchall@gmail.test",
            "forward-email=/^(support|info)$/:me+$1@gmail.test,hook:https://example.net/mail",
            "forward-email=!old,!!busy,!!!gone,shop:example.net",
        ]);
        let d = &imported.domains["example.com"];
        assert_eq!(
            d.aliases["hello"],
            Rule::Forward(vec!["one@gmail.test".into(), "two@gmail.test".into()])
        );
        assert_eq!(
            d.catch_all,
            Some(Rule::Forward(vec!["catchall@gmail.test".into()]))
        );
        assert_eq!(
            d.patterns,
            vec![(
                "^(support|info)$".to_string(),
                Rule::Forward(vec!["me+$1@gmail.test".into()])
            )]
        );
        assert_eq!(
            d.aliases["hook"],
            Rule::Forward(vec!["https://example.net/mail".into()])
        );
        assert_eq!(d.aliases["shop"], Rule::Forward(vec!["example.net".into()]));
        assert_eq!(d.aliases["old"], Rule::Reject(RejectMode::Quiet));
        assert_eq!(d.aliases["busy"], Rule::Reject(RejectMode::Soft));
        assert_eq!(d.aliases["gone"], Rule::Reject(RejectMode::Hard));
        assert!(imported.notes.is_empty(), "{:?}", imported.notes);
    }

    #[test]
    fn regex_rejections_and_rules_that_add_up_keep_their_meaning() {
        let imported = read(&[
            "forward-email=hello:a@x.test,/^h/:b@x.test,/^(s)pam$/:c+$1@x.test,spam:d@x.test,!!!/^Old-\\D+$/",
            "forward-email=old-box:e@x.test",
        ]);
        let d = &imported.domains["example.com"];
        // As Forward Email does: hello@ goes to its own target and the matching rule's.
        assert_eq!(
            d.aliases["hello"],
            Rule::Forward(vec!["a@x.test".into(), "b@x.test".into()])
        );
        // A capture is filled in for the alias it is folded into.
        assert_eq!(
            d.aliases["spam"],
            Rule::Forward(vec!["d@x.test".into(), "c+s@x.test".into()])
        );
        // A matching rejection wins; its regex keeps its case (\D is not \d).
        assert_eq!(d.aliases["old-box"], Rule::Reject(RejectMode::Hard));
        assert!(
            d.patterns
                .contains(&("^Old-\\D+$".to_string(), Rule::Reject(RejectMode::Hard)))
        );
        assert!(
            imported
                .notes
                .iter()
                .any(|n| n.contains("every regex rule that matches"))
        );
    }

    #[test]
    fn a_paid_plan_domain_is_told_where_its_aliases_are() {
        let imported = read(&["forward-email-site-verification=abc"]);
        assert!(
            imported.notes[0].contains("Forward Email account"),
            "{:?}",
            imported.notes
        );
    }

    #[test]
    fn what_cannot_be_carried_over_is_noted() {
        let imported = read(&["forward-email=/[unclosed/:x@y.test,bad:not a target"]);
        assert_eq!(imported.notes.len(), 2, "{:?}", imported.notes);
        assert!(imported.notes[0].contains("does not compile"));
        assert!(imported.notes[1].contains("not a valid forward target"));
        let none = read(&["v=spf1 -all"]);
        assert!(none.notes[0].contains("no forward-email= TXT record"));
    }

    #[test]
    fn regex_flags_before_the_colon_are_understood() {
        assert_eq!(
            regex_entry("/^a+$/gi:x@y.test").unwrap(),
            ("^a+$".to_string(), "x@y.test")
        );
        assert_eq!(
            regex_entry("/^a+$/i:x@y.test").unwrap(),
            ("^a+$".to_string(), "x@y.test")
        );
        assert!(regex_entry("/^a+$").is_err());
    }
}
