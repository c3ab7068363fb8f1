//! The Apple configuration profile (.mobileconfig) of one mailbox: its mail account, and
//! its calendars and contacts when they are served, as iOS and macOS install them.

use sha2::{Digest, Sha256};

use crate::http::{ServiceKind, Site};

/// A stable UUID for `what` of `account` on this host: installing the profile again
/// replaces the accounts it made instead of adding a second set.
fn uuid(host: &str, account: &str, what: &str) -> String {
    let d = Sha256::digest(format!("{host}\0{account}\0{what}").as_bytes());
    let h = hex::encode(&d[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
    .to_uppercase()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn string(key: &str, value: &str) -> String {
    format!("<key>{key}</key><string>{}</string>\n", escape(value))
}

fn integer(key: &str, value: u16) -> String {
    format!("<key>{key}</key><integer>{value}</integer>\n")
}

fn boolean(key: &str, value: bool) -> String {
    format!("<key>{key}</key><{value}/>\n")
}

/// The profile's text (an XML property list, unsigned).
pub fn apple(site: &Site, account: &str) -> String {
    let host = &site.hostname;
    let id = format!(
        "{}.ferrymail",
        host.split('.').rev().collect::<Vec<_>>().join(".")
    );
    let preferred = site.preferred();
    let incoming = preferred
        .iter()
        .find(|s| s.kind == ServiceKind::Imap)
        .or_else(|| preferred.iter().find(|s| s.kind == ServiceKind::Pop3));
    let outgoing = preferred.iter().find(|s| s.kind == ServiceKind::Submission);
    let mut payloads = Vec::new();
    if let (Some(incoming), Some(outgoing)) = (incoming, outgoing) {
        let kind = match incoming.kind {
            ServiceKind::Pop3 => "EmailTypePOP",
            _ => "EmailTypeIMAP",
        };
        let mut p = String::from("<dict>\n");
        p += &string("EmailAccountDescription", account);
        p += &string("EmailAccountType", kind);
        p += &string("EmailAddress", account);
        p += &string("IncomingMailServerAuthentication", "EmailAuthPassword");
        p += &string("IncomingMailServerHostName", host);
        p += &integer("IncomingMailServerPortNumber", incoming.port);
        // Apple's "UseSSL" means TLS either way: implicit on a TLS port, else STARTTLS.
        p += &boolean("IncomingMailServerUseSSL", true);
        p += &string("IncomingMailServerUsername", account);
        p += &string("OutgoingMailServerAuthentication", "EmailAuthPassword");
        p += &string("OutgoingMailServerHostName", host);
        p += &integer("OutgoingMailServerPortNumber", outgoing.port);
        p += &boolean("OutgoingMailServerUseSSL", true);
        p += &string("OutgoingMailServerUsername", account);
        p += &boolean("OutgoingPasswordSameAsIncomingPassword", true);
        p += &string("PayloadDisplayName", "Mail");
        p += &string(
            "PayloadIdentifier",
            &format!("{id}.mail.{}", uuid(host, account, "mail")),
        );
        p += &string("PayloadType", "com.apple.mail.managed");
        p += &string("PayloadUUID", &uuid(host, account, "mail"));
        p += &integer("PayloadVersion", 1);
        p += "</dict>\n";
        payloads.push(p);
    }
    for (what, prefix, kind, port) in [
        (
            "calendars",
            "CalDAV",
            "com.apple.caldav.account",
            site.caldav_port,
        ),
        (
            "contacts",
            "CardDAV",
            "com.apple.carddav.account",
            site.carddav_port,
        ),
    ] {
        let Some(port) = port else { continue };
        let mut p = String::from("<dict>\n");
        p += &string(
            &format!("{prefix}AccountDescription"),
            &format!("{account} {what}"),
        );
        p += &string(&format!("{prefix}HostName"), host);
        p += &integer(&format!("{prefix}Port"), port);
        p += &string(
            &format!("{prefix}PrincipalURL"),
            &format!("https://{host}:{port}{}", crate::dav::BASE),
        );
        p += &boolean(&format!("{prefix}UseSSL"), true);
        p += &string(&format!("{prefix}Username"), account);
        p += &string("PayloadDisplayName", &format!("{prefix} {what}"));
        p += &string(
            "PayloadIdentifier",
            &format!("{id}.{what}.{}", uuid(host, account, what)),
        );
        p += &string("PayloadType", kind);
        p += &string("PayloadUUID", &uuid(host, account, what));
        p += &integer("PayloadVersion", 1);
        p += "</dict>\n";
        payloads.push(p);
    }
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
         <plist version=\"1.0\">\n<dict>\n<key>PayloadContent</key>\n<array>\n",
    );
    for p in payloads {
        out += &p;
    }
    out += "</array>\n";
    out += &string(
        "PayloadDescription",
        &format!("Mail, calendars and contacts of {account} on {host}"),
    );
    out += &string("PayloadDisplayName", account);
    out += &string(
        "PayloadIdentifier",
        &format!("{id}.{}", uuid(host, account, "profile")),
    );
    out += &boolean("PayloadRemovalDisallowed", false);
    out += &string("PayloadType", "Configuration");
    out += &string("PayloadUUID", &uuid(host, account, "profile"));
    out += &integer("PayloadVersion", 1);
    out += "</dict>\n</plist>\n";
    out
}
