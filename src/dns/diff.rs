//! One zone's plan: the desired records against what the zone holds and what ferrymail
//! owns there, as RRset changes, records left alone and conflicts that need a person.
//!
//! Ownership is per name and type, except TXT: many systems keep TXT records at one name
//! (site verifications beside SPF at the apex), so ferrymail owns TXT values, not sets.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::provider::{RrsetChange, ZoneRecord};
use super::records::{Kind, Record, canonical, same_set, txt_tag};

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

/// Record types a signed zone carries that are the signer's business, never ours: they
/// neither block a CNAME nor count in the zone's size.
const DNSSEC_TYPES: [&str; 8] = [
    "RRSIG",
    "NSEC",
    "NSEC3",
    "NSEC3PARAM",
    "DNSKEY",
    "CDS",
    "CDNSKEY",
    "ZONEMD",
];

/// Record sets by (name, type): each value once, with its own TTL (a Cloudflare zone
/// can hold one set's records with different TTLs).
type Sets = BTreeMap<(String, String), Vec<(String, u32)>>;

fn sets<'a>(records: impl Iterator<Item = (&'a str, String, u32, &'a str)>) -> Sets {
    let mut out: Sets = BTreeMap::new();
    for (name, rtype, ttl, data) in records {
        let values = out
            .entry((name.to_ascii_lowercase(), rtype.clone()))
            .or_default();
        let key = |d: &str| match Kind::parse(&rtype) {
            Some(kind) => canonical(kind, d),
            None => d.to_string(),
        };
        if !values.iter().any(|(d, _)| key(d) == key(data)) {
            values.push((data.to_string(), ttl));
        }
    }
    out
}

