//! Checks of our own beside rspamd, as Forward Email's Spam Scanner makes them: executable
//! attachments (by name and by content, in zip archives too), password-protected zip
//! archives, and lookalike (IDN homograph) domains in links and in From.

use mail_parser::{Message, MimeHeaders};

use crate::spec::model::{CheckAction, SpamChecks};

/// Parts looked at, at most, in one message (nested messages included).
const MAX_PARTS: usize = 1000;
/// Nested messages followed, at most.
const MAX_DEPTH: usize = 8;
/// Links looked at, at most, in one message.
const MAX_LINKS: usize = 2000;
/// Entries of one zip archive looked at, at most.
const MAX_ZIP_ENTRIES: usize = 10_000;

/// File name endings that run code when opened (Gmail's blocked list, lower case).
const EXECUTABLE: &[&str] = &[
    "ade",
    "adp",
    "apk",
    "appx",
    "appxbundle",
    "bat",
    "cab",
    "chm",
    "cmd",
    "com",
    "cpl",
    "diagcab",
    "diagcfg",
    "diagpack",
    "dll",
    "dmg",
    "ex",
    "ex_",
    "exe",
    "hta",
    "img",
    "ins",
    "iso",
    "isp",
    "jar",
    "jnlp",
    "js",
    "jse",
    "lib",
    "lnk",
    "mde",
    "msc",
    "msi",
    "msix",
    "msixbundle",
    "msp",
    "mst",
    "nsh",
    "pif",
    "ps1",
    "scr",
    "sct",
    "shb",
    "sys",
    "vb",
    "vbe",
    "vbs",
    "vhd",
    "vxd",
    "wsc",
    "wsf",
    "wsh",
    "xll",
];

/// Cyrillic and Greek letters drawn like Latin ones: a label made only of these, in a
/// domain with a Latin top-level domain, imitates a Latin name ("аррӏе.com").
const LATIN_LOOKALIKES: &str = "аеорсухіјѕԁӏһԛԝкмнтвАЕОРСУХІЈЅКМНТВαοερτυνικχΑΒΕΖΗΙΚΜΝΟΡΤΥΧ";

/// One thing a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The rule's name, as a symbol in the mail log and X-Spamd-Result.
    pub rule: &'static str,
    /// What was found, for the refusal and the log ("invoice.exe").
    pub what: String,
    pub action: CheckAction,
}

/// Everything the switched-on checks find in `raw`.
pub fn inspect(raw: &[u8], checks: &SpamChecks) -> Vec<Finding> {
    let mut found = Vec::new();
    let Some(message) = crate::mime::parse(raw) else {
        return found;
    };
    let mut walk = Walk {
        checks,
        seen: 0,
        links: 0,
        found: &mut found,
        cut_short: false,
    };
    walk.message(&message, 0);
    // What was not looked at may hide what the checks look for: a message that deep or
    // that many parts is treated as one that hides a program.
    if walk.cut_short && checks.executables != CheckAction::Off {
        found.push(Finding {
            rule: "FERRYMAIL_TOO_DEEP",
            what: format!(
                "more than {MAX_PARTS} parts or {MAX_DEPTH} nested messages, not all checked"
            ),
            action: checks.executables,
        });
    }
    if checks.lookalikes != CheckAction::Off
        && let Some(domain) = message
            .from()
            .and_then(|a| a.first())
            .and_then(|a| a.address())
            .and_then(|a| a.rsplit_once('@'))
            .map(|(_, d)| d.to_string())
        && is_lookalike(&domain)
    {
        found.push(Finding {
            rule: "FERRYMAIL_LOOKALIKE_FROM",
            what: format!("a sender domain that imitates another ({})", shown(&domain)),
            action: checks.lookalikes,
        });
    }
    found.dedup();
    found
}

/// One message's parts being looked at, within the budget.
struct Walk<'a> {
    checks: &'a SpamChecks,
    seen: usize,
    links: usize,
    found: &'a mut Vec<Finding>,
    /// The budget ran out before every part was seen.
    cut_short: bool,
}

