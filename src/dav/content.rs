//! What a PUT may store: one calendar object (RFC 4791 §4.1) or one vCard (RFC 6352 §5.1),
//! checked with calcard; a refusal names the precondition the client broke.

use calcard::icalendar::{ICalendarComponentType, ICalendarProperty};

use super::xml::{CALDAV, CARDDAV};
use crate::collections::Span;

/// The largest calendar object or vCard taken (`max-resource-size`).
pub const MAX_RESOURCE_SIZE: usize = 10 * 1024 * 1024;

/// What the server keeps beside a resource it accepted.
#[derive(Debug, PartialEq, Eq)]
pub struct Checked {
    pub uid: String,
    pub component: String,
    pub span: Span,
}

/// A refused body: the precondition element (namespace, name) and why, for the log.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub ns: &'static str,
    pub precondition: &'static str,
    pub why: String,
}

fn refuse(ns: &'static str, precondition: &'static str, why: impl Into<String>) -> Refusal {
    Refusal {
        ns,
        precondition,
        why: why.into(),
    }
}

/// Whether a Content-Type names the media type (parameters aside); absent is accepted.
pub fn media_type_is(content_type: Option<&str>, accepted: &[&str]) -> bool {
    content_type.is_none_or(|ct| {
        let media = ct.split(';').next().unwrap_or("").trim();
        accepted.iter().any(|a| media.eq_ignore_ascii_case(a))
    })
}

/// The types a calendar object's main components may have.
const OBJECT_TYPES: [ICalendarComponentType; 4] = [
    ICalendarComponentType::VEvent,
    ICalendarComponentType::VTodo,
    ICalendarComponentType::VJournal,
    ICalendarComponentType::VFreebusy,
];

/// A calendar object resource for a calendar taking `allowed` component types.
pub fn calendar_object(body: &[u8], allowed: &[String]) -> Result<Checked, Refusal> {
    let invalid = |why: &str| refuse(CALDAV, "valid-calendar-data", why);
    let text = std::str::from_utf8(body).map_err(|_| invalid("not UTF-8"))?;
    let mut parser = calcard::Parser::new(text);
    let calendar = match parser.entry() {
        calcard::Entry::ICalendar(calendar) => calendar,
        other => return Err(invalid(&format!("not an iCalendar object: {other:?}"))),
    };
    if !matches!(parser.entry(), calcard::Entry::Eof) {
        return Err(refuse(
            CALDAV,
            "valid-calendar-object-resource",
            "more than one VCALENDAR",
        ));
    }
    let object = |why: &str| refuse(CALDAV, "valid-calendar-object-resource", why);
    let Some(top) = calendar.components.first() else {
        return Err(invalid("empty"));
    };
    if top.component_type != ICalendarComponentType::VCalendar {
        return Err(invalid("the object is not a VCALENDAR"));
    }
    if top.property(&ICalendarProperty::Method).is_some() {
        return Err(object(
            "METHOD is for scheduling messages, not stored objects",
        ));
    }
    let mut kind: Option<&ICalendarComponentType> = None;
    let mut uid: Option<&str> = None;
    for id in &top.component_ids {
        let Some(component) = calendar.component_by_id(*id) else {
            continue;
        };
        let ty = &component.component_type;
        if !OBJECT_TYPES.contains(ty) {
            if matches!(ty, ICalendarComponentType::VTimezone) {
                continue;
            }
            return Err(refuse(
                CALDAV,
                "supported-calendar-component",
                format!("{} is not taken", ty.as_str()),
            ));
        }
        if kind.is_some_and(|k| k != ty) {
            return Err(object("components of more than one type"));
        }
        kind = Some(ty);
        let Some(this) = component.uid().filter(|u| !u.trim().is_empty()) else {
            return Err(object("a component without a UID"));
        };
        if uid.is_some_and(|u| u != this) {
            return Err(object("components with different UIDs"));
        }
        uid = Some(this);
    }
    let (Some(kind), Some(uid)) = (kind, uid) else {
        return Err(object("no VEVENT, VTODO, VJOURNAL or VFREEBUSY"));
    };
    let component = kind.as_str().to_string();
    if !allowed.iter().any(|a| a.eq_ignore_ascii_case(&component)) {
        return Err(refuse(
            CALDAV,
            "supported-calendar-component",
            format!("this calendar does not take {component}"),
        ));
    }
    Ok(Checked {
        uid: uid.to_string(),
        component,
        span: super::instances::span(&calendar),
    })
}

