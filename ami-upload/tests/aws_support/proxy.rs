//! A small HTTP/1.1 proxy between the uploader and moto that injects faults: it fails chosen
//! PutSnapshotBlock requests with a 500 or a TCP reset, can slow block uploads down, can answer
//! RegisterImage with an EC2 error, and records every request it sees. Each request is
//! forwarded on its own upstream connection, and every answer closes the client connection
//! (`Connection: close`), so the client never reuses a socket the proxy let go of.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer 500 InternalServerException.
    Status500,
    /// Read the request, then reset the connection without an answer.
    Reset,
}

/// One request as the proxy saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// Bodies of non-PUT requests (the EC2 query forms), empty for block uploads.
    pub body: String,
    /// The fault injected, if any.
    pub fault: Option<Fault>,
}

#[derive(Default)]
struct Rules {
    /// Block index -> faults to inject on its next PUTs, in order.
    block_faults: HashMap<i64, Vec<Fault>>,
    /// Every PUT of these blocks fails.
    always_fail: Vec<i64>,
    put_delay: Duration,
    /// (code, message) to answer RegisterImage with, HTTP 400.
    register_error: Option<(String, String)>,
    /// Add `"SseType": "sse-ebs"` to StartSnapshot's answer, as AWS says of an encrypted
    /// snapshot (moto never encrypts).
    report_encrypted: bool,
}

pub struct Proxy {
    pub port: u16,
    upstream: u16,
    rules: Arc<Mutex<Rules>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let proxy = Proxy {
            port,
            upstream,
            rules: Arc::default(),
            seen: Arc::default(),
            stop: Arc::default(),
        };
        let (rules, seen, stop) = (proxy.rules.clone(), proxy.seen.clone(), proxy.stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (rules, seen) = (rules.clone(), seen.clone());
                thread::spawn(move || {
                    let _ = serve(conn, upstream, &rules, &seen);
                });
            }
        });
        proxy
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Inject `faults` on the next PUTs of block `index`, one per PUT.
    pub fn fail_block(&self, index: i64, faults: &[Fault]) {
        self.rules
            .lock()
            .unwrap()
            .block_faults
            .insert(index, faults.to_vec());
    }

    pub fn always_fail_block(&self, index: i64) {
        self.rules.lock().unwrap().always_fail.push(index);
    }

    pub fn delay_puts(&self, d: Duration) {
        self.rules.lock().unwrap().put_delay = d;
    }

    pub fn fail_register_image(&self, code: &str, message: &str) {
        self.rules.lock().unwrap().register_error = Some((code.into(), message.into()));
    }

    pub fn report_encrypted(&self) {
        self.rules.lock().unwrap().report_encrypted = true;
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// PUTs of block `index` seen so far.
    pub fn puts_of(&self, index: i64) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.method == "PUT" && block_index(&s.path) == Some(index))
            .count()
    }

    pub fn block_puts(&self) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.method == "PUT" && block_index(&s.path).is_some())
            .count()
    }

    /// The body of the EC2 call `action` (e.g. "RegisterImage"), decoded into its fields.
    pub fn ec2_call(&self, action: &str) -> Option<HashMap<String, String>> {
        self.seen().into_iter().find_map(|s| {
            let form = parse_form(&s.body);
            (form.get("Action").map(String::as_str) == Some(action)).then_some(form)
        })
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        let _ = self.upstream;
    }
}

/// `/snapshots/ID/blocks/N` -> N.
pub fn block_index(path: &str) -> Option<i64> {
    let mut parts = path.split('?').next()?.trim_matches('/').split('/');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some("snapshots"), Some(_), Some("blocks"), Some(n), None) => n.parse().ok(),
        _ => None,
    }
}

fn parse_form(body: &str) -> HashMap<String, String> {
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?'));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Request {
    method: String,
    path: String,
    head: Vec<String>,
    body: Vec<u8>,
}

fn read_request(r: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut words = line.split_whitespace();
    let method = words.next().unwrap_or_default().to_string();
    let path = words.next().unwrap_or_default().to_string();
    let mut head = vec![line.trim_end().to_string()];
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end().to_string();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
            if k.eq_ignore_ascii_case("connection") {
                continue;
            }
        }
        head.push(h);
    }
    let mut body = vec![0u8; length];
    r.read_exact(&mut body)?;
    Ok(Some(Request {
        method,
        path,
        head,
        body,
    }))
}

