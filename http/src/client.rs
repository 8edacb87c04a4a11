//! The client: one ureq agent for direct connections and one per proxy, chosen per URL.

use std::io::{self, Read};
use std::time::Duration;

use crate::error::{excerpt, HttpError};
use crate::proxy::ProxyEnv;

/// How long each phase of a request may take (`None`: no limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Option<Duration>,
    /// From the request sent to the response's headers.
    pub response: Option<Duration>,
    /// Between two reads of the body: a stalled transfer fails, a slow one does not.
    pub per_read: Option<Duration>,
    /// The whole request, body included.
    pub total: Option<Duration>,
}

impl Timeouts {
    /// For payloads and images: a stalled download fails, a slow one takes as long as it takes.
    pub fn download() -> Timeouts {
        Timeouts {
            connect: Some(Duration::from_secs(30)),
            response: Some(Duration::from_secs(60)),
            per_read: Some(Duration::from_secs(60)),
            total: None,
        }
    }

    /// Every connect, response and read waits at most `t`.
    pub fn each(t: Duration) -> Timeouts {
        Timeouts {
            connect: Some(t),
            response: Some(t),
            per_read: Some(t),
            total: None,
        }
    }

    /// The whole request within `t`.
    pub fn total(t: Duration) -> Timeouts {
        Timeouts {
            connect: Some(t),
            response: Some(t),
            per_read: Some(t),
            total: Some(t),
        }
    }
}

/// (variable, value, agent or why the value is unusable)
type Proxied = (String, String, Result<ureq::Agent, String>);

pub struct Client {
    direct: ureq::Agent,
    http: Option<Proxied>,
    https: Option<Proxied>,
    env: ProxyEnv,
}

impl Client {
    /// With the process environment's proxy settings.
    pub fn new(timeouts: Timeouts) -> Client {
        Client::with_proxies(timeouts, ProxyEnv::from_env())
    }

    pub fn with_proxies(timeouts: Timeouts, env: ProxyEnv) -> Client {
        let proxied = |p: &Option<(String, String)>| {
            p.as_ref().map(|(var, value)| {
                let with_scheme = if value.contains("://") {
                    value.clone()
                } else {
                    format!("http://{value}")
                };
                let agent = ureq::Proxy::new(&with_scheme)
                    .map(|p| agent(timeouts, Some(p)))
                    .map_err(|e| e.to_string());
                (var.clone(), value.clone(), agent)
            })
        };
        Client {
            direct: agent(timeouts, None),
            http: proxied(&env.http),
            https: proxied(&env.https),
            env,
        }
    }

    /// The proxy `url` goes through (`None`: direct), e.g. for a log line.
    pub fn proxy_for(&self, url: &str) -> Option<&str> {
        self.env.proxy_for(url).map(|(_, v)| v.as_str())
    }

    fn agent_for(&self, method: &'static str, url: &str) -> Result<&ureq::Agent, HttpError> {
        let Some((var, _)) = self.env.proxy_for(url) else {
            return Ok(&self.direct);
        };
        let proxied = [&self.http, &self.https]
            .into_iter()
            .flatten()
            .find(|(v, _, _)| v == var);
        match proxied {
            Some((_, _, Ok(agent))) => Ok(agent),
            Some((variable, value, Err(message))) => Err(HttpError::Proxy {
                method,
                url: url.to_string(),
                variable: variable.clone(),
                value: value.clone(),
                message: message.clone(),
            }),
            None => Ok(&self.direct),
        }
    }

