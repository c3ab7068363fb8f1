//! IMAP commands on folders (authenticated state): SELECT/EXAMINE, CREATE, DELETE, RENAME,
//! (UN)SUBSCRIBE, LIST/LSUB, STATUS, APPEND, NAMESPACE, ENABLE and the QUOTA commands.

use std::borrow::Cow;

use imap_codec::ResponseCodec;
use imap_codec::encode::Encoder;
use imap_next::imap_types::command::{CommandBody, SelectParameter};
use imap_next::imap_types::core::{AString, Atom, IString, QuotedChar, Tag, Vec1};
use imap_next::imap_types::extensions::enable::CapabilityEnable;
use imap_next::imap_types::extensions::namespace::Namespace;
use imap_next::imap_types::extensions::quota::{QuotaGet, Resource};
use imap_next::imap_types::extensions::utf8::Utf8Kind;
use imap_next::imap_types::flag::FlagNameAttribute;
use imap_next::imap_types::mailbox::{ListMailbox, Mailbox as WireMailbox};
use imap_next::imap_types::response::{Code, Data, Response};
use imap_next::imap_types::status::{StatusDataItem, StatusDataItemName};
use tokio::io::{AsyncRead, AsyncWrite};

use super::convert;
use super::extended::{Extras, ListOptions};
use super::selected::Selected;
use crate::mailbox::{Folder, MailboxError};

use super::session::*;

/// The special uses a folder may be created with (RFC 6154 §2), upper-cased as the
/// extended command parser gives its words.
const SPECIAL_USES: [&str; 7] = [
    "\\ALL",
    "\\ARCHIVE",
    "\\DRAFTS",
    "\\FLAGGED",
    "\\JUNK",
    "\\SENT",
    "\\TRASH",
];

/// `\\ARCHIVE` as folders keep it: `\\Archive`.
fn special_use_name(upper: &str) -> String {
    let word = upper.trim_start_matches('\\');
    let mut name = String::from("\\");
    name.extend(word.chars().take(1));
    name.push_str(&word[1..].to_lowercase());
    name
}

