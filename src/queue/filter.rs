//! Mailbox delivery through the account's Sieve scripts (src/sieve): what the scripts ask
//! becomes folders to file in and messages to queue, within per-account limits.

use std::time::Duration;

use super::local::expand;
use super::{DeliveryKind, Dsn, Envelope, NewDelivery};
use crate::cache::Cache;
use crate::mailbox::Mailbox;
use crate::routing::Target;
use crate::sieve::store::UserScripts;
use crate::sieve::{Outcome, REDIRECTED_FROM, Sieve, Surroundings};
use crate::snapshot::Snapshot;

/// Redirects one account's scripts may send a day (Forward Email's limit).
pub const REDIRECTS_PER_DAY: u32 = 100;
/// Vacation replies one account may send an hour.
pub const REPLIES_PER_HOUR: u32 = 10;

/// What a run needs from the account's mailbox and the server's memory.
pub(super) struct Around<'a> {
    pub mailboxes: &'a crate::mailbox::Mailboxes,
    pub mailbox: &'a Mailbox,
    pub cache: &'a dyn Cache,
    pub account: &'a str,
}

impl Surroundings for Around<'_> {
    fn folder_exists(&mut self, name: &str) -> bool {
        matches!(self.mailbox.folder(name), Ok(Some(_)))
    }

    fn special_use_exists(&mut self, special_use: &str) -> bool {
        self.mailbox.folders().is_ok_and(|folders| {
            folders.iter().any(|f| {
                f.role()
                    .is_some_and(|r| r.eq_ignore_ascii_case(special_use))
            })
        })
    }

    fn seen(&mut self, id: &str, period: Duration) -> bool {
        self.cache.recent(&seen_key(self.account, id), period) > 0
    }

    fn personal_script(&mut self, name: &str) -> Option<std::sync::Arc<Sieve>> {
        let text = UserScripts::get_in(self.mailboxes, self.mailbox, name).ok()??;
        crate::sieve::compile_cached(&text).ok()
    }
}

/// Where the cache remembers a Sieve id of an account. Ids hold the sender and the
/// reply's text: a digest keeps keys short.
fn seen_key(account: &str, id: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(id.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("sieve-seen:{account}:{hex}")
}

/// Records the ids a run saw first, once its message is delivered (filed and sent).
pub(super) fn remember(cache: &dyn Cache, account: &str, ids: &[(String, Duration)]) {
    for (id, period) in ids {
        cache.take(&seen_key(account, id), 1, 1, *period);
    }
}

/// A copy to file: the folder (None: where the delivery would have gone), its special
/// use, its flags, its bytes.
pub(super) struct Filing {
    pub folder: Option<String>,
    pub special_use: Option<String>,
    pub flags: Vec<String>,
    pub message: Vec<u8>,
}

/// What one delivery's scripts come to, ready to carry out.
#[derive(Default)]
pub(super) struct Carried {
    pub filings: Vec<Filing>,
    pub sends: Vec<(Envelope, Vec<u8>, Vec<NewDelivery>)>,
    /// Refused by the scripts, with the reason for the sender.
    pub reject: Option<String>,
    /// What happened, for the mail log ("filed in Lists; replied to a@b").
    pub notes: Vec<String>,
    /// Ids to record once all is done (`remember`), with their periods.
    pub remember: Vec<(String, Duration)>,
}

/// Whose message a script ran on, and what its sender asked of its journey.
pub(super) struct Sender<'a> {
    pub account: &'a str,
    pub mail_from: &'a str,
    /// REQUIRETLS (RFC 8689): carried on to redirects (not to replies, which are new mail).
    pub require_tls: bool,
}

