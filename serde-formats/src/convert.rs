//! Conversions between model values and their encoded numbers, shared by the encoder, the key encoder
//! and the decoder. Every function checks its input and returns a message instead of panicking.

use num_bigint::BigInt;

/// DATE zero dates (`0000-00-00`, zero month or day) are encoded as this day number.
pub(crate) const ZERO_DATE_DAYS: i32 = i32::MIN;
/// DATETIME zero dates are encoded as this microsecond count.
pub(crate) const ZERO_DATETIME_MICROS: i64 = i64::MIN;
/// The largest TIME magnitude MariaDB stores: 838:59:59.999999.
pub(crate) const MAX_TIME_MICROS: u64 = (838 * 3600 + 59 * 60 + 59) * 1_000_000 + 999_999;

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date `(year, month, day)` of a day number since 1970-01-01 (the inverse of
/// `days_from_civil`; the encoding of DATE, and of DATETIME/TIMESTAMP divided into days).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(year: i64, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// The encoded day number of a DATE: days since the epoch, or [`ZERO_DATE_DAYS`] for a zero date.
pub(crate) fn date_days(year: u16, month: u8, day: u8) -> Result<i32, String> {
    if month == 0 || day == 0 {
        return Ok(ZERO_DATE_DAYS);
    }
    if year > 9999 || month > 12 || day > days_in_month(i64::from(year), month) {
        return Err(format!(
            "{year:04}-{month:02}-{day:02} is not a date between 0000-01-01 and 9999-12-31"
        ));
    }
    // |days| < 3.7 million: fits i32.
    Ok(days_from_civil(i64::from(year), u32::from(month), u32::from(day)) as i32)
}

/// The encoded microseconds of a DATETIME, or [`ZERO_DATETIME_MICROS`] for a zero date.
#[allow(clippy::too_many_arguments)]
pub(crate) fn datetime_micros(
    year: u16,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
    micros: u32,
) -> Result<i64, String> {
    let days = date_days(year, month, day)?;
    if days == ZERO_DATE_DAYS {
        return Ok(ZERO_DATETIME_MICROS);
    }
    if hour > 23 || minute > 59 || second > 59 || micros > 999_999 {
        return Err(format!(
            "{hour:02}:{minute:02}:{second:02}.{micros:06} is not a time of day"
        ));
    }
    let secs = i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second);
    Ok(i64::from(days) * MICROS_PER_DAY + secs * 1_000_000 + i64::from(micros))
}

/// The encoded signed microseconds of a TIME.
pub(crate) fn time_micros(negative: bool, micros: u64) -> Result<i64, String> {
    if micros > MAX_TIME_MICROS {
        return Err(format!(
            "TIME of {micros} microseconds is beyond MariaDB's 838:59:59.999999"
        ));
    }
    // Below 2^42: fits i64.
    Ok(if negative {
        -(micros as i64)
    } else {
        micros as i64
    })
}

/// An unscaled decimal: small values stay machine integers, the rest are big integers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unscaled {
    Small(i128),
    Big(BigInt),
}

/// The byte length of every encoded value of a `DECIMAL(precision, _)`: the smallest two's-complement
/// width that holds `precision` digits (`floor(log10(2^(8n-1) - 1)) >= precision`, the rule apache-avro
/// and Java check when resolving a decimal). Fixed per column, so readers never reject a value as too
/// short for its precision.
pub(crate) fn decimal_len(precision: u8) -> usize {
    (1..=64usize)
        .find(|&n| {
            let max_digits = (2.0_f64.powi(8 * n as i32 - 1) - 1.0).log10().floor();
            max_digits >= f64::from(precision)
        })
        .unwrap_or(64)
}

impl Unscaled {
    /// Big-endian two's-complement bytes sign-extended to `len` (see [`decimal_len`]); `len` must hold
    /// the value (true for a value within the column's precision).
    pub(crate) fn write_be_fixed(&self, len: usize, out: &mut Vec<u8>) {
        match self {
            Unscaled::Small(v) => extend_sign_fixed(&v.to_be_bytes(), len, out),
            Unscaled::Big(v) => extend_sign_fixed(&v.to_signed_bytes_be(), len, out),
        }
    }
}

