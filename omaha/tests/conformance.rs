//! Every row of `shared/conformance/omaha/INDEX.tsv`, read in place: each request parses as
//! the row's expected column describes (or is refused as too large), each response gets
//! update_engine's outcome from that column, and everything that parses survives a
//! write → parse round trip unchanged.

use std::fmt::Write as _;
use std::path::PathBuf;

use keel_omaha::*;

const UE_APPID: &str = "{e96281a6-d1af-4bde-9a0a-97b76e56dc57}";
const CHROMEOS_APPID: &str = "{87efface-864d-49a5-9bb3-4b050a7c227a}";

fn fixtures() -> PathBuf {
    keel_testkit::conformance::dir("omaha", "INDEX.tsv")
}

type Check = Result<String, String>;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

macro_rules! same {
    ($got:expr, $want:expr) => {{
        let (got, want) = (&$got, &$want);
        if got != want {
            return Err(format!(
                "{}: got {:?}, want {:?}",
                stringify!($got),
                got,
                want
            ));
        }
    }};
}

fn one_app(r: &Request) -> Result<&App, String> {
    ensure!(r.apps.len() == 1, "{} apps, want 1", r.apps.len());
    Ok(&r.apps[0])
}

fn only_event(app: &App, ty: u32, result: u32) -> Result<&Event, String> {
    ensure!(app.events.len() == 1, "{} events, want 1", app.events.len());
    let e = &app.events[0];
    same!((e.event_type, e.event_result), (ty, result));
    Ok(e)
}

/// An event-only request: no ping, no updatecheck.
fn event_only(r: &Request, ty: u32, result: u32) -> Result<&Event, String> {
    let app = one_app(r)?;
    ensure!(
        app.ping.is_none() && app.updatecheck.is_none(),
        "has ping or updatecheck"
    );
    only_event(app, ty, result)
}

fn check_request(file: &str, r: &Request) -> Check {
    let name = &file[..5];
    match name {
        "req01" => {
            let e = event_only(r, 14, 1)?;
            same!(e.error_code, None);
            let app = one_app(r)?;
            same!(
                app.machineid.as_deref(),
                Some("68cf162f8fc8467ca7d8337464c863d1")
            );
            same!(app.alias.as_deref(), Some(""));
            same!(
                r.os.as_ref().and_then(|o| o.sp.as_deref()),
                Some("2905.2.3_x86_64")
            );
            Ok("event 14/1".into())
        }
        "req02" => {
            let e = event_only(r, 3, 0)?;
            same!(e.error_code, Some(5));
            Ok("event 3/0 errorcode 5".into())
        }
        "req03" => {
            let app = one_app(r)?;
            same!(app.ping.as_ref().and_then(|p| p.active), Some(1));
            ensure!(app.updatecheck.is_some(), "no updatecheck");
            only_event(app, 3, 1)?;
            same!(app.appid, FLATCAR_APP_ID);
            same!(app.version.as_deref(), Some("1.2.3"));
            same!(app.track.as_deref(), Some("alpha"));
            same!(app.board.as_deref(), Some("amd64-usr"));
            same!(app.oem.as_deref(), Some("ami"));
            Ok("ping + updatecheck + event 3/1, track alpha".into())
        }
        "req04" | "req05" => {
            same!(
                r.os.as_ref().and_then(|o| o.version.as_deref()),
                Some("Indy")
            );
            let app = one_app(r)?;
            same!(app.appid, CHROMEOS_APPID);
            ensure!(
                app.bootid
                    .as_deref()
                    .is_some_and(|b| b.starts_with("{7D52A1CC-")),
                "bootid"
            );
            ensure!(
                app.machineid
                    .as_deref()
                    .is_some_and(|m| m.starts_with("{8BDE4C4D-")),
                "machineid"
            );
            same!(app.oem.as_deref(), Some("ec3000"));
            same!(app.version.as_deref(), Some("ForcedUpdate"));
            same!(app.track.as_deref(), Some("dev-channel"));
            same!(
                app.extra.get("from_track").map(String::as_str),
                Some("developer-build")
            );
            ensure!(app.updatecheck.is_some(), "no updatecheck");
            only_event(app, 3, 2)?;
            let ping = app.ping.as_ref().ok_or("no ping")?;
            same!((ping.a, ping.r), (Some(-1), Some(-1)));
            if name == "req05" {
                same!(app.alias.as_deref(), Some("mymachine"));
                return Ok("updatecheck + event 3/2, machinealias mymachine".into());
            }
            Ok("updatecheck + event 3/2, ping a=-1 r=-1".into())
        }
        "req06" => {
            event_only(r, 3, 1)?;
            same!(one_app(r)?.track.as_deref(), Some(""));
            Ok("event 3/1, empty track".into())
        }
        "req07" => {
            let e = event_only(r, 3, 2)?;
            same!(e.previous_version.as_deref(), Some(""));
            same!(one_app(r)?.oem.as_deref(), Some("diskless"));
            same!(r.version.as_deref(), Some("CoreOSUpdateEngine-0.1.0.0"));
            same!(r.install_source.as_deref(), Some("scheduler"));
            Ok("event 3/2 previousversion='' (a syncer-looking client)".into())
        }
        "req08" => {
            event_only(r, 3, 2)?;
            ensure!(r.os.is_none() && r.version.is_none(), "has os or version");
            Ok("minimal: event 3/2, no <os>".into())
        }
        "req09" => {
            same!(r.apps.len(), 2);
            for app in &r.apps {
                ensure!(
                    app.updatecheck.is_some(),
                    "{} has no updatecheck",
                    app.appid
                );
                same!(app.ping.as_ref().and_then(|p| p.r), Some(1));
            }
            let os = r.os.as_ref().ok_or("no os")?;
            same!(
                (os.platform.as_deref(), os.arch.as_deref()),
                (Some("win"), Some("x64"))
            );
            Ok("2 apps, updatecheck + ping r=1 each".into())
        }
        "req10" => {
            let app = one_app(r)?;
            let e = only_event(app, 1, 0)?;
            same!(e.error_code, None);
            Ok("event 1/0 without errorcode".into())
        }
        "req11" => {
            // As stored: the placeholders are values like any other.
            same!(one_app(r)?.appid, "%s");
            Ok("template parses as is".into())
        }
        "req13" | "req14" => {
            let app = one_app(r)?;
            ensure!(app.updatecheck.is_some(), "no updatecheck");
            let ping = app.ping.as_ref().ok_or("no ping")?;
            let want = if name == "req13" {
                (Some(1), Some(3), Some(3))
            } else {
                (Some(1), Some(-1), Some(-1))
            };
            same!((ping.active, ping.a, ping.r), want);
            Ok(format!("updatecheck + ping a={:?}", ping.a.unwrap()))
        }
        "req15" => event_only(r, 13, 1).map(|_| "event 13/1".into()),
        "req16" => event_only(r, 14, 1).map(|_| "event 14/1".into()),
        "req17" => event_only(r, 3, 1).map(|_| "event 3/1".into()),
        _ => Err("no expectation written for this row".into()),
    }
}

