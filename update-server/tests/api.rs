//! The JSON API: the bearer token, groups, channels, packages, instance search, history,
//! hiding and retiring, activity, bad input; and the retention period.

mod common;

use common::*;
use keel_update_server::store::{Change, Contact, InstanceFilter};
use serde_json::{json, Value};

const TOKEN: &str = "s3cret-token";

fn call(s: &TestServer, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
    call_as(s, method, path, body, Some(TOKEN))
}

fn call_as(
    s: &TestServer,
    method: &str,
    path: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> (u16, String) {
    let url = s.url(path);
    let auth = token.map(|t| format!("Bearer {t}"));
    let a = agent();
    let mut r = match (method, body) {
        ("GET", _) | ("DELETE", None) => {
            let mut b = if method == "GET" {
                a.get(&url)
            } else {
                a.delete(&url)
            };
            if let Some(h) = &auth {
                b = b.header("Authorization", h);
            }
            b.call().unwrap()
        }
        (m, body) => {
            let mut b = match m {
                "POST" => a.post(&url),
                "PATCH" => a.patch(&url),
                other => panic!("{other}"),
            };
            if let Some(h) = &auth {
                b = b.header("Authorization", h);
            }
            b.content_type("application/json")
                .send(body.map(|v| v.to_string()).unwrap_or_default())
                .unwrap()
        }
    };
    let status = r.status().as_u16();
    (status, r.body_mut().read_to_string().unwrap())
}

fn json_of(s: &TestServer, path: &str) -> Value {
    let (status, body) = call(s, "GET", path, None);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn machine_request(machine: &str, alias: &str, version: &str, group: &str, body: &str) -> String {
    request(version, group, body)
        .replace(MACHINE, machine)
        .replace("web-1", alias)
}

#[test]
fn the_token_guards_the_api_and_not_omaha() {
    let s = TestServer::start_with(&format!("api_token: {TOKEN}\n"));
    assert_eq!(call_as(&s, "GET", "/api/groups", None, None).0, 401);
    assert_eq!(
        call_as(&s, "GET", "/api/groups", None, Some("wrong")).0,
        401
    );
    assert_eq!(
        call_as(&s, "GET", "/api/groups", None, Some("s3cret-toke")).0,
        401
    );
    assert_eq!(
        call_as(
            &s,
            "POST",
            "/api/groups",
            Some(json!({"name":"x","channel":"alpha"})),
            None
        )
        .0,
        401
    );
    assert!(s.store.group("x").unwrap().is_none());
    assert_eq!(s.post(request("1.0.0", "stable", CHECK).as_bytes()).0, 200);
    let groups = json_of(&s, "/api/groups");
    let names: Vec<&str> = groups
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "beta", "stable"]);
    assert_eq!(groups[0]["allow_downgrade"], false);

    let off = TestServer::start();
    let (status, body) = call(&off, "GET", "/api/groups", None);
    assert_eq!(status, 403);
    assert!(body.contains("no api_token"), "{body}");
}

