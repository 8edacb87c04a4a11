//! Response bodies: small ones in memory, payload files streamed from a blocking reader.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use tokio::sync::mpsc;

pub type Body = BoxBody<Bytes, io::Error>;

pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

/// `len` bytes of a file from `start`, read in 256 KiB chunks on a blocking thread.
struct FileBody {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    remaining: u64,
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.rx.poll_recv(cx).map(|chunk| {
            chunk.map(|r| {
                r.map(|b| {
                    self.remaining = self.remaining.saturating_sub(b.len() as u64);
                    Frame::data(b)
                })
            })
        })
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

pub fn file(path: PathBuf, start: u64, len: u64) -> Body {
    let (tx, rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let run = || -> io::Result<()> {
            let mut f = File::open(&path)?;
            f.seek(SeekFrom::Start(start))?;
            let mut left = len;
            while left > 0 {
                let mut buf = vec![0u8; left.min(256 * 1024) as usize];
                f.read_exact(&mut buf)?;
                left -= buf.len() as u64;
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                    return Ok(()); // the client went away
                }
            }
            Ok(())
        };
        if let Err(e) = run() {
            let _ = tx.blocking_send(Err(e));
        }
    });
    BoxBody::new(FileBody { rx, remaining: len })
}

/// A plain-text answer: the reason for a 4xx/5xx, or a short confirmation.
pub fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut m = message.into();
    if !m.ends_with('\n') {
        m.push('\n');
    }
    let mut r = Response::new(full(m));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
