//! A download host on 127.0.0.1 that misbehaves on purpose: it serves one byte string at every
//! path (a payload, or garbage where an Omaha answer is expected), answers `Range: bytes=N-`
//! with 206, and can cut its first GET after some body bytes, as a dropped connection would.
//! A QEMU guest on the user network reaches it as 10.0.2.2.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::thread;

pub struct Cdn {
    pub port: u16,
    /// Each request's line and Range header, in order.
    pub seen: Arc<Mutex<Vec<String>>>,
}

impl Cdn {
    /// Serves `bytes`; the first GET is cut after `cut_after` body bytes when given. At most
    /// 20 connections, one request each.
    pub fn start(bytes: Vec<u8>, cut_after: Option<usize>) -> Cdn {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = seen.clone();
        thread::spawn(move || {
            let mut cut = cut_after;
            for c in l.incoming().take(20) {
                let Ok(mut c) = c else { return };
                let mut r = BufReader::new(c.try_clone().unwrap());
                let (line, headers) = read_head(&mut r);
                let header = |name: &str| {
                    headers
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.clone())
                };
                // Read a request body (an Omaha POST) before answering: closing a socket with
                // unread bytes resets it, and the client might never see the answer.
                let body_len: u64 = header("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let _ = std::io::copy(&mut (&mut r).take(body_len), &mut std::io::sink());
                let range = header("range");
                log.lock().unwrap().push(format!("{line} range={range:?}"));
                let from = range
                    .as_deref()
                    .and_then(|v| v.strip_prefix("bytes="))
                    .and_then(|v| v.strip_suffix('-'))
                    .and_then(|v| v.parse::<usize>().ok())
                    .filter(|&n| n < bytes.len());
                let (status, body) = match from {
                    Some(n) => (
                        format!(
                            "206 Partial Content\r\nContent-Range: bytes {n}-{}/{}",
                            bytes.len() - 1,
                            bytes.len()
                        ),
                        &bytes[n..],
                    ),
                    None => ("200 OK".to_string(), &bytes[..]),
                };
                let limit = match cut {
                    Some(k) if line.starts_with("GET ") => {
                        cut = None;
                        k.min(body.len())
                    }
                    _ => body.len(),
                };
                let _ = write!(
                    c,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = c.write_all(&body[..limit]);
                let _ = c.flush();
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
        });
        Cdn { port, seen }
    }

    pub fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// An HTTP request's line and headers (names lower case).
pub fn read_head(r: &mut impl BufRead) -> (String, Vec<(String, String)>) {
    let mut line = String::new();
    r.read_line(&mut line).unwrap_or(0);
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    (line.trim().to_string(), headers)
}
