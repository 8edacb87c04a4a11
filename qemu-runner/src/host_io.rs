//! A guest QEMU stopped because a host write failed. QEMU's default `werror=enospc` pauses
//! the machine when a disk image cannot grow (the host's file system is full): the guest then
//! says nothing, and a wait would only time out. QMP's `query-status` says `io-error`, and
//! `query-block` names the drive and its file.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use serde_json::Value;

/// Whether `query-status`'s answer is a machine stopped by a disk error.
pub fn stopped_on_io_error(status: &Value) -> bool {
    status.get("status").and_then(Value::as_str) == Some("io-error")
}

/// One line per drive whose `io-status` is not `ok` (from `query-block`'s answer): its name,
/// the file QEMU writes and what went wrong, with the space left on that file's file system.
pub fn failed_drives(blocks: &Value) -> Vec<String> {
    let Some(blocks) = blocks.as_array() else {
        return Vec::new();
    };
    blocks
        .iter()
        .filter_map(|block| {
            let io_status = block.get("io-status").and_then(Value::as_str)?;
            if io_status == "ok" {
                return None;
            }
            let name = block
                .get("device")
                .and_then(Value::as_str)
                .filter(|d| !d.is_empty())
                .or_else(|| block.get("qdev").and_then(Value::as_str))
                .unwrap_or("?");
            let file = block
                .pointer("/inserted/file")
                .and_then(Value::as_str)
                .unwrap_or("?");
            let what = match io_status {
                "nospace" => "no space left on the host's file system",
                "failed" => "a host I/O error",
                other => other,
            };
            let free = free_space_note(Path::new(file));
            Some(format!("{name} ({file}): {what}{free}"))
        })
        .collect()
}

/// ", N MiB free there", of the file's file system (best effort: empty when the file cannot be looked at).
fn free_space_note(file: &Path) -> String {
    let dir = file.parent().unwrap_or(file);
    match free_bytes(dir) {
        Some(bytes) => format!(", {} MiB free there", bytes >> 20),
        None => String::new(),
    }
}

/// Bytes an unprivileged writer may still use on the file system holding `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    let c_path = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain old data; all zeroes is a valid value of it.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c_path is a valid NUL-terminated string and stat a valid out-pointer.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    (rc == 0).then(|| stat.f_bavail as u64 * stat.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_io_error_is_a_stop_for_a_disk() {
        assert!(stopped_on_io_error(
            &json!({"running": false, "status": "io-error"})
        ));
        assert!(!stopped_on_io_error(
            &json!({"running": false, "status": "paused"})
        ));
        assert!(!stopped_on_io_error(
            &json!({"running": true, "status": "running"})
        ));
    }

    #[test]
    fn names_each_failed_drive_and_its_file() {
        let blocks = json!([
            {"device": "disk0", "io-status": "ok", "inserted": {"file": "/tmp/a/overlay.qcow2"}},
            {"device": "disk1", "io-status": "nospace", "inserted": {"file": "/tmp/extra.raw"}},
            {"device": "", "qdev": "/machine/peripheral/x", "io-status": "failed",
             "inserted": {"file": "/nonexistent/dir/disk.raw"}},
            {"device": "cd0"}
        ]);
        let lines = failed_drives(&blocks);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0]
            .starts_with("disk1 (/tmp/extra.raw): no space left on the host's file system, "));
        assert!(lines[0].ends_with(" MiB free there"), "{}", lines[0]);
        assert_eq!(
            lines[1],
            "/machine/peripheral/x (/nonexistent/dir/disk.raw): a host I/O error"
        );
    }
}
