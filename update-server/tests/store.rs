//! The same store tests against SQLite and against PostgreSQL (a throwaway cluster started by
//! the test), the batching layer the server runs on, and the server end to end on PostgreSQL
//! (behind that layer), restart included.

mod common;

use std::sync::Arc;

use common::*;
use keel_omaha::{client_outcome_from_body, Outcome, KEEL_APP_ID};
use keel_testkit::postgres::PgCluster;
use keel_update_server::store::batched::{self, Batched};
use keel_update_server::store::postgres::PostgresStore;
use keel_update_server::store::sqlite::SqliteStore;
use keel_update_server::store::{
    Activity, Change, Contact, EventRecord, InstanceFilter, Package, Policy, Store, StoreError,
};

fn package(version: &str, sha: char) -> Package {
    Package {
        id: 0,
        app_id: KEEL_APP_ID.into(),
        version: version.into(),
        file_name: "usr.img".into(),
        size: 123_456_789_012,
        sha1_base64: "c2hhMQ==".into(),
        sha256_base64: "c2hhMjU2".into(),
        sha256_hex: sha.to_string().repeat(64),
        key_id: "fe812c12f3ab4ce6".into(),
        external_url: None,
        created_at: 1_000,
    }
}

fn contact(machine: &str, group: &str, version: &str, at: i64) -> Contact {
    Contact {
        machine_id: machine.into(),
        app_id: KEEL_APP_ID.into(),
        alias: Some(format!("alias-{machine}")),
        group: group.into(),
        version: version.into(),
        at,
    }
}

fn ev(at: i64, t: u32, r: u32, code: Option<i64>) -> EventRecord {
    EventRecord {
        at,
        event_type: t,
        event_result: r,
        error_code: code,
        previous_version: Some("1.0.0".into()),
        version: "1.0.0".into(),
    }
}

