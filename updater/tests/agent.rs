//! `keel-update check` against the real `keel-update-server` binary on 127.0.0.1, on disk
//! images as apply.rs builds them: an update found, streamed, staged and reported; a garbage
//! answer; a payload that is not what the server announced; a payload signed by a foreign key;
//! a download cut halfway and resumed with Range; a channel switch that must not downgrade; a
//! version that failed here and is not applied again.

mod common;

use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;

use common::cdn::read_head;
use common::server::{Server, MACHINE};
use common::*;
use keel_cli_support::exit;
use keel_format::attrs::SlotAttrs;
use serde_json::Value;

/// A machine: a disk image running `running`, update.conf and machine-id under a root, a
/// state file.
struct Machine {
    w: World,
    root: PathBuf,
}

impl Machine {
    fn new(server: &str, group: &str) -> Machine {
        Self::with_world(world(), server, group)
    }

    fn with_world(w: World, server: &str, group: &str) -> Machine {
        let root = w.dir.path().join("root");
        std::fs::create_dir_all(root.join("usr/share/keel")).unwrap();
        std::fs::create_dir_all(root.join("etc/keel")).unwrap();
        std::fs::write(
            root.join("usr/share/keel/update.conf"),
            format!("SERVER={server}/v1/update/\nGROUP=stable\n"),
        )
        .unwrap();
        std::fs::write(root.join("etc/machine-id"), format!("{MACHINE}\n")).unwrap();
        let m = Machine { w, root };
        m.set_group(group);
        m
    }

    fn set_group(&self, group: &str) {
        std::fs::write(
            self.root.join("etc/keel/update.conf"),
            format!("GROUP={group}\n"),
        )
        .unwrap();
    }

    fn keel_update(&self, args: &[&str]) -> (i32, String, String) {
        run(Command::new(env!("CARGO_BIN_EXE_keel-update"))
            .arg("--disk")
            .arg(&self.w.disk)
            .arg("--state")
            .arg(self.w.dir.path().join("update-state.json"))
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .env_remove("http_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("ALL_PROXY")
            .env_remove("all_proxy"))
    }

    /// `keel-update check --json`: (exit code, report, stderr).
    fn check(&self) -> (i32, Value, String) {
        let pubkey = self.w.pubkey.to_str().unwrap().to_string();
        let (code, out, err) = self.keel_update(&["check", "--json", "--pubkey", &pubkey]);
        let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out:?} {err}"));
        (code, v, err)
    }

    fn status(&self) -> Value {
        let pubkey = self.w.pubkey.to_str().unwrap().to_string();
        let (code, out, err) = self.keel_update(&["status", "--json", "--pubkey", &pubkey]);
        assert_eq!(code, 0, "{out}{err}");
        serde_json::from_str(&out).unwrap()
    }
}

/// A payload file for `version` signed by `signer`, in `dir`.
fn payload_file(
    dir: &Path,
    version: &str,
    signer: &keel_signing::Key,
    tag: &[u8],
) -> (PathBuf, Usr) {
    let usr = build_usr_with(version, "qemu-x86_64", signer, 3 << 20, &[("tag", tag)]);
    let path = dir.join(format!(
        "usr-{version}-{}.img",
        tag.len() + tag.iter().map(|b| *b as usize).sum::<usize>()
    ));
    std::fs::write(&path, usr.payload()).unwrap();
    (path, usr)
}

fn report_result(v: &Value) -> &str {
    v["result"].as_str().unwrap_or("")
}

