//! Which proxy a URL goes through, read from the environment as curl reads it:
//! `http_proxy` / `https_proxy` by the URL's scheme, then `all_proxy`; the lower-case name
//! first, then the upper-case one; `no_proxy` / `NO_PROXY` lists hosts that go direct.
//! (curl ignores an upper-case `HTTP_PROXY`, a guard for CGI programs where a request header
//! can set it; Keel's tools are not CGI programs, so it counts here.)

use std::net::IpAddr;

/// The proxy settings of one environment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyEnv {
    /// (variable name, value) for `http://` URLs.
    pub http: Option<(String, String)>,
    /// (variable name, value) for `https://` URLs.
    pub https: Option<(String, String)>,
    pub no_proxy: NoProxy,
}

impl ProxyEnv {
    /// The process environment's settings.
    pub fn from_env() -> ProxyEnv {
        ProxyEnv::from_lookup(|name| std::env::var(name).ok())
    }

    /// The settings `lookup` gives (a variable set to "" counts as unset, as in curl).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> ProxyEnv {
        let first = |names: &[&str]| {
            names.iter().find_map(|n| {
                lookup(n)
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| (n.to_string(), v.trim().to_string()))
            })
        };
        let all = ["all_proxy", "ALL_PROXY"];
        ProxyEnv {
            http: first(&["http_proxy", "HTTP_PROXY"]).or_else(|| first(&all)),
            https: first(&["https_proxy", "HTTPS_PROXY"]).or_else(|| first(&all)),
            no_proxy: first(&["no_proxy", "NO_PROXY"])
                .map(|(_, v)| NoProxy::parse(&v))
                .unwrap_or_default(),
        }
    }

    /// The (variable, proxy) `url` should go through, or `None` for a direct connection.
    pub fn proxy_for(&self, url: &str) -> Option<&(String, String)> {
        let (scheme, host) = scheme_and_host(url)?;
        let proxy = match scheme.as_str() {
            "http" => self.http.as_ref(),
            "https" => self.https.as_ref(),
            _ => None,
        }?;
        (!self.no_proxy.matches(&host)).then_some(proxy)
    }
}

/// curl's `NO_PROXY`: comma (or space) separated entries; `*` alone matches every host; a
/// name matches itself and its subdomains (a leading `.` is ignored); an IP address matches
/// itself, an `ADDR/BITS` entry its network.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NoProxy {
    entries: Vec<String>,
}

impl NoProxy {
    pub fn parse(list: &str) -> NoProxy {
        let entries = list
            .split([',', ' ', '\t'])
            .map(|e| e.trim().trim_start_matches('.').to_ascii_lowercase())
            .map(|e| {
                e.strip_prefix('[')
                    .and_then(|e| e.strip_suffix(']'))
                    .map(str::to_string)
                    .unwrap_or(e)
            })
            .filter(|e| !e.is_empty())
            .collect();
        NoProxy { entries }
    }

    pub fn matches(&self, host: &str) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let ip: Option<IpAddr> = host.parse().ok();
        self.entries.iter().any(|e| {
            if e == "*" {
                return true;
            }
            if let Some(ip) = ip {
                return match e.split_once('/') {
                    Some((net, bits)) => in_network(ip, net, bits),
                    None => e.parse::<IpAddr>().is_ok_and(|e| e == ip),
                };
            }
            host == *e || host.ends_with(&format!(".{e}"))
        })
    }
}

fn in_network(ip: IpAddr, net: &str, bits: &str) -> bool {
    let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u32>()) else {
        return false;
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// The lower-case scheme and host of an absolute URL (the host without port or brackets).
fn scheme_and_host(url: &str) -> Option<(String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?.to_string()
    } else {
        authority.split(':').next()?.to_string()
    };
    Some((scheme.to_ascii_lowercase(), host))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> ProxyEnv {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ProxyEnv::from_lookup(|k| m.get(k).cloned())
    }

    fn via(e: &ProxyEnv, url: &str) -> Option<String> {
        e.proxy_for(url).map(|(k, v)| format!("{k}={v}"))
    }

    #[test]
    fn the_scheme_picks_the_variable_and_all_proxy_is_the_fallback() {
        let e = env(&[
            ("HTTPS_PROXY", "http://s:1"),
            ("http_proxy", "http://p:2"),
            ("ALL_PROXY", "http://a:3"),
        ]);
        assert_eq!(via(&e, "https://x/y").unwrap(), "HTTPS_PROXY=http://s:1");
        assert_eq!(via(&e, "http://x/y").unwrap(), "http_proxy=http://p:2");
        let e = env(&[("all_proxy", "http://a:3")]);
        assert_eq!(via(&e, "https://x/").unwrap(), "all_proxy=http://a:3");
        assert_eq!(via(&e, "http://x/").unwrap(), "all_proxy=http://a:3");
        assert_eq!(via(&env(&[]), "http://x/"), None);
        assert_eq!(via(&env(&[("https_proxy", "")]), "https://x/"), None);
    }

    #[test]
    fn lower_case_wins_over_upper_case() {
        let e = env(&[
            ("https_proxy", "http://low:1"),
            ("HTTPS_PROXY", "http://up:1"),
        ]);
        assert_eq!(via(&e, "https://x/").unwrap(), "https_proxy=http://low:1");
        let e = env(&[
            ("ALL_PROXY", "http://a:1"),
            ("no_proxy", "x"),
            ("NO_PROXY", "*"),
        ]);
        assert_eq!(via(&e, "https://y/").unwrap(), "ALL_PROXY=http://a:1");
        assert_eq!(via(&e, "https://x/"), None);
    }

    #[test]
    fn no_proxy_matches_as_curl_does() {
        let n = NoProxy::parse("example.com, .internal ,10.0.0.0/8,::1, 192.168.1.5");
        assert!(n.matches("example.com"));
        assert!(n.matches("a.b.EXAMPLE.com"));
        assert!(!n.matches("notexample.com"));
        assert!(n.matches("internal"));
        assert!(n.matches("db.internal"));
        assert!(n.matches("10.2.3.4"));
        assert!(!n.matches("11.2.3.4"));
        assert!(n.matches("[::1]"));
        assert!(n.matches("192.168.1.5"));
        assert!(!n.matches("192.168.1.6"));
        assert!(NoProxy::parse("*").matches("anything"));
        assert!(!NoProxy::parse("").matches("anything"));
    }

    #[test]
    fn hosts_come_out_of_urls() {
        let h = |u| scheme_and_host(u).map(|(_, h)| h);
        assert_eq!(h("http://u:p@Host:80/x").as_deref(), Some("Host"));
        assert_eq!(h("https://[::1]:8443/").as_deref(), Some("::1"));
        assert_eq!(h("http://h?q").as_deref(), Some("h"));
        assert_eq!(h("nope"), None);
    }
}
