//! The one format of times in what the agent writes for others to read (the API's documents,
//! the target's and the configuration's status): RFC 3339 in UTC with milliseconds,
//! `2026-11-22T10:15:30.123Z`.

use std::time::SystemTime;

use serde::Serializer;

/// `time` as RFC 3339 in UTC with milliseconds (`2026-11-22T10:15:30.123Z`).
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// Serializes a `SystemTime` as [`rfc3339`], for `#[serde(serialize_with = ...)]`.
pub fn serialize_rfc3339<S: Serializer>(
    time: &SystemTime,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_rfc3339_millis(*time))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn times_are_utc_with_milliseconds() {
        let time = UNIX_EPOCH + Duration::from_millis(1_795_083_330_123);
        assert_eq!(rfc3339(time), "2026-11-19T10:15:30.123Z");
        let json = serde_json::to_string(&Wrapped(time)).unwrap();
        assert_eq!(json, "\"2026-11-19T10:15:30.123Z\"");
    }

    #[derive(serde::Serialize)]
    struct Wrapped(#[serde(serialize_with = "serialize_rfc3339")] SystemTime);
}
