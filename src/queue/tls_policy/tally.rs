//! How each outbound TLS session went, counted per policy domain and day (RFC 8460's
//! material): counted in memory by the delivery workers, added to the queue's store each minute.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::queue::Queue;

/// What a session to a receiving MX came to, in RFC 8460 §4.3's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    Success,
    StarttlsNotSupported,
    CertificateHostMismatch,
    CertificateExpired,
    CertificateNotTrusted,
    ValidationFailure,
    StsPolicyFetchError,
    StsPolicyInvalid,
    TlsaInvalid,
    DnssecInvalid,
}

impl Outcome {
    /// The result-type of RFC 8460 §4.3 (None for a success).
    pub fn result_type(self) -> Option<&'static str> {
        Some(match self {
            Outcome::Success => return None,
            Outcome::StarttlsNotSupported => "starttls-not-supported",
            Outcome::CertificateHostMismatch => "certificate-host-mismatch",
            Outcome::CertificateExpired => "certificate-expired",
            Outcome::CertificateNotTrusted => "certificate-not-trusted",
            Outcome::ValidationFailure => "validation-failure",
            Outcome::StsPolicyFetchError => "sts-policy-fetch-error",
            Outcome::StsPolicyInvalid => "sts-policy-invalid",
            Outcome::TlsaInvalid => "tlsa-invalid",
            Outcome::DnssecInvalid => "dnssec-invalid",
        })
    }

    pub const ALL: [Outcome; 10] = [
        Outcome::Success,
        Outcome::StarttlsNotSupported,
        Outcome::CertificateHostMismatch,
        Outcome::CertificateExpired,
        Outcome::CertificateNotTrusted,
        Outcome::ValidationFailure,
        Outcome::StsPolicyFetchError,
        Outcome::StsPolicyInvalid,
        Outcome::TlsaInvalid,
        Outcome::DnssecInvalid,
    ];

    pub fn parse(text: &str) -> Option<Outcome> {
        Outcome::ALL
            .into_iter()
            .find(|o| o.result_type().unwrap_or("success") == text)
    }

    /// The outcome a certificate check's failure stands for.
    pub fn of_certificate(e: &rustls::Error) -> Outcome {
        use rustls::CertificateError as C;
        match e {
            rustls::Error::InvalidCertificate(
                C::NotValidForName | C::NotValidForNameContext { .. },
            ) => Outcome::CertificateHostMismatch,
            rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
                Outcome::CertificateExpired
            }
            rustls::Error::InvalidCertificate(C::UnknownIssuer) => Outcome::CertificateNotTrusted,
            rustls::Error::InvalidCertificate(C::Other(other))
                if other
                    .0
                    .downcast_ref::<super::dane_check::TlsaMismatch>()
                    .is_some() =>
            {
                Outcome::TlsaInvalid
            }
            _ => Outcome::ValidationFailure,
        }
    }
}

/// Sessions of one kind on one day: the unit reports are made of.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SessionKey {
    /// UTC day, "2026-12-05".
    pub day: String,
    /// The policy domain (lower-case A-labels).
    pub domain: String,
    /// "sts", or "no-policy-found".
    pub policy_type: String,
    /// The policy's text ("" without one).
    pub policy: String,
    /// The receiving MX's name ("" when no MX was reached: a policy fetch failed).
    pub mx_host: String,
    /// Its address ("" as above).
    pub receiving_ip: String,
    /// Our address on that connection.
    pub sending_ip: String,
    pub outcome: Outcome,
}

/// A count of sessions, as the store returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sessions {
    pub key: SessionKey,
    pub count: u64,
}

/// Counts in memory, written to the store in batches.
#[derive(Default)]
pub struct Tally {
    counts: Mutex<HashMap<SessionKey, u64>>,
}

impl Tally {
    pub fn count(&self, key: SessionKey) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        *counts.entry(key).or_default() += 1;
    }

    /// Adds what was counted since the last flush to the store; kept for the next try
    /// when the store fails.
    pub fn flush(&self, queue: &dyn Queue) {
        let taken: Vec<Sessions> = {
            let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
            counts
                .drain()
                .map(|(key, count)| Sessions { key, count })
                .collect()
        };
        if taken.is_empty() {
            return;
        }
        if let Err(e) = queue.add_tls_sessions(&taken) {
            tracing::warn!(error = %e, "keeping the TLS session counts failed; trying again in a minute");
            let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
            for s in taken {
                *counts.entry(s.key).or_default() += s.count;
            }
        }
    }

    /// Flushes every minute, and once more at shutdown.
    pub async fn run(
        self: Arc<Self>,
        queue: Arc<dyn Queue>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        crate::queue::counts::flush_each_minute(queue, shutdown, move |queue, kept_from| {
            self.flush(queue);
            if let Err(e) = queue.forget_tls_sessions(kept_from) {
                tracing::warn!(error = %e, "forgetting old TLS session counts");
            }
        })
        .await
    }
}

/// Today's UTC day, as session keys name it.
pub fn today() -> String {
    day_of(crate::queue::now_unix())
}

/// The UTC day of a Unix time, "YYYY-MM-DD".
pub fn day_of(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc_calendar_days() {
        assert_eq!(day_of(0), "1970-01-01");
        assert_eq!(day_of(86_399), "1970-01-01");
        assert_eq!(day_of(86_400), "1970-01-02");
        assert_eq!(day_of(951_782_400), "2000-02-29");
        assert_eq!(day_of(1_796_428_800), "2026-12-05");
        assert_eq!(day_of(-1), "1969-12-31");
    }

    #[test]
    fn outcomes_read_back_and_name_rfc_8460_result_types() {
        for o in Outcome::ALL {
            assert_eq!(
                Outcome::parse(o.result_type().unwrap_or("success")),
                Some(o)
            );
        }
        assert_eq!(
            Outcome::of_certificate(&rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer
            )),
            Outcome::CertificateNotTrusted
        );
    }
}