fn serve(
    conn: TcpStream,
    upstream: u16,
    rules: &Mutex<Rules>,
    seen: &Mutex<Vec<Seen>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut conn = conn;
    let Some(req) = read_request(&mut reader)? else {
        return Ok(());
    };
    let body_text = if req.method == "PUT" {
        String::new()
    } else {
        String::from_utf8_lossy(&req.body).into_owned()
    };
    let block = (req.method == "PUT")
        .then(|| block_index(&req.path))
        .flatten();
    let start_snapshot = req.method == "POST" && req.path == "/snapshots";
    let (fault, delay, register_error, encrypt) = {
        let mut r = rules.lock().unwrap();
        let fault = block.and_then(|i| {
            if r.always_fail.contains(&i) {
                return Some(Fault::Status500);
            }
            let list = r.block_faults.get_mut(&i)?;
            (!list.is_empty()).then(|| list.remove(0))
        });
        let register =
            parse_form(&body_text).get("Action").map(String::as_str) == Some("RegisterImage");
        (
            fault,
            if block.is_some() {
                r.put_delay
            } else {
                Duration::ZERO
            },
            register.then(|| r.register_error.clone()).flatten(),
            start_snapshot && r.report_encrypted,
        )
    };
    seen.lock().unwrap().push(Seen {
        method: req.method.clone(),
        path: req.path.clone(),
        body: body_text,
        fault,
    });
    thread::sleep(delay);
    match fault {
        Some(Fault::Reset) => {
            reset(&conn);
            return Ok(());
        }
        Some(Fault::Status500) => {
            let body = r#"{"message":"injected by the test proxy","Reason":"test"}"#;
            write!(
                conn,
                "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n\
                 x-amzn-ErrorType: InternalServerException\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            )?;
            return conn.shutdown(Shutdown::Both);
        }
        None => {}
    }
    if let Some((code, message)) = register_error {
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code>\
             <Message>{message}</Message></Error></Errors><RequestID>keel-test</RequestID></Response>"
        );
        write!(
            conn,
            "HTTP/1.1 400 Bad Request\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )?;
        return conn.shutdown(Shutdown::Both);
    }

    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    let mut head = req.head.join("\r\n");
    head.push_str("\r\nConnection: close\r\n\r\n");
    up.write_all(head.as_bytes())?;
    up.write_all(&req.body)?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer)?;
    let mut answer = close_connection(&answer);
    if encrypt {
        answer = add_to_json_body(&answer, r#""SseType": "sse-ebs", "#);
    }
    conn.write_all(&answer)?;
    conn.shutdown(Shutdown::Both)
}

/// The answer with its Connection header replaced by `Connection: close`.
fn close_connection(answer: &[u8]) -> Vec<u8> {
    let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return answer.to_vec();
    };
    let head = String::from_utf8_lossy(&answer[..end]);
    let mut out: Vec<String> = head
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .map(str::to_owned)
        .collect();
    out.push("Connection: close".into());
    let mut v = out.join("\r\n").into_bytes();
    v.extend_from_slice(&answer[end..]);
    v
}

/// The answer with `fields` inserted at the start of its JSON object body, Content-Length fixed.
fn add_to_json_body(answer: &[u8], fields: &str) -> Vec<u8> {
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP head");
    let head = String::from_utf8_lossy(&answer[..end]);
    let body = String::from_utf8_lossy(&answer[end + 4..]);
    let body = body.replacen('{', &format!("{{{fields}"), 1);
    let mut out: Vec<String> = head
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("content-length:"))
        .map(str::to_owned)
        .collect();
    out.push(format!("Content-Length: {}", body.len()));
    format!("{}\r\n\r\n{body}", out.join("\r\n")).into_bytes()
}

/// Closes with a TCP RST (SO_LINGER 0), as a crashed server or middlebox would.
fn reset(conn: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a live socket of ours, and a linger struct of the size passed, read by the call
    // only.
    unsafe {
        libc::setsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}