/// Turns an outcome into filings and messages to queue, applying the limits.
pub(super) fn carry(
    outcome: Outcome,
    message: &[u8],
    sender: Sender<'_>,
    snapshot: &Snapshot,
    cache: &dyn Cache,
    hostname: &str,
) -> Carried {
    let Sender {
        account,
        mail_from,
        require_tls,
    } = sender;
    let mut carried = Carried::default();
    if let Some(reason) = &outcome.reject {
        // One line, bounded: it goes into the notice's text.
        let reason: String = reason
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(500)
            .collect();
        carried.notes.push(format!("rejected: {reason}"));
        carried.reject = Some(reason);
        return carried;
    }
    let looped = redirected_from(message, account);
    let mut redirect_refused = false;
    for out in &outcome.redirects {
        let why_not = if looped {
            Some("it was redirected here from this account before")
        } else if !cache.take(
            &format!("sieve-redirects:{account}"),
            1,
            REDIRECTS_PER_DAY,
            Duration::from_secs(86_400),
        ) {
            Some("the account's redirects for today are used up")
        } else {
            None
        };
        if let Some(why) = why_not {
            carried
                .notes
                .push(format!("not redirected to {}: {why}", out.to));
            redirect_refused = true;
            continue;
        }
        let mut bytes = format!("{REDIRECTED_FROM}: <{account}>\r\n").into_bytes();
        bytes.extend_from_slice(outcome.message(message, out.message));
        let deliveries = deliveries_to(snapshot, account, &out.to, Dsn::default());
        if deliveries.is_empty() {
            carried
                .notes
                .push(format!("not redirected to {:?}: not an address", out.to));
            redirect_refused = true;
            continue;
        }
        let mut envelope = envelope(mail_from, &out.to, hostname);
        envelope.require_tls = require_tls;
        carried.notes.push(format!("redirected to {}", out.to));
        carried.sends.push((envelope, bytes, deliveries));
    }
    // RFC 5230 §4.6: no replies to list or bulk mail (sieve-rs looks at List-* fields
    // and "bulk" only).
    let replies = if is_bulk(message) {
        &[][..]
    } else {
        &outcome.replies[..]
    };
    let mut sent_replies = Vec::new();
    for (n, out) in replies.iter().enumerate() {
        let reply = match tidy_reply(outcome.message(message, out.message)) {
            Ok(reply) => reply,
            Err(why) => {
                carried
                    .notes
                    .push(format!("no vacation reply to {}: {why}", out.to));
                continue;
            }
        };
        if let Some(from) = reply_from(&reply)
            && !is_own_address(snapshot, account, &from)
        {
            carried.notes.push(format!(
                "no vacation reply to {}: {from} is not an address of this mailbox",
                out.to
            ));
            continue;
        }
        if !cache.take(
            &format!("sieve-replies:{account}"),
            1,
            REPLIES_PER_HOUR,
            Duration::from_secs(3600),
        ) {
            carried.notes.push(format!(
                "no vacation reply to {}: the account's replies for this hour are used up",
                out.to
            ));
            continue;
        }
        // Notices about automatic replies are never wanted.
        let dsn = Dsn {
            rcpt: out.to.clone(),
            notify: smtp_proto::RCPT_NOTIFY_NEVER,
            orcpt: None,
        };
        let deliveries = deliveries_to(snapshot, account, &out.to, dsn);
        if deliveries.is_empty() {
            continue;
        }
        // RFC 5230 §5.1: replies go out with the null sender, so nothing answers them.
        carried.notes.push(format!("vacation reply to {}", out.to));
        carried
            .sends
            .push((envelope("", &out.to, hostname), reply, deliveries));
        sent_replies.push(n);
    }
    // A sender is remembered as answered only when the answer went out.
    carried.remember = outcome
        .remember
        .iter()
        .filter(|r| r.reply.is_none_or(|n| sent_replies.contains(&n)))
        .map(|r| (r.id.clone(), r.period))
        .collect();
    for store in &outcome.stores {
        carried.filings.push(Filing {
            folder: store.folder.clone(),
            special_use: store.special_use.clone(),
            flags: store.flags.iter().filter(|f| is_flag(f)).cloned().collect(),
            message: outcome.message(message, store.message).to_vec(),
        });
    }
    // A redirect that could not go out must not lose the message it was to carry.
    if redirect_refused && carried.filings.is_empty() {
        carried.filings.push(Filing {
            folder: None,
            special_use: None,
            flags: Vec::new(),
            message: message.to_vec(),
        });
    }
    if carried.filings.is_empty() && carried.sends.is_empty() {
        carried.notes.push("discarded".into());
    }
    for filing in &carried.filings {
        carried.notes.push(match &filing.folder {
            Some(folder) => format!("filed in {folder}"),
            None => "kept".into(),
        });
    }
    carried
}

