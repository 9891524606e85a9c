//! Byte sizes written as integer bytes or as `"512MiB"`, `"1.5GiB"`, `"800MB"`, `"64KiB"`, `"2G"`.
//!
//! Binary units (`Ki`, `Mi`, `Gi`, `Ti`, with or without a trailing `B`) are powers of 1024;
//! decimal units (`K`, `M`, `G`, `T`, `KB`, `MB`, `GB`, `TB`) are powers of 1000, as in
//! Kubernetes resource quantities. Units are case-insensitive; `B` alone means bytes.

use serde::de::{self, Deserializer, Visitor};
use serde::Serializer;

/// The largest size accepted: `i64::MAX` bytes, so every value also fits a TOML integer.
pub const MAX: u64 = i64::MAX as u64;

/// What a size may look like, for error messages.
pub const ALLOWED: &str =
    "integer bytes or a size such as \"512MiB\", \"1.5GiB\", \"800MB\", \"64KiB\", \"2G\"";

/// Parses integer bytes (`"1048576"`) or a number with a unit (`"512MiB"`, `"1.5GiB"`, `"2G"`).
pub fn parse(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(format!("`{text}` is not a size (use {ALLOWED})"));
    }
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "ki" | "kib" => 1 << 10,
        "mi" | "mib" => 1 << 20,
        "gi" | "gib" => 1 << 30,
        "ti" | "tib" => 1 << 40,
        other => {
            return Err(format!(
            "`{text}`: unknown size unit `{other}` (use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)"
        ))
        }
    };
    let too_big = || format!("`{text}` is too large (at most {MAX} bytes)");
    if let Ok(whole) = number.parse::<u64>() {
        return whole
            .checked_mul(multiplier)
            .filter(|bytes| *bytes <= MAX)
            .ok_or_else(too_big);
    }
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size (use {ALLOWED})"))?;
    let bytes = (value * multiplier as f64).round();
    if !bytes.is_finite() || bytes > MAX as f64 {
        return Err(too_big());
    }
    Ok(bytes as u64)
}

/// What [`parse`] reads, as a JSON Schema regular expression.
pub const PATTERN: &str = r"^\s*[0-9][0-9.]*\s*([kKmMgGtT][iI]?)?[bB]?\s*$";

/// The JSON Schema of a size field (`perfpilot schema`): integer bytes, or a string [`parse`]
/// reads.
pub fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": ["string", "integer"],
        "pattern": PATTERN,
        "minimum": 0,
        "examples": ["512MiB", "2GB", 1048576],
    })
}

/// Formats a size for people: `"512 MiB"`, `"1.5 GiB"`, `"100 B"`.
#[allow(dead_code)] // the inverse of `parse`, kept beside it; only its test calls it today
pub fn format(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{} {}", (value * 100.0).round() / 100.0, UNITS[unit])
    }
}

/// Serde for `Option<u64>` byte sizes: serialized as integer bytes, read from integer bytes or
/// a string with a unit.
pub mod option {
    use super::*;

    /// Serde serializer (integer bytes, or none).
    pub fn serialize<S: Serializer>(bytes: &Option<u64>, serializer: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(bytes) => serializer.serialize_u64(*bytes),
            None => serializer.serialize_none(),
        }
    }

    /// Serde deserializer (integer bytes or a string such as `"512MiB"`).
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<u64>, D::Error> {
        deserializer.deserialize_option(OptionVisitor)
    }

    struct OptionVisitor;

    impl<'de> Visitor<'de> for OptionVisitor {
        type Value = Option<u64>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(ALLOWED)
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(
            self,
            deserializer: D,
        ) -> Result<Self::Value, D::Error> {
            deserializer.deserialize_any(BytesVisitor).map(Some)
        }
    }

    struct BytesVisitor;

    impl Visitor<'_> for BytesVisitor {
        type Value = u64;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(ALLOWED)
        }

        fn visit_u64<E: de::Error>(self, bytes: u64) -> Result<u64, E> {
            if bytes > MAX {
                return Err(E::custom(format!(
                    "{bytes} is too large (at most {MAX} bytes)"
                )));
            }
            Ok(bytes)
        }

        fn visit_i64<E: de::Error>(self, bytes: i64) -> Result<u64, E> {
            u64::try_from(bytes)
                .map_err(|_| E::custom(format!("{bytes}: a size cannot be negative")))
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<u64, E> {
            parse(text).map_err(E::custom)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_integer_bytes_and_units() {
        assert_eq!(parse("1048576"), Ok(1 << 20));
        assert_eq!(parse("512MiB"), Ok(512 << 20));
        assert_eq!(parse("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse("800MB"), Ok(800_000_000));
        assert_eq!(parse("64KiB"), Ok(64 << 10));
        assert_eq!(parse("2G"), Ok(2_000_000_000));
        assert_eq!(parse("2Gi"), Ok(2 << 30));
        assert_eq!(parse(" 100 b "), Ok(100));
        assert_eq!(parse("512mib"), Ok(512 << 20));
    }

    #[test]
    fn rejects_what_is_not_a_size() {
        assert!(parse("lots").unwrap_err().contains("lots"));
        assert!(parse("5 parsecs").unwrap_err().contains("parsecs"));
        assert!(parse("").is_err());
        assert!(parse("99999999999TiB").unwrap_err().contains("too large"));
    }

    #[test]
    fn formats_for_people() {
        assert_eq!(format(100), "100 B");
        assert_eq!(format(512 << 20), "512 MiB");
        assert_eq!(format(3 << 29), "1.5 GiB");
    }
}

/// Serde for `u64` byte sizes: serialized as integer bytes, read from integer bytes or a
/// string with a unit.
pub mod plain {
    use super::*;

    /// Serde serializer (integer bytes).
    pub fn serialize<S: Serializer>(bytes: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(*bytes)
    }

    /// Serde deserializer (integer bytes or a string such as `"64MiB"`).
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        option::deserialize(deserializer)?.ok_or_else(|| de::Error::custom(ALLOWED))
    }
}
