//! Exact decimals for every price, quantity, commission and balance: the daemon's own type,
//! shared with strategies so a plugin computes prices exactly as the daemon checks them.
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
        // `%` panics on i128::MIN % -1 (its quotient overflows); the remainder is 0 (issue 12).
        Some(Decimal { mantissa: a.wrapping_rem(b), scale })
    }

    /// Whether `self` is a whole multiple of `step`. A zero step disables the rule (true).
    pub fn is_multiple_of(self, step: Decimal) -> bool {
        if step.is_zero() {
            return true;
        }
        // The step's trailing zeros do not change its grid; dropping them keeps the alignment
        // from overflowing on large values ("0.0000000000000000010" is 19 digits, 18 needed).
        match self.checked_rem(step.normalized()) {
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
        // checked: a step of i128::MIN has no positive counterpart (issue 12).
        let b = b.checked_abs()?;
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
        if self.is_zero() {
            // Zero at any scale, even where 10^exp below would not fit (issue 12).
            return Some(Decimal { mantissa: 0, scale });
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
        // Garbage is malformed whatever its length; only digits can be too long (issue 12).
        if !int_part.iter().chain(frac_part).all(u8::is_ascii_digit) {
            return Err(ParseDecimalError::Malformed);
        }
        if int_part.len() > 20 || frac_part.len() > MAX_SCALE as usize {
            return Err(ParseDecimalError::TooLong);
        }
        let mut mantissa: i128 = 0;
        for &b in int_part.iter().chain(frac_part) {
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

#[cfg(feature = "serde")]
impl serde::Serialize for Decimal {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 48];
        serializer.serialize_str(self.format_into(&mut buf))
    }
}

#[cfg(feature = "serde")]
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

    #[cfg(feature = "serde")]
    #[test]
    fn serde_uses_strings() {
        let v: Decimal = serde_json::from_str("\"0.00400000\"").unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), "\"0.00400000\"");
    }

    /// Shrunk cases the properties below found (issue 12): each panicked or misreported.
    #[test]
    fn extremes_answer_none_and_garbage_is_malformed_whatever_its_length() {
        // `floor_to` took `abs()` of the step: a step of i128::MIN panicked.
        assert_eq!(Decimal::ZERO.floor_to(Decimal::new(i128::MIN, 0)), None);
        // `i128::MIN % -1` panicked (the quotient overflows); the remainder is plainly 0.
        assert_eq!(Decimal::new(i128::MIN, 0).checked_rem(Decimal::new(-1, 0)), Some(Decimal::ZERO));
        assert!(Decimal::new(i128::MIN, 0).is_multiple_of(Decimal::new(-1, 0)));
        // Lengths were checked before characters: 21 bytes of garbage were "too long".
        assert_eq!("0A00𝒞0 00  ".parse::<Decimal>(), Err(ParseDecimalError::Malformed));
        assert_eq!("1".repeat(21).parse::<Decimal>(), Err(ParseDecimalError::TooLong));
        // A step's trailing zeros made the remainder's alignment overflow: floor_to's own
        // answer was "not a multiple" of the step it was floored to.
        let (x, step) = (d("20000000000000000000"), d("0.0000000000000000010"));
        assert!(x.floor_to(step).unwrap().is_multiple_of(step));
        // 0 / 1e-19 at 20 decimals needed 10^39 for the alignment and answered None.
        assert_eq!(
            Decimal::ZERO.checked_div(d("0.0000000000000000001"), 20).unwrap().to_string(),
            "0.00000000000000000000"
        );
    }

    /// Properties (issue 12) against an exact oracle: `num_bigint::BigInt`, which cannot
    /// overflow, so any disagreement is ours.
    mod props {
        use super::*;
        use num_bigint::BigInt;
        use proptest::prelude::*;

        /// The value as `(mantissa, scale)` in the oracle.
        fn big(x: Decimal) -> (BigInt, u32) {
            (BigInt::from(x.mantissa()), x.scale() as u32)
        }

        fn ten(exp: u32) -> BigInt {
            BigInt::from(10u8).pow(exp)
        }

        /// Both values at a common scale in the oracle.
        fn at(x: Decimal, scale: u32) -> BigInt {
            let (m, s) = big(x);
            m * ten(scale - s)
        }

        /// The daemon's case-count rule (its `proptest_config`, `docs/testing.md`): `PROPTEST_CASES`
        /// sets the count, `SYNCD_PROPTEST_SCALE` multiplies the default.
        fn config(default_cases: u32) -> proptest::test_runner::Config {
            let env = |name: &str| std::env::var(name).ok().and_then(|v| v.trim().parse::<u32>().ok());
            let cases = match (env("PROPTEST_CASES"), env("SYNCD_PROPTEST_SCALE")) {
                (Some(n), _) => n,
                (None, Some(k)) => default_cases.saturating_mul(k),
                (None, None) => default_cases,
            };
            proptest::test_runner::Config { cases, failure_persistence: None, ..Default::default() }
        }

        fn fits(v: &BigInt) -> bool {
            i128::try_from(v.clone()).is_ok()
        }

        /// Strings the pattern allows (`^-?[0-9]{1,20}(\.[0-9]{1,20})?$`).
        const WIRE: &str = "-?[0-9]{1,20}(\\.[0-9]{1,20})?";
        /// The ones the exchange sends: no leading zeros ("007" is the pattern's, not Binance's).
        const CANONICAL: &str = "-?(0|[1-9][0-9]{0,19})(\\.[0-9]{1,20})?";

        /// Any decimal a parse can produce.
        fn parsed() -> impl Strategy<Value = Decimal> {
            WIRE.prop_filter_map("too many significant digits", |s| s.parse::<Decimal>().ok())
        }

        /// Any decimal at all, including the extremes `new` and arithmetic can reach.
        fn any_decimal() -> impl Strategy<Value = Decimal> {
            let mantissa = prop_oneof![
                any::<i128>(),
                Just(i128::MIN),
                Just(i128::MAX),
                -1000i128..1000,
                any::<i64>().prop_map(i128::from),
            ];
            (mantissa, 0u8..=38).prop_map(|(m, s)| Decimal::new(m, s))
        }

        /// Pairs near i128::MAX at different scales with the same whole part: aligning them
        /// overflows, so `cmp` takes its fallback path and must still compare the fractions.
        fn too_wide_to_align() -> impl Strategy<Value = (Decimal, Decimal)> {
            (0i128..1_000_000, 0i128..1_000_000, 1u32..18, any::<bool>(), any::<bool>()).prop_map(
                |(da, db, k, neg, swap)| {
                    let sign = if neg { -1 } else { 1 };
                    let b = Decimal::new(sign * (i128::MAX - db), 20);
                    // Just above i128::MAX once brought to scale 20.
                    let a = Decimal::new(sign * (i128::MAX / POW10[k as usize] + 1 + da % 7), 20 - k as u8);
                    if swap {
                        (b, a)
                    } else {
                        (a, b)
                    }
                },
            )
        }

        proptest! {
            #![proptest_config(config(512))]

            /// parse ∘ format is the identity on what the exchange sends, and any string of the
            /// pattern is read as its exact value or refused exactly when its digits do not fit
            /// an `i128` (never wrapped). Spellings that do not survive are leading zeros
            /// ("007.50" formats as "7.50") and a negative zero, which has no sign in an integer
            /// mantissa ("-0.00" formats as "0.00"): the same value either way.
            #[test]
            fn parse_format_round_trips_and_refuses_only_what_does_not_fit(s in prop_oneof![CANONICAL, WIRE]) {
                let digits: String = s.chars().filter(|c| c.is_ascii_digit()).collect();
                let exact: BigInt = digits.parse().unwrap();
                let exact = if s.starts_with('-') { -exact } else { exact };
                match s.parse::<Decimal>() {
                    Ok(x) => {
                        prop_assert_eq!(BigInt::from(x.mantissa()), exact.clone());
                        let canonical = !s.trim_start_matches('-').starts_with("0") || s.trim_start_matches('-').starts_with("0.") || s.trim_start_matches('-') == "0";
                        if canonical {
                            let expected = if exact == BigInt::from(0) { s.trim_start_matches('-') } else { s.as_str() };
                            prop_assert_eq!(x.to_string(), expected);
                        }
                        prop_assert_eq!(x.to_string().parse::<Decimal>().map(|y| (y.mantissa(), y.scale())), Ok((x.mantissa(), x.scale())));
                    }
                    Err(e) => {
                        prop_assert_eq!(e, ParseDecimalError::TooLong);
                        prop_assert!(!fits(&exact), "{} fits an i128 but was refused", s);
                    }
                }
            }

            /// Nothing the network can send makes the parser panic; anything outside the
            /// pattern is an error, and more than 20 digits on a side is `TooLong`.
            #[test]
            fn parse_never_panics_and_refuses_what_binance_refuses(s in prop_oneof!["\\PC{0,48}", "[-+0-9.e ]{0,48}"]) {
                let pattern = s.strip_prefix('-').unwrap_or(&s);
                let (int, frac) = match pattern.split_once('.') {
                    Some((i, f)) => (i, Some(f)),
                    None => (pattern, None),
                };
                let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
                let well_formed = digits(int) && frac.is_none_or(digits);
                match s.parse::<Decimal>() {
                    Ok(_) => prop_assert!(well_formed && int.len() <= 20 && frac.is_none_or(|f| f.len() <= 20), "{:?} parsed", s),
                    Err(ParseDecimalError::TooLong) => prop_assert!(well_formed, "{:?}", s),
                    Err(_) => prop_assert!(!well_formed, "{:?} is well formed", s),
                }
                if well_formed && (int.len() > 20 || frac.is_some_and(|f| f.len() > 20)) {
                    prop_assert_eq!(s.parse::<Decimal>(), Err(ParseDecimalError::TooLong));
                }
            }

            /// Ordering, equality and hashing agree with the exact values, across scales and
            /// for values too wide to align in an `i128`.
            #[test]
            fn ordering_agrees_with_the_oracle((a, b) in prop_oneof![(any_decimal(), any_decimal()), too_wide_to_align()]) {
                prop_assert_eq!(a.cmp(&b), at(a, 38).cmp(&at(b, 38)));
                if a == b {
                    use std::hash::{BuildHasher, RandomState};
                    let h = RandomState::new();
                    prop_assert_eq!(h.hash_one(a), h.hash_one(b));
                }
            }

            /// add, sub, mul, rem and div are exact when they answer, and answer `None` only
            /// when the exact result (or an operand brought to the result's scale) does not
            /// fit: no wrap-around, no rounding.
            #[test]
            fn arithmetic_agrees_with_the_oracle(a in parsed(), b in parsed(), scale in 0u8..=20) {
                let s = a.scale().max(b.scale()) as u32;
                let aligned_fit = fits(&at(a, s)) && fits(&at(b, s));
                for (got, exact) in [(a.checked_add(b), at(a, s) + at(b, s)), (a.checked_sub(b), at(a, s) - at(b, s))] {
                    match got {
                        Some(r) => prop_assert_eq!(at(r, 38), exact * ten(38 - s)),
                        None => prop_assert!(!aligned_fit || !fits(&exact)),
                    }
                }
                let (na, nb) = (a.normalized(), b.normalized());
                let product = big(na).0 * big(nb).0;
                let product_scale = (na.scale() + nb.scale()) as u32;
                match a.checked_mul(b) {
                    Some(r) => prop_assert_eq!(at(r, 76), product.clone() * ten(76 - product_scale)),
                    None => prop_assert!(!fits(&product) || product_scale > 38),
                }
                if !b.is_zero() {
                    match a.checked_rem(b) {
                        Some(r) => prop_assert_eq!(at(r, 38), (at(a, s) % at(b, s)) * ten(38 - s)),
                        None => prop_assert!(!aligned_fit),
                    }
                    // Truncating division: r = trunc(a / b) at `scale` decimals.
                    let (ma, sa) = big(a);
                    let (mb, sb) = big(b);
                    let exp = scale as i64 + sb as i64 - sa as i64;
                    let (num, den) = if exp >= 0 { (ma * ten(exp as u32), mb) } else { (ma, mb * ten((-exp) as u32)) };
                    match a.checked_div(b, scale) {
                        Some(r) => {
                            prop_assert_eq!(r.scale(), scale);
                            prop_assert_eq!(BigInt::from(r.mantissa()), num / den);
                        }
                        None => prop_assert!(!fits(&num) || !fits(&den)),
                    }
                }
            }

            /// floor_to and ceil_to land on the step's grid, on the right side of the value, less
            /// than one step away, with no more decimals than the step or the value needs.
            #[test]
            fn rounding_to_a_step_is_exact(x in parsed(), step in parsed().prop_map(Decimal::abs)) {
                prop_assume!(!step.is_zero());
                for up in [false, true] {
                    let got = if up { x.ceil_to(step) } else { x.floor_to(step) };
                    let Some(r) = got else { continue }; // overflow is refused, checked below
                    prop_assert!(r.is_multiple_of(step), "{} not on {}", r, step);
                    let (rv, xv, sv) = (at(r, 38), at(x, 38), at(step, 38));
                    if up {
                        prop_assert!(rv >= xv && rv.clone() - xv < sv, "ceil {} of {} on {}", r, x, step);
                    } else {
                        prop_assert!(rv <= xv && xv - rv.clone() < sv, "floor {} of {} on {}", r, x, step);
                    }
                    prop_assert!(r.scale() <= step.significant_scale().max(x.significant_scale()));
                }
                // Values that fit an i128 at the step's scale always round.
                let step = step.normalized();
                let s = x.scale().max(step.scale()) as u32;
                if fits(&(at(x, s) + at(step, s))) && fits(&(at(x, s) - at(step, s))) {
                    prop_assert!(x.floor_to(step).is_some() && x.ceil_to(step).is_some());
                }
            }

            /// No operation panics on any representable decimal (the extremes included); each
            /// answers or says `None`.
            #[test]
            fn no_operation_panics(a in any_decimal(), b in any_decimal(), scale in 0u8..=20) {
                let _ = (a.checked_add(b), a.checked_sub(b), a.checked_mul(b), a.checked_rem(b));
                let _ = (a.checked_div(b, scale), a.floor_to(b), a.ceil_to(b), a.is_multiple_of(b));
                let _ = (a.with_scale(scale), a.normalized(), a.significant_scale(), a.to_fixed_i64(8));
                let _ = (a.to_string(), a.max(b), a.min(b));
            }
        }
    }
}
