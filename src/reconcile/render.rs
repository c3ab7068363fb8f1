//! Plans for people (`+`/`~`/`-` lines grouped by kind, field diffs, colour on a
//! terminal) and for machines (JSON). Sensitive fields are masked in both.

use std::fmt::Write as _;

use serde_json::Value;

use super::dns::{self, DnsPlan};
use super::plan::{Action, Change, Plan};
use crate::store::{Fields, Kind};

const MASK: &str = "(sensitive)";

pub struct Style {
    pub color: bool,
}

impl Style {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

fn show(kind: Kind, field: &str, value: &Value) -> String {
    if kind.sensitive_fields().contains(&field) {
        MASK.to_string()
    } else if kind == Kind::Account && field == "shares" {
        // `calendar "Team" with bob@example.com (write)`, not a JSON dump.
        let shares: Vec<String> = value
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                let text = |k: &str| s.get(k).and_then(Value::as_str).unwrap_or_default();
                format!(
                    "{} \"{}\" with {} ({})",
                    text("kind"),
                    text("name"),
                    text("with"),
                    text("access")
                )
            })
            .collect();
        if shares.is_empty() {
            "none".to_string()
        } else {
            shares.join(", ")
        }
    } else if kind == Kind::Account && field == "sieve" {
        // The script's size and a fingerprint: its text is in the spec, reviewed there.
        match value.as_str() {
            Some(text) => format!(
                "a script of {} line{} ({})",
                text.lines().count(),
                if text.lines().count() == 1 { "" } else { "s" },
                fingerprint(text)
            ),
            None => "none".to_string(),
        }
    } else if kind == Kind::Account && field == "self_service" {
        // `password, app-passwords`: what the owner may change.
        let rights: Vec<&str> = value
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if rights.is_empty() {
            "none".to_string()
        } else {
            rights.join(", ")
        }
    } else if kind == Kind::Account && field == "main_password" {
        value.as_str().unwrap_or("everywhere").to_string()
    } else if kind == Kind::Account && field == "vacation" {
        // `on until 2027-01-05`, as someone checking their away message reads it.
        match value.as_object() {
            Some(v) => {
                let text = |k: &str| v.get(k).and_then(Value::as_str);
                let mut out = "on".to_string();
                if let Some(from) = text("from") {
                    let _ = write!(out, " from {from}");
                }
                if let Some(until) = text("until") {
                    let _ = write!(out, " until {until}");
                }
                if let Some(subject) = text("subject") {
                    let _ = write!(out, ", subject {subject:?}");
                }
                out
            }
            None => "off".to_string(),
        }
    } else {
        value.to_string()
    }
}

