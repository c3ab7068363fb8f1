//! The spam filter: rspamd judges each arriving message before its 250, and each
//! recipient domain's policy turns the verdict into refuse, junk or deliver.

mod checks;
mod clamav;
mod headers;
mod learn;
mod rspamd;

pub use checks::{Finding, inspect, is_lookalike};
pub use clamav::Clamd;
pub use headers::{is_spam_header, rewrite, strip};
pub use learn::{Learner, Lesson, direction};
pub use rspamd::{Facts, Rspamd, SpamError};

use crate::spec::model::{Spam, SpamChecks, SpamOnError};
use crate::store::records::SpamPolicy;

/// What `[spam]` declares: rspamd, clamd, or both, and how they are used.
pub struct Filter {
    pub rspamd: Option<std::sync::Arc<Rspamd>>,
    pub clamd: Option<Clamd>,
    pub checks: SpamChecks,
    pub on_error: SpamOnError,
    pub scan_outbound: bool,
}

impl Filter {
    /// None when the spec declares neither; secrets are resolved here.
    pub fn from_spec(spec: &Spam, base_dir: &std::path::Path) -> Result<Option<Filter>, SpamError> {
        let rspamd = Rspamd::from_spec(spec, base_dir)?.map(std::sync::Arc::new);
        let clamd = spec.antivirus.as_ref().map(Clamd::from_spec).transpose()?;
        if rspamd.is_none() && clamd.is_none() && spec.checks.is_none() {
            return Ok(None);
        }
        Ok(Some(Filter {
            rspamd,
            clamd,
            checks: spec.checks.unwrap_or_default(),
            on_error: spec.on_error,
            scan_outbound: spec.scan_outbound,
        }))
    }
}

/// What rspamd advises (its `action`), mildest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    NoAction,
    Greylist,
    AddHeader,
    RewriteSubject,
    SoftReject,
    Reject,
}

impl Action {
    pub fn parse(text: &str) -> Option<Action> {
        Some(match text {
            "no action" => Action::NoAction,
            "greylist" => Action::Greylist,
            "add header" => Action::AddHeader,
            "rewrite subject" => Action::RewriteSubject,
            "soft reject" => Action::SoftReject,
            "reject" => Action::Reject,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::NoAction => "no action",
            Action::Greylist => "greylist",
            Action::AddHeader => "add header",
            Action::RewriteSubject => "rewrite subject",
            Action::SoftReject => "soft reject",
            Action::Reject => "reject",
        }
    }
}

/// One rule that matched, with what it added to the score.
#[derive(Debug, Clone, PartialEq)]
pub struct Symbol {
    pub name: String,
    pub score: f64,
    pub options: Vec<String>,
}

/// rspamd's answer for one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub action: Action,
    pub score: f64,
    /// The score rspamd rejects at.
    pub required: f64,
    /// Largest contribution first.
    pub symbols: Vec<Symbol>,
    /// The text rspamd wants the SMTP reply to carry, if any.
    pub smtp_message: Option<String>,
    /// Header changes its modules ask for (the `milter` block): fields to add…
    pub add_headers: Vec<(String, String)>,
    /// …and to remove (0: every one of that name, n: the n-th).
    pub remove_headers: Vec<(String, usize)>,
}

/// What one recipient gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement {
    Deliver,
    /// Filed in Junk; not forwarded.
    Junk,
    Refuse,
}

impl Verdict {
    /// What stands for rspamd's verdict when only ferrymail's own checks judged.
    pub fn local() -> Verdict {
        Verdict {
            action: Action::NoAction,
            score: 0.0,
            required: 0.0,
            symbols: Vec::new(),
            smtp_message: None,
            add_headers: Vec::new(),
            remove_headers: Vec::new(),
        }
    }

    /// The recipient domain's thresholds where it sets them, rspamd's action where not.
    pub fn judge(&self, policy: &SpamPolicy) -> Judgement {
        let score = SpamPolicy::hundredths(self.score);
        let refuse = match policy.reject_score {
            Some(at) => score >= at,
            None => self.action == Action::Reject,
        };
        if refuse {
            return Judgement::Refuse;
        }
        let junk = match policy.junk_score {
            Some(at) => score >= at,
            // A reject the domain's own reject_score overrode is junk at least.
            None => matches!(
                self.action,
                Action::AddHeader | Action::RewriteSubject | Action::Reject
            ),
        };
        if junk {
            Judgement::Junk
        } else {
            Judgement::Deliver
        }
    }