#[test]
fn check_finds_streams_stages_and_reports_then_mark_good_reports_3_2() {
    let server = Server::start(None);
    let m = Machine::new(&server.base, "beta");
    let (p2, v2) = payload_file(m.w.dir.path(), "2.0.0", &key(), b"a");
    server.publish(&p2, "beta", None);
    let usr_a = partition_bytes(&m.w.disk, 3);

    let (code, r, err) = m.check();
    assert_eq!(code, 0, "{r} {err}");
    assert_eq!(report_result(&r), "staged", "{r}");
    assert_eq!(r["status"], "UPDATED_NEED_REBOOT");
    assert_eq!(r["offered_version"], "2.0.0");
    assert_eq!(r["running_version"], "1.0.0");
    assert_eq!(
        &partition_bytes(&m.w.disk, 4)[..v2.body.len()],
        &v2.body[..]
    );
    assert_eq!(attrs(&m.w.disk, 4), SlotAttrs::new(2, 1, false));
    assert_eq!(partition_bytes(&m.w.disk, 3), usr_a);
    assert_eq!(server.events(), ["13/1", "14/1", "3/1"]);
    assert_eq!(server.instance()["status"], "installed");

    let s = m.status();
    assert_eq!(s["update_status"], "UPDATED_NEED_REBOOT", "{s}");
    assert_eq!(s["history"][0]["result"], "staged");

    // The first boot of 2.0.0 (keel-init's rule on the image: USR-B is chosen), its gate passes.
    let (code, out, err) = m.keel_update(&["mark-good"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("reported to"), "{out}");
    assert_eq!(server.events(), ["13/1", "14/1", "3/1", "3/2"]);
    let inst = server.instance();
    assert_eq!(inst["status"], "complete", "{inst}");
    assert_eq!(inst["version"], "2.0.0", "{inst}");
    let s = m.status();
    assert_eq!(s["update_status"], "IDLE");
    assert_eq!(s["history"][1]["result"], "good", "{s}");
    assert_eq!(s["pending_events"], 0);

    // Nothing newer: no update.
    let (code, r, _) = m.check();
    assert_eq!((code, report_result(&r)), (0, "no-update"), "{r}");
}

/// One HTTP server answering every request with `status` and `body` (counting requests).
fn static_server(status: u16, body: Vec<u8>) -> (String, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s2 = seen.clone();
    thread::spawn(move || {
        for c in l.incoming().take(20) {
            let Ok(mut c) = c else { return };
            let (line, headers) = read_head(&mut BufReader::new(c.try_clone().unwrap()));
            s2.lock().unwrap().push(format!("{line} {headers:?}"));
            let _ = write!(
                c,
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = c.write_all(&body);
        }
    });
    (base, seen)
}

#[test]
fn a_garbage_answer_is_an_error_that_quotes_it_and_touches_nothing() {
    let (base, _) = static_server(
        200,
        b"<html><body>Welcome to the hotel wifi</body></html>".to_vec(),
    );
    let m = Machine::new(&base, "beta");
    let before = std::fs::read(&m.w.disk).unwrap();
    let (code, r, _) = m.check();
    assert_eq!(code, exit::UNREADABLE, "{r}");
    assert_eq!(report_result(&r), "server-error");
    let msg = r["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!("POST {base}/v1/update/: HTTP 200")),
        "{msg}"
    );
    assert!(msg.contains("<html><body>Welcome"), "{msg}");
    assert_eq!(std::fs::read(&m.w.disk).unwrap(), before);

    let (base, _) = static_server(503, b"overloaded".to_vec());
    let m = Machine::new(&base, "beta");
    let (code, r, _) = m.check();
    assert_eq!(code, exit::UNREADABLE, "{r}");
    let msg = r["message"].as_str().unwrap();
    assert!(msg.contains("HTTP 503 (10 bytes: \"overloaded\")"), "{msg}");
}

#[test]
fn a_payload_that_is_not_what_the_server_announced_is_not_staged() {
    let server = Server::start(None);
    let m = Machine::new(&server.base, "beta");
    let (announced, _) = payload_file(m.w.dir.path(), "2.0.0", &key(), b"a");
    let (served, _) = payload_file(m.w.dir.path(), "2.0.0", &key(), b"b");
    let (a, b) = (
        std::fs::read(&announced).unwrap(),
        std::fs::read(&served).unwrap(),
    );
    assert_eq!(
        a.len(),
        b.len(),
        "the two builds must differ in content only"
    );
    assert_ne!(a, b);
    let (cdn, _) = static_server(200, b);
    server.publish(&announced, "beta", Some(&format!("{cdn}/usr.img")));
    let usr_a = partition_bytes(&m.w.disk, 3);

    let (code, r, _) = m.check();
    assert_eq!(code, exit::VERIFICATION, "{r}");
    assert_eq!(report_result(&r), "update-failed");
    let msg = r["message"].as_str().unwrap();
    assert!(msg.contains("the update server announced"), "{msg}");
    assert_eq!(attrs(&m.w.disk, 4), SlotAttrs::new(0, 0, false));
    assert_eq!(attrs(&m.w.disk, 3), SlotAttrs::new(1, 0, true));
    assert_eq!(partition_bytes(&m.w.disk, 3), usr_a);
    assert_eq!(server.events(), ["13/1", "3/0:10"]);
    assert_eq!(server.instance()["status"], "error");
}

#[test]
fn a_payload_signed_by_a_foreign_key_leaves_the_disk_unchanged() {
    let server = Server::start(None);
    let m = Machine::new(&server.base, "beta");
    let (p, _) = payload_file(m.w.dir.path(), "2.0.0", &other_key(), b"a");
    server.publish(&p, "beta", None);
    let before = std::fs::read(&m.w.disk).unwrap();
    let (code, r, _) = m.check();
    assert_eq!(code, exit::VERIFICATION, "{r}");
    let msg = r["message"].as_str().unwrap();
    assert!(msg.contains("signature check"), "{msg}");
    assert_eq!(std::fs::read(&m.w.disk).unwrap(), before);
    assert_eq!(server.events(), ["13/1", "3/0:18"]);
}

/// Between the agent and the server's payloads: forwards each request, records its head,
/// and cuts the first response after `cut` bytes.
type Shared<T> = Arc<Mutex<T>>;

fn cutting_proxy(cut: usize) -> (String, Shared<Option<String>>, Shared<Vec<String>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    let upstream: Arc<Mutex<Option<String>>> = Arc::default();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let (up2, seen2) = (upstream.clone(), seen.clone());
    thread::spawn(move || {
        for (n, c) in l.incoming().take(20).enumerate() {
            let Ok(mut c) = c else { return };
            let mut r = BufReader::new(c.try_clone().unwrap());
            let (line, headers) = read_head(&mut r);
            let range = headers
                .iter()
                .find(|(k, _)| k == "range")
                .map(|(_, v)| v.clone());
            seen2
                .lock()
                .unwrap()
                .push(format!("{line} range={range:?}"));
            let addr = up2.lock().unwrap().clone().unwrap();
            let mut up = TcpStream::connect(addr.trim_start_matches("http://")).unwrap();
            let mut head = format!("{line}\r\n");
            for (k, v) in &headers {
                if k != "connection" {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
            }
            head.push_str("connection: close\r\n\r\n");
            up.write_all(head.as_bytes()).unwrap();
            let mut response = Vec::new();
            let _ = up.read_to_end(&mut response);
            let limit = if n == 0 { cut } else { response.len() };
            let _ = c.write_all(&response[..limit.min(response.len())]);
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    });
    (base, upstream, seen)
}

#[test]
fn a_download_cut_halfway_resumes_with_range() {
    let (proxy, upstream, seen) = cutting_proxy(1 << 20);
    let server = Server::start(Some(&proxy));
    *upstream.lock().unwrap() = Some(server.base.clone());
    let m = Machine::new(&server.base, "beta");
    let (p2, v2) = payload_file(m.w.dir.path(), "2.0.0", &key(), b"a");
    server.publish(&p2, "beta", None);

    let (code, r, err) = m.check();
    assert_eq!(code, 0, "{r} {err}");
    assert_eq!(report_result(&r), "staged", "{r}");
    assert!(err.contains("resuming from there"), "{err}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[0].ends_with("range=None"), "{seen:?}");
    // The first response's head is a few hundred bytes: the rest of the first MiB was body.
    let from: u64 = seen[1]
        .split("range=Some(\"bytes=")
        .nth(1)
        .and_then(|s| s.split('-').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no Range on the second request: {seen:?}"));
    assert!(from > (1 << 20) - 1024 && from < 1 << 20, "{from}");
    assert_eq!(
        &partition_bytes(&m.w.disk, 4)[..v2.body.len()],
        &v2.body[..]
    );
    assert_eq!(attrs(&m.w.disk, 4), SlotAttrs::new(2, 1, false));
    assert_eq!(server.events(), ["13/1", "14/1", "3/1"]);
}

#[test]
fn a_switch_to_a_more_stable_channel_never_downgrades() {
    let server = Server::start(None);
    // A machine on 3.0.0 (alpha).
    let dir = tempfile::tempdir().unwrap();
    let v3 = build_usr("3.0.0", "qemu-x86_64", &key(), 3 << 20);
    let w = World {
        disk: dir.path().join("disk.img"),
        pubkey: dir.path().join("keel-signing.pub"),
        v1: v3,
        dir,
    };
    build_disk(&w.disk, &w.v1);
    std::fs::write(&w.pubkey, key().public_pem()).unwrap();
    let (p3, _) = payload_file(w.dir.path(), "3.0.0", &key(), b"a");
    let (p2, _) = payload_file(w.dir.path(), "2.0.0", &key(), b"a");
    server.publish(&p3, "alpha", None);
    server.publish(&p2, "stable", None);
    let m = Machine::with_world(w, &server.base, "alpha");
    let (code, r, _) = m.check();
    assert_eq!((code, report_result(&r)), (0, "no-update"), "{r}");

    m.set_group("stable");
    let before = std::fs::read(&m.w.disk).unwrap();
    let (code, r, _) = m.check();
    assert_eq!((code, report_result(&r)), (0, "no-update"), "{r}");
    assert_eq!(r["group"], "stable");
    assert_eq!(r["running_version"], "3.0.0");
    assert_eq!(std::fs::read(&m.w.disk).unwrap(), before);
    assert_eq!(server.instance()["group"], "stable");
    assert_eq!(server.instance()["version"], "3.0.0");
}

#[test]
fn a_version_that_failed_here_is_not_applied_again_until_a_newer_one() {
    let server = Server::start(None);
    let m = Machine::new(&server.base, "beta");
    let (p2, _) = payload_file(m.w.dir.path(), "2.0.0", &key(), b"a");
    server.publish(&p2, "beta", None);
    let (code, r, _) = m.check();
    assert_eq!((code, report_result(&r)), (0, "staged"), "{r}");

    // The trial boot of USR-B fails its gate: keel-init used its one try, falls back to USR-A.
    set_attrs(&m.w.disk, 4, SlotAttrs::new(2, 0, false));
    let after_fallback = std::fs::read(&m.w.disk).unwrap();
    let (code, r, _) = m.check();
    assert_eq!(
        (code, report_result(&r)),
        (0, "skipped-failed-version"),
        "{r}"
    );
    assert_eq!(r["offered_version"], "2.0.0");
    assert_eq!(std::fs::read(&m.w.disk).unwrap(), after_fallback);
    assert_eq!(server.events(), ["13/1", "14/1", "3/1", "3/0:44"]);
    let s = m.status();
    assert_eq!(s["failed_versions"], serde_json::json!(["2.0.0"]), "{s}");
    let results: Vec<&str> = s["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["result"].as_str().unwrap())
        .collect();
    assert_eq!(results, ["staged", "update-failed"]);

    // Again: still skipped, nothing written.
    let (_, r, _) = m.check();
    assert_eq!(report_result(&r), "skipped-failed-version", "{r}");
    assert_eq!(std::fs::read(&m.w.disk).unwrap(), after_fallback);

    // A newer version is tried as usual.
    let (p201, _) = payload_file(m.w.dir.path(), "2.0.1", &key(), b"a");
    server.publish(&p201, "beta", None);
    let (code, r, _) = m.check();
    assert_eq!((code, report_result(&r)), (0, "staged"), "{r}");
    assert_eq!(r["offered_version"], "2.0.1");
}

/// `keel-update agent` as the unit runs it (with a first check at once): it checks, stages,
/// leaves the update staged under REBOOT_STRATEGY=off, and follows the server's PollInterval
/// (2 s here) instead of its 45 minutes.
#[test]
fn the_agent_daemon_stages_and_follows_the_poll_interval() {
    let server = Server::start_with(None, "poll_interval: 2\n");
    let m = Machine::new(&server.base, "beta");
    std::fs::write(
        m.root.join("etc/keel/update.conf"),
        "GROUP=beta\nREBOOT_STRATEGY=off\n",
    )
    .unwrap();
    let (p2, v2) = payload_file(m.w.dir.path(), "2.0.0", &key(), b"a");
    server.publish(&p2, "beta", None);
    let log = m.w.dir.path().join("agent.log");
    let mut child = keel_testkit::spawn_tied(
        Command::new(env!("CARGO_BIN_EXE_keel-update"))
            .arg("--disk")
            .arg(&m.w.disk)
            .arg("--state")
            .arg(m.w.dir.path().join("update-state.json"))
            .arg("--root")
            .arg(&m.root)
            .args(["agent", "--first-check", "0", "--pubkey"])
            .arg(&m.w.pubkey)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null()),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.matches("keel-update agent: {").count() >= 3 {
            break text;
        }
        if std::time::Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            panic!("the agent did not check three times in 60 s:\n{text}");
        }
        thread::sleep(std::time::Duration::from_millis(200));
    };
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    let reports: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("keel-update agent: {"))
        .map(|l| serde_json::from_str(&format!("{{{l}")).unwrap())
        .collect();
    assert_eq!(reports[0]["result"], "staged", "{text}");
    assert_eq!(reports[1]["result"], "already-staged", "{text}");
    assert!(
        text.contains("keel-reboot-manager reboots into it as REBOOT_STRATEGY=off says"),
        "{text}"
    );
    // After the first check the wait is the server's 2 s (± 2/9), not 45 minutes.
    let waits: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("keel-update agent: next check in "))
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(waits[0] <= 1, "{text}");
    assert!(waits[1..].iter().all(|w| *w <= 3), "{text}");
    assert_eq!(
        &partition_bytes(&m.w.disk, 4)[..v2.body.len()],
        &v2.body[..]
    );
    assert_eq!(server.events(), ["13/1", "14/1", "3/1"]);
}
