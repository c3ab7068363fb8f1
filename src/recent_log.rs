//! The last warnings and errors of this process, kept in memory (a bounded ring) for the
//! web admin's error log; the full log still goes to stderr/journald.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

/// Lines kept; older ones fall off.
const KEEP: usize = 1000;

static RECENT: Mutex<VecDeque<Line>> = Mutex::new(VecDeque::new());

#[derive(Debug, Clone)]
pub struct Line {
    /// Unix seconds.
    pub at: i64,
    pub level: &'static str,
    pub target: String,
    /// The message, then its fields as `name=value`.
    pub text: String,
}

/// The kept lines, newest first.
pub fn lines() -> Vec<Line> {
    RECENT
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .rev()
        .cloned()
        .collect()
}

/// A tracing layer that keeps each event it sees (filter it to WARN and up).
pub struct Layer;

#[derive(Default)]
struct Collect {
    message: String,
    fields: String,
}

impl Visit for Collect {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Layer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut collect = Collect::default();
        event.record(&mut collect);
        let line = Line {
            at: crate::store::unix_now(),
            level: event.metadata().level().as_str(),
            target: event.metadata().target().to_string(),
            text: format!("{}{}", collect.message, collect.fields),
        };
        let mut recent = RECENT.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() >= KEEP {
            recent.pop_front();
        }
        recent.push_back(line);
    }
}
