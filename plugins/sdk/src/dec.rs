//! A small exact decimal for strategies: prices and quantities stay exact from the exchange's
//! strings to the orders a strategy sends.

use std::cmp::Ordering;
use std::fmt;

/// `mantissa × 10^-scale`, at most 18 decimals.
#[derive(Debug, Clone, Copy)]
pub struct Dec {
    mantissa: i128,
    scale: u32,
}

impl Dec {
    pub const ZERO: Dec = Dec { mantissa: 0, scale: 0 };

    pub fn parse(text: &str) -> Option<Dec> {
        let (neg, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        if int.is_empty() || frac.len() > 18 || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        let mantissa: i128 = format!("{int}{frac}").parse().ok()?;
        Some(Dec { mantissa: if neg { -mantissa } else { mantissa }, scale: frac.len() as u32 })
    }

    pub fn from_int(v: i64) -> Dec {
        Dec { mantissa: v as i128, scale: 0 }
    }

    fn align(self, other: Dec) -> Option<(i128, i128, u32)> {
        let scale = self.scale.max(other.scale);
        let a = self.mantissa.checked_mul(10i128.checked_pow(scale - self.scale)?)?;
        let b = other.mantissa.checked_mul(10i128.checked_pow(scale - other.scale)?)?;
        Some((a, b, scale))
    }

    pub fn checked_add(self, other: Dec) -> Option<Dec> {
        let (a, b, scale) = self.align(other)?;
        Some(Dec { mantissa: a.checked_add(b)?, scale })
    }

    pub fn checked_sub(self, other: Dec) -> Option<Dec> {
        let (a, b, scale) = self.align(other)?;
        Some(Dec { mantissa: a.checked_sub(b)?, scale })
    }

    pub fn checked_mul_int(self, k: i64) -> Option<Dec> {
        Some(Dec { mantissa: self.mantissa.checked_mul(k as i128)?, scale: self.scale })
    }

    pub fn checked_mul(self, other: Dec) -> Option<Dec> {
        let scale = self.scale + other.scale;
        if scale > 36 {
            return None;
        }
        Some(Dec { mantissa: self.mantissa.checked_mul(other.mantissa)?, scale })
    }

    /// `self / other` rounded down to `scale` decimals.
    pub fn div_floor(self, other: Dec, scale: u32) -> Option<Dec> {
        if other.mantissa == 0 {
            return None;
        }
        // self/other = (a·10^-sa)/(b·10^-sb); scaled to 10^-scale: a·10^(scale+sb-sa) / b.
        let shift = scale as i64 + other.scale as i64 - self.scale as i64;
        let (num, den) = if shift >= 0 {
            (self.mantissa.checked_mul(10i128.checked_pow(shift as u32)?)?, other.mantissa)
        } else {
            (self.mantissa, other.mantissa.checked_mul(10i128.checked_pow((-shift) as u32)?)?)
        };
        Some(Dec { mantissa: num.div_euclid(den), scale })
    }

    pub fn is_positive(self) -> bool {
        self.mantissa > 0
    }
}

impl PartialEq for Dec {
    fn eq(&self, other: &Dec) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Dec {}

impl PartialOrd for Dec {
    fn partial_cmp(&self, other: &Dec) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Dec {
    fn cmp(&self, other: &Dec) -> Ordering {
        match self.align(*other) {
            Some((a, b, _)) => a.cmp(&b),
            // Too large to align: compare by integer parts, which then differ.
            None => (self.mantissa / 10i128.pow(self.scale)).cmp(&(other.mantissa / 10i128.pow(other.scale))),
        }
    }
}

impl fmt::Display for Dec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let neg = self.mantissa < 0;
        let digits = self.mantissa.unsigned_abs().to_string();
        let scale = self.scale as usize;
        let padded =
            if digits.len() <= scale { format!("{}{digits}", "0".repeat(scale - digits.len() + 1)) } else { digits };
        let (int, frac) = padded.split_at(padded.len() - scale);
        let sign = if neg { "-" } else { "" };
        if scale == 0 {
            write!(f, "{sign}{int}")
        } else {
            write!(f, "{sign}{int}.{frac}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_round_trips_and_arithmetic() {
        let p = Dec::parse("60000.01").unwrap();
        assert_eq!(p.to_string(), "60000.01");
        assert_eq!(p.checked_sub(Dec::parse("0.05").unwrap()).unwrap().to_string(), "59999.96");
        assert_eq!(Dec::parse("0.00100").unwrap().to_string(), "0.00100");
        assert_eq!(Dec::from_int(20).div_floor(p, 5).unwrap().to_string(), "0.00033");
        assert!(Dec::parse("1.5").unwrap() > Dec::parse("1.49999").unwrap());
        assert_eq!(Dec::parse("0.01").unwrap().checked_mul_int(3).unwrap().to_string(), "0.03");
        for bad in ["", "1e5", "1.2.3", "abc", "-"] {
            assert!(Dec::parse(bad).is_none(), "{bad}");
        }
    }
}
