//! The binary as operators run it: `publish` in one process, `serve` in another, SIGTERM, and a
//! second `serve` that still knows the machine and its events.

mod common;

use std::process::{Child, Command};

use common::*;
use keel_omaha::{client_outcome_from_body, Outcome, KEEL_APP_ID};

const BIN: &str = env!("CARGO_BIN_EXE_keel-update-server");

fn serve(config: &std::path::Path) -> (Child, String) {
    keel_testkit::update_server::spawn_update_server(std::path::Path::new(BIN), config)
}

fn terminate(mut child: Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "serve exited with {exit}");
}

#[test]
fn publish_serve_terminate_serve_again() {
    let mut s = TestServer::start();
    s.stop();
    let config = s.config_file();
    let payload = signed_payload(s.dir.path(), "2.0.0", &trusted_key(), 2);
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(["publish", payload.to_str().unwrap(), "--channel", "stable"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("version 2.0.0"));
    let bad = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(["publish", config.to_str().unwrap(), "--channel", "stable"])
        .output()
        .unwrap();
    // Not a signed payload: refused as a failed verification (the shared exit code 3).
    assert_eq!(bad.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("refused"));

    let (child, base) = serve(&config);
    let url = format!("{base}/v1/update/");
    let (status, reply) = post(&url, request("1.0.0", "stable", CHECK).as_bytes());
    assert_eq!(status, 200, "{reply}");
    assert!(matches!(
        client_outcome_from_body(reply.as_bytes(), KEEL_APP_ID),
        Outcome::UpdateAvailable(_)
    ));
    assert_eq!(
        post(
            &url,
            request("1.0.0", "stable", &event(13, 1, "")).as_bytes()
        )
        .0,
        200
    );
    terminate(child);

    let (child, base) = serve(&config);
    let agent = agent();
    let mut r = agent.get(&format!("{base}/metrics")).call().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let metrics = r.body_mut().read_to_string().unwrap();
    assert!(
        metrics.contains("keel_instances{group=\"stable\",version=\"1.0.0\"} 1"),
        "{metrics}"
    );
    terminate(child);
    let store = keel_update_server::server::open_store(&s.config).unwrap();
    let i = store.instance(MACHINE, KEEL_APP_ID).unwrap().unwrap();
    assert_eq!(i.status, "downloading");
    assert_eq!(store.events(MACHINE, KEEL_APP_ID).unwrap().len(), 1);
}