#[test]
fn groups_channels_and_packages() {
    let s = TestServer::start_with(&format!("api_token: {TOKEN}\n"));
    s.publish("2.0.0", "alpha");
    let (st, body) = call(&s, "POST", "/api/channels", Some(json!({"name": "lts"})));
    assert_eq!(st, 201, "{body}");
    let (st, body) = call(
        &s,
        "POST",
        "/api/groups",
        Some(json!({"name": "canary", "channel": "lts"})),
    );
    assert_eq!(st, 201, "{body}");
    let (st, body) = call(
        &s,
        "POST",
        "/api/groups",
        Some(json!({"name": "canary", "channel": "lts"})),
    );
    assert_eq!(st, 409, "{body}");
    let (st, body) = call(
        &s,
        "POST",
        "/api/groups",
        Some(json!({"name": "x", "channel": "nope"})),
    );
    assert_eq!(
        (st, body.contains("channel nope not found")),
        (404, true),
        "{body}"
    );
    let (st, body) = call(
        &s,
        "POST",
        "/api/groups",
        Some(json!({"name": "bad name", "channel": "lts"})),
    );
    assert_eq!(st, 400, "{body}");
    let (st, body) = call(&s, "POST", "/api/groups", Some(json!({"name": "y"})));
    assert_eq!((st, body.contains("channel")), (400, true), "{body}");
    let (st, _) = call(
        &s,
        "PATCH",
        "/api/groups/canary",
        Some(json!({"allow_downgrade": true})),
    );
    assert_eq!(st, 200);
    assert!(s.store.group("canary").unwrap().unwrap().allow_downgrade);
    let (st, _) = call(
        &s,
        "PATCH",
        "/api/groups/nope",
        Some(json!({"allow_downgrade": true})),
    );
    assert_eq!(st, 404);
    let (st, body) = call(
        &s,
        "POST",
        "/api/channels/lts/promote",
        Some(json!({"from": "alpha"})),
    );
    assert_eq!(st, 200, "{body}");
    let channels = json_of(&s, "/api/channels");
    let lts = channels
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "lts")
        .unwrap();
    assert_eq!(lts["packages"][0]["version"], "2.0.0");
    let packages = json_of(&s, "/api/packages");
    assert_eq!(packages.as_array().unwrap().len(), 1);
    assert_eq!(packages[0]["size"].as_u64().unwrap() % 4096, 0);
    let activity = json_of(&s, "/api/activity?limit=5");
    let kinds: Vec<&str> = activity
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["promote", "group", "group", "channel", "publish"]);
    assert_eq!(call(&s, "GET", "/api/nothing", None).0, 404);

    // Rollout policy: checked whole before anything changes.
    let bad = json!({"allow_downgrade": false, "policy": {"timezone": "Mars/Olympus"}});
    let (st, body) = call(&s, "PATCH", "/api/groups/canary", Some(bad));
    assert_eq!((st, body.contains("Mars/Olympus")), (400, true), "{body}");
    assert!(s.store.group("canary").unwrap().unwrap().allow_downgrade);
    let bad = json!({"policy": {"max_updates": 3}});
    assert_eq!(call(&s, "PATCH", "/api/groups/canary", Some(bad)).0, 400);
    let bad = json!({"policy": {"period_seconds": 0}});
    assert_eq!(call(&s, "PATCH", "/api/groups/canary", Some(bad)).0, 400);
    let good = json!({"policy": {"max_updates_per_period": 3, "timezone": "Europe/Berlin", "office_hours": true}});
    let (st, body) = call(&s, "PATCH", "/api/groups/canary", Some(good));
    assert_eq!(st, 200, "{body}");
    let g = s.store.group("canary").unwrap().unwrap();
    assert_eq!(g.policy.max_updates_per_period, Some(3));
    assert_eq!(g.policy.timezone, "Europe/Berlin");
    assert_eq!(
        g.policy.period_seconds, 3600,
        "untouched fields keep their values"
    );
    let (st, body) = call(&s, "POST", "/api/groups/canary/pause", None);
    assert_eq!(st, 200, "{body}");
    assert!(s.store.group("canary").unwrap().unwrap().policy.paused);
    let rollout = json_of(&s, "/api/groups/canary/rollout");
    assert_eq!(rollout["version"], "2.0.0");
    assert_eq!(rollout["rollout"]["granted_in_period"], 0);
    assert_eq!(call(&s, "POST", "/api/groups/canary/resume", None).0, 200);
    assert!(!s.store.group("canary").unwrap().unwrap().policy.paused);
    let activity = json_of(&s, "/api/activity?limit=3");
    let messages: Vec<&str> = activity
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages[..2], ["resumed", "paused"]);
    assert_eq!(call(&s, "GET", "/api/activity?limit=x", None).0, 400);
}

