//! Exact decimals for every price, quantity, commission and balance.
//!
//! Binance sends decimals as strings (`"0.00001000"`) and rejects an order whose price is off the
//! tick by any amount, so binary floating point is never used on these paths. A [`Decimal`] is an
//! integer mantissa with a decimal scale: `"0.00001000"` is `1000 × 10⁻⁸`. The scale is kept as
//! parsed, so a value formats back to the exact string the exchange sent (`"60000.00000000"`
//! stays `"60000.00000000"`), which the fill log relies on.
//!
//! Accepted text is Binance's own pattern for decimal parameters: `^[0-9]{1,20}(\.[0-9]{1,20})?$`,
//! with an optional leading `-` (balance deltas are signed). No exponent, no `+`, no spaces. A
//! value needing more than 38 significant digits in all is refused as too long (an `i128`
//! holds 38); no real price or quantity comes near that.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// The most fractional digits a decimal may carry: Binance's parameter pattern allows 20.
pub const MAX_SCALE: u8 = 20;

const POW10: [i128; 39] = {
    let mut table = [1i128; 39];
    let mut i = 1;
    while i < 39 {
        table[i] = table[i - 1] * 10;
        i += 1;
    }
    table
};

/// `10^exp` for exp ≤ 38, the largest power of ten an `i128` holds.
fn pow10(exp: u32) -> Option<i128> {
    POW10.get(exp as usize).copied()
}

/// An exact decimal number: `mantissa × 10^-scale`.
#[derive(Clone, Copy)]
pub struct Decimal {
    mantissa: i128,
    scale: u8,
}

/// Why a string is not a decimal we accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseDecimalError {
    Empty,
    /// A character outside `[0-9.-]`, a misplaced sign or point, or an empty side of the point.
    Malformed,
    /// More than 20 digits before or after the point.
    TooLong,
}

impl fmt::Display for ParseDecimalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseDecimalError::Empty => "empty decimal",
            ParseDecimalError::Malformed => "malformed decimal",
            ParseDecimalError::TooLong => "decimal has more than 20 digits on one side",
        })
    }
}

impl std::error::Error for ParseDecimalError {}

impl Default for Decimal {
    fn default() -> Decimal {
        Decimal::ZERO
    }
}

impl Decimal {
    pub const ZERO: Decimal = Decimal { mantissa: 0, scale: 0 };
    pub const ONE: Decimal = Decimal { mantissa: 1, scale: 0 };

    /// `mantissa × 10^-scale`.
    pub const fn new(mantissa: i128, scale: u8) -> Decimal {
        Decimal { mantissa, scale }
    }

    pub fn from_int(value: i64) -> Decimal {
        Decimal { mantissa: value as i128, scale: 0 }
    }

    pub fn mantissa(self) -> i128 {
        self.mantissa
    }

    /// Digits after the point as written (trailing zeros included).
    pub fn scale(self) -> u8 {
        self.scale
    }

    pub fn is_zero(self) -> bool {
        self.mantissa == 0
    }

    pub fn is_negative(self) -> bool {
        self.mantissa < 0
    }

    /// Digits after the point that carry value: `"0.01000000"` → 2.
    pub fn significant_scale(self) -> u8 {
        let mut m = self.mantissa;
        let mut s = self.scale;
        while s > 0 && m % 10 == 0 {
            m /= 10;
            s -= 1;
        }
        s
    }

    /// The same value without trailing fractional zeros.
    pub fn normalized(self) -> Decimal {
        let s = self.significant_scale();
        Decimal { mantissa: self.mantissa / POW10[(self.scale - s) as usize], scale: s }
    }

    /// The same value written with exactly `scale` decimals. `None` if that would drop a
    /// non-zero digit or overflow.
    pub fn with_scale(self, scale: u8) -> Option<Decimal> {
        match scale.cmp(&self.scale) {
            Ordering::Equal => Some(self),
            Ordering::Greater => {
                let m = self.mantissa.checked_mul(pow10((scale - self.scale) as u32)?)?;
                Some(Decimal { mantissa: m, scale })
            }
            Ordering::Less => {
                let f = POW10[(self.scale - scale) as usize];
                (self.mantissa % f == 0).then(|| Decimal { mantissa: self.mantissa / f, scale })
            }
        }
    }

