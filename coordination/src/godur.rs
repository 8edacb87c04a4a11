//! Go's `time.Duration`: `REBOOT_WINDOW_LENGTH` is parsed by `time.ParseDuration`, so Keel
//! parses the same strings the same way (`1h30m`, `1.5h`, `90m`, `-1h`, `0`; `1` and `1j` are
//! errors), and prints durations as Go's `String` does (`13h59m59s`).

use std::fmt;

use thiserror::Error;

/// Signed nanoseconds, as Go's `time.Duration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GoDuration(pub i64);

pub const NANOSECOND: i64 = 1;
pub const SECOND: i64 = 1_000_000_000;
pub const MINUTE: i64 = 60 * SECOND;
pub const HOUR: i64 = 60 * MINUTE;

/// Go's error text: `time: invalid duration "1"` and friends.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DurationError {
    #[error("time: invalid duration \"{0}\"")]
    Invalid(String),
    #[error("time: missing unit in duration \"{0}\"")]
    MissingUnit(String),
    #[error("time: unknown unit \"{unit}\" in duration \"{orig}\"")]
    UnknownUnit { unit: String, orig: String },
}

impl GoDuration {
    pub fn from_secs(s: i64) -> Self {
        GoDuration(s * SECOND)
    }

    /// `time.ParseDuration`.
    pub fn parse(orig: &str) -> Result<Self, DurationError> {
        let invalid = || DurationError::Invalid(orig.to_string());
        let mut s = orig.as_bytes();
        let mut neg = false;
        if let Some(&c) = s.first() {
            if c == b'-' || c == b'+' {
                neg = c == b'-';
                s = &s[1..];
            }
        }
        if s == b"0" {
            return Ok(GoDuration(0));
        }
        if s.is_empty() {
            return Err(invalid());
        }
        let mut d: u64 = 0;
        while !s.is_empty() {
            if !(s[0] == b'.' || s[0].is_ascii_digit()) {
                return Err(invalid());
            }
            // Integer part.
            let n = s.iter().take_while(|c| c.is_ascii_digit()).count();
            let mut v: u64 = 0;
            for &c in &s[..n] {
                if v > (1 << 63) / 10 {
                    return Err(invalid());
                }
                v = v * 10 + u64::from(c - b'0');
                if v > 1 << 63 {
                    return Err(invalid());
                }
            }
            let pre = n > 0;
            s = &s[n..];
            // Fraction: digits past overflow are consumed and ignored, as Go does.
            let (mut f, mut scale, mut post) = (0u64, 1f64, false);
            if s.first() == Some(&b'.') {
                s = &s[1..];
                let n = s.iter().take_while(|c| c.is_ascii_digit()).count();
                let mut overflow = false;
                for &c in &s[..n] {
                    if overflow {
                        continue;
                    }
                    if f > (1 << 63) / 10 {
                        overflow = true;
                        continue;
                    }
                    let y = f * 10 + u64::from(c - b'0');
                    if y > 1 << 63 {
                        overflow = true;
                        continue;
                    }
                    f = y;
                    scale *= 10.0;
                }
                post = n > 0;
                s = &s[n..];
            }
            if !pre && !post {
                return Err(invalid());
            }
            let n = s
                .iter()
                .take_while(|&&c| c != b'.' && !c.is_ascii_digit())
                .count();
            if n == 0 {
                return Err(DurationError::MissingUnit(orig.to_string()));
            }
            let u = std::str::from_utf8(&s[..n]).map_err(|_| invalid())?;
            s = &s[n..];
            let unit: u64 = match u {
                "ns" => 1,
                "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
                "ms" => 1_000_000,
                "s" => SECOND as u64,
                "m" => MINUTE as u64,
                "h" => HOUR as u64,
                _ => {
                    return Err(DurationError::UnknownUnit {
                        unit: u.to_string(),
                        orig: orig.to_string(),
                    })
                }
            };
            if v > (1 << 63) / unit {
                return Err(invalid());
            }
            v *= unit;
            if f > 0 {
                v += (f as f64 * (unit as f64 / scale)) as u64;
                if v > 1 << 63 {
                    return Err(invalid());
                }
            }
            d += v;
            if d > 1 << 63 {
                return Err(invalid());
            }
        }
        if neg {
            return Ok(GoDuration((d as i64).wrapping_neg()));
        }
        if d > (1 << 63) - 1 {
            return Err(invalid());
        }
        Ok(GoDuration(d as i64))
    }