/// Everything the server asks of a store, with the answers it relies on.
fn suite(s: &dyn Store) {
    // Out of the box.
    assert_eq!(s.channels().unwrap(), ["alpha", "beta", "stable"]);
    let groups = s.groups().unwrap();
    assert_eq!(groups.len(), 3);
    assert!(groups
        .iter()
        .all(|g| g.name == g.channel && !g.allow_downgrade));
    assert_eq!(groups[0].policy, Policy::default());

    // Channels and groups.
    s.create_channel("lts").unwrap();
    assert!(matches!(
        s.create_channel("lts"),
        Err(StoreError::Conflict(_))
    ));
    s.create_group("canary", "lts").unwrap();
    assert!(matches!(
        s.create_group("canary", "lts"),
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.create_group("x", "nope"),
        Err(StoreError::NotFound(_))
    ));
    s.set_allow_downgrade("canary", true).unwrap();
    assert!(s.group("canary").unwrap().unwrap().allow_downgrade);
    assert!(matches!(
        s.set_allow_downgrade("nope", true),
        Err(StoreError::NotFound(_))
    ));
    assert!(s.group("nope").unwrap().is_none());
    let policy = Policy {
        paused: true,
        max_updates_per_period: Some(7),
        period_seconds: 60,
        update_timeout_seconds: 120,
        office_hours: true,
        timezone: "Europe/Berlin".into(),
        safe_mode: true,
        safe_mode_failures: 3,
    };
    s.set_policy("canary", &policy, "test policy").unwrap();
    assert_eq!(s.group("canary").unwrap().unwrap().policy, policy);
    assert!(matches!(
        s.set_policy("nope", &policy, "x"),
        Err(StoreError::NotFound(_))
    ));

    // Packages, channels, promote.
    let p1 = s.publish(&package("2.0.0", 'a'), "alpha").unwrap();
    assert!(p1.id > 0);
    assert_eq!(p1.size, 123_456_789_012);
    let again = s.publish(&package("2.0.0", 'a'), "beta").unwrap();
    assert_eq!(again.id, p1.id, "the same file is one package");
    assert!(matches!(
        s.publish(&package("2.0.0", 'b'), "nope"),
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(s.packages().unwrap().len(), 1);
    let p2 = s.publish(&package("3.0.0", 'c'), "alpha").unwrap();
    assert_eq!(
        s.channel_package(KEEL_APP_ID, "alpha").unwrap().unwrap().id,
        p2.id
    );
    assert_eq!(
        s.channel_package(KEEL_APP_ID, "beta").unwrap().unwrap().id,
        p1.id
    );
    assert!(s.channel_package(KEEL_APP_ID, "stable").unwrap().is_none());
    assert!(s.channel_package("other", "alpha").unwrap().is_none());
    let moved = s.promote("alpha", "stable").unwrap();
    assert_eq!(moved.len(), 1);
    assert_eq!(
        s.channel_package(KEEL_APP_ID, "stable")
            .unwrap()
            .unwrap()
            .version,
        "3.0.0"
    );
    assert!(matches!(
        s.promote("lts", "stable"),
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.promote("alpha", "nope"),
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        s.package_by_sha256(&"c".repeat(64)).unwrap().unwrap().id,
        p2.id
    );
    assert!(s.package_by_sha256(&"d".repeat(64)).unwrap().is_none());

    // Instances and events.
    s.record(&contact("m1", "beta", "1.0.0", 100), &Change::default())
        .unwrap();
    let i = s.instance("m1", KEEL_APP_ID).unwrap().unwrap();
    assert_eq!(
        (i.status.as_str(), i.first_seen, i.last_seen),
        ("new", 100, 100)
    );
    assert_eq!(i.alias.as_deref(), Some("alias-m1"));
    let grant = Change {
        status: Some(("granted".into(), None)),
        granted: Some("2.0.0".into()),
        events: vec![],
    };
    let mut c = contact("m1", "beta", "1.0.0", 200);
    c.alias = None;
    s.record(&c, &grant).unwrap();
    let i = s.instance("m1", KEEL_APP_ID).unwrap().unwrap();
    assert_eq!(
        i.alias.as_deref(),
        Some("alias-m1"),
        "an absent alias keeps the old one"
    );
    assert_eq!(
        (i.granted_at, i.target_version.as_deref()),
        (Some(200), Some("2.0.0"))
    );
    assert_eq!((i.first_seen, i.last_seen), (100, 200));
    let fail = Change {
        status: Some(("error".into(), Some(268_435_490))),
        granted: None,
        events: vec![ev(300, 13, 1, None), ev(300, 3, 0, Some(268_435_490))],
    };
    s.record(&contact("m1", "beta", "1.0.0", 300), &fail)
        .unwrap();
    let i = s.instance("m1", KEEL_APP_ID).unwrap().unwrap();
    assert_eq!(
        (i.status.as_str(), i.error_code),
        ("error", Some(268_435_490))
    );
    assert_eq!(s.events("m1", KEEL_APP_ID).unwrap(), fail.events);
    let g = s.group("beta").unwrap().unwrap();
    let counts = s.rollout(&g, "2.0.0", 300).unwrap();
    assert_eq!(
        (counts.granted_in_period, counts.failed, counts.in_progress),
        (1, 1, 0)
    );
    s.record(&contact("m2", "beta", "1.0.0", 310), &grant)
        .unwrap();
    let counts = s.rollout(&g, "2.0.0", 320).unwrap();
    assert_eq!(
        (
            counts.granted_in_period,
            counts.in_progress,
            counts.timed_out
        ),
        (2, 1, 0)
    );
    let counts = s.rollout(&g, "2.0.0", 311 + 3600).unwrap();
    assert_eq!(
        (
            counts.granted_in_period,
            counts.in_progress,
            counts.timed_out
        ),
        (0, 0, 1)
    );
    let done = Change {
        status: Some(("complete".into(), None)),
        ..Default::default()
    };
    s.record(&contact("m3", "beta", "2.0.0", 330), &done)
        .unwrap();
    assert_eq!(s.rollout(&g, "2.0.0", 330).unwrap().completed, 1);

    // Search, hide, retire.
    let ids = |f: InstanceFilter| -> Vec<String> {
        s.search(&f)
            .unwrap()
            .into_iter()
            .map(|i| i.machine_id)
            .collect()
    };
    assert_eq!(ids(InstanceFilter::default()), ["m3", "m2", "m1"]);
    let q = |q: &str| InstanceFilter {
        q: Some(q.into()),
        ..Default::default()
    };
    assert_eq!(ids(q("ALIAS-M2")), ["m2"]);
    assert_eq!(ids(q("100%")), Vec::<String>::new());
    assert_eq!(
        ids(InstanceFilter {
            status: Some("error".into()),
            ..Default::default()
        }),
        ["m1"]
    );
    assert_eq!(
        ids(InstanceFilter {
            seen_before: Some(310),
            ..Default::default()
        }),
        ["m1"]
    );
    assert_eq!(
        ids(InstanceFilter {
            seen_after: Some(310),
            limit: Some(1),
            ..Default::default()
        }),
        ["m3"]
    );
    assert_eq!(s.set_hidden("m2", true).unwrap(), 1);
    assert_eq!(ids(InstanceFilter::default()), ["m3", "m1"]);
    assert_eq!(
        ids(InstanceFilter {
            include_hidden: true,
            ..Default::default()
        }),
        ["m3", "m2", "m1"]
    );
    assert_eq!(s.set_hidden("zz", true).unwrap(), 0);
    assert_eq!(s.retire("m1").unwrap(), 1);
    assert!(s.instance("m1", KEEL_APP_ID).unwrap().is_none());
    assert!(s.events("m1", KEEL_APP_ID).unwrap().is_empty());
    assert_eq!(s.retire("m1").unwrap(), 0);

    // Activity and retention.
    s.log_activity(&Activity {
        at: 5,
        kind: "test".into(),
        subject: "s".into(),
        message: "old".into(),
    })
    .unwrap();
    let recent = s.activity(3).unwrap();
    assert_eq!(recent[0].message, "old", "newest entry first");
    assert!(recent.iter().any(|a| a.message == "retired"));
    let all = s.activity(1000).unwrap();
    assert!(all
        .iter()
        .any(|a| a.message == "test policy" && a.kind == "policy"));
    assert!(all
        .iter()
        .any(|a| a.kind == "instance" && a.message.contains("268435490")));
    s.record(
        &contact("m4", "beta", "1.0.0", 50),
        &Change {
            events: vec![ev(50, 13, 1, None)],
            ..Default::default()
        },
    )
    .unwrap();
    let (instances, events) = s.prune(100).unwrap();
    assert_eq!((instances, events), (1, 1));
    assert!(s.instance("m4", KEEL_APP_ID).unwrap().is_none());
    assert!(!s.activity(1000).unwrap().iter().any(|a| a.message == "old"));
    assert_eq!(s.instances().unwrap().len(), 2);
}

#[test]
fn the_store_suite_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sqlite");
    let s = SqliteStore::open(&path, std::time::Duration::from_secs(1)).unwrap();
    assert_eq!(s.schema_version().unwrap(), 3);
    suite(&s);
    drop(s);
    // Reopening migrates nothing again and keeps the data.
    let s = SqliteStore::open(&path, std::time::Duration::from_secs(1)).unwrap();
    assert_eq!(s.schema_version().unwrap(), 3);
    assert_eq!(s.instances().unwrap().len(), 2);
}

#[test]
fn the_store_suite_on_sqlite_behind_the_batching_layer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sqlite");
    let backend = SqliteStore::open(&path, std::time::Duration::from_secs(1)).unwrap();
    let s = Batched::new(Arc::new(backend));
    suite(&s);
    drop(s);
    let s = SqliteStore::open(&path, std::time::Duration::from_secs(1)).unwrap();
    assert_eq!(s.instances().unwrap().len(), 2);
}

#[test]
fn batched_check_ins_are_read_back_in_order_and_written_when_the_store_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sqlite");
    let open = || SqliteStore::open(&path, std::time::Duration::from_secs(1)).unwrap();
    let s = Batched::new(Arc::new(open()));
    for n in 0..500 {
        s.record(
            &contact(&format!("m{n}"), "stable", "1.0.0", 10),
            &Change::default(),
        )
        .unwrap();
    }
    // A read writes the queue first.
    assert_eq!(s.instances().unwrap().len(), 500);

    // A check-in queued before an event of the same machine never overwrites what the event
    // wrote.
    s.record(&contact("m0", "stable", "1.0.0", 20), &Change::default())
        .unwrap();
    let installed = Change {
        status: Some(("complete".into(), None)),
        events: vec![ev(30, 3, 2, None)],
        granted: None,
    };
    s.record(&contact("m0", "stable", "2.0.0", 30), &installed)
        .unwrap();
    let m0 = s.instance("m0", KEEL_APP_ID).unwrap().unwrap();
    assert_eq!((m0.version.as_str(), m0.last_seen), ("2.0.0", 30), "{m0:?}");

    // Queued check-ins are written when the store goes away (the server's stop).
    for n in 500..800 {
        s.record(
            &contact(&format!("m{n}"), "stable", "1.0.0", 40),
            &Change::default(),
        )
        .unwrap();
    }
    drop(s);
    let raw = open();
    assert_eq!(raw.instances().unwrap().len(), 800);
    assert_eq!(
        raw.instance("m799", KEEL_APP_ID)
            .unwrap()
            .unwrap()
            .last_seen,
        40
    );
}

