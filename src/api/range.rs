//! The `Range` header of a playback request, read by RFC 9110 (§14): tower-http's `ServeFile`
//! answers 416 to a header it cannot parse, where the RFC says to ignore it.
//!
//! A header that does not parse, names a unit other than `bytes`, or asks for more than one
//! range is ignored: the whole object is served (200). Numbers too large for `u64` mean "past
//! any end": a first position is then unsatisfiable, a last position or suffix length clamps.

use std::ops::RangeInclusive;

/// What a request's `Range` asks of an object of a known length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requested {
    /// No usable `Range`: the whole object, 200.
    Full,
    /// These bytes, within the object: 206.
    Part(RangeInclusive<u64>),
    /// A valid range that selects nothing: 416 with `Content-Range: bytes */{len}`.
    Unsatisfiable,
}

/// Optional whitespace (RFC 9110 §5.6.3).
const OWS: [char; 2] = [' ', '\t'];

/// Reads a `Range` value against an object of `len` bytes.
pub fn requested(value: &[u8], len: u64) -> Requested {
    let Ok(value) = std::str::from_utf8(value) else { return Requested::Full };
    let Some((unit, set)) = value.trim_matches(OWS).split_once('=') else { return Requested::Full };
    if !unit.eq_ignore_ascii_case("bytes") {
        return Requested::Full;
    }
    // Empty list elements are allowed (§5.6.1); more than one range is served as the whole.
    let mut specs = set.split(',').map(|s| s.trim_matches(OWS)).filter(|s| !s.is_empty());
    let (Some(spec), None) = (specs.next(), specs.next()) else { return Requested::Full };
    let Some((first, last)) = spec.split_once('-') else { return Requested::Full };
    match (digits(first), digits(last)) {
        // `-{suffix}`: the last bytes.
        (None, Some(suffix)) if first.is_empty() => {
            let suffix = value_of(suffix);
            if suffix == 0 || len == 0 {
                return Requested::Unsatisfiable;
            }
            Requested::Part(len - suffix.min(len)..=len - 1)
        }
        // `{first}-`: from `first` to the end.
        (Some(first), None) if last.is_empty() => from(value_of(first), u64::MAX, len),
        (Some(first), Some(last)) if !less(last, first) => from(value_of(first), value_of(last), len),
        _ => Requested::Full,
    }
}

/// `first..=last`, clamped to the object.
fn from(first: u64, last: u64, len: u64) -> Requested {
    if first >= len {
        return Requested::Unsatisfiable;
    }
    Requested::Part(first..=last.min(len - 1))
}

/// A run of decimal digits without its leading zeros ("0" for zero); `None` if `s` is not one.
fn digits(s: &str) -> Option<&str> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let trimmed = s.trim_start_matches('0');
    Some(if trimmed.is_empty() { "0" } else { trimmed })
}

/// The value of [`digits`], `u64::MAX` if it is larger.
fn value_of(digits: &str) -> u64 {
    digits.parse().unwrap_or(u64::MAX)
}

/// `a < b` for [`digits`] of any length.
fn less(a: &str, b: &str) -> bool {
    (a.len(), a) < (b.len(), b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Requested::{Full, Part, Unsatisfiable};
    use proptest::prelude::*;

    #[test]
    fn the_forms_of_rfc_9110() {
        let cases: [(&str, Requested); 19] = [
            ("bytes=0-99", Part(0..=99)),
            ("bytes=500-", Part(500..=999)),
            ("bytes=-500", Part(500..=999)),
            ("bytes=-5000", Part(0..=999)),
            ("bytes=900-5000", Part(900..=999)),
            ("Bytes = 1-2", Full), // no whitespace around `=`
            (" BYTES=1-2 ", Part(1..=2)),
            ("bytes=0-99999999999999999999999", Part(0..=999)),
            ("bytes=-99999999999999999999999", Part(0..=999)),
            ("bytes=99999999999999999999999-", Unsatisfiable),
            ("bytes=1000-", Unsatisfiable),
            ("bytes=1000-2000", Unsatisfiable),
            ("bytes=-0", Unsatisfiable),
            ("bytes=5-4", Full),
            ("bytes=99999999999999999999999-99999999999999999999998", Full),
            ("bytes=0-1,5-6", Full),
            ("bytes=, 0-1 ,", Part(0..=1)),
            ("garbage", Full),
            ("items=0-1", Full),
        ];
        for (value, expected) in cases {
            assert_eq!(requested(value.as_bytes(), 1000), expected, "{value}");
        }
        assert_eq!(requested(b"bytes=-1", 0), Unsatisfiable);
        assert_eq!(requested(b"bytes=0-", 0), Unsatisfiable);
        assert_eq!(requested(b"bytes=+1-2", 1000), Full);
        assert_eq!(requested(b"bytes=0x1-2", 1000), Full);
        assert_eq!(requested(&[0xff, b'='], 1000), Full);
    }

    fn within(requested: &Requested, len: u64) -> bool {
        match requested {
            Part(range) => range.start() <= range.end() && *range.end() < len,
            Full | Unsatisfiable => true,
        }
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic_and_stay_within(value in proptest::collection::vec(any::<u8>(), 0..40), len in any::<u64>()) {
            prop_assert!(within(&requested(&value, len), len));
        }

        #[test]
        fn range_like_text_stays_within(
            value in "[bB][yY][tT][eE][sS]=[ 0-9,-]{0,30}|bytes=[0-9]{0,25}-[0-9]{0,25}",
            len in prop_oneof![0..10u64, any::<u64>()],
        ) {
            prop_assert!(within(&requested(value.as_bytes(), len), len));
        }

        #[test]
        fn one_range_is_what_the_rfc_says(first in 0..2000u64, last in 0..2000u64, len in 0..2000u64) {
            let expected = if last < first {
                Full
            } else if first >= len {
                Unsatisfiable
            } else {
                Part(first..=last.min(len - 1))
            };
            prop_assert_eq!(requested(format!("bytes={first}-{last}").as_bytes(), len), expected);
            let suffix = if first == 0 || len == 0 { Unsatisfiable } else { Part(len - first.min(len)..=len - 1) };
            prop_assert_eq!(requested(format!("bytes=-{first}").as_bytes(), len), suffix);
        }
    }
}