    /// For waiting: negative durations are zero.
    pub fn to_std(self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.0.max(0) as u64)
    }
}

/// Go's `Duration.String`.
impl fmt::Display for GoDuration {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        let neg = self.0 < 0;
        let mut u = self.0.unsigned_abs();
        let sign = if neg { "-" } else { "" };
        if u < SECOND as u64 {
            let (unit, prec) = match u {
                0 => return out.write_str("0s"),
                1..=999 => ("ns", 0),
                1_000..=999_999 => ("\u{b5}s", 3),
                _ => ("ms", 6),
            };
            let frac = frac(&mut u, prec);
            return write!(out, "{sign}{u}{frac}{unit}");
        }
        let frac = frac(&mut u, 9);
        let (secs, mins, hours) = (u % 60, (u / 60) % 60, u / 3600);
        if hours > 0 {
            write!(out, "{sign}{hours}h{mins}m{secs}{frac}s")
        } else if mins > 0 {
            write!(out, "{sign}{mins}m{secs}{frac}s")
        } else {
            write!(out, "{sign}{secs}{frac}s")
        }
    }
}

/// Go's `fmtFrac`: `.digits` of `u / 10^prec` without trailing zeros (nothing for 0); leaves
/// the integer part in `u`.
fn frac(u: &mut u64, prec: u32) -> String {
    let p = 10u64.pow(prec);
    let f = *u % p;
    *u /= p;
    if f == 0 {
        return String::new();
    }
    let digits = format!("{f:0width$}", width = prec as usize);
    format!(".{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_like_go() {
        let ok = [
            ("0", 0),
            ("-0", 0),
            ("1h", HOUR),
            ("1h30m", HOUR + 30 * MINUTE),
            ("1.5h", HOUR + 30 * MINUTE),
            ("10s", 10 * SECOND),
            ("11h", 11 * HOUR),
            ("-1h", -HOUR),
            ("+5m", 5 * MINUTE),
            (".5s", SECOND / 2),
            ("1.s", SECOND),
            ("100ms", 100_000_000),
            ("3us", 3_000),
            ("3\u{b5}s", 3_000),
            ("3\u{3bc}s", 3_000),
            ("7ns", 7),
            (
                "2h45m30.5s",
                2 * HOUR + 45 * MINUTE + 30 * SECOND + SECOND / 2,
            ),
            ("9223372036854775807ns", i64::MAX),
            ("-9223372036854775808ns", i64::MIN),
        ];
        for (s, want) in ok {
            assert_eq!(GoDuration::parse(s), Ok(GoDuration(want)), "{s}");
        }
        let bad = [
            ("", "time: invalid duration \"\""),
            ("1", "time: missing unit in duration \"1\""),
            ("1j", "time: unknown unit \"j\" in duration \"1j\""),
            ("h", "time: invalid duration \"h\""),
            (".h", "time: invalid duration \".h\""),
            ("1h ", "time: unknown unit \"h \" in duration \"1h \""),
            (" 1h", "time: invalid duration \" 1h\""),
            ("1d", "time: unknown unit \"d\" in duration \"1d\""),
            (
                "9223372036854775808ns",
                "time: invalid duration \"9223372036854775808ns\"",
            ),
            ("3000000h", "time: invalid duration \"3000000h\""),
        ];
        for (s, want) in bad {
            assert_eq!(GoDuration::parse(s).unwrap_err().to_string(), want, "{s:?}");
        }
    }

    #[test]
    fn display_like_go() {
        let cases = [
            (0, "0s"),
            (1, "1ns"),
            (1_100, "1.1\u{b5}s"),
            (2_200_000, "2.2ms"),
            (SECOND + SECOND / 2, "1.5s"),
            (15 * MINUTE, "15m0s"),
            (HOUR, "1h0m0s"),
            (13 * HOUR + 59 * MINUTE + 59 * SECOND, "13h59m59s"),
            (-(10 * HOUR + 28 * MINUTE + SECOND), "-10h28m1s"),
            (-SECOND, "-1s"),
        ];
        for (d, s) in cases {
            assert_eq!(GoDuration(d).to_string(), s);
        }
    }
}