#[test]
fn the_group_cache_follows_changes_at_once_even_those_of_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sqlite");
    let open = || SqliteStore::open(&path, std::time::Duration::from_secs(1)).unwrap();
    let s = Batched::new(Arc::new(open()));
    assert!(!s.group("stable").unwrap().unwrap().policy.paused);
    let paused = Policy {
        paused: true,
        ..Policy::default()
    };
    s.set_policy("stable", &paused, "test").unwrap();
    assert!(s.group("stable").unwrap().unwrap().policy.paused);

    // Another process (another connection to the same file: `keel serve group resume`)
    // resumes the group; SQLite's data_version tells, with no wait for the TTL.
    let other = open();
    other
        .set_policy("stable", &Policy::default(), "test")
        .unwrap();
    std::thread::sleep(batched::OUTSIDE_CHECK);
    let view = s.in_memory().unwrap();
    assert!(
        matches!(view.group("stable"), Err(StoreError::WouldBlock)),
        "the in-memory view answered from a cache another process made stale"
    );
    assert!(!s.group("stable").unwrap().unwrap().policy.paused);
    let view = s.in_memory().unwrap();
    assert!(!view.group("stable").unwrap().unwrap().policy.paused);

    // The same for a channel's package, published here and by the other process.
    assert!(s.channel_package(KEEL_APP_ID, "beta").unwrap().is_none());
    s.publish(&package("2.0.0", 'a'), "beta").unwrap();
    assert_eq!(
        s.channel_package(KEEL_APP_ID, "beta")
            .unwrap()
            .unwrap()
            .version,
        "2.0.0"
    );
    other.publish(&package("2.0.1", 'b'), "beta").unwrap();
    std::thread::sleep(batched::OUTSIDE_CHECK);
    assert_eq!(
        s.channel_package(KEEL_APP_ID, "beta")
            .unwrap()
            .unwrap()
            .version,
        "2.0.1"
    );
    assert!(batched::CACHE_TTL <= std::time::Duration::from_secs(1));
}

