//! Value checks: coreos-cloudinit's `valid:"…"` regular expressions, written out by hand (one
//! function each, same language), plus the checks Keel adds.

/// The value checks a schema field may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// `^(base64|b64|gz|gzip|gz\+base64|gzip\+base64|gz\+b64|gzip\+b64)$`
    Encoding,
    /// `^0?[0-7]{3,4}$`
    Permissions,
    /// `^(start|stop|restart|reload|try-restart|reload-or-restart|reload-or-try-restart)$`
    UnitCommand,
    /// `^(best-effort|etcd-lock|reboot|off)$`
    RebootStrategy,
    /// etcd2 `proxy`: `^(on|off|readonly)$`
    EtcdProxy,
    /// locksmith `window_start`: `^((?i:sun|mon|tue|wed|thu|fri|sat|sun) )?0*([0-9]|1[0-9]|2[0-3]):0*([0-9]|[1-5][0-9])$`
    WindowStart,
    /// locksmith `window_length`: `^[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+$`
    WindowLength,
}

pub const UNIT_COMMANDS: &[&str] = &[
    "start",
    "stop",
    "restart",
    "reload",
    "try-restart",
    "reload-or-restart",
    "reload-or-try-restart",
];
pub const REBOOT_STRATEGIES: &[&str] = &["best-effort", "etcd-lock", "reboot", "off"];

impl Check {
    /// The upstream regular expression's verdict.
    pub fn upstream_ok(self, v: &str) -> bool {
        match self {
            Check::Encoding => crate::encoding::Encoding::parse(v).is_ok(),
            Check::Permissions => permissions_ok(v),
            Check::UnitCommand => UNIT_COMMANDS.contains(&v),
            Check::RebootStrategy => REBOOT_STRATEGIES.contains(&v),
            Check::EtcdProxy => matches!(v, "on" | "off" | "readonly"),
            Check::WindowStart => window_start_ok(v),
            Check::WindowLength => window_length_shape_ok(v),
        }
    }

    /// What Keel refuses beyond the upstream expression (a reason), for values it accepted.
    pub fn keel_refuses(self, v: &str) -> Option<String> {
        match self {
            Check::WindowLength => go_duration(v).err(),
            _ => None,
        }
    }
}

pub fn permissions_ok(v: &str) -> bool {
    let d = v.strip_prefix('0').unwrap_or(v);
    let all_octal = |s: &str| s.bytes().all(|b| (b'0'..=b'7').contains(&b));
    // `0?` is optional, so "0644" may also match as four digits: either reading will do.
    ((3..=4).contains(&d.len()) && all_octal(d)) || ((3..=4).contains(&v.len()) && all_octal(v))
}

/// `0*([0-9]|1[0-9]|2[0-3])` style: digits, leading zeros free, then at most `max`.
fn clock_part_ok(s: &str, max: u32) -> bool {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let rest = s.trim_start_matches('0');
    rest.len() <= 2 && rest.parse::<u32>().unwrap_or(0) <= max
}

pub fn window_start_ok(v: &str) -> bool {
    let days = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
    let time = match v.get(..4) {
        Some(p) if p.ends_with(' ') && days.contains(&p[..3].to_ascii_lowercase().as_str()) => {
            &v[4..]
        }
        _ => v,
    };
    match time.split_once(':') {
        Some((h, m)) => clock_part_ok(h, 23) && clock_part_ok(m, 59),
        None => false,
    }
}

/// `^[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+$`
pub fn window_length_shape_ok(v: &str) -> bool {
    let b = v.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'-' | b'+')));
    if i == b.len() {
        return false;
    }
    while i < b.len() {
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i < b.len() && b[i] == b'.' {
            i += 1;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
        }
        let letters = i;
        while i < b.len() && b[i].is_ascii_lowercase() {
            i += 1;
        }
        if i == letters {
            return false;
        }
    }
    true
}

