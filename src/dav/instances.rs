//! When a calendar object happens: its instances (recurrences expanded by calcard), only as
//! far as a query needs them, and the span kept beside it so queries skip what cannot match.

use calcard::common::timezone::Tz;
use calcard::icalendar::{
    ICalendar, ICalendarComponent, ICalendarComponentType, ICalendarParameterName,
    ICalendarProperty, ICalendarValue,
};

use crate::collections::Span;

/// Instances a recurring object is expanded to, at most, for one query: the bound on
/// what one object can cost.
pub const MAX_INSTANCES: usize = 10_000;
/// Instances worked out when an object is stored: a rule that goes on past them gets an
/// open end.
const STORED_INSTANCES: usize = 1_000;
/// The first try of a query's expansion, raised eightfold while the rule has not yet
/// passed the query's end (a rule "every year, for ever" is not expanded 10,000 times
/// to answer for one year).
const FIRST_TRY: usize = 64;

/// One instance: the component it comes from, start and end in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instance {
    pub component: u32,
    pub start: i64,
    pub end: i64,
}

/// What decides how far an expansion must go.
struct Recurrence {
    /// Components with an RRULE.
    rules: usize,
    /// The one component with an RRULE, when expanding it is a plain ascending walk:
    /// no RDATE beside it and no override that shifts the instances after it.
    walk: Option<u32>,
    /// EXDATE values: iterations of the rule that give no instance.
    exdates: usize,
    /// Components that override one instance (RECURRENCE-ID).
    overrides: bool,
    /// Components with a time: the object is one instance only if there is one.
    timed: usize,
}

fn recurrence(calendar: &ICalendar) -> Recurrence {
    let mut r = Recurrence {
        rules: 0,
        walk: None,
        exdates: 0,
        overrides: false,
        timed: 0,
    };
    let mut rdates = false;
    let mut shifting = false;
    for (id, component) in calendar.components.iter().enumerate() {
        if !component.component_type.has_time_ranges() {
            continue;
        }
        r.timed += 1;
        for entry in &component.entries {
            match entry.name {
                ICalendarProperty::Rrule => {
                    r.rules += 1;
                    r.walk = Some(id as u32);
                }
                ICalendarProperty::Rdate => rdates = true,
                ICalendarProperty::Exdate => r.exdates += entry.values.len(),
                ICalendarProperty::RecurrenceId => {
                    r.overrides = true;
                    shifting |= entry
                        .params
                        .iter()
                        .any(|p| p.name == ICalendarParameterName::Range);
                }
                _ => {}
            }
        }
    }
    if r.rules != 1 || rdates || shifting {
        r.walk = None;
    }
    r
}

/// The instances of up to `limit` iterations of the rules, and whether that was all of
/// them. Floating times are read as UTC, here and in the time ranges they are tested
/// against.
fn expand(calendar: &ICalendar, recurrence: &Recurrence, limit: usize) -> (Vec<Instance>, bool) {
    use calcard::icalendar::dates::TimeOrDelta;
    let expanded = calendar.expand_dates(Tz::UTC, limit);
    // Each iteration gives an instance or meets an EXDATE: fewer than `limit` of both
    // together and the rules ended before the limit did.
    let complete = recurrence.rules == 0 || expanded.events.len() + recurrence.exdates < limit;
    let instances = expanded
        .events
        .into_iter()
        .map(|event| {
            let start = event.start.timestamp();
            let end = match event.end {
                TimeOrDelta::Time(end) => end.timestamp(),
                TimeOrDelta::Delta(delta) => start.saturating_add(delta.num_seconds()),
            };
            let end = match calendar.component_by_id(event.comp_id) {
                // A VEVENT with a DATE-TIME start and neither end nor duration takes no
                // time (RFC 5545 §3.6.1); calcard stretches it to the end of its day.
                Some(c) if instant_event(c) => start,
                _ => end,
            };
            Instance {
                component: event.comp_id,
                start,
                // An end before the start is read as no time at all.
                end: end.max(start),
            }
        })
        .collect();
    (instances, complete)
}

/// Every instance that may overlap a range ending at `until`: a rule is expanded until
/// it passes `until` or ends, and never past `MAX_INSTANCES`.
pub fn instances(calendar: &ICalendar, until: i64) -> Vec<Instance> {
    let recurrence = recurrence(calendar);
    let mut limit = match recurrence.walk {
        Some(_) => FIRST_TRY,
        None => MAX_INSTANCES,
    };
    loop {
        let (instances, complete) = expand(calendar, &recurrence, limit);
        // The walk's own instances come in ascending order: one at `until` or after
        // means the rest are too.
        let passed = instances
            .iter()
            .any(|i| Some(i.component) == recurrence.walk && i.start >= until);
        if complete || passed || limit >= MAX_INSTANCES {
            return instances;
        }
        limit = (limit * 8).min(MAX_INSTANCES);
    }
}