#[test]
fn instances_search_history_hide_and_retire() {
    let s = TestServer::start_with(&format!("api_token: {TOKEN}\n"));
    s.publish("2.0.0", "beta");
    let machines = [
        ("aaaa0001", "web-1", "beta"),
        ("aaaa0002", "web-2", "beta"),
        ("bbbb0003", "db-1", "stable"),
    ];
    for (m, alias, group) in machines {
        let body = machine_request(m, alias, "1.0.0", group, CHECK);
        assert_eq!(s.post(body.as_bytes()).0, 200);
    }
    let body = machine_request(
        "aaaa0001",
        "web-1",
        "1.0.0",
        "beta",
        &event(3, 0, r#"errorcode="10""#),
    );
    assert_eq!(s.post(body.as_bytes()).0, 200);

    let ids = |v: Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|i| i["machine_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let mut all = ids(json_of(&s, "/api/instances"));
    all.sort();
    assert_eq!(all, ["aaaa0001", "aaaa0002", "bbbb0003"]);
    assert_eq!(ids(json_of(&s, "/api/instances?q=WEB")).len(), 2);
    assert_eq!(ids(json_of(&s, "/api/instances?q=db-1")), ["bbbb0003"]);
    assert_eq!(
        ids(json_of(&s, "/api/instances?group=stable")),
        ["bbbb0003"]
    );
    assert_eq!(
        ids(json_of(&s, "/api/instances?status=error")),
        ["aaaa0001"]
    );
    assert_eq!(
        ids(json_of(&s, "/api/instances?status=granted&group=beta")),
        ["aaaa0002"]
    );
    assert!(ids(json_of(&s, "/api/instances?seen_before=1000")).is_empty());
    assert_eq!(ids(json_of(&s, "/api/instances?seen_after=1000")).len(), 3);
    assert_eq!(call(&s, "GET", "/api/instances?colour=red", None).0, 400);
    assert_eq!(
        call(&s, "GET", "/api/instances?seen_before=yesterday", None).0,
        400
    );

    let one = json_of(&s, "/api/instances/aaaa0001");
    assert_eq!(one[0]["instance"]["error_code"], 10);
    assert_eq!(one[0]["events"][0]["event_type"], 3);
    assert_eq!(call(&s, "GET", "/api/instances/zzzz", None).0, 404);

    assert_eq!(
        call(&s, "POST", "/api/instances/aaaa0002/hide", None).0,
        200
    );
    assert_eq!(ids(json_of(&s, "/api/instances?q=web")), ["aaaa0001"]);
    assert_eq!(
        ids(json_of(&s, "/api/instances?q=web&include_hidden=1")).len(),
        2
    );
    // Hidden stays hidden when the machine checks in again.
    let body = machine_request("aaaa0002", "web-2", "1.0.0", "beta", CHECK);
    assert_eq!(s.post(body.as_bytes()).0, 200);
    assert_eq!(ids(json_of(&s, "/api/instances?q=web")), ["aaaa0001"]);
    assert_eq!(
        call(&s, "POST", "/api/instances/aaaa0002/show", None).0,
        200
    );
    assert_eq!(ids(json_of(&s, "/api/instances?q=web")).len(), 2);

    assert_eq!(call(&s, "DELETE", "/api/instances/aaaa0001", None).0, 200);
    assert!(s
        .store
        .instance("aaaa0001", keel_omaha::KEEL_APP_ID)
        .unwrap()
        .is_none());
    assert!(s
        .store
        .events("aaaa0001", keel_omaha::KEEL_APP_ID)
        .unwrap()
        .is_empty());
    assert_eq!(call(&s, "DELETE", "/api/instances/aaaa0001", None).0, 404);
    let activity = json_of(&s, "/api/activity?limit=3");
    let messages: Vec<&str> = activity
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, ["retired", "shown", "hidden"]);
}

#[test]
fn the_retention_period_forgets_old_machines_at_start() {
    let mut s = TestServer::start_with("retention_days: 30\n");
    let now = keel_update_server::clock::now();
    for (m, days) in [("old", 40), ("recent", 2)] {
        let at = now - days * 86_400;
        let contact = Contact {
            machine_id: m.into(),
            app_id: keel_omaha::KEEL_APP_ID.into(),
            alias: None,
            group: "stable".into(),
            version: "1.0.0".into(),
            at,
        };
        s.store.record(&contact, &Change::default()).unwrap();
    }
    s.restart();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let left: Vec<String> = s
            .store
            .search(&InstanceFilter {
                include_hidden: true,
                ..Default::default()
            })
            .unwrap()
            .into_iter()
            .map(|i| i.machine_id)
            .collect();
        if left == ["recent"] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still there: {left:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
