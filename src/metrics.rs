//! Prometheus metrics: the values gathered at scrape time from where they live (the mail
//! log's counters, logins, the reconciler, the queue, certificates, backups), rendered
//! in the text exposition format by prometheus-client.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Everything /metrics reports, read at one moment.
#[derive(Debug, Clone, Default)]
pub struct Values {
    /// Mail log records by event (accepted, rejected, delivered, deferred, bounced).
    pub messages: Vec<(&'static str, u64)>,
    pub auth_failures: u64,
    pub auth_throttled: u64,
    pub reconcile_runs: u64,
    pub reconcile_failures: u64,
    pub store_revision: u64,
    pub queue_deliveries: u64,
    /// Seconds the oldest waiting message has been queued.
    pub queue_oldest_age: Option<i64>,
    /// (first name, source, Unix time it expires) of every served certificate.
    pub certificates: Vec<(String, String, i64)>,
    /// Unix time of the last successful backup, when backups are declared.
    pub last_backup: Option<i64>,
    pub backups_declared: bool,
}

type Labels = Vec<(String, String)>;

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let c: Counter = Counter::default();
    c.inc_by(value);
    registry.register(name, help, c);
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let g: Gauge = Gauge::default();
    g.set(value);
    registry.register(name, help, g);
}

/// The text exposition of `values` (counters get their `_total` suffix).
pub fn render(values: &Values) -> String {
    let mut registry = Registry::default();
    let messages = Family::<Labels, Counter>::default();
    for (event, n) in &values.messages {
        messages
            .get_or_create(&vec![("event".to_string(), event.to_string())])
            .inc_by(*n);
    }
    registry.register(
        "ferrymail_messages",
        "Mail log records since start, by event (accepted, rejected, delivered, deferred, bounced)",
        messages,
    );
    counter(
        &mut registry,
        "ferrymail_auth_failures",
        "Failed logins (SMTP AUTH, IMAP, POP3) since start",
        values.auth_failures,
    );
    counter(
        &mut registry,
        "ferrymail_auth_throttled",
        "Logins refused unchecked after too many failures, since start",
        values.auth_throttled,
    );
    counter(
        &mut registry,
        "ferrymail_reconcile_runs",
        "Reconciles run since start",
        values.reconcile_runs,
    );
    counter(
        &mut registry,
        "ferrymail_reconcile_failures",
        "Reconciles that failed (spec invalid or apply error) since start",
        values.reconcile_failures,
    );
    gauge(
        &mut registry,
        "ferrymail_store_revision",
        "The store revision being served",
        values.store_revision as i64,
    );
    gauge(
        &mut registry,
        "ferrymail_queue_deliveries",
        "Deliveries waiting in the queue",
        values.queue_deliveries as i64,
    );
    gauge(
        &mut registry,
        "ferrymail_queue_oldest_age_seconds",
        "Age of the oldest queued message (0 when the queue is empty)",
        values.queue_oldest_age.unwrap_or(0),
    );
    let expiry = Family::<Labels, Gauge>::default();
    for (name, source, not_after) in &values.certificates {
        expiry
            .get_or_create(&vec![
                ("name".to_string(), name.clone()),
                ("source".to_string(), source.clone()),
            ])
            .set(*not_after);
    }
    registry.register(
        "ferrymail_certificate_expiry_timestamp_seconds",
        "When each served certificate expires (Unix time)",
        expiry,
    );
    if values.backups_declared {
        gauge(
            &mut registry,
            "ferrymail_backup_last_success_timestamp_seconds",
            "When the last successful backup started (Unix time; 0: never)",
            values.last_backup.unwrap_or(0),
        );
    }
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_text_exposition_format() {
        let text = render(&Values {
            messages: vec![("accepted", 3), ("rejected", 1)],
            auth_failures: 2,
            certificates: vec![("mx.example.test".into(), "acme".into(), 1_800_000_000)],
            backups_declared: true,
            ..Default::default()
        });
        assert!(
            text.contains("ferrymail_messages_total{event=\"accepted\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("ferrymail_auth_failures_total 2\n"), "{text}");
        assert!(text.contains(
            "ferrymail_certificate_expiry_timestamp_seconds{name=\"mx.example.test\",source=\"acme\"} 1800000000\n"
        ), "{text}");
        assert!(
            text.contains("ferrymail_backup_last_success_timestamp_seconds 0\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
