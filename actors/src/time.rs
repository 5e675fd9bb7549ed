//! Times as the API shows them.

use std::time::{Duration, UNIX_EPOCH};

/// Microseconds since the Unix epoch, as RFC 3339.
pub fn rfc3339(micros: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_micros(u64::try_from(micros).unwrap_or(0));
    humantime::format_rfc3339_micros(at).to_string()
}