/// Nebraska's test fills the three `%s` with an app id, a track and a machine id.
fn check_filled_template(body: &[u8]) -> Check {
    // The header comment names the placeholders too: fill those of the body only.
    let text = std::str::from_utf8(body).unwrap();
    let start = text.find("<request").ok_or("no <request>")?;
    let filled = text[start..]
        .replacen("%s", KEEL_APP_ID, 1)
        .replacen("%s", "beta", 1)
        .replacen("%s", "2b0d6c3b-4d45-4b0f-8a61-3f2f2c7ea4d1", 1);
    let r = parse_request(filled.as_bytes()).map_err(|e| e.to_string())?;
    let app = one_app(&r)?;
    same!(app.appid, KEEL_APP_ID);
    same!(app.track.as_deref(), Some("beta"));
    same!(
        app.machineid.as_deref(),
        Some("2b0d6c3b-4d45-4b0f-8a61-3f2f2c7ea4d1")
    );
    let ping = app.ping.as_ref().ok_or("no ping")?;
    same!(
        (ping.r, ping.extra.get("status").map(String::as_str)),
        (Some(1), Some("1"))
    );
    ensure!(app.updatecheck.is_some(), "no updatecheck");
    only_event(app, 3, 1)?;
    Ok("filled: ping r=1 + updatecheck + event 3/1".into())
}

struct Want {
    url: &'static str,
    size: u64,
    sha256: &'static str,
    version: Option<&'static str>,
}

fn update(o: &Outcome, w: Want) -> Check {
    let Outcome::UpdateAvailable(u) = o else {
        return Err(format!("outcome {o:?}, want an update"));
    };
    same!(u.url, w.url);
    same!(u.size, w.size);
    same!(u.sha256, w.sha256);
    if let Some(v) = w.version {
        same!(u.version, v);
    }
    Ok(format!("update {} ({} bytes)", u.version, u.size))
}

