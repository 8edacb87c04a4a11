//! locksmith's reboot window (`pkg/timeutil/periodic.go`): `REBOOT_WINDOW_START` (`Thu 04:00`,
//! or `04:00` for every day) and `REBOOT_WINDOW_LENGTH` (a Go duration), and where a moment
//! stands relative to it.
//!
//! Time is plain arithmetic on a [`LocalTime`]: unix time plus the UTC offset in force. locksmith
//! computes in Go's local zone on the wall clock (`time.Date(y, m, d+k, H, M, 0, 0, loc)`), so for
//! a fixed offset this gives the same answers with no calendar or zone crate. The caller supplies
//! the offset (UTC on a default Keel machine; the agent can take `tm_gmtoff` from libc's
//! `localtime_r`). The one difference: across a DST change Go re-reads the offset for the
//! window's day, this takes the offset of `now` (an hour off on those two days a year).

use thiserror::Error;

use crate::godur::{DurationError, GoDuration, HOUR, SECOND};

const DAY_SECS: i64 = 86_400;
const DAY_NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// A moment and the UTC offset to read it in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LocalTime {
    pub unix_secs: i64,
    pub nanos: u32,
    /// Seconds east of UTC (PDT = -25200).
    pub utc_offset_secs: i32,
}

/// A parsed window. `day`: 0 = Sunday … 6 = Saturday, `None` = every day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub day: Option<u8>,
    pub hour: u8,
    pub minute: u8,
    pub length: GoDuration,
}

/// One occurrence of the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub start: LocalTime,
    pub end: LocalTime,
}