    /// Both mantissas at the larger of the two scales, or `None` on overflow.
    fn aligned(self, other: Decimal) -> Option<(i128, i128, u8)> {
        let scale = self.scale.max(other.scale);
        let a = self.mantissa.checked_mul(pow10((scale - self.scale) as u32)?)?;
        let b = other.mantissa.checked_mul(pow10((scale - other.scale) as u32)?)?;
        Some((a, b, scale))
    }

    pub fn checked_add(self, other: Decimal) -> Option<Decimal> {
        let (a, b, scale) = self.aligned(other)?;
        Some(Decimal { mantissa: a.checked_add(b)?, scale })
    }

    pub fn checked_sub(self, other: Decimal) -> Option<Decimal> {
        let (a, b, scale) = self.aligned(other)?;
        Some(Decimal { mantissa: a.checked_sub(b)?, scale })
    }

    /// Exact product; the scale is the sum of both scales, reduced if it would pass 38.
    pub fn checked_mul(self, other: Decimal) -> Option<Decimal> {
        let a = self.normalized();
        let b = other.normalized();
        let scale = a.scale.checked_add(b.scale)?;
        if scale > 38 {
            return None;
        }
        Some(Decimal { mantissa: a.mantissa.checked_mul(b.mantissa)?, scale })
    }

    /// Exact remainder of `self / step` (sign of `self`); `None` for a zero step or overflow.
    pub fn checked_rem(self, step: Decimal) -> Option<Decimal> {
        let (a, b, scale) = self.aligned(step)?;
        if b == 0 {
            return None;
        }
        Some(Decimal { mantissa: a % b, scale })
    }

    /// Whether `self` is a whole multiple of `step`. A zero step disables the rule (true).
    pub fn is_multiple_of(self, step: Decimal) -> bool {
        if step.is_zero() {
            return true;
        }
        match self.checked_rem(step) {
            Some(r) => r.is_zero(),
            None => false,
        }
    }

    /// The largest multiple of `step` that is ≤ `self`, written with `step`'s significant
    /// decimals. A zero step returns `self` unchanged.
    pub fn floor_to(self, step: Decimal) -> Option<Decimal> {
        self.round_to(step, false)
    }

    /// The smallest multiple of `step` that is ≥ `self`, written with `step`'s significant
    /// decimals. A zero step returns `self` unchanged.
    pub fn ceil_to(self, step: Decimal) -> Option<Decimal> {
        self.round_to(step, true)
    }

    fn round_to(self, step: Decimal, up: bool) -> Option<Decimal> {
        if step.is_zero() {
            return Some(self);
        }
        let step = step.normalized();
        let (a, b, scale) = self.aligned(step)?;
        let b = b.abs();
        let mut q = a.div_euclid(b);
        if up && a.rem_euclid(b) != 0 {
            q += 1;
        }
        let m = q.checked_mul(b)?;
        let rounded = Decimal { mantissa: m, scale };
        // Present it with the step's decimals so "0.01234" is sent, not "0.01234000000".
        let target = step.scale.max(rounded.significant_scale());
        rounded.with_scale(target)
    }

    /// Truncating division to `scale` decimals (used for averages, never for order values).
    pub fn checked_div(self, other: Decimal, scale: u8) -> Option<Decimal> {
        if other.is_zero() {
            return None;
        }
        // self/other = (ma × 10^-sa) / (mb × 10^-sb); scale result to 10^-scale.
        let exp = scale as i32 + other.scale as i32 - self.scale as i32;
        let (num, den) = if exp >= 0 {
            (self.mantissa.checked_mul(pow10(exp as u32)?)?, other.mantissa)
        } else {
            (self.mantissa, other.mantissa.checked_mul(pow10((-exp) as u32)?)?)
        };
        Some(Decimal { mantissa: num / den, scale })
    }

