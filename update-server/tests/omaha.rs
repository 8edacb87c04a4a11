//! The Omaha endpoint over real HTTP on loopback: update checks, downloads with ranges,
//! events and instance status, downgrades, bad input, a locked database, a restart.

mod common;

use base64::Engine as _;
use common::*;
use keel_omaha::{client_outcome_from_body, keel_attr, Outcome, KEEL_APP_ID};

fn update(body: &str) -> Box<keel_omaha::Update> {
    match client_outcome_from_body(body.as_bytes(), KEEL_APP_ID) {
        Outcome::UpdateAvailable(u) => u,
        other => panic!("no update ({other:?}) in {body}"),
    }
}

fn is_noupdate(body: &str) -> bool {
    matches!(
        client_outcome_from_body(body.as_bytes(), KEEL_APP_ID),
        Outcome::NoUpdate { .. }
    )
}

#[test]
fn an_older_machine_gets_the_channel_package_and_downloads_it_in_pieces() {
    let s = TestServer::start();
    let payload = s.publish("2.0.0", "stable");
    let file = std::fs::read(&payload).unwrap();

    let (status, body) = s.post(request("1.0.0", "stable", CHECK).as_bytes());
    assert_eq!(status, 200, "{body}");
    let u = update(&body);
    assert_eq!(u.version, "2.0.0");
    assert_eq!(u.size, file.len() as u64);
    let sha = ring::digest::digest(&ring::digest::SHA256, &file);
    let b64 = base64::engine::general_purpose::STANDARD;
    assert_eq!(u.sha256, b64.encode(sha));
    assert_eq!(u.hash_sha256.as_deref(), Some(hex::encode(sha).as_str()));
    let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &file);
    assert_eq!(u.hash_sha1.as_deref(), Some(b64.encode(sha1).as_str()));
    assert_eq!(u.action_extra[keel_attr::VERSION], "2.0.0");
    assert_eq!(u.action_extra[keel_attr::KEY_ID], trusted_key().key_id());
    assert!(u.disable_payload_backoff);
    assert!(body.contains(r#"ChromeOSVersion="2.0.0""#), "{body}");
    assert!(body.contains(r#"needsadmin="false""#), "{body}");

    let (status, got, _) = get(&u.url, None);
    assert_eq!(status, 200);
    assert!(
        got == file,
        "downloaded payload differs from the published file"
    );
    // An interrupted download resumes where it stopped.
    let (status, tail, cr) = get(&u.url, Some("bytes=5000-"));
    assert_eq!(status, 206);
    assert!(tail[..] == file[5000..]);
    assert_eq!(
        cr.unwrap(),
        format!("bytes 5000-{}/{}", file.len() - 1, file.len())
    );
    let (status, mid, _) = get(&u.url, Some("bytes=10-19"));
    assert_eq!((status, &mid[..]), (206, &file[10..20]));
    let (status, _, cr) = get(&u.url, Some(&format!("bytes={}-", file.len())));
    assert_eq!(status, 416);
    assert_eq!(cr.unwrap(), format!("bytes */{}", file.len()));
    let (status, _, _) = get(
        &s.url(&format!("/v1/packages/{}/other.img", "0".repeat(64))),
        None,
    );
    assert_eq!(status, 404);

    let i = s.store.instance(MACHINE, KEEL_APP_ID).unwrap().unwrap();
    assert_eq!(
        (i.status.as_str(), i.version.as_str()),
        ("granted", "1.0.0")
    );
    assert_eq!(i.alias.as_deref(), Some("web-1"));
    assert_eq!(i.group, "stable");
}

#[test]
fn events_move_the_instance_through_its_update_and_are_kept() {
    let s = TestServer::start();
    s.publish("2.0.0", "beta");
    let steps = [
        ("1.0.0", CHECK.to_owned(), "granted"),
        ("1.0.0", event(13, 1, ""), "downloading"),
        ("1.0.0", event(14, 1, ""), "downloaded"),
        ("1.0.0", event(3, 1, ""), "installed"),
        (
            "2.0.0",
            format!("{CHECK}{}", event(3, 2, r#"previousversion="1.0.0""#)),
            "complete",
        ),
    ];
    for (version, body, want) in steps {
        let (status, reply) = s.post(request(version, "beta", &body).as_bytes());
        assert_eq!(status, 200, "{reply}");
        let i = s.store.instance(MACHINE, KEEL_APP_ID).unwrap().unwrap();
        assert_eq!(i.status, want, "after {body}");
        assert_eq!(i.version, version);
    }
    // The last check, on 2.0.0, was answered noupdate.
    let (_, reply) = s.post(request("2.0.0", "beta", CHECK).as_bytes());
    assert!(is_noupdate(&reply), "{reply}");
    let (_, reply) = s.post(request("2.0.0", "beta", &event(3, 0, r#"errorcode="44""#)).as_bytes());
    assert!(reply.contains(r#"<event status="ok"/>"#), "{reply}");
    let i = s.store.instance(MACHINE, KEEL_APP_ID).unwrap().unwrap();
    assert_eq!((i.status.as_str(), i.error_code), ("error", Some(44)));
    let history: Vec<(u32, u32)> = s
        .store
        .events(MACHINE, KEEL_APP_ID)
        .unwrap()
        .iter()
        .map(|e| (e.event_type, e.event_result))
        .collect();
    assert_eq!(history, [(13, 1), (14, 1), (3, 1), (3, 2), (3, 0)]);
}

#[test]
fn no_downgrade_unless_the_group_allows_it() {
    let s = TestServer::start();
    s.publish("1.5.0", "stable");
    let (status, reply) = s.post(request("2.0.0", "stable", CHECK).as_bytes());
    assert_eq!(status, 200);
    assert!(is_noupdate(&reply), "{reply}");
    let (_, reply) = s.post(request("1.5.0", "stable", CHECK).as_bytes());
    assert!(is_noupdate(&reply), "same version: {reply}");
    s.store.set_allow_downgrade("stable", true).unwrap();
    let (_, reply) = s.post(request("2.0.0", "stable", CHECK).as_bytes());
    assert_eq!(update(&reply).version, "1.5.0");
    let (_, reply) = s.post(request("1.5.0", "stable", CHECK).as_bytes());
    assert!(
        is_noupdate(&reply),
        "same version, downgrades allowed: {reply}"
    );
}

#[test]
fn a_custom_group_follows_its_channel_and_promote_moves_packages() {
    let s = TestServer::start();
    s.store.create_group("canary", "alpha").unwrap();
    s.publish("3.0.0", "alpha");
    let (_, reply) = s.post(request("1.0.0", "canary", CHECK).as_bytes());
    assert_eq!(update(&reply).version, "3.0.0");
    let (_, reply) = s.post(request("1.0.0", "beta", CHECK).as_bytes());
    assert!(is_noupdate(&reply), "{reply}");
    s.store.promote("alpha", "beta").unwrap();
    let (_, reply) = s.post(request("1.0.0", "beta", CHECK).as_bytes());
    assert_eq!(update(&reply).version, "3.0.0");
}

#[test]
fn flatcar_machines_get_noupdate() {
    let s = TestServer::start();
    s.publish("9999.0.0", "stable");
    let req = request("3033.2.0", "stable", CHECK).replace(
        &format!("{{{KEEL_APP_ID}}}"),
        "{e96281a6-d1af-4bde-9a0a-97b76e56dc57}",
    );
    // Flatcar's own tracks too (there is no group "lts-2022" here).
    let lts = req.replace(r#"track="stable""#, r#"track="lts-2022""#);
    for body in [req, lts] {
        let (status, reply) = s.post(body.as_bytes());
        assert_eq!(status, 200, "{reply}");
        assert!(
            matches!(
                client_outcome_from_body(reply.as_bytes(), keel_omaha::FLATCAR_APP_ID),
                Outcome::NoUpdate { .. }
            ),
            "{reply}"
        );
    }
    let i = s
        .store
        .instance(MACHINE, keel_omaha::FLATCAR_APP_ID)
        .unwrap()
        .unwrap();
    assert_eq!(i.group, "lts-2022");
}

#[test]
fn an_unknown_app_beside_a_known_one_gets_error_unknown_application() {
    let s = TestServer::start();
    s.publish("2.0.0", "stable");
    let foreign = r#"<app appid="{430FD4D0-B729-4F61-AA34-91526481799D}" version="1.3.23.0"><updatecheck/></app>"#;
    let body =
        request("1.0.0", "stable", CHECK).replace("</request>", &format!("{foreign}</request>"));
    let (status, reply) = s.post(body.as_bytes());
    assert_eq!(status, 200, "{reply}");
    let r = keel_omaha::parse_response(reply.as_bytes()).unwrap();
    assert_eq!(r.apps.len(), 2);
    assert_eq!(
        r.apps[1].status.as_deref(),
        Some("error-unknownApplication")
    );
    assert!(r.apps[1].updatecheck.is_none());
    assert_eq!(update(&reply).version, "2.0.0");
    assert_eq!(s.store.instances().unwrap().len(), 1);
}

#[test]
fn bad_requests_get_400_with_a_reason_and_leave_nothing() {
    let s = TestServer::start();
    s.publish("2.0.0", "stable");
    let good = request("1.0.0", "stable", CHECK);
    let cases: Vec<(String, &str)> = vec![
        (good.replace("</request>", ""), "malformed XML"),
        ("".into(), "empty body"),
        (
            good.replace(KEEL_APP_ID, "00000000-0000-0000-0000-000000000000"),
            "unknown application id",
        ),
        (
            good.replace(r#"track="stable""#, r#"track="nightly""#),
            "unknown group \"nightly\"",
        ),
        (
            good.replace(r#"version="1.0.0" track"#, r#"version="banana" track"#),
            "\"banana\" is not a version",
        ),
        (
            good.replace(CHECK, &event(13, 1, ""))
                .replace(r#"version="1.0.0" track"#, "track"),
            "has no version",
        ),
        (
            good.replace(CHECK, r#"<event eventtype="x" eventresult="1"/>"#),
            "eventtype",
        ),
        (
            format!("{good}{}", " ".repeat(keel_omaha::MAX_REQUEST_BYTES)),
            "over the 65536-byte limit",
        ),
    ];
    for (body, reason) in cases {
        let (status, reply) = s.post(body.as_bytes());
        assert_eq!(status, 400, "{reason}: {reply}");
        assert!(reply.contains(reason), "want {reason:?} in {reply:?}");
    }
    assert!(s.store.instances().unwrap().is_empty());
    assert!(s.store.events(MACHINE, KEEL_APP_ID).unwrap().is_empty());
    let mut r = agent().get(&s.url("/v1/update/")).call().unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert!(r.body_mut().read_to_string().unwrap().contains("POST"));
    // Still serving.
    assert_eq!(s.post(good.as_bytes()).0, 200);
}

#[test]
fn a_locked_database_is_503_and_the_client_may_retry() {
    let s = TestServer::start();
    let other = rusqlite::Connection::open(s.config.database.as_ref().unwrap()).unwrap();
    other
        .execute_batch("BEGIN EXCLUSIVE; INSERT INTO channels (name) VALUES ('x');")
        .unwrap();
    let (status, reply) = s.post(request("1.0.0", "stable", &event(13, 1, "")).as_bytes());
    assert_eq!(status, 503, "{reply}");
    assert!(reply.contains("database unavailable"), "{reply}");
    other.execute_batch("ROLLBACK").unwrap();
    assert!(s.store.instances().unwrap().is_empty());
    let (status, _) = s.post(request("1.0.0", "stable", &event(13, 1, "")).as_bytes());
    assert_eq!(status, 200);
    assert_eq!(s.store.instances().unwrap().len(), 1);
}

#[test]
fn a_restart_loses_no_instance_event_or_package() {
    let mut s = TestServer::start();
    s.publish("2.0.0", "stable");
    s.store.create_group("edge", "alpha").unwrap();
    s.store.set_allow_downgrade("beta", true).unwrap();
    for body in [CHECK.to_owned(), event(13, 1, ""), event(14, 1, "")] {
        assert_eq!(s.post(request("1.0.0", "stable", &body).as_bytes()).0, 200);
    }
    let before = (
        s.store.instances().unwrap(),
        s.store.events(MACHINE, KEEL_APP_ID).unwrap(),
        s.store.packages().unwrap(),
        s.store.groups().unwrap(),
    );
    s.restart();
    let after = (
        s.store.instances().unwrap(),
        s.store.events(MACHINE, KEEL_APP_ID).unwrap(),
        s.store.packages().unwrap(),
        s.store.groups().unwrap(),
    );
    assert_eq!(before, after);
    assert_eq!(after.1.len(), 2);
    assert_eq!(after.0[0].status, "downloaded");
    // The restarted server remembers this machine is mid-update (no second grant) and still
    // offers the package to another.
    let (_, reply) = s.post(request("1.0.0", "stable", CHECK).as_bytes());
    assert!(is_noupdate(&reply), "{reply}");
    let other = request("1.0.0", "stable", CHECK).replace(MACHINE, "another-machine");
    let (_, reply) = s.post(other.as_bytes());
    assert_eq!(update(&reply).version, "2.0.0");
}
