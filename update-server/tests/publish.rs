//! `publish` refuses what the trusted keys did not sign, or what was cut or changed, and stores
//! nothing then; the command line publishes, promotes and manages groups.

mod common;

use clap::Parser;
use common::*;
use keel_update_server::payload::PayloadError;
use keel_update_server::publish::{publish, PublishError};
use keel_update_server::Args;

fn try_publish(s: &TestServer, path: &std::path::Path) -> Result<(), PublishError> {
    let keys = keel_format::keys::require_keys(&s.config.trusted_keys).unwrap();
    publish(&*s.store, &keys, &s.config.payloads, path, "alpha", None, 1).map(|_| ())
}

fn nothing_stored(s: &TestServer) {
    assert!(s.store.packages().unwrap().is_empty());
    let files = std::fs::read_dir(&s.config.payloads)
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(files, 0, "payload directory not empty");
}

#[test]
fn unsigned_foreign_truncated_and_altered_payloads_are_refused() {
    let s = TestServer::start();
    let dir = s.dir.path();
    let good = signed_payload(dir, "2.0.0", &trusted_key(), 3);
    let bytes = std::fs::read(&good).unwrap();

    let unsigned = dir.join("unsigned.img");
    std::fs::write(&unsigned, &bytes[4096..]).unwrap();
    let e = try_publish(&s, &unsigned).unwrap_err();
    assert!(
        matches!(e, PublishError::Payload(PayloadError::NotSigned { .. })),
        "{e}"
    );

    let tiny = dir.join("tiny.img");
    std::fs::write(&tiny, b"hello").unwrap();
    let e = try_publish(&s, &tiny).unwrap_err();
    assert!(
        matches!(e, PublishError::Payload(PayloadError::NotSigned { .. })),
        "{e}"
    );

    let foreign = signed_payload(dir, "2.0.0", &foreign_key(), 3);
    let e = try_publish(&s, &foreign).unwrap_err();
    assert!(
        matches!(e, PublishError::Payload(PayloadError::Untrusted { .. })),
        "{e}"
    );
    assert!(e.to_string().contains("not trusted"), "{e}");

    let truncated = dir.join("truncated.img");
    std::fs::write(&truncated, &bytes[..bytes.len() - 1]).unwrap();
    let e = try_publish(&s, &truncated).unwrap_err();
    assert!(
        matches!(e, PublishError::Payload(PayloadError::Length { .. })),
        "{e}"
    );

    let mut changed = bytes.clone();
    *changed.last_mut().unwrap() ^= 1;
    let altered = dir.join("altered.img");
    std::fs::write(&altered, &changed).unwrap();
    let e = try_publish(&s, &altered).unwrap_err();
    assert!(
        matches!(e, PublishError::Payload(PayloadError::BodyHash { .. })),
        "{e}"
    );

    // A changed signed block: the signature no longer verifies.
    let mut changed = bytes.clone();
    let at = changed.windows(5).position(|w| w == b"2.0.0").unwrap();
    changed[at] = b'9';
    let resigned = dir.join("resigned.img");
    std::fs::write(&resigned, &changed).unwrap();
    let e = try_publish(&s, &resigned).unwrap_err();
    assert!(
        matches!(e, PublishError::Payload(PayloadError::Untrusted { .. })),
        "{e}"
    );

    nothing_stored(&s);
    try_publish(&s, &good).unwrap();
    assert_eq!(s.store.packages().unwrap().len(), 1);
}

fn cli(s: &TestServer, args: &[&str]) -> anyhow::Result<()> {
    let config = s.config_file();
    let mut argv = vec!["keel-update-server", "--config", config.to_str().unwrap()];
    argv.extend_from_slice(args);
    keel_update_server::run(Args::try_parse_from(argv).unwrap())
}

