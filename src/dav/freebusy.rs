//! free-busy-query (RFC 4791 §7.10): when a calendar's owner is busy in a time range, as
//! one VFREEBUSY, from the instances of its events and the periods of its VFREEBUSYs.

use std::collections::BTreeMap;

use calcard::icalendar::{
    ICalendar, ICalendarComponent, ICalendarComponentType, ICalendarParameterName, ICalendarPeriod,
    ICalendarProperty, ICalendarValue,
};

use super::instances::instances;
use crate::collections::Span;

/// How busy a period is (the FBTYPE parameter, RFC 5545 §3.2.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FbType {
    Busy,
    Unavailable,
    Tentative,
}

impl FbType {
    fn fbtype(self) -> Option<&'static str> {
        match self {
            FbType::Busy => None,
            FbType::Unavailable => Some("BUSY-UNAVAILABLE"),
            FbType::Tentative => Some("BUSY-TENTATIVE"),
        }
    }
}

/// Busy periods one answer may gather before merging: a calendar of events every
/// minute for ever is 10,000 instances per object, and 100,000 objects may be asked for.
const MAX_PERIODS: usize = 200_000;

/// The busy periods of a calendar in one range, merged per kind of busy.
pub struct FreeBusy {
    range: (i64, i64),
    periods: BTreeMap<FbType, Vec<(i64, i64)>>,
    gathered: usize,
}

impl FreeBusy {
    pub fn new(range: (i64, i64)) -> FreeBusy {
        FreeBusy {
            range,
            periods: BTreeMap::new(),
            gathered: 0,
        }
    }

    /// Whether more periods were met than an answer takes: it is then refused, since a
    /// part of them would say busy time is free.
    pub fn overflowed(&self) -> bool {
        self.gathered > MAX_PERIODS
    }

    /// Adds what one calendar object makes busy.
    pub fn add(&mut self, calendar: &ICalendar) {
        for instance in instances(calendar, self.range.1) {
            let Some(component) = calendar.component_by_id(instance.component) else {
                continue;
            };
            if component.component_type != ICalendarComponentType::VEvent
                || instance.end <= instance.start
            {
                continue;
            }
            if let Some(busy) = event_busy(component) {
                self.period(busy, instance.start, instance.end);
            }
        }
        for component in &calendar.components {
            if component.component_type == ICalendarComponentType::VFreebusy {
                self.published(component);
            }
        }
    }

    /// The FREEBUSY periods of a stored VFREEBUSY.
    fn published(&mut self, component: &ICalendarComponent) {
        for entry in component
            .entries
            .iter()
            .filter(|e| e.name == ICalendarProperty::Freebusy)
        {
            let busy = match entry
                .params
                .iter()
                .find(|p| p.name == ICalendarParameterName::Fbtype)
                .and_then(|p| p.value.as_text())
                .map(str::to_ascii_uppercase)
                .as_deref()
            {
                Some("FREE") => continue,
                Some("BUSY-UNAVAILABLE") => FbType::Unavailable,
                Some("BUSY-TENTATIVE") => FbType::Tentative,
                _ => FbType::Busy,
            };
            for value in &entry.values {
                let ICalendarValue::Period(period) = value else {
                    continue;
                };
                let bounds = match period {
                    ICalendarPeriod::Range { start, end } => start
                        .to_date_time()
                        .zip(end.to_date_time())
                        .map(|(s, e)| (unix(&s), unix(&e))),
                    ICalendarPeriod::Duration { start, duration } => start
                        .to_date_time()
                        .zip(duration.to_time_delta())
                        .map(|(s, d)| (unix(&s), unix(&s).saturating_add(d.num_seconds()))),
                };
                if let Some((start, end)) = bounds {
                    self.period(busy, start, end);
                }
            }
        }
    }

    fn period(&mut self, busy: FbType, start: i64, end: i64) {
        let (from, to) = self.range;
        if end > start && Span::overlaps(start, end, self.range) && !self.overflowed() {
            self.gathered += 1;
            if self.overflowed() {
                return;
            }
            self.periods
                .entry(busy)
                .or_default()
                .push((start.max(from), end.min(to)));
        }
    }

    /// The answer: one VCALENDAR with one VFREEBUSY (RFC 4791 §7.10).
    pub fn to_ical(&self, now: i64) -> String {
        let mut out = format!(
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//ferrymail//CalDAV//EN\r\n\
             BEGIN:VFREEBUSY\r\nDTSTAMP:{}\r\nDTSTART:{}\r\nDTEND:{}\r\n",
            utc(now),
            utc(self.range.0),
            utc(self.range.1)
        );
        for (busy, periods) in &self.periods {
            for (start, end) in merged(periods.clone()) {
                let name = match busy.fbtype() {
                    Some(fbtype) => format!("FREEBUSY;FBTYPE={fbtype}"),
                    None => "FREEBUSY".to_string(),
                };
                out.push_str(&format!("{name}:{}/{}\r\n", utc(start), utc(end)));
            }
        }
        out.push_str("END:VFREEBUSY\r\nEND:VCALENDAR\r\n");
        out
    }
}