fn data(values: &[(String, u32)]) -> Vec<String> {
    values.iter().map(|(d, _)| d.clone()).collect()
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
            .filter(|r| r.rtype != "SOA" && !DNSSEC_TYPES.contains(&r.rtype.as_str()))
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
    let unmanaged = |name: &str, rtype: &str, (data, ttl): &(String, u32)| ZoneRecord {
        name: name.to_string(),
        rtype: rtype.to_string(),
        ttl: *ttl,
        data: data.clone(),
    };
    let mut out = ZoneDiff {
        size: have.values().map(Vec::len).sum(),
        ..ZoneDiff::default()
    };
    let mut changes = Vec::new();
    let mut deletes = Vec::new();

    for ((name, rtype), wanted) in &want {
        let Some(kind) = Kind::parse(rtype) else {
            continue;
        };
        let current = have
            .get(&(name.clone(), rtype.clone()))
            .cloned()
            .unwrap_or_default();
        let ttl = wanted
            .first()
            .map(|(_, t)| *t)
            .unwrap_or(super::records::TTL);
        let values = data(wanted);
        // A CNAME owns its name alone (RFC 1034 §3.6.2): it cannot join other records
        // there, nor they it, unless they are ours to remove.
        let clash: Vec<&str> = have
            .keys()
            .filter(|(n, t)| n == name && t != rtype)
            .filter(|(_, t)| kind == Kind::CNAME || t == "CNAME")
            .filter(|(n, t)| !owns_set(n, t) || want.contains_key(&(n.clone(), t.clone())))
            .map(|(_, t)| t.as_str())
            .collect();
        if !clash.is_empty() {
            out.conflicts.push(format!(
                "{kind} {name}: the zone has {} there, not managed by ferrymail; a CNAME cannot \
                 share a name. Remove it, or declare this name in the domain's dns_records.",
                clash.join(", ")
            ));
            // What was ours here stays ours until the conflict is settled.
            out.owned.extend(
                owned
                    .iter()
                    .filter(|o| o.name == *name && o.kind == kind)
                    .cloned(),
            );
            continue;
        }
        let mut theirs = Vec::new();
        let after: Vec<String> = if kind == Kind::TXT {
            let tags: BTreeSet<String> = values.iter().filter_map(|v| txt_tag(v)).collect();
            let mut after = values.clone();
            for live_value in &current {
                let v = &live_value.0;
                if values.contains(v) {
                    continue;
                }
                let same_tag = txt_tag(v).is_some_and(|t| tags.contains(&t));
                if same_tag {
                    // Replaced by ours (two SPF records make SPF fail).
                } else if owned_txt(name, v) {
                    out.removed += 1;
                } else {
                    // Someone else's TXT value: kept as it is, and listed.
                    after.push(v.clone());
                    theirs.push(v.clone());
                    out.unmanaged.push(unmanaged(name, rtype, live_value));
                }
            }
            out.owned.extend(values.iter().map(|v| Owned {
                name: name.clone(),
                kind,
                value: Some(v.clone()),
            }));
            after
        } else {
            if !owns_set(name, rtype) {
                // Taking over a set someone filled: what goes is counted for the guard.
                out.removed += current
                    .iter()
                    .filter(|(d, _)| {
                        !values
                            .iter()
                            .any(|v| canonical(kind, v) == canonical(kind, d))
                    })
                    .count();
            }
            out.owned.push(Owned {
                name: name.clone(),
                kind,
                value: None,
            });
            values.clone()
        };
        // Only the TTLs of our own values count (TXT values of others keep theirs).
        let old_ttl = current
            .iter()
            .filter(|(d, _)| !theirs.contains(d))
            .map(|(_, t)| *t)
            .find(|t| ttl_known && *t != ttl);
        if !same_set(kind, &data(&current), &after) || old_ttl.is_some() {
            changes.push(RrsetChange {
                name: name.clone(),
                kind,
                ttl,
                before: data(&current),
                after,
                theirs,
                old_ttl,
            });
        }
    }

    // What ferrymail published earlier and no longer wants.
    for ((name, rtype), current) in &have {
        if want.contains_key(&(name.clone(), rtype.clone())) {
            continue;
        }
        let Some(kind) = Kind::parse(rtype) else {
            out.unmanaged
                .extend(current.iter().map(|v| unmanaged(name, rtype, v)));
            continue;
        };
        let (gone, kept): (Vec<_>, Vec<_>) = if owns_set(name, rtype) {
            (current.clone(), Vec::new())
        } else if kind == Kind::TXT {
            current
                .iter()
                .cloned()
                .partition(|(v, _)| owned_txt(name, v))
        } else {
            (Vec::new(), current.clone())
        };
        out.unmanaged
            .extend(kept.iter().map(|v| unmanaged(name, rtype, v)));
        if !gone.is_empty() {
            out.removed += gone.len();
            deletes.push(RrsetChange {
                name: name.clone(),
                kind,
                ttl: current.first().map(|(_, t)| *t).unwrap_or(0),
                before: data(current),
                theirs: data(&kept),
                after: data(&kept),
                old_ttl: None,
            });
        }
    }
    // A deletion that frees a name for a record being added (a CNAME leaving for an A,
    // or the other way) goes first; the others last, so a provider that stops halfway
    // (Cloudflare writes one record at a time) has added before it took away.
    let (first, last): (Vec<_>, Vec<_>) = deletes
        .into_iter()
        .partition(|d| changes.iter().any(|c: &RrsetChange| c.name == d.name));
    out.changes = first.into_iter().chain(changes).chain(last).collect();
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
                ("old._domainkey.d.test", vec!["v=DKIM1; p=AA"], vec![]),
            ],
            "the MX differs only in spelling; deletions come last"
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
    fn signatures_of_a_signed_zone_neither_block_a_cname_nor_count() {
        let desired = [want("mail.d.test", Kind::CNAME, "mx.d.test.")];
        let zone = [
            live("mail.d.test", "CNAME", "mx.d.test."),
            live("mail.d.test", "RRSIG", "CNAME 13 3 3600 ..."),
            live("mail.d.test", "NSEC", "mx.d.test. CNAME RRSIG NSEC"),
        ];
        let d = diff_zone(&desired, &zone, &[], true);
        assert!(d.conflicts.is_empty(), "{:?}", d.conflicts);
        assert!(d.changes.is_empty());
        assert_eq!(d.size, 1);
    }

    #[test]
    fn a_cname_that_leaves_for_an_a_record_goes_first_and_others_ttls_are_theirs() {
        let desired = [
            want("mail.d.test", Kind::A, "192.0.2.1"),
            want("d.test", Kind::TXT, "v=spf1 mx -all"),
        ];
        let mut verification = live("d.test", "TXT", "verify=1");
        verification.ttl = 300;
        let zone = [
            live("mail.d.test", "CNAME", "mx.d.test."),
            verification,
            live("d.test", "TXT", "v=spf1 mx -all"),
        ];
        let owned = [Owned {
            name: "mail.d.test".into(),
            kind: Kind::CNAME,
            value: None,
        }];
        let d = diff_zone(&desired, &zone, &owned, true);
        let order: Vec<(&str, Kind)> = d
            .changes
            .iter()
            .map(|c| (c.name.as_str(), c.kind))
            .collect();
        assert_eq!(
            order,
            [("mail.d.test", Kind::CNAME), ("mail.d.test", Kind::A)],
            "the apex TXT differs only in someone else's TTL"
        );
        assert!(d.conflicts.is_empty());
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
