//! Delivery status notifications (RFC 3464) for permanent failures, and the rule for
//! when not to send one: never for a bounce, auto-submitted or list mail.

use mail_parser::{DateTime, MessageParser};

use super::now_unix;
use super::outbound::xtext;

/// True for mail that must not be answered with a bounce (RFC 3834, list headers).
pub fn is_auto_submitted(message: &[u8]) -> bool {
    let Some(parsed) = MessageParser::new().parse_headers(message) else {
        return false;
    };
    let header = |name: &str| {
        parsed
            .header_raw(name)
            .map(|v| v.trim().to_ascii_lowercase())
    };
    header("Auto-Submitted").is_some_and(|v| v != "no")
        || header("Precedence").is_some_and(|v| ["bulk", "list", "junk"].contains(&v.as_str()))
        || parsed.header_raw("List-Id").is_some()
}

/// The header section of a message (up to the first empty line).
fn headers_of(message: &[u8]) -> &[u8] {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 2)
        .unwrap_or(message.len());
    &message[..end]
}

/// What a notice reports about one recipient (RFC 3464 `Action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Failed,
    Delayed,
    Delivered,
    /// Passed on to a host that does not report back (no DSN there).
    Relayed,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
        }
    }
}

/// Everything a delivery status notification says.
pub struct Notice<'a> {
    pub hostname: &'a str,
    /// The domain the notice comes from (mailer-daemon@domain).
    pub domain: &'a str,
    pub sender: &'a str,
    pub action: Action,
    /// The recipient as the sender gave it, and ORCPT when an earlier hop had one.
    pub recipient: &'a str,
    pub orcpt: Option<&'a str>,
    pub envid: Option<&'a str>,
    /// Why (the last error), empty for successes.
    pub reason: &'a str,
    pub original: &'a [u8],
    /// RET=FULL: a failure notice carries the whole message, not only its header.
    pub full: bool,
    pub arrival: i64,
    /// For delays: when the server gives up.
    pub retry_until: Option<i64>,
}