/// A short fingerprint of a text, to see in a plan that it changed.
fn fingerprint(text: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(text.as_bytes());
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// Fields a create line leaves out: already in the id, or at their usual value.
fn is_noise(kind: Kind, field: &str, v: &Value) -> bool {
    let in_id = match kind {
        Kind::DkimKey => ["domain", "selector"].contains(&field),
        Kind::Pattern => ["domain", "regex", "position"].contains(&field),
        _ => false,
    };
    in_id
        || (["enabled", "subaddressing"].contains(&field) && *v == Value::Bool(true))
        || is_default(v)
}

fn is_default(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// The plan as text, ending with `Plan: N to add, N to change, N to destroy.`
pub fn text(plan: &Plan, style: &Style) -> String {
    let mut out = String::new();
    let mut last_kind = None;
    for change in &plan.changes {
        let group = (change.kind, change.action == Action::Delete);
        if last_kind != Some(group) {
            if last_kind.is_some() {
                out.push('\n');
            }
            last_kind = Some(group);
        }
        render_change(&mut out, change, style);
    }
    render_dns(&mut out, &plan.dns, style, !plan.changes.is_empty());
    if !plan.unmanaged.is_empty() {
        let _ = writeln!(
            out,
            "\nNot managed by this spec (left untouched): {}",
            plan.unmanaged.len()
        );
        for (kind, id) in plan.unmanaged.iter().take(20) {
            let _ = writeln!(out, "  = {kind} {id}");
        }
    }
    let s = plan.summary();
    if plan.is_empty() {
        out.push_str("No changes. The live state matches the spec.\n");
    } else {
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "Plan: {} to add, {} to change, {} to destroy.",
        s.add, s.change, s.destroy
    );
    if let Some(c) = &plan.certificate {
        let (sign, code) = if c.action == "issue" {
            ("+", "32")
        } else {
            ("~", "33")
        };
        let _ = match c.action.as_str() {
            "issue" => writeln!(
                out,
                "{} certificate {} ({}): {}",
                style.paint(code, sign),
                c.id,
                c.how,
                c.names.join(", ")
            ),
            "renew" => writeln!(
                out,
                "{} certificate {} {} → renew",
                style.paint(code, sign),
                c.id,
                c.why
            ),
            _ => writeln!(
                out,
                "{} certificate {} {}",
                style.paint(code, sign),
                c.id,
                c.why
            ),
        };
        let _ = writeln!(
            out,
            "  (done by `ferrymail serve`, which answers the CA's challenges)"
        );
    }
    if let Some(b) = &plan.backups {
        let last = match (&b.last, &b.last_at, b.last_size) {
            (Some(id), Some(at), Some(size)) => {
                format!("last {id} at {at} ({})", crate::backup::human_bytes(size))
            }
            _ => "none yet: the first runs when `ferrymail serve` starts".to_string(),
        };
        let _ = writeln!(
            out,
            "  backups {:?} (UTC) → {}, keep {}; next {}; {last}",
            b.schedule,
            b.target,
            b.keep,
            b.next.as_deref().unwrap_or("never")
        );
        if let Some(w) = &b.warning {
            let _ = writeln!(out, "{} backups: {w}", style.paint("31", "!"));
        }
        if let Some(note) = &b.master_key_note {
            let _ = writeln!(out, "  backups: {note}");
        }
    }
    let manual = plan.dns.manual_changes();
    if manual > 0 {
        let _ = writeln!(
            out,
            "And {manual} DNS change(s) for you to make by hand (under the # lines above)."
        );
    }
    let conflicts: usize = plan.dns.zones.iter().map(|z| z.diff.conflicts.len()).sum();
    if conflicts > 0 {
        let _ = writeln!(
            out,
            "{conflicts} DNS conflict(s) need you (marked !): nothing is written there."
        );
    }
    out
}

fn render_change(out: &mut String, c: &Change, style: &Style) {
    let empty = Fields::new();
    match c.action {
        Action::Create => {
            let _ = writeln!(out, "{} {} {}", style.paint("32", "+"), c.kind, c.id);
            for (k, v) in c.after.as_ref().unwrap_or(&empty) {
                if !is_noise(c.kind, k, v) {
                    let _ = writeln!(out, "      {k}: {}", show(c.kind, k, v));
                }
            }
            if c.kind == Kind::DkimKey {
                let _ = writeln!(
                    out,
                    "      (a new private key is generated; the public key will be published)"
                );
            }
        }
        Action::Update => {
            let _ = writeln!(out, "{} {} {}", style.paint("33", "~"), c.kind, c.id);
            let (before, after) = (
                c.before.as_ref().unwrap_or(&empty),
                c.after.as_ref().unwrap_or(&empty),
            );
            let mut keys: Vec<&String> = before.keys().chain(after.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let (b, a) = (
                    before.get(k).unwrap_or(&Value::Null),
                    after.get(k).unwrap_or(&Value::Null),
                );
                if b != a {
                    let line = if c.kind.sensitive_fields().contains(&k.as_str()) {
                        format!("      {k}: {MASK} → {MASK} (changed)")
                    } else {
                        format!("      {k}: {} → {}", show(c.kind, k, b), show(c.kind, k, a))
                    };
                    let _ = writeln!(out, "{line}");
                }
            }
            if c.kind == Kind::Account {
                // A calendar or address book dropped from the spec keeps its data.
                for field in ["calendars", "address_books"] {
                    fn names<'a>(fields: &'a Fields, field: &str) -> Vec<&'a str> {
                        fields
                            .get(field)
                            .and_then(Value::as_array)
                            .map(|a| a.iter().filter_map(Value::as_str).collect())
                            .unwrap_or_default()
                    }
                    let (was, now) = (names(before, field), names(after, field));
                    for gone in was.iter().filter(|n| !now.contains(n)) {
                        let _ = writeln!(
                            out,
                            "      (\"{gone}\" is no longer declared: it stays, with what it holds, until its owner deletes it)"
                        );
                    }
                }
            }
            if c.regenerates_key() {
                let _ = writeln!(
                    out,
                    "      (the key is replaced under the same selector: receivers that cached the old record fail DKIM until its TTL runs out; a new selector rotates without that)"
                );
            }
        }
        Action::Delete => {
            let _ = writeln!(out, "{} {} {}", style.paint("31", "-"), c.kind, c.id);
            if c.kind == Kind::Account {
                // Mail is never deleted by a spec change: the file stays, readable again
                // if the mailbox comes back (same address, same master key).
                let _ = writeln!(
                    out,
                    "      (logins and deliveries stop; its stored mail is kept in data_dir/mailboxes/ and is back if the mailbox is declared again)"
                );
            }
        }
    }
}