/// The most patterns one extended LIST may hold.
const LIST_PATTERNS: usize = 64;

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// Commands of the authenticated and selected states (blocking: the mailbox is SQLite).
    pub(super) fn authenticated(
        &mut self,
        tag: Tag<'static>,
        body: CommandBody<'static>,
    ) -> Result<(), MailboxError> {
        match body {
            CommandBody::Select {
                mailbox,
                parameters,
            } => {
                self.select(tag, &mailbox, false, &parameters)?;
            }
            CommandBody::Examine {
                mailbox,
                parameters,
            } => {
                self.select(tag, &mailbox, true, &parameters)?;
            }
            CommandBody::Create { mailbox } => {
                let name = wire_name(&mailbox, self.utf8)
                    .ok_or(MailboxError::Refused("Invalid folder name"))?;
                let name = name.trim_end_matches('/').to_string();
                let special_use = match self.extras.take() {
                    Some(Extras::CreateUse(uses)) => match uses.as_slice() {
                        [] => None,
                        [one] if SPECIAL_USES.contains(&one.as_str()) => {
                            Some(special_use_name(one))
                        }
                        // One use per folder here; an unknown one is refused.
                        _ => {
                            self.no(tag, "[USEATTR] Unsupported special-use attribute");
                            return Ok(());
                        }
                    },
                    _ => None,
                };
                self.user()
                    .mailbox
                    .create_folder(&name, special_use.as_deref())?;
                self.ok(tag, "CREATE completed");
            }
            CommandBody::Delete { mailbox } => {
                let folder = self.folder_named(&mailbox)?;
                if self
                    .selected
                    .as_ref()
                    .is_some_and(|s| s.folder.id == folder.id)
                {
                    self.selected = None;
                }
                self.user().mailbox.delete_folder(&folder.name)?;
                self.ok(tag, "DELETE completed");
            }
            CommandBody::Rename { from, to } => {
                let from = self.folder_named(&from)?;
                let to = wire_name(&to, self.utf8)
                    .ok_or(MailboxError::Refused("Invalid folder name"))?;
                self.user().mailbox.rename_folder(&from.name, &to)?;
                self.ok(tag, "RENAME completed");
            }
            CommandBody::Subscribe { mailbox } => {
                let folder = self.folder_named(&mailbox)?;
                self.user().mailbox.subscribe(&folder.name, true)?;
                self.ok(tag, "SUBSCRIBE completed");
            }
            CommandBody::Unsubscribe { mailbox } => {
                let name = wire_name(&mailbox, self.utf8)
                    .ok_or(MailboxError::Refused("Invalid folder name"))?;
                self.user().mailbox.subscribe(&name, false)?;
                self.ok(tag, "UNSUBSCRIBE completed");
            }
            CommandBody::List {
                reference,
                mailbox_wildcard,
            } => {
                let extras = match self.extras.take() {
                    Some(Extras::List(options)) => Some(options),
                    _ => None,
                };
                self.list(&reference, &mailbox_wildcard, false, extras.as_ref())?;
                self.ok(tag, "LIST completed");
            }
            CommandBody::Lsub {
                reference,
                mailbox_wildcard,
            } => {
                self.list(&reference, &mailbox_wildcard, true, None)?;
                self.ok(tag, "LSUB completed");
            }
            CommandBody::Status {
                mailbox,
                item_names,
            } => {
                let folder = self.folder_named(&mailbox)?;
                self.status(&folder, &mailbox, &item_names)?;
                self.ok(tag, "STATUS completed");
            }
            CommandBody::Append {
                mailbox,
                flags,
                date,
                message,
            } => {
                let folder = match self.folder_named(&mailbox) {
                    Ok(f) => f,
                    Err(MailboxError::NoFolder(_)) => {
                        self.no(tag, "[TRYCREATE] No such folder");
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                };
                let bytes: Vec<u8> = match &message {
                    imap_next::imap_types::extensions::binary::LiteralOrLiteral8::Literal(l) => {
                        l.data().to_vec()
                    }
                    imap_next::imap_types::extensions::binary::LiteralOrLiteral8::Literal8(l) => {
                        l.data.to_vec()
                    }
                };
                let flags = convert::storable_flags(&flags);
                let when = date
                    .map(|d| d.as_ref().timestamp())
                    .unwrap_or_else(crate::clock::unix_now);
                let quota = self.quota_of_user();
                let (validity, uid) = self
                    .user()
                    .mailbox
                    .append(&folder, &bytes, &flags, when, quota)?;
                self.done(status_ok(
                    Some(tag),
                    Some(Code::AppendUid {
                        uid_validity: convert::nz(validity),
                        uid: convert::nz(uid),
                    }),
                    "APPEND completed",
                ));
            }
            CommandBody::Namespace => {
                let personal = IString::try_from("")
                    .ok()
                    .map(|prefix| Namespace::new(prefix, QuotedChar::try_from('/').ok()));
                self.server.enqueue_data(Data::Namespace {
                    personal: personal.into_iter().collect(),
                    other: Vec::new(),
                    shared: Vec::new(),
                });
                self.ok(tag, "NAMESPACE completed");
            }
            CommandBody::Enable { capabilities } => {
                let mut enabled = Vec::new();
                for c in capabilities.as_ref() {
                    if matches!(c, CapabilityEnable::CondStore) {
                        self.enable_condstore();
                        enabled.push(c.clone());
                    } else if matches!(c, CapabilityEnable::Utf8(Utf8Kind::Accept)) {
                        self.utf8 = true;
                        enabled.push(c.clone());
                    } else if c.to_string().eq_ignore_ascii_case("IMAP4REV2") {
                        // RFC 9051: UTF-8 names, ESEARCH answers, no \Recent.
                        self.rev2 = true;
                        self.utf8 = true;
                        enabled.push(c.clone());
                    } else if c.to_string().eq_ignore_ascii_case("QRESYNC") {
                        // QRESYNC implies CONDSTORE (RFC 7162 §3.2.3).
                        self.enable_condstore();
                        self.qresync = true;
                        enabled.push(c.clone());
                    }
                }
                self.server.enqueue_data(Data::Enabled {
                    capabilities: enabled,
                });
                self.ok(tag, "ENABLE completed");
            }
            CommandBody::GetQuotaRoot { mailbox } => {
                self.folder_named(&mailbox)?;
                let root = AString::try_from("").unwrap_or_else(|_| unreachable!());
                self.server.enqueue_data(Data::QuotaRoot {
                    mailbox: mailbox.clone(),
                    roots: vec![root],
                });
                self.quota_data()?;
                self.ok(tag, "GETQUOTAROOT completed");
            }
            CommandBody::GetQuota { root } => {
                if !root.as_ref().is_empty() {
                    self.no(tag, "No such quota root");
                    return Ok(());
                }
                self.quota_data()?;
                self.ok(tag, "GETQUOTA completed");
            }
            CommandBody::SetQuota { .. } => {
                self.no(tag, "Quotas are set in the spec");
            }
            other if self.selected.is_none() => {
                let _ = other;
                self.done(status_bad(Some(tag), "No folder selected"));
            }
            other => self.selected_command(tag, other)?,
        }
        Ok(())
    }

    pub(super) fn quota_of_user(&mut self) -> Option<u64> {
        let account = self.user().account.clone();
        self.ctx
            .snapshot
            .get()
            .accounts
            .get(&account)
            .and_then(|a| a.quota)
    }

    pub(super) fn quota_data(&mut self) -> Result<(), MailboxError> {
        let used = self.user().mailbox.quota_used()?;
        let Some(limit) = self.quota_of_user() else {
            return Ok(());
        };
        let root = AString::try_from("").unwrap_or_else(|_| unreachable!());
        self.server.enqueue_data(Data::Quota {
            root,
            quotas: Vec1::from(QuotaGet::new(
                Resource::Storage,
                used.div_ceil(1024),
                limit / 1024,
            )),
        });
        Ok(())
    }

    /// LIST and LSUB (RFC 3501 §6.3.8–9), and LIST's extended forms (RFC 5258, 5819,
    /// 6154) when `options` holds what they added.
    pub(super) fn list(
        &mut self,
        reference: &WireMailbox<'_>,
        wildcard: &ListMailbox<'_>,
        lsub: bool,
        options: Option<&ListOptions>,
    ) -> Result<(), MailboxError> {
        let reference = match reference {
            WireMailbox::Inbox => "INBOX".to_string(),
            WireMailbox::Other(o) => decode_name(o.as_ref(), self.utf8).unwrap_or_default(),
        };
        let utf8 = self.utf8;
        // A pattern that is not a valid name matches no name.
        let decode = |wildcard: &ListMailbox<'_>| match wildcard {
            ListMailbox::Token(t) => decode_name(t.as_ref(), utf8),
            ListMailbox::String(s) => decode_name(s.as_ref(), utf8),
        };
        let mut patterns: Vec<String> = decode(wildcard).into_iter().collect();
        patterns.extend(
            options
                .iter()
                .flat_map(|o| o.more_patterns.iter().filter_map(decode)),
        );
        if patterns.is_empty() {
            return Ok(());
        }
        let delimiter = QuotedChar::try_from('/').ok();
        if patterns.len() == 1 && patterns[0].is_empty() {
            // The hierarchy delimiter and root (RFC 3501 §6.3.8).
            self.server.enqueue_data(Data::List {
                items: vec![FlagNameAttribute::Noselect],
                delimiter,
                mailbox: WireMailbox::try_from("").unwrap_or(WireMailbox::Inbox),
            });
            return Ok(());
        }
        let mut full = Vec::new();
        for pattern in &patterns {
            let chars: Vec<char> = format!("{reference}{pattern}").chars().collect();
            if chars.len() > 2 * crate::limits::FOLDER_NAME_CHARS {
                return Err(MailboxError::Refused("[LIMIT] pattern too long"));
            }
            full.push(chars);
        }
        if full.len() > LIST_PATTERNS {
            return Err(MailboxError::Refused("[LIMIT] too many patterns"));
        }
        let upper: Vec<Vec<char>> = full
            .iter()
            .map(|p| p.iter().map(|c| c.to_ascii_uppercase()).collect())
            .collect();
        let matches = |name: &str| {
            let name: Vec<char> = name.chars().collect();
            full.iter().any(|p| pattern_matches(p, &name))
                || (name == ['I', 'N', 'B', 'O', 'X']
                    && upper.iter().any(|p| pattern_matches(p, &name)))
        };
        // IMAP4rev2's LIST is RFC 5258's, options or not.
        let extended = options.is_some() || self.rev2;
        let plain = ListOptions::default();
        let options = options.unwrap_or(&plain);
        let by_subscription = lsub || options.subscribed;
        let chosen = |f: &Folder| {
            (!by_subscription || f.subscribed) && (!options.special_use || f.special_use.is_some())
        };
        let folders = self.user().mailbox.folders()?;
        // Every name that has a folder below it, found once (not per folder listed).
        let parents: std::collections::HashSet<&str> = folders
            .iter()
            .flat_map(|f| f.name.match_indices('/').map(|(i, _)| &f.name[..i]))
            .collect();
        let atom = |s: &str| {
            Atom::try_from(s.to_string())
                .ok()
                .map(FlagNameAttribute::from)
        };
        let attributes = |f: &Folder| {
            let mut items = Vec::new();
            let children = parents.contains(f.name.as_str());
            items.extend(atom(if children {
                "HasChildren"
            } else {
                "HasNoChildren"
            }));
            if let Some(role) = &f.special_use {
                items.extend(atom(role.trim_start_matches('\\')));
            }
            if options.return_subscribed && f.subscribed {
                items.extend(atom("Subscribed"));
            }
            items
        };
        // A name in the hierarchy with no folder of its own: \Noselect to RFC 3501's
        // LIST, \NonExistent (which implies it) to the extended forms (RFC 5258 §3).
        let missing = || {
            let mut items = Vec::new();
            if extended {
                items.extend(atom("NonExistent"));
            } else {
                items.push(FlagNameAttribute::Noselect);
            }
            items.extend(atom("HasChildren"));
            items
        };
        let by_name: std::collections::HashMap<&str, &Folder> =
            folders.iter().map(|f| (f.name.as_str(), f)).collect();
        // Name → (attributes, CHILDINFO), in name order.
        let mut found: std::collections::BTreeMap<String, (Vec<FlagNameAttribute<'static>>, bool)> =
            Default::default();
        // Names subscribed whose folder is gone are chosen by subscription too (RFC
        // 5258 §3.1: \NonExistent, and \Noselect to LSUB).
        let lost = if by_subscription && !options.special_use {
            self.user().mailbox.lost_subscriptions()?
        } else {
            Vec::new()
        };
        let lost_attributes = || {
            let mut items = Vec::new();
            if extended {
                items.extend(atom("NonExistent"));
                items.extend(atom("Subscribed"));
            } else {
                items.push(FlagNameAttribute::Noselect);
            }
            items
        };
        let candidates = folders
            .iter()
            .filter(|f| chosen(f))
            .map(|f| (f.name.as_str(), attributes(f)))
            .chain(
                lost.iter()
                    .filter(|name| !by_name.contains_key(name.as_str()))
                    .map(|name| (name.as_str(), lost_attributes())),
            );
        for (name, items) in candidates {
            let matched = matches(name);
            if matched {
                found.insert(name.to_string(), (items, false));
            }
            let ancestors = name.match_indices('/').map(|(i, _)| &name[..i]);
            if extended && (options.subscribed || options.special_use) {
                // RFC 5258 §3.5: with RECURSIVEMATCH, a matching parent of a chosen name
                // the pattern does not reach is listed, with CHILDINFO saying why.
                if !options.recursive || matched {
                    continue;
                }
                for above in ancestors {
                    if !matches(above) {
                        continue;
                    }
                    let entry = found.entry(above.to_string()).or_insert_with(|| {
                        match by_name.get(above) {
                            Some(f) => (attributes(f), false),
                            None => (missing(), false),
                        }
                    });
                    entry.1 = true;
                }
                continue;
            }
            // The levels above a listed name that are not folders (LIST), or not
            // subscribed (LSUB), show as \Noselect when the pattern stops there
            // (RFC 3501 §6.3.8, §6.3.9): a client walking the tree with % still finds
            // the way down.
            if lsub && matched {
                continue;
            }
            for above in ancestors {
                if found.contains_key(above) || !matches(above) {
                    continue;
                }
                let hidden = match by_name.get(above) {
                    None => true,
                    Some(f) => lsub && !f.subscribed,
                };
                if hidden {
                    found.insert(above.to_string(), (missing(), false));
                }
            }
        }
        let status = options.status.clone();
        for (name, (items, childinfo)) in found {
            let Some(mailbox) = to_wire(&name, self.utf8) else {
                continue;
            };
            let data = if lsub {
                Data::Lsub {
                    items,
                    delimiter,
                    mailbox: mailbox.clone(),
                }
            } else {
                Data::List {
                    items,
                    delimiter,
                    mailbox: mailbox.clone(),
                }
            };
            if childinfo {
                let mut line = ResponseCodec::default()
                    .encode(&Response::Data(data))
                    .dump();
                line.truncate(line.len().saturating_sub(2));
                let why: Vec<&str> = [
                    (options.subscribed, "\"SUBSCRIBED\""),
                    (options.special_use, "\"SPECIAL-USE\""),
                ]
                .into_iter()
                .filter_map(|(on, word)| on.then_some(word))
                .collect();
                line.extend_from_slice(
                    format!(" (\"CHILDINFO\" ({}))\r\n", why.join(" ")).as_bytes(),
                );
                self.raw(line);
            } else {
                self.server.enqueue_data(data);
            }
            // RFC 5819: the STATUS of each selectable folder listed, right after it.
            if let (Some(names), Some(folder)) = (&status, by_name.get(name.as_str())) {
                self.status(folder, &mailbox, names)?;
            }
        }
        Ok(())
    }

    pub(super) fn status(
        &mut self,
        folder: &Folder,
        wire: &WireMailbox<'static>,
        names: &[StatusDataItemName],
    ) -> Result<(), MailboxError> {
        if names.contains(&StatusDataItemName::HighestModSeq) {
            self.enable_condstore();
        }
        let messages = self.user().mailbox.messages(folder)?;
        let folder = self.user().mailbox.refresh(folder)?;
        let mut items = Vec::new();
        for name in names {
            items.push(match name {
                StatusDataItemName::Messages => StatusDataItem::Messages(messages.len() as u32),
                // Those no session has been told of yet.
                StatusDataItemName::Recent => StatusDataItem::Recent(
                    messages
                        .iter()
                        .filter(|m| m.uid >= folder.first_recent)
                        .count() as u32,
                ),
                StatusDataItemName::UidNext => StatusDataItem::UidNext(convert::nz(folder.uidnext)),
                StatusDataItemName::UidValidity => {
                    StatusDataItem::UidValidity(convert::nz(folder.uidvalidity))
                }
                StatusDataItemName::Unseen => StatusDataItem::Unseen(
                    messages.iter().filter(|m| !m.has("\\Seen")).count() as u32,
                ),
                StatusDataItemName::Deleted => StatusDataItem::Deleted(
                    messages.iter().filter(|m| m.has("\\Deleted")).count() as u32,
                ),
                StatusDataItemName::HighestModSeq => {
                    StatusDataItem::HighestModSeq(folder.highestmodseq)
                }
                // RFC 8438: the folder's size in octets, as RFC822.SIZE counts them.
                StatusDataItemName::Size => {
                    StatusDataItem::Size(messages.iter().map(|m| m.size).sum())
                }
                _ => continue,
            });
        }
        self.server.enqueue_data(Data::Status {
            mailbox: wire.clone(),
            items: Cow::Owned(items),
        });
        Ok(())
    }

    pub(super) fn select(
        &mut self,
        tag: Tag<'static>,
        mailbox: &WireMailbox<'_>,
        examine: bool,
        parameters: &[SelectParameter],
    ) -> Result<(), MailboxError> {
        let resync = parameters.iter().find_map(|p| match p {
            SelectParameter::QResync {
                uid_validity,
                mod_sequence_value,
                known_uids,
                ..
            } => Some((
                uid_validity.get(),
                mod_sequence_value.get(),
                known_uids.clone(),
            )),
            SelectParameter::CondStore => None,
        });
        // A command refused as BAD leaves the selected folder as it was.
        if resync.is_some() && !self.qresync {
            self.done(status_bad(Some(tag), "ENABLE QRESYNC first"));
            return Ok(());
        }
        // RFC 7162 §3.2.11: the responses before this belong to the folder now closed.
        if self.selected.take().is_some() {
            self.server.enqueue_status(status_ok(
                None,
                Some(Code::Closed),
                "Previous folder closed",
            ));
        }
        let folder = match self.folder_named(mailbox) {
            Ok(f) => f,
            Err(e) => {
                self.no(tag, &error_text(&e));
                return Ok(());
            }
        };
        if parameters
            .iter()
            .any(|p| matches!(p, SelectParameter::CondStore))
        {
            self.condstore = true;
        }
        // What happened before this point is in the view read now.
        self.user().changes.borrow_and_update();
        let view = self.user().mailbox.messages(&folder)?;
        let mut selected = Selected::new(folder, examine, view);
        // The messages no session has seen yet are this one's \Recent (IMAP4rev1 only:
        // rev2 has none, and no UNSEEN code either).
        if !self.rev2 {
            let recent = self.user().mailbox.recent_for(&selected.folder, examine)?;
            selected.claimed(recent);
        }
        let (flags, permanent) = selected.flag_responses();
        self.server.enqueue_data(flags);
        self.server
            .enqueue_data(Data::Exists(selected.view.len() as u32));
        if !self.rev2 {
            self.server
                .enqueue_data(Data::Recent(selected.recent_count()));
        }
        let untagged = |code: Code<'static>, msg: &str| status_ok(None, Some(code), msg);
        if let Some(first_unseen) = selected
            .view
            .iter()
            .position(|m| !m.has("\\Seen"))
            .filter(|_| !self.rev2)
        {
            self.server.enqueue_status(untagged(
                Code::Unseen(convert::nz(first_unseen as u32 + 1)),
                "First unseen",
            ));
        }
        let folder = &selected.folder;
        self.server.enqueue_status(untagged(
            Code::UidValidity(convert::nz(folder.uidvalidity)),
            "UIDs valid",
        ));
        self.server.enqueue_status(untagged(
            Code::UidNext(convert::nz(folder.uidnext)),
            "Predicted next UID",
        ));
        if let Some(m) = std::num::NonZeroU64::new(folder.highestmodseq) {
            self.server
                .enqueue_status(untagged(Code::HighestModSeq(m), "Highest"));
        }
        self.server.enqueue_status(permanent);
        // RFC 9051 §6.3.2: a rev2 client learns the folder's name and attributes here.
        if self.rev2 {
            let name = selected.folder.name.clone();
            let below = format!("{name}/");
            let children = self
                .user()
                .mailbox
                .folders()?
                .iter()
                .any(|f| f.name.starts_with(&below));
            let mut items: Vec<FlagNameAttribute<'static>> = Vec::new();
            let role = selected.folder.special_use.clone();
            for word in [
                Some(if children {
                    "HasChildren"
                } else {
                    "HasNoChildren"
                }),
                role.as_deref().map(|r| r.trim_start_matches('\\')),
            ]
            .into_iter()
            .flatten()
            {
                items.extend(
                    Atom::try_from(word.to_string())
                        .ok()
                        .map(FlagNameAttribute::from),
                );
            }
            if let Some(mailbox) = to_wire(&name, true) {
                self.server.enqueue_data(Data::List {
                    items,
                    delimiter: QuotedChar::try_from('/').ok(),
                    mailbox,
                });
            }
        }
        // QRESYNC (RFC 7162 §3.2.5): what the client missed since its MODSEQ, if its
        // UIDs are still valid.
        if let Some((validity, since, known)) = resync
            && validity == selected.folder.uidvalidity
        {
            let largest = selected.folder.uidnext.saturating_sub(1);
            let known = match &known {
                Some(set) => super::selected::ranges(set, largest),
                None => vec![(1, largest)],
            };
            self.resync(&selected, since, &known);
        }
        self.selected = Some(selected);
        let code = if examine {
            Code::ReadOnly
        } else {
            Code::ReadWrite
        };
        let done = if examine {
            "EXAMINE completed"
        } else {
            "SELECT completed"
        };
        self.done(status_ok(Some(tag), Some(code), done));
        Ok(())
    }
}