impl Walk<'_> {
    fn message(&mut self, message: &Message<'_>, depth: usize) {
        for part in &message.parts {
            self.seen += 1;
            if self.seen > MAX_PARTS {
                self.cut_short = true;
                return;
            }
            if let Some(nested) = part.message() {
                if depth < MAX_DEPTH {
                    self.message(nested, depth + 1);
                } else {
                    self.cut_short = true;
                }
                continue;
            }
            if part.is_multipart() {
                continue;
            }
            self.part(part);
        }
    }

    fn part(&mut self, part: &mail_parser::MessagePart<'_>) {
        let checks = self.checks;
        let name = part.attachment_name().unwrap_or_default();
        let contents = part.contents();
        // A text part is judged by its name only ("invoice.js" sent as text/plain); a
        // text body that happens to start with "MZ" is no program.
        if checks.executables != CheckAction::Off
            && (executable_name(name) || (!part.is_text() && executable_content(contents)))
        {
            self.found.push(Finding {
                rule: "FERRYMAIL_EXECUTABLE",
                what: format!("an executable attachment ({})", shown(name)),
                action: checks.executables,
            });
        }
        if contents.starts_with(b"PK\x03\x04") {
            zip_findings(name, contents, checks, self.found);
        }
        if part.is_text()
            && checks.lookalikes != CheckAction::Off
            && let Some(text) = part.text_contents()
        {
            for host in link_hosts(text).take(MAX_LINKS.saturating_sub(self.links)) {
                self.links += 1;
                if is_lookalike(&host) {
                    self.found.push(Finding {
                        rule: "FERRYMAIL_LOOKALIKE_LINK",
                        what: format!(
                            "a link to a domain that imitates another ({})",
                            shown(&host)
                        ),
                        action: checks.lookalikes,
                    });
                    break;
                }
            }
        }
    }
}

/// What a zip archive holds: executables by name, and whether entries are encrypted.
fn zip_findings(name: &str, contents: &[u8], checks: &SpamChecks, found: &mut Vec<Finding>) {
    // The zip crate reads the whole central directory into memory first: count its
    // entries before (46 bytes each at least), and treat a larger one as unchecked.
    let entries = memchr::memmem::find_iter(contents, b"PK\x01\x02")
        .take(MAX_ZIP_ENTRIES + 1)
        .count();
    if entries > MAX_ZIP_ENTRIES {
        if checks.executables != CheckAction::Off {
            found.push(Finding {
                rule: "FERRYMAIL_TOO_DEEP",
                what: format!(
                    "an archive of more than {MAX_ZIP_ENTRIES} files, not checked ({})",
                    shown(name)
                ),
                action: checks.executables,
            });
        }
        return;
    }
    let Ok(mut archive) = zip::ZipArchive::new(std::io::Cursor::new(contents)) else {
        return;
    };
    let mut encrypted = false;
    for i in 0..archive.len().min(MAX_ZIP_ENTRIES) {
        // by_index_raw reads the entry's header, never its (maybe encrypted) data.
        let Ok(entry) = archive.by_index_raw(i) else {
            continue;
        };
        encrypted |= entry.encrypted();
        let entry_name = entry.name().map(|n| n.into_owned()).unwrap_or_default();
        if checks.executables != CheckAction::Off && executable_name(&entry_name) {
            found.push(Finding {
                rule: "FERRYMAIL_EXECUTABLE",
                what: format!(
                    "an executable in an archive ({} in {})",
                    shown(&entry_name),
                    shown(name)
                ),
                action: checks.executables,
            });
            break;
        }
    }
    if encrypted && checks.encrypted_archives != CheckAction::Off {
        found.push(Finding {
            rule: "FERRYMAIL_ENCRYPTED_ARCHIVE",
            what: format!("a password-protected archive ({})", shown(name)),
            action: checks.encrypted_archives,
        });
    }
}

