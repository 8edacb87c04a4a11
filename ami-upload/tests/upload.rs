//! keel-upload-ami against a real moto_server on loopback: the snapshot read back block by block
//! equals the image, the AMI is registered with the right attributes, failed block uploads are
//! retried, and no failure or interruption leaves an AMI (or, where the process lives to clean
//! up, a snapshot) behind.

mod aws_support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use aws_support::*;
use keel_cli_support::exit;

const MIB: u64 = 1024 * 1024;

/// The default Keel image, uploaded through a recording proxy: every block read back equals the
/// image, and the AMI exists with the attributes RegisterImage was sent.
#[test]
fn keel_image_round_trips_through_ebs_and_registers_an_uefi_ami() {
    let image = keel_testkit::built_image();
    let moto = Moto::start();
    let proxy = Proxy::start(moto.port);
    let out = run(upload_cmd(&proxy.url(), &image, "keel-test-1.0.0").arg("--json"));
    let o = outcome(&out);
    let snapshot = o["snapshot_id"].as_str().unwrap();
    let image_id = o["image_id"].as_str().unwrap();
    assert!(
        snapshot.starts_with("snap-") && image_id.starts_with("ami-"),
        "{o}"
    );

    let (rt, c) = clients(&moto);
    let blocks = read_back(&rt, &c, &moto, snapshot);
    let present = assert_snapshot_matches(&blocks, &image);
    assert_eq!(o["blocks_uploaded"].as_u64().unwrap(), present as u64);
    assert!(
        present as u64 * 4 < o["blocks_total"].as_u64().unwrap(),
        "zero blocks must be skipped: {present} of {} uploaded",
        o["blocks_total"]
    );
    let len = std::fs::metadata(&image).unwrap().len();
    assert_eq!(
        o["volume_size_gib"].as_u64().unwrap(),
        len.div_ceil(1 << 30)
    );

    let images = own_images(&rt, &c);
    assert_eq!(images.len(), 1, "{images:?}");
    assert_eq!(images[0].image_id(), Some(image_id));
    assert_eq!(images[0].name(), Some("keel-test-1.0.0"));

    // moto stores only the name and description of a RegisterImage, so the attributes are
    // checked on the wire, as sent to it.
    let reg = proxy
        .ec2_call("RegisterImage")
        .expect("RegisterImage went through the proxy");
    for (field, want) in [
        ("Name", "keel-test-1.0.0"),
        ("Architecture", "x86_64"),
        ("VirtualizationType", "hvm"),
        ("EnaSupport", "true"),
        ("SriovNetSupport", "simple"),
        ("BootMode", "uefi"),
        ("RootDeviceName", "/dev/xvda"),
        ("BlockDeviceMapping.1.DeviceName", "/dev/xvda"),
        ("BlockDeviceMapping.1.Ebs.SnapshotId", snapshot),
        ("BlockDeviceMapping.1.Ebs.DeleteOnTermination", "true"),
    ] {
        assert_eq!(
            reg.get(field).map(String::as_str),
            Some(want),
            "{field} in {reg:?}"
        );
    }
    // The snapshot was waited for before registering.
    let calls: Vec<String> = proxy
        .seen()
        .iter()
        .map(|s| {
            if s.method == "PUT" {
                "PUT".into()
            } else {
                s.path.clone() + &s.body
            }
        })
        .collect();
    let complete = calls
        .iter()
        .position(|c| c.contains("/snapshots/completion/"));
    let described = calls
        .iter()
        .position(|c| c.contains("Action=DescribeSnapshots"));
    let registered = calls
        .iter()
        .position(|c| c.contains("Action=RegisterImage"));
    assert!(
        complete < described && described < registered,
        "order of calls: complete {complete:?}, describe {described:?}, register {registered:?}"
    );
}

/// Blocks whose first uploads fail (a 500, a reset, then both) are uploaded again; the snapshot
/// still equals the image, the last partial block included.
#[test]
fn failed_block_uploads_are_retried() {
    let img = PatternImage::new(1024 * MIB + 300 * 1024, &[0, 3, 7, 8, 100, 2048]);
    let moto = Moto::start();
    let proxy = Proxy::start(moto.port);
    proxy.fail_block(3, &[Fault::Status500]);
    proxy.fail_block(7, &[Fault::Reset]);
    proxy.fail_block(2048, &[Fault::Reset, Fault::Status500]);
    let out = run(upload_cmd(&proxy.url(), &img.path, "keel-retry").arg("--json"));
    let o = outcome(&out);
    assert_eq!(proxy.puts_of(3), 2);
    assert_eq!(proxy.puts_of(7), 2);
    assert_eq!(proxy.puts_of(2048), 3);
    assert_eq!(proxy.puts_of(0), 1);
    assert_eq!(o["block_retries"], 4, "{o}");
    assert_eq!(o["blocks_uploaded"], 6, "{o}");
    assert_eq!(o["zero_blocks_skipped"], true, "{o}");
    assert_eq!(o["volume_size_gib"], 2, "{o}");

    let (rt, c) = clients(&moto);
    let blocks = read_back(&rt, &c, &moto, o["snapshot_id"].as_str().unwrap());
    assert_eq!(assert_snapshot_matches(&blocks, &img.path), 6);
    assert_eq!(own_images(&rt, &c).len(), 1);
    assert_eq!(snapshots_for(&rt, &c, "keel-retry").len(), 1);
}

