//! One zone's plan: the desired records against what the zone holds and what ferrymail
//! owns there, as RRset changes, records left alone and conflicts that need a person.
//!
//! Ownership is per name and type, except TXT: many systems keep TXT records at one name
//! (site verifications beside SPF at the apex), so ferrymail owns TXT values, not sets.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::provider::{RrsetChange, ZoneRecord};
use super::records::{Kind, Record, canonical, txt_tag};

/// Something ferrymail published in a zone and may therefore change or delete: a whole
/// RRset, or one TXT value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Owned {
    pub name: String,
    pub kind: Kind,
    /// For TXT: the value owned (other values at the name are someone else's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ZoneDiff {
    pub changes: Vec<RrsetChange>,
    /// Records in the zone ferrymail neither wants nor owns: never touched.
    pub unmanaged: Vec<ZoneRecord>,
    /// Changes that cannot be made without touching someone else's records.
    pub conflicts: Vec<String>,
    /// Records the changes delete outright (replacements not counted), for the guard.
    pub removed: usize,
    /// Records in the zone besides its SOA.
    pub size: usize,
    /// What ferrymail owns in the zone once the changes are made.
    pub owned: Vec<Owned>,
}

type Sets = BTreeMap<(String, String), (u32, Vec<String>)>;

fn sets<'a>(records: impl Iterator<Item = (&'a str, String, u32, &'a str)>) -> Sets {
    let mut out: Sets = BTreeMap::new();
    for (name, rtype, ttl, data) in records {
        let entry = out
            .entry((name.to_ascii_lowercase(), rtype))
            .or_insert((ttl, Vec::new()));
        entry.1.push(data.to_string());
    }
    out
}

fn same(kind: Kind, a: &[String], b: &[String]) -> bool {
    let set = |v: &[String]| {
        v.iter()
            .map(|d| canonical(kind, d))
            .collect::<BTreeSet<_>>()
    };
    set(a) == set(b)
}

