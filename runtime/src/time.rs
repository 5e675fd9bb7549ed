//! Times as the API and the logs show them: RFC 3339, UTC.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A store timestamp (microseconds since the Unix epoch) as RFC 3339 with microseconds.
pub fn rfc3339_micros(micros: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_micros(u64::try_from(micros).unwrap_or(0));
    humantime::format_rfc3339_micros(at).to_string()
}

/// Now, as RFC 3339 with milliseconds.
pub fn rfc3339_now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Now, in milliseconds since the Unix epoch.
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn store_timestamps_read_as_utc() {
        assert_eq!(
            super::rfc3339_micros(1_700_000_000_123_456),
            "2023-11-14T22:13:20.123456Z"
        );
        assert_eq!(super::rfc3339_micros(-5), "1970-01-01T00:00:00.000000Z");
    }
}