    pub fn abs(self) -> Decimal {
        Decimal { mantissa: self.mantissa.abs(), scale: self.scale }
    }

    pub fn max(self, other: Decimal) -> Decimal {
        if other > self {
            other
        } else {
            self
        }
    }

    pub fn min(self, other: Decimal) -> Decimal {
        if other < self {
            other
        } else {
            self
        }
    }

    /// The value as an integer count of `10^-scale` units (e.g. satoshis for scale 8), if exact
    /// and in range. Used at the plugin ABI boundary.
    pub fn to_fixed_i64(self, scale: u8) -> Option<i64> {
        i64::try_from(self.with_scale(scale)?.mantissa).ok()
    }
}

impl FromStr for Decimal {
    type Err = ParseDecimalError;

    fn from_str(s: &str) -> Result<Decimal, ParseDecimalError> {
        let bytes = s.as_bytes();
        if bytes.is_empty() {
            return Err(ParseDecimalError::Empty);
        }
        let (negative, digits) = match bytes[0] {
            b'-' => (true, &bytes[1..]),
            _ => (false, bytes),
        };
        let (int_part, frac_part) = match digits.iter().position(|&b| b == b'.') {
            Some(dot) => (&digits[..dot], Some(&digits[dot + 1..])),
            None => (digits, None),
        };
        if int_part.is_empty() || frac_part.is_some_and(|f| f.is_empty()) {
            return Err(ParseDecimalError::Malformed);
        }
        let frac_part = frac_part.unwrap_or(&[]);
        if int_part.len() > 20 || frac_part.len() > MAX_SCALE as usize {
            return Err(ParseDecimalError::TooLong);
        }
        let mut mantissa: i128 = 0;
        for &b in int_part.iter().chain(frac_part) {
            if !b.is_ascii_digit() {
                return Err(ParseDecimalError::Malformed);
            }
            // 40 digits can pass i128; reject rather than wrap.
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add((b - b'0') as i128))
                .ok_or(ParseDecimalError::TooLong)?;
        }
        if negative {
            mantissa = -mantissa;
        }
        Ok(Decimal { mantissa, scale: frac_part.len() as u8 })
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 48];
        f.write_str(self.format_into(&mut buf))
    }
}

impl Decimal {
    /// Formats without allocating; the fill-log hot path uses this.
    pub fn format_into<'a>(&self, buf: &'a mut [u8; 48]) -> &'a str {
        let mut pos = buf.len();
        let mut m = self.mantissa.unsigned_abs();
        let mut digits = 0u32;
        loop {
            if digits == self.scale as u32 && self.scale > 0 {
                pos -= 1;
                buf[pos] = b'.';
            }
            pos -= 1;
            buf[pos] = b'0' + (m % 10) as u8;
            m /= 10;
            digits += 1;
            if m == 0 && digits > self.scale as u32 {
                break;
            }
        }
        if self.mantissa < 0 {
            pos -= 1;
            buf[pos] = b'-';
        }
        // Only ASCII digits, '.' and '-' were written.
        std::str::from_utf8(&buf[pos..]).unwrap_or("0")
    }
}

impl std::ops::Neg for Decimal {
    type Output = Decimal;
    fn neg(self) -> Decimal {
        Decimal { mantissa: -self.mantissa, scale: self.scale }
    }
}

impl fmt::Debug for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl PartialEq for Decimal {
    fn eq(&self, other: &Decimal) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Decimal {}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Decimal) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Decimal) -> Ordering {
        if let Some((a, b, _)) = self.aligned(*other) {
            return a.cmp(&b);
        }
        // Aligning overflowed: compare whole parts, then fractions at 38 digits, which fit.
        let (ia, fa) = (self.mantissa / POW10[self.scale as usize], self.mantissa % POW10[self.scale as usize]);
        let (ib, fb) = (other.mantissa / POW10[other.scale as usize], other.mantissa % POW10[other.scale as usize]);
        ia.cmp(&ib).then_with(|| {
            let fa = fa * POW10[38 - self.scale as usize];
            let fb = fb * POW10[38 - other.scale as usize];
            fa.cmp(&fb)
        })
    }
}