/// The span to store beside an object.
pub fn span(calendar: &ICalendar) -> Span {
    let recurrence = recurrence(calendar);
    let (instances, complete) = expand(calendar, &recurrence, STORED_INSTANCES);
    let (Some(start), Some(end)) = (
        instances.iter().map(|i| i.start).min(),
        instances.iter().map(|i| i.end).max(),
    ) else {
        // Nothing calcard can place in time: left to the filter.
        return Span::ANY;
    };
    if complete {
        return Span {
            start,
            end,
            exact: instances.len() == 1 && recurrence.timed == 1,
        };
    }
    // A rule that goes on: later iterations come after these, except where another rule
    // or a shifting override may put them anywhere.
    Span {
        start: if recurrence.walk.is_some() {
            start
        } else {
            i64::MIN
        },
        end: i64::MAX,
        exact: false,
    }
}

fn instant_event(component: &ICalendarComponent) -> bool {
    component.component_type == ICalendarComponentType::VEvent
        && component.property(&ICalendarProperty::Dtend).is_none()
        && component.property(&ICalendarProperty::Duration).is_none()
        && component
            .property(&ICalendarProperty::Dtstart)
            .and_then(|e| e.values.first())
            .is_some_and(|v| matches!(v, ICalendarValue::PartialDateTime(dt) if dt.has_time()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ics(body: &str) -> ICalendar {
        ICalendar::parse(format!(
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:t\r\n{body}END:VCALENDAR\r\n"
        ))
        .unwrap()
    }

    fn at(text: &str) -> i64 {
        chrono::NaiveDateTime::parse_from_str(text, "%Y%m%dT%H%M%SZ")
            .unwrap()
            .and_utc()
            .timestamp()
    }

    #[test]
    fn one_event_is_exact_and_a_rule_that_goes_on_is_open() {
        let one = ics("BEGIN:VEVENT\r\nUID:a\r\nDTSTAMP:20260101T000000Z\r\n\
                       DTSTART:20260301T100000Z\r\nDURATION:PT1H\r\nEND:VEVENT\r\n");
        assert_eq!(
            span(&one),
            Span {
                start: at("20260301T100000Z"),
                end: at("20260301T110000Z"),
                exact: true
            }
        );
        let counted = ics("BEGIN:VEVENT\r\nUID:b\r\nDTSTAMP:20260101T000000Z\r\n\
                           DTSTART:20260301T100000Z\r\nDURATION:PT1H\r\n\
                           RRULE:FREQ=WEEKLY;COUNT=3\r\nEND:VEVENT\r\n");
        assert_eq!(
            span(&counted),
            Span {
                start: at("20260301T100000Z"),
                end: at("20260315T110000Z"),
                exact: false
            }
        );
        let forever = ics("BEGIN:VEVENT\r\nUID:c\r\nDTSTAMP:20260101T000000Z\r\n\
                           DTSTART:20260301T100000Z\r\nDURATION:PT1H\r\n\
                           RRULE:FREQ=DAILY\r\nEND:VEVENT\r\n");
        assert_eq!(
            span(&forever),
            Span {
                start: at("20260301T100000Z"),
                end: i64::MAX,
                exact: false
            }
        );
        // Two rules that go on: the second's start is not known from the first's.
        let two = ics("BEGIN:VEVENT\r\nUID:d\r\nDTSTAMP:20260101T000000Z\r\n\
                       DTSTART:20260301T100000Z\r\nRRULE:FREQ=DAILY\r\n\
                       RRULE:FREQ=HOURLY\r\nEND:VEVENT\r\n");
        assert!(!span(&two).exact);
        let todo = ics("BEGIN:VTODO\r\nUID:e\r\nDTSTAMP:20260101T000000Z\r\nEND:VTODO\r\n");
        assert_eq!(span(&todo), Span::ANY);
    }

    #[test]
    fn a_rule_for_ever_is_expanded_only_past_the_range() {
        let forever = ics("BEGIN:VEVENT\r\nUID:c\r\nDTSTAMP:20260101T000000Z\r\n\
                           DTSTART:20000301T100000Z\r\nDURATION:PT1H\r\n\
                           RRULE:FREQ=YEARLY\r\nEXDATE:20300301T100000Z\r\nEND:VEVENT\r\n");
        let list = instances(&forever, at("20310101T000000Z"));
        assert!(list.len() < 100, "{}", list.len());
        let years: Vec<i64> = list.iter().map(|i| i.start).collect();
        assert!(years.contains(&at("20290301T100000Z")));
        assert!(!years.contains(&at("20300301T100000Z")));
        assert!(years.contains(&at("20310301T100000Z")));
        // Where the range ends beyond a first try, the expansion goes on as needed.
        let far = instances(&forever, at("22000101T000000Z"));
        assert!(far.iter().any(|i| i.start == at("21990301T100000Z")));
        // With no end, every instance up to the bound.
        let daily = ics("BEGIN:VEVENT\r\nUID:d\r\nDTSTAMP:20260101T000000Z\r\n\
                         DTSTART:20000301T100000Z\r\nRRULE:FREQ=DAILY\r\nEND:VEVENT\r\n");
        assert_eq!(instances(&daily, i64::MAX).len(), MAX_INSTANCES);
    }
}