/// Appends two's-complement `bytes` narrowed or sign-extended to exactly `len` bytes.
fn extend_sign_fixed(bytes: &[u8], len: usize, out: &mut Vec<u8>) {
    if bytes.len() >= len {
        out.extend_from_slice(&bytes[bytes.len() - len..]);
    } else {
        let fill = if bytes.first().is_some_and(|b| b & 0x80 != 0) {
            0xff
        } else {
            0x00
        };
        out.extend(std::iter::repeat_n(fill, len - bytes.len()));
        out.extend_from_slice(bytes);
    }
}

/// Parses exact decimal text (`-12.340`, `+5`, `.5`, `7.`) into its unscaled value at `scale`, checking
/// that it fits `DECIMAL(precision, scale)`. Extra fractional digits are accepted only when they are
/// zeros (no rounding). No exponent form.
pub(crate) fn parse_decimal(text: &str, precision: u8, scale: u8) -> Result<Unscaled, String> {
    let bad = || format!("{text:?} is not decimal text like \"-12.34\"");
    let (negative, body) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (int_part, frac_part) = match body.split_once('.') {
        Some((i, f)) => (i, f),
        None => (body, ""),
    };
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let scale = usize::from(scale);
    let int_digits = int_part.trim_start_matches('0');
    let int_room = usize::from(precision).saturating_sub(scale);
    if int_digits.len() > int_room {
        return Err(format!(
            "{text:?} has {} integer digits, DECIMAL({precision},{scale}) holds {}",
            int_digits.len(),
            int_room
        ));
    }
    let (frac_kept, frac_extra) = frac_part.split_at(frac_part.len().min(scale));
    if frac_extra.bytes().any(|b| b != b'0') {
        return Err(format!(
            "{text:?} has more than {scale} fractional digits; DECIMAL(_,{scale}) would round it"
        ));
    }
    let pad = scale - frac_kept.len();
    let digits = int_digits.len() + scale;
    if digits <= 38 {
        let mut v: i128 = 0;
        for b in int_digits.bytes().chain(frac_kept.bytes()) {
            v = v * 10 + i128::from(b - b'0');
        }
        for _ in 0..pad {
            v *= 10;
        }
        Ok(Unscaled::Small(if negative { -v } else { v }))
    } else {
        let mut s = String::with_capacity(digits + 1);
        if negative {
            s.push('-');
        }
        s.push_str(int_digits);
        s.push_str(frac_kept);
        s.extend(std::iter::repeat_n('0', pad));
        BigInt::parse_bytes(s.as_bytes(), 10)
            .map(Unscaled::Big)
            .ok_or_else(bad)
    }
}

/// Formats an unscaled big-endian two's-complement decimal with `scale` fractional digits, exactly.
pub(crate) fn decimal_to_string(bytes: &[u8], scale: usize) -> String {
    let digits = if bytes.is_empty() {
        "0".to_owned()
    } else if bytes.len() <= 16 {
        let fill = if bytes[0] & 0x80 != 0 { 0xff } else { 0x00 };
        let mut buf = [fill; 16];
        buf[16 - bytes.len()..].copy_from_slice(bytes);
        i128::from_be_bytes(buf).to_string()
    } else {
        BigInt::from_signed_bytes_be(bytes).to_string()
    };
    let (negative, digits) = match digits.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, digits.as_str()),
    };
    let mut out = String::with_capacity(digits.len() + scale + 3);
    if negative {
        out.push('-');
    }
    if scale == 0 {
        out.push_str(digits);
    } else if digits.len() > scale {
        let (i, f) = digits.split_at(digits.len() - scale);
        out.push_str(i);
        out.push('.');
        out.push_str(f);
    } else {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', scale - digits.len()));
        out.push_str(digits);
    }
    out
}

/// `YYYY-MM-DD` of an encoded DATE day number (`0000-00-00` for the zero-date sentinel).
pub(crate) fn format_date(days: i32) -> String {
    if days == ZERO_DATE_DAYS {
        return "0000-00-00".to_owned();
    }
    let (y, m, d) = civil_from_days(i64::from(days));
    format!("{}-{m:02}-{d:02}", format_year(y))
}

fn format_year(y: i64) -> String {
    if (0..=9999).contains(&y) {
        format!("{y:04}")
    } else if y < 0 {
        format!("-{:04}", -y)
    } else {
        format!("+{y}")
    }
}