/// Go's `time.ParseDuration`, which locksmith applies to `window_length`; returns nanoseconds.
pub fn go_duration(v: &str) -> Result<i128, String> {
    let bad =
        || format!("{v:?} is not a duration like \"1h\" or \"1h30m\" (units ns, us, ms, s, m, h)");
    let (neg, mut s) = match v.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, v.strip_prefix('+').unwrap_or(v)),
    };
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(bad());
    }
    let mut total: f64 = 0.0;
    while !s.is_empty() {
        let num_len = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let num = &s[..num_len];
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(bad());
        }
        let n: f64 = num.parse().map_err(|_| bad())?;
        s = &s[num_len..];
        let unit_len = s
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(s.len());
        let scale = match &s[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total += n * scale;
        s = &s[unit_len..];
    }
    let ns = total as i128;
    Ok(if neg { -ns } else { ns })
}

/// Go's `url.ParseRequestURI` verdict (coreos-cloudinit's discovery URL check).
pub fn request_uri_ok(v: &str) -> bool {
    if v.is_empty() || v.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return false;
    }
    let rest = match v.find(':') {
        Some(i)
            if i > 0
                && v.as_bytes()[0].is_ascii_alphabetic()
                && v[..i]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')) =>
        {
            &v[i + 1..]
        }
        Some(0) => return false,
        _ => return v.starts_with('/') || v == "*",
    };
    match rest.strip_prefix("//") {
        None => true, // opaque ("mailto:x") or absolute path
        Some(auth_path) => {
            let authority = auth_path.split(['/', '?', '#']).next().unwrap_or("");
            let host_port = authority.rsplit('@').next().unwrap_or("");
            let port = if host_port.starts_with('[') {
                host_port.rsplit_once("]").map(|(_, p)| p).unwrap_or("x")
            } else {
                host_port.rsplit_once(':').map(|(_, p)| p).unwrap_or("")
            };
            let port = port.strip_prefix(':').unwrap_or(port);
            port.bytes().all(|b| b.is_ascii_digit())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions() {
        for ok in ["0644", "644", "0744", "1777", "01777"] {
            assert!(permissions_ok(ok), "{ok}");
        }
        for bad in ["0888", "64", "00644x", "rw-r--r--", "484", "001777"] {
            assert!(!permissions_ok(bad), "{bad}");
        }
    }

    #[test]
    fn window_start_like_locksmith_test() {
        for ok in [
            "Sun 00:00",
            "sUn 23:59",
            "mon 0:0",
            "04:00",
            "Thu 04:00",
            "0:00",
            "000:000",
        ] {
            assert!(window_start_ok(ok), "{ok}");
        }
        for bad in ["tues 0:0", "20:60", "24:00", "Thu", "Thu  04:00", "", "4"] {
            assert!(!window_start_ok(bad), "{bad}");
        }
    }

    #[test]
    fn window_length() {
        for ok in ["1h", "1h30m", "0.5h", "+3m", "1.h"] {
            assert!(window_length_shape_ok(ok), "{ok}");
            assert!(go_duration(ok).is_ok(), "{ok}");
        }
        assert!(!window_length_shape_ok("0.5.0h"));
        assert!(!window_length_shape_ok("1"));
        assert!(!window_length_shape_ok("1H"));
        // The upstream expression lets these through; Go's ParseDuration (locksmith) does not.
        assert!(window_length_shape_ok("1x"));
        assert!(go_duration("1x").is_err());
        assert!(go_duration("h").is_err());
        assert_eq!(go_duration("1h30m").unwrap(), 5_400_000_000_000);
    }

    #[test]
    fn request_uri() {
        for ok in [
            "https://discovery.etcd.io/0000",
            "/path",
            "http://a:2379",
            "mailto:x",
        ] {
            assert!(request_uri_ok(ok), "{ok}");
        }
        for bad in ["disco", "", "://x", "http://a:b/", "a b\n"] {
            assert!(!request_uri_ok(bad), "{bad}");
        }
    }
}