/// A multipart/report message (RFC 3464) for `notice`.
pub fn report(notice: &Notice<'_>) -> Vec<u8> {
    let now = now_unix();
    let date = |t: i64| DateTime::from_timestamp(t).to_rfc822();
    let boundary = format!("ferrymail-dsn-{now}-{:x}", notice.original.len());
    let reason = notice.reason.replace(['\r', '\n'], " ");
    let (hostname, domain, recipient) = (notice.hostname, notice.domain, notice.recipient);
    let (subject, human, status) = match notice.action {
        Action::Failed => (
            "Undelivered Mail Returned to Sender",
            format!("Your message could not be delivered to <{recipient}>:\r\n{reason}"),
            // A temporary error that outlived the queue: "delivery time expired" (RFC 3463).
            match status_in(&reason) {
                Some(code) if code.starts_with('5') => code,
                Some(_) => "5.4.7",
                None => "5.0.0",
            },
        ),
        Action::Delayed => (
            "Delayed Mail (still being retried)",
            format!(
                "Your message to <{recipient}> has not been delivered yet:\r\n{reason}\r\n\r\n\
                 It will be tried again until {}; you need not send it again.",
                date(notice.retry_until.unwrap_or(now))
            ),
            status_in(&reason).unwrap_or("4.0.0"),
        ),
        Action::Delivered => (
            "Successful Mail Delivery Report",
            format!("Your message was delivered to <{recipient}>."),
            "2.0.0",
        ),
        Action::Relayed => (
            "Successful Mail Delivery Report",
            format!(
                "Your message to <{recipient}> was passed on to a server that does not \
                 send delivery reports; you may not hear more about it."
            ),
            "2.0.0",
        ),
    };
    let mut per_message = format!("Reporting-MTA: dns; {hostname}\r\n");
    if let Some(envid) = notice.envid {
        per_message.push_str(&format!("Original-Envelope-Id: {}\r\n", xtext(envid)));
    }
    per_message.push_str(&format!("Arrival-Date: {}\r\n", date(notice.arrival)));
    // RFC 6533: UTF-8 addresses are reported with the utf-8 address type, in a
    // message/global-delivery-status; a returned header with UTF-8 in it is
    // message/global(-headers). Each may then be re-encoded for a 7-bit next hop.
    let utf8_addresses = !recipient.is_ascii() || notice.orcpt.is_some_and(|o| !o.is_ascii());
    let status_type = if utf8_addresses {
        "message/global-delivery-status"
    } else {
        "message/delivery-status"
    };
    let address_type = |address: &str| {
        if address.is_ascii() {
            "rfc822"
        } else {
            "utf-8"
        }
    };
    let mut per_recipient = String::new();
    if let Some(orcpt) = notice.orcpt {
        let orcpt_text = if orcpt.is_ascii() {
            xtext(orcpt)
        } else {
            orcpt.to_string()
        };
        per_recipient.push_str(&format!(
            "Original-Recipient: {}; {orcpt_text}\r\n",
            address_type(orcpt)
        ));
    }
    per_recipient.push_str(&format!(
        "Final-Recipient: {}; {recipient}\r\nAction: {}\r\nStatus: {status}\r\n",
        address_type(recipient),
        notice.action.name()
    ));
    if !reason.is_empty() {
        per_recipient.push_str(&format!("Diagnostic-Code: smtp; {reason}\r\n"));
        per_recipient.push_str(&format!("Last-Attempt-Date: {}\r\n", date(now)));
    }
    if let Some(until) = notice.retry_until {
        per_recipient.push_str(&format!("Will-Retry-Until: {}\r\n", date(until)));
    }
    let full = notice.full && notice.action == Action::Failed;
    let utf8_header = !headers_of(notice.original).is_ascii();
    let returned_type = match (full, utf8_header) {
        (true, false) => "message/rfc822",
        (true, true) => "message/global",
        (false, false) => "text/rfc822-headers",
        (false, true) => "message/global-headers",
    };
    let mut out = format!(
        "From: Mail Delivery System <mailer-daemon@{domain}>\r\n\
         To: <{sender}>\r\n\
         Subject: {subject}\r\n\
         Date: {date}\r\n\
         Message-ID: <dsn-{now}-{len}@{hostname}>\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"{boundary}\"\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         This is the mail system at {hostname}.\r\n\
         \r\n\
         {human}\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Type: {status_type}\r\n\
         \r\n\
         {per_message}\
         \r\n\
         {per_recipient}\
         \r\n\
         --{boundary}\r\n\
         Content-Type: {returned_type}\r\n\
         \r\n",
        sender = notice.sender,
        date = date(now),
        len = notice.original.len()
    )
    .into_bytes();
    if full {
        out.extend_from_slice(notice.original);
    } else {
        out.extend_from_slice(headers_of(notice.original));
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

/// The enhanced status code (RFC 3463) in a server's reply text, e.g. "5.1.1".
fn status_in(reply: &str) -> Option<&str> {
    reply.split_whitespace().find_map(|word| {
        let word = word.trim_matches(|c: char| !c.is_ascii_digit());
        let parts: Vec<&str> = word.split('.').collect();
        (parts.len() == 3
            && matches!(parts[0], "2" | "4" | "5")
            && parts[1..]
                .iter()
                .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit())))
        .then_some(word)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_bounces_get_no_bounce() {
        assert!(is_auto_submitted(
            b"Auto-Submitted: auto-replied\r\nSubject: x\r\n\r\nbody"
        ));
        assert!(is_auto_submitted(b"List-Id: <l.example>\r\n\r\nbody"));
        assert!(is_auto_submitted(b"Precedence: bulk\r\n\r\nbody"));
        assert!(!is_auto_submitted(
            b"Auto-Submitted: no\r\nSubject: x\r\n\r\nbody"
        ));
        assert!(!is_auto_submitted(b"Subject: hello\r\n\r\nbody"));
    }

    fn notice<'a>(action: Action, original: &'a [u8], full: bool) -> Notice<'a> {
        Notice {
            hostname: "mx.d.test",
            domain: "d.test",
            sender: "a@b.test",
            action,
            recipient: "alias@d.test",
            orcpt: Some("first hop@c.test"),
            envid: Some("QQ314159"),
            reason: "550 5.1.1 no such user",
            original,
            full,
            arrival: 0,
            retry_until: None,
        }
    }

    #[test]
    fn report_names_the_failure_and_quotes_only_headers() {
        let dsn = report(&notice(
            Action::Failed,
            b"Subject: hi\r\n\r\nsecret body",
            false,
        ));
        let text = String::from_utf8(dsn).unwrap();
        assert!(text.contains("Final-Recipient: rfc822; alias@d.test"));
        assert!(text.contains("Original-Recipient: rfc822; first+20hop@c.test"));
        assert!(text.contains("Original-Envelope-Id: QQ314159"));
        assert!(text.contains("Action: failed\r\nStatus: 5.1.1"));
        assert!(text.contains("Content-Type: text/rfc822-headers"));
        assert!(text.contains("Subject: hi"));
        assert!(!text.contains("secret body"));
        assert!(
            is_auto_submitted(text.as_bytes()),
            "a bounce must never be bounced"
        );
    }

    #[test]
    fn utf8_addresses_and_headers_are_reported_as_rfc_6533_says() {
        let original = "Subject: Grüße\r\n\r\nKöln".as_bytes();
        let mut n = notice(Action::Failed, original, true);
        n.recipient = "jürgen@d.test";
        let text = String::from_utf8(report(&n)).unwrap();
        assert!(text.contains("Content-Type: message/global-delivery-status\r\n"));
        assert!(text.contains("Final-Recipient: utf-8; jürgen@d.test\r\n"));
        assert!(text.contains("Original-Recipient: rfc822; first+20hop@c.test\r\n"));
        assert!(text.contains("Content-Type: message/global\r\n\r\nSubject: Grüße"));
        n.full = false;
        let text = String::from_utf8(report(&n)).unwrap();
        assert!(text.contains("Content-Type: message/global-headers\r\n"));
        // Everything ASCII: as before.
        let plain = String::from_utf8(report(&notice(
            Action::Failed,
            b"Subject: x\r\n\r\nb",
            true,
        )))
        .unwrap();
        assert!(plain.contains("Content-Type: message/delivery-status\r\n"));
        assert!(plain.contains("Content-Type: message/rfc822\r\n"));
    }

    #[test]
    fn ret_full_returns_the_whole_message_on_failure_only() {
        let original = b"Subject: hi\r\n\r\nthe body";
        let failed = String::from_utf8(report(&notice(Action::Failed, original, true))).unwrap();
        assert!(failed.contains("Content-Type: message/rfc822\r\n\r\nSubject: hi\r\n\r\nthe body"));
        let delayed = String::from_utf8(report(&notice(Action::Delayed, original, true))).unwrap();
        assert!(delayed.contains("Action: delayed"));
        assert!(!delayed.contains("the body"));
    }

    #[test]
    fn status_codes_are_found_in_replies() {
        assert_eq!(status_in("550 5.1.1 <x@y>: no such user"), Some("5.1.1"));
        assert_eq!(status_in("451 4.3.0 try later"), Some("4.3.0"));
        assert_eq!(status_in("connection refused"), None);
        assert_eq!(status_in("version 1.2.3"), None);
    }
}
