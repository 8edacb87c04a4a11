//! Every request fixture in `shared/conformance/omaha/` (read in place, never copied) sent to a
//! running server over HTTP: Flatcar's and Keel's are answered 200 with a document
//! update_engine accepts and their events recorded; other applications' get 400; the 95 KB
//! Nebraska body gets 400; Nebraska's API-test template, filled in, gets an update.

mod common;

use std::path::PathBuf;

use common::*;
use keel_omaha::{client_outcome, parse_request, parse_response, Outcome, KEEL_APP_ID};

fn fixtures() -> PathBuf {
    keel_testkit::conformance::dir("omaha", "INDEX.tsv")
}

/// What the server must do with a fixture.
enum Want {
    /// 200; afterwards the instance `machine` has `status` (None: no instance recorded).
    Ok(Option<(&'static str, &'static str, Option<i64>)>),
    /// 400 with this text in the reason.
    Refused(&'static str),
}

fn want(name: &str) -> Want {
    use Want::*;
    const UNKNOWN: Want = Refused("unknown application id");
    match &name[..5] {
        "req01" => Ok(Some((
            "68cf162f8fc8467ca7d8337464c863d1",
            "downloaded",
            None,
        ))),
        "req02" => Ok(Some(("68cf162f8fc8467ca7d8337464c863d1", "error", Some(5)))),
        "req03" => Ok(Some((
            "abce671d61774703ac7be60715220bfe",
            "installed",
            None,
        ))),
        // 3/2 with an empty previousversion is a first boot: recorded, no status change.
        "req07" => Ok(Some(("fake-machine-018", "new", None))),
        // No machineid: answered, nothing to record.
        "req08" => Ok(None),
        // ChromeOS, Google Omaha and go-omaha application ids.
        "req04" | "req05" | "req06" | "req09" | "req10" | "req13" | "req14" | "req15" | "req16"
        | "req17" => UNKNOWN,
        // The template as stored: its appid is the literal "%s".
        "req11" => UNKNOWN,
        "req12" => Refused("over the 65536-byte limit"),
        _ => panic!("{name}: a fixture this test does not know; classify it"),
    }
}

fn flatcar_app(id: &str) -> String {
    keel_update_server::protocol::bare_appid(id)
}

/// The answer must be one update_engine accepts: each app we know answered with update or
/// noupdate when it asked, and one ack per event.
fn check_answer(name: &str, request: &[u8], reply: &str) {
    let req = parse_request(request).unwrap();
    let resp = parse_response(reply.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}: {reply}"));
    for app in &req.apps {
        let got = resp
            .apps
            .iter()
            .find(|a| flatcar_app(&a.appid) == flatcar_app(&app.appid))
            .unwrap_or_else(|| panic!("{name}: no answer for app {}", app.appid));
        assert_eq!(got.status.as_deref(), Some("ok"), "{name}: {reply}");
        assert_eq!(got.events.len(), app.events.len(), "{name}: event acks");
        assert_eq!(got.ping.is_some(), app.ping.is_some(), "{name}: ping ack");
        if app.updatecheck.is_some() {
            let outcome = client_outcome(&resp, &app.appid);
            assert!(
                matches!(
                    outcome,
                    Outcome::UpdateAvailable(_) | Outcome::NoUpdate { .. }
                ),
                "{name}: update_engine verdict {outcome:?} on {reply}"
            );
        } else {
            assert!(
                got.updatecheck.is_none(),
                "{name}: updatecheck not asked for"
            );
        }
    }
}

#[test]
fn every_request_fixture_is_answered_as_indexed() {
    let s = TestServer::start();
    s.publish("1.0.0", "stable");
    let dir = fixtures();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("req") && n.ends_with(".xml"))
        .collect();
    names.sort();
    assert!(
        names.len() >= 17,
        "only {} request fixtures in {}",
        names.len(),
        dir.display()
    );
    let index = std::fs::read_to_string(dir.join("INDEX.tsv")).unwrap();
    for name in &names {
        assert!(index.contains(name.as_str()), "{name} is not in INDEX.tsv");
        let body = std::fs::read(dir.join(name)).unwrap();
        let (status, reply) = s.post(&body);
        match want(name) {
            Want::Refused(reason) => {
                assert_eq!(status, 400, "{name}: {reply}");
                assert!(
                    reply.contains(reason),
                    "{name}: want {reason:?} in {reply:?}"
                );
            }
            Want::Ok(instance) => {
                assert_eq!(status, 200, "{name}: {reply}");
                check_answer(name, &body, &reply);
                if let Some((machine, status, code)) = instance {
                    let i = s
                        .store
                        .instance(machine, keel_omaha::FLATCAR_APP_ID)
                        .unwrap()
                        .unwrap_or_else(|| panic!("{name}: instance {machine} not recorded"));
                    assert_eq!((i.status.as_str(), i.error_code), (status, code), "{name}");
                }
            }
        }
    }
    // Refused requests left nothing: only the five Flatcar machines' requests were recorded,
    // and req08 has no machine id.
    let instances = s.store.instances().unwrap();
    assert_eq!(instances.len(), 3, "{instances:?}");
    assert!(instances
        .iter()
        .all(|i| i.app_id == keel_omaha::FLATCAR_APP_ID));

    // Nebraska's API test, filled in as its test fills it: Keel's app id, an existing group,
    // a fresh machine id. Answered with an update, the instance registered.
    let template =
        std::fs::read_to_string(dir.join("req11_nebraska_api_test_template.xml")).unwrap();
    let machine = "0b7a1f7e-3c1d-4d5e-9f00-1234567890ab";
    // The header comment mentions "%s" too: fill the three in the document only.
    let at = template.find("<request").unwrap();
    let (head, mut doc) = (&template[..at], template[at..].to_owned());
    assert_eq!(doc.matches("%s").count(), 3);
    for value in [KEEL_APP_ID, "stable", machine] {
        doc = doc.replacen("%s", value, 1);
    }
    let filled = format!("{head}{doc}");
    let (status, reply) = s.post(filled.as_bytes());
    assert_eq!(status, 200, "{reply}");
    check_answer("req11 filled", filled.as_bytes(), &reply);
    let resp = parse_response(reply.as_bytes()).unwrap();
    assert!(
        matches!(
            client_outcome(&resp, KEEL_APP_ID),
            Outcome::UpdateAvailable(_)
        ),
        "{reply}"
    );
    let i = s.store.instance(machine, KEEL_APP_ID).unwrap().unwrap();
    assert_eq!(
        (i.version.as_str(), i.status.as_str()),
        ("0.0.0", "granted")
    );
}