/// locksmith's messages (`ParsePeriodic`), and the both-or-neither rule of `locksmithd`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WindowError {
    #[error("unable to parse start: wrong number of fields")]
    Fields,
    #[error("unable to parse start: invalid day of week {0:?}")]
    Day(String),
    #[error("unable to parse start: invalid time of day {0:?}: {1}")]
    TimeOfDay(String, &'static str),
    #[error("unable to parse start: invalid time of day {0:?}: hour must be >= 0 and <= 23")]
    Hour(String),
    #[error("unable to parse start: invalid time of day {0:?}: minute must be >= 0 and <= 59")]
    Minute(String),
    #[error("unable to parse duration: {0}")]
    Duration(#[from] DurationError),
    #[error("duration cannot be negative")]
    Negative,
    #[error("duration cannot exceed period")]
    ExceedsPeriod,
    #[error("Either both or neither $REBOOT_WINDOW_START and $REBOOT_WINDOW_LENGTH must be set")]
    BothOrNeither,
    /// A parse error with the variable it came from.
    #[error("{key}={value:?}: {source}")]
    Key {
        key: String,
        value: String,
        source: Box<WindowError>,
    },
}

impl LocalTime {
    pub fn utc(unix_secs: i64) -> Self {
        LocalTime {
            unix_secs,
            nanos: 0,
            utc_offset_secs: 0,
        }
    }

    /// A wall-clock time in the given offset (proleptic Gregorian calendar).
    pub fn from_civil(
        y: i64,
        mo: u32,
        d: u32,
        h: u32,
        mi: u32,
        s: u32,
        utc_offset_secs: i32,
    ) -> Self {
        let local = days_from_civil(y, mo, d) * DAY_SECS + i64::from(h * 3600 + mi * 60 + s);
        LocalTime {
            unix_secs: local - i64::from(utc_offset_secs),
            nanos: 0,
            utc_offset_secs,
        }
    }

    fn unix_nanos(&self) -> i128 {
        i128::from(self.unix_secs) * i128::from(SECOND) + i128::from(self.nanos)
    }

    fn from_unix_nanos(n: i128, utc_offset_secs: i32) -> Self {
        let s = SECOND as i128;
        LocalTime {
            unix_secs: n.div_euclid(s) as i64,
            nanos: n.rem_euclid(s) as u32,
            utc_offset_secs,
        }
    }

    /// Days since 1970-01-01 of the local date.
    fn local_day(&self) -> i64 {
        (self.unix_secs + i64::from(self.utc_offset_secs)).div_euclid(DAY_SECS)
    }

    /// 0 = Sunday (1970-01-01 was a Thursday).
    pub fn weekday(&self) -> u8 {
        (self.local_day() + 4).rem_euclid(7) as u8
    }
}

impl Window {
    /// `ParsePeriodic(start, length)`.
    pub fn parse(start: &str, length: &str) -> Result<Self, WindowError> {
        let fields: Vec<&str> = start.split_whitespace().collect();
        let (day, tod) = match fields[..] {
            [tod] => (None, tod),
            [day, tod] => {
                let i = DAY_NAMES
                    .iter()
                    .position(|d| d.eq_ignore_ascii_case(day))
                    .ok_or_else(|| WindowError::Day(day.into()))?;
                (Some(i as u8), tod)
            }
            _ => return Err(WindowError::Fields),
        };
        let (hour, minute) =
            scan_hour_minute(tod).map_err(|e| WindowError::TimeOfDay(tod.into(), e))?;
        if !(0..=23).contains(&hour) {
            return Err(WindowError::Hour(tod.into()));
        }
        if !(0..=59).contains(&minute) {
            return Err(WindowError::Minute(tod.into()));
        }
        let length = GoDuration::parse(length)?;
        if length.0 < 0 {
            return Err(WindowError::Negative);
        }
        if (day.is_none() && length.0 >= 24 * HOUR) || length.0 >= 7 * 24 * HOUR {
            return Err(WindowError::ExceedsPeriod);
        }
        Ok(Window {
            day,
            hour: hour as u8,
            minute: minute as u8,
            length,
        })
    }

    /// The window from configuration variables, as `locksmithd`: `LOCKSMITHD_REBOOT_WINDOW_*`
    /// first, then `REBOOT_WINDOW_*`; an empty value is unset; neither set = no window.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, WindowError> {
        let var = |name: &str| {
            [format!("LOCKSMITHD_{name}"), name.to_string()]
                .into_iter()
                .find_map(|k| get(&k).filter(|v| !v.is_empty()).map(|v| (k, v)))
        };
        match (var("REBOOT_WINDOW_START"), var("REBOOT_WINDOW_LENGTH")) {
            (None, None) => Ok(None),
            (Some((sk, sv)), Some((lk, lv))) => Window::parse(&sv, &lv).map(Some).map_err(|e| {
                let (key, value) = if matches!(
                    e,
                    WindowError::Duration(_) | WindowError::Negative | WindowError::ExceedsPeriod
                ) {
                    (lk, lv)
                } else {
                    (sk, sv)
                };
                WindowError::Key {
                    key,
                    value,
                    source: Box::new(e),
                }
            }),
            _ => Err(WindowError::BothOrNeither),
        }
    }

    /// locksmith's `DurationToStart`: `<= 0` inside the window (how far in; the closing instant
    /// counts as inside), `> 0` the time until the next one opens.
    pub fn duration_to_start(&self, now: LocalTime) -> GoDuration {
        let r = now.unix_nanos();
        let prev = self.previous_start(now);
        let d = if prev + i128::from(self.length.0) >= r {
            prev - r
        } else {
            self.next_start(now) - r
        };
        GoDuration(d as i64)
    }

    pub fn in_window(&self, now: LocalTime) -> bool {
        self.duration_to_start(now).0 <= 0
    }

    /// The window `now` is in, else the next one.
    pub fn next_window(&self, now: LocalTime) -> Period {
        let start = now.unix_nanos() + i128::from(self.duration_to_start(now).0);
        let off = now.utc_offset_secs;
        Period {
            start: LocalTime::from_unix_nanos(start, off),
            end: LocalTime::from_unix_nanos(start + i128::from(self.length.0), off),
        }
    }

    /// Go's `shiftTimeByDays`: the window's clock time on the local date `days` after `now`'s.
    fn shift(&self, now: LocalTime, days: i64) -> i128 {
        let local = (now.local_day() + days) * DAY_SECS
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60;
        i128::from(local - i64::from(now.utc_offset_secs)) * i128::from(SECOND)
    }

    fn previous_start(&self, now: LocalTime) -> i128 {
        let wd = i64::from(now.weekday());
        match self.day {
            Some(d) => {
                let d = i64::from(d);
                if now.unix_nanos() >= self.shift(now, d - wd) {
                    self.shift(now, -(wd - d))
                } else {
                    self.shift(now, -(wd + 7 - d))
                }
            }
            None => {
                if now.unix_nanos() >= self.shift(now, 0) {
                    self.shift(now, 0)
                } else {
                    self.shift(now, -1)
                }
            }
        }
    }

    fn next_start(&self, now: LocalTime) -> i128 {
        let wd = i64::from(now.weekday());
        match self.day {
            Some(d) => {
                let d = i64::from(d);
                if now.unix_nanos() < self.shift(now, d - wd) {
                    self.shift(now, d - wd)
                } else {
                    self.shift(now, 7 - wd + d)
                }
            }
            None => {
                if now.unix_nanos() < self.shift(now, 0) {
                    self.shift(now, 0)
                } else {
                    self.shift(now, 1)
                }
            }
        }
    }
}