/// An encrypted snapshot would read absent blocks back as random bytes, not zeros: when AWS
/// says it encrypts (here the proxy adds SseType to moto's StartSnapshot answer), every block is
/// uploaded, zero ones too; `--include-zero-blocks` asks for the same.
#[test]
fn zero_blocks_are_uploaded_to_an_encrypted_snapshot_or_on_request() {
    let img = PatternImage::new(4 * MIB, &[1, 5]);
    for encrypted in [true, false] {
        let moto = Moto::start();
        let proxy = Proxy::start(moto.port);
        let mut cmd = upload_cmd(&proxy.url(), &img.path, "keel-zeros");
        cmd.arg("--json");
        if encrypted {
            proxy.report_encrypted();
        } else {
            cmd.arg("--include-zero-blocks");
        }
        let o = outcome(&run(&mut cmd));
        assert_eq!(o["encrypted"], encrypted, "{o}");
        assert_eq!(o["zero_blocks_skipped"], false, "{o}");
        assert_eq!(o["blocks_uploaded"], 8, "{o}");
        let (rt, c) = clients(&moto);
        let blocks = read_back(&rt, &c, &moto, o["snapshot_id"].as_str().unwrap());
        assert_eq!(assert_snapshot_matches(&blocks, &img.path), 8);
    }
}

/// A block that never uploads fails the run once its attempts are used up (exit 1, failed), the error
/// names the call and the block, the snapshot is deleted and no AMI is registered.
#[test]
fn a_block_that_keeps_failing_deletes_the_snapshot_and_registers_nothing() {
    let img = PatternImage::new(8 * MIB, &[1, 2, 5]);
    let moto = Moto::start();
    let proxy = Proxy::start(moto.port);
    proxy.always_fail_block(5);
    let out = run(upload_cmd(&proxy.url(), &img.path, "keel-fail").args(["--block-attempts", "3"]));
    assert_eq!(out.status.code(), Some(exit::FAILED));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("PutSnapshotBlock of block 5 failed")
            && err.contains("InternalServerException")
            && err.contains("attempt 3 of 3")
            && err.contains("deleted, no AMI registered"),
        "{err}"
    );
    assert_eq!(proxy.puts_of(5), 3);
    let (rt, c) = clients(&moto);
    assert!(own_images(&rt, &c).is_empty());
    assert!(snapshots_for(&rt, &c, "keel-fail").is_empty());
    assert!(proxy.ec2_call("RegisterImage").is_none());
}

/// RegisterImage refused (an EC2 error answered by the proxy after the real snapshot upload):
/// the message carries EC2's code and message, the snapshot is deleted.
#[test]
fn a_refused_register_image_deletes_the_snapshot() {
    let img = PatternImage::new(4 * MIB, &[0, 7]);
    let moto = Moto::start();
    let proxy = Proxy::start(moto.port);
    proxy.fail_register_image(
        "InvalidAMIName.Duplicate",
        "AMI name keel-dup is already in use",
    );
    let out = run(&mut upload_cmd(&proxy.url(), &img.path, "keel-dup"));
    assert_eq!(out.status.code(), Some(exit::FAILED));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "RegisterImage failed: InvalidAMIName.Duplicate: AMI name keel-dup is already in use"
        ) && err.contains("deleted, no AMI registered"),
        "{err}"
    );
    let (rt, c) = clients(&moto);
    assert!(own_images(&rt, &c).is_empty());
    assert!(snapshots_for(&rt, &c, "keel-dup").is_empty());
}

