//! Where locksmith keeps its semaphore (`lock/etcd.go`).

/// The default (group-less) key.
pub const SEMAPHORE_KEY: &str = "coreos.com/updateengine/rebootlock/semaphore";
const GROUPS_PREFIX: &str = "coreos.com/updateengine/rebootlock/groups/";

/// The key of `group`'s semaphore; `None` or `""` is the default key, as in locksmith.
pub fn semaphore_key(group: Option<&str>) -> String {
    match group {
        None | Some("") => SEMAPHORE_KEY.to_string(),
        Some(g) => format!("{GROUPS_PREFIX}{}/semaphore", query_escape(g)),
    }
}

/// Go's `url.QueryEscape`: ASCII letters, digits and `-_.~` stay, a space becomes `+`, every
/// other byte is `%XX` in upper-case hex.
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locksmith_keys() {
        // etcd_test.go TestEtcdLockClientInit, plus the default key.
        let cases = [
            (None, "coreos.com/updateengine/rebootlock/semaphore"),
            (Some(""), "coreos.com/updateengine/rebootlock/semaphore"),
            (
                Some("database"),
                "coreos.com/updateengine/rebootlock/groups/database/semaphore",
            ),
            (
                Some("prod/database"),
                "coreos.com/updateengine/rebootlock/groups/prod%2Fdatabase/semaphore",
            ),
        ];
        for (group, key) in cases {
            assert_eq!(semaphore_key(group), key, "{group:?}");
        }
    }

    #[test]
    fn query_escape_is_gos() {
        let cases = [
            ("a b", "a+b"),
            ("a-b_c.d~e", "a-b_c.d~e"),
            ("x&y=z?/#%+", "x%26y%3Dz%3F%2F%23%25%2B"),
            ("é", "%C3%A9"),
            ("", ""),
        ];
        for (i, o) in cases {
            assert_eq!(query_escape(i), o, "{i:?}");
        }
    }
}
