//! keel-http against real sockets on 127.0.0.1: an origin server and a CONNECT proxy written
//! here, both counting what they saw.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use keel_http::{Client, HttpError, ProxyEnv, Timeouts};

type Seen = Arc<Mutex<Vec<String>>>;

/// An HTTP/1.1 origin: answers each request with `handler(request line, headers)`; returns its
/// base URL and the request lines + headers it saw.
fn origin(
    handler: impl Fn(&str, &[(String, String)]) -> (u16, Vec<u8>, usize) + Send + Sync + 'static,
) -> (String, Seen) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let seen: Seen = Arc::default();
    let s2 = seen.clone();
    let handler = Arc::new(handler);
    thread::spawn(move || {
        for s in l.incoming().take(50) {
            let Ok(mut s) = s else { return };
            let (seen, handler) = (s2.clone(), handler.clone());
            thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let (line, headers) = read_head(&mut r);
                let mut len = 0;
                for (k, v) in &headers {
                    if k == "content-length" {
                        len = v.parse().unwrap();
                    }
                }
                let mut body = vec![0; len];
                r.read_exact(&mut body).unwrap();
                let mut record = line.clone();
                for (k, v) in &headers {
                    record.push_str(&format!("|{k}: {v}"));
                }
                record.push_str(&format!("|body={}", String::from_utf8_lossy(&body)));
                seen.lock().unwrap().push(record);
                let (status, body, cut) = handler(&line, &headers);
                let _ = write!(
                    s,
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                // `cut` < len: the connection drops after that many body bytes.
                let _ = s.write_all(&body[..cut.min(body.len())]);
            });
        }
    });
    (url, seen)
}

fn read_head(r: &mut impl BufRead) -> (String, Vec<(String, String)>) {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap() == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    (line.trim().to_string(), headers)
}

/// A CONNECT proxy: records each CONNECT target and relays bytes both ways.
fn connect_proxy() -> (String, Seen) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let seen: Seen = Arc::default();
    let s2 = seen.clone();
    thread::spawn(move || {
        for s in l.incoming().take(50) {
            let Ok(mut client) = s else { return };
            let seen = s2.clone();
            thread::spawn(move || {
                let mut r = BufReader::new(client.try_clone().unwrap());
                let (line, _) = read_head(&mut r);
                let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
                seen.lock().unwrap().push(line.clone());
                let Ok(upstream) = TcpStream::connect(&target) else {
                    let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
                    return;
                };
                client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .unwrap();
                let mut up_w = upstream.try_clone().unwrap();
                let mut up_r = upstream;
                let mut cl_w = client;
                let t = thread::spawn(move || {
                    let _ = std::io::copy(&mut r, &mut up_w);
                    let _ = up_w.shutdown(std::net::Shutdown::Write);
                });
                let _ = std::io::copy(&mut up_r, &mut cl_w);
                let _ = cl_w.shutdown(std::net::Shutdown::Both);
                let _ = t.join();
            });
        }
    });
    (url, seen)
}

