//! Postfix `virtual(5)` alias maps (the text source of `virtual_alias_maps`): each
//! `user@domain`, `@domain` and domain line turned into aliases, catch-alls and domains.

use super::{Imported, Rule, checked_target};
use crate::address::normalize_domain;

/// Reads a virtual map. `only` limits it to these domains (all when empty).
pub fn parse(text: &str, only: &[String]) -> Imported {
    let mut imported = Imported::default();
    for (number, line) in logical_lines(text) {
        let mut fields = line.split_whitespace();
        let Some(pattern) = fields.next() else {
            continue;
        };
        let results: Vec<&str> = fields
            .flat_map(|f| f.split(','))
            .filter(|r| !r.is_empty())
            .collect();
        let mut note = |why: String| {
            imported
                .notes
                .push(format!("line {number}: {}: {why}", shorten(&line)))
        };
        // A key without "@" declares a domain ("example.com anything"), unless what it
        // maps to is addresses: then it is the user form ("john.doe john@example.net").
        let declares_domain = pattern.contains('.') && results.iter().all(|r| !r.contains('@'));
        let (local, domain) = match pattern.rsplit_once('@') {
            Some((local, domain)) => (local, domain),
            None if declares_domain => ("", pattern),
            None => {
                note("no domain: Postfix matches it in $myorigin and $mydestination, which a virtual map does not say".into());
                continue;
            }
        };
        let Ok(domain) = normalize_domain(domain) else {
            note(format!("\"{domain}\" is not a domain name"));
            continue;
        };
        if !only.is_empty() && !only.contains(&domain) {
            continue;
        }
        // A domain on its own declares a virtual alias domain (its value is ignored).
        if !pattern.contains('@') {
            imported.domain(&domain);
            continue;
        }
        if results.is_empty() {
            note("no result".into());
            continue;
        }
        let mut targets = Vec::new();
        for (position, result) in results.into_iter().enumerate() {
            if result.eq_ignore_ascii_case(pattern) {
                note(format!(
                    "{pattern} also keeps its own copy: give the alias a mailbox (`mailbox = {{ password = … }}`) beside its forward"
                ));
                continue;
            }
            // "@other.example" first in the result keeps the local part (virtual(5),
            // "result address rewriting"): for one address its new address, for a
            // catch-all a domain target.
            let rewritten;
            let target = if let Some(host) = result.strip_prefix('@') {
                if position > 0 {
                    note(format!(
                        "\"{result}\": Postfix rewrites only the first result of this form"
                    ));
                    continue;
                }
                if local.is_empty() {
                    host
                } else {
                    rewritten = format!("{local}@{host}");
                    &rewritten
                }
            } else if !result.contains('@') {
                note(format!(
                    "\"{result}\" is a local user, which only the machine it came from knows"
                ));
                continue;
            } else {
                result
            };
            match checked_target(target) {
                Ok(t) => targets.push(t),
                Err(why) => note(why),
            }
        }
        if targets.is_empty() {
            continue;
        }
        let entry = imported.domain(&domain);
        if local.is_empty() {
            match &mut entry.catch_all {
                Some(rule) => rule.add(targets),
                None => entry.catch_all = Some(Rule::Forward(targets)),
            }
        } else {
            entry
                .aliases
                .entry(local.to_ascii_lowercase())
                .and_modify(|rule| rule.add(targets.clone()))
                .or_insert(Rule::Forward(targets));
        }
    }
    imported
}

/// Lines as Postfix reads them: `#` comments and blank lines skipped, a line that starts
/// with whitespace continuing the one before. With the first line's number.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        match out.last_mut() {
            Some((_, line)) if raw.starts_with([' ', '\t']) => {
                line.push(' ');
                line.push_str(trimmed);
            }
            _ => out.push((i + 1, trimmed.to_string())),
        }
    }
    out
}

/// The line as it reads in a note: spaces collapsed, cut at 60 characters.
fn shorten(line: &str) -> String {
    let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(60) {
        Some((end, _)) => format!("{}…", &line[..end]),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: &str = "\
# virtual_alias_domains as a lookup table
example.com            anything
info@example.com       alice@elsewhere.net,
                       bob@elsewhere.net
Sales@Example.com      carol@elsewhere.net
sales@example.com      carol@elsewhere.net dave@elsewhere.net
@example.com           catchall@elsewhere.net
@example.org           @example.com
me@example.org         me@example.org, copy@elsewhere.net
root                   admin@example.com
postmaster@example.org postmaster
john.doe               john@example.net
old@example.org        @example.net, @example.com
";

    #[test]
    fn aliases_catch_alls_and_domains_are_read_and_the_rest_noted() {
        let imported = parse(MAP, &[]);
        let com = &imported.domains["example.com"];
        assert_eq!(
            com.aliases["info"],
            Rule::Forward(vec![
                "alice@elsewhere.net".into(),
                "bob@elsewhere.net".into()
            ])
        );
        // Two lines for one address (any case) add up, without repeats.
        assert_eq!(
            com.aliases["sales"],
            Rule::Forward(vec![
                "carol@elsewhere.net".into(),
                "dave@elsewhere.net".into()
            ])
        );
        assert_eq!(
            com.catch_all,
            Some(Rule::Forward(vec!["catchall@elsewhere.net".into()]))
        );
        let org = &imported.domains["example.org"];
        // @example.org → @example.com keeps the local part: a domain target.
        assert_eq!(
            org.catch_all,
            Some(Rule::Forward(vec!["example.com".into()]))
        );
        assert_eq!(
            org.aliases["me"],
            Rule::Forward(vec!["copy@elsewhere.net".into()])
        );
        // "@example.net" first for one address: the same user there.
        assert_eq!(
            org.aliases["old"],
            Rule::Forward(vec!["old@example.net".into()])
        );
        assert!(!imported.domains.contains_key("john.doe"));
        let notes = imported.notes.join("\n");
        assert!(
            notes.contains("line 9:") && notes.contains("keeps its own copy"),
            "{notes}"
        );
        assert!(
            notes.contains("line 10:") && notes.contains("no domain"),
            "{notes}"
        );
        assert!(
            notes.contains("line 11:") && notes.contains("local user"),
            "{notes}"
        );
        assert!(
            notes.contains("line 12:") && notes.contains("no domain"),
            "{notes}"
        );
        assert!(
            notes.contains("line 13:") && notes.contains("only the first"),
            "{notes}"
        );
        assert_eq!(imported.notes.len(), 5, "{notes}");
    }

    #[test]
    fn only_the_domains_asked_for_are_read() {
        let imported = parse(MAP, &["example.org".to_string()]);
        assert_eq!(imported.domains.keys().collect::<Vec<_>>(), ["example.org"]);
    }
}
