//! `keel-validate-config`'s contract: output lines and exit codes.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_keel-validate-config"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
    )
}

fn temp(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("keel-validate-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn exit_codes_and_renderings() {
    let good = temp(
        "good.yml",
        "#cloud-config\nhostname: core-01\ncoreos:\n  fleet:\n    metadata: a=b\n",
    );
    let (code, out) = run(&[good.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out,
        format!("{}:4: warning: deprecated key \"fleet\" (fleet is no longer shipped in Container Linux)\n", good.display())
    );

    let bad = temp(
        "bad.yml",
        "#cloud-config\ncoreos:\n  units:\n    - name: a.service\n      command: lol\n",
    );
    let (code, out) = run(&[bad.to_str().unwrap()]);
    assert_eq!(code, 3);
    assert_eq!(
        out,
        format!("{}:5: error: invalid value lol\n", bad.display())
    );
    let (code, out) = run(&[bad.to_str().unwrap(), "--json"]);
    assert_eq!(code, 3);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["entries"][0]["line"], 5);

    assert_eq!(run(&["/nonexistent/user-data"]).0, 2);
    assert_eq!(run(&[]).0, 2);
    assert_eq!(run(&["--bogus", good.to_str().unwrap()]).0, 2);
}
