//! The vacation responder an operator declares in the spec: a Sieve `vacation` action
//! (RFC 5230) written from its fields, in effect between its two dates.

use chrono::NaiveDate;

use crate::spec::model::Vacation;

/// RFC 5230 §4.1's recommended default: one reply per sender a week.
pub const DEFAULT_DAYS: u32 = 7;

/// The script the declaration stands for.
pub fn script(vacation: &Vacation) -> String {
    format!("require [\"vacation\"];\n{}", action(vacation))
}

/// The `vacation` command alone, for a script that requires the extension itself.
pub fn action(vacation: &Vacation) -> String {
    let mut out = String::from("vacation");
    out.push_str(&format!(
        " :days {}",
        vacation.days.unwrap_or(DEFAULT_DAYS).max(1)
    ));
    if let Some(subject) = &vacation.subject {
        out.push_str(&format!(" :subject {}", quoted(subject)));
    }
    // A reply's body is a message body: CRLF line ends whatever the spec file used.
    let body = vacation.body.replace("\r\n", "\n").replace('\n', "\r\n");
    out.push_str(&format!(" {};\n", quoted(&body)));
    out
}

/// Whether replies go out on `today` (UTC): from its first day through its last, both
/// included; an unparsable date (refused by validate) never matches.
pub fn in_effect(vacation: &Vacation, today: NaiveDate) -> bool {
    let day = |text: &Option<String>| text.as_deref().map(parse_date);
    let after_start = match day(&vacation.from) {
        None => true,
        Some(Some(from)) => today >= from,
        Some(None) => false,
    };
    let before_end = match day(&vacation.until) {
        None => true,
        Some(Some(until)) => today <= until,
        Some(None) => false,
    };
    after_start && before_end
}

/// "2026-12-20", as the spec writes dates.
pub fn parse_date(text: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").ok()
}

/// Today in UTC from the Unix clock.
pub fn today(now_unix: i64) -> NaiveDate {
    chrono::DateTime::from_timestamp(now_unix, 0)
        .map(|t| t.date_naive())
        .unwrap_or_default()
}

/// A Sieve quoted string (RFC 5228 §2.4.2): only `"` and `\` need a backslash.
pub(crate) fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vacation() -> Vacation {
        Vacation {
            from: Some("2026-12-20".into()),
            until: Some("2027-01-05".into()),
            subject: Some("Away \"till\" January \\o/".into()),
            body: "I am away.\nBack on the 6th.".into(),
            days: None,
        }
    }

    #[test]
    fn the_declaration_compiles_to_a_vacation_action() {
        let text = script(&vacation());
        assert!(text.contains(":days 7"), "{text}");
        assert!(
            text.contains(r#":subject "Away \"till\" January \\o/""#),
            "{text}"
        );
        assert!(text.contains("away.\r\nBack"), "{text}");
        crate::sieve::compile(text.as_bytes()).expect("the written script compiles");
    }

    #[test]
    fn it_is_in_effect_from_its_first_through_its_last_day() {
        let v = vacation();
        let day = |s| parse_date(s).unwrap();
        assert!(!in_effect(&v, day("2026-12-19")));
        assert!(in_effect(&v, day("2026-12-20")));
        assert!(in_effect(&v, day("2027-01-05")));
        assert!(!in_effect(&v, day("2027-01-06")));
        let open = Vacation {
            from: None,
            until: None,
            ..vacation()
        };
        assert!(in_effect(&open, day("1999-01-01")));
        assert_eq!(today(1_797_033_600 + 86_399), day("2026-12-12"));
    }
}
