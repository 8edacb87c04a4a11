//! HTTP for the network sources, over keel-http (the one client setup: proxies, timeouts,
//! errors naming the method, the URL, the status and how many bytes came back).

use std::time::Duration;

pub use keel_http::HttpError as FetchError;
use keel_http::Timeouts;

/// The most a user-data may be (EC2 allows 16 KiB; a URL may serve more).
pub const MAX_BYTES: u64 = 16 << 20;

/// A response with any status (the caller decides what a 404 means).
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

pub struct Client {
    http: keel_http::Client,
}

impl Default for Client {
    fn default() -> Self {
        Client::new(Duration::from_secs(10))
    }
}

impl Client {
    /// Every connect, response and read waits at most `timeout`.
    pub fn new(timeout: Duration) -> Client {
        Client {
            http: keel_http::Client::new(Timeouts::each(timeout)),
        }
    }

    /// `GET url` with `headers`.
    pub fn get(&self, url: &str, headers: &[(&str, &str)]) -> Result<Response, FetchError> {
        finish(self.http.get(url, None, headers)?)
    }

    /// `PUT url` with `headers` and an empty body.
    pub fn put(&self, url: &str, headers: &[(&str, &str)]) -> Result<Response, FetchError> {
        finish(self.http.put(url, headers)?)
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
    Err(FetchError::Status {
        method,
        url: url.to_string(),
        status: r.status,
        bytes: r.body.len() as u64,
        excerpt: keel_http::excerpt(&r.body),
    })
}

fn finish(response: keel_http::Response) -> Result<Response, FetchError> {
    let status = response.status;
    let body = response.read_to_vec(MAX_BYTES)?;
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
