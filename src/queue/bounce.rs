//! Delivery status notifications (RFC 3464) for permanent failures, and the rule for
//! when not to send one: never for a bounce, auto-submitted or list mail.

use mail_parser::{DateTime, MessageParser};

use super::now_unix;

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

/// A multipart/report DSN telling `sender` that `recipient` failed for `reason`.
pub fn report(
    hostname: &str,
    domain: &str,
    sender: &str,
    recipient: &str,
    reason: &str,
    original: &[u8],
) -> Vec<u8> {
    let now = now_unix();
    let date = DateTime::from_timestamp(now).to_rfc822();
    let boundary = format!("ferrymail-dsn-{now}-{:x}", original.len());
    let reason = reason.replace(['\r', '\n'], " ");
    let mut out = format!(
        "From: Mail Delivery System <mailer-daemon@{domain}>\r\n\
         To: <{sender}>\r\n\
         Subject: Undelivered Mail Returned to Sender\r\n\
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
         Your message could not be delivered to <{recipient}>:\r\n\
         {reason}\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Type: message/delivery-status\r\n\
         \r\n\
         Reporting-MTA: dns; {hostname}\r\n\
         \r\n\
         Final-Recipient: rfc822; {recipient}\r\n\
         Action: failed\r\n\
         Status: 5.0.0\r\n\
         Diagnostic-Code: smtp; {reason}\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Type: text/rfc822-headers\r\n\
         \r\n",
        len = original.len()
    )
    .into_bytes();
    out.extend_from_slice(headers_of(original));
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
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

    #[test]
    fn report_names_the_failure_and_quotes_only_headers() {
        let dsn = report(
            "mx.d.test",
            "d.test",
            "a@b.test",
            "x@y.test",
            "550 no such user",
            b"Subject: hi\r\n\r\nsecret body",
        );
        let text = String::from_utf8(dsn).unwrap();
        assert!(text.contains("Final-Recipient: rfc822; x@y.test"));
        assert!(text.contains("Action: failed"));
        assert!(text.contains("Subject: hi"));
        assert!(!text.contains("secret body"));
        assert!(
            is_auto_submitted(text.as_bytes()),
            "a bounce must never be bounced"
        );
    }
}
