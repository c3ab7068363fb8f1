//! The filters of calendar-query (RFC 4791 §9.7) and addressbook-query (RFC 6352 §10.5),
//! read from the request and tested against objects parsed by calcard; time ranges
//! are tested against every instance of a recurring object.

use std::cell::OnceCell;

use calcard::icalendar::{ICalendar, ICalendarComponent, ICalendarValue};
use calcard::vcard::{VCard, VCardValue};

use super::instances::{Instance, instances};
use super::xml::{CALDAV, CARDDAV, Element};
use crate::collections::Span;

/// A filter the server cannot apply: the precondition to name (supported-filter,
/// supported-collation) and why.
#[derive(Debug, PartialEq, Eq)]
pub struct Unsupported {
    pub ns: &'static str,
    pub precondition: &'static str,
    pub why: String,
}

fn unsupported(ns: &'static str, precondition: &'static str, why: &str) -> Unsupported {
    Unsupported {
        ns,
        precondition,
        why: why.to_string(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Collation {
    Octet,
    AsciiCasemap,
    UnicodeCasemap,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MatchType {
    Equals,
    Contains,
    StartsWith,
    EndsWith,
}

#[derive(Debug)]
struct TextMatch {
    needle: String,
    collation: Collation,
    negate: bool,
    mode: MatchType,
}

impl TextMatch {
    fn read(e: &Element, ns: &'static str, default: Collation) -> Result<TextMatch, Unsupported> {
        let collation = match e.attr("collation") {
            None => default,
            Some("i;octet") => Collation::Octet,
            Some("i;ascii-casemap") => Collation::AsciiCasemap,
            Some("i;unicode-casemap") => Collation::UnicodeCasemap,
            Some(_) => {
                return Err(unsupported(ns, "supported-collation", "unknown collation"));
            }
        };
        let mode = match e.attr("match-type") {
            None | Some("contains") => MatchType::Contains,
            Some("equals") => MatchType::Equals,
            Some("starts-with") => MatchType::StartsWith,
            Some("ends-with") => MatchType::EndsWith,
            Some(_) => return Err(unsupported(ns, "supported-filter", "unknown match-type")),
        };
        let negate = e.attr("negate-condition") == Some("yes");
        Ok(TextMatch {
            needle: fold(&e.text, collation),
            collation,
            negate,
            mode,
        })
    }

    fn test(&self, value: &str) -> bool {
        let value = fold(value, self.collation);
        let hit = match self.mode {
            MatchType::Equals => value == self.needle,
            MatchType::Contains => value.contains(&self.needle),
            MatchType::StartsWith => value.starts_with(&self.needle),
            MatchType::EndsWith => value.ends_with(&self.needle),
        };
        hit != self.negate
    }
}

fn fold(text: &str, collation: Collation) -> String {
    match collation {
        Collation::Octet => text.to_string(),
        Collation::AsciiCasemap => text.to_ascii_lowercase(),
        Collation::UnicodeCasemap => text.to_lowercase(),
    }
}

#[derive(Debug)]
enum ParamTest {
    NotDefined,
    Defined,
    Text(TextMatch),
}

#[derive(Debug)]
struct ParamFilter {
    name: String,
    test: ParamTest,
}

impl ParamFilter {
    fn read(e: &Element, ns: &'static str, collation: Collation) -> Result<Self, Unsupported> {
        let name = e.attr("name").unwrap_or_default().to_string();
        let test = if e.child(ns, "is-not-defined").is_some() {
            ParamTest::NotDefined
        } else if let Some(text) = e.child(ns, "text-match") {
            ParamTest::Text(TextMatch::read(text, ns, collation)?)
        } else {
            ParamTest::Defined
        };
        Ok(ParamFilter { name, test })
    }

    /// Against the values of the parameters of this name on one property.
    fn test<'a>(&self, mut values: impl Iterator<Item = String> + 'a) -> bool {
        match &self.test {
            ParamTest::NotDefined => values.next().is_none(),
            ParamTest::Defined => values.next().is_some(),
            ParamTest::Text(text) => values.any(|v| text.test(&v)),
        }
    }
}

#[derive(Debug)]
struct PropFilter {
    name: String,
    not_defined: bool,
    texts: Vec<TextMatch>,
    params: Vec<ParamFilter>,
    /// CardDAV's test="anyof" (its default); CalDAV's filters are all allof.
    any: bool,
}

impl PropFilter {
    fn read(e: &Element, ns: &'static str, collation: Collation) -> Result<Self, Unsupported> {
        if e.child(ns, "time-range").is_some() {
            return Err(unsupported(
                ns,
                "supported-filter",
                "time ranges on properties are not supported",
            ));
        }
        Ok(PropFilter {
            name: e.attr("name").unwrap_or_default().to_string(),
            not_defined: e.child(ns, "is-not-defined").is_some(),
            texts: e
                .all(ns, "text-match")
                .map(|t| TextMatch::read(t, ns, collation))
                .collect::<Result<_, _>>()?,
            params: e
                .all(ns, "param-filter")
                .map(|p| ParamFilter::read(p, ns, collation))
                .collect::<Result<_, _>>()?,
            any: ns == CARDDAV && e.attr("test") != Some("allof"),
        })
    }

    /// Against one property's value text and its parameters (name → values).
    fn test_one(&self, text: &str, params: &dyn Fn(&str) -> Vec<String>) -> bool {
        let tests = self.texts.iter().map(|t| t.test(text)).chain(
            self.params
                .iter()
                .map(|p| p.test(params(&p.name).into_iter())),
        );
        let mut tests = tests.peekable();
        if tests.peek().is_none() {
            return true;
        }
        if self.any {
            tests.into_iter().any(|t| t)
        } else {
            tests.into_iter().all(|t| t)
        }
    }
}

/// A calendar-query filter: the VCALENDAR comp-filter and what it holds.
#[derive(Debug)]
pub struct CalendarFilter {
    top: CompFilter,
}

#[derive(Debug)]
struct CompFilter {
    name: String,
    not_defined: bool,
    range: Option<(i64, i64)>,
    props: Vec<PropFilter>,
    comps: Vec<CompFilter>,
}

/// A time-range's bounds as Unix seconds (RFC 4791 §9.9: UTC date-times; either may be
/// left out).
pub(super) fn time_range(e: &Element) -> Result<(i64, i64), Unsupported> {
    let bound = |name: &str, default: i64| -> Result<i64, Unsupported> {
        match e.attr(name) {
            None => Ok(default),
            Some(text) => chrono::NaiveDateTime::parse_from_str(text.trim(), "%Y%m%dT%H%M%SZ")
                .map(|t| t.and_utc().timestamp())
                .map_err(|_| {
                    unsupported(
                        CALDAV,
                        "valid-filter",
                        "a time-range bound is not a UTC date-time",
                    )
                }),
        }
    };
    let range = (bound("start", i64::MIN)?, bound("end", i64::MAX)?);
    if range.0 >= range.1 {
        return Err(unsupported(
            CALDAV,
            "valid-filter",
            "a time range that ends before it starts",
        ));
    }
    Ok(range)
}

impl CompFilter {
    fn read(e: &Element, depth: usize) -> Result<CompFilter, Unsupported> {
        let name = e.attr("name").unwrap_or_default().to_ascii_uppercase();
        let range = match e.child(CALDAV, "time-range") {
            Some(range) if depth != 1 => {
                let _ = range;
                return Err(unsupported(
                    CALDAV,
                    "supported-filter",
                    "time ranges are supported on VEVENT, VTODO and VJOURNAL only",
                ));
            }
            Some(range) => Some(time_range(range)?),
            None => None,
        };
        Ok(CompFilter {
            name,
            not_defined: e.child(CALDAV, "is-not-defined").is_some(),
            range,
            props: e
                .all(CALDAV, "prop-filter")
                .map(|p| PropFilter::read(p, CALDAV, Collation::AsciiCasemap))
                .collect::<Result<_, _>>()?,
            comps: e
                .all(CALDAV, "comp-filter")
                .map(|c| CompFilter::read(c, depth + 1))
                .collect::<Result<_, _>>()?,
        })
    }
}

impl CalendarFilter {
    /// From a calendar-query's `filter` element.
    pub fn read(filter: &Element) -> Result<CalendarFilter, Unsupported> {
        let top = filter
            .child(CALDAV, "comp-filter")
            .ok_or_else(|| unsupported(CALDAV, "valid-filter", "no comp-filter"))?;
        let top = CompFilter::read(top, 0)?;
        if top.name != "VCALENDAR" {
            return Err(unsupported(
                CALDAV,
                "valid-filter",
                "the top comp-filter is not VCALENDAR",
            ));
        }
        Ok(CalendarFilter { top })
    }

    /// Whether a stored calendar object passes.
    pub fn matches(&self, calendar: &ICalendar) -> bool {
        let instances = OnceCell::new();
        let run = Run {
            calendar,
            instances: &instances,
            until: self.top.latest_end(),
        };
        run.comp(&[0], &self.top)
    }

    /// A time range every match has an instance in: objects whose span cannot overlap it
    /// need not be read.
    pub fn window(&self) -> Option<(i64, i64)> {
        if self.top.not_defined {
            return None;
        }
        self.top
            .comps
            .iter()
            .filter(|c| !c.not_defined)
            .find_map(|c| c.range)
    }

    /// The answer for an object known only by its main component and span, when the
    /// filter is the one every client syncs with (one component type in a time range)
    /// and the span is the object's one instance; otherwise the object must be read.
    pub fn by_span(&self, component: &str, span: &Span) -> Option<bool> {
        let [only] = self.top.comps.as_slice() else {
            return None;
        };
        let plain = |c: &CompFilter| !c.not_defined && c.props.is_empty();
        if !span.exact || !plain(&self.top) || !plain(only) || !only.comps.is_empty() {
            return None;
        }
        let range = only.range?;
        Some(
            component.eq_ignore_ascii_case(&only.name)
                && Span::overlaps(span.start, span.end, range),
        )
    }
}

impl CompFilter {
    /// The latest end of the time ranges in the filter: how far recurrences must go.
    fn latest_end(&self) -> i64 {
        self.comps
            .iter()
            .map(CompFilter::latest_end)
            .chain(self.range.map(|r| r.1))
            .max()
            .unwrap_or(i64::MIN)
    }
}

/// One object under test, with its instances worked out once if a time range asks.
struct Run<'a> {
    calendar: &'a ICalendar,
    instances: &'a OnceCell<Vec<Instance>>,
    until: i64,
}

impl Run<'_> {
    fn comp(&self, ids: &[u32], filter: &CompFilter) -> bool {
        let mut candidates = ids.iter().filter_map(|id| {
            let c = self.calendar.component_by_id(*id)?;
            c.component_type
                .as_str()
                .eq_ignore_ascii_case(&filter.name)
                .then_some((*id, c))
        });
        if filter.not_defined {
            return candidates.next().is_none();
        }
        candidates.any(|(id, component)| {
            filter.range.is_none_or(|range| self.in_range(id, range))
                && filter.props.iter().all(|p| prop_matches(component, p))
                && filter
                    .comps
                    .iter()
                    .all(|c| self.comp(&component.component_ids, c))
        })
    }

    /// Whether an instance of component `id` overlaps `range` (RFC 4791 §9.9).
    fn in_range(&self, id: u32, range: (i64, i64)) -> bool {
        let instances = self
            .instances
            .get_or_init(|| instances(self.calendar, self.until));
        instances
            .iter()
            .any(|i| i.component == id && Span::overlaps(i.start, i.end, range))
    }
}

fn ical_text(value: &ICalendarValue) -> String {
    match value {
        ICalendarValue::Integer(n) => n.to_string(),
        other => other.as_text().unwrap_or_default().to_string(),
    }
}

fn prop_matches(component: &ICalendarComponent, filter: &PropFilter) -> bool {
    let mut entries = component
        .entries
        .iter()
        .filter(|e| e.name.as_str().eq_ignore_ascii_case(&filter.name))
        .peekable();
    if filter.not_defined {
        return entries.peek().is_none();
    }
    entries.any(|entry| {
        let text = entry
            .values
            .iter()
            .map(ical_text)
            .collect::<Vec<_>>()
            .join(",");
        let params = |name: &str| -> Vec<String> {
            entry
                .params
                .iter()
                .filter(|p| p.name.as_str().eq_ignore_ascii_case(name))
                .map(|p| p.value.as_text().unwrap_or_default().to_string())
                .collect()
        };
        filter.test_one(&text, &params)
    })
}

/// An addressbook-query filter.
#[derive(Debug)]
pub struct CardFilter {
    props: Vec<PropFilter>,
    any: bool,
}

impl CardFilter {
    pub fn read(filter: &Element) -> Result<CardFilter, Unsupported> {
        Ok(CardFilter {
            props: filter
                .all(CARDDAV, "prop-filter")
                .map(|p| PropFilter::read(p, CARDDAV, Collation::UnicodeCasemap))
                .collect::<Result<_, _>>()?,
            any: filter.attr("test") != Some("allof"),
        })
    }

    pub fn matches(&self, card: &VCard) -> bool {
        if self.props.is_empty() {
            return true;
        }
        let test = |filter: &PropFilter| {
            let mut entries = card
                .entries
                .iter()
                .filter(|e| e.name.as_str().eq_ignore_ascii_case(&filter.name))
                .peekable();
            if filter.not_defined {
                return entries.peek().is_none();
            }
            entries.any(|entry| {
                // Structured values (N, ADR, ORG) are fields with ';' between them;
                // others are lists with ','.
                let structured = ["N", "ADR", "ORG", "GENDER", "CLIENTPIDMAP"]
                    .iter()
                    .any(|n| entry.name.as_str().eq_ignore_ascii_case(n));
                let text = entry
                    .values
                    .iter()
                    .map(vcard_text)
                    .collect::<Vec<_>>()
                    .join(if structured { ";" } else { "," });
                let params = |name: &str| -> Vec<String> {
                    entry
                        .params
                        .iter()
                        .filter(|p| p.name.as_str().eq_ignore_ascii_case(name))
                        .map(|p| p.value.clone().into_text().into_owned())
                        .collect()
                };
                filter.test_one(&text, &params)
            })
        };
        if self.any {
            self.props.iter().any(test)
        } else {
            self.props.iter().all(test)
        }
    }
}

fn vcard_text(value: &VCardValue) -> String {
    match value {
        VCardValue::Component(parts) => parts.join(";"),
        VCardValue::Integer(n) => n.to_string(),
        other => other.as_text().unwrap_or_default().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calendar_filter(xml: &str) -> Result<CalendarFilter, Unsupported> {
        let body = format!("<C:filter xmlns:C=\"urn:ietf:params:xml:ns:caldav\">{xml}</C:filter>");
        CalendarFilter::read(&super::super::xml::parse(body.as_bytes()).unwrap())
    }

    fn range(start: &str, end: &str) -> CalendarFilter {
        calendar_filter(&format!(
            "<C:comp-filter name=\"VCALENDAR\"><C:comp-filter name=\"VEVENT\">\
             <C:time-range start=\"{start}\" end=\"{end}\"/></C:comp-filter></C:comp-filter>"
        ))
        .unwrap()
    }

    fn ics(body: &str) -> ICalendar {
        ICalendar::parse(format!(
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:t\r\n{body}END:VCALENDAR\r\n"
        ))
        .unwrap()
    }

    /// Weekly on Mondays 10:00 Berlin from 5 Jan 2026, five times; the 12 Jan one moved
    /// to 14:00, the 19 Jan one cancelled.
    fn weekly() -> ICalendar {
        ics(
            "BEGIN:VTIMEZONE\r\nTZID:Europe/Berlin\r\nBEGIN:STANDARD\r\n\
             DTSTART:19701025T030000\r\nTZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\n\
             END:STANDARD\r\nEND:VTIMEZONE\r\n\
             BEGIN:VEVENT\r\nUID:w\r\nDTSTAMP:20260101T000000Z\r\n\
             DTSTART;TZID=Europe/Berlin:20260105T100000\r\nDURATION:PT1H\r\n\
             RRULE:FREQ=WEEKLY;COUNT=5\r\nEXDATE;TZID=Europe/Berlin:20260119T100000\r\n\
             SUMMARY:Standup\r\nEND:VEVENT\r\n\
             BEGIN:VEVENT\r\nUID:w\r\nDTSTAMP:20260101T000000Z\r\n\
             RECURRENCE-ID;TZID=Europe/Berlin:20260112T100000\r\n\
             DTSTART;TZID=Europe/Berlin:20260112T140000\r\nDURATION:PT1H\r\n\
             SUMMARY:Standup (moved)\r\nEND:VEVENT\r\n",
        )
    }

    #[test]
    fn time_ranges_meet_every_instance_of_a_recurrence() {
        let cal = weekly();
        // 5 Jan 09:00–10:00 UTC: the first instance.
        assert!(range("20260105T090000Z", "20260105T093000Z").matches(&cal));
        // 12 Jan 09:00 UTC is where the moved instance was: now 13:00–14:00 UTC.
        assert!(!range("20260112T090000Z", "20260112T100000Z").matches(&cal));
        assert!(range("20260112T133000Z", "20260112T134500Z").matches(&cal));
        // 19 Jan is cancelled; 26 Jan and 2 Feb are there; 9 Feb is past COUNT.
        assert!(!range("20260119T000000Z", "20260120T000000Z").matches(&cal));
        assert!(range("20260126T000000Z", "20260127T000000Z").matches(&cal));
        assert!(range("20260202T000000Z", "20260203T000000Z").matches(&cal));
        assert!(!range("20260209T000000Z", "20260210T000000Z").matches(&cal));
        // The end is exclusive: an hour ending at 09:00 UTC on 5 Jan misses it.
        assert!(!range("20260105T080000Z", "20260105T090000Z").matches(&cal));
    }

    #[test]
    fn events_without_an_end_take_no_time_or_a_day() {
        let instant = ics("BEGIN:VEVENT\r\nUID:i\r\nDTSTAMP:20260101T000000Z\r\n\
                           DTSTART:20260301T120000Z\r\nEND:VEVENT\r\n");
        assert!(range("20260301T120000Z", "20260301T120001Z").matches(&instant));
        assert!(!range("20260301T130000Z", "20260301T140000Z").matches(&instant));
        let day = ics("BEGIN:VEVENT\r\nUID:d\r\nDTSTAMP:20260101T000000Z\r\n\
                       DTSTART;VALUE=DATE:20260301\r\nEND:VEVENT\r\n");
        assert!(range("20260301T230000Z", "20260302T000000Z").matches(&day));
        assert!(!range("20260302T000000Z", "20260302T010000Z").matches(&day));
    }

    #[test]
    fn components_properties_and_parameters_filter() {
        let cal = weekly();
        let f = |xml: &str| calendar_filter(xml).unwrap().matches(&cal);
        let wrap =
            |inner: &str| format!("<C:comp-filter name=\"VCALENDAR\">{inner}</C:comp-filter>");
        assert!(f(&wrap("<C:comp-filter name=\"VEVENT\"/>")));
        assert!(!f(&wrap("<C:comp-filter name=\"VTODO\"/>")));
        assert!(f(&wrap(
            "<C:comp-filter name=\"VTODO\"><C:is-not-defined/></C:comp-filter>"
        )));
        let summary = |m: &str| {
            wrap(&format!(
                "<C:comp-filter name=\"VEVENT\"><C:prop-filter name=\"SUMMARY\">{m}</C:prop-filter></C:comp-filter>"
            ))
        };
        assert!(f(&summary("<C:text-match>STANDUP</C:text-match>")));
        assert!(!f(&summary(
            "<C:text-match collation=\"i;octet\">STANDUP</C:text-match>"
        )));
        assert!(f(&summary(
            "<C:text-match negate-condition=\"yes\">lunch</C:text-match>"
        )));
        let tzid = wrap(
            "<C:comp-filter name=\"VEVENT\"><C:prop-filter name=\"DTSTART\">\
             <C:param-filter name=\"TZID\"><C:text-match>berlin</C:text-match></C:param-filter>\
             </C:prop-filter></C:comp-filter>",
        );
        assert!(f(&tzid));
        // Not supported is said, not silently ignored.
        let alarm = wrap(
            "<C:comp-filter name=\"VEVENT\"><C:comp-filter name=\"VALARM\">\
             <C:time-range start=\"20260101T000000Z\"/></C:comp-filter></C:comp-filter>",
        );
        assert_eq!(
            calendar_filter(&alarm).unwrap_err().precondition,
            "supported-filter"
        );
        let collation = summary("<C:text-match collation=\"i;klingon\">x</C:text-match>");
        assert_eq!(
            calendar_filter(&collation).unwrap_err().precondition,
            "supported-collation"
        );
        assert_eq!(
            calendar_filter("<C:comp-filter name=\"VEVENT\"/>")
                .unwrap_err()
                .precondition,
            "valid-filter"
        );
    }

    #[test]
    fn address_book_filters_take_any_or_all() {
        let card = VCard::parse(
            "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:c\r\nFN:Ann Example\r\nN:Example;Ann;;;\r\n\
             EMAIL;TYPE=work:ann@example.test\r\nEND:VCARD\r\n",
        )
        .unwrap();
        let filter = |xml: &str| {
            let body =
                format!("<C:filter xmlns:C=\"urn:ietf:params:xml:ns:carddav\" {xml}</C:filter>");
            CardFilter::read(&super::super::xml::parse(body.as_bytes()).unwrap())
                .unwrap()
                .matches(&card)
        };
        assert!(filter(">"));
        assert!(filter(
            "><C:prop-filter name=\"FN\"><C:text-match match-type=\"starts-with\">ann</C:text-match></C:prop-filter>"
        ));
        assert!(!filter(
            "><C:prop-filter name=\"FN\"><C:text-match match-type=\"equals\">ann</C:text-match></C:prop-filter>"
        ));
        let either = "<C:prop-filter name=\"FN\"><C:text-match>zed</C:text-match></C:prop-filter>\
                      <C:prop-filter name=\"EMAIL\"><C:text-match>@example.test</C:text-match></C:prop-filter>";
        assert!(filter(&format!(">{either}")));
        assert!(!filter(&format!("test=\"allof\">{either}")));
        assert!(filter(
            "><C:prop-filter name=\"EMAIL\"><C:param-filter name=\"TYPE\"><C:text-match>WORK</C:text-match></C:param-filter></C:prop-filter>"
        ));
        assert!(filter(
            "><C:prop-filter name=\"TEL\"><C:is-not-defined/></C:prop-filter>"
        ));
        assert!(filter(
            "><C:prop-filter name=\"N\"><C:text-match>example;ann</C:text-match></C:prop-filter>"
        ));
    }
}
