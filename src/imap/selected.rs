//! The selected folder as one session sees it: messages in sequence order, and how that
//! view catches up with changes made elsewhere (EXISTS, EXPUNGE, FETCH FLAGS), from
//! what changed after the MODSEQ it last saw.

use imap_next::imap_types::flag::{Flag, FlagFetch, FlagPerm};
use imap_next::imap_types::response::{Code, Data, Status};
use imap_next::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

use crate::mailbox::{Delta, Folder, MessageInfo};

pub struct Selected {
    pub folder: Folder,
    pub read_only: bool,
    /// Sequence number n is `view[n - 1]`; UIDs ascend.
    pub view: Vec<MessageInfo>,
    /// The folder's HIGHESTMODSEQ the view is up to date with.
    pub modseq: u64,
    /// UIDs expunged but not yet told (held during FETCH, STORE, SEARCH).
    pub held_expunges: std::collections::BTreeSet<u32>,
    /// The UID ranges (from, to) this session was first to see: its \Recent messages.
    pub recent: Vec<(u32, u32)>,
    /// The keywords the client was told of in FLAGS (a new one means a new FLAGS).
    pub keywords: std::collections::BTreeSet<String>,
    /// The UIDs the last SEARCH RETURN (SAVE) kept, which `$` names (RFC 5182); empty
    /// at SELECT.
    pub saved: Vec<u32>,
}

/// What changed since the view was last brought up to date.
#[derive(Debug, Default)]
pub struct Changes {
    /// Sequence numbers to announce as expunged, in the order to send them.
    pub expunged: Vec<u32>,
    /// Their UIDs (QRESYNC tells these, in VANISHED).
    pub vanished: Vec<u32>,
    /// A keyword the client was not told of came: FLAGS must list it.
    pub keywords: bool,
    /// The new EXISTS count, when messages arrived.
    pub exists: Option<u32>,
    /// Sequence numbers whose flags changed.
    pub flags: Vec<u32>,
}

/// Whether `n` is in `set`, with `*` standing for `largest` (never expands ranges, so
/// "1:4294967295" costs nothing).
pub fn contains(set: &SequenceSet, n: u32, largest: u32) -> bool {
    let value = |s: &SeqOrUid| match s {
        SeqOrUid::Value(v) => v.get(),
        SeqOrUid::Asterisk => largest,
    };
    set.0.as_ref().iter().any(|s| match s {
        Sequence::Single(a) => value(a) == n,
        Sequence::Range(a, b) => {
            let (a, b) = (value(a), value(b));
            a.min(b) <= n && n <= a.max(b)
        }
    })
}

/// The ranges `set` names, within 1..=`largest` (`*` is `largest`), sorted and merged:
/// "1:4294967295" is one range, never four billion numbers.
pub fn ranges(set: &SequenceSet, largest: u32) -> Vec<(u32, u32)> {
    let value = |s: &SeqOrUid| match s {
        SeqOrUid::Value(v) => v.get(),
        SeqOrUid::Asterisk => largest,
    };
    let mut out: Vec<(u32, u32)> = set
        .0
        .as_ref()
        .iter()
        .map(|s| match s {
            Sequence::Single(a) => (value(a), value(a)),
            Sequence::Range(a, b) => {
                let (a, b) = (value(a), value(b));
                (a.min(b), a.max(b))
            }
        })
        .filter(|&(a, _)| a <= largest)
        .map(|(a, b)| (a, b.min(largest)))
        .collect();
    out.sort_unstable();
    let mut merged: Vec<(u32, u32)> = Vec::with_capacity(out.len());
    for (a, b) in out {
        match merged.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    merged
}

/// `numbers` as a sequence set's text ("1:3,5"), in runs.
pub fn set_text(numbers: &[u32]) -> String {
    let set: Vec<String> = runs(numbers)
        .into_iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}:{b}")
            }
        })
        .collect();
    set.join(",")
}

/// `numbers` (in any order) as sorted runs of consecutive ones.
pub fn runs(numbers: &[u32]) -> Vec<(u32, u32)> {
    let mut sorted = numbers.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<(u32, u32)> = Vec::new();
    for n in sorted {
        match out.last_mut() {
            Some(last) if last.1.checked_add(1) == Some(n) => last.1 = n,
            _ => out.push((n, n)),
        }
    }
    out
}

