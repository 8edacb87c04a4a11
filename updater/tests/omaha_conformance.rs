//! The agent's Omaha client on every response of `shared/conformance/omaha/` (read in place):
//! each `resp*.xml` is served over HTTP on 127.0.0.1 and fetched by `OmahaClient::check` (or,
//! for an event acknowledgement, `report`), and the result must say what INDEX.tsv's expected
//! column says: update or not, URL, size, SHA-256, version, or update_engine's error code.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::thread;

use keel_omaha::Outcome;
use keel_update::agent::omaha::{ExchangeError, Identity, OmahaClient};

fn fixtures() -> PathBuf {
    keel_testkit::conformance::dir("omaha", "INDEX.tsv")
}

/// Serves `dir/NAME` for `POST /NAME`, forever (the test process ends it).
fn serve(dir: PathBuf) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    thread::spawn(move || {
        for c in l.incoming().take(200) {
            let Ok(mut c) = c else { return };
            let mut r = BufReader::new(c.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let mut len = 0usize;
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    if k.trim().eq_ignore_ascii_case("content-length") {
                        len = v.trim().parse().unwrap();
                    }
                }
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            let name = line
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .trim_start_matches('/');
            let reply = std::fs::read(dir.join(name)).unwrap_or_default();
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                reply.len()
            );
            let _ = c.write_all(&reply);
        }
    });
    base
}

fn identity() -> Identity {
    Identity {
        machine_id: "68cf162f8fc8467ca7d8337464c863d1".into(),
        group: "stable".into(),
        version: "1.0.0".into(),
        board: "qemu-x86_64".into(),
        arch: "x86_64".into(),
        channel: "stable".into(),
    }
}

/// The word after `key` in `text` (up to a space, `,`, `;` or a quote).
fn after<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let rest = &text[text.find(key)? + key.len()..];
    let rest = rest.trim_start_matches(['\'', ' ']);
    let end = rest
        .find(|c: char| c.is_whitespace() || c == ',' || c == ';' || c == '\'')
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// The error code the expected column names, if it names one (the first, as update_engine
/// stops at the first failure).
fn expected_code(e: &str) -> Option<u32> {
    ["(30)", "(31)", "(34)", ": 31)"]
        .iter()
        .filter_map(|pat| e.find(pat).map(|at| (at, pat)))
        .min()
        .map(|(_, pat)| {
            pat.trim_matches(|c: char| !c.is_ascii_digit())
                .parse()
                .unwrap()
        })
}

/// Checks the facts the expected column states about an update; returns how many it checked.
fn check_update(file: &str, e: &str, u: &keel_omaha::Update) -> usize {
    let mut checked = 0;
    let mut fact = |what: &str, ok: bool, got: &dyn std::fmt::Debug| {
        assert!(
            ok,
            "{file}: {what}: the agent got {got:?}; INDEX.tsv says: {e}"
        );
        checked += 1;
    };
    let url = after(e, "payload_urls[0] == ")
        .or_else(|| after(e, "payload_urls[0] "))
        .or_else(|| after(e, "payload_url "));
    if let Some(url) = url {
        match url.strip_prefix("...") {
            Some(tail) => fact("url", u.url.ends_with(tail), &u.url),
            None => fact("url", u.url == url, &u.url),
        }
    }
    if let (Some(base), Some(name)) = (after(e, "URL "), after(e, " name ")) {
        fact("url", u.url == format!("{base}{name}"), &u.url);
    }
    if let Some(size) = after(e, "size == ").or_else(|| after(e, "size ")) {
        fact("size", u.size.to_string() == size, &u.size);
    }
    // A digest, not a word of the prose ("treats sha256 as an opaque string").
    let digest = |h: &&str| h.len() >= 8;
    if let Some(hash) = after(e, "hash ")
        .filter(digest)
        .or_else(|| after(e, " sha256 ").filter(digest))
    {
        fact("sha256", u.sha256 == hash, &u.sha256);
    }
    let first_manifest = || {
        let at = e.find("only the first manifest (")? + "only the first manifest (".len();
        e[at..].split(')').next()
    };
    let version = first_manifest()
        .or_else(|| after(e, "display_version "))
        .or_else(|| after(e, "manifest "))
        .or_else(|| after(e, "manifest, version "));
    if let Some(v) = version.filter(|v| v.chars().next().is_some_and(|c| c.is_ascii_digit())) {
        fact("version", u.version == v, &u.version);
    }
    for (flag, value) in [
        ("is_delta_payload=true", true),
        ("is_delta_payload=false", false),
    ] {
        if e.contains(flag) {
            fact(
                "is_delta_payload",
                u.is_delta_payload == value,
                &u.is_delta_payload,
            );
        }
    }
    if e.contains("disable_payload_backoff=true") {
        fact(
            "disable_payload_backoff",
            u.disable_payload_backoff,
            &u.disable_payload_backoff,
        );
    }
    checked
}

#[test]
fn the_agent_reads_every_response_fixture_as_update_engine_does() {
    let dir = fixtures();
    let base = serve(dir.clone());
    let index = std::fs::read_to_string(dir.join("INDEX.tsv")).unwrap();
    let id = identity();
    let mut seen = 0;
    for row in index.lines().filter(|l| l.starts_with("resp")) {
        let cols: Vec<&str> = row.split('\t').collect();
        let (file, expected) = (cols[0], cols[4]);
        assert!(Path::new(&dir.join(file)).exists(), "{file}");
        let client = OmahaClient::new(&format!("{base}/{file}"));
        seen += 1;
        if expected.contains("event request succeeds") {
            client
                .report(&id, &[])
                .unwrap_or_else(|e| panic!("{file}: an event acknowledgement: {e}"));
            continue;
        }
        let got = client.check(&id, &[]);
        if let Some(code) = expected_code(expected) {
            match got {
                Err(ExchangeError::BadResponse { code: c, .. }) => {
                    assert_eq!(c, code, "{file}: INDEX.tsv says: {expected}")
                }
                other => panic!("{file}: want error {code}, the agent got {other:?}"),
            }
        } else if expected.contains("update_exists=false") || expected.contains("(noupdate)") {
            assert!(
                matches!(got, Ok(Outcome::NoUpdate { .. })),
                "{file}: want noupdate, got {got:?}"
            );
        } else {
            let Ok(Outcome::UpdateAvailable(u)) = got else {
                panic!("{file}: want an update, got {got:?}; INDEX.tsv says: {expected}");
            };
            let n = check_update(file, expected, &u);
            assert!(
                n > 0,
                "{file}: no fact of the expected column checked: {expected}"
            );
        }
    }
    assert_eq!(seen, 30, "responses in INDEX.tsv");
}