/// A name as the zone file writes it: relative to the zone, "@" for the apex.
fn relative<'a>(name: &'a str, zone: &str) -> &'a str {
    if name == zone {
        "@"
    } else {
        name.strip_suffix(zone)
            .and_then(|n| n.strip_suffix('.'))
            .unwrap_or(name)
    }
}

/// Record data for a plan line: TXT quoted, long values (DKIM keys) shortened.
fn data_list(kind: crate::dns::records::Kind, values: &[String]) -> String {
    let one = |v: &String| {
        let v = if v.chars().count() > 72 {
            format!("{}…", v.chars().take(60).collect::<String>())
        } else {
            v.clone()
        };
        if kind == crate::dns::records::Kind::TXT {
            format!("\"{v}\"")
        } else {
            v
        }
    };
    values.iter().map(one).collect::<Vec<_>>().join(", ")
}

/// Whether a change only touches the TTL.
fn same_data(c: &crate::dns::provider::RrsetChange) -> bool {
    let set = |v: &[String]| {
        let mut v: Vec<String> = v
            .iter()
            .map(|d| crate::dns::records::canonical(c.kind, d))
            .collect();
        v.sort();
        v
    };
    set(&c.before) == set(&c.after)
}

/// DNS changes as `± dns ZONE TYPE NAME: before → after`, then what needs a person.
fn render_dns(out: &mut String, dns: &DnsPlan, style: &Style, after_store: bool) {
    let mut first = after_store;
    let mut gap = |out: &mut String| {
        if first {
            out.push('\n');
        }
        first = false;
    };
    for zone in &dns.zones {
        if zone.diff.changes.is_empty() && zone.diff.conflicts.is_empty() && zone.guard.is_none() {
            continue;
        }
        gap(out);
        if !zone.writes {
            let _ = writeln!(
                out,
                "# {} is published by hand (provider \"{}\"): make these changes at your DNS host; `ferrymail dns check` verifies them.",
                zone.zone, zone.provider
            );
        }
        for c in &zone.diff.changes {
            let name = relative(&c.name, &zone.zone);
            let head = format!("dns {} {} {name}", zone.zone, c.kind);
            let _ = match dns::action(c) {
                Action::Create => writeln!(
                    out,
                    "{} {head}: {}",
                    style.paint("32", "+"),
                    data_list(c.kind, &c.after)
                ),
                Action::Update if same_data(c) => writeln!(
                    out,
                    "{} {head}: {} (TTL {} → {})",
                    style.paint("33", "~"),
                    data_list(c.kind, &c.after),
                    c.old_ttl.unwrap_or(c.ttl),
                    c.ttl
                ),
                Action::Update => writeln!(
                    out,
                    "{} {head}: {} → {}",
                    style.paint("33", "~"),
                    data_list(c.kind, &c.before),
                    data_list(c.kind, &c.after)
                ),
                Action::Delete => writeln!(
                    out,
                    "{} {head}: {}",
                    style.paint("31", "-"),
                    data_list(c.kind, &c.before)
                ),
            };
        }
        for conflict in &zone.diff.conflicts {
            let _ = writeln!(
                out,
                "{} dns {} {conflict}",
                style.paint("31", "!"),
                zone.zone
            );
        }
        if let Some(guard) = &zone.guard {
            let _ = writeln!(
                out,
                "{} apply will stop here: {guard}",
                style.paint("31", "!")
            );
        }
    }
    for error in &dns.errors {
        gap(out);
        let _ = writeln!(out, "{} dns: {error}", style.paint("31", "!"));
    }
    let unmanaged: Vec<(&str, &crate::dns::provider::ZoneRecord)> = dns
        .zones
        .iter()
        .flat_map(|z| z.diff.unmanaged.iter().map(move |r| (z.zone.as_str(), r)))
        .collect();
    if !unmanaged.is_empty() {
        let _ = writeln!(
            out,
            "\nDNS records not managed by ferrymail (left untouched): {}",
            unmanaged.len()
        );
        for (zone, r) in unmanaged.iter().take(20) {
            let _ = writeln!(
                out,
                "  = dns {zone} {} {}: {}",
                r.rtype,
                relative(&r.name, zone),
                r.data
            );
        }
        if unmanaged.len() > 20 {
            let _ = writeln!(out, "  … and {} more", unmanaged.len() - 20);
        }
    }
}