impl std::hash::Hash for Decimal {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let n = self.normalized();
        n.mantissa.hash(state);
        n.scale.hash(state);
    }
}

impl serde::Serialize for Decimal {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 48];
        serializer.serialize_str(self.format_into(&mut buf))
    }
}

impl<'de> serde::Deserialize<'de> for Decimal {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Decimal;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a decimal string such as \"0.00100000\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Decimal, E> {
                v.parse().map_err(E::custom)
            }
            // Some fields (e.g. avgPrice inputs in tests) arrive as integers; exact either way.
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Decimal, E> {
                Ok(Decimal::new(v as i128, 0))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Decimal, E> {
                Ok(Decimal::new(v as i128, 0))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn round_trips_exact_strings() {
        for s in ["0", "0.00001000", "60000.00000000", "-100.5", "1234567890123456789.1234567890123456789"] {
            assert_eq!(d(s).to_string(), s);
        }
    }

    #[test]
    fn rejects_what_binance_rejects() {
        for s in ["", ".1", "1.", "1e5", "+1", " 1", "1.2.3", "abc", "1,0", "--1"] {
            assert!(s.parse::<Decimal>().is_err(), "{s:?} parsed");
        }
        assert_eq!("123456789012345678901".parse::<Decimal>(), Err(ParseDecimalError::TooLong));
        assert_eq!("0.123456789012345678901".parse::<Decimal>(), Err(ParseDecimalError::TooLong));
    }

    #[test]
    fn compares_across_scales() {
        assert_eq!(d("1.0"), d("1.00000000"));
        assert!(d("0.1") > d("0.09999999"));
        assert!(d("-0.1") < d("0"));
        assert!(d("1234567890123456789.1234567890123456789") > d("1234567890123456789.1234567890123456788"));
        // Values too wide to align still compare.
        assert!(Decimal::new(i128::MAX / 10, 0) > Decimal::new(1, 20));
    }

    #[test]
    fn multiples_and_rounding() {
        let tick = d("0.01000000");
        assert!(d("60000.01").is_multiple_of(tick));
        assert!(!d("60000.015").is_multiple_of(tick));
        assert_eq!(d("60000.019").floor_to(tick).unwrap().to_string(), "60000.01");
        assert_eq!(d("60000.011").ceil_to(tick).unwrap().to_string(), "60000.02");
        assert_eq!(d("60000.01").ceil_to(tick).unwrap().to_string(), "60000.01");
        assert_eq!(d("60000").floor_to(tick).unwrap().to_string(), "60000.00");
        assert_eq!(d("0.0123456").floor_to(d("0.00001")).unwrap().to_string(), "0.01234");
        assert_eq!(d("5").floor_to(d("0")).unwrap(), d("5"));
    }

    #[test]
    fn arithmetic_is_exact() {
        assert_eq!(d("0.1").checked_add(d("0.2")).unwrap(), d("0.3"));
        assert_eq!(d("60000.00").checked_mul(d("0.00400000")).unwrap().to_string(), "240.000");
        assert_eq!(d("240").checked_div(d("0.004"), 8).unwrap(), d("60000"));
        assert_eq!(d("1").checked_div(d("3"), 4).unwrap().to_string(), "0.3333");
        assert!(d("1").checked_rem(d("0")).is_none());
        assert_eq!(d("0.5").to_fixed_i64(8), Some(50_000_000));
        assert_eq!(d("0.123456789").to_fixed_i64(8), None);
    }

    #[test]
    fn serde_uses_strings() {
        let v: Decimal = serde_json::from_str("\"0.00400000\"").unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), "\"0.00400000\"");
    }
}