/// Where a message for `to` goes: this server's own mailboxes and aliases are followed
/// here, anything else is forwarded (SRS and DKIM as for any forward).
fn deliveries_to(snapshot: &Snapshot, account: &str, to: &str, dsn: Dsn) -> Vec<NewDelivery> {
    let Ok(address) = crate::address::Address::parse(to) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut seen = vec![account.to_string()];
    expand(
        snapshot,
        account,
        None,
        vec![Target::Address(address)],
        &mut seen,
        0,
        &mut out,
    );
    for d in &mut out {
        if d.kind == DeliveryKind::Forward {
            d.dsn = Dsn {
                rcpt: d.target.clone(),
                ..dsn.clone()
            };
        }
    }
    out
}

fn envelope(mail_from: &str, to: &str, hostname: &str) -> Envelope {
    Envelope {
        mail_from: mail_from.to_string(),
        rcpt_to: vec![to.to_string()],
        remote_ip: "127.0.0.1".into(),
        helo: hostname.to_string(),
        tls: false,
        ret_full: false,
        envid: None,
        no_notices: false,
        require_tls: false,
    }
}

/// Whether the message was redirected from `account` already.
fn redirected_from(message: &[u8], account: &str) -> bool {
    crate::mime::field_values(message, REDIRECTED_FROM.as_bytes()).any(|value| {
        String::from_utf8_lossy(value)
            .trim()
            .trim_matches(['<', '>'])
            .eq_ignore_ascii_case(account)
    })
}

/// The reply as sieve-rs writes it, checked and completed: its header must be well formed
/// and still say it is automatic (a value with line breaks in it, such as a user's
/// `:subject`, would have broken it open); it gets MIME-Version, 8bit when its text is
/// not ASCII, and a Subject that is not ASCII as RFC 2047 encoded words (a raw 8-bit
/// header needs SMTPUTF8 all the way).
fn tidy_reply(reply: &[u8]) -> Result<Vec<u8>, &'static str> {
    let (fields, end) = crate::mime::header_fields(reply);
    let body = &reply[end.min(reply.len())..];
    let mut automatic = false;
    for field in &fields {
        let line = &reply[field.clone()];
        let name = crate::mime::field_name(line);
        let well_formed = !name.is_empty()
            && name.iter().all(|b| b.is_ascii_graphic() && *b != b':')
            && line.get(name.len()) == Some(&b':')
            && !line[..line.len().saturating_sub(2)].contains(&b'\r')
            && line.ends_with(b"\r\n");
        if !well_formed {
            return Err("the reply's header is malformed");
        }
        automatic |= name.eq_ignore_ascii_case(b"Auto-Submitted")
            && String::from_utf8_lossy(&line[name.len() + 1..]).trim() == "auto-replied";
    }
    if !automatic {
        return Err("the reply's header lost its Auto-Submitted field");
    }
    let has = |wanted: &[u8]| {
        fields
            .iter()
            .any(|f| crate::mime::field_name(&reply[f.clone()]).eq_ignore_ascii_case(wanted))
    };
    let mut out = Vec::with_capacity(reply.len() + 64);
    for field in &fields {
        let line = &reply[field.clone()];
        let name = crate::mime::field_name(line);
        if name.eq_ignore_ascii_case(b"Subject") && !line.is_ascii() {
            let value = String::from_utf8_lossy(&line[name.len() + 1..]);
            out.extend_from_slice(subject_line(value.trim()).as_bytes());
            continue;
        }
        out.extend_from_slice(line);
    }
    if !has(b"MIME-Version") {
        out.extend_from_slice(b"MIME-Version: 1.0\r\n");
    }
    if !body.is_ascii() && !has(b"Content-Transfer-Encoding") {
        out.extend_from_slice(b"Content-Transfer-Encoding: 8bit\r\n");
    }
    out.extend_from_slice(body);
    Ok(out)
}

