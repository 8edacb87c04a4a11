//! The dashboard in a real browser (Debian's headless Chromium) loaded from the test server:
//! the rendered DOM is checked and a screenshot kept in `target/tmp/`. And `/metrics`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

const TOKEN: &str = "dash-token";

fn fleet(s: &TestServer) {
    s.publish("2.0.0", "beta");
    s.store.create_group("canary", "alpha").unwrap();
    let mut p = s.store.group("beta").unwrap().unwrap().policy;
    p.safe_mode = true;
    p.safe_mode_failures = 3;
    p.max_updates_per_period = Some(10);
    s.store.set_policy("beta", &p, "test").unwrap();
    let send = |machine: &str, alias: &str, version: &str, body: &str| {
        let req = request(version, "beta", body)
            .replace(MACHINE, machine)
            .replace("web-1", alias);
        assert_eq!(s.post(req.as_bytes()).0, 200);
    };
    // One machine already runs 2.0.0, so safe mode no longer grants one at a time.
    send(
        "new-0",
        "db-<0>",
        "2.0.0",
        &event(3, 2, r#"previousversion="1.0.0""#),
    );
    for n in 0..4 {
        send(&format!("old-{n}"), &format!("web-{n}"), "1.0.0", CHECK);
    }
    send("old-3", "web-3", "1.0.0", &event(3, 0, r#"errorcode="10""#));
}

fn chromium(args: &[&str], dir: &Path) -> std::process::Output {
    let profile = dir.join("chromium-profile");
    let mut cmd = Command::new("chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(["--no-first-run", "--hide-scrollbars", "--timeout=20000"])
    .args(args)
    .env("HOME", dir);
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("chromium (Debian's chromium; ci/install-deps.sh installs it)");
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg(id.to_string()).status();
            panic!("chromium did not finish in 120 s");
        }
    }
}

#[test]
fn the_dashboard_renders_in_headless_chromium() {
    let s = TestServer::start_with(&format!("api_token: {TOKEN}\n"));
    fleet(&s);
    let url = s.url(&format!("/dashboard?token={TOKEN}"));

    let out = chromium(&["--dump-dom", &url], s.dir.path());
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("<h1>Keel update service</h1>"),
        "no dashboard in chromium's DOM; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = |id: &str| -> String {
        let start = dom
            .find(&format!("<tr id=\"{id}\""))
            .unwrap_or_else(|| panic!("no row {id} in {dom}"));
        let end = dom[start..].find("</tr>").unwrap() + start;
        dom[start..end].to_owned()
    };
    let beta = row("group-beta");
    assert!(beta.contains("<td class=\"offered\">2.0.0</td>"), "{beta}");
    assert!(beta.contains("1.0.0: 4, 2.0.0: 1"), "{beta}");
    assert!(
        beta.contains("1 of 5 on 2.0.0; 3 updating, 1 failed, 0 timed out"),
        "{beta}"
    );
    assert!(beta.contains("10 per 3600 s"), "{beta}");
    assert!(beta.contains("safe mode (3 failures)"), "{beta}");
    assert!(row("group-canary").contains("nothing published"));
    let failed = row("instance-old-3");
    assert!(failed.contains("error 10"), "{failed}");
    // The alias is text, not markup.
    assert!(row("instance-new-0").contains("db-&lt;0&gt;"));
    let activity = &dom[dom.find("id=\"activity\"").expect("activity table")..];
    assert!(
        activity.contains("event 3/0 on 1.0.0, error code 10"),
        "{activity}"
    );

    // The search form, as a browser submits it.
    let out = chromium(
        &["--dump-dom", &format!("{url}&q=db&group=&status=")],
        s.dir.path(),
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(dom.contains("id=\"instance-new-0\""), "{dom}");
    assert!(!dom.contains("id=\"instance-old-0\""), "{dom}");

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("update-server-dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let out = chromium(
        &[
            "--window-size=1280,900",
            &format!("--screenshot={}", shot.display()),
            &url,
        ],
        s.dir.path(),
    );
    let png = std::fs::read(&shot).unwrap_or_else(|e| {
        panic!(
            "no screenshot ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(png.len() > 10_000, "screenshot only {} bytes", png.len());
    eprintln!("dashboard screenshot: {}", shot.display());

    // Without the token: refused.
    let (status, _, _) = get(&s.url("/dashboard"), None);
    assert_eq!(status, 401);
    let (status, _, _) = get(&s.url("/dashboard?token=nope"), None);
    assert_eq!(status, 401);
}

#[test]
fn metrics_count_per_group() {
    let s = TestServer::start_with(&format!("api_token: {TOKEN}\n"));
    fleet(&s);
    // Held back: the group paused.
    let mut p = s.store.group("beta").unwrap().unwrap().policy;
    p.paused = true;
    s.store.set_policy("beta", &p, "test").unwrap();
    let req = request("1.0.0", "beta", CHECK).replace(MACHINE, "late");
    assert_eq!(s.post(req.as_bytes()).0, 200);

    let (status, body, _) = get(&s.url("/metrics"), None);
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    for line in [
        "keel_update_checks_total{group=\"beta\"} 5",
        "keel_updates_granted_total{group=\"beta\"} 4",
        "keel_updates_held_total{group=\"beta\"} 1",
        "keel_updates_succeeded_total{group=\"beta\"} 1",
        "keel_updates_failed_total{group=\"beta\"} 1",
        "keel_update_checks_total{group=\"stable\"} 0",
        "keel_instances{group=\"beta\",version=\"1.0.0\"} 5",
        "keel_instances{group=\"beta\",version=\"2.0.0\"} 1",
        "keel_rollout_in_progress{group=\"beta\",version=\"2.0.0\"} 3",
        "keel_rollout_failed{group=\"beta\",version=\"2.0.0\"} 1",
        "keel_rollout_completed{group=\"beta\",version=\"2.0.0\"} 1",
        "keel_group_paused{group=\"beta\"} 1",
        "# TYPE keel_updates_failed_total counter",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}
