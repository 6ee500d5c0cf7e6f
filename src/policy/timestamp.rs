//! Instants as policies, `--now` and replayed records write them: RFC 3339 with an offset,
//! read by the `time` crate's RFC 3339 parser and compared in UTC.

use std::fmt;
use std::time::SystemTime;

use time::UtcDateTime;
use time::format_description::well_known::Rfc3339;

/// An instant in UTC, comparable; nanosecond precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(UtcDateTime);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an RFC 3339 time (like `2026-01-31T12:00:00Z`)")]
pub struct TimestampError(pub String);

impl Timestamp {
    pub fn now() -> Self {
        Self::from_system(SystemTime::now())
    }

    pub fn from_system(time: SystemTime) -> Self {
        Timestamp(time.into())
    }

    pub fn unix_nanos(self) -> i128 {
        self.0.unix_timestamp_nanos()
    }

    /// The calendar fields in UTC: year, month, day, hour, minute, second, microsecond.
    pub fn utc_fields(self) -> [u32; 7] {
        let t = self.0;
        [
            u32::try_from(t.year()).unwrap_or(0),
            u32::from(u8::from(t.month())),
            u32::from(t.day()),
            u32::from(t.hour()),
            u32::from(t.minute()),
            u32::from(t.second()),
            t.microsecond(),
        ]
    }

    /// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, `T` and `Z` in either case. A second `60` is a
    /// leap second only where one can be (the last second of a UTC day), read as the
    /// nanosecond before the next second; more than nine fraction digits are cut.
    pub fn parse_rfc3339(text: &str) -> Result<Self, TimestampError> {
        // The `time` crate takes any character between date and time (RFC 3339's note allows
        // a space); the contract's times separate them with `T`.
        let separated = matches!(text.as_bytes().get(10), Some(b'T' | b't'));
        time::OffsetDateTime::parse(text, &Rfc3339)
            .ok()
            .filter(|_| separated)
            .map(|t| Timestamp(t.to_utc()))
            .ok_or_else(|| TimestampError(text.to_string()))
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC, with a fraction only when there is one (without trailing zeros).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.format(&Rfc3339) {
            Ok(text) => f.write_str(&text),
            // Years before 0 or after 9999 have no RFC 3339 form.
            Err(_) => write!(f, "{}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn parses_and_orders() {
        assert_eq!(ts("1970-01-01T00:00:00Z").unix_nanos(), 0);
        assert_eq!(
            ts("2026-01-01T00:00:00Z").unix_nanos(),
            1_767_225_600_000_000_000
        );
        assert_eq!(ts("2026-01-01T01:00:00+01:00"), ts("2026-01-01T00:00:00Z"));
        assert_eq!(ts("2026-01-01t00:00:00z"), ts("2026-01-01T00:00:00Z"));
        assert!(ts("2026-01-01T00:00:00.5Z") > ts("2026-01-01T00:00:00Z"));
        assert_eq!(
            ts("2024-02-29T12:30:00.123Z").to_string(),
            "2024-02-29T12:30:00.123Z"
        );
        assert_eq!(
            ts("2020-01-01T00:00:00Z").to_string(),
            "2020-01-01T00:00:00Z"
        );
        assert_eq!(
            ts("2026-11-26T12:55:45.8272259Z").utc_fields(),
            [2026, 11, 26, 12, 55, 45, 827_225]
        );
    }

    #[test]
    fn a_leap_second_only_ends_a_utc_day() {
        let leap = ts("2016-12-31T23:59:60Z");
        assert!(leap > ts("2016-12-31T23:59:59.999999998Z"));
        assert!(leap < ts("2017-01-01T00:00:00Z"));
        assert_eq!(ts("2017-01-01T00:59:60+01:00"), leap);
        for bad in ["2026-01-01T12:30:60Z", "2016-12-31T23:58:60Z"] {
            assert!(Timestamp::parse_rfc3339(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rejects_what_is_not_rfc3339() {
        for bad in [
            "2026-01-01",
            "2026-01-01T00:00:00",
            "2026-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01 00:00:00Z",
            "2026-01-01X00:00:00Z",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00+0100",
            "2026-01-01T00:00:00Zjunk",
            "2026-01-01T00:00:00+24:00",
            "tomorrow",
            "",
        ] {
            assert!(Timestamp::parse_rfc3339(bad).is_err(), "{bad}");
        }
    }
}
