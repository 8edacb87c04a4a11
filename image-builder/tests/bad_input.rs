//! Bad definitions and arguments: exit code 2, a message naming the file, line and field, and
//! the output directory left as it was.

use std::path::{Path, PathBuf};

use keel_cli_support::exit;
use keel_testkit::*;

/// A copy of boards/ and rootfs/ to break.
fn definitions() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let st = std::process::Command::new("cp")
        .arg("-r")
        .arg(repo_root().join("boards"))
        .arg(repo_root().join("rootfs"))
        .arg(d.path())
        .status()
        .unwrap();
    assert!(st.success());
    let board = d.path().join("boards/qemu-x86_64.yaml");
    let rootfs = d.path().join("rootfs/debian-bookworm.yaml");
    (d, board, rootfs)
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from:?} not in {}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

fn line_of(path: &Path, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .position(|l| l.contains(needle))
        .unwrap()
        + 1
}

/// Run a build that must be refused; checks exit code 2, the message, and that `out` (which
/// holds one sentinel file) is unchanged.
fn refused(board: &Path, extra: &[&str], expect: &[String]) {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("sentinel"), "x").unwrap();
    let key = test_key_dir();
    let init = keel_init();
    let mut args = vec![
        "build",
        "--quiet",
        "--board",
        board.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--init",
        init.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let r = keel(&args);
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(
        r.status.code(),
        Some(exit::USAGE),
        "expected a usage error, stderr:\n{err}"
    );
    for e in expect {
        assert!(err.contains(e.as_str()), "expected {e:?} in:\n{err}");
    }
    let left: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("sentinel")],
        "output dir changed"
    );
}

#[test]
fn board_syntax_error() {
    let (_d, board, _) = definitions();
    edit(&board, "firmware: [uefi]", "firmware: [uefi");
    let b = board.display().to_string();
    refused(&board, &[], &[format!("{b}:")]);
}

#[test]
fn board_unknown_field() {
    let (_d, board, _) = definitions();
    edit(
        &board,
        "  usr_mib: 1024",
        "  usr_mib: 1024\n  swap_mib: 512",
    );
    let line = line_of(&board, "swap_mib");
    refused(
        &board,
        &[],
        &[format!(
            "{}:{line}:3: partitions.swap_mib: unknown field `swap_mib`",
            board.display()
        )],
    );
}

#[test]
fn board_wrong_type() {
    let (_d, board, _) = definitions();
    edit(&board, "root_mib: 1024", "root_mib: lots");
    let line = line_of(&board, "root_mib");
    refused(
        &board,
        &[],
        &[format!(
            "{}:{line}:13: partitions.root_mib: ",
            board.display()
        )],
    );
}

#[test]
fn board_partition_too_small() {
    let (_d, board, _) = definitions();
    edit(&board, "esp_mib: 128", "esp_mib: 8");
    let line = line_of(&board, "esp_mib");
    refused(
        &board,
        &[],
        &[format!(
            "{}:{line}:12: partitions.esp_mib: 8 MiB is too small",
            board.display()
        )],
    );
}

#[test]
fn board_partitions_too_large_for_a_disk() {
    let (_d, board, _) = definitions();
    edit(&board, "root_mib: 1024", "root_mib: 99999999999");
    refused(
        &board,
        &[],
        &[
            "partitions.root_mib: ".to_string(),
            "larger than a disk".to_string(),
        ],
    );
}

#[test]
fn rootfs_errors_name_the_rootfs_file() {
    let (_d, board, rootfs) = definitions();
    edit(&rootfs, "variant: minbase", "variant: tiny");
    let line = line_of(&rootfs, "variant:");
    refused(
        &board,
        &[],
        &[format!("{}:{line}:", rootfs.display()), "tiny".to_string()],
    );

    let (_d, board, rootfs) = definitions();
    edit(
        &rootfs,
        "source_date_epoch: 1704067200",
        "source_date_epoch: [1]",
    );
    let line = line_of(&rootfs, "source_date_epoch:");
    refused(
        &board,
        &[],
        &[
            format!("{}:{line}:", rootfs.display()),
            "source_date_epoch".to_string(),
        ],
    );

    let (_d, board, rootfs) = definitions();
    edit(
        &rootfs,
        "files: debian-bookworm/files",
        "files: debian-bookworm/nothing-here",
    );
    let line = line_of(&rootfs, "files:");
    refused(
        &board,
        &[],
        &[
            format!("{}:{line}:8: files: ", rootfs.display()),
            "is not a directory".to_string(),
        ],
    );
}

#[test]
fn missing_inputs() {
    let (d, board, _) = definitions();
    edit(
        &board,
        "rootfs: ../rootfs/debian-bookworm.yaml",
        "rootfs: ../rootfs/gone.yaml",
    );
    refused(
        &board,
        &[],
        &[
            "rootfs: ".to_string(),
            "gone.yaml does not exist".to_string(),
        ],
    );
    refused(
        &d.path().join("boards/none.yaml"),
        &[],
        &["none.yaml: file not found".to_string()],
    );

    let (_d, board, _) = definitions();
    refused(
        &board,
        &["--extra-bin", "tool=/nonexistent/tool"],
        &["--extra-bin tool=/nonexistent/tool: no such file".to_string()],
    );
    refused(&board, &["--version", "banana"], &["--version".to_string()]);
}

#[test]
fn dynamic_init_is_refused() {
    let (_d, board, _) = definitions();
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let key = test_key_dir();
    let r = keel(&[
        "build",
        "--quiet",
        "--board",
        board.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--init",
        "/bin/true",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(exit::USAGE));
    assert!(String::from_utf8_lossy(&r.stderr).contains("dynamically linked"));
    assert!(!out.exists());
}

/// A USR partition too small for what the rootfs holds is found only after the filesystem is
/// made: still exit 2, and nothing half-written stays behind.
#[test]
fn usr_partition_too_small_for_the_content() {
    let (_d, board, _) = definitions();
    edit(&board, "usr_mib: 1024", "usr_mib: 64");
    refused(
        &board,
        &[],
        &[
            "USR-A needs".to_string(),
            "partition USR-A is 64 MiB".to_string(),
        ],
    );
}
