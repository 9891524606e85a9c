//! The `Range` request header (RFC 9110 §14.1.2 and §14.2), for one representation of known
//! length.
//!
//! Only the `bytes` unit is understood. A header in any other unit is ignored, as §14.2
//! requires, and the whole representation is served. A `bytes` header that does not parse is
//! rejected as a whole (the service answers 416), and of several ranges only the first
//! satisfiable one is served: video players ask for one range at a time, and a single part
//! keeps the response a plain byte stream instead of `multipart/byteranges`.

/// An inclusive byte range `first..=last` inside the representation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// Offset of the first byte served.
    pub first: u64,
    /// Offset of the last byte served (inclusive, as in `Content-Range`).
    pub last: u64,
}

impl ByteRange {
    /// The whole representation of `total` bytes; `None` when it is empty.
    pub fn whole(total: u64) -> Option<Self> {
        total.checked_sub(1).map(|last| Self { first: 0, last })
    }

    /// Number of bytes in the range.
    pub fn len(&self) -> u64 {
        self.last - self.first + 1
    }
}

/// Why a `Range` header selects no bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeError {
    /// The unit is not `bytes`: ignore the header and serve the whole representation.
    UnknownUnit,
    /// The header does not follow the `bytes=` grammar.
    Malformed,
    /// Every range starts at or past the end (or is an empty suffix).
    Unsatisfiable,
}

/// One `range-spec` before it is resolved against the length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    /// `first-last`
    Closed(u64, u64),
    /// `first-`
    From(u64),
    /// `-length`: the last `length` bytes.
    Suffix(u64),
}

/// Parses a `Range` header value and returns its first range satisfiable within `total`
/// bytes, clamped to the end of the representation.
pub fn parse(header: &str, total: u64) -> Result<ByteRange, RangeError> {
    let (unit, set) = header.split_once('=').ok_or(RangeError::Malformed)?;
    if !unit.eq_ignore_ascii_case("bytes") {
        return if is_token(unit) {
            Err(RangeError::UnknownUnit)
        } else {
            Err(RangeError::Malformed)
        };
    }
    // Lists may carry empty elements and optional whitespace (RFC 9110 §5.6.1).
    let specs = set
        .split(',')
        .map(|spec| spec.trim_matches([' ', '\t']))
        .filter(|spec| !spec.is_empty())
        .map(parse_spec)
        .collect::<Result<Vec<_>, _>>()?;
    if specs.is_empty() {
        return Err(RangeError::Malformed);
    }
    specs
        .into_iter()
        .find_map(|spec| resolve(spec, total))
        .ok_or(RangeError::Unsatisfiable)
}

fn parse_spec(spec: &str) -> Result<Spec, RangeError> {
    match spec.split_once('-').ok_or(RangeError::Malformed)? {
        ("", suffix) => Ok(Spec::Suffix(digits(suffix)?)),
        (first, "") => Ok(Spec::From(digits(first)?)),
        (first, last) => {
            let (first, last) = (digits(first)?, digits(last)?);
            if last < first {
                return Err(RangeError::Malformed);
            }
            Ok(Spec::Closed(first, last))
        }
    }
}

/// `1*DIGIT`; a number too large for `u64` lies past any end, so it saturates.
fn digits(text: &str) -> Result<u64, RangeError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RangeError::Malformed);
    }
    Ok(text.parse().unwrap_or(u64::MAX))
}

fn resolve(spec: Spec, total: u64) -> Option<ByteRange> {
    let end = total.checked_sub(1)?;
    match spec {
        Spec::Closed(first, last) if first <= end => Some(ByteRange {
            first,
            last: last.min(end),
        }),
        Spec::From(first) if first <= end => Some(ByteRange { first, last: end }),
        Spec::Suffix(length) if length > 0 => Some(ByteRange {
            first: total - length.min(total),
            last: end,
        }),
        _ => None,
    }
}

/// An RFC 9110 `token` (the syntax of a range unit).
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

// Cargo runs no unit tests of an example (unless `test = true`, which would stop `cargo test`
// from building the binary that tests/streaming_service.rs starts), so that test file
// includes this module with `#[path]` and these tests run there.
#[cfg(test)]
mod tests {
    use super::*;

    fn range(first: u64, last: u64) -> Result<ByteRange, RangeError> {
        Ok(ByteRange { first, last })
    }

    #[test]
    fn parses_the_three_forms_and_clamps_to_the_end() {
        let cases: &[(&str, u64, Result<ByteRange, RangeError>)] = &[
            ("bytes=0-99", 1000, range(0, 99)),
            ("bytes=0-0", 1000, range(0, 0)),
            ("bytes=990-5000", 1000, range(990, 999)),
            ("bytes=5-", 1000, range(5, 999)),
            ("bytes=-10", 1000, range(990, 999)),
            ("bytes=-5000", 1000, range(0, 999)),
            ("BYTES=1-2", 1000, range(1, 2)),
            ("bytes= 1-2 , 3-4", 1000, range(1, 2)),
            ("bytes=,1-2", 1000, range(1, 2)),
            ("bytes=0-99999999999999999999999", 1000, range(0, 999)),
        ];
        for (header, total, expected) in cases {
            assert_eq!(parse(header, *total), *expected, "{header}");
        }
    }

    #[test]
    fn serves_the_first_satisfiable_of_several_ranges() {
        assert_eq!(parse("bytes=0-9,20-29", 100), range(0, 9));
        assert_eq!(parse("bytes=500-,20-29", 100), range(20, 29));
        assert_eq!(parse("bytes=500-,-0", 100), Err(RangeError::Unsatisfiable));
    }

    #[test]
    fn rejects_unsatisfiable_ranges() {
        for header in [
            "bytes=1000-",
            "bytes=1000-2000",
            "bytes=-0",
            "bytes=999999999-",
        ] {
            assert_eq!(
                parse(header, 1000),
                Err(RangeError::Unsatisfiable),
                "{header}"
            );
        }
        assert_eq!(parse("bytes=0-", 0), Err(RangeError::Unsatisfiable));
        assert_eq!(parse("bytes=-1", 0), Err(RangeError::Unsatisfiable));
    }

    #[test]
    fn rejects_malformed_headers() {
        for header in [
            "bytes=abc",
            "bytes",
            "bytes=",
            "bytes=,",
            "bytes=-",
            "bytes=5",
            "bytes=9-5",
            "bytes=+5-",
            "bytes=1-2,x",
            "bytes=1--2",
            "bytes =1-2",
            "=1-2",
        ] {
            assert_eq!(parse(header, 1000), Err(RangeError::Malformed), "{header}");
        }
    }

    #[test]
    fn ignores_other_units() {
        assert_eq!(parse("items=0-5", 1000), Err(RangeError::UnknownUnit));
    }

    #[test]
    fn whole_and_len() {
        assert_eq!(ByteRange::whole(0), None);
        assert_eq!(ByteRange::whole(10), Some(ByteRange { first: 0, last: 9 }));
        assert_eq!(ByteRange { first: 5, last: 5 }.len(), 1);
    }
}
