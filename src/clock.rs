//! The wall clock in Unix seconds, for every layer: a leaf module, so the mailbox or the
//! SMTP session need not import the queue (or the store) to know the time.

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