    /// `GET url`, from byte `range_from` on when given (`Range: bytes=N-`). Any status is a
    /// response; [`Response::success`] turns the others into errors.
    pub fn get(
        &self,
        url: &str,
        range_from: Option<u64>,
        headers: &[(&str, &str)],
    ) -> Result<Response, HttpError> {
        let mut req = self.agent_for("GET", url)?.get(url);
        if let Some(from) = range_from {
            req = req.header("range", format!("bytes={from}-"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Response::new("GET", url, req.call())
    }

    /// `POST url` with `body`.
    pub fn post(
        &self,
        url: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> Result<Response, HttpError> {
        let mut req = self.agent_for("POST", url)?.post(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Response::new("POST", url, req.send(body))
    }

    /// `PUT url` with an empty body.
    pub fn put(&self, url: &str, headers: &[(&str, &str)]) -> Result<Response, HttpError> {
        let mut req = self.agent_for("PUT", url)?.put(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Response::new("PUT", url, req.send_empty())
    }
}

fn agent(t: Timeouts, proxy: Option<ureq::Proxy>) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(proxy)
        .timeout_connect(t.connect)
        .timeout_recv_response(t.response)
        .timeout_per_read(t.per_read)
        .timeout_recv_body(None)
        .timeout_global(t.total)
        .build()
        .into()
}

/// A response whose body has not been read yet.
pub struct Response {
    pub method: &'static str,
    pub url: String,
    pub status: u16,
    headers: ureq::http::HeaderMap,
    body: ureq::Body,
}

impl Response {
    fn new(
        method: &'static str,
        url: &str,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Response, HttpError> {
        let response = result.map_err(|e| HttpError::Transport {
            method,
            url: url.to_string(),
            message: e.to_string(),
        })?;
        let status = response.status().as_u16();
        let (parts, body) = response.into_parts();
        Ok(Response {
            method,
            url: url.to_string(),
            status,
            headers: parts.headers,
            body,
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn content_length(&self) -> Option<u64> {
        self.header("content-length")?.trim().parse().ok()
    }

    /// This response when its status is 2xx; otherwise [`HttpError::Status`] quoting the start
    /// of the body.
    pub fn success(self) -> Result<Response, HttpError> {
        if (200..300).contains(&self.status) {
            return Ok(self);
        }
        Err(self.status_error())
    }

    /// [`HttpError::Status`] for this response (reads at most 4 KiB of the body to quote it).
    pub fn status_error(self) -> HttpError {
        let (method, url, status) = (self.method, self.url.clone(), self.status);
        let mut head = Vec::new();
        let _ = self.into_raw_reader().take(4096).read_to_end(&mut head);
        HttpError::Status {
            method,
            url,
            status,
            bytes: head.len() as u64,
            excerpt: excerpt(&head),
        }
    }

    /// The whole body, at most `limit` bytes.
    pub fn read_to_vec(self, limit: u64) -> Result<Vec<u8>, HttpError> {
        let (method, url, status) = (self.method, self.url.clone(), self.status);
        let mut body = Vec::new();
        let read = self
            .into_raw_reader()
            .take(limit.saturating_add(1))
            .read_to_end(&mut body);
        if let Err(e) = read {
            return Err(HttpError::Body {
                method,
                url,
                status,
                bytes: body.len() as u64,
                message: e.to_string(),
            });
        }
        if body.len() as u64 > limit {
            return Err(HttpError::TooLarge {
                method,
                url,
                status,
                limit,
            });
        }
        Ok(body)
    }

    /// The body as a stream that counts what it returned; a read error's message names the
    /// request, the status and the bytes received so far.
    pub fn into_reader(self) -> BodyReader {
        BodyReader {
            method: self.method,
            url: self.url.clone(),
            status: self.status,
            bytes: 0,
            inner: self.into_raw_reader(),
        }
    }

    fn into_raw_reader(self) -> ureq::BodyReader<'static> {
        self.body.into_with_config().limit(u64::MAX).reader()
    }
}

pub struct BodyReader {
    pub method: &'static str,
    pub url: String,
    pub status: u16,
    /// Bytes returned so far.
    pub bytes: u64,
    inner: ureq::BodyReader<'static>,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.bytes += n as u64;
                Ok(n)
            }
            Err(e) => Err(io::Error::new(
                e.kind(),
                HttpError::Body {
                    method: self.method,
                    url: self.url.clone(),
                    status: self.status,
                    bytes: self.bytes,
                    message: e.to_string(),
                },
            )),
        }
    }
}