/// Go's `fmt.Sscanf(s, "%d:%d", &h, &m)`: a signed decimal, a literal `:`, a signed decimal;
/// anything after is ignored.
fn scan_hour_minute(s: &str) -> Result<(i64, i64), &'static str> {
    fn int(s: &str) -> Result<(i64, &str), &'static str> {
        if s.is_empty() {
            return Err("unexpected EOF");
        }
        let sign = usize::from(s.starts_with(['+', '-']));
        let digits = s[sign..].bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err("expected integer");
        }
        let end = sign + digits;
        let v = s[..end].parse::<i64>().map_err(|_| "value out of range")?;
        Ok((v, &s[end..]))
    }
    let (h, rest) = int(s)?;
    let rest = match rest.strip_prefix(':') {
        Some(r) => r,
        None if rest.is_empty() => return Err("unexpected EOF"),
        None => return Err("input does not match format"),
    };
    let (m, _) = int(rest)?;
    Ok((h, m))
}

/// Days since 1970-01-01 (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::godur::MINUTE;

    #[test]
    fn locksmith_parse_cases() {
        // locksmith.md §4, TestParsePeriodic.
        let cases = [
            ("14:00", "1h", true, "valid start time"),
            ("25:00", "1h", false, "hour out of range"),
            ("23:61", "1h", false, "minute out of range"),
            ("14", "1h", false, "bad time of day"),
            ("foo 14:00", "1h", false, "bad day of week"),
            ("sat 14:00", "1j", false, "bad duration"),
            ("sat 14:00", "-1h", false, "negative duration"),
            ("sat 14:00 1234", "1h", false, "too many fields"),
            ("sat", "1h", false, "only a day"),
        ];
        for (start, len, ok, why) in cases {
            assert_eq!(
                Window::parse(start, len).is_ok(),
                ok,
                "{why}: {start:?} {len:?}"
            );
        }
    }

    #[test]
    fn parse_details() {
        let w = Window::parse("Thu 04:00", "1h30m").unwrap();
        assert_eq!(
            w,
            Window {
                day: Some(4),
                hour: 4,
                minute: 0,
                length: GoDuration(90 * MINUTE)
            }
        );
        assert_eq!(Window::parse("SUN 9:5", "0").unwrap().day, Some(0));
        assert!(
            Window::parse("14:00xyz", "1h").is_ok(),
            "Sscanf ignores what follows"
        );
        assert!(Window::parse("", "1h").is_err());
        assert!(Window::parse("14:00", "24h").is_err());
        assert!(Window::parse("mon 14:00", "24h").is_ok());
        assert!(Window::parse("mon 14:00", "168h").is_err());
        let msg = |s, l| Window::parse(s, l).unwrap_err().to_string();
        assert_eq!(
            msg("25:00", "1h"),
            "unable to parse start: invalid time of day \"25:00\": hour must be >= 0 and <= 23"
        );
        assert_eq!(
            msg("foo 14:00", "1h"),
            "unable to parse start: invalid day of week \"foo\""
        );
        assert_eq!(
            msg("14", "1h"),
            "unable to parse start: invalid time of day \"14\": unexpected EOF"
        );
        assert_eq!(
            msg("sat 14:00", "1j"),
            "unable to parse duration: time: unknown unit \"j\" in duration \"1j\""
        );
        assert_eq!(msg("sat 14:00", "-1h"), "duration cannot be negative");
    }

    #[test]
    fn from_vars() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(Window::from_vars(vars(&[])).unwrap(), None);
        assert_eq!(
            Window::from_vars(vars(&[
                ("REBOOT_WINDOW_START", ""),
                ("REBOOT_WINDOW_LENGTH", "")
            ]))
            .unwrap(),
            None
        );
        let w = Window::from_vars(vars(&[
            ("REBOOT_WINDOW_START", "Thu 04:00"),
            ("REBOOT_WINDOW_LENGTH", "1h"),
        ]))
        .unwrap();
        assert_eq!(w.unwrap().day, Some(4));
        let w = Window::from_vars(vars(&[
            ("REBOOT_WINDOW_START", "Thu 04:00"),
            ("LOCKSMITHD_REBOOT_WINDOW_START", "Fri 04:00"),
            ("REBOOT_WINDOW_LENGTH", "1h"),
        ]));
        assert_eq!(w.unwrap().unwrap().day, Some(5));
        assert_eq!(
            Window::from_vars(vars(&[("REBOOT_WINDOW_START", "04:00")]))
                .unwrap_err()
                .to_string(),
            "Either both or neither $REBOOT_WINDOW_START and $REBOOT_WINDOW_LENGTH must be set"
        );
        let e = Window::from_vars(vars(&[
            ("REBOOT_WINDOW_START", "04:00"),
            ("REBOOT_WINDOW_LENGTH", "1j"),
        ]))
        .unwrap_err();
        assert_eq!(e.to_string(), "REBOOT_WINDOW_LENGTH=\"1j\": unable to parse duration: time: unknown unit \"j\" in duration \"1j\"");
        let e = Window::from_vars(vars(&[
            ("REBOOT_WINDOW_START", "Thux 04:00"),
            ("REBOOT_WINDOW_LENGTH", "1h"),
        ]))
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("REBOOT_WINDOW_START=\"Thux 04:00\": "),
            "{e}"
        );
    }

    const PDT: i32 = -7 * 3600;

    #[test]
    fn locksmith_duration_to_start_cases() {
        // locksmith.md §4, TestDurationToStart (all times PDT, 2015).
        let d = |h: i64, m: i64, s: i64| GoDuration(h * HOUR + m * MINUTE + s * SECOND);
        let cases = [
            ("00:15", "10s", (5, 21, 0, 0, 0), d(0, 15, 0)),
            ("00:00", "1h", (5, 21, 0, 0, 0), d(0, 0, 0)),
            ("00:00", "1h", (5, 21, 0, 0, 1), d(0, 0, -1)),
            ("02:33", "10h", (5, 21, 12, 33, 0), d(-10, 0, 0)),
            ("02:33", "10h", (5, 21, 12, 33, 1), d(13, 59, 59)),
            ("23:05", "11h", (5, 21, 9, 33, 1), d(-10, -28, -1)),
            ("Thu 00:15", "10s", (5, 21, 0, 0, 0), d(0, 15, 0)),
            ("Thu 00:00", "1h", (5, 21, 0, 0, 0), d(0, 0, 0)),
            ("Sun 00:00", "1h", (5, 17, 0, 0, 1), d(0, 0, -1)),
            ("Sun 02:33", "10h", (5, 17, 12, 33, 0), d(-10, 0, 0)),
            ("Sat 23:05", "11h", (5, 17, 9, 33, 1), d(-10, -28, -1)),
            ("Mon 9:00", "1h", (5, 30, 23, 0, 0), d(34, 0, 0)),
            ("Sun 23:00", "4h", (6, 1, 1, 0, 0), d(-2, 0, 0)),
        ];
        for (start, len, (mo, day, h, mi, s), want) in cases {
            let w = Window::parse(start, len).unwrap();
            let now = LocalTime::from_civil(2015, mo, day, h, mi, s, PDT);
            assert_eq!(
                w.duration_to_start(now),
                want,
                "{start} {len} at 2015-{mo}-{day} {h}:{mi}:{s}"
            );
            assert_eq!(w.in_window(now), want.0 <= 0);
        }
    }

    #[test]
    fn weekdays_and_next_window() {
        assert_eq!(
            LocalTime::from_civil(2015, 5, 21, 0, 0, 0, PDT).weekday(),
            4
        ); // Thursday
        assert_eq!(
            LocalTime::from_civil(2015, 5, 17, 0, 0, 0, PDT).weekday(),
            0
        ); // Sunday
        assert_eq!(LocalTime::utc(0).weekday(), 4);
        // Thursday 23:30 PDT is Friday 06:30 UTC: the weekday is the local one.
        assert_eq!(
            LocalTime::from_civil(2015, 5, 21, 23, 30, 0, PDT).weekday(),
            4
        );
        let w = Window::parse("Thu 04:00", "1h").unwrap();
        let now = LocalTime::from_civil(2015, 5, 21, 5, 0, 1, PDT);
        let p = w.next_window(now);
        assert_eq!(p.start, LocalTime::from_civil(2015, 5, 28, 4, 0, 0, PDT));
        assert_eq!(p.end, LocalTime::from_civil(2015, 5, 28, 5, 0, 0, PDT));
        // Inside: the current window.
        let p = w.next_window(LocalTime::from_civil(2015, 5, 21, 4, 30, 0, PDT));
        assert_eq!(p.start, LocalTime::from_civil(2015, 5, 21, 4, 0, 0, PDT));
        // Sub-second now: Go's nanosecond arithmetic.
        let w = Window::parse("00:00", "1h").unwrap();
        let mut now = LocalTime::from_civil(2015, 5, 21, 1, 0, 0, 0);
        now.nanos = 1;
        assert_eq!(w.duration_to_start(now), GoDuration(23 * HOUR - 1));
    }
}