/// A name from the message as replies, logs and headers carry it: printable ASCII (other
/// characters as '?': a header or a reply line stays 7-bit), at most 100 characters.
fn shown(name: &str) -> String {
    let name: String = name
        .chars()
        .filter(|c| !c.is_control())
        .map(|c| if c.is_ascii() { c } else { '?' })
        .take(100)
        .collect();
    if name.is_empty() {
        "unnamed".into()
    } else {
        name
    }
}

fn executable_name(name: &str) -> bool {
    let name = name
        .trim()
        .trim_end_matches(['.', ' '])
        .to_ascii_lowercase();
    name.rsplit_once('.')
        .is_some_and(|(_, ext)| EXECUTABLE.contains(&ext))
}

/// Windows (MZ), Linux (ELF) and macOS (Mach-O) programs, whatever they are called.
fn executable_content(contents: &[u8]) -> bool {
    contents.starts_with(b"MZ")
        || contents.starts_with(b"\x7fELF")
        || contents.starts_with(&[0xfe, 0xed, 0xfa, 0xce])
        || contents.starts_with(&[0xfe, 0xed, 0xfa, 0xcf])
        || contents.starts_with(&[0xce, 0xfa, 0xed, 0xfe])
        || contents.starts_with(&[0xcf, 0xfa, 0xed, 0xfe])
}