#[test]
fn the_command_line_publishes_promotes_and_manages_groups() {
    let s = TestServer::start();
    let payload = signed_payload(s.dir.path(), "2.1.0", &trusted_key(), 2);
    cli(
        &s,
        &["publish", payload.to_str().unwrap(), "--channel", "alpha"],
    )
    .unwrap();
    let p = s
        .store
        .channel_package(keel_omaha::KEEL_APP_ID, "alpha")
        .unwrap()
        .unwrap();
    assert_eq!(p.version, "2.1.0");
    assert!(s
        .config
        .payloads
        .join(format!("{}.img", p.sha256_hex))
        .is_file());

    let e = cli(
        &s,
        &["publish", payload.to_str().unwrap(), "--channel", "nightly"],
    )
    .unwrap_err();
    assert!(
        format!("{e:#}").contains("channel nightly not found"),
        "{e:#}"
    );

    cli(&s, &["promote", "alpha", "beta"]).unwrap();
    assert_eq!(
        s.store
            .channel_package(keel_omaha::KEEL_APP_ID, "beta")
            .unwrap()
            .unwrap()
            .id,
        p.id
    );
    let e = cli(&s, &["promote", "stable", "beta"]).unwrap_err();
    assert!(
        format!("{e:#}").contains("a package on channel stable"),
        "{e:#}"
    );

    cli(&s, &["group", "create", "canary", "--channel", "beta"]).unwrap();
    cli(&s, &["group", "set", "canary", "--allow-downgrade", "true"]).unwrap();
    let g = s.store.group("canary").unwrap().unwrap();
    assert_eq!((g.channel.as_str(), g.allow_downgrade), ("beta", true));
    assert!(!s.store.group("stable").unwrap().unwrap().allow_downgrade);
    assert!(cli(&s, &["group", "create", "canary", "--channel", "beta"]).is_err());
    assert!(cli(&s, &["group", "create", "x", "--channel", "nope"]).is_err());

    cli(
        &s,
        &[
            "group",
            "set",
            "canary",
            "--max-updates",
            "5",
            "--timezone",
            "Asia/Tokyo",
        ],
    )
    .unwrap();
    let p = s.store.group("canary").unwrap().unwrap().policy;
    assert_eq!(
        (p.max_updates_per_period, p.timezone.as_str()),
        (Some(5), "Asia/Tokyo")
    );
    assert!(cli(
        &s,
        &["group", "set", "canary", "--timezone", "Nowhere/City"]
    )
    .is_err());
    cli(&s, &["group", "pause", "canary"]).unwrap();
    assert!(s.store.group("canary").unwrap().unwrap().policy.paused);
    cli(&s, &["group", "resume", "canary"]).unwrap();
    assert!(!s.store.group("canary").unwrap().unwrap().policy.paused);

    cli(&s, &["channel", "create", "lts"]).unwrap();
    assert!(s.store.channels().unwrap().contains(&"lts".to_owned()));

    // An external URL: the server records it and sends it; it keeps no copy.
    let other = signed_payload(s.dir.path(), "2.2.0", &trusted_key(), 2);
    cli(
        &s,
        &[
            "publish",
            other.to_str().unwrap(),
            "--channel",
            "lts",
            "--url",
            "https://cdn.example/keel/2.2.0/usr.img",
        ],
    )
    .unwrap();
    let p = s
        .store
        .channel_package(keel_omaha::KEEL_APP_ID, "lts")
        .unwrap()
        .unwrap();
    assert!(!s
        .config
        .payloads
        .join(format!("{}.img", p.sha256_hex))
        .exists());
    s.store.create_group("lts", "lts").unwrap();
    let (_, reply) = s.post(request("1.0.0", "lts", CHECK).as_bytes());
    match keel_omaha::client_outcome_from_body(reply.as_bytes(), keel_omaha::KEEL_APP_ID) {
        keel_omaha::Outcome::UpdateAvailable(u) => {
            assert_eq!(u.url, "https://cdn.example/keel/2.2.0/usr.img")
        }
        other => panic!("{other:?}: {reply}"),
    }
}
