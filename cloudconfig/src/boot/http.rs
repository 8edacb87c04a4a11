//! HTTP for the network sources (ureq, blocking): a request whose every failure names the
//! method, the URL, the status and how many bytes came back.

use std::io::Read;
use std::time::Duration;

/// The most a user-data may be (EC2 allows 16 KiB; a URL may serve more).
pub const MAX_BYTES: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{method} {url}: {message}")]
    Transport {
        method: &'static str,
        url: String,
        message: String,
    },
    #[error("{method} {url}: HTTP {status} ({bytes} bytes{})", excerpt_suffix(.excerpt))]
    Status {
        method: &'static str,
        url: String,
        status: u16,
        bytes: usize,
        excerpt: String,
    },
    #[error(
        "{method} {url}: HTTP {status}: reading the body failed after {bytes} bytes: {message}"
    )]
    Body {
        method: &'static str,
        url: String,
        status: u16,
        bytes: usize,
        message: String,
    },
    #[error("{method} {url}: HTTP {status}: more than {MAX_BYTES} bytes")]
    TooLarge {
        method: &'static str,
        url: String,
        status: u16,
    },
}

fn excerpt_suffix(excerpt: &str) -> String {
    if excerpt.is_empty() {
        String::new()
    } else {
        format!(": {excerpt:?}")
    }
}

/// A response with any status (the caller decides what a 404 means).
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

pub struct Client {
    agent: ureq::Agent,
}

impl Default for Client {
    fn default() -> Self {
        Client::new(Duration::from_secs(10))
    }
}

impl Client {
    /// Every connect, response and read waits at most `timeout`.
    pub fn new(timeout: Duration) -> Client {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(timeout))
            .timeout_recv_response(Some(timeout))
            .timeout_per_read(Some(timeout))
            .build()
            .into();
        Client { agent }
    }

    /// `GET url` with `headers`.
    pub fn get(&self, url: &str, headers: &[(&str, &str)]) -> Result<Response, FetchError> {
        let mut req = self.agent.get(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        finish("GET", url, req.call())
    }

    /// `PUT url` with `headers` and an empty body.
    pub fn put(&self, url: &str, headers: &[(&str, &str)]) -> Result<Response, FetchError> {
        let mut req = self.agent.put(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        finish("PUT", url, req.send_empty())
    }

    /// `GET url`: the body of a 2xx answer; any other status is an error.
    pub fn get_ok(&self, url: &str, headers: &[(&str, &str)]) -> Result<Vec<u8>, FetchError> {
        let r = self.get(url, headers)?;
        ok_body("GET", url, r)
    }
}

/// The body of a 2xx response, else [`FetchError::Status`].
pub fn ok_body(method: &'static str, url: &str, r: Response) -> Result<Vec<u8>, FetchError> {
    if (200..300).contains(&r.status) {
        return Ok(r.body);
    }
    let text = String::from_utf8_lossy(&r.body);
    let excerpt: String = text.trim().chars().take(120).collect();
    Err(FetchError::Status {
        method,
        url: url.to_string(),
        status: r.status,
        bytes: r.body.len(),
        excerpt,
    })
}

fn finish(
    method: &'static str,
    url: &str,
    result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<Response, FetchError> {
    let response = result.map_err(|e| FetchError::Transport {
        method,
        url: url.to_string(),
        message: e.to_string(),
    })?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    let mut reader = response
        .into_body()
        .into_with_config()
        .limit(MAX_BYTES + 1)
        .reader();
    if let Err(e) = (&mut reader).take(MAX_BYTES + 1).read_to_end(&mut body) {
        return Err(FetchError::Body {
            method,
            url: url.to_string(),
            status,
            bytes: body.len(),
            message: e.to_string(),
        });
    }
    if body.len() as u64 > MAX_BYTES {
        return Err(FetchError::TooLarge {
            method,
            url: url.to_string(),
            status,
        });
    }
    Ok(Response { status, body })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    /// A one-thread HTTP/1.1 server on 127.0.0.1 answering `handler(method, path, headers)`
    /// with (status, body) for `n` connections; returns its base URL.
    pub fn serve(
        n: usize,
        handler: impl Fn(&str, &str, &[(String, String)]) -> (u16, Vec<u8>) + Send + 'static,
    ) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        std::thread::spawn(move || {
            for s in l.incoming().take(n) {
                let mut s = s.unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                let mut parts = line.split_whitespace();
                let (method, path) = (
                    parts.next().unwrap_or("").to_string(),
                    parts.next().unwrap_or("").to_string(),
                );
                let mut headers = Vec::new();
                loop {
                    let mut h = String::new();
                    r.read_line(&mut h).unwrap();
                    if h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                    }
                }
                let (status, body) = handler(&method, &path, &headers);
                let _ = write!(
                    s,
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(&body);
            }
        });
        url
    }

    #[test]
    fn a_404_names_url_status_and_bytes() {
        let base = serve(1, |_, _, _| (404, b"no such config\n".to_vec()));
        let url = format!("{base}/cc.yml");
        let err = Client::default().get_ok(&url, &[]).unwrap_err().to_string();
        assert_eq!(
            err,
            format!("GET {url}: HTTP 404 (15 bytes: \"no such config\")")
        );
    }

    #[test]
    fn a_body_and_headers_go_through() {
        let base = serve(1, |m, p, h| {
            let tok = h.iter().find(|(k, _)| k == "x-t").map(|(_, v)| v.clone());
            (200, format!("{m} {p} {tok:?}").into_bytes())
        });
        let body = Client::default()
            .get_ok(&format!("{base}/a"), &[("X-T", "v")])
            .unwrap();
        assert_eq!(body, b"GET /a Some(\"v\")");
    }

    #[test]
    fn nothing_listening_names_the_url() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/x", l.local_addr().unwrap());
        drop(l);
        let err = Client::default().get_ok(&url, &[]).unwrap_err().to_string();
        assert!(err.starts_with(&format!("GET {url}: ")), "{err}");
    }
}