/// "Subject: …\r\n" for any text: ASCII as it is, else RFC 2047 encoded words of at most
/// 39 bytes of text each on folded lines (§2: 75 characters a word; RFC 5322: lines of
/// 78), split between characters. Control characters become spaces.
fn subject_line(text: &str) -> String {
    use base64::Engine;
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.is_ascii() {
        return format!("Subject: {text}\r\n");
    }
    let mut out = String::from("Subject:");
    let mut chunk = String::new();
    let flush = |chunk: &mut String, out: &mut String| {
        if !chunk.is_empty() {
            let encoded = base64::engine::general_purpose::STANDARD.encode(chunk.as_bytes());
            out.push_str(&format!(" =?UTF-8?B?{encoded}?=\r\n"));
            chunk.clear();
        }
    };
    for c in text.chars() {
        if chunk.len() + c.len_utf8() > 39 {
            flush(&mut chunk, &mut out);
        }
        chunk.push(c);
    }
    flush(&mut chunk, &mut out);
    out
}

/// The message as the scripts see it. A stranger's Subject that decodes to line breaks
/// (an encoded word hiding CR LF) would break open the vacation reply sieve-rs writes
/// from it: the scripts get it with spaces instead. The message filed is the original.
pub(super) fn sieve_view(message: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let (fields, end) = crate::mime::header_fields(message);
    let Some(subject) = fields
        .iter()
        .find(|f| crate::mime::field_name(&message[(*f).clone()]).eq_ignore_ascii_case(b"Subject"))
    else {
        return message.into();
    };
    let raw = &message[subject.clone()];
    if !raw.windows(2).any(|w| w == b"=?") {
        return message.into();
    }
    let parsed =
        mail_parser::MessageParser::new().parse_headers(&message[..end.min(message.len())]);
    let Some(text) = parsed.as_ref().and_then(|m| m.subject()) else {
        return message.into();
    };
    if !text.chars().any(char::is_control) {
        return message.into();
    }
    let mut out = Vec::with_capacity(message.len());
    out.extend_from_slice(&message[..subject.start]);
    out.extend_from_slice(subject_line(text).as_bytes());
    out.extend_from_slice(&message[subject.end..]);
    out.into()
}

/// The address a reply's From field names.
fn reply_from(reply: &[u8]) -> Option<String> {
    let value = crate::mime::field_values(reply, b"From").next()?;
    let value = String::from_utf8_lossy(value).trim().to_string();
    let address = match (value.rfind('<'), value.rfind('>')) {
        (Some(a), Some(b)) if a < b => value[a + 1..b].to_string(),
        _ => value,
    };
    Some(address.trim().to_string())
}

/// Whether `address` is the account's own or one of its aliases (RFC 5230 §4.4: a
/// `:from` is to be the user's address; otherwise a user could write as anyone).
fn is_own_address(snapshot: &Snapshot, account: &str, address: &str) -> bool {
    if address.eq_ignore_ascii_case(account) {
        return true;
    }
    match snapshot.resolve(address) {
        Ok(Some(resolution)) => matches!(
            resolution.action,
            crate::routing::Action::Deliver { mailbox: Some(ref m), .. }
                if m.to_string().eq_ignore_ascii_case(account)
        ),
        _ => false,
    }
}

