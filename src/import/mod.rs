//! `ferrymail import`: another system's forwarding setup (Postfix virtual maps, Forward
//! Email's TXT records) turned into spec tables a person reviews before `plan`.

pub mod forward_email;
pub mod postfix_virtual;

use std::collections::BTreeMap;

use crate::routing::RejectMode;

/// What was read, per domain, in the spec's terms.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Imported {
    pub domains: BTreeMap<String, ImportedDomain>,
    /// What could not be carried over, and why: shown as comments in the output.
    pub notes: Vec<String>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct ImportedDomain {
    pub catch_all: Option<Rule>,
    /// Keyed by local part, in the spec's order.
    pub aliases: BTreeMap<String, Rule>,
    /// (regex, rule), in the order they were read (the spec tries them in order).
    pub patterns: Vec<(String, Rule)>,
}

/// Forwards, or a rejection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    Forward(Vec<String>),
    Reject(RejectMode),
}

impl Rule {
    /// Adds targets to a forward (a second line for the same address adds to it).
    fn add(&mut self, targets: Vec<String>) {
        match self {
            Rule::Forward(existing) => {
                for t in targets {
                    if !existing.contains(&t) {
                        existing.push(t);
                    }
                }
            }
            // A rejection declared for the address wins over forwards to it.
            Rule::Reject(_) => {}
        }
    }
}

impl Imported {
    pub fn domain(&mut self, name: &str) -> &mut ImportedDomain {
        self.domains.entry(name.to_string()).or_default()
    }

    /// The spec tables, as TOML a person reads: one inline table per alias, notes of
    /// what was left out at the end. `source` says where it came from, in the header.
    pub fn to_toml(&self, source: &str) -> String {
        let source = comment_safe(source);
        let mut out = format!(
            "# Imported by `ferrymail import` from {source}.\n\
             # Review it, add it to the spec (or put this file in a spec directory), then\n\
             # run `ferrymail plan` to see what it makes.\n"
        );
        for (name, domain) in &self.domains {
            let table = format!("domains.{}", key(name));
            out.push_str(&format!("\n[{table}]\n"));
            if let Some(rule) = &domain.catch_all {
                out.push_str(&format!("catch_all = {}\n", inline(rule)));
            }
            if !domain.aliases.is_empty() {
                out.push_str(&format!("\n[{table}.aliases]\n"));
                for (local, rule) in &domain.aliases {
                    out.push_str(&format!("{} = {}\n", key(local), inline(rule)));
                }
            }
            for (regex, rule) in &domain.patterns {
                out.push_str(&format!(
                    "\n[[{table}.patterns]]\nregex = {}\n",
                    string(regex)
                ));
                match rule {
                    Rule::Forward(targets) => {
                        out.push_str(&format!("forward = {}\n", list(targets)))
                    }
                    Rule::Reject(kind) => {
                        out.push_str(&format!("reject = {}\n", string(kind.as_str())))
                    }
                }
            }
        }
        if !self.notes.is_empty() {
            out.push_str("\n# Not imported:\n");
            for note in &self.notes {
                out.push_str(&format!("#   {}\n", comment_safe(note)));
            }
        }
        out
    }
}

/// Text for a TOML comment: control characters (a bare CR in a map, anything in a TXT
/// record) would end the comment or make the file invalid, so they are escaped.
fn comment_safe(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

fn inline(rule: &Rule) -> String {
    match rule {
        Rule::Forward(targets) => format!("{{ forward = {} }}", list(targets)),
        Rule::Reject(kind) => format!("{{ reject = {} }}", string(kind.as_str())),
    }
}

fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| string(i)).collect();
    format!("[{}]", quoted.join(", "))
}

/// A TOML string: toml_edit picks the form that needs no escapes where it can.
fn string(s: &str) -> String {
    toml_edit::Value::from(s).to_string().trim().to_string()
}

/// A TOML key, quoted only when it must be.
fn key(s: &str) -> String {
    toml_edit::Key::new(s).display_repr().to_string()
}

/// A forward target the spec takes, or why not.
fn checked_target(target: &str) -> Result<String, String> {
    crate::routing::Target::parse(target)
        .map(|_| target.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_strings_are_quoted_only_when_they_must_be() {
        assert_eq!(key("hello"), "hello");
        assert_eq!(key("first.last"), "\"first.last\"");
        assert_eq!(key("example.com"), "\"example.com\"");
        assert_eq!(string("a@b.test"), "\"a@b.test\"");
        assert_eq!(string(r"^(\d+)$"), r"'^(\d+)$'");
    }

    #[test]
    fn notes_and_the_source_cannot_break_out_of_their_comment() {
        let imported = Imported {
            domains: BTreeMap::from([("example.com".to_string(), ImportedDomain::default())]),
            notes: vec!["bad\rline\n[domains.\"evil.test\"]".to_string()],
        };
        let text = imported.to_toml("map\nreject = 1");
        let parsed: toml::Table = toml::from_str(&text).expect("valid TOML");
        assert_eq!(parsed["domains"].as_table().unwrap().len(), 1, "{text}");
        assert!(!parsed.contains_key("reject"), "{text}");
    }
}
