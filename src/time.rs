//! RFC 3339 timestamps as nanoseconds since the Unix epoch (UTC).

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// An instant in UTC, comparable; nanosecond precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i128);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an RFC 3339 time (like `2026-01-31T12:00:00Z`)")]
pub struct TimestampError(pub String);

impl Timestamp {
    pub fn now() -> Self {
        Self::from_system(SystemTime::now())
    }

    pub fn from_system(time: SystemTime) -> Self {
        let nanos = match time.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i128,
            Err(e) => -(e.duration().as_nanos() as i128),
        };
        Timestamp(nanos)
    }

    pub fn unix_nanos(self) -> i128 {
        self.0
    }

    /// Parses `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`; `t`/`z` may be lower case.
    pub fn parse_rfc3339(text: &str) -> Result<Self, TimestampError> {
        parse(text.as_bytes()).ok_or_else(|| TimestampError(text.to_string()))
    }
}

fn digits(bytes: &[u8], from: usize, len: usize) -> Option<i64> {
    let slice = bytes.get(from..from + len)?;
    slice.iter().try_fold(0i64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
    })
}

fn parse(b: &[u8]) -> Option<Timestamp> {
    let year = digits(b, 0, 4)?;
    let month = digits(b, 5, 2)?;
    let day = digits(b, 8, 2)?;
    let hour = digits(b, 11, 2)?;
    let minute = digits(b, 14, 2)?;
    let second = digits(b, 17, 2)?;
    if b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || !matches!(b.get(10), Some(b'T' | b't'))
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
    {
        return None;
    }
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut nanos: i128 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 9 {
                nanos = nanos * 10 + i128::from(b[i] - b'0');
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return None;
        }
        for _ in n..9 {
            nanos *= 10;
        }
    }
    let offset_seconds = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let oh = digits(b, i + 1, 2)?;
            let om = digits(b, i + 4, 2)?;
            if oh > 23 || om > 59 {
                return None;
            }
            let off = oh * 3600 + om * 60;
            if *sign == b'+' { off } else { -off }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
    Some(Timestamp(i128::from(seconds) * 1_000_000_000 + nanos))
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl Timestamp {
    /// `YYYY-MM-DDTHH:MM:SS` and the nanoseconds after it.
    fn write_seconds(self, f: &mut fmt::Formatter<'_>) -> Result<i128, fmt::Error> {
        let secs = self.0.div_euclid(1_000_000_000) as i64;
        let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
        let s = secs.rem_euclid(86_400);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
            s / 3600,
            s / 60 % 60,
            s % 60
        )?;
        Ok(self.0.rem_euclid(1_000_000_000))
    }
}

impl Timestamp {
    /// Appends `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC, microseconds), as [`Micros`] displays it,
    /// digit by digit: the audit trail writes one per line.
    pub fn write_micros(self, out: &mut Vec<u8>) {
        let secs = self.0.div_euclid(1_000_000_000) as i64;
        let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
        let s = secs.rem_euclid(86_400);
        let micros = (self.0.rem_euclid(1_000_000_000) / 1000) as u32;
        let mut text = *b"0000-00-00T00:00:00.000000Z";
        let mut digits = |at: usize, width: usize, mut value: u32| {
            for i in (at..at + width).rev() {
                text[i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        digits(0, 4, y.clamp(0, 9999) as u32);
        digits(5, 2, m as u32);
        digits(8, 2, d as u32);
        digits(11, 2, (s / 3600) as u32);
        digits(14, 2, (s / 60 % 60) as u32);
        digits(17, 2, (s % 60) as u32);
        digits(20, 6, micros);
        out.extend_from_slice(&text);
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC, with a fraction only when there is one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.write_seconds(f)?;
        if nanos != 0 {
            write!(f, ".{:09}", nanos)?;
        }
        f.write_str("Z")
    }
}

/// RFC 3339 in UTC with exactly six fraction digits, as log lines carry it.
pub struct Micros(pub Timestamp);

impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.write_seconds(f)?;
        write!(f, ".{:06}Z", nanos / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn micros_always_carry_six_digits() {
        assert_eq!(
            Micros(ts("2026-11-26T12:55:45.8272259Z")).to_string(),
            "2026-11-26T12:55:45.827225Z"
        );
        assert_eq!(
            Micros(ts("1969-12-31T23:59:59Z")).to_string(),
            "1969-12-31T23:59:59.000000Z"
        );
    }

    #[test]
    fn micros_written_by_hand_match_their_display() {
        for text in [
            "2026-11-26T12:55:45.8272259Z",
            "1970-01-01T00:00:00Z",
            "1969-12-31T23:59:59.999999Z",
            "2024-02-29T23:59:59.000001Z",
            "9999-12-31T23:59:59.5Z",
        ] {
            let mut out = Vec::new();
            ts(text).write_micros(&mut out);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                Micros(ts(text)).to_string()
            );
        }
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
            "2024-02-29T12:30:00.123000000Z"
        );
        assert_eq!(
            ts("2020-01-01T00:00:00Z").to_string(),
            "2020-01-01T00:00:00Z"
        );
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
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00+0100",
            "2026-01-01T00:00:00Zjunk",
            "tomorrow",
            "",
        ] {
            assert!(Timestamp::parse_rfc3339(bad).is_err(), "{bad}");
        }
    }
}
