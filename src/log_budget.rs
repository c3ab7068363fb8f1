//! A cap on log lines of one kind per minute, for events a stranger can cause at will
//! (failed logins from a botnet): past the cap they are counted and summed up in one line.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);

/// Lines of one kind: up to `per_minute` each minute, then one summary when it ends.
#[derive(Clone)]
pub struct LogBudget {
    what: &'static str,
    per_minute: u32,
    state: Arc<Mutex<Window>>,
}

struct Window {
    started: Instant,
    logged: u32,
    left_out: u64,
}

impl LogBudget {
    /// `what` names the events in the summary, e.g. "failed logins".
    pub fn new(what: &'static str, per_minute: u32) -> Self {
        LogBudget {
            what,
            per_minute,
            state: Arc::new(Mutex::new(Window {
                started: Instant::now(),
                logged: 0,
                left_out: 0,
            })),
        }
    }

    /// Whether this event gets its own line. When it does not, it is counted, and the
    /// count is logged as the minute ends.
    pub fn allows(&self) -> bool {
        let now = Instant::now();
        let mut window = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if now.duration_since(window.started) >= WINDOW {
            self.sum_up(&mut window);
            *window = Window {
                started: now,
                logged: 0,
                left_out: 0,
            };
        }
        if window.logged < self.per_minute {
            window.logged += 1;
            return true;
        }
        window.left_out += 1;
        if window.left_out == 1 {
            // The summary must not wait for the next event, which may never come.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let (budget, started) = (self.clone(), window.started);
                runtime.spawn(async move {
                    tokio::time::sleep_until((started + WINDOW).into()).await;
                    let mut window = budget.state.lock().unwrap_or_else(|e| e.into_inner());
                    if window.started == started {
                        budget.sum_up(&mut window);
                    }
                });
            }
        }
        false
    }

    fn sum_up(&self, window: &mut Window) {
        if window.left_out > 0 {
            tracing::warn!(
                left_out = window.left_out,
                "{} more {} in the last minute, not logged one by one (at most {} a minute are)",
                window.left_out,
                self.what,
                self.per_minute
            );
            window.left_out = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_cap_events_are_counted_not_logged() {
        let budget = LogBudget::new("failed logins", 3);
        let allowed = (0..10).filter(|_| budget.allows()).count();
        assert_eq!(allowed, 3);
        let window = budget.state.lock().unwrap();
        assert_eq!(window.left_out, 7);
    }
}
