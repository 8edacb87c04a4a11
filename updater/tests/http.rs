//! Payloads streamed over HTTP from a server on 127.0.0.1 inside the test: a full download, a
//! connection that drops mid-body, and a 404.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::thread;

use common::*;
use keel_cli_support::exit;
use keel_format::attrs::SlotAttrs;
use keel_format::metadata::METADATA_SIZE;
use keel_update::progress::Silent;
use keel_update::{apply, ApplyOptions, PayloadSource, Target};

/// Serve one request: `status`, a Content-Length of `announced`, then `body`, then close.
fn serve_once(status: &'static str, body: Vec<u8>, announced: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
            line.clear();
        }
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {announced}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
        );
        let _ = conn.write_all(head.as_bytes());
        let _ = conn.write_all(&body);
    });
    format!("http://{addr}/usr.img")
}

fn apply_url(w: &World, url: &str) -> Result<keel_update::Applied, keel_update::UpdateError> {
    apply(
        PayloadSource::parse(url),
        &Target::offline(&w.disk),
        &ApplyOptions::new(vec![key().public()]),
        &Silent,
    )
}

#[test]
fn full_download_applies() {
    let w = world();
    let v2 = build_usr("2.0.0", "qemu-x86_64", &key(), 6 << 20);
    let p = v2.payload();
    let url = serve_once("200 OK", p.clone(), p.len());
    let a = apply_url(&w, &url).unwrap();
    assert_eq!(a.payload, url);
    assert_eq!(&partition_bytes(&w.disk, 4)[..v2.body.len()], &v2.body[..]);
    assert_eq!(attrs(&w.disk, 4), SlotAttrs::new(2, 1, false));
}

#[test]
fn dropped_connection_leaves_the_slot_invalid() {
    let w = world();
    let v2 = build_usr("2.0.0", "qemu-x86_64", &key(), 6 << 20);
    let p = v2.payload();
    let usr_a = partition_bytes(&w.disk, 3);
    let url = serve_once("200 OK", p[..METADATA_SIZE + (3 << 20)].to_vec(), p.len());
    let err = apply_url(&w, &url).unwrap_err();
    assert_eq!(err.exit_code(), exit::UNREADABLE, "{err}");
    assert!(err.to_string().contains(&url), "{err}");
    assert_eq!(attrs(&w.disk, 4), SlotAttrs::new(0, 0, false));
    assert_eq!(partition_bytes(&w.disk, 3), usr_a);
    assert_eq!(attrs(&w.disk, 3), SlotAttrs::new(1, 0, true));
}

#[test]
fn http_error_touches_nothing() {
    let w = world();
    let before = std::fs::read(&w.disk).unwrap();
    let url = serve_once("404 Not Found", b"no such payload".to_vec(), 15);
    let err = apply_url(&w, &url).unwrap_err();
    assert_eq!(err.exit_code(), exit::UNREADABLE, "{err}");
    assert!(err.to_string().contains("404"), "{err}");
    assert!(std::fs::read(&w.disk).unwrap() == before);
}

/// Serve `responses` in turn, one connection each: (status line, extra headers, body, bytes of
/// it to send before closing). Returns the URL and the requests' Range headers.
fn serve_sequence(
    responses: Vec<(&'static str, String, Vec<u8>, usize)>,
) -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<Option<String>>>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let ranges: std::sync::Arc<std::sync::Mutex<Vec<Option<String>>>> = Default::default();
    let seen = ranges.clone();
    thread::spawn(move || {
        for (status, headers, body, send) in responses {
            let (mut conn, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            let mut range = None;
            while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("range:") {
                    range = Some(v.trim().to_string());
                }
                line.clear();
            }
            seen.lock().unwrap().push(range);
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{headers}Connection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(&body[..send.min(body.len())]);
        }
    });
    (format!("http://{addr}/usr.img"), ranges)
}

#[test]
fn a_dropped_download_resumes_with_range() {
    let w = world();
    let v2 = build_usr("2.0.0", "qemu-x86_64", &key(), 6 << 20);
    let p = v2.payload();
    let cut = METADATA_SIZE + (2 << 20);
    let rest = p[cut..].to_vec();
    let content_range = format!("Content-Range: bytes {cut}-{}/{}\r\n", p.len() - 1, p.len());
    let (url, ranges) = serve_sequence(vec![
        ("200 OK", String::new(), p.clone(), cut),
        (
            "206 Partial Content",
            content_range,
            rest.clone(),
            rest.len(),
        ),
    ]);
    apply_url(&w, &url).unwrap();
    assert_eq!(
        *ranges.lock().unwrap(),
        vec![None, Some(format!("bytes={cut}-"))]
    );
    assert_eq!(&partition_bytes(&w.disk, 4)[..v2.body.len()], &v2.body[..]);
    assert_eq!(attrs(&w.disk, 4), SlotAttrs::new(2, 1, false));
}

#[test]
fn a_server_that_ignores_range_is_not_trusted_to_continue() {
    let w = world();
    let v2 = build_usr("2.0.0", "qemu-x86_64", &key(), 6 << 20);
    let p = v2.payload();
    let cut = METADATA_SIZE + (2 << 20);
    let responses = (0..5)
        .map(|i| {
            (
                "200 OK",
                String::new(),
                p.clone(),
                if i == 0 { cut } else { p.len() },
            )
        })
        .collect();
    let (url, _) = serve_sequence(responses);
    let err = apply_url(&w, &url).unwrap_err();
    assert_eq!(err.exit_code(), exit::UNREADABLE, "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&format!("GET {url}: HTTP 200")), "{msg}");
    assert!(msg.contains(&format!("at byte {cut}")), "{msg}");
    assert_eq!(attrs(&w.disk, 4), SlotAttrs::new(0, 0, false));
}
