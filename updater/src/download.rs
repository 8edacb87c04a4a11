//! A payload URL as one stream that survives dropped connections: when the body breaks off, the
//! download asks again from the byte it reached (`Range: bytes=N-`) and carries on, a bounded
//! number of times with a doubling pause. The bytes already written are never fetched twice, and
//! the stream's consumer (apply's hashing writer) never sees the break.

use std::io::{self, Read};
use std::time::Duration;

use keel_http::{BodyReader, Client, HttpError, Timeouts};

/// How hard a download tries to resume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResumePolicy {
    /// Range requests after the first request, in total.
    pub attempts: u32,
    /// The pause before the first resume; doubled for each further one.
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for ResumePolicy {
    fn default() -> Self {
        ResumePolicy {
            attempts: 4,
            first_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
        }
    }
}

pub struct Download {
    client: Client,
    url: String,
    policy: ResumePolicy,
    reader: BodyReader,
    /// Bytes delivered to the consumer so far.
    pos: u64,
    total: Option<u64>,
    resumes: u32,
}

impl Download {
    /// `GET url`; a non-2xx answer is an error naming the status and what the body started with.
    pub fn open(url: &str, policy: ResumePolicy) -> Result<Download, HttpError> {
        let client = Client::new(Timeouts::download());
        let response = client.get(url, None, &[])?.success()?;
        let total = response.content_length();
        Ok(Download {
            client,
            url: url.to_string(),
            policy,
            reader: response.into_reader(),
            pos: 0,
            total,
            resumes: 0,
        })
    }

    /// The payload's length, when the server said.
    pub fn total(&self) -> Option<u64> {
        self.total
    }

    /// How many times the download resumed.
    pub fn resumes(&self) -> u32 {
        self.resumes
    }

    /// Ask for the rest from `self.pos`: the answer must be 206 starting exactly there.
    fn resume(&mut self, why: &io::Error) -> io::Result<()> {
        let mut last = why.to_string();
        while self.resumes < self.policy.attempts {
            let shift = self.resumes.min(16);
            let delay = (self.policy.first_delay * (1 << shift)).min(self.policy.max_delay);
            self.resumes += 1;
            eprintln!(
                "keel-update: download of {} broke off after {} bytes ({last}); resuming from there in {:.1} s ({}/{})",
                self.url, self.pos, delay.as_secs_f64(), self.resumes, self.policy.attempts
            );
            std::thread::sleep(delay);
            match self.ranged() {
                Ok(reader) => {
                    self.reader = reader;
                    return Ok(());
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(io::Error::other(format!(
            "{last} (gave up after {} resume attempt(s) at byte {})",
            self.resumes, self.pos
        )))
    }

    fn ranged(&self) -> Result<BodyReader, HttpError> {
        let r = self.client.get(&self.url, Some(self.pos), &[])?;
        if r.status != 206 {
            return Err(r.status_error());
        }
        let want = format!("bytes {}-", self.pos);
        let range = r.header("content-range").unwrap_or("").to_string();
        let total_matches = match (self.total, range.rsplit_once('/')) {
            (Some(t), Some((_, total))) => total.trim() == "*" || total.trim() == t.to_string(),
            _ => true,
        };
        if !range.starts_with(&want) || !total_matches {
            return Err(HttpError::Unexpected {
                method: "GET",
                url: self.url.clone(),
                status: 206,
                bytes: 0,
                expected: format!("the rest of the payload from byte {}", self.pos),
                excerpt: format!("Content-Range {range:?}"),
            });
        }
        Ok(r.into_reader())
    }
}

impl Read for Download {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.reader.read(buf) {
                Ok(0) if self.total.is_some_and(|t| self.pos < t) => {
                    let e = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the body ended at byte {}", self.pos),
                    );
                    self.resume(&e)?;
                }
                Ok(n) => {
                    self.pos += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.resume(&e)?,
            }
        }
    }
}
