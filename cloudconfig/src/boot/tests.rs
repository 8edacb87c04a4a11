//! The boot logic against temporary roots and a recording host: the issue's example, a bad
//! config (named by file:line, the valid rest applied), strict mode (nothing written, halt),
//! the stage hand-over and first-found-wins.

use std::fs;
use std::path::Path;

use super::apply::{apply_user_data, Verdict};
use super::host::Host;
use super::kargs::KernelArgs;
use super::source::{Media, Source, SourceError};
use super::stage::{Boot, Done, Stage, NETWORK_UNIT};
use crate::apply::tests::fixture_root;

#[derive(Default)]
struct Recorder {
    calls: Vec<String>,
    hostname: Option<String>,
    scripts: Vec<String>,
}

impl Host for Recorder {
    fn systemctl(&mut self, args: &[&str]) -> Result<(), String> {
        let call = args.join(" ");
        self.calls.push(call.clone());
        if call.contains("fleet") {
            return Err(format!("Unit {} not found.", args[args.len() - 1]));
        }
        Ok(())
    }
    fn run_script(&mut self, path: &str) -> Result<(), String> {
        self.scripts.push(path.to_string());
        Ok(())
    }
    fn set_hostname(&mut self, name: &str) -> Result<(), String> {
        self.hostname = Some(name.to_string());
        Ok(())
    }
}

struct NoMedia;
impl Media for NoMedia {
    fn read_labelled(&self, _: &[&str], _: &str) -> Result<Option<(String, Vec<u8>)>, SourceError> {
        Ok(None)
    }
}

const EXAMPLE: &str = include_str!("../tests/issue10_example.yml");

fn run(root: &Path, text: &str, strict: bool) -> (Verdict, Recorder, String) {
    let mut host = Recorder::default();
    let mut out = Vec::new();
    let v = apply_user_data(
        root,
        "cidata:user-data",
        text.as_bytes(),
        strict,
        &mut host,
        &mut out,
    );
    (v, host, String::from_utf8(out).unwrap())
}

#[test]
fn the_issue_example_reaches_systemd() {
    let t = fixture_root();
    let (v, host, out) = run(t.path(), EXAMPLE, false);
    assert_eq!(v, Verdict::Applied { errors: 0 }, "{out}");
    assert_eq!(host.hostname.as_deref(), Some("core-01"));
    assert_eq!(
        host.calls,
        [
            "daemon-reload",
            "--no-block start default.target",
            "--no-block start etcd2.service",
            "--no-block start fleet.service",
            "--no-block start docker-tcp.socket",
            "--no-block start docker.service",
        ]
    );
    assert!(
        out.contains(
            "keel-cloudinit: warning: systemctl start fleet.service: Unit fleet.service not found."
        ),
        "{out}"
    );
    assert!(
        out.contains("etcd-member.service.d/20-cloudinit.conf"),
        "{out}"
    );
    assert!(
        out.contains("keel-cloudinit: applied cidata:user-data: "),
        "{out}"
    );
    assert!(t
        .path()
        .join("etc/systemd/system/docker-tcp.socket")
        .is_file());

    // Every boot: the second run changes nothing, so systemd is not reloaded again.
    let (v, host, out) = run(t.path(), EXAMPLE, false);
    assert_eq!(v, Verdict::Applied { errors: 0 }, "{out}");
    assert_eq!(host.calls[0], "--no-block start etcd2.service", "{out}");
    assert!(out.contains(" 0 changed, "), "{out}");
}

const BAD: &str = "#cloud-config\nhostname: good-host\nwrite_files:\n  - path: /etc/ok\n    content: fine\n  - path: /etc/bad\n    permissions: '0999'\n    content: x\n";

#[test]
fn a_bad_config_names_file_line_and_applies_the_rest() {
    let t = fixture_root();
    let (v, _, out) = run(t.path(), BAD, false);
    assert!(
        matches!(v, Verdict::Applied { errors } if errors > 0),
        "{out}"
    );
    assert!(
        out.contains("keel-cloudinit: cidata:user-data:7: error: "),
        "{out}"
    );
    assert_eq!(fs::read_to_string(t.path().join("etc/ok")).unwrap(), "fine");
    assert_eq!(
        fs::read_to_string(t.path().join("etc/hostname"))
            .unwrap()
            .trim(),
        "good-host"
    );
    assert!(!t.path().join("etc/bad").exists());
}

#[test]
fn strict_halts_before_writing_anything() {
    let t = fixture_root();
    let (v, host, out) = run(t.path(), BAD, true);
    assert_eq!(v, Verdict::Halt, "{out}");
    assert!(out.contains("cidata:user-data:7: error: "), "{out}");
    assert!(
        out.contains("keel.config.strict=1: nothing applied, halting"),
        "{out}"
    );
    assert!(host.calls.is_empty());
    assert!(!t.path().join("etc/ok").exists());
    assert!(!t.path().join("etc/hostname").exists());
    // A YAML syntax error too.
    let (v, _, out) = run(t.path(), "#cloud-config\nhostname: [\n", true);
    assert_eq!(v, Verdict::Halt, "{out}");
}

#[test]
fn a_syntax_error_applies_nothing_and_says_where() {
    let t = fixture_root();
    let (v, _, out) = run(t.path(), "#cloud-config\nhostname: a\nusers: [\n", false);
    assert!(matches!(v, Verdict::Applied { errors } if errors > 0));
    assert!(out.contains("nothing applied from it"), "{out}");
    assert!(!t.path().join("etc/hostname").exists());
}