/// `YYYY-MM-DDTHH:MM:SS.ffffff` of a DATETIME's microseconds (`0000-00-00T00:00:00.000000` for the
/// zero-date sentinel).
pub(crate) fn format_local_datetime(micros: i64) -> String {
    if micros == ZERO_DATETIME_MICROS {
        return "0000-00-00T00:00:00.000000".to_owned();
    }
    format_datetime(micros)
}

/// `YYYY-MM-DDTHH:MM:SS.ffffff` of microseconds since the epoch.
pub(crate) fn format_datetime(micros: i64) -> String {
    let days = micros.div_euclid(MICROS_PER_DAY);
    let rest = micros.rem_euclid(MICROS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    let secs = rest / 1_000_000;
    format!(
        "{}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}",
        format_year(y),
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        rest % 1_000_000
    )
}

/// `[-]HHH:MM:SS.ffffff` of a signed TIME in microseconds.
pub(crate) fn format_time(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    let secs = abs / 1_000_000;
    format!(
        "{sign}{:02}:{:02}:{:02}.{:06}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        abs % 1_000_000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trips_over_the_mariadb_range() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11017);
        assert_eq!(days_from_civil(0, 1, 1), -719_528);
        for days in (-719_528..=2_932_896).step_by(97) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn dates_validate_and_zero_dates_become_the_sentinel() {
        assert_eq!(date_days(1970, 1, 2), Ok(1));
        assert_eq!(date_days(0, 0, 0), Ok(ZERO_DATE_DAYS));
        assert_eq!(date_days(2024, 0, 15), Ok(ZERO_DATE_DAYS));
        assert!(date_days(2023, 2, 29).is_err());
        assert!(date_days(2024, 2, 29).is_ok());
        assert!(date_days(2024, 13, 1).is_err());
        assert_eq!(format_date(date_days(9999, 12, 31).unwrap()), "9999-12-31");
        assert_eq!(format_date(date_days(0, 1, 1).unwrap()), "0000-01-01");
        assert!(datetime_micros(2024, 1, 1, 24, 0, 0, 0).is_err());
        assert!(datetime_micros(2024, 1, 1, 0, 0, 0, 1_000_000).is_err());
        assert_eq!(
            format_local_datetime(datetime_micros(1969, 12, 31, 23, 59, 59, 999_999).unwrap()),
            "1969-12-31T23:59:59.999999"
        );
    }

    #[test]
    fn time_bounds_and_format() {
        assert_eq!(
            format_time(time_micros(true, MAX_TIME_MICROS).unwrap()),
            "-838:59:59.999999"
        );
        assert_eq!(format_time(0), "00:00:00.000000");
        assert!(time_micros(false, MAX_TIME_MICROS + 1).is_err());
    }

    #[test]
    fn decimals_parse_exactly_and_format_back() {
        let bytes = |u: Unscaled| {
            let mut v = Vec::new();
            u.write_be_fixed(28, &mut v);
            v
        };
        let sixty_five = format!("-{}.{}", "9".repeat(35), "9".repeat(30));
        let u = parse_decimal(&sixty_five, 65, 30).unwrap();
        assert!(matches!(u, Unscaled::Big(_)));
        assert_eq!(decimal_to_string(&bytes(u), 30), sixty_five);
        assert_eq!(decimal_to_string(&[0xff], 3), "-0.001");
        assert_eq!(decimal_to_string(&[0x04, 0xd2], 2), "12.34");
        assert_eq!(decimal_to_string(&[0], 0), "0");
        assert_eq!(decimal_len(1), 1);
        assert_eq!(decimal_len(2), 1);
        assert_eq!(decimal_len(3), 2);
        assert_eq!(decimal_len(10), 5);
        assert_eq!(decimal_len(20), 9);
        assert_eq!(decimal_len(38), 16);
        assert_eq!(decimal_len(65), 28);
        let fixed = |u: Unscaled, len| {
            let mut v = Vec::new();
            u.write_be_fixed(len, &mut v);
            v
        };
        assert_eq!(fixed(Unscaled::Small(-2), 3), [0xff, 0xff, 0xfe]);
        assert_eq!(fixed(Unscaled::Small(258), 5), [0, 0, 0, 1, 2]);
        let big = parse_decimal(&"9".repeat(65), 65, 0).unwrap();
        assert_eq!(fixed(big.clone(), 28).len(), 28);
        assert_eq!(decimal_to_string(&fixed(big, 28), 0), "9".repeat(65));
    }
}