fn code(o: &Outcome, want: u32) -> Check {
    same!(*o, Outcome::Error(ActionCode(want)));
    Ok(format!("error {want}"))
}

fn noupdate(o: &Outcome) -> Check {
    ensure!(
        matches!(o, Outcome::NoUpdate { .. }),
        "outcome {o:?}, want noupdate"
    );
    Ok("noupdate".into())
}

/// An event acknowledgement: update_engine counts any HTTP 200 as success; the body parses
/// and acks nothing as an error.
fn event_ack(r: &Result<Response, Error>) -> Check {
    let r = r.as_ref().map_err(|e| e.to_string())?;
    for app in &r.apps {
        ensure!(app.updatecheck.is_none(), "an ack with an updatecheck");
        for e in &app.events {
            same!(e.status.as_deref(), Some("ok"));
        }
    }
    Ok("event ack".into())
}

fn check_response(file: &str, body: &[u8]) -> Check {
    let name = &file[..6];
    let appid = match name {
        "resp10" | "resp12" | "resp14" | "resp28" | "resp29" | "resp30" => CHROMEOS_APPID,
        _ => UE_APPID,
    };
    let o = client_outcome_from_body(body, appid);
    let parsed = parse_response(body);
    let w = |url, size, sha256, version| Want {
        url,
        size,
        sha256,
        version: Some(version),
    };
    match name {
        "resp01" => {
            let s = update(&o, w("https://update.release.flatcar-linux.net/amd64-usr/3732.0.0/flatcar_production_update.gz", 382137917, "stLG3U/o4Ar8TMHFwT/RWB0iNkaWOO6QtLrq6+AHBbA=", "3732.0.0"))?;
            let Outcome::UpdateAvailable(u) = &o else {
                unreachable!()
            };
            ensure!(u.disable_payload_backoff, "DisablePayloadBackoff not read");
            let r = parsed.map_err(|e| e.to_string())?;
            let m = &r.apps[0].updatecheck.as_ref().unwrap().manifests[0];
            same!(m.packages.len(), 3);
            same!(
                m.packages[1].hash_sha256.as_deref(),
                Some("3aed3129de50b959a97e4913ba485bd60e72d2bb6aa377d5ed404103f0680043")
            );
            same!(m.packages[2].required, Some(false));
            Ok(s + ", 2 extra packages kept")
        }
        "resp02" => {
            let s = update(&o, w("https://update.release.flatcar-linux.net/amd64-usr/flatcar_production_update.gz", 536373876, "sha256_1_5_0", "1.5.0"))?;
            let r = parsed.map_err(|e| e.to_string())?;
            let ms = &r.apps[0].updatecheck.as_ref().unwrap().manifests;
            let v: Vec<_> = ms
                .iter()
                .map(|m| {
                    (
                        m.version.as_str(),
                        m.extra.get("is_floor").map(String::as_str),
                        m.extra.get("floor_reason").map(String::as_str),
                        m.extra.get("is_target").map(String::as_str),
                    )
                })
                .collect();
            same!(
                v,
                vec![
                    (
                        "1.5.0",
                        Some("true"),
                        Some("Required for partition migration"),
                        None
                    ),
                    (
                        "2.0.0",
                        Some("true"),
                        Some("Bootloader update required"),
                        None
                    ),
                    ("4.0.0", None, None, Some("true")),
                ]
            );
            Ok(s + ", 3 manifests (floors kept)")
        }
        "resp03" => {
            let s = update(&o, w("https://update.release.flatcar-linux.net/amd64-usr/flatcar_production_update.gz", 542373876, "sha256_3_0_0", "3.0.0"))?;
            same!(
                parsed.map_err(|e| e.to_string())?.apps[0]
                    .updatecheck
                    .as_ref()
                    .unwrap()
                    .manifests
                    .len(),
                1
            );
            Ok(s)
        }
        "resp04" => {
            let s = update(&o, w("https://commondatastorage.googleapis.com/update-storage.core-os.net/amd64-usr/410.0.0/update.gz", 111882133, "MclaAJ7f63k0cHtYs5Wv5dqGuveyXDfbYwDw7X5SaoA=", "410.0.0"))?;
            let Outcome::UpdateAvailable(u) = &o else {
                unreachable!()
            };
            ensure!(u.disable_payload_backoff, "DisablePayloadBackoff not read");
            Ok(s)
        }
        "resp05" => update(
            &o,
            w(
                "http://index.example.com/webapp:1.0.2/update.gz",
                23,
                "b602d630f0a081840d0ca8fc4d35810e42806642b3127bb702d65c3df227d0f5",
                "1.0.2",
            ),
        ),
        "resp06" | "resp15" | "resp22" | "resp23" => noupdate(&o),
        "resp07" | "resp08" | "resp09" | "resp30" => event_ack(&parsed),
        "resp10" => {
            let s = update(
                &o,
                w(
                    "http://kam:8080/static/update.gz",
                    67546213,
                    "0VAlQW3RE99SGtSB5R4m08antAHO8XDoBMKDyxQT/Mg=",
                    "9999.0.0",
                ),
            )?;
            let Outcome::UpdateAvailable(u) = &o else {
                unreachable!()
            };
            ensure!(!u.is_delta_payload, "IsDelta=\"True\" read as a delta");
            Ok(s + ", not a delta")
        }
        "resp11" | "resp26" => {
            let e = parsed.err().ok_or("parsed")?;
            ensure!(matches!(e, Error::Xml { .. }), "{e}");
            code(&o, 31).map(|s| format!("{s}: {e}"))
        }
        "resp12" => {
            let s = update(
                &o,
                w(
                    "http://kam:8080/static/update.gz",
                    67546213,
                    "0VAlQW3RE99SGtSB5R4m08antAHO8XDoBMKDyxQT/Mg=",
                    "9999.0.0",
                ),
            )?;
            let r = parsed.map_err(|e| e.to_string())?;
            same!(
                r.daystart.as_ref().and_then(|d| d.elapsed_seconds),
                Some(49008)
            );
            let app = &r.apps[0];
            same!(
                app.ping.as_ref().and_then(|p| p.status.as_deref()),
                Some("ok")
            );
            let uc = app.updatecheck.as_ref().unwrap();
            same!(uc.urls[0].codebase, "http://kam:8080/static/");
            let p = &uc.manifests[0].packages[0];
            same!(
                (p.hash.as_deref(), p.required),
                (Some("+LXvjiaPkeYDLHoNKlf9qbJwvnk="), Some(true))
            );
            let a = &uc.manifests[0].actions[0];
            same!(
                a.extra.get("DisplayVersion").map(String::as_str),
                Some("9999.0.0")
            );
            same!(a.is_delta_payload, Some(true));
            let as_request = parse_request(body).err().ok_or("parses as a request")?;
            ensure!(matches!(as_request, Error::Invalid { .. }), "{as_request}");
            Ok(s + ", delta, not a request")
        }
        "resp13" => {
            let s = update(
                &o,
                w(
                    "http://localhost/updates/update.gz",
                    67546213,
                    "0VAlQW3RE99SGtSB5R4m08antAHO8XDoBMKDyxQT/Mg=",
                    "9999.0.0",
                ),
            )?;
            let Outcome::UpdateAvailable(u) = &o else {
                unreachable!()
            };
            ensure!(u.is_delta_payload && u.disable_payload_backoff, "flags");
            Ok(s + ", slash inserted")
        }
        "resp14" => {
            let s = update(&o, w("https://storage.googleapis.com/chromeos-releases-public/canary-channel/canary-channel/3095.0.0/chromeos_3095.0.0_x86-zgb_canary-channel_full_mp-v2.bin-df37843370ddf1e3819a2afeaa934faa.signed", 400752559, "DIAVxoI+8NpsudUawOA5U92VHlaxQBS3ejN4EPM6T2A=", "3095.0.0"))?;
            let Outcome::UpdateAvailable(u) = &o else {
                unreachable!()
            };
            ensure!(!u.is_delta_payload, "delta");
            same!(u.metadata_size, Some(58315));
            Ok(s + ", postinstall is the 2nd action")
        }
        "resp16" => {
            let s = update(
                &o,
                w("http://code/base/file.signed", 123, "HASH1234=", "1.2.3.4"),
            )?;
            Ok(s)
        }
        "resp17" | "resp18" | "resp19" => code(&o, 34),
        "resp20" => update(
            &o,
            w("http://missing/field/test/f", 587, "lkq34j5345", "1.0.0.0"),
        ),
        "resp21" => update(
            &o,
            w(
                "http://concat/url/slash/test/f",
                587,
                "lkq34j5345",
                "1.0.0.0",
            ),
        ),
        "resp24" => update(
            &o,
            w("testthe&codebase/file.signed", 123, "HASH1234=", "1.2.3.4"),
        ),
        "resp25" => update(
            &o,
            w(
                "thecodebase/file.signed",
                123123123123123,
                "HASH1234=",
                "1.2.3.4",
            ),
        ),
        "resp27" => {
            same!(parsed, Err(Error::Empty));
            code(&o, 30)
        }
        "resp28" => update(
            &o,
            w(
                "http://192.168.31.120:8080/delta.bin",
                653474911,
                "NbXXg6SyQdXiD+j1/RMqgAfA+sIgFUUPBl6t2+dUgxw=",
                "99999.0.0",
            ),
        )
        .map(|s| s + ", app id 863d answered for 864d"),
        "resp29" => {
            let e = parsed.err().ok_or("parsed")?;
            ensure!(e.to_string().contains("not at the start"), "{e}");
            code(&o, 31)
        }
        _ => Err("no expectation written for this row".into()),
    }
}