    /// For the mail log: "score 7.90 (add header): RULE(8.00), OTHER(-0.10)", the
    /// largest few.
    pub fn summary(&self) -> String {
        let top: Vec<String> = self
            .symbols
            .iter()
            .filter(|s| s.score != 0.0)
            .take(6)
            .map(|s| format!("{}({:.2})", s.name, s.score))
            .collect();
        format!(
            "score {:.2} ({}){}{}",
            self.score,
            self.action.as_str(),
            if top.is_empty() { "" } else { ": " },
            top.join(", ")
        )
    }

    /// `X-Spamd-Result`, in rspamd's own layout: every symbol with its score and options.
    pub fn result_header(&self) -> String {
        let mut out = format!(
            "X-Spamd-Result: default: {} [{:.2} / {:.2}]",
            if self.action == Action::Reject {
                "True"
            } else {
                "False"
            },
            self.score,
            self.required
        );
        for s in &self.symbols {
            // A few options each, so that no line passes RFC 5322's 998 octets.
            let options = s
                .options
                .iter()
                .take(5)
                .map(|o| clean(o, 100))
                .collect::<Vec<_>>()
                .join(",");
            out.push_str(&format!(
                ";\r\n\t{}({:.2})[{options}]",
                clean(&s.name, 100),
                s.score
            ));
        }
        out.push_str("\r\n");
        out
    }

    /// The lines one recipient's copy starts with: whether it is spam, for the user's
    /// mail client and filters.
    pub fn status_lines(&self, judgement: Judgement) -> String {
        let junk = judgement != Judgement::Deliver;
        // "required" as SpamAssassin writes it: Sieve's spamtest reads the two.
        let mut out = format!(
            "X-Spam-Status: {}, score={:.2} required={:.2}\r\n",
            if junk { "Yes" } else { "No" },
            self.score,
            self.required
        );
        if junk {
            out.push_str("X-Spam-Flag: YES\r\n");
        }
        out
    }
}

/// Text from rspamd made safe for a header line: printable ASCII (a forwarded copy may
/// meet a server without SMTPUTF8), no line breaks, bounded.
fn clean(text: &str, max: usize) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .map(|c| match c {
            '[' | ']' => '_',
            c if c.is_ascii() => c,
            _ => '?',
        })
        .take(max)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(action: Action, score: f64) -> Verdict {
        Verdict {
            action,
            score,
            required: 15.0,
            symbols: vec![Symbol {
                name: "RULE".into(),
                score,
                options: vec!["a\r\nb".into()],
            }],
            smtp_message: None,
            add_headers: vec![],
            remove_headers: vec![],
        }
    }

    #[test]
    fn a_domain_threshold_overrides_the_action_it_covers() {
        let rspamd = SpamPolicy::default();
        assert_eq!(
            verdict(Action::Reject, 15.0).judge(&rspamd),
            Judgement::Refuse
        );
        assert_eq!(
            verdict(Action::AddHeader, 7.0).judge(&rspamd),
            Judgement::Junk
        );
        assert_eq!(
            verdict(Action::NoAction, 3.0).judge(&rspamd),
            Judgement::Deliver
        );
        let strict = SpamPolicy {
            reject_score: Some(500),
            junk_score: Some(200),
            junk_forward: None,
        };
        assert_eq!(
            verdict(Action::AddHeader, 7.0).judge(&strict),
            Judgement::Refuse
        );
        assert_eq!(
            verdict(Action::NoAction, 3.0).judge(&strict),
            Judgement::Junk
        );
        let lenient = SpamPolicy {
            reject_score: Some(2000),
            ..Default::default()
        };
        // rspamd would reject; this domain only junks it.
        assert_eq!(
            verdict(Action::Reject, 15.0).judge(&lenient),
            Judgement::Junk
        );
    }

    #[test]
    fn headers_carry_no_line_break_from_rspamd() {
        let header = verdict(Action::AddHeader, 7.9).result_header();
        assert!(
            header
                .starts_with("X-Spamd-Result: default: False [7.90 / 15.00];\r\n\tRULE(7.90)[ab]")
        );
        assert_eq!(header.matches("\r\n").count(), 2, "{header:?}");
    }
}
