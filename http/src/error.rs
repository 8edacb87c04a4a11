//! One error for every request: each message starts with `METHOD URL:` and says what came back.

/// How many bytes of an unexpected body an error quotes.
pub const EXCERPT_BYTES: usize = 120;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// No response: DNS, connect, TLS, proxy negotiation, timeout.
    #[error("{method} {url}: {message}")]
    Transport {
        method: &'static str,
        url: String,
        message: String,
    },
    /// A status the caller did not accept; `excerpt` is the start of the body, escaped.
    #[error("{method} {url}: HTTP {status} ({bytes} bytes{})", excerpt_suffix(.excerpt))]
    Status {
        method: &'static str,
        url: String,
        status: u16,
        bytes: u64,
        excerpt: String,
    },
    /// The body broke off (connection dropped, read timeout).
    #[error(
        "{method} {url}: HTTP {status}: reading the body failed after {bytes} bytes: {message}"
    )]
    Body {
        method: &'static str,
        url: String,
        status: u16,
        bytes: u64,
        message: String,
    },
    /// The body is longer than the caller allows.
    #[error("{method} {url}: HTTP {status}: more than {limit} bytes")]
    TooLarge {
        method: &'static str,
        url: String,
        status: u16,
        limit: u64,
    },
    /// The body arrived but is not what was expected (HTML from a captive portal or a CDN
    /// instead of a payload, say).
    #[error(
        "{method} {url}: HTTP {status}: {bytes} bytes that are not {expected}; it starts {excerpt}"
    )]
    Unexpected {
        method: &'static str,
        url: String,
        status: u16,
        bytes: u64,
        expected: String,
        excerpt: String,
    },
    /// A proxy variable that cannot be used.
    #[error("{method} {url}: proxy {variable}={value:?}: {message}")]
    Proxy {
        method: &'static str,
        url: String,
        variable: String,
        value: String,
        message: String,
    },
}

impl HttpError {
    pub fn url(&self) -> &str {
        match self {
            HttpError::Transport { url, .. }
            | HttpError::Status { url, .. }
            | HttpError::Body { url, .. }
            | HttpError::TooLarge { url, .. }
            | HttpError::Unexpected { url, .. }
            | HttpError::Proxy { url, .. } => url,
        }
    }

    /// The HTTP status, when a response arrived.
    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::Status { status, .. }
            | HttpError::Body { status, .. }
            | HttpError::TooLarge { status, .. }
            | HttpError::Unexpected { status, .. } => Some(*status),
            HttpError::Transport { .. } | HttpError::Proxy { .. } => None,
        }
    }
}

/// The start of a body as a quoted, escaped string (`"<html>\n<head>"`, binary as `\xNN`),
/// surrounding whitespace trimmed, at most [`EXCERPT_BYTES`] bytes of it.
pub fn excerpt(body: &[u8]) -> String {
    let trimmed = body.trim_ascii();
    let head = &trimmed[..trimmed.len().min(EXCERPT_BYTES)];
    let more = if trimmed.len() > head.len() {
        "…"
    } else {
        ""
    };
    format!("\"{}\"{more}", head.escape_ascii())
}

fn excerpt_suffix(excerpt: &str) -> String {
    if excerpt.is_empty() || excerpt == "\"\"" {
        String::new()
    } else {
        format!(": {excerpt}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_escaped_and_bounded() {
        assert_eq!(excerpt(b"  no such config\n"), "\"no such config\"");
        assert_eq!(
            excerpt(b"<a x=\"1\">\x00\xff"),
            "\"<a x=\\\"1\\\">\\x00\\xff\""
        );
        let long = vec![b'a'; 500];
        let e = excerpt(&long);
        assert_eq!(e.len(), EXCERPT_BYTES + 2 + "…".len());
    }

    #[test]
    fn a_status_error_names_everything() {
        let e = HttpError::Status {
            method: "GET",
            url: "http://h/x".into(),
            status: 404,
            bytes: 15,
            excerpt: excerpt(b"no such config\n"),
        };
        assert_eq!(
            e.to_string(),
            "GET http://h/x: HTTP 404 (15 bytes: \"no such config\")"
        );
        assert_eq!(e.status(), Some(404));
    }
}
