//! A plan: the field-by-field difference between desired and live objects, in the order
//! it must be applied. Plans are data: printed, saved, and applied later if still fresh.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::dns::DnsPlan;
use crate::store::records::parse_fields;
use crate::store::{Fields, Kind, Object, StoredObject};

pub const PLAN_FORMAT: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Delete,
}

/// One change to one object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub action: Action,
    pub kind: Kind,
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub before: Option<Fields>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub after: Option<Fields>,
}

impl Change {
    /// DKIM keys are replaced (new key material) when they change at all.
    pub fn regenerates_key(&self) -> bool {
        self.kind == Kind::DkimKey && self.action != Action::Delete
    }

    /// The algorithm of the DKIM key this change makes (or, for a delete, removes).
    pub fn key_algorithm(&self) -> &str {
        self.after
            .as_ref()
            .or(self.before.as_ref())
            .and_then(|f| f.get("algorithm"))
            .and_then(|v| v.as_str())
            .unwrap_or("rsa-2048")
    }
}

/// Everything an apply will do, and the store revision it was computed against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub format: u32,
    pub base_revision: u64,
    /// Where the spec came from.
    pub source: String,
    pub changes: Vec<Change>,
    /// Live objects not created from a spec: never touched, listed so nothing is a surprise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unmanaged: Vec<(Kind, String)>,
    /// Records at DNS providers: what changes, what is left alone.
    #[serde(default, skip_serializing_if = "DnsPlan::is_empty_and_quiet")]
    pub dns: DnsPlan,
    /// What `serve` will do about the server's certificate (not counted: apply does not
    /// issue; the running server answers the CA's challenges).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<super::certs::CertChange>,
    /// The backup schedule and how recent the last backup is (not counted: `serve` runs
    /// backups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backups: Option<super::backups::BackupsLine>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Summary {
    pub add: usize,
    pub change: usize,
    pub destroy: usize,
}

impl Plan {
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        let dns = self.dns.changes().map(|(_, c)| super::dns::action(c));
        for action in self.changes.iter().map(|c| c.action).chain(dns) {
            match action {
                Action::Create => s.add += 1,
                Action::Update => s.change += 1,
                Action::Delete => s.destroy += 1,
            }
        }
        s
    }

    /// Nothing to change in the store nor at any DNS provider.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.dns.is_empty()
    }
}

/// Diffs desired against live. Creates and updates come in dependency order (domains
/// before what lives in them), deletes after them in reverse order.
pub fn diff(
    desired: Vec<Object>,
    live: Vec<StoredObject>,
    base_revision: u64,
    source: &str,
) -> Plan {
    // One map per kind, keyed by id, so a desired object is looked up by &str.
    let mut live_by_kind: Vec<HashMap<String, (String, bool)>> =
        Kind::ALL.iter().map(|_| HashMap::new()).collect();
    for StoredObject { object, managed } in live {
        live_by_kind[object.kind as usize].insert(object.id, (object.json, managed));
    }
    let mut changes = Vec::new();
    let mut unmanaged = Vec::new();
    for Object { kind, id, json } in desired {
        match live_by_kind[kind as usize].remove(id.as_str()) {
            None => {
                let after = Some(parse_fields(&json));
                changes.push(Change {
                    action: Action::Create,
                    kind,
                    id,
                    before: None,
                    after,
                });
            }
            Some((_, false)) => unmanaged.push((kind, id)),
            Some((live_json, true)) if live_json != json => {
                let (before, after) = (Some(parse_fields(&live_json)), Some(parse_fields(&json)));
                changes.push(Change {
                    action: Action::Update,
                    kind,
                    id,
                    before,
                    after,
                });
            }
            Some(_) => {}
        }
    }
    for (kind, remaining) in Kind::ALL.into_iter().zip(live_by_kind) {
        for (id, (json, managed)) in remaining {
            if managed {
                let before = Some(
                    Object {
                        kind,
                        id: String::new(),
                        json,
                    }
                    .fields(),
                );
                changes.push(Change {
                    action: Action::Delete,
                    kind,
                    id,
                    before,
                    after: None,
                });
            } else {
                unmanaged.push((kind, id));
            }
        }
    }
    changes.sort_by(|a, b| order_key(a).cmp(&order_key(b)));
    unmanaged.sort();
    Plan {
        format: PLAN_FORMAT,
        base_revision,
        source: source.to_string(),
        changes,
        unmanaged,
        dns: DnsPlan::default(),
        certificate: None,
        backups: None,
    }
}

fn order_key(c: &Change) -> (u8, i8, &str) {
    let kind = c.kind as i8;
    match c.action {
        Action::Delete => (1, -kind, &c.id),
        _ => (0, kind, &c.id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(kind: Kind, id: &str, v: serde_json::Value) -> Object {
        Object {
            kind,
            id: id.into(),
            json: v.to_string(),
        }
    }

    fn stored(o: Object, managed: bool) -> StoredObject {
        StoredObject { object: o, managed }
    }

    #[test]
    fn diff_orders_creates_by_dependency_and_deletes_in_reverse() {
        let desired = vec![
            obj(Kind::Alias, "a@d.test", json!({"forward": ["x@y.test"]})),
            obj(Kind::Domain, "d.test", json!({})),
            obj(Kind::Alias, "b@d.test", json!({"forward": ["new@y.test"]})),
        ];
        let live = vec![
            stored(
                obj(Kind::Alias, "b@d.test", json!({"forward": ["old@y.test"]})),
                true,
            ),
            stored(obj(Kind::Alias, "gone@old.test", json!({})), true),
            stored(obj(Kind::Domain, "old.test", json!({})), true),
            stored(obj(Kind::Alias, "theirs@old.test", json!({})), false),
        ];
        let plan = diff(desired, live, 7, "spec");
        let order: Vec<(Action, &str)> = plan
            .changes
            .iter()
            .map(|c| (c.action, c.id.as_str()))
            .collect();
        assert_eq!(
            order,
            [
                (Action::Create, "d.test"),
                (Action::Create, "a@d.test"),
                (Action::Update, "b@d.test"),
                (Action::Delete, "gone@old.test"),
                (Action::Delete, "old.test"),
            ]
        );
        assert_eq!(
            plan.unmanaged,
            [(Kind::Alias, "theirs@old.test".to_string())]
        );
        assert_eq!(
            plan.summary(),
            Summary {
                add: 2,
                change: 1,
                destroy: 2
            }
        );
    }
}
