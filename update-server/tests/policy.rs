//! Rollout policy over HTTP: updates per period, a machine mid-update, the update timeout,
//! pause/resume, safe mode pausing a group by itself, office hours in a time zone.

mod common;

use common::*;
use keel_omaha::{client_outcome_from_body, Outcome, KEEL_APP_ID};
use keel_update_server::policy::in_office_hours;
use keel_update_server::store::Policy;

fn check(s: &TestServer, machine: &str, group: &str, body: &str) -> bool {
    let req = request("1.0.0", group, body).replace(MACHINE, machine);
    let (status, reply) = s.post(req.as_bytes());
    assert_eq!(status, 200, "{reply}");
    match client_outcome_from_body(reply.as_bytes(), KEEL_APP_ID) {
        Outcome::UpdateAvailable(_) => true,
        Outcome::NoUpdate { .. } => false,
        other => panic!("{other:?}: {reply}"),
    }
}

/// An event-only report; the answer is an acknowledgement.
fn report(s: &TestServer, machine: &str, group: &str, event: &str) {
    let req = request("1.0.0", group, event).replace(MACHINE, machine);
    let (status, reply) = s.post(req.as_bytes());
    assert_eq!(status, 200, "{reply}");
    assert!(reply.contains(r#"<event status="ok"/>"#), "{reply}");
}

fn set(s: &TestServer, group: &str, f: impl FnOnce(&mut Policy)) {
    let mut p = s.store.group(group).unwrap().unwrap().policy;
    f(&mut p);
    s.store.set_policy(group, &p, "test").unwrap();
}

#[test]
fn at_most_n_per_period_and_none_twice_mid_update() {
    let s = TestServer::start();
    s.publish("2.0.0", "beta");
    set(&s, "beta", |p| p.max_updates_per_period = Some(2));
    assert!(check(&s, "m1", "beta", CHECK));
    // Asking again before starting: the same grant.
    assert!(check(&s, "m1", "beta", CHECK));
    assert!(check(&s, "m2", "beta", CHECK));
    assert!(
        !check(&s, "m3", "beta", CHECK),
        "third machine in the period"
    );
    // m1 downloading: not granted again while it is.
    assert!(!check(
        &s,
        "m1",
        "beta",
        &format!("{CHECK}{}", event(13, 1, ""))
    ));
    assert_eq!(
        s.store.instance("m1", KEEL_APP_ID).unwrap().unwrap().status,
        "downloading"
    );
    // No limit: everyone.
    set(&s, "beta", |p| p.max_updates_per_period = None);
    assert!(check(&s, "m3", "beta", CHECK));
}

#[test]
fn an_update_not_completed_in_time_times_out_and_may_be_granted_again() {
    let s = TestServer::start();
    s.publish("2.0.0", "beta");
    set(&s, "beta", |p| {
        p.update_timeout_seconds = 1;
        p.max_updates_per_period = Some(5);
    });
    assert!(check(&s, "m1", "beta", CHECK));
    report(&s, "m1", "beta", &event(13, 1, ""));
    assert!(!check(&s, "m1", "beta", CHECK));
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let g = s.store.group("beta").unwrap().unwrap();
    let now = keel_update_server::clock::now();
    let counts = s.store.rollout(&g, "2.0.0", now).unwrap();
    assert_eq!((counts.timed_out, counts.in_progress), (1, 0), "{counts:?}");
    assert!(check(&s, "m1", "beta", CHECK), "timed out: granted again");
}

#[test]
fn pause_and_resume() {
    let s = TestServer::start();
    s.publish("2.0.0", "stable");
    set(&s, "stable", |p| p.paused = true);
    assert!(!check(&s, "m1", "stable", CHECK));
    set(&s, "stable", |p| p.paused = false);
    assert!(check(&s, "m1", "stable", CHECK));
}

#[test]
fn safe_mode_pauses_the_group_after_n_failures_on_the_new_version() {
    let s = TestServer::start();
    s.publish("2.0.0", "beta");
    set(&s, "beta", |p| {
        p.safe_mode = true;
        p.safe_mode_failures = 2;
        p.period_seconds = 1;
    });
    // Nobody has 2.0.0 yet: one machine at a time.
    assert!(check(&s, "m1", "beta", CHECK));
    assert!(!check(&s, "m2", "beta", CHECK));
    report(&s, "m1", "beta", &event(3, 0, r#"errorcode="44""#));
    assert!(
        !s.store.group("beta").unwrap().unwrap().policy.paused,
        "one failure of two"
    );
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert!(
        check(&s, "m2", "beta", CHECK),
        "next period: the next machine"
    );
    report(&s, "m2", "beta", &event(3, 0, r#"errorcode="10""#));
    let g = s.store.group("beta").unwrap().unwrap();
    assert!(
        g.policy.paused,
        "second failure: safe mode pauses the group"
    );
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert!(!check(&s, "m3", "beta", CHECK), "paused");
    let activity = s.store.activity(10).unwrap();
    assert!(
        activity[0]
            .message
            .contains("safe mode: paused after 2 machines failed to update to 2.0.0"),
        "{activity:?}"
    );
    // An operator resumes it.
    set(&s, "beta", |p| p.paused = false);
    assert!(check(&s, "m3", "beta", CHECK));
}

#[test]
fn office_hours_in_the_group_time_zone() {
    let s = TestServer::start();
    s.publish("2.0.0", "stable");
    let now = keel_update_server::clock::now();
    let zones = [
        "UTC",
        "Europe/Berlin",
        "America/New_York",
        "America/Los_Angeles",
        "Asia/Tokyo",
        "Asia/Kolkata",
        "Australia/Sydney",
        "Pacific/Honolulu",
        "Pacific/Kiritimati",
        "America/Sao_Paulo",
        "Asia/Dubai",
    ];
    let (inside, outside): (Vec<&str>, Vec<&str>) =
        zones.iter().partition(|z| in_office_hours(now, z).unwrap());
    // At any moment most of these zones are outside 09-17 Monday to Friday.
    let closed = outside.first().expect("a zone outside office hours");
    set(&s, "stable", |p| {
        p.office_hours = true;
        p.timezone = closed.to_string();
    });
    assert!(
        !check(&s, "m1", "stable", CHECK),
        "{closed} is outside office hours"
    );
    if let Some(open) = inside.first() {
        set(&s, "stable", |p| p.timezone = open.to_string());
        assert!(
            check(&s, "m1", "stable", CHECK),
            "{open} is inside office hours"
        );
    }
}
