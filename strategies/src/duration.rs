//! Serde for durations written as `"250ms"`, `"5s"`, `"2m"` or as integer milliseconds.

use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Serializer;

/// The longest duration accepted: 10⁹ s (about 31 years).
pub const MAX: Duration = Duration::from_secs(1_000_000_000);

/// `value` doubled `doublings` times, at most `cap`, saturating instead of overflowing: the
/// one growth rule of every back-off in the project (adaptive cooldown, failure back-off,
/// interval back-off, adaptive sampling when calm, webhook retries).
///
/// ```
/// use std::time::Duration;
/// use perfpilot_strategies::duration::doubled_up_to;
///
/// let second = Duration::from_secs(1);
/// assert_eq!(doubled_up_to(second, 3, 60 * second), 8 * second);
/// assert_eq!(doubled_up_to(second, u32::MAX, 60 * second), 60 * second);
/// ```
pub fn doubled_up_to(value: Duration, doublings: u32, cap: Duration) -> Duration {
    value.saturating_mul(1 << doublings.min(31)).min(cap)
}

/// Parses `"250ms"`, `"5s"`, `"1.5s"`, `"2m"`, `"1h"`, `"1h 30m"` (humantime's units), or a
/// bare number of milliseconds (`"200"`, `"2.5"`). The one duration parser of the project:
/// the configuration (file, environment) and the command line use it.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let out_of_range = || format!("`{text}` is out of range (at most {}s)", MAX.as_secs());
    let duration = if !text.is_empty() && text.chars().all(|c| c.is_ascii_digit() || c == '.') {
        let ms: f64 = text
            .parse()
            .map_err(|_| format!("`{text}` is not a duration (use e.g. 250ms, 5s, 2m)"))?;
        Duration::try_from_secs_f64(ms / 1000.0).map_err(|_| out_of_range())?
    } else {
        humantime::parse_duration(text).map_err(|error| match error {
            humantime::DurationError::UnknownUnit { unit, .. } => {
                format!("`{text}`: unknown duration unit `{unit}` (use ms, s, m or h)")
            }
            humantime::DurationError::NumberOverflow => out_of_range(),
            _ => format!("`{text}` is not a duration (use e.g. 250ms, 5s, 2m)"),
        })?
    };
    if duration > MAX {
        return Err(out_of_range());
    }
    Ok(duration)
}

/// Formats a duration the way [`parse`] reads it back: `"250ms"`, `"5s"`.
pub fn format(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Serde serializer (as a string such as `"5s"`).
pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format(*duration))
}

/// Serde deserializer (a string with a unit, or integer milliseconds).
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a duration such as \"5s\" or \"250ms\", or integer milliseconds")
        }

        fn visit_u64<E: de::Error>(self, ms: u64) -> Result<Duration, E> {
            Ok(Duration::from_millis(ms))
        }

        fn visit_i64<E: de::Error>(self, ms: i64) -> Result<Duration, E> {
            u64::try_from(ms)
                .map(Duration::from_millis)
                .map_err(|_| E::custom(format!("{ms}: a duration cannot be negative")))
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            parse(text).map_err(E::custom)
        }
    }

    deserializer.deserialize_any(DurationVisitor)
}

/// What [`parse`] reads, as a JSON Schema regular expression: a number of milliseconds, or
/// numbers with units (`"250ms"`, `"1h 30m"`).
pub const PATTERN: &str = r"^\s*[0-9][0-9.]*\s*([a-zA-Zµ]+(\s*[0-9][0-9.]*\s*[a-zA-Zµ]+)*)?\s*$";

/// The JSON Schema of a duration field (`perfpilot schema`): a string [`parse`] reads, or
/// integer milliseconds.
#[cfg(feature = "schema")]
pub fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": ["string", "integer"],
        "pattern": PATTERN,
        "minimum": 0,
        "examples": ["250ms", "5s", "1h 30m"],
    })
}

/// The same for `Option<Duration>`.
pub mod option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Serde serializer.
    pub fn serialize<S: Serializer>(
        duration: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match duration {
            Some(d) => super::serialize(d, serializer),
            None => serializer.serialize_none(),
        }
    }

    /// Serde deserializer.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapper(#[serde(with = "super")] Duration);
        Ok(Option::<Wrapper>::deserialize(deserializer)?.map(|w| w.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_bare_milliseconds() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("200"), Ok(Duration::from_millis(200)));
        assert!(parse("fast").unwrap_err().contains("fast"));
        assert!(parse("5 parsecs").unwrap_err().contains("parsecs"));
        assert_eq!(parse("5 s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("2min"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("2.5"), Ok(Duration::from_micros(2500)));
        assert!(parse("-5").unwrap_err().contains("not a duration"));
        assert!(parse("").unwrap_err().contains("not a duration"));
        assert!(parse("99999999999h").unwrap_err().contains("out of range"));
        assert!(parse("1e99s").is_err());
    }

    #[test]
    fn format_round_trips() {
        for d in [Duration::from_millis(250), Duration::from_secs(30)] {
            assert_eq!(parse(&format(d)), Ok(d));
        }
    }
}
