//! The exit codes of every Keel command. One meaning per number, whichever command exits with
//! it; a command uses the subset that can happen to it. The table is shown once, by `--help`
//! (the [`HELP`] epilogue) and in the README.

use std::process::ExitCode;

/// Success.
pub const OK: i32 = 0;
/// The operation failed for a reason no other code names: an external tool failed, an upload
/// was rejected, an unexpected system error.
pub const FAILED: i32 = 1;
/// A bad argument or input the user must fix: clap's own usage errors, a wrong definition file,
/// a missing or unreadable input file.
pub const USAGE: i32 = 2;
/// A check failed: a signature, hash or dm-verity tree does not verify (an untrusted payload or
/// image, `keel verify` finding a fault), or a cloud-config is invalid.
pub const VERIFICATION: i32 = 3;
/// Genuine, but not for this system: architecture, board, or an older version.
pub const NOT_APPLICABLE: i32 = 4;
/// A payload or image could not be read or downloaded completely.
pub const UNREADABLE: i32 = 5;
/// The trusted keys could not be loaded.
pub const KEYS: i32 = 6;
/// The disk, its partition table or its slot layout does not allow the operation.
pub const DISK: i32 = 7;
/// Reading or writing a slot or a device failed part way (read-back included).
pub const IO: i32 = 8;
/// Refused: the target is in use, mounted, the running system's, or the operation is not
/// allowed in this state.
pub const REFUSED: i32 = 9;
/// The machine lacks something: a tool, firmware, an ioctl; QEMU could not start.
pub const ENVIRONMENT: i32 = 10;
/// `keel boot`: the expected text did not appear in time, or the guest fell silent.
pub const TIMEOUT: i32 = 11;
/// `keel boot`: kernel panic, or the guest powered off (QEMU exited) before the text.
pub const GUEST_FAILED: i32 = 12;
/// Interrupted by SIGINT or SIGTERM (128 + SIGINT, as shells report it).
pub const INTERRUPTED: i32 = 130;

/// Every code with its one-line meaning, in order.
pub const TABLE: [(i32, &str); 14] = [
    (OK, "ok"),
    (
        FAILED,
        "failed (an external tool, an upload, an unexpected system error)",
    ),
    (USAGE, "usage: a bad argument or input file"),
    (
        VERIFICATION,
        "verification failed: signature, hash, dm-verity, cloud-config",
    ),
    (
        NOT_APPLICABLE,
        "not for this system (architecture, board, version)",
    ),
    (UNREADABLE, "payload or image unreadable or incomplete"),
    (KEYS, "trusted keys could not be loaded"),
    (DISK, "the disk or its slot layout does not allow it"),
    (IO, "reading or writing a slot or device failed"),
    (
        REFUSED,
        "refused: in use, mounted, the running system's, not allowed now",
    ),
    (
        ENVIRONMENT,
        "the machine lacks a tool, firmware or ioctl; QEMU cannot start",
    ),
    (TIMEOUT, "boot: the expected text did not appear in time"),
    (
        GUEST_FAILED,
        "boot: kernel panic, or the guest stopped first",
    ),
    (INTERRUPTED, "interrupted (SIGINT/SIGTERM)"),
];

/// The `--help` epilogue of every Keel command: [`TABLE`] as text.
pub const HELP: &str = "Exit codes (every Keel command):
    0  ok
    1  failed (an external tool, an upload, an unexpected system error)
    2  usage: a bad argument or input file
    3  verification failed: signature, hash, dm-verity, cloud-config
    4  not for this system (architecture, board, version)
    5  payload or image unreadable or incomplete
    6  trusted keys could not be loaded
    7  the disk or its slot layout does not allow it
    8  reading or writing a slot or device failed
    9  refused: in use, mounted, the running system's, not allowed now
   10  the machine lacks a tool, firmware or ioctl; QEMU cannot start
   11  boot: the expected text did not appear in time
   12  boot: kernel panic, or the guest stopped first
  130  interrupted (SIGINT/SIGTERM)";

/// The process exit status for `code` (0..=255).
pub fn status(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(FAILED as u8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_fit_an_exit_status() {
        for (i, (a, _)) in TABLE.iter().enumerate() {
            assert!((0..=255).contains(a), "{a}");
            for (b, _) in &TABLE[i + 1..] {
                assert_ne!(a, b, "two meanings for exit {a}");
            }
        }
    }

    #[test]
    fn help_shows_the_table_line_for_line() {
        let lines: Vec<&str> = HELP.lines().skip(1).collect();
        assert_eq!(lines.len(), TABLE.len());
        for ((code, meaning), line) in TABLE.iter().zip(lines) {
            assert_eq!(line, format!("{code:>5}  {meaning}"));
        }
    }
}
