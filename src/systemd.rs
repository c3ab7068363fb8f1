//! systemd integration over $NOTIFY_SOCKET: READY=1 once serving, a STATUS= line after
//! each reconcile, STOPPING=1, and watchdog pings. Outside systemd every call is a no-op.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::watch;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "systemd notification not sent");
    }
}

/// The server is up: listeners bound, the first reconcile done.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A one-line state for `systemctl status`.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// Shutting down (systemd then waits for the exit rather than thinking it crashed).
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// Pings the watchdog at half the interval systemd asked for (WatchdogSec=), until
/// shutdown. Returns at once when there is no watchdog.
pub async fn watchdog(mut shutdown: watch::Receiver<bool>) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let mut tick = tokio::time::interval((interval / 2).max(Duration::from_millis(100)));
    loop {
        tokio::select! {
            _ = tick.tick() => send(&[NotifyState::Watchdog]),
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}