/// Killed mid-upload (SIGKILL: no chance to clean up): no AMI. Interrupted (SIGINT): exit 130,
/// the snapshot deleted too.
#[test]
fn an_interrupted_upload_registers_no_ami() {
    let blocks: Vec<u64> = (0..200).collect();
    let img = PatternImage::new(100 * MIB, &blocks);
    for signal in [libc::SIGKILL, libc::SIGINT] {
        let moto = Moto::start();
        let proxy = Proxy::start(moto.port);
        proxy.delay_puts(Duration::from_millis(100));
        let mut child = upload_cmd(&proxy.url(), &img.path, "keel-killed")
            .args(["--concurrency", "4"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while proxy.block_puts() < 20 {
            assert!(Instant::now() < deadline, "no block uploads seen");
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: kill(2) on our own child's pid, which has not been waited for yet.
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = child.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
        eprintln!("signal {signal}: {status:?}\n{err}");
        assert!(
            proxy.block_puts() < 200,
            "the upload finished before the signal"
        );

        let (rt, c) = clients(&moto);
        assert!(
            own_images(&rt, &c).is_empty(),
            "an AMI after signal {signal}"
        );
        assert!(proxy.ec2_call("RegisterImage").is_none());
        if signal == libc::SIGKILL {
            // No chance to clean up: the snapshot stays (and AWS errors it after its timeout).
            assert_eq!(snapshots_for(&rt, &c, "keel-killed").len(), 1);
        }
        if signal == libc::SIGINT {
            assert_eq!(status.code(), Some(exit::INTERRUPTED), "{err}");
            assert!(
                err.contains("interrupted") && err.contains("deleted"),
                "{err}"
            );
            assert!(snapshots_for(&rt, &c, "keel-killed").is_empty());
        }
    }
}

#[test]
fn a_missing_image_is_named_and_nothing_is_called() {
    let moto = Moto::start();
    let proxy = Proxy::start(moto.port);
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-disk.raw");
    let out = run(&mut upload_cmd(&proxy.url(), &missing, "keel-missing"));
    assert_eq!(out.status.code(), Some(exit::USAGE));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no-such-disk.raw") && err.contains("No such file"),
        "{err}"
    );
    assert!(proxy.seen().is_empty(), "{:?}", proxy.seen());

    let out = run(&mut upload_cmd(&proxy.url(), &missing, "x"));
    assert_eq!(out.status.code(), Some(exit::USAGE));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--name"));
}

#[test]
fn an_unreachable_endpoint_is_an_environment_error() {
    let img = PatternImage::new(MIB, &[0]);
    let url = format!("http://127.0.0.1:{}", free_port());
    let started = Instant::now();
    let out = run(&mut upload_cmd(&url, &img.path, "keel-unreachable"));
    assert_eq!(out.status.code(), Some(exit::ENVIRONMENT));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("StartSnapshot failed: no answer from the endpoint")
            && err.contains("nothing was created"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}

/// moto with authentication on refuses the fake key: its own error code reaches the user.
#[test]
fn an_aws_error_from_moto_is_reported_with_its_code() {
    let img = PatternImage::new(MIB, &[0]);
    let moto = Moto::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]);
    let out = run(&mut upload_cmd(&moto.url(), &img.path, "keel-denied"));
    assert_eq!(out.status.code(), Some(exit::FAILED));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("StartSnapshot failed: HTTP 403") && err.contains("InvalidClientTokenId"),
        "{err}"
    );
    assert!(err.contains("nothing was created"), "{err}");
}

#[test]
fn keel_upload_ami_runs_the_uploader_beside_keel() {
    let keel = keel_testkit::keel_bin();
    let out = std::process::Command::new(&keel)
        .args([
            "upload-ami",
            "--image",
            "/nonexistent/disk.raw",
            "--name",
            "keel-x",
        ])
        .args(["--region", REGION])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if keel.with_file_name("keel-upload-ami").is_file() {
        assert_eq!(out.status.code(), Some(exit::USAGE), "{err}");
        assert!(err.contains("/nonexistent/disk.raw"), "{err}");
        let help = std::process::Command::new(&keel)
            .args(["upload-ami", "--help"])
            .output()
            .unwrap();
        assert!(help.status.success());
        let text = String::from_utf8_lossy(&help.stdout);
        assert!(
            text.contains("Usage: keel-upload-ami") && text.contains("--endpoint-url"),
            "{text}"
        );
    }
    // Alone, keel says what is missing.
    let dir = tempfile::tempdir().unwrap();
    let lone = dir.path().join("keel");
    std::fs::copy(&keel, &lone).unwrap();
    let out = std::process::Command::new(&lone)
        .args(["upload-ami", "--help"])
        .env("PATH", dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(exit::ENVIRONMENT), "{err}");
    assert!(
        err.contains("keel-upload-ami") && err.contains("cargo build"),
        "{err}"
    );
}
