//! `keel-update lock …` is locksmithctl's verbs under the updater's name: it runs
//! `keel-reboot-manager lock …` (found in PATH, as in the image) against a real etcd.

use std::path::Path;
use std::process::Command;

use keel_testkit::etcd::Cluster;

const MANAGER: &str = env!("CARGO_BIN_EXE_keel-reboot-manager");

fn keel_update_lock(endpoint: &str, args: &[&str]) -> (i32, String, String) {
    let dir = Path::new(MANAGER).parent().unwrap();
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap());
    let out = Command::new(keel_testkit::keel_update())
        .args(["lock", "--endpoint", endpoint])
        .args(args)
        .env("PATH", path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn keel_update_lock_runs_the_reboot_managers_verbs() {
    let etcd = Cluster::start(1);
    let ep = etcd.client_url(0);
    let (code, out, err) = keel_update_lock(&ep, &["set-max", "2"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = keel_update_lock(&ep, &["lock", "machine-a"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = keel_update_lock(&ep, &["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let direct = Command::new(MANAGER)
        .args(["lock", "--endpoint", &ep, "status", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        out.as_bytes(),
        &direct.stdout[..],
        "the alias answers as the manager does"
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["max"], 2, "{v}");
    assert_eq!(v["holders"], serde_json::json!(["machine-a"]), "{v}");
    // A verb the manager refuses keeps the manager's exit code (usage).
    let (code, _, err) = keel_update_lock(&ep, &["no-such-verb"]);
    assert_eq!(code, 2, "{err}");
    // Help goes through to the verbs' own help.
    let (code, out, _) = keel_update_lock(&ep, &["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("set-max"), "{out}");
}