/// A vCard (3.0 or 4.0). One without a UID is identified by its resource name.
pub fn vcard(body: &[u8], name: &str) -> Result<Checked, Refusal> {
    let invalid = |why: &str| refuse(CARDDAV, "valid-address-data", why);
    let text = std::str::from_utf8(body).map_err(|_| invalid("not UTF-8"))?;
    let mut parser = calcard::Parser::new(text);
    let card = match parser.entry() {
        calcard::Entry::VCard(card) => card,
        other => return Err(invalid(&format!("not a vCard: {other:?}"))),
    };
    if !matches!(parser.entry(), calcard::Entry::Eof) {
        return Err(invalid("more than one vCard"));
    }
    let uid = card
        .uid()
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .unwrap_or(name);
    Ok(Checked {
        uid: uid.to_string(),
        component: "VCARD".to_string(),
        span: Span::ANY,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<String> {
        ["VEVENT", "VTODO", "VJOURNAL"].map(String::from).to_vec()
    }

    const EVENT: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\n\
        BEGIN:VTIMEZONE\r\nTZID:Europe/Berlin\r\nBEGIN:STANDARD\r\nDTSTART:19701025T030000\r\n\
        TZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\n\
        BEGIN:VEVENT\r\nUID:e1\r\nDTSTAMP:20260101T000000Z\r\n\
        DTSTART;TZID=Europe/Berlin:20260105T100000\r\nRRULE:FREQ=WEEKLY;COUNT=5\r\n\
        SUMMARY:weekly\r\nEND:VEVENT\r\n\
        BEGIN:VEVENT\r\nUID:e1\r\nDTSTAMP:20260101T000000Z\r\n\
        RECURRENCE-ID;TZID=Europe/Berlin:20260112T100000\r\n\
        DTSTART;TZID=Europe/Berlin:20260112T110000\r\nSUMMARY:moved\r\nEND:VEVENT\r\n\
        END:VCALENDAR\r\n";

    #[test]
    fn an_event_with_its_overrides_and_timezone_is_one_object() {
        assert_eq!(
            calendar_object(EVENT.as_bytes(), &all()),
            Ok(Checked {
                uid: "e1".into(),
                component: "VEVENT".into(),
                span: Span {
                    // 5 Jan to 2 Feb, 09:00 UTC: instants, as they have no end.
                    start: 1_767_603_600,
                    end: 1_770_022_800,
                    exact: false
                }
            })
        );
        let only_todos = vec!["VTODO".to_string()];
        assert_eq!(
            calendar_object(EVENT.as_bytes(), &only_todos)
                .unwrap_err()
                .precondition,
            "supported-calendar-component"
        );
    }

    #[test]
    fn what_is_not_one_calendar_object_names_its_precondition() {
        let precondition = |body: &str| {
            calendar_object(body.as_bytes(), &all())
                .map(|c| c.uid)
                .map_err(|r| r.precondition)
        };
        assert_eq!(precondition("hello"), Err("valid-calendar-data"));
        assert_eq!(precondition(""), Err("valid-calendar-data"));
        let two_uids = EVENT.replacen("UID:e1", "UID:e2", 1);
        assert_eq!(
            precondition(&two_uids),
            Err("valid-calendar-object-resource")
        );
        let no_uid = EVENT.replace("UID:e1\r\n", "");
        assert_eq!(precondition(&no_uid), Err("valid-calendar-object-resource"));
        let mixed = EVENT.replacen("BEGIN:VEVENT", "BEGIN:VTODO", 1).replacen(
            "SUMMARY:weekly\r\nEND:VEVENT",
            "SUMMARY:weekly\r\nEND:VTODO",
            1,
        );
        assert_eq!(precondition(&mixed), Err("valid-calendar-object-resource"));
        let method = EVENT.replacen("VERSION:2.0", "VERSION:2.0\r\nMETHOD:REQUEST", 1);
        assert_eq!(precondition(&method), Err("valid-calendar-object-resource"));
        let twice = format!("{EVENT}{EVENT}");
        assert_eq!(precondition(&twice), Err("valid-calendar-object-resource"));
        let timezone_only = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VTIMEZONE\r\nTZID:X\r\n\
            END:VTIMEZONE\r\nEND:VCALENDAR\r\n";
        assert_eq!(
            precondition(timezone_only),
            Err("valid-calendar-object-resource")
        );
        let card = "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:A\r\nEND:VCARD\r\n";
        assert_eq!(precondition(card), Err("valid-calendar-data"));
    }

    #[test]
    fn vcards_of_both_versions_are_taken() {
        let v3 = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:c1\r\nFN:Ann\r\nN:;Ann;;;\r\nEND:VCARD\r\n";
        assert_eq!(vcard(v3.as_bytes(), "x.vcf").unwrap().uid, "c1");
        let v4 = "BEGIN:VCARD\r\nVERSION:4.0\r\nFN:Bo\r\nEND:VCARD\r\n";
        assert_eq!(vcard(v4.as_bytes(), "x.vcf").unwrap().uid, "x.vcf");
        assert_eq!(
            vcard(b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n", "x")
                .unwrap_err()
                .precondition,
            "valid-address-data"
        );
        assert!(vcard(format!("{v3}{v3}").as_bytes(), "x").is_err());
    }

    #[test]
    fn media_types_are_compared_without_parameters() {
        assert!(media_type_is(
            Some("text/calendar; charset=utf-8"),
            &["text/calendar"]
        ));
        assert!(media_type_is(None, &["text/calendar"]));
        assert!(!media_type_is(Some("text/plain"), &["text/calendar"]));
    }
}
