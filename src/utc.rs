//! UTC timestamps for people: the fill log's `time` (ms since the epoch) printed and parsed as
//! `2026-12-01T21:03:04.123Z`, without a date crate (the civil-date arithmetic is a few lines:
//! Howard Hinnant's `days_from_civil`, public domain).

/// `ms` since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_ms(ms: i64) -> String {
    Utc(ms).to_string()
}

/// Displays ms since the epoch as [`format_ms`] does, without a `String` (table rows).
#[derive(Debug, Clone, Copy)]
pub struct Utc(pub i64);

impl std::fmt::Display for Utc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (days, rem) = (self.0.div_euclid(86_400_000), self.0.rem_euclid(86_400_000));
        let (y, m, d) = civil_from_days(days);
        let (h, min, s, milli) = (rem / 3_600_000, rem / 60_000 % 60, rem / 1000 % 60, rem % 1000);
        write!(f, "{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{milli:03}Z")
    }
}

/// A point in time as ms since the epoch: `2026-12-01`, `2026-12-01T21:03[:04[.123]][Z]`, a
/// plain number of ms since the epoch, or an age before `now_ms` (`90s`, `15m`, `6h`, `2d`).
pub fn parse_ms(text: &str, now_ms: i64) -> Option<i64> {
    let t = text.trim();
    if let Ok(ms) = t.parse::<i64>() {
        return Some(ms);
    }
    if let Some(age) = parse_age_ms(t) {
        return now_ms.checked_sub(age);
    }
    let t = t.strip_suffix('Z').unwrap_or(t);
    let (date, time) = match t.split_once(['T', ' ']) {
        Some((d, tm)) => (d, Some(tm)),
        None => (t, None),
    };
    let mut parts = date.split('-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next()?.parse().ok()?;
    let d: u32 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let mut ms = days_from_civil(y, m, d).checked_mul(86_400_000)?;
    if let Some(time) = time {
        let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
        let mut f = hms.split(':');
        let h: i64 = f.next()?.parse().ok()?;
        let min: i64 = f.next()?.parse().ok()?;
        let s: i64 = f.next().map_or(Some(0), |s| s.parse().ok())?;
        if f.next().is_some() || h > 23 || min > 59 || s > 60 {
            return None;
        }
        let milli: i64 = match frac.len() {
            0 => 0,
            1..=3 => frac.parse::<i64>().ok()? * 10i64.pow(3 - frac.len() as u32),
            _ => return None,
        };
        ms += ((h * 60 + min) * 60 + s) * 1000 + milli;
    }
    Some(ms)
}

fn parse_age_ms(t: &str) -> Option<i64> {
    let unit = match t.chars().last()? {
        's' => 1000,
        'm' => 60_000,
        'h' => 3_600_000,
        'd' => 86_400_000,
        _ => return None,
    };
    let n: i64 = t[..t.len() - 1].parse().ok()?;
    n.checked_mul(unit)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants_round_trip() {
        // 1788540400100 is the fill log's documented example.
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ms(1_788_540_400_100), "2026-09-04T16:46:40.100Z");
        assert_eq!(format_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        for ms in [0, 1_788_540_400_100, 951_782_400_000, 4_102_444_799_999, -1] {
            assert_eq!(parse_ms(&format_ms(ms), 0), Some(ms), "{}", format_ms(ms));
        }
        assert_eq!(parse_ms("2026-09-04", 0), Some(1_788_480_000_000));
        assert_eq!(parse_ms("2026-09-04T16:46", 0), Some(1_788_540_360_000));
        assert_eq!(parse_ms("2026-09-04 16:46:40.1", 0), Some(1_788_540_400_100));
        assert_eq!(parse_ms("1788540400100", 0), Some(1_788_540_400_100));
        assert_eq!(parse_ms("2h", 10_000_000), Some(10_000_000 - 7_200_000));
        assert_eq!(parse_ms("2026-13-01", 0), None);
        assert_eq!(parse_ms("yesterday", 0), None);
        assert_eq!(parse_ms("2026-09-04T25:00", 0), None);
    }
}
