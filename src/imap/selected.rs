//! The selected folder as one session sees it: messages in sequence order, and how that
//! view catches up with changes made elsewhere (EXISTS, EXPUNGE, FETCH FLAGS).

use imap_next::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

use crate::mailbox::{Folder, MessageInfo};

pub struct Selected {
    pub folder: Folder,
    pub read_only: bool,
    /// Sequence number n is `view[n - 1]`.
    pub view: Vec<MessageInfo>,
    /// Expunges seen but not yet told (held during FETCH, STORE, SEARCH).
    pub held_expunges: bool,
}

/// What changed since the view was last brought up to date.
#[derive(Debug, Default)]
pub struct Changes {
    /// Sequence numbers to announce as expunged, in the order to send them.
    pub expunged: Vec<u32>,
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

impl Selected {
    pub fn largest_uid(&self) -> u32 {
        self.view.last().map_or(0, |m| m.uid)
    }

    /// Indexes into the view of the messages `set` names (UIDs or sequence numbers).
    pub fn resolve(&self, set: &SequenceSet, uid: bool) -> Vec<usize> {
        if self.view.is_empty() {
            return Vec::new();
        }
        let largest = if uid {
            self.largest_uid()
        } else {
            self.view.len() as u32
        };
        (0..self.view.len())
            .filter(|&i| {
                let n = if uid { self.view[i].uid } else { i as u32 + 1 };
                contains(set, n, largest)
            })
            .collect()
    }

    /// Brings the view up to `now` (the folder's messages in UID order). Expunges are
    /// applied only when `expunges` is true (not during FETCH, STORE or SEARCH, RFC 3501
    /// §7.4.1); until then the vanished messages keep their sequence numbers.
    pub fn catch_up(&mut self, now: Vec<MessageInfo>, expunges: bool) -> Changes {
        let mut changes = Changes::default();
        let current: std::collections::HashMap<u32, &MessageInfo> =
            now.iter().map(|m| (m.uid, m)).collect();
        if !expunges {
            self.held_expunges |= self.view.iter().any(|m| !current.contains_key(&m.uid));
        } else {
            self.held_expunges = false;
            let mut i = self.view.len();
            while i > 0 {
                i -= 1;
                if !current.contains_key(&self.view[i].uid) {
                    self.view.remove(i);
                    changes.expunged.push(i as u32 + 1);
                }
            }
        }
        for (i, m) in self.view.iter_mut().enumerate() {
            if let Some(fresh) = current.get(&m.uid)
                && fresh.modseq != m.modseq
            {
                if fresh.flags != m.flags {
                    changes.flags.push(i as u32 + 1);
                }
                *m = (*fresh).clone();
            }
        }
        let largest = self.largest_uid();
        let before = self.view.len();
        self.view
            .extend(now.into_iter().filter(|m| m.uid > largest));
        if self.view.len() != before {
            changes.exists = Some(self.view.len() as u32);
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn catching_up_reports_expunges_arrivals_and_flag_changes() {
        let folder = Folder {
            id: 1,
            name: "INBOX".into(),
            special_use: None,
            subscribed: true,
            uidvalidity: 1,
            uidnext: 5,
            highestmodseq: 1,
        };
        let mut s = Selected {
            folder,
            read_only: false,
            view: vec![
                msg(1, 1, &[]),
                msg(2, 1, &[]),
                msg(3, 1, &[]),
                msg(4, 1, &[]),
            ],
            held_expunges: false,
        };
        let now = vec![msg(1, 1, &[]), msg(3, 2, &["\\Seen"]), msg(5, 3, &[])];
        let held = s.catch_up(now.clone(), false);
        assert!(held.expunged.is_empty() && s.held_expunges);
        assert_eq!(held.flags, [3]);
        assert_eq!(held.exists, Some(5));
        let c = s.catch_up(now, true);
        // 4 then 2, each numbered as it was when announced.
        assert_eq!(c.expunged, [4, 2]);
        assert_eq!(s.view.iter().map(|m| m.uid).collect::<Vec<_>>(), [1, 3, 5]);
        let set: SequenceSet = "2:*".try_into().unwrap();
        assert_eq!(s.resolve(&set, false), [1, 2]);
        assert_eq!(s.resolve(&set, true), [1, 2]);
        let all: SequenceSet = "1:4294967295".try_into().unwrap();
        assert_eq!(s.resolve(&all, true).len(), 3);
    }
}