/// Whether the message says it went to many (Precedence: bulk, list or junk).
fn is_bulk(message: &[u8]) -> bool {
    crate::mime::field_values(message, b"Precedence").any(|value| {
        let value = String::from_utf8_lossy(value).trim().to_ascii_lowercase();
        ["bulk", "list", "junk"].contains(&value.as_str())
    })
}

/// A flag IMAP can show: a system flag or a keyword atom (RFC 3501 §9 `flag`).
fn is_flag(flag: &str) -> bool {
    const SYSTEM: [&str; 5] = ["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"];
    if flag.starts_with('\\') {
        return SYSTEM.iter().any(|s| s.eq_ignore_ascii_case(flag));
    }
    !flag.is_empty()
        && flag.len() <= 64
        && flag
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"(){%*\"\\]".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_says_it_is_mime_and_encodes_what_is_not_ascii() {
        let reply = "From: me@d.test\r\nTo: ann@x.test\r\nSubject: Auto: Grüße aus dem Urlaub, bis zum sechsten Januar zurück\r\n\
                     Auto-Submitted: auto-replied\r\nContent-type: text/plain; charset=utf-8\r\n\r\nBin weg. Grüße\r\n";
        let tidy = String::from_utf8(tidy_reply(reply.as_bytes()).unwrap()).unwrap();
        let (head, body) = tidy.split_once("\r\n\r\n").unwrap();
        assert!(head.is_ascii(), "{head}");
        assert!(
            head.contains("MIME-Version: 1.0\r\nContent-Transfer-Encoding: 8bit"),
            "{head}"
        );
        assert!(head.contains("Subject: =?UTF-8?B?"), "{head}");
        assert!(head.lines().all(|l| l.len() <= 78), "{head}");
        assert_eq!(body, "Bin weg. Grüße\r\n");
        // What mail-parser reads back is the subject as written.
        let parsed = mail_parser::MessageParser::new()
            .parse(tidy.as_bytes())
            .unwrap();
        assert_eq!(
            parsed.subject(),
            Some("Auto: Grüße aus dem Urlaub, bis zum sechsten Januar zurück")
        );
        let plain = "Subject: Away\r\nAuto-Submitted: auto-replied\r\nContent-type: text/plain\r\n\r\nBack soon.\r\n";
        let tidy = String::from_utf8(tidy_reply(plain.as_bytes()).unwrap()).unwrap();
        assert_eq!(
            tidy,
            "Subject: Away\r\nAuto-Submitted: auto-replied\r\nContent-type: text/plain\r\nMIME-Version: 1.0\r\n\r\nBack soon.\r\n"
        );
        // A line break in a value breaks the header open: no reply.
        let broken = "From: me@d.test\r\nSubject: x\r\n\r\nClick here\r\nAuto-Submitted: auto-replied\r\n\r\nbody";
        assert!(tidy_reply(broken.as_bytes()).is_err());
        let bare =
            "From: me@d.test\r\nSubject: x\rBcc: y\r\nAuto-Submitted: auto-replied\r\n\r\nbody";
        assert!(tidy_reply(bare.as_bytes()).is_err());
    }

    #[test]
    fn a_subject_hiding_line_breaks_reaches_the_scripts_as_one_line() {
        // "x\r\n\r\nClick" in an encoded word.
        let message = b"From: a@x.test\r\nSubject: =?UTF-8?B?eA0KDQpDbGljaw==?=\r\n\r\nbody\r\n";
        let view = sieve_view(message);
        let text = String::from_utf8_lossy(&view);
        assert!(text.contains("Subject: x    Click\r\n\r\nbody"), "{text}");
        let plain = b"Subject: =?UTF-8?B?R3LDvMOfZQ==?=\r\n\r\nbody\r\n";
        assert!(matches!(sieve_view(plain), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn flags_imap_cannot_show_are_left_out() {
        assert!(is_flag("\\Seen") && is_flag("$Label1") && is_flag("work"));
        assert!(!is_flag("\\Recent") && !is_flag("two words") && !is_flag("a(b") && !is_flag(""));
    }
}