/// The host of every http(s) link in `text`, lower case.
fn link_hosts(text: &str) -> impl Iterator<Item = String> + '_ {
    let lower = text.to_ascii_lowercase();
    let mut starts = Vec::new();
    for scheme in ["http://", "https://"] {
        starts.extend(
            lower
                .match_indices(scheme)
                .take(MAX_LINKS)
                .map(|(i, s)| i + s.len()),
        );
    }
    starts.sort_unstable();
    starts.into_iter().filter_map(move |start| {
        let rest = &text[start..];
        let end = rest
            .find(|c: char| {
                c.is_whitespace()
                    || matches!(
                        c,
                        '/' | '?' | '#' | ':' | '"' | '\'' | '<' | '>' | ')' | ']'
                    )
            })
            .unwrap_or(rest.len());
        let host = rest[..end].trim_end_matches('.').to_lowercase();
        // user:pass@host: the host is after the '@'.
        let host = host
            .rsplit_once('@')
            .map_or(host.clone(), |(_, h)| h.to_string());
        (!host.is_empty()).then_some(host)
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Script {
    Latin,
    Cyrillic,
    Greek,
    Other,
}

fn script(c: char) -> Option<Script> {
    if !c.is_alphabetic() {
        return None;
    }
    Some(match c as u32 {
        0x41..=0x5a | 0x61..=0x7a | 0xc0..=0x24f | 0x1e00..=0x1eff => Script::Latin,
        0x400..=0x52f | 0x1c80..=0x1c8f | 0x2de0..=0x2dff | 0xa640..=0xa69f => Script::Cyrillic,
        0x370..=0x3ff | 0x1f00..=0x1fff => Script::Greek,
        _ => Script::Other,
    })
}

/// Whether a domain (ASCII with xn-- labels, or Unicode) imitates a Latin one: a label
/// mixing Latin with Cyrillic or Greek letters, or one made only of their Latin
/// lookalikes under a Latin top-level domain.
pub fn is_lookalike(domain: &str) -> bool {
    // No DNS name is longer (RFC 1035 §2.3.4); decoding longer ones costs time for nothing.
    if domain.len() > 253 || domain.split('.').any(|label| label.len() > 63) {
        return false;
    }
    let (unicode, _) = idna::domain_to_unicode(domain);
    let labels: Vec<&str> = unicode.split('.').filter(|l| !l.is_empty()).collect();
    let latin_tld = labels
        .last()
        .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    labels.iter().any(|label| {
        let scripts: Vec<Script> = label.chars().filter_map(script).collect();
        let has = |s: Script| scripts.contains(&s);
        let mixed = has(Script::Latin) && (has(Script::Cyrillic) || has(Script::Greek));
        let imitating = latin_tld
            && !scripts.is_empty()
            && !has(Script::Latin)
            && (has(Script::Cyrillic) || has(Script::Greek))
            && label
                .chars()
                .filter(|c| c.is_alphabetic())
                .all(|c| LATIN_LOOKALIKES.contains(c));
        mixed || imitating
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checks() -> SpamChecks {
        SpamChecks::default()
    }

    fn message(parts: &str) -> Vec<u8> {
        format!(
            "From: a@sender.test\r\nTo: b@example.test\r\nSubject: x\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n\
             Content-Type: text/plain\r\n\r\nhello\r\n{parts}--b--\r\n"
        )
        .into_bytes()
    }

    fn attachment(name: &str, bytes: &[u8]) -> String {
        use base64::Engine;
        format!(
            "--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\
             Content-Disposition: attachment; filename=\"{name}\"\r\n\r\n{}\r\n",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )
    }

    fn zip_of(name: &str, encrypted: bool) -> Vec<u8> {
        // A stored entry, its central directory record, the end record (APPNOTE 4.3).
        let flags: u16 = if encrypted { 1 } else { 0 };
        let data = b"data";
        let mut local = b"PK\x03\x04".to_vec();
        local.extend_from_slice(&20u16.to_le_bytes());
        local.extend_from_slice(&flags.to_le_bytes());
        local.extend_from_slice(&[0; 10]);
        local.extend_from_slice(&(data.len() as u32).to_le_bytes());
        local.extend_from_slice(&(data.len() as u32).to_le_bytes());
        local.extend_from_slice(&(name.len() as u16).to_le_bytes());
        local.extend_from_slice(&0u16.to_le_bytes());
        local.extend_from_slice(name.as_bytes());
        local.extend_from_slice(data);
        let mut central = b"PK\x01\x02".to_vec();
        central.extend_from_slice(&20u16.to_le_bytes());
        central.extend_from_slice(&20u16.to_le_bytes());
        central.extend_from_slice(&flags.to_le_bytes());
        central.extend_from_slice(&[0; 10]);
        central.extend_from_slice(&(data.len() as u32).to_le_bytes());
        central.extend_from_slice(&(data.len() as u32).to_le_bytes());
        central.extend_from_slice(&(name.len() as u16).to_le_bytes());
        central.extend_from_slice(&[0; 12]);
        central.extend_from_slice(&0u32.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
        let mut out = local.clone();
        let offset = out.len() as u32;
        out.extend_from_slice(&central);
        out.extend_from_slice(b"PK\x05\x06");
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&(central.len() as u32).to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out
    }

    #[test]
    fn executables_are_found_by_name_content_and_inside_zips() {
        let c = checks();
        let rules = |raw: &[u8]| -> Vec<&'static str> {
            inspect(raw, &c).into_iter().map(|f| f.rule).collect()
        };
        assert_eq!(
            rules(&message(&attachment("invoice.EXE", b"x"))),
            ["FERRYMAIL_EXECUTABLE"]
        );
        assert_eq!(
            rules(&message(&attachment("photo.jpg", b"MZ\x90\x00"))),
            ["FERRYMAIL_EXECUTABLE"]
        );
        assert_eq!(
            rules(&message(&attachment(
                "docs.zip",
                &zip_of("setup.scr", false)
            ))),
            ["FERRYMAIL_EXECUTABLE"]
        );
        assert_eq!(
            rules(&message(&attachment(
                "docs.zip",
                &zip_of("report.pdf", true)
            ))),
            ["FERRYMAIL_ENCRYPTED_ARCHIVE"]
        );
        assert!(rules(&message(&attachment("report.pdf", b"%PDF-1.7"))).is_empty());
        // A script sent as text is still a script; a text that starts "MZ" is text.
        let script = "--b\r\nContent-Type: text/plain\r\n\
                      Content-Disposition: attachment; filename=\"invoice.js\"\r\n\r\nWScript.Run()\r\n";
        assert_eq!(rules(&message(script)), ["FERRYMAIL_EXECUTABLE"]);
        let mz = "--b\r\nContent-Type: text/plain\r\n\r\nMZ is where we met\r\n";
        assert!(rules(&message(mz)).is_empty());
        // Hiding it behind a thousand empty parts is found out.
        let many = "--b\r\nContent-Type: text/plain\r\n\r\nx\r\n".repeat(1001);
        assert_eq!(rules(&message(&many)), ["FERRYMAIL_TOO_DEEP"]);
        assert!(rules(&message(&attachment("docs.zip", &zip_of("a.txt", false)))).is_empty());
        let off = SpamChecks {
            executables: CheckAction::Off,
            ..checks()
        };
        assert!(inspect(&message(&attachment("x.exe", b"MZ")), &off).is_empty());
    }

    /// End records that claim more than the archive holds: 2^36 entries of a central
    /// directory at 1 TiB, in the zip64 form. Nothing is allocated for them.
    #[test]
    fn an_archive_that_lies_about_its_size_is_skipped() {
        let mut zip = b"PK\x03\x04".to_vec();
        zip.extend_from_slice(&[0; 26]);
        let zip64_end_at = zip.len() as u64;
        zip.extend_from_slice(b"PK\x06\x06");
        zip.extend_from_slice(&44u64.to_le_bytes());
        zip.extend_from_slice(&[45, 0, 45, 0]);
        zip.extend_from_slice(&[0; 8]);
        zip.extend_from_slice(&(1u64 << 36).to_le_bytes());
        zip.extend_from_slice(&(1u64 << 36).to_le_bytes());
        zip.extend_from_slice(&(1u64 << 42).to_le_bytes());
        zip.extend_from_slice(&(1u64 << 40).to_le_bytes());
        zip.extend_from_slice(b"PK\x06\x07");
        zip.extend_from_slice(&[0; 4]);
        zip.extend_from_slice(&zip64_end_at.to_le_bytes());
        zip.extend_from_slice(&1u32.to_le_bytes());
        zip.extend_from_slice(b"PK\x05\x06");
        zip.extend_from_slice(&[0xff; 16]);
        zip.extend_from_slice(&0u16.to_le_bytes());
        let found = inspect(&message(&attachment("big.zip", &zip)), &checks());
        assert!(found.is_empty(), "{found:?}");
    }

    /// A text that is nothing but link openings: the hosts looked at stay bounded.
    #[test]
    fn a_million_links_are_not_a_million_lookups() {
        let text = "http://a.test ".repeat(1_000_000);
        assert_eq!(link_hosts(&text).count(), MAX_LINKS);
    }

    /// An archive of more directory records than are looked at is not opened (the zip
    /// crate would hold all of them) and counts as unchecked.
    #[test]
    fn an_archive_of_too_many_files_is_not_opened() {
        let mut zip = b"PK\x03\x04".to_vec();
        for _ in 0..=MAX_ZIP_ENTRIES {
            zip.extend_from_slice(b"PK\x01\x02");
            zip.extend_from_slice(&[0; 42]);
        }
        let found = inspect(&message(&attachment("many.zip", &zip)), &checks());
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].rule, "FERRYMAIL_TOO_DEEP");
        assert!(found[0].what.contains("many.zip"), "{found:?}");
    }

    #[test]
    fn lookalike_domains_are_told_from_real_ones() {
        for fake in ["раypal.com", "аррӏе.com", "gοogle.com"] {
            assert!(is_lookalike(fake), "{fake}");
            // As links and addresses usually carry them: in punycode.
            let ascii = idna::domain_to_ascii(fake).unwrap();
            assert!(ascii.contains("xn--") && is_lookalike(&ascii), "{ascii}");
        }
        for real in [
            "paypal.com",
            "münchen.de",
            "xn--mnchen-3ya.de",
            "яндекс.рф",
            "例え.jp",
            "example.test",
        ] {
            assert!(!is_lookalike(real), "{real}");
        }
        let text = "Pay here: https://раypal.com/login or <a href=\"http://ok.example\">x</a>";
        let hosts: Vec<String> = link_hosts(text).collect();
        assert_eq!(hosts, ["раypal.com", "ok.example"]);
    }
}