#[test]
fn the_store_suite_on_postgresql() {
    let pg = PgCluster::start();
    let s = PostgresStore::connect(&pg.params()).unwrap();
    assert_eq!(s.schema_version().unwrap(), 3);
    suite(&s);
    drop(s);
    let s = PostgresStore::connect(&pg.params()).unwrap();
    assert_eq!(s.schema_version().unwrap(), 3);
    assert_eq!(s.instances().unwrap().len(), 2);
}

#[test]
fn the_server_on_postgresql_keeps_everything_across_a_restart() {
    let pg = PgCluster::start();
    let mut s = TestServer::start();
    let store: Arc<dyn Store> = Arc::new(Batched::new(Arc::new(
        PostgresStore::connect(&pg.params()).unwrap(),
    )));
    s.stop();
    s.store = store.clone();
    s.server = Some(keel_update_server::server::start_with(&s.config, store).unwrap());
    s.publish("2.0.0", "stable");
    let (status, reply) = s.post(request("1.0.0", "stable", CHECK).as_bytes());
    assert_eq!(status, 200, "{reply}");
    let Outcome::UpdateAvailable(u) = client_outcome_from_body(reply.as_bytes(), KEEL_APP_ID)
    else {
        panic!("{reply}")
    };
    let (status, body, _) = get(&u.url, Some("bytes=4096-"));
    assert_eq!((status, body.len() as u64), (206, u.size - 4096));
    for e in [event(13, 1, ""), event(14, 1, "")] {
        assert_eq!(s.post(request("1.0.0", "stable", &e).as_bytes()).0, 200);
    }
    let bad = request("1.0.0", "nightly", CHECK);
    assert_eq!(s.post(bad.as_bytes()).0, 400);

    // A new process: a new connection, the same data.
    s.stop();
    let store: Arc<dyn Store> = Arc::new(Batched::new(Arc::new(
        PostgresStore::connect(&pg.params()).unwrap(),
    )));
    s.store = store.clone();
    s.server = Some(keel_update_server::server::start_with(&s.config, store).unwrap());
    let i = s.store.instance(MACHINE, KEEL_APP_ID).unwrap().unwrap();
    assert_eq!(i.status, "downloaded");
    assert_eq!(s.store.events(MACHINE, KEEL_APP_ID).unwrap().len(), 2);
    assert_eq!(s.store.instances().unwrap().len(), 1);

    // The database goes away: 503, and the server keeps running.
    drop(pg);
    let (status, reply) = s.post(request("1.0.0", "stable", CHECK).as_bytes());
    assert_eq!(status, 503, "{reply}");
    assert!(reply.contains("database unavailable"), "{reply}");
}