/// How an event makes its owner busy: not at all when it is transparent or cancelled.
fn event_busy(component: &ICalendarComponent) -> Option<FbType> {
    let text = |property: ICalendarProperty| {
        component
            .property(&property)
            .and_then(|e| e.values.first())
            .and_then(ICalendarValue::as_text)
            .map(str::to_ascii_uppercase)
    };
    if text(ICalendarProperty::Transp).as_deref() == Some("TRANSPARENT") {
        return None;
    }
    match text(ICalendarProperty::Status).as_deref() {
        Some("CANCELLED") => None,
        Some("TENTATIVE") => Some(FbType::Tentative),
        _ => Some(FbType::Busy),
    }
}

/// Overlapping and touching periods as one.
fn merged(mut periods: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    periods.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::with_capacity(periods.len());
    for (start, end) in periods {
        match out.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
}

/// A FREEBUSY time (UTC by RFC 5545 §3.8.2.6; an offset, if sent, is honoured).
fn unix(time: &calcard::common::DateTimeResult) -> i64 {
    let local = time.date_time.and_utc().timestamp();
    local - time.offset.map_or(0, |o| i64::from(o.local_minus_utc()))
}

fn utc(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .unwrap_or_default()
        .format("%Y%m%dT%H%M%SZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> i64 {
        chrono::NaiveDateTime::parse_from_str(text, "%Y%m%dT%H%M%SZ")
            .unwrap()
            .and_utc()
            .timestamp()
    }

    fn ics(body: &str) -> ICalendar {
        ICalendar::parse(format!(
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:t\r\n{body}END:VCALENDAR\r\n"
        ))
        .unwrap()
    }

    #[test]
    fn busy_time_is_merged_clipped_and_typed() {
        let mut fb = FreeBusy::new((at("20260302T000000Z"), at("20260303T000000Z")));
        // Daily 09:00–10:00 from 1 March: the 2 March instance counts.
        fb.add(&ics(
            "BEGIN:VEVENT\r\nUID:a\r\nDTSTAMP:20260101T000000Z\r\n\
                     DTSTART:20260301T090000Z\r\nDURATION:PT1H\r\nRRULE:FREQ=DAILY\r\n\
                     END:VEVENT\r\n",
        ));
        // 09:30–11:00 overlaps it: one period 09:00–11:00.
        fb.add(&ics(
            "BEGIN:VEVENT\r\nUID:b\r\nDTSTAMP:20260101T000000Z\r\n\
                     DTSTART:20260302T093000Z\r\nDTEND:20260302T110000Z\r\nEND:VEVENT\r\n",
        ));
        // Tentative, transparent, cancelled.
        fb.add(&ics(
            "BEGIN:VEVENT\r\nUID:c\r\nDTSTAMP:20260101T000000Z\r\n\
                     DTSTART:20260302T140000Z\r\nDURATION:PT1H\r\nSTATUS:TENTATIVE\r\n\
                     END:VEVENT\r\n",
        ));
        fb.add(&ics(
            "BEGIN:VEVENT\r\nUID:d\r\nDTSTAMP:20260101T000000Z\r\n\
                     DTSTART:20260302T160000Z\r\nDURATION:PT1H\r\nTRANSP:TRANSPARENT\r\n\
                     END:VEVENT\r\n",
        ));
        fb.add(&ics(
            "BEGIN:VEVENT\r\nUID:e\r\nDTSTAMP:20260101T000000Z\r\n\
                     DTSTART:20260302T170000Z\r\nDURATION:PT1H\r\nSTATUS:CANCELLED\r\n\
                     END:VEVENT\r\n",
        ));
        // Late on the 2nd into the 3rd: clipped at the range's end.
        fb.add(&ics(
            "BEGIN:VEVENT\r\nUID:f\r\nDTSTAMP:20260101T000000Z\r\n\
                     DTSTART:20260302T230000Z\r\nDURATION:PT2H\r\nEND:VEVENT\r\n",
        ));
        let text = fb.to_ical(at("20260101T000000Z"));
        assert!(
            text.contains("FREEBUSY:20260302T090000Z/20260302T110000Z\r\n"),
            "{text}"
        );
        assert!(
            text.contains("FREEBUSY:20260302T230000Z/20260303T000000Z\r\n"),
            "{text}"
        );
        assert!(
            text.contains("FREEBUSY;FBTYPE=BUSY-TENTATIVE:20260302T140000Z/20260302T150000Z\r\n")
        );
        assert!(
            !text.contains("T160000Z") && !text.contains("T170000Z"),
            "{text}"
        );
        assert!(text.contains("DTSTART:20260302T000000Z\r\nDTEND:20260303T000000Z\r\n"));
    }

    #[test]
    fn a_calendar_busy_every_second_is_refused_not_cut() {
        let mut fb = FreeBusy::new((at("20260101T000000Z"), at("20270101T000000Z")));
        // 10,000 one-second meetings two seconds apart per object, 21 objects.
        for i in 0..21 {
            fb.add(&ics(&format!(
                "BEGIN:VEVENT\r\nUID:s{i}\r\nDTSTAMP:20260101T000000Z\r\n\
                 DTSTART:202603{:02}T000000Z\r\nDURATION:PT1S\r\n\
                 RRULE:FREQ=SECONDLY;INTERVAL=2\r\nEND:VEVENT\r\n",
                i + 1
            )));
        }
        assert!(fb.overflowed());
        let stored: usize = fb.periods.values().map(Vec::len).sum();
        assert!(stored <= MAX_PERIODS, "{stored}");
    }
}
