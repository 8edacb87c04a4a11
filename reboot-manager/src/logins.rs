//! Is anyone logged in? Read from utmp, the record every login (getty, sshd) writes. Not being
//! able to tell counts as "someone is": the opposite rebooted machines under their users in
//! Zincati (fedora-coreos-tracker#1780).

use std::path::Path;

/// glibc's `struct utmp` on x86_64 and aarch64.
const RECORD: usize = 384;
const USER_PROCESS: i16 = 7;
const LINE: std::ops::Range<usize> = 8..40;
const USER: std::ops::Range<usize> = 44..76;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Logins {
    Nobody,
    /// `user@line` for each session.
    Sessions(Vec<String>),
    /// utmp could not be read: treated as someone being logged in.
    Unknown(String),
}

impl Logins {
    pub fn anyone(&self) -> bool {
        !matches!(self, Logins::Nobody)
    }
}

pub fn read(utmp: &Path) -> Logins {
    match std::fs::read(utmp) {
        Ok(bytes) => parse(&bytes),
        Err(e) => Logins::Unknown(format!("reading {}: {e}", utmp.display())),
    }
}

pub fn parse(bytes: &[u8]) -> Logins {
    if bytes.len() % RECORD != 0 {
        return Logins::Unknown(format!(
            "utmp is {} bytes, not a whole number of {RECORD}-byte records",
            bytes.len()
        ));
    }
    let sessions: Vec<String> = bytes
        .chunks_exact(RECORD)
        .filter(|r| i16::from_le_bytes([r[0], r[1]]) == USER_PROCESS)
        .map(|r| format!("{}@{}", cstr(&r[USER]), cstr(&r[LINE])))
        .collect();
    if sessions.is_empty() {
        Logins::Nobody
    } else {
        Logins::Sessions(sessions)
    }
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: i16, line: &str, user: &str) -> Vec<u8> {
        let mut r = vec![0u8; RECORD];
        r[0..2].copy_from_slice(&kind.to_le_bytes());
        r[LINE.start..LINE.start + line.len()].copy_from_slice(line.as_bytes());
        r[USER.start..USER.start + user.len()].copy_from_slice(user.as_bytes());
        r
    }

    #[test]
    fn user_processes_are_sessions_and_the_rest_is_not() {
        let mut utmp = record(2, "~", "reboot"); // BOOT_TIME
        utmp.extend(record(8, "tty1", "")); // DEAD_PROCESS
        assert_eq!(parse(&utmp), Logins::Nobody);
        utmp.extend(record(USER_PROCESS, "pts/0", "core"));
        assert_eq!(parse(&utmp), Logins::Sessions(vec!["core@pts/0".into()]));
    }

    #[test]
    fn unreadable_or_torn_utmp_counts_as_someone() {
        assert!(read(Path::new("/nonexistent/utmp")).anyone());
        assert!(parse(&[0u8; 100]).anyone());
        assert!(!parse(&[]).anyone());
    }
}
