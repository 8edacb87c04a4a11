//! `keel boot` as the CLI exposes it: argument parsing and exit codes against
//! real guests.

mod common;

use std::path::Path;

use clap::{Parser, Subcommand};
use common::*;
use keel_cli_support::exit;
use keel_qemu::{boot_command, BootArgs};

/// The shape of the `keel` CLI around `boot`.
#[derive(Parser)]
#[command(name = "keel")]
struct Keel {
    #[command(subcommand)]
    command: KeelCommand,
}

#[derive(Subcommand)]
enum KeelCommand {
    Boot(BootArgs),
}

fn parse(args: &[&str]) -> Result<BootArgs, clap::Error> {
    let mut argv = vec!["keel", "boot"];
    argv.extend_from_slice(args);
    Keel::try_parse_from(argv).map(|keel| match keel.command {
        KeelCommand::Boot(args) => args,
    })
}

fn boot(args: &[&str]) -> i32 {
    boot_command(&parse(args).unwrap()).unwrap()
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn direct_firmware_requires_a_kernel() {
    assert!(parse(&["disk.raw", "--firmware", "direct"]).is_err());
    let args = parse(&["disk.raw", "--firmware", "direct", "--kernel", "vmlinuz"]).unwrap();
    assert_eq!(args.append, "console=ttyS0");
    assert_eq!(args.mem, None);
}

#[test]
fn expected_text_exits_ok_and_saves_the_log() {
    let kernel = debian::kernel();
    let dir = tempfile::tempdir().unwrap();
    let image = blank_disk(dir.path(), "disk.raw", 8);
    let log = dir.path().join("console.log");
    let code = boot(&[
        s(&image),
        "--firmware",
        "direct",
        "--kernel",
        s(&kernel.vmlinuz),
        "--append",
        "console=ttyS0 panic=-1",
        "--expect",
        "Linux version",
        "--timeout",
        "120",
        "--log",
        s(&log),
        "--mem",
        "512",
    ]);
    assert_eq!(code, exit::OK);
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("Linux version"));
}

#[test]
fn kernel_panic_exits_guest_failed() {
    let kernel = debian::kernel();
    let dir = tempfile::tempdir().unwrap();
    let image = blank_disk(dir.path(), "disk.raw", 8);
    let code = boot(&[
        s(&image),
        "--firmware",
        "direct",
        "--kernel",
        s(&kernel.vmlinuz),
        "--append",
        "console=ttyS0 panic=-1",
        "--expect",
        "never printed",
        "--timeout",
        "120",
        "--mem",
        "512",
    ]);
    assert_eq!(code, exit::GUEST_FAILED);
}

#[test]
fn timeout_exits_timeout_and_power_off_exits_ok_or_guest_failed() {
    let kernel = debian::kernel();
    let dir = tempfile::tempdir().unwrap();
    let initramfs = shell_initramfs(dir.path(), &kernel);
    let image = blank_disk(dir.path(), "disk.raw", 8);
    let shell = |append: &'static str, rest: &[&str]| {
        let mut args = vec![
            s(&image),
            "--firmware",
            "direct",
            "--kernel",
            s(&kernel.vmlinuz),
            "--initrd",
            s(&initramfs),
            "--append",
            append,
            "--mem",
            "512",
        ];
        args.extend_from_slice(rest);
        boot(&args)
    };
    // The shell stays up and never prints the text.
    assert_eq!(
        shell(
            "console=ttyS0 panic=-1",
            &["--expect", "never printed", "--timeout", "8"]
        ),
        exit::TIMEOUT
    );
    // The guest powers off by itself: success without --expect ...
    let off = "console=ttyS0 panic=-1 keel-test.poweroff";
    assert_eq!(shell(off, &["--timeout", "120"]), exit::OK);
    // ... and a failure when the text had not appeared yet.
    assert_eq!(
        shell(off, &["--expect", "never printed", "--timeout", "120"]),
        exit::GUEST_FAILED
    );
}

#[test]
fn unstartable_qemu_exits_environment() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(boot(&["/nonexistent/keel.img"]), exit::ENVIRONMENT);
    let image = blank_disk(dir.path(), "disk.raw", 1);
    assert_eq!(
        boot(&[
            s(&image),
            "--firmware",
            "direct",
            "--kernel",
            "/nonexistent/vmlinuz"
        ]),
        exit::ENVIRONMENT
    );
}
