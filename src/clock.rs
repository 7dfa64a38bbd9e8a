//! The wall clock every layer reads: milliseconds since the Unix epoch, as stored records,
//! frames and analytics buckets carry them.

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
