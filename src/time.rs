//! Event time: strict RFC 3339 parsing (SPEC "Precise points") and formatting.
//!
//! Times are whole seconds since the Unix epoch (`i64`), UTC. Fractional seconds are dropped, as SPEC says.
//! The parser is hand-written because SPEC's grammar is narrower than what date crates accept
//! (no leap second, no `-00:00` special case, no space for `T`, offset hours 00-23).

/// Seconds since 1970-01-01T00:00:00Z.
pub type Ts = i64;

/// Seconds in one day.
pub const DAY: Ts = 86_400;

/// Why a time string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("not YYYY-MM-DDTHH:MM:SS[.fraction] followed by Z or +HH:MM/-HH:MM")]
    Syntax,
    #[error("not a real calendar date")]
    Date,
    #[error("hour, minute or second out of range")]
    Clock,
    #[error("offset out of range")]
    Offset,
}

fn digits(b: &[u8]) -> Option<i64> {
    let mut v = 0i64;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i64::from(c - b'0');
    }
    Some(v)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (inverse of [`days_from_civil`]).
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)` (`t`, `z` allowed) to epoch seconds.
pub fn parse_rfc3339(s: &str) -> Result<Ts, TimeError> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return Err(TimeError::Syntax);
    }
    let sep = |i: usize, c: u8| b[i] == c;
    if !(sep(4, b'-') && sep(7, b'-') && (b[10] == b'T' || b[10] == b't') && sep(13, b':') && sep(16, b':')) {
        return Err(TimeError::Syntax);
    }
    let field = |r: std::ops::Range<usize>| digits(&b[r]).ok_or(TimeError::Syntax);
    let (y, mo, d) = (field(0..4)?, field(5..7)?, field(8..10)?);
    let (h, mi, sec) = (field(11..13)?, field(14..16)?, field(17..19)?);
    let mut i = 19;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return Err(TimeError::Syntax);
        }
    }
    let offset = match &b[i..] {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let oh = digits(&[*h1, *h2]).ok_or(TimeError::Syntax)?;
            let om = digits(&[*m1, *m2]).ok_or(TimeError::Syntax)?;
            if oh > 23 || om > 59 {
                return Err(TimeError::Offset);
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'-' { -o } else { o }
        }
        _ => return Err(TimeError::Syntax),
    };
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) {
        return Err(TimeError::Date);
    }
    if h > 23 || mi > 59 || sec > 59 {
        return Err(TimeError::Clock);
    }
    Ok(days_from_civil(y, mo, d) * DAY + h * 3600 + mi * 60 + sec - offset)
}

/// Formats epoch seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_rfc3339(t: Ts) -> String {
    let (days, secs) = (t.div_euclid(DAY), t.rem_euclid(DAY));
    let (y, m, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        // Years outside 0000-9999 only arise from offsets or timers at the edges: `-0001`, `10000`.
        let sign = if y < 0 { "-" } else { "" };
        return format!(
            "{sign}{:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            y.abs(),
            secs / 3600,
            secs % 3600 / 60,
            secs % 60
        );
    }
    // Digits written in place: every alert record has several timestamps, and `format!` is most of its cost.
    let mut text = *b"0000-00-00T00:00:00Z";
    for (at, width, value) in
        [(0, 4, y), (5, 2, m), (8, 2, d), (11, 2, secs / 3600), (14, 2, secs % 3600 / 60), (17, 2, secs % 60)]
    {
        let mut v = value;
        for i in (at..at + width).rev() {
            text[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    String::from_utf8(text.to_vec()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_offsets_and_drops_fractions() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_rfc3339("1970-01-01T08:00:00+08:00"), Ok(0));
        assert_eq!(parse_rfc3339("1969-12-31t19:00:00.999-05:00"), Ok(0));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01.5z"), Ok(1));
        assert_eq!(parse_rfc3339("2025-03-01T09:30:00+08:00"), Ok(1_740_792_600));
    }

    #[test]
    fn refuses_what_spec_refuses() {
        for bad in [
            "2025-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-04-31T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T23:60:00Z",
            "2024-01-01T23:59:60Z",
            "2024-01-01T00:00:00+24:00",
            "2024-01-01T00:00:00+08:60",
            "2024-01-01T00:00:00",
            "2024-01-01 00:00:00Z",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00+0800",
            "2024-1-01T00:00:00Z",
            "+2024-01-01T00:00:00Z",
            "2024-01-01T00:00:00ZZ",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad} accepted");
        }
        assert!(parse_rfc3339("2024-02-29T00:00:00Z").is_ok());
        assert!(parse_rfc3339("2000-02-29T00:00:00Z").is_ok());
        assert!(parse_rfc3339("1900-02-29T00:00:00Z").is_err());
    }

    #[test]
    fn civil_round_trips() {
        for days in [-800_000, -1, 0, 1, 19_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(format_rfc3339(1_740_792_600), "2025-03-01T01:30:00Z");
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(format_rfc3339(253_402_300_799), "9999-12-31T23:59:59Z");
        assert_eq!(format_rfc3339(-62_167_219_200), "0000-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(-62_167_219_201), "-0001-12-31T23:59:59Z");
        assert_eq!(format_rfc3339(253_402_300_800), "10000-01-01T00:00:00Z");
        // The in-place digits agree with `format!` over the whole range of event times (a stride that visits
        // every second of the day, day of the month and month over the years).
        let mut t: Ts = -62_167_219_200;
        while t <= 253_402_300_799 {
            let (days, secs) = (t.div_euclid(DAY), t.rem_euclid(DAY));
            let (y, m, d) = civil_from_days(days);
            let slow = format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60);
            assert_eq!(format_rfc3339(t), slow);
            assert_eq!(parse_rfc3339(&slow), Ok(t));
            t += 86_399 * 37 + 7;
        }
        let before_year_0 = parse_rfc3339("0000-01-01T00:00:00+00:01").unwrap();
        assert_eq!(format_rfc3339(before_year_0), "-0001-12-31T23:59:00Z");
        let before_year_0 = parse_rfc3339("0000-01-01T00:00:00+00:01").unwrap();
        assert_eq!(format_rfc3339(before_year_0), "-0001-12-31T23:59:00Z");
    }
}
