//! IMAP commands on the selected folder's messages: FETCH, STORE, COPY/MOVE, SEARCH,
//! EXPUNGE, CLOSE, and the untagged updates that keep the client's view current.

use imap_next::imap_types::IntoStatic;
use imap_next::imap_types::command::{CommandBody, FetchModifier, StoreModifier};
use imap_next::imap_types::core::{Tag, Vec1};
use imap_next::imap_types::fetch::{
    MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName,
};
use imap_next::imap_types::flag::{Flag, StoreResponse, StoreType};
use imap_next::imap_types::mailbox::Mailbox as WireMailbox;
use imap_next::imap_types::response::{Code, Data};
use imap_next::imap_types::sequence::SequenceSet;
use tokio::io::{AsyncRead, AsyncWrite};

use super::extended::{Extras, SearchReturn};
use super::selected::Selected;
use super::{convert, fetch, fetch_lines, search};
use crate::mailbox::{FlagChange, Folder, Mailbox, MailboxError};

use super::session::*;

/// The most messages, and bytes, a FETCH may name to count as short (`is_short`).
const SHORT_FETCH_MESSAGES: u64 = 8;
const SHORT_FETCH_BYTES: u64 = 256 * 1024;
/// The largest folder whose index a SEARCH goes through on the worker thread.
const SHORT_SEARCH_MESSAGES: usize = 10_000;

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// Tells the client what changed in its selected folder since it last heard.
    pub(super) fn send_updates(&mut self, expunges: bool) {
        self.updates(expunges, false);
    }

    /// `woken`: the IDLE wait already took the change notice, so look regardless.
    pub(super) fn updates(&mut self, expunges: bool, woken: bool) {
        let (Some(user), Some(selected)) = (self.user.as_mut(), self.selected.as_mut()) else {
            return;
        };
        // Only when something changed (here or elsewhere) since the last look, or an
        // expunge is still to be told; and then only what changed after the MODSEQ the
        // view is at (a folder of 10,000 messages is not read again per command).
        let changed = woken || user.changes.has_changed().unwrap_or(false);
        if !changed && (selected.held_expunges.is_empty() || !expunges) {
            return;
        }
        user.changes.borrow_and_update();
        let since = selected.modseq;
        let delta = if changed {
            match crate::blocking::run(|| user.mailbox.changes_since(&selected.folder, since)) {
                Ok(delta) => delta,
                Err(e) => {
                    tracing::debug!(error = %e, "IMAP update failed");
                    return;
                }
            }
        } else {
            crate::mailbox::Delta {
                highest: since,
                ..Default::default()
            }
        };
        let changes = selected.catch_up(delta, expunges);
        // IMAP4rev2 has no \Recent (RFC 9051 appendix E): such a session claims none,
        // and leaves them to a rev1 session.
        let rev2 = self.rev2;
        if changes.exists.is_some() && !rev2 {
            // New messages: those no other session has seen are this one's \Recent.
            let (folder, read_only) = (&selected.folder, selected.read_only);
            let recent = crate::blocking::run(|| user.mailbox.recent_for(folder, read_only))
                .unwrap_or_else(|e| {
                    tracing::debug!(error = %e, "IMAP \\Recent claim failed");
                    None
                });
            selected.claimed(recent);
        }
        if changes.keywords {
            let (flags, permanent) = selected.flag_responses();
            self.server.enqueue_data(flags);
            self.server.enqueue_status(permanent);
        }
        if self.qresync {
            // RFC 7162 §3.2.10: once QRESYNC is on, expunges are told by UID.
            if let Some(known_uids) =
                super::selected::to_set(&super::selected::runs(&changes.vanished))
            {
                self.server.enqueue_data(Data::Vanished {
                    earlier: false,
                    known_uids,
                });
            }
        } else {
            for seq in &changes.expunged {
                self.server.enqueue_data(Data::Expunge(convert::nz(*seq)));
            }
        }
        if let Some(n) = changes.exists {
            self.server.enqueue_data(Data::Exists(n));
            if !rev2 {
                self.server
                    .enqueue_data(Data::Recent(selected.recent_count()));
            }
        }
        for seq in &changes.flags {
            let Some(info) = selected.view.get(*seq as usize - 1) else {
                continue;
            };
            let mut items = vec![
                MessageDataItem::Flags(selected.flags(info)),
                MessageDataItem::Uid(convert::nz(info.uid)),
            ];
            if self.condstore
                && let Some(m) = std::num::NonZeroU64::new(info.modseq)
            {
                items.push(MessageDataItem::ModSeq(m));
            }
            if let Ok(items) = Vec1::try_from(items) {
                self.server.enqueue_data(Data::Fetch {
                    seq: convert::nz(*seq),
                    items,
                });
            }
        }
    }

    /// VANISHED (EARLIER) for the UIDs of `known` that are gone, then FETCH (UID FLAGS
    /// MODSEQ) of every message changed after `since` (RFC 7162 §3.2.5.1).
    pub(super) fn resync(&mut self, selected: &Selected, since: u64, known: &[(u32, u32)]) {
        if let Some(known_uids) = super::selected::to_set(&selected.vanished(known)) {
            self.server.enqueue_data(Data::Vanished {
                earlier: true,
                known_uids,
            });
        }
        for (i, m) in selected.view.iter().enumerate() {
            if m.modseq <= since {
                continue;
            }
            let mut items = vec![
                MessageDataItem::Uid(convert::nz(m.uid)),
                MessageDataItem::Flags(selected.flags(m)),
            ];
            if let Some(modseq) = std::num::NonZeroU64::new(m.modseq) {
                items.push(MessageDataItem::ModSeq(modseq));
            }
            if let Ok(items) = Vec1::try_from(items) {
                self.server.enqueue_data(Data::Fetch {
                    seq: convert::nz(i as u32 + 1),
                    items,
                });
            }
        }
    }

    /// Whether `body` is a short read of the selected folder, to run on the worker
    /// thread itself (`blocking::run_here`): a FETCH of a few small messages that sets
    /// no flag, or a SEARCH of the index alone.
    pub(super) fn is_short(&self, body: &CommandBody<'_>) -> bool {
        let Some(selected) = self.selected.as_ref() else {
            return false;
        };
        match body {
            CommandBody::Fetch {
                sequence_set,
                macro_or_item_names: MacroOrMessageDataItemNames::MessageDataItemNames(names),
                uid,
                ..
            } => {
                let largest = if *uid {
                    selected.largest_uid()
                } else {
                    selected.view.len() as u32
                };
                let named: u64 = super::selected::ranges(sequence_set, largest)
                    .iter()
                    .map(|&(a, b)| u64::from(b - a) + 1)
                    .sum();
                named <= SHORT_FETCH_MESSAGES
                    && !fetch::sets_seen(names)
                    && selected
                        .resolve(sequence_set, *uid)
                        .iter()
                        .map(|&i| selected.view[i].size)
                        .sum::<u64>()
                        <= SHORT_FETCH_BYTES
            }
            CommandBody::Search { criteria, .. } => {
                selected.view.len() <= SHORT_SEARCH_MESSAGES && search::short(criteria.as_ref())
            }
            _ => false,
        }
    }

    pub(super) fn selected_command(
        &mut self,
        tag: Tag<'static>,
        body: CommandBody<'static>,
    ) -> Result<(), MailboxError> {
        let charset = match &body {
            CommandBody::Search { charset, .. } => charset.as_ref(),
            CommandBody::Sort { charset, .. } | CommandBody::Thread { charset, .. } => {
                Some(charset)
            }
            _ => None,
        };
        if charset.is_some_and(|c| !known_charset(c)) {
            self.no(tag, "[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset");
            return Ok(());
        }
        match body {
            CommandBody::Check => self.ok(tag, "CHECK completed"),
            CommandBody::Close => {
                if let Some(selected) = self.selected.take()
                    && !selected.read_only
                {
                    self.user().mailbox.expunge(&selected.folder, None)?;
                }
                self.ok(tag, "CLOSE completed");
            }
            CommandBody::Unselect => {
                self.selected = None;
                self.ok(tag, "UNSELECT completed");
            }
            CommandBody::Expunge => self.expunge(tag, None)?,
            CommandBody::ExpungeUid { sequence_set } => self.expunge(tag, Some(&sequence_set))?,
            CommandBody::Fetch {
                sequence_set,
                macro_or_item_names,
                uid,
                modifiers,
            } => {
                let names: Vec<MessageDataItemName<'static>> = match macro_or_item_names {
                    MacroOrMessageDataItemNames::Macro(m) => {
                        m.expand().into_iter().map(|n| n.into_static()).collect()
                    }
                    MacroOrMessageDataItemNames::MessageDataItemNames(names) => names,
                };
                // CONDSTORE (RFC 7162 §3.1.4): only what changed since the client's MODSEQ.
                let changed_since = modifiers.iter().find_map(|m| match m {
                    FetchModifier::ChangedSince(n) => Some(n.get()),
                    _ => None,
                });
                let vanished = modifiers
                    .iter()
                    .any(|m| matches!(m, FetchModifier::Vanished));
                if vanished && !(uid && changed_since.is_some() && self.qresync) {
                    self.done(status_bad(
                        Some(tag),
                        "VANISHED needs UID FETCH, CHANGEDSINCE and ENABLE QRESYNC",
                    ));
                    return Ok(());
                }
                // Asking for MODSEQ, or changes since one, enables CONDSTORE (§3.1).
                if changed_since.is_some()
                    || names
                        .iter()
                        .any(|n| matches!(n, MessageDataItemName::ModSeq))
                {
                    self.enable_condstore();
                }
                // UID FETCH … (CHANGEDSINCE m VANISHED): the UIDs of the set that are
                // gone come first, as VANISHED (EARLIER) (RFC 7162 §3.2.6).
                if vanished {
                    let selected = self.selected.as_ref().unwrap_or_else(|| unreachable!());
                    let largest = selected.folder.uidnext.max(selected.largest_uid() + 1) - 1;
                    let gone = selected.vanished(&super::selected::ranges(&sequence_set, largest));
                    if let Some(known_uids) = super::selected::to_set(&gone) {
                        self.server.enqueue_data(Data::Vanished {
                            earlier: true,
                            known_uids,
                        });
                    }
                }
                self.fetch(tag, &sequence_set, names, uid, changed_since)?;
            }
            CommandBody::Store {
                sequence_set,
                kind,
                response,
                flags,
                uid,
                modifiers,
            } => {
                let unchanged_since = modifiers
                    .iter()
                    .map(|StoreModifier::UnchangedSince(m)| *m)
                    .next();
                self.store(
                    tag,
                    &sequence_set,
                    kind,
                    response,
                    &flags,
                    uid,
                    unchanged_since,
                )?;
            }
            CommandBody::Copy {
                sequence_set,
                mailbox,
                uid,
            } => self.copy(tag, &sequence_set, &mailbox, uid, false)?,
            CommandBody::Move {
                sequence_set,
                mailbox,
                uid,
            } => self.copy(tag, &sequence_set, &mailbox, uid, true)?,
            CommandBody::Search { criteria, uid, .. } => {
                self.search(tag, criteria.as_ref(), uid)?;
            }
            CommandBody::Sort {
                sort_criteria,
                search_criteria,
                uid,
                ..
            } => {
                let mut facts = self.facts(search_criteria.as_ref(), uid, false)?.0;
                super::sort::sort(&mut facts, sort_criteria.as_ref());
                let numbers = facts.iter().map(|f| convert::nz(f.seq)).collect();
                self.server.enqueue_data(Data::Sort(numbers, None));
                self.ok(
                    tag,
                    if uid {
                        "UID SORT completed"
                    } else {
                        "SORT completed"
                    },
                );
            }
            CommandBody::Thread {
                algorithm,
                search_criteria,
                uid,
                ..
            } => {
                use imap_next::imap_types::extensions::thread::ThreadingAlgorithm;
                let threads = match algorithm {
                    ThreadingAlgorithm::OrderedSubject => super::thread::ordered_subject(
                        &self.facts(search_criteria.as_ref(), uid, false)?.0,
                    ),
                    ThreadingAlgorithm::References => {
                        let (facts, references) =
                            self.facts(search_criteria.as_ref(), uid, true)?;
                        super::thread::references(&facts, &references)
                    }
                    ThreadingAlgorithm::Other(_) => {
                        self.done(status_bad(Some(tag), "Unknown threading algorithm"));
                        return Ok(());
                    }
                };
                self.server.enqueue_data(Data::Thread(threads));
                self.ok(
                    tag,
                    if uid {
                        "UID THREAD completed"
                    } else {
                        "THREAD completed"
                    },
                );
            }
            other => {
                self.done(status_bad(
                    Some(tag),
                    &format!("{} is not supported", other.name()),
                ));
            }
        }
        Ok(())
    }

    /// A CONDSTORE enabling command (RFC 7162 §3.1): from now on every FETCH of flags
    /// carries the message's MODSEQ, and the first such command while a folder is
    /// selected tells the folder's HIGHESTMODSEQ before its tagged OK.
    pub(super) fn enable_condstore(&mut self) {
        if std::mem::replace(&mut self.condstore, true) {
            return;
        }
        if let Some(m) = self
            .selected
            .as_ref()
            .and_then(|s| std::num::NonZeroU64::new(s.modseq))
        {
            self.server
                .enqueue_status(status_ok(None, Some(Code::HighestModSeq(m)), "Highest"));
        }
    }

    pub(super) fn selected(&self) -> &Selected {
        self.selected
            .as_ref()
            .unwrap_or_else(|| unreachable!("checked before selected-state commands"))
    }

    pub(super) fn expunge(
        &mut self,
        tag: Tag<'static>,
        uids: Option<&SequenceSet>,
    ) -> Result<(), MailboxError> {
        if self.selected().read_only {
            self.no(tag, "The folder is read-only");
            return Ok(());
        }
        let folder = self.selected().folder.clone();
        let only: Option<Vec<u32>> = uids.map(|set| {
            let s = self.selected();
            s.resolve(set, true)
                .into_iter()
                .map(|i| s.view[i].uid)
                .collect()
        });
        self.user().mailbox.expunge(&folder, only.as_deref())?;
        self.send_updates(true);
        self.ok(tag, "EXPUNGE completed");
        Ok(())
    }

    pub(super) fn fetch(
        &mut self,
        tag: Tag<'static>,
        set: &SequenceSet,
        names: Vec<MessageDataItemName<'static>>,
        uid: bool,
        changed_since: Option<u64>,
    ) -> Result<(), MailboxError> {
        let mut targets = self.selected().resolve(set, uid);
        if let Some(since) = changed_since {
            let view = &self.selected().view;
            targets.retain(|&i| view[i].modseq > since);
        }
        let mut names = names;
        if self.condstore
            && !names
                .iter()
                .any(|n| matches!(n, MessageDataItemName::ModSeq))
            && (changed_since.is_some()
                || names
                    .iter()
                    .any(|n| matches!(n, MessageDataItemName::Flags)))
        {
            names.push(MessageDataItemName::ModSeq);
        }
        // Reading a body marks it \Seen (not in EXAMINE, not with .PEEK).
        if fetch::sets_seen(&names) && !self.selected().read_only {
            let folder = self.selected().folder.clone();
            let unseen: Vec<u32> = targets
                .iter()
                .map(|&i| &self.selected().view[i])
                .filter(|m| !m.has("\\Seen"))
                .map(|m| m.uid)
                .collect();
            if !unseen.is_empty() {
                let stored = self.user().mailbox.set_flags(
                    &folder,
                    &unseen,
                    FlagChange::Add,
                    &["\\Seen".into()],
                    None,
                )?;
                let selected = self.selected.as_mut().unwrap_or_else(|| unreachable!());
                for fresh in stored.now {
                    if let Some(pos) = selected.position(fresh.uid) {
                        selected.view[pos] = fresh;
                    }
                }
                if !names
                    .iter()
                    .any(|n| matches!(n, MessageDataItemName::Flags))
                {
                    names.push(MessageDataItemName::Flags);
                }
            }
        }
        let (need_body, need_meta) = fetch::needs(&names);
        let envelope_only = !need_body
            && !names.iter().any(|n| {
                matches!(
                    n,
                    MessageDataItemName::BodyStructure | MessageDataItemName::Body
                )
            });
        let fast = fetch_lines::simple(&names);
        let mut vanished = false;
        let mut failed = None;
        let chunks = targets.len().div_ceil(FETCH_CHUNK);
        for (n, chunk) in targets.chunks(FETCH_CHUNK).enumerate() {
            let (bodies, metas) = {
                let user = self.user.as_ref().unwrap_or_else(|| unreachable!());
                let selected = self.selected.as_ref().unwrap_or_else(|| unreachable!());
                let uids: Vec<u32> = chunk.iter().map(|&i| selected.view[i].uid).collect();
                load(
                    &user.mailbox,
                    &selected.folder,
                    &uids,
                    need_body,
                    need_meta,
                    envelope_only,
                )?
            };
            let mut last = None;
            // Metadata-only items are written straight to bytes, the chunk as one piece.
            let mut lines = fast.then(|| Vec::with_capacity(chunk.len() * 512));
            for &i in chunk {
                let selected = self.selected.as_ref().unwrap_or_else(|| unreachable!());
                let info = &selected.view[i];
                // Expunged by another session meanwhile: nothing to say about it.
                let body = bodies.get(&info.uid);
                let meta = metas.get(&info.uid);
                if (need_body && body.is_none())
                    || (need_meta != fetch::MetaNeed::None && meta.is_none())
                {
                    vanished = true;
                    continue;
                }
                let flags = selected.flags(info);
                if let Some(lines) = lines.as_mut() {
                    fetch_lines::write(lines, i as u32 + 1, info, &flags, &names, uid, meta);
                    continue;
                }
                let items =
                    match fetch::items(info, flags, &names, uid, body.map(Vec::as_slice), meta) {
                        Ok(items) => items,
                        Err(why) => {
                            failed = Some(why);
                            break;
                        }
                    };
                if let Ok(items) = Vec1::try_from(items) {
                    last = Some(self.server.enqueue_data(Data::Fetch {
                        seq: convert::nz(i as u32 + 1),
                        items,
                    }));
                }
            }
            if let Some(lines) = lines.filter(|l| !l.is_empty()) {
                last = Some(self.raw(lines));
            }
            if let Some(handle) = last.filter(|_| n + 1 < chunks) {
                // Write out this chunk before building the next (bounded memory); a
                // client that went away gets no more (the session loop then ends). The
                // last goes out with the tagged completion, in one write.
                if !crate::blocking::wait(self.send_through(handle)) {
                    return Ok(());
                }
            }
            if failed.is_some() {
                break;
            }
        }
        if let Some(why) = failed {
            self.no(tag, why.text());
        } else if vanished && !uid {
            // RFC 2180 §4.1.2: what still exists was sent; the rest is gone.
            self.no(tag, "[EXPUNGEISSUED] Some of the messages no longer exist");
        } else {
            self.ok(
                tag,
                if uid {
                    "UID FETCH completed"
                } else {
                    "FETCH completed"
                },
            );
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn store(
        &mut self,
        tag: Tag<'static>,
        set: &SequenceSet,
        kind: StoreType,
        response: StoreResponse,
        flags: &[Flag<'static>],
        uid: bool,
        unchanged_since: Option<u64>,
    ) -> Result<(), MailboxError> {
        if self.selected().read_only {
            self.no(tag, "The folder is read-only");
            return Ok(());
        }
        let folder = self.selected().folder.clone();
        let targets: Vec<u32> = {
            let s = self.selected();
            s.resolve(set, uid)
                .into_iter()
                .map(|i| s.view[i].uid)
                .collect()
        };
        let change = match kind {
            StoreType::Add => FlagChange::Add,
            StoreType::Remove => FlagChange::Remove,
            StoreType::Replace => FlagChange::Replace,
        };
        let names = convert::storable_flags(flags);
        let stored =
            self.user()
                .mailbox
                .set_flags(&folder, &targets, change, &names, unchanged_since)?;
        if unchanged_since.is_some() {
            self.enable_condstore();
        }
        let condstore = self.condstore;
        let selected = self.selected.as_mut().unwrap_or_else(|| unreachable!());
        let silent = response == StoreResponse::Silent;
        let changed: std::collections::HashSet<u32> = stored.changed.iter().copied().collect();
        // The view takes the state told here, so the catch-up after the command does not
        // tell it again. After .SILENT the client knows only its own change: where
        // another session changed the message too, the view keeps what the client
        // knows, and the catch-up tells it the rest.
        for fresh in &stored.now {
            if let Some(pos) = selected.position(fresh.uid) {
                let known = &selected.view[pos];
                let expected = crate::mailbox::flags_after(&known.flags, change, &names);
                if !silent || crate::mailbox::same_flags(&fresh.flags, &expected) {
                    selected.view[pos] = fresh.clone();
                }
            }
        }
        // A keyword new to the folder is announced before the FETCHes that carry it.
        if selected.note_keywords(&stored.now) {
            let (flags, permanent) = selected.flag_responses();
            self.server.enqueue_data(flags);
            self.server.enqueue_status(permanent);
        }
        let stored_count = stored.now.len();
        for fresh in stored.now {
            let Some(pos) = selected.position(fresh.uid) else {
                continue;
            };
            // Every message named is told with its flags as they are now, changed here
            // or not (RFC 3501 §6.4.6); .SILENT says nothing, except the new MODSEQ of
            // those changed under CONDSTORE (RFC 7162 §3.2).
            let was_changed = changed.contains(&fresh.uid);
            let mut items = Vec::new();
            if !silent {
                items.push(MessageDataItem::Flags(selected.flags(&fresh)));
            }
            if !silent || (condstore && was_changed) {
                if uid || condstore {
                    items.push(MessageDataItem::Uid(convert::nz(fresh.uid)));
                }
                if condstore && let Some(m) = std::num::NonZeroU64::new(fresh.modseq) {
                    items.push(MessageDataItem::ModSeq(m));
                }
            }
            if let Ok(items) = Vec1::try_from(items) {
                self.server.enqueue_data(Data::Fetch {
                    seq: convert::nz(pos as u32 + 1),
                    items,
                });
            }
        }
        let refused = stored.refused;
        // Named by number but expunged by another session (not yet told): RFC 2180
        // §4.2.1, the others are changed and the command says NO.
        let vanished = !uid && stored_count + refused.len() < targets.len();
        let code = if refused.is_empty() {
            None
        } else {
            let numbers: Vec<String> = refused
                .iter()
                .filter_map(|u| {
                    if uid {
                        Some(u.to_string())
                    } else {
                        selected.position(*u).map(|p| (p + 1).to_string())
                    }
                })
                .collect();
            SequenceSet::try_from(numbers.join(",").as_str())
                .ok()
                .map(Code::Modified)
        };
        if vanished {
            self.no(tag, "[EXPUNGEISSUED] Some of the messages no longer exist");
        } else {
            self.done(status_ok(
                Some(tag),
                code,
                if uid {
                    "UID STORE completed"
                } else {
                    "STORE completed"
                },
            ));
        }
        Ok(())
    }

    pub(super) fn copy(
        &mut self,
        tag: Tag<'static>,
        set: &SequenceSet,
        mailbox: &WireMailbox<'_>,
        uid: bool,
        moving: bool,
    ) -> Result<(), MailboxError> {
        let to = match self.folder_named(mailbox) {
            Ok(f) => f,
            Err(MailboxError::NoFolder(_)) => {
                self.no(tag, "[TRYCREATE] No such folder");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if moving && self.selected().read_only {
            self.no(tag, "The folder is read-only");
            return Ok(());
        }
        let from = self.selected().folder.clone();
        let uids: Vec<u32> = {
            let s = self.selected();
            s.resolve(set, uid)
                .into_iter()
                .map(|i| s.view[i].uid)
                .collect()
        };
        let pairs = if moving {
            self.user().mailbox.move_messages(&from, &uids, &to)?
        } else {
            let quota = self.quota_of_user();
            self.user().mailbox.copy(&from, &uids, &to, quota)?
        };
        let source: Vec<u32> = pairs.iter().map(|p| p.0).collect();
        let dest: Vec<u32> = pairs.iter().map(|p| p.1).collect();
        if let Some(learner) = self.ctx.learner.clone()
            && let Some(spam) = crate::spam::direction(from.role(), to.role())
            && !dest.is_empty()
        {
            learner.learn(crate::spam::Lesson {
                account: self.user().mailbox.account().to_string(),
                folder: to.name.clone(),
                uids: dest.clone(),
                spam,
            });
        }
        let code = match (uid_set(&source), uid_set(&dest)) {
            (Some(source), Some(destination)) => Some(Code::CopyUid {
                uid_validity: convert::nz(to.uidvalidity),
                source,
                destination,
            }),
            _ => None,
        };
        if moving {
            // RFC 6851: COPYUID comes untagged, before the EXPUNGEs.
            if let Some(code) = code {
                self.server
                    .enqueue_status(status_ok(None, Some(code), "Moved"));
            }
            self.send_updates(true);
            self.ok(
                tag,
                if uid {
                    "UID MOVE completed"
                } else {
                    "MOVE completed"
                },
            );
        } else {
            self.done(status_ok(
                Some(tag),
                code,
                if uid {
                    "UID COPY completed"
                } else {
                    "COPY completed"
                },
            ));
        }
        Ok(())
    }

    /// What SORT and THREAD need of the messages `criteria` finds (numbered by UID for
    /// the UID forms: the orders agree), with each one's References header when
    /// `with_references` (THREAD=REFERENCES).
    fn facts(
        &mut self,
        criteria: &[imap_next::imap_types::search::SearchKey<'static>],
        uid: bool,
        with_references: bool,
    ) -> Result<(Vec<super::sort::Facts>, Vec<Option<String>>), MailboxError> {
        let found = self.matching(criteria);
        let user = self.user.as_ref().unwrap_or_else(|| unreachable!());
        let selected = self.selected.as_ref().unwrap_or_else(|| unreachable!());
        let mut facts = Vec::with_capacity(found.len());
        let mut references = Vec::with_capacity(found.len());
        for chunk in found.chunks(FETCH_CHUNK) {
            let uids: Vec<u32> = chunk.iter().map(|&i| selected.view[i].uid).collect();
            let (_, metas) = load(
                &user.mailbox,
                &selected.folder,
                &uids,
                false,
                fetch::MetaNeed::All,
                true,
            )?;
            for &i in chunk {
                let info = &selected.view[i];
                let meta = metas.get(&info.uid).cloned().unwrap_or_default();
                let number = if uid { info.uid } else { i as u32 + 1 };
                references.push(if !with_references {
                    None
                } else if meta.version >= 2 {
                    meta.references.clone()
                } else {
                    // Cached before References was kept: read from the message.
                    user.mailbox
                        .body(&selected.folder, info.uid)?
                        .and_then(|body| {
                            let parsed = mail_parser::MessageParser::new().parse_headers(&body)?;
                            parsed
                                .header_raw("References")
                                .map(|v| v.replace(['\r', '\n'], " "))
                        })
                });
                facts.push(super::sort::Facts::new(number, info, &meta));
            }
        }
        Ok((facts, references))
    }

    /// The view's indexes of the messages that match every one of `criteria`.
    fn matching(
        &self,
        criteria: &[imap_next::imap_types::search::SearchKey<'static>],
    ) -> Vec<usize> {
        let user = self.user.as_ref().unwrap_or_else(|| unreachable!());
        let selected = self.selected.as_ref().unwrap_or_else(|| unreachable!());
        let (largest_seq, largest_uid) = (selected.view.len() as u32, selected.largest_uid());
        let recent = criteria.iter().any(search::uses_recent);
        let sets = search::Sets::of(criteria, largest_seq, largest_uid);
        (0..selected.view.len())
            .filter(|&i| {
                let info = &selected.view[i];
                let candidate = search::Candidate::new(
                    &user.mailbox,
                    &selected.folder,
                    i as u32 + 1,
                    info,
                    recent && selected.is_recent(info.uid),
                    &sets,
                );
                criteria.iter().all(|k| search::matches(k, &candidate))
            })
            .collect()
    }

    /// Keeps a SEARCH result for `$` (RFC 5182 §2.4): all of it, or only its least and
    /// greatest message when MIN or MAX (and not ALL or COUNT) were asked for.
    fn save_result(&mut self, found: &[std::num::NonZeroU32], uid: bool, options: &SearchReturn) {
        let Some(selected) = self.selected.as_mut() else {
            return;
        };
        let mut numbers: Vec<u32> = found.iter().map(|n| n.get()).collect();
        if (options.min || options.max) && !options.all && !options.count {
            let (min, max) = (numbers.iter().min().copied(), numbers.iter().max().copied());
            numbers = [min.filter(|_| options.min), max.filter(|_| options.max)]
                .into_iter()
                .flatten()
                .collect();
        }
        let mut uids: Vec<u32> = if uid {
            numbers
        } else {
            numbers
                .iter()
                .filter_map(|&n| selected.view.get(n as usize - 1).map(|m| m.uid))
                .collect()
        };
        uids.sort_unstable();
        uids.dedup();
        selected.saved = uids;
    }

    pub(super) fn search(
        &mut self,
        tag: Tag<'static>,
        criteria: &[imap_next::imap_types::search::SearchKey<'static>],
        uid: bool,
    ) -> Result<(), MailboxError> {
        let uses_modseq = criteria.iter().any(search::uses_modseq);
        if uses_modseq {
            self.enable_condstore();
        }
        let matched = self.matching(criteria);
        let extras = self.extras.take();
        let view = &self.selected().view;
        let found: Vec<_> = matched
            .iter()
            .map(|&i| convert::nz(if uid { view[i].uid } else { i as u32 + 1 }))
            .collect();
        // With MODSEQ in the criteria, the answer ends with the highest MODSEQ of the
        // messages it names (RFC 7162 §3.1.5): all that matched, or with ESEARCH's MIN
        // or MAX alone, just those (RFC 4731 §3.2).
        let ends: Vec<usize>;
        let named: &[usize] = match &extras {
            Some(Extras::Search(o)) if !o.all && !o.count => {
                ends = [
                    o.min.then(|| matched.first()),
                    o.max.then(|| matched.last()),
                ]
                .into_iter()
                .flatten()
                .flatten()
                .copied()
                .collect();
                &ends
            }
            _ => &matched,
        };
        let modseq = if uses_modseq {
            named
                .iter()
                .map(|&i| view[i].modseq)
                .max()
                .and_then(std::num::NonZeroU64::new)
        } else {
            None
        };
        match extras {
            Some(Extras::Search(options)) => {
                if options.save {
                    self.save_result(&found, uid, &options);
                }
                // SAVE alone answers nothing but the tagged OK (RFC 5182 §2.4).
                if options.min || options.max || options.all || options.count {
                    let line = esearch(&tag, uid, &options, &found, modseq);
                    self.raw(line);
                }
            }
            // IMAP4rev2 answers every SEARCH with ESEARCH (RFC 9051 §6.4.4).
            _ if self.rev2 => {
                let all = SearchReturn {
                    all: true,
                    ..Default::default()
                };
                let line = esearch(&tag, uid, &all, &found, modseq);
                self.raw(line);
            }
            _ => {
                self.raw(search_line(&found, modseq));
            }
        }
        self.ok(
            tag,
            if uid {
                "UID SEARCH completed"
            } else {
                "SEARCH completed"
            },
        );
        Ok(())
    }
}

/// `* SEARCH` with the numbers found (and the highest MODSEQ, RFC 7162 §3.1.5), written
/// straight to bytes: a folder's worth of numbers through the codec's formatter cost
/// more than the search itself.
fn search_line(found: &[std::num::NonZeroU32], modseq: Option<std::num::NonZeroU64>) -> Vec<u8> {
    let mut line = Vec::with_capacity(10 + found.len() * 7);
    let mut digits = itoa::Buffer::new();
    line.extend_from_slice(b"* SEARCH");
    for n in found {
        line.push(b' ');
        line.extend_from_slice(digits.format(n.get()).as_bytes());
    }
    if let Some(m) = modseq {
        line.extend_from_slice(b" (MODSEQ ");
        line.extend_from_slice(digits.format(m.get()).as_bytes());
        line.push(b')');
    }
    line.extend_from_slice(b"\r\n");
    line
}

/// RFC 4731's answer to SEARCH RETURN: only what was asked of the matches (ascending).
fn esearch(
    tag: &Tag<'_>,
    uid: bool,
    options: &SearchReturn,
    found: &[std::num::NonZeroU32],
    modseq: Option<std::num::NonZeroU64>,
) -> Vec<u8> {
    use std::fmt::Write;
    let mut line = format!("* ESEARCH (TAG \"{}\")", tag.as_ref());
    if uid {
        line.push_str(" UID");
    }
    let numbers: Vec<u32> = found.iter().map(|n| n.get()).collect();
    // RFC 4731 §3.1: no MIN, MAX or ALL when nothing matched; COUNT is still said.
    if let (Some(min), Some(max)) = (numbers.iter().min(), numbers.iter().max()) {
        if options.min {
            let _ = write!(line, " MIN {min}");
        }
        if options.max {
            let _ = write!(line, " MAX {max}");
        }
        if options.all {
            let _ = write!(line, " ALL {}", super::selected::set_text(&numbers));
        }
    }
    if options.count {
        let _ = write!(line, " COUNT {}", numbers.len());
    }
    // RFC 7162 §3.1.5: the highest MODSEQ of the matches, when the search used MODSEQ.
    if let Some(modseq) = modseq.filter(|_| !numbers.is_empty()) {
        let _ = write!(line, " MODSEQ {modseq}");
    }
    line.push_str("\r\n");
    line.into_bytes()
}

/// The bytes and metadata a FETCH needs of `uids` (ascending): one range query when the
/// UIDs are close together, one query each when they are scattered.
type Loaded = (
    std::collections::HashMap<u32, Vec<u8>>,
    std::collections::HashMap<u32, crate::mailbox::meta::Meta>,
);

fn load(
    mailbox: &Mailbox,
    folder: &Folder,
    uids: &[u32],
    need_body: bool,
    need_meta: fetch::MetaNeed,
    envelope_only: bool,
) -> Result<Loaded, MailboxError> {
    let (mut bodies, mut metas) = (
        std::collections::HashMap::new(),
        std::collections::HashMap::new(),
    );
    let (Some(&first), Some(&last)) = (uids.first(), uids.last()) else {
        return Ok((bodies, metas));
    };
    let wanted: std::collections::HashSet<u32> = uids.iter().copied().collect();
    let dense = (last - first) as usize <= uids.len() * 4;
    if need_body {
        let mut found = Vec::new();
        if dense {
            found = mailbox.bodies_between(folder, first, last)?;
            found.retain(|(u, _)| wanted.contains(u));
        } else {
            for &u in uids {
                found.extend(mailbox.bodies_between(folder, u, u)?);
            }
        }
        for (uid, body) in found {
            // The top message's header and text are cut at the length kept beside the
            // body; a message stored before it was kept has its metadata read below.
            if need_meta == fetch::MetaNeed::TopHeader
                && let Some(len) = body.header_len
            {
                metas.insert(
                    uid,
                    crate::mailbox::meta::Meta::top_only(len, body.bytes.len()),
                );
            }
            bodies.insert(uid, body.bytes);
        }
    }
    let still: Vec<u32> = match need_meta {
        fetch::MetaNeed::None => Vec::new(),
        fetch::MetaNeed::TopHeader => uids
            .iter()
            .copied()
            .filter(|u| bodies.contains_key(u) && !metas.contains_key(u))
            .collect(),
        fetch::MetaNeed::All => uids.to_vec(),
    };
    if let (Some(&first), Some(&last)) = (still.first(), still.last()) {
        if (last - first) as usize <= still.len() * 4 {
            let wanted: std::collections::HashSet<u32> = still.iter().copied().collect();
            metas.extend(
                mailbox
                    .metas_between(folder, first, last, envelope_only)?
                    .into_iter()
                    .filter(|(u, _)| wanted.contains(u)),
            );
        } else {
            for &u in &still {
                if let Some(m) = mailbox.meta(folder, u)? {
                    metas.insert(u, m);
                }
            }
        }
    }
    Ok((bodies, metas))
}

/// The charsets SEARCH, SORT and THREAD take (everything is compared as UTF-8).
fn known_charset(charset: &imap_next::imap_types::core::Charset<'_>) -> bool {
    use imap_next::imap_types::core::Charset;
    let name = match charset {
        Charset::Atom(a) => a.as_ref().to_string(),
        Charset::Quoted(q) => q.as_ref().to_string(),
    };
    name.eq_ignore_ascii_case("UTF-8") || name.eq_ignore_ascii_case("US-ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;
    use imap_codec::ResponseCodec;
    use imap_codec::encode::Encoder;
    use imap_next::imap_types::response::Response;

    #[test]
    fn search_lines_equal_imap_codecs_encoding() {
        let nz = |n: u32| std::num::NonZeroU32::new(n).unwrap();
        let cases = [
            (vec![], None),
            (vec![nz(1)], None),
            (vec![nz(2), nz(10), nz(99_999), nz(u32::MAX)], None),
            (vec![nz(7), nz(8)], std::num::NonZeroU64::new(u64::MAX)),
        ];
        for (found, modseq) in cases {
            let codec = ResponseCodec::default()
                .encode(&Response::Data(Data::Search(found.clone(), modseq)))
                .dump();
            assert_eq!(
                String::from_utf8(search_line(&found, modseq)).unwrap(),
                String::from_utf8(codec).unwrap()
            );
        }
    }
}