/// The sequence set of `ranges` (None when empty).
pub fn to_set(ranges: &[(u32, u32)]) -> Option<SequenceSet> {
    let nz = super::convert::nz;
    let items: Vec<Sequence> = ranges
        .iter()
        .map(|&(a, b)| {
            if a == b {
                Sequence::Single(SeqOrUid::Value(nz(a)))
            } else {
                Sequence::Range(SeqOrUid::Value(nz(a)), SeqOrUid::Value(nz(b)))
            }
        })
        .collect();
    imap_next::imap_types::core::Vec1::try_from(items)
        .ok()
        .map(SequenceSet)
}

impl Selected {
    /// The UIDs among `known` (merged ranges) that no longer exist: what QRESYNC's
    /// VANISHED (EARLIER) tells (RFC 7162 §3.2.5.1 lets it include UIDs expunged before
    /// the client's MODSEQ; it names only UIDs the client knew).
    pub fn vanished(&self, known: &[(u32, u32)]) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        let mut i = 0;
        for &(a, b) in known {
            // The next UID of a..=b not yet known to exist (None past u32::MAX).
            let mut from = Some(a);
            while i < self.view.len() && self.view[i].uid < a {
                i += 1;
            }
            while i < self.view.len() && self.view[i].uid <= b {
                let uid = self.view[i].uid;
                if let Some(f) = from
                    && uid > f
                {
                    out.push((f, uid - 1));
                }
                from = uid.checked_add(1);
                i += 1;
            }
            if let Some(f) = from
                && f <= b
            {
                out.push((f, b));
            }
        }
        out
    }

    /// The saved search result (RFC 5182 `$`) as a set: of UIDs, or of the sequence
    /// numbers those messages have now (an expunged one drops out). A result that is
    /// empty names a number no message has, so `$` matches nothing.
    pub fn saved_set(&self, uid: bool) -> String {
        let numbers: Vec<u32> = if uid {
            self.saved.clone()
        } else {
            self.saved
                .iter()
                .filter_map(|&u| self.position(u).map(|i| i as u32 + 1))
                .collect()
        };
        if numbers.is_empty() {
            u32::MAX.to_string()
        } else {
            set_text(&numbers)
        }
    }

    /// `view` was read after `folder`, so it is at least as new as its HIGHESTMODSEQ.
    pub fn new(folder: Folder, read_only: bool, view: Vec<MessageInfo>) -> Selected {
        let mut selected = Selected {
            modseq: folder.highestmodseq,
            folder,
            read_only,
            view: Vec::new(),
            held_expunges: Default::default(),
            recent: Vec::new(),
            keywords: Default::default(),
            saved: Vec::new(),
        };
        selected.note_keywords(&view);
        selected.view = view;
        selected
    }

    /// Takes note of keywords of `messages` the client was not told of; true when there
    /// were any (RFC 3501 §7.2.6: FLAGS then lists them). Only what changed is looked
    /// at, never the whole folder per command.
    pub fn note_keywords<'m>(
        &mut self,
        messages: impl IntoIterator<Item = &'m MessageInfo>,
    ) -> bool {
        let before = self.keywords.len();
        for m in messages {
            for f in &m.flags {
                if !f.starts_with('\\') && !self.keywords.contains(f) {
                    self.keywords.insert(f.clone());
                }
            }
        }
        self.keywords.len() != before
    }

    /// The untagged FLAGS and OK [PERMANENTFLAGS] that describe the folder's flags.
    pub fn flag_responses(&self) -> (Data<'static>, Status<'static>) {
        let mut flags = vec![
            Flag::Answered,
            Flag::Flagged,
            Flag::Deleted,
            Flag::Seen,
            Flag::Draft,
        ];
        flags.extend(self.keywords.iter().filter_map(|k| super::convert::flag(k)));
        let (code, text) = if self.read_only {
            (Code::PermanentFlags(Vec::new()), "Read-only")
        } else {
            let mut perm: Vec<FlagPerm<'static>> =
                flags.iter().cloned().map(FlagPerm::Flag).collect();
            perm.push(FlagPerm::Asterisk);
            (Code::PermanentFlags(perm), "Flags permitted")
        };
        (
            Data::Flags(flags),
            super::session::status_ok(None, Some(code), text),
        )
    }

    /// Adds UIDs this session is first to see (from Mailbox::claim_recent).
    pub fn claimed(&mut self, range: Option<(u32, u32)>) {
        if let Some((from, to)) = range {
            match self.recent.last_mut() {
                Some(last) if last.1 >= from => last.1 = last.1.max(to),
                _ => self.recent.push((from, to)),
            }
        }
    }

    /// By binary search: claims come in UID order, and a session among several that
    /// keep appending gathers one range per claim (thousands over a long mix, where a
    /// look at every range for every message made a SEARCH of 1,000 cost 0.2 ms more).
    pub fn is_recent(&self, uid: u32) -> bool {
        let at = self.recent.partition_point(|&(_, to)| to <= uid);
        self.recent.get(at).is_some_and(|&(from, _)| from <= uid)
    }

    /// How many messages in the view are \Recent for this session (told with every
    /// EXISTS): counted per claimed range by binary search, not over the view.
    pub fn recent_count(&self) -> u32 {
        let below = |uid: u32| self.view.partition_point(|m| m.uid < uid);
        self.recent
            .iter()
            .map(|&(from, to)| (below(to) - below(from)) as u32)
            .sum()
    }

    /// A message's flags as this session tells them: the stored ones, and \Recent.
    pub fn flags(&self, info: &MessageInfo) -> Vec<FlagFetch<'static>> {
        let mut flags = super::convert::flags(&info.flags);
        if self.is_recent(info.uid) {
            flags.push(FlagFetch::Recent);
        }
        flags
    }

    pub fn largest_uid(&self) -> u32 {
        self.view.last().map_or(0, |m| m.uid)
    }

    /// Indexes into the view of the messages `set` names (UIDs or sequence numbers).
    pub fn resolve(&self, set: &SequenceSet, uid: bool) -> Vec<usize> {
        // Range by range (the view is in UID order), not the whole view per command:
        // a FETCH of one message in a folder of 10,000 looks at one.
        let mut out = Vec::new();
        if uid {
            for (a, b) in ranges(set, self.largest_uid()) {
                let start = self.view.partition_point(|m| m.uid < a);
                out.extend((start..self.view.len()).take_while(|&i| self.view[i].uid <= b));
            }
        } else {
            for (a, b) in ranges(set, self.view.len() as u32) {
                out.extend(a as usize - 1..b as usize);
            }
        }
        out
    }

    /// Where `uid` is in the view.
    pub fn position(&self, uid: u32) -> Option<usize> {
        self.view.binary_search_by_key(&uid, |m| m.uid).ok()
    }

    /// Brings the view up to date with `delta`. Expunges are applied only when
    /// `expunges` is true (not during FETCH, STORE or SEARCH, RFC 3501 §7.4.1); until
    /// then the vanished messages keep their sequence numbers.
    pub fn catch_up(&mut self, delta: Delta, expunges: bool) -> Changes {
        let mut changes = Changes::default();
        self.modseq = self.modseq.max(delta.highest);
        let largest = self.largest_uid();
        // Only what the view holds can be expunged from it (an expunge may be told again).
        let gone: Vec<u32> = delta
            .expunged
            .into_iter()
            .filter(|&u| u <= largest)
            .collect();
        self.held_expunges.extend(gone);
        let mut arrived = Vec::new();
        // By UID until the expunges are applied: the numbers are worked out after.
        let mut flagged = Vec::new();
        changes.keywords = self.note_keywords(&delta.changed);
        for fresh in delta.changed {
            if self.held_expunges.contains(&fresh.uid) {
                continue;
            }
            match self.position(fresh.uid) {
                Some(i) => {
                    let m = &mut self.view[i];
                    if fresh.modseq > m.modseq {
                        if fresh.flags != m.flags {
                            flagged.push(fresh.uid);
                        }
                        *m = fresh;
                    }
                }
                None if fresh.uid > largest => arrived.push(fresh),
                // Gone already, and told.
                None => {}
            }
        }
        if expunges && !self.held_expunges.is_empty() {
            let held = std::mem::take(&mut self.held_expunges);
            // From the highest number down, each told as numbered at that moment.
            for uid in held.into_iter().rev() {
                if let Some(i) = self.position(uid) {
                    self.view.remove(i);
                    changes.expunged.push(i as u32 + 1);
                    changes.vanished.push(uid);
                }
            }
        }
        // Flag changes are told with the numbers after the expunges.
        changes.flags = flagged
            .into_iter()
            .filter_map(|uid| self.position(uid).map(|i| i as u32 + 1))
            .collect();
        if !arrived.is_empty() {
            self.view.extend(arrived);
            changes.exists = Some(self.view.len() as u32);
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inbox(uidnext: u32) -> Folder {
        Folder {
            id: 1,
            name: "INBOX".into(),
            special_use: None,
            subscribed: true,
            uidvalidity: 1,
            uidnext,
            highestmodseq: 1,
            first_recent: 1,
        }
    }

    fn msg(uid: u32, modseq: u64, flags: &[&str]) -> MessageInfo {
        MessageInfo {
            uid,
            flags: flags.iter().map(|f| f.to_string()).collect(),
            modseq,
            size: 1,
            internal_date: 0,
        }
    }

    #[test]
    fn recent_claims_interleaved_with_other_sessions_are_told_apart() {
        let mut s = Selected::new(inbox(1), false, Vec::new());
        // Every third UID is this session's, the others went to other sessions.
        for uid in (1..3000).step_by(3) {
            s.claimed(Some((uid, uid + 1)));
        }
        assert_eq!(s.recent.len(), 1000);
        for uid in 0..3100 {
            assert_eq!(s.is_recent(uid), uid < 3000 && uid % 3 == 1, "{uid}");
        }
    }

    #[test]
    fn resolving_a_set_agrees_with_testing_every_message() {
        // UIDs with gaps, as after expunges.
        let uids = [2, 3, 5, 8, 9, 10, 40, 41, 100];
        let s = Selected::new(
            inbox(101),
            false,
            uids.iter().map(|&u| msg(u, 1, &[])).collect(),
        );
        for text in [
            "1",
            "*",
            "1:*",
            "*:1",
            "4:6",
            "9:2",
            "3,1,3",
            "200",
            "50:*",
            "100:200",
            "11:39",
            "2,5:8,41:*",
            "1:4294967295",
        ] {
            let set = SequenceSet::try_from(text).unwrap();
            for uid in [false, true] {
                let largest = if uid { 100 } else { uids.len() as u32 };
                let every: Vec<usize> = (0..uids.len())
                    .filter(|&i| {
                        let n = if uid { uids[i] } else { i as u32 + 1 };
                        contains(&set, n, largest)
                    })
                    .collect();
                assert_eq!(s.resolve(&set, uid), every, "{text} uid={uid}");
            }
        }
    }

    #[test]
    fn catching_up_reports_expunges_arrivals_and_flag_changes() {
        let folder = inbox(5);
        let mut s = Selected::new(
            folder,
            false,
            vec![
                msg(1, 1, &[]),
                msg(2, 1, &[]),
                msg(3, 1, &[]),
                msg(4, 1, &[]),
            ],
        );
        s.claimed(Some((3, 5)));
        s.claimed(Some((5, 6)));
        assert_eq!(s.recent, [(3, 6)]);
        assert_eq!(
            (1..8).filter(|&u| s.is_recent(u)).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        assert_eq!(s.recent_count(), 2);
        let delta = || Delta {
            highest: 4,
            changed: vec![msg(3, 2, &["\\Seen"]), msg(5, 3, &[])],
            expunged: vec![2, 4],
        };
        let held = s.catch_up(delta(), false);
        assert!(held.expunged.is_empty());
        assert_eq!(s.held_expunges.len(), 2);
        assert_eq!(held.flags, [3]);
        assert_eq!(held.exists, Some(5));
        // Told again (a look that overlapped a change): nothing new.
        let c = s.catch_up(delta(), true);
        // 4 then 2, each numbered as it was when announced.
        assert_eq!(c.expunged, [4, 2]);
        assert!(c.flags.is_empty() && c.exists.is_none());
        assert_eq!(s.view.iter().map(|m| m.uid).collect::<Vec<_>>(), [1, 3, 5]);
        assert_eq!(s.recent_count(), 2, "3 and 5");
        assert_eq!(s.modseq, 4);
        let set: SequenceSet = "2:*".try_into().unwrap();
        assert_eq!(s.resolve(&set, false), [1, 2]);
        assert_eq!(s.resolve(&set, true), [1, 2]);
        let all: SequenceSet = "1:4294967295".try_into().unwrap();
        assert_eq!(s.resolve(&all, true).len(), 3);
    }

    #[test]
    fn vanished_uids_are_worked_out_as_ranges() {
        let folder = inbox(20);
        let s = Selected::new(
            folder,
            false,
            [2, 3, 7, 10].iter().map(|&u| msg(u, 1, &[])).collect(),
        );
        let all: SequenceSet = "1:4294967295".try_into().unwrap();
        let known = ranges(&all, 19);
        assert_eq!(known, [(1, 19)]);
        assert_eq!(s.vanished(&known), [(1, 1), (4, 6), (8, 9), (11, 19)]);
        let some: SequenceSet = "3,5:7,9,2".try_into().unwrap();
        assert_eq!(ranges(&some, 19), [(2, 3), (5, 7), (9, 9)]);
        assert_eq!(s.vanished(&ranges(&some, 19)), [(5, 6), (9, 9)]);
        assert_eq!(
            to_set(&[(5, 6), (9, 9)]).unwrap(),
            "5:6,9".try_into().unwrap()
        );
        assert_eq!(runs(&[9, 5, 6, 6]), [(5, 6), (9, 9)]);
    }
}