#[test]
fn a_script_runs_once() {
    let t = fixture_root();
    let script = "#!/bin/sh\necho hello\n";
    let (_, host, out) = run(t.path(), script, false);
    assert_eq!(host.scripts.len(), 1, "{out}");
    assert!(host.scripts[0].starts_with("/var/lib/keel/cloudinit/script-"));
    let (_, host, out) = run(t.path(), script, false);
    assert!(host.scripts.is_empty(), "{out}");
}

fn boot(root: &Path, kargs: &str, media: &dyn Media) -> (Done, Done, Recorder, String) {
    let k = KernelArgs::parse(kargs);
    let sources = super::source::candidates(&k, false);
    let mut b = Boot::new(root.to_path_buf(), k, sources, media);
    b.reader.fw_cfg_dir = root.join("no-fw-cfg");
    b.reader.attempts = 1;
    let mut host = Recorder::default();
    let mut out = Vec::new();
    let local = b.run(Stage::Local, &mut host, &mut out);
    let network = b.run(Stage::Network, &mut host, &mut out);
    (local, network, host, String::from_utf8(out).unwrap())
}

#[test]
fn local_sources_win_in_the_local_stage_and_core_exists() {
    let t = fixture_root();
    // No core yet: the local stage makes it.
    fs::write(
        t.path().join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/bash\n",
    )
    .unwrap();
    fs::create_dir_all(t.path().join("oem")).unwrap();
    fs::write(
        t.path().join("oem/cloud-config.yml"),
        "#cloud-config\nhostname: from-oem\n",
    )
    .unwrap();
    let (local, network, host, out) = boot(t.path(), "", &NoMedia);
    assert_eq!(
        local,
        Done::Applied {
            source: "oem",
            errors: 0
        },
        "{out}"
    );
    assert_eq!(network, Done::NothingFound, "{out}");
    assert_eq!(host.hostname.as_deref(), Some("from-oem"));
    let passwd = fs::read_to_string(t.path().join("etc/passwd")).unwrap();
    assert!(passwd.contains("\ncore:x:1000:"), "{passwd}");
    assert!(t.path().join("home/core").is_dir());
}

#[test]
fn a_url_on_the_command_line_goes_first_through_the_network_stage() {
    let base = super::http::tests::serve(1, |_, _, _| {
        (200, b"#cloud-config\nhostname: from-url\n".to_vec())
    });
    let t = fixture_root();
    fs::create_dir_all(t.path().join("oem")).unwrap();
    fs::write(
        t.path().join("oem/cloud-config.yml"),
        "#cloud-config\nhostname: from-oem\n",
    )
    .unwrap();
    let (local, network, host, out) =
        boot(t.path(), &format!("keel.config.url={base}/cc"), &NoMedia);
    assert_eq!(local, Done::NeedsNetwork("url"), "{out}");
    assert_eq!(host.calls[0], format!("--no-block start {NETWORK_UNIT}"));
    assert_eq!(
        network,
        Done::Applied {
            source: "url",
            errors: 0
        },
        "{out}"
    );
    assert_eq!(host.hostname.as_deref(), Some("from-url"));
}

#[test]
fn a_failing_url_falls_through_unless_strict() {
    let base = super::http::tests::serve(2, |_, _, _| (500, b"boom".to_vec()));
    let t = fixture_root();
    fs::create_dir_all(t.path().join("oem")).unwrap();
    fs::write(
        t.path().join("oem/cloud-config.yml"),
        "#cloud-config\nhostname: from-oem\n",
    )
    .unwrap();
    let (_, network, _, out) = boot(t.path(), &format!("keel.config.url={base}/cc"), &NoMedia);
    assert!(
        out.contains(&format!(
            "keel-cloudinit: url: error: GET {base}/cc: HTTP 500 (4 bytes: \"boom\")"
        )),
        "{out}"
    );
    assert_eq!(
        network,
        Done::Applied {
            source: "oem",
            errors: 0
        },
        "{out}"
    );
    let (_, network, _, out) = boot(
        t.path(),
        &format!("keel.config.url={base}/cc keel.config.strict=1"),
        &NoMedia,
    );
    assert_eq!(network, Done::Halt, "{out}");
}

#[test]
fn imds_comes_after_the_local_media() {
    let k = KernelArgs::parse("keel.config.imds=http://127.0.0.1:9");
    let s = super::source::candidates(&k, false);
    assert_eq!(s[3], Source::Imds("http://127.0.0.1:9".into()));
}

/// `docs/examples/*`: each is valid, applies without errors, and applies again unchanged.
#[test]
fn every_docs_example_applies_cleanly_and_again_unchanged() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples");
    let mut names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    assert!(names.len() >= 5, "{names:?}");
    let doc = fs::read_to_string(dir.join("../cloud-config.md")).unwrap();
    for path in names {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            doc.contains(&format!("(examples/{name})")),
            "{name} is not in docs/cloud-config.md"
        );
        let text = fs::read_to_string(&path).unwrap();
        let report = crate::validate(text.as_bytes());
        assert!(!report.has_errors(), "{name}: {}", report.to_human());
        let t = fixture_root();
        fs::write(
            t.path().join("etc/group"),
            "root:x:0:\nsudo:x:27:\nusers:x:100:\ncore:x:500:\n",
        )
        .unwrap();
        let (v, _, out) = run(t.path(), &text, false);
        assert_eq!(v, Verdict::Applied { errors: 0 }, "{name}:\n{out}");
        let (_, _, out) = run(t.path(), &text, false);
        assert!(out.contains(" 0 changed, "), "{name}:\n{out}");
    }
}