/// Whatever parses must come back unchanged from the writer, with the same verdict.
fn round_trip(file: &str, body: &[u8]) -> Result<(), String> {
    if file.starts_with("req") {
        let Ok(r) = parse_request(body) else {
            return Ok(());
        };
        let back = parse_request(write_request(&r).as_bytes()).map_err(|e| e.to_string())?;
        ensure!(back == r, "request round trip differs");
        let e = parse_response(body)
            .err()
            .ok_or("a request parses as a response")?;
        ensure!(matches!(e, Error::Invalid { .. }), "{e}");
    } else {
        let Ok(r) = parse_response(body) else {
            return Ok(());
        };
        let xml = write_response(&r);
        let back = parse_response(xml.as_bytes()).map_err(|e| e.to_string())?;
        ensure!(back == r, "response round trip differs:\n{xml}");
        for app in [UE_APPID, CHROMEOS_APPID] {
            same!(client_outcome(&back, app), client_outcome(&r, app));
        }
    }
    Ok(())
}

#[test]
fn every_index_row() {
    let dir = fixtures();
    let index = std::fs::read_to_string(dir.join("INDEX.tsv")).unwrap();
    let mut rows = 0;
    let mut failures = Vec::new();
    let mut summary = String::new();
    let mut listed = Vec::new();
    for line in index
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 5, "INDEX.tsv row without 5 columns: {line}");
        let (file, kind) = (cols[0], cols[1]);
        listed.push(file.to_owned());
        rows += 1;
        let body = std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let result = match kind {
            "request" => match parse_request(&body) {
                Err(Error::TooLarge { size, limit }) if file.starts_with("req12") => {
                    Ok(format!("refused: {size} bytes > {limit} (HTTP 400)"))
                }
                Err(e) => Err(format!("refused: {e}")),
                Ok(r) if file.starts_with("req11") => check_request(file, &r)
                    .and_then(|a| check_filled_template(&body).map(|b| format!("{a}; {b}"))),
                Ok(r) => check_request(file, &r),
            },
            "response" => check_response(file, &body),
            other => Err(format!("unknown kind {other}")),
        }
        .and_then(|s| round_trip(file, &body).map(|()| s));
        match result {
            Ok(s) => writeln!(summary, "  ok    {file}: {s}").unwrap(),
            Err(e) => {
                writeln!(
                    summary,
                    "  FAIL  {file}: {e}\n        expected: {}",
                    cols[4]
                )
                .unwrap();
                failures.push(file.to_owned());
            }
        }
    }
    // Every fixture has a row, so none is skipped silently.
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".xml") && !listed.contains(&name) {
            writeln!(summary, "  FAIL  {name}: not in INDEX.tsv").unwrap();
            failures.push(name);
        }
    }
    println!(
        "Omaha conformance ({}): {} of {rows} rows pass\n{summary}",
        dir.display(),
        rows - failures.len()
    );
    assert!(failures.is_empty(), "failing: {failures:?}\n{summary}");
}

/// Every prefix of every fixture is answered with a value or an error, never a panic (a server
/// reads whatever a client sends; an agent whatever a proxy returns).
#[test]
fn every_truncation_is_an_answer_not_a_panic() {
    let dir = fixtures();
    let mut bodies = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "xml") {
            continue;
        }
        let body = std::fs::read(&path).unwrap();
        if body.len() > MAX_REQUEST_BYTES {
            continue;
        }
        for end in 0..=body.len() {
            let prefix = &body[..end];
            let _ = parse_request(prefix);
            let _ = client_outcome_from_body(prefix, UE_APPID);
            bodies += 1;
        }
    }
    println!("{bodies} truncated bodies parsed without a panic");
}