fn env(vars: &[(&str, &str)]) -> ProxyEnv {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    ProxyEnv::from_lookup(move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
}

fn timeouts() -> Timeouts {
    Timeouts::each(Duration::from_secs(10))
}

#[test]
fn requests_go_through_the_proxy_and_no_proxy_bypasses_it() {
    let (base, seen_origin) = origin(|_, _| (200, b"hello".to_vec(), usize::MAX));
    let (proxy, seen_proxy) = connect_proxy();
    let host = base.trim_start_matches("http://").to_string();

    let client = Client::with_proxies(timeouts(), env(&[("http_proxy", &proxy)]));
    assert_eq!(client.proxy_for(&format!("{base}/a")), Some(proxy.as_str()));
    let body = client
        .get(&format!("{base}/a"), None, &[])
        .unwrap()
        .success()
        .unwrap()
        .read_to_vec(100)
        .unwrap();
    assert_eq!(body, b"hello");
    assert_eq!(
        *seen_proxy.lock().unwrap(),
        vec![format!("CONNECT {host} HTTP/1.1")]
    );
    assert_eq!(seen_origin.lock().unwrap().len(), 1);

    // ALL_PROXY (upper case) is the fallback; NO_PROXY names the host: direct.
    let client = Client::with_proxies(
        timeouts(),
        env(&[("ALL_PROXY", &proxy), ("NO_PROXY", "example.org,127.0.0.1")]),
    );
    assert_eq!(client.proxy_for(&format!("{base}/b")), None);
    client.get(&format!("{base}/b"), None, &[]).unwrap();
    assert_eq!(
        seen_proxy.lock().unwrap().len(),
        1,
        "NO_PROXY went through the proxy"
    );
    assert_eq!(seen_origin.lock().unwrap().len(), 2);

    // ALL_PROXY alone: through it.
    let client = Client::with_proxies(timeouts(), env(&[("ALL_PROXY", &proxy)]));
    client.get(&format!("{base}/c"), None, &[]).unwrap();
    assert_eq!(seen_proxy.lock().unwrap().len(), 2);
}

#[test]
fn the_process_environment_is_read() {
    // The one test that sets variables of this process; the others pass theirs explicitly.
    let (base, _) = origin(|_, _| (200, b"x".to_vec(), usize::MAX));
    let (proxy, seen_proxy) = connect_proxy();
    std::env::set_var("HTTP_PROXY", &proxy);
    std::env::remove_var("http_proxy");
    std::env::remove_var("no_proxy");
    std::env::remove_var("NO_PROXY");
    let client = Client::new(timeouts());
    std::env::remove_var("HTTP_PROXY");
    client.get(&format!("{base}/env"), None, &[]).unwrap();
    assert_eq!(seen_proxy.lock().unwrap().len(), 1);
}

#[test]
fn an_unusable_proxy_is_named() {
    let client = Client::with_proxies(timeouts(), env(&[("https_proxy", "http://[bad")]));
    let err = client
        .get("https://127.0.0.1:1/x", None, &[])
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(matches!(err, HttpError::Proxy { .. }), "{msg}");
    assert!(
        msg.starts_with("GET https://127.0.0.1:1/x: proxy https_proxy=\"http://[bad\": "),
        "{msg}"
    );
}

#[test]
fn range_and_post_reach_the_server() {
    let (base, seen) = origin(|line, headers| {
        let range = headers.iter().find(|(k, _)| k == "range");
        let body = format!("{line} {range:?}");
        (200, body.into_bytes(), usize::MAX)
    });
    let client = Client::with_proxies(timeouts(), ProxyEnv::default());
    let body = client
        .get(&format!("{base}/p"), Some(4096), &[])
        .unwrap()
        .read_to_vec(1000)
        .unwrap();
    assert_eq!(
        String::from_utf8(body).unwrap(),
        "GET /p HTTP/1.1 Some((\"range\", \"bytes=4096-\"))"
    );
    let r = client
        .post(
            &format!("{base}/q"),
            b"<request/>",
            &[("content-type", "text/xml")],
        )
        .unwrap();
    assert_eq!(r.status, 200);
    let seen = seen.lock().unwrap();
    assert!(seen[1].starts_with("POST /q HTTP/1.1"), "{}", seen[1]);
    assert!(seen[1].contains("|content-type: text/xml"), "{}", seen[1]);
    assert!(seen[1].ends_with("|body=<request/>"), "{}", seen[1]);
}

#[test]
fn errors_name_method_url_status_and_bytes() {
    let (base, _) = origin(|line, _| {
        if line.contains("/missing") {
            (404, b"<html>\n<h1>Not Found</h1>\n".to_vec(), usize::MAX)
        } else {
            (200, vec![7u8; 10_000], 3000)
        }
    });
    let client = Client::with_proxies(timeouts(), ProxyEnv::default());
    let url = format!("{base}/missing");
    let err = client
        .get(&url, None, &[])
        .unwrap()
        .success()
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        format!("GET {url}: HTTP 404 (26 bytes: \"<html>\\n<h1>Not Found</h1>\")")
    );

    let url = format!("{base}/cut");
    let mut reader = client.get(&url, None, &[]).unwrap().into_reader();
    let mut sink = Vec::new();
    let err = reader.read_to_end(&mut sink).unwrap_err().to_string();
    assert_eq!(sink.len(), 3000);
    assert!(
        err.starts_with(&format!(
            "GET {url}: HTTP 200: reading the body failed after 3000 bytes: "
        )),
        "{err}"
    );

    let err = client
        .get(&format!("{base}/big"), None, &[])
        .unwrap()
        .read_to_vec(10)
        .unwrap_err();
    assert!(
        matches!(err, HttpError::TooLarge { limit: 10, .. }),
        "{err}"
    );

    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/x", l.local_addr().unwrap());
    drop(l);
    let err = client.get(&url, None, &[]).err().unwrap().to_string();
    assert!(err.starts_with(&format!("GET {url}: ")), "{err}");
}