/// The plan as JSON for machines, with sensitive fields masked.
pub fn json(plan: &Plan) -> Value {
    let mut masked = plan.clone();
    for c in &mut masked.changes {
        for fields in [c.before.as_mut(), c.after.as_mut()].into_iter().flatten() {
            for field in c.kind.sensitive_fields() {
                if let Some(v) = fields.get_mut(*field) {
                    *v = Value::String(MASK.into());
                }
            }
        }
    }
    let mut v = serde_json::to_value(&masked).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        map.insert(
            "summary".into(),
            serde_json::to_value(plan.summary()).unwrap_or(Value::Null),
        );
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn update_shows_field_diffs_and_masks_secrets() {
        let fields = |v: Value| match v {
            Value::Object(m) => Some(m),
            _ => None,
        };
        let plan = Plan {
            format: 1,
            base_revision: 1,
            source: "s".into(),
            changes: vec![
                Change {
                    action: Action::Update,
                    kind: Kind::Alias,
                    id: "me@d.test".into(),
                    before: fields(json!({"forward": ["a@b.test"], "enabled": true})),
                    after: fields(json!({"forward": ["a@b.test", "c@d.test"], "enabled": true})),
                },
                Change {
                    action: Action::Update,
                    kind: Kind::Account,
                    id: "me@d.test".into(),
                    before: fields(json!({"password_hash": "$argon2id$old"})),
                    after: fields(json!({"password_hash": "$argon2id$new"})),
                },
            ],
            unmanaged: vec![],
            dns: Default::default(),
            certificate: None,
            backups: None,
        };
        let t = text(&plan, &Style { color: false });
        assert!(
            t.contains(
                "~ alias me@d.test\n      forward: [\"a@b.test\"] → [\"a@b.test\",\"c@d.test\"]\n"
            ),
            "{t}"
        );
        assert!(!t.contains("argon2id"), "{t}");
        assert!(t.ends_with("Plan: 0 to add, 2 to change, 0 to destroy.\n"));
        assert!(!json(&plan).to_string().contains("argon2id"));
    }
}