/// Diffs one zone. `ttl_known` is false where the provider cannot tell a record's own
/// TTL (manual: resolvers count it down), so TTLs are not compared.
pub fn diff_zone(
    desired: &[Record],
    live: &[ZoneRecord],
    owned: &[Owned],
    ttl_known: bool,
) -> ZoneDiff {
    let want = sets(
        desired
            .iter()
            .map(|r| (r.name.as_str(), r.kind.to_string(), r.ttl, r.data.as_str())),
    );
    let have = sets(
        live.iter()
            .filter(|r| r.rtype != "SOA")
            .map(|r| (r.name.as_str(), r.rtype.clone(), r.ttl, r.data.as_str())),
    );
    let owns_set = |name: &str, kind: &str| {
        owned
            .iter()
            .any(|o| o.name == name && o.kind.to_string() == kind && o.value.is_none())
    };
    let owned_txt = |name: &str, value: &str| {
        owned
            .iter()
            .any(|o| o.name == name && o.kind == Kind::TXT && o.value.as_deref() == Some(value))
    };
    let mut out = ZoneDiff {
        size: have.values().map(|(_, v)| v.len()).sum(),
        ..ZoneDiff::default()
    };
    let mut handled: BTreeSet<(String, String)> = BTreeSet::new();
    let mut deletes = Vec::new();

    for ((name, rtype), (ttl, values)) in &want {
        let Some(kind) = Kind::parse(rtype) else {
            continue;
        };
        handled.insert((name.clone(), rtype.clone()));
        let (live_ttl, current) = have
            .get(&(name.clone(), rtype.clone()))
            .cloned()
            .unwrap_or((*ttl, Vec::new()));
        // A CNAME owns its name alone (RFC 1034 §3.6.2): it cannot join other records
        // there, nor they it, unless they are ours to remove.
        let clash: Vec<&String> = have
            .keys()
            .filter(|(n, t)| n == name && t != rtype)
            .filter(|(_, t)| kind == Kind::CNAME || t == "CNAME")
            .filter(|(n, t)| !owns_set(n, t) || want.contains_key(&(n.clone(), t.clone())))
            .map(|(_, t)| t)
            .collect();
        if !clash.is_empty() {
            let theirs: Vec<&str> = clash.iter().map(|t| t.as_str()).collect();
            out.conflicts.push(format!(
                "{kind} {name}: the zone has {} there, not managed by ferrymail; a CNAME cannot \
                 share a name. Remove it, or declare this name in the domain's dns_records.",
                theirs.join(", ")
            ));
            continue;
        }
        let after: Vec<String> = if kind == Kind::TXT {
            let tags: BTreeSet<Option<String>> = values
                .iter()
                .map(|v| txt_tag(v))
                .filter(Option::is_some)
                .collect();
            let mut after = values.clone();
            for v in &current {
                let ours = values.contains(v);
                let displaced = tags.contains(&txt_tag(v)) || owned_txt(name, v);
                if !ours && !displaced {
                    // Someone else's TXT value: kept, and listed.
                    after.push(v.clone());
                    out.unmanaged.push(ZoneRecord {
                        name: name.clone(),
                        rtype: rtype.clone(),
                        ttl: live_ttl,
                        data: v.clone(),
                    });
                } else if !ours && !tags.contains(&txt_tag(v)) {
                    // Published earlier, wanted no more (a same-tag value is replaced).
                    out.removed += 1;
                }
            }
            for v in values {
                out.owned.push(Owned {
                    name: name.clone(),
                    kind,
                    value: Some(v.clone()),
                });
            }
            after
        } else {
            out.owned.push(Owned {
                name: name.clone(),
                kind,
                value: None,
            });
            values.clone()
        };
        let ttl_differs = ttl_known && !current.is_empty() && live_ttl != *ttl;
        if !same(kind, &current, &after) || ttl_differs {
            out.changes.push(RrsetChange {
                name: name.clone(),
                kind,
                ttl: *ttl,
                before: current,
                after,
                old_ttl: ttl_differs.then_some(live_ttl),
            });
        }
    }

    // What ferrymail published earlier and no longer wants.
    for ((name, rtype), (ttl, current)) in &have {
        if handled.contains(&(name.clone(), rtype.clone())) {
            continue;
        }
        let Some(kind) = Kind::parse(rtype) else {
            out.unmanaged.extend(current.iter().map(|d| ZoneRecord {
                name: name.clone(),
                rtype: rtype.clone(),
                ttl: *ttl,
                data: d.clone(),
            }));
            continue;
        };
        let (gone, kept): (Vec<String>, Vec<String>) = if owns_set(name, rtype) {
            (current.clone(), Vec::new())
        } else if kind == Kind::TXT {
            current.iter().cloned().partition(|v| owned_txt(name, v))
        } else {
            (Vec::new(), current.clone())
        };
        out.unmanaged.extend(kept.iter().map(|d| ZoneRecord {
            name: name.clone(),
            rtype: rtype.clone(),
            ttl: *ttl,
            data: d.clone(),
        }));
        if !gone.is_empty() {
            out.removed += gone.len();
            deletes.push(RrsetChange {
                name: name.clone(),
                kind,
                ttl: *ttl,
                before: current.clone(),
                after: kept,
                old_ttl: None,
            });
        }
    }
    // Deletions first: a CNAME that goes away frees its name for what comes.
    deletes.append(&mut out.changes);
    out.changes = deletes;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(name: &str, kind: Kind, data: &str) -> Record {
        Record {
            name: name.into(),
            kind,
            ttl: 3600,
            data: data.into(),
        }
    }

    fn live(name: &str, rtype: &str, data: &str) -> ZoneRecord {
        ZoneRecord {
            name: name.into(),
            rtype: rtype.into(),
            ttl: 3600,
            data: data.into(),
        }
    }

    #[test]
    fn ours_are_created_changed_and_deleted_and_theirs_are_listed() {
        let desired = [
            want("d.test", Kind::MX, "10 mx.d.test."),
            want("_dmarc.d.test", Kind::TXT, "v=DMARC1; p=quarantine"),
            want("d.test", Kind::TXT, "v=spf1 mx -all"),
        ];
        let zone = [
            live("d.test", "SOA", "ns.d.test. h.d.test. 1 2 3 4 5"),
            live("d.test", "NS", "ns.d.test."),
            live("d.test", "MX", "10 MX.d.test"),
            live("_dmarc.d.test", "TXT", "v=DMARC1; p=none"),
            live("d.test", "TXT", "site-verification=1"),
            live("www.d.test", "A", "192.0.2.80"),
            live("old._domainkey.d.test", "TXT", "v=DKIM1; p=AA"),
        ];
        let owned = [Owned {
            name: "old._domainkey.d.test".into(),
            kind: Kind::TXT,
            value: Some("v=DKIM1; p=AA".into()),
        }];
        let d = diff_zone(&desired, &zone, &owned, true);
        let summary: Vec<(&str, Vec<&str>, Vec<&str>)> = d
            .changes
            .iter()
            .map(|c| {
                (
                    c.name.as_str(),
                    c.before.iter().map(String::as_str).collect(),
                    c.after.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("old._domainkey.d.test", vec!["v=DKIM1; p=AA"], vec![]),
                (
                    "_dmarc.d.test",
                    vec!["v=DMARC1; p=none"],
                    vec!["v=DMARC1; p=quarantine"]
                ),
                (
                    "d.test",
                    vec!["site-verification=1"],
                    vec!["v=spf1 mx -all", "site-verification=1"]
                ),
            ],
            "the MX differs only in spelling"
        );
        let unmanaged: Vec<(&str, &str)> = d
            .unmanaged
            .iter()
            .map(|r| (r.name.as_str(), r.rtype.as_str()))
            .collect();
        assert!(unmanaged.contains(&("www.d.test", "A")));
        assert!(unmanaged.contains(&("d.test", "NS")));
        assert!(unmanaged.contains(&("d.test", "TXT")));
        assert_eq!(d.removed, 1);
        assert_eq!(d.size, 6);
    }

    #[test]
    fn a_cname_beside_someone_elses_record_is_a_conflict_not_a_change() {
        let desired = [want("mail.d.test", Kind::CNAME, "mx.d.test.")];
        let zone = [live("mail.d.test", "A", "192.0.2.25")];
        let d = diff_zone(&desired, &zone, &[], true);
        assert!(d.changes.is_empty());
        assert_eq!(d.conflicts.len(), 1, "{:?}", d.conflicts);
        assert!(d.conflicts[0].contains("mail.d.test"));
    }

    #[test]
    fn a_second_spf_is_replaced_not_added() {
        let desired = [want("d.test", Kind::TXT, "v=spf1 mx -all")];
        let zone = [live("d.test", "TXT", "v=spf1 include:old.test ~all")];
        let d = diff_zone(&desired, &zone, &[], true);
        assert_eq!(d.changes[0].after, ["v=spf1 mx -all"]);
        assert_eq!(d.removed, 0, "a replacement, not a deletion");
    }
}
