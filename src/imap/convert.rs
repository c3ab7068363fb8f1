//! From the mailbox store's types to imap-types values: envelopes, body structures,
//! flags and dates as they go on the wire.

use std::num::NonZeroU32;

use imap_next::imap_types::IntoStatic;
use imap_next::imap_types::body::{
    BasicFields, Body, BodyStructure, Disposition, Language, Location, MultiPartExtensionData,
    SinglePartExtensionData, SpecificFields,
};
use imap_next::imap_types::core::{IString, NString, Vec1};
use imap_next::imap_types::datetime::DateTime;
use imap_next::imap_types::envelope::{Address, Envelope};
use imap_next::imap_types::flag::{Flag, FlagFetch};

use crate::mailbox::meta;

/// A string that may be NIL. Values that cannot travel as IMAP strings (NUL bytes) are NIL.
fn nstring(value: Option<&str>) -> NString<'static> {
    value
        .and_then(|v| NString::try_from(v.to_string()).ok())
        .unwrap_or(NString::NIL)
}

fn istring(value: &str) -> IString<'static> {
    IString::try_from(value.to_string())
        .unwrap_or_else(|_| IString::try_from(value.replace('\0', "")).unwrap_or_else(|_| empty()))
}

fn empty() -> IString<'static> {
    // "" is always a valid quoted string.
    IString::try_from("")
        .unwrap_or_else(|_| unreachable!("the empty string is a valid IMAP string"))
}

/// RFC 2047 for display names with non-ASCII characters: IMAP envelopes carry header
/// text, and clients decode encoded-words there.
pub(super) fn display_name(name: &str) -> String {
    if name.is_ascii() {
        return name.to_string();
    }
    use base64::Engine;
    format!(
        "=?utf-8?b?{}?=",
        base64::engine::general_purpose::STANDARD.encode(name.as_bytes())
    )
}

fn addresses(list: &[meta::Address]) -> Vec<Address<'static>> {
    list.iter()
        .map(|a| Address {
            name: nstring(a.name.as_deref().map(display_name).as_deref()),
            adl: nstring(a.route.as_deref()),
            mailbox: nstring(a.mailbox.as_deref()),
            host: nstring(a.host.as_deref()),
        })
        .collect()
}

pub fn envelope(e: &meta::Envelope) -> Envelope<'static> {
    Envelope {
        date: nstring(e.date.as_deref()),
        subject: nstring(e.subject.as_deref()),
        from: addresses(&e.from),
        sender: addresses(&e.sender),
        reply_to: addresses(&e.reply_to),
        to: addresses(&e.to),
        cc: addresses(&e.cc),
        bcc: addresses(&e.bcc),
        in_reply_to: nstring(e.in_reply_to.as_deref()),
        message_id: nstring(e.message_id.as_deref()),
    }
}

fn params(list: &[(String, String)]) -> Vec<(IString<'static>, IString<'static>)> {
    list.iter()
        .map(|(k, v)| (istring(&k.to_ascii_uppercase()), istring(v)))
        .collect()
}

/// BODYSTRUCTURE (`extended` = true) or BODY (false).
pub fn body_structure(s: &meta::Structure, extended: bool) -> BodyStructure<'static> {
    if s.is_multipart() {
        let parts: Vec<BodyStructure<'static>> = s
            .parts
            .iter()
            .map(|p| body_structure(p, extended))
            .collect();
        // A multipart with no parts is shown as an empty text part (it cannot be encoded).
        let Ok(bodies) = Vec1::try_from(parts) else {
            return body_structure(
                &meta::Structure {
                    kind: "text".into(),
                    subtype: "plain".into(),
                    encoding: "7BIT".into(),
                    ..s.clone()
                },
                extended,
            );
        };
        return BodyStructure::Multi {
            bodies,
            subtype: istring(&s.subtype.to_ascii_uppercase()),
            extension_data: extended.then(|| MultiPartExtensionData {
                parameter_list: params(&s.params),
                tail: Some(disposition(s)),
            }),
        };
    }
    let size = s.end.saturating_sub(s.body_start);
    let basic = BasicFields {
        parameter_list: params(&s.params),
        id: nstring(s.id.as_deref()),
        description: nstring(s.description.as_deref()),
        content_transfer_encoding: istring(&s.encoding),
        size,
    };
    let specific = match (s.kind.as_str(), &s.message) {
        ("message", Some(inner)) if s.subtype == "rfc822" || s.subtype == "global" => {
            SpecificFields::Message {
                envelope: Box::new(envelope(&inner.envelope)),
                body_structure: Box::new(body_structure(&inner.structure, extended)),
                number_of_lines: s.lines,
            }
        }
        ("text", _) => SpecificFields::Text {
            subtype: istring(&s.subtype.to_ascii_uppercase()),
            number_of_lines: s.lines,
        },
        _ => SpecificFields::Basic {
            r#type: istring(&s.kind.to_ascii_uppercase()),
            subtype: istring(&s.subtype.to_ascii_uppercase()),
        },
    };
    BodyStructure::Single {
        body: Body { basic, specific },
        extension_data: extended.then(|| SinglePartExtensionData {
            md5: nstring(s.md5.as_deref()),
            tail: Some(disposition(s)),
        }),
    }
}

fn disposition(s: &meta::Structure) -> Disposition<'static> {
    Disposition {
        disposition: s
            .disposition
            .as_ref()
            .map(|(kind, p)| (istring(&kind.to_ascii_uppercase()), params(p))),
        tail: Some(Language {
            language: s.language.iter().map(|l| istring(l)).collect(),
            tail: Some(Location {
                location: nstring(s.location.as_deref()),
                extensions: Vec::new(),
            }),
        }),
    }
}

/// A stored flag in its wire form; None for what is not a valid flag.
pub fn flag(name: &str) -> Option<Flag<'static>> {
    Flag::try_from(name).ok().map(|f| f.into_static())
}

pub fn flags(list: &[String]) -> Vec<FlagFetch<'static>> {
    list.iter()
        .filter_map(|f| flag(f))
        .map(FlagFetch::Flag)
        .collect()
}

/// Flags from the wire as the store keeps them ("\Seen", "$Label"); \Recent is the
/// server's to set, never stored (RFC 3501 §2.3.2).
pub fn storable_flags(flags: &[Flag<'_>]) -> Vec<String> {
    flags
        .iter()
        .map(|f| f.to_string())
        .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
        .collect()
}

pub fn date(unix: i64) -> Option<DateTime> {
    let when = chrono::DateTime::from_timestamp(unix, 0)?.fixed_offset();
    DateTime::try_from(when).ok()
}

pub fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}
