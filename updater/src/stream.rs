//! Moving a payload body from its stream to the slot: large aligned buffers, the SHA-256 in a
//! second thread and the writes in a third, so reading, hashing and writing overlap and no byte
//! is copied between them.

use std::io::{self, Read};
use std::sync::mpsc;

use ring::digest::{Context, SHA256};

use crate::error::UpdateError;
use keel_cli_support::progress::Progress;

/// Bytes per read and per write.
pub const CHUNK: usize = 4 << 20;
/// Buffers in flight: one being read, one being hashed, one being written, one spare.
const BUFFERS: usize = 4;
/// Alignment of buffers, offsets and lengths for O_DIRECT (any logical block size up to 4 KiB).
pub const ALIGN: usize = 4096;

/// A byte buffer whose start is ALIGN-aligned, without unsafe code: over-allocate and skip.
pub struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    capacity: usize,
    filled: usize,
}

impl AlignedBuf {
    pub fn new(capacity: usize) -> AlignedBuf {
        let storage = vec![0u8; capacity + ALIGN];
        let start = storage.as_ptr().align_offset(ALIGN);
        AlignedBuf {
            storage,
            start,
            capacity,
            filled: 0,
        }
    }

    pub fn space(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.capacity]
    }

    pub fn filled(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.filled]
    }

    pub fn set_filled(&mut self, n: usize) {
        assert!(n <= self.capacity);
        self.filled = n;
    }
}

/// Read until `buf` is full or the stream ends; returns the bytes read.
pub fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Where body bytes go: `offset` is relative to the start of the body, `data` is aligned and a
/// multiple of ALIGN long.
pub trait BodySink: Send {
    fn write_chunk(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
}

#[derive(Debug)]
pub enum CopyError {
    Read(io::Error),
    Short { got: u64, want: u64 },
    Trailing { want: u64 },
    Write { offset: u64, source: io::Error },
}

impl CopyError {
    /// Name the payload and, for write errors, the slot.
    pub fn into_update_error(
        self,
        payload: &str,
        slot: Option<(&std::path::Path, &str)>,
    ) -> UpdateError {
        let transport = |reason: String| UpdateError::Transport {
            payload: payload.to_string(),
            reason,
        };
        match self {
            CopyError::Read(e) => transport(e.to_string()),
            CopyError::Short { got, want } => transport(format!(
                "it ended early, after {got} of its {want} body bytes"
            )),
            CopyError::Trailing { want } => UpdateError::Untrusted {
                payload: payload.to_string(),
                reason: format!("it has data after the {want} body bytes its metadata announces"),
            },
            CopyError::Write { offset, source } => match slot {
                Some((disk, label)) => UpdateError::SlotIo {
                    disk: disk.to_path_buf(),
                    slot: label.to_string(),
                    what: format!("writing payload {payload} at byte {offset} failed"),
                    source,
                },
                None => transport(source.to_string()),
            },
        }
    }
}

/// Copy exactly `len` bytes from `src` into `sink` (or nowhere) and return their SHA-256. The
/// stream must end right after them. Only whole ALIGN-sized chunks reach the sink: a stream that
/// ends early leaves its tail unwritten and reports `Short`.
pub fn copy_and_hash(
    src: &mut dyn Read,
    len: u64,
    mut sink: Option<&mut dyn BodySink>,
    progress: &dyn Progress,
) -> Result<[u8; 32], CopyError> {
    let (free_tx, free_rx) = mpsc::channel::<AlignedBuf>();
    for _ in 0..BUFFERS {
        free_tx
            .send(AlignedBuf::new(CHUNK))
            .expect("receiver alive");
    }
    let (hash_tx, hash_rx) = mpsc::sync_channel::<(AlignedBuf, u64)>(BUFFERS);
    let (write_tx, write_rx) = mpsc::sync_channel::<(AlignedBuf, u64)>(BUFFERS);

    std::thread::scope(|s| {
        let hasher = s.spawn(move || {
            let mut ctx = Context::new(&SHA256);
            for (buf, offset) in hash_rx {
                ctx.update(buf.filled());
                if write_tx.send((buf, offset)).is_err() {
                    break;
                }
            }
            ctx.finish()
        });
        let writer = s.spawn(move || -> Result<(), CopyError> {
            for (buf, offset) in write_rx {
                if let Some(sink) = sink.as_mut() {
                    sink.write_chunk(offset, buf.filled())
                        .map_err(|source| CopyError::Write { offset, source })?;
                }
                progress.set(offset + buf.filled().len() as u64);
                let _ = free_tx.send(buf);
            }
            Ok(())
        });

        let mut done = 0u64;
        let read_result = loop {
            if done == len {
                let mut probe = [0u8; 1];
                break match read_full(src, &mut probe) {
                    Ok(0) => Ok(()),
                    Ok(_) => Err(CopyError::Trailing { want: len }),
                    Err(e) => Err(CopyError::Read(e)),
                };
            }
            // No free buffer: the writer stopped, and its error is reported below.
            let Ok(mut buf) = free_rx.recv() else {
                break Ok(());
            };
            let want = (CHUNK as u64).min(len - done) as usize;
            let n = match read_full(src, &mut buf.space()[..want]) {
                Ok(n) => n,
                Err(e) => break Err(CopyError::Read(e)),
            };
            if n < want {
                break Err(CopyError::Short {
                    got: done + n as u64,
                    want: len,
                });
            }
            buf.set_filled(n);
            if hash_tx.send((buf, done)).is_err() {
                break Ok(());
            }
            done += n as u64;
        };
        drop(hash_tx);
        let digest = hasher.join().expect("hasher thread");
        let write_result = writer.join().expect("writer thread");
        read_result?;
        write_result?;
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_cli_support::progress::Silent;

    struct Collect(Vec<u8>);
    impl BodySink for Collect {
        fn write_chunk(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
            assert_eq!(offset as usize, self.0.len());
            assert_eq!(data.as_ptr() as usize % ALIGN, 0);
            self.0.extend_from_slice(data);
            Ok(())
        }
    }

    struct FailAt(u64);
    impl BodySink for FailAt {
        fn write_chunk(&mut self, offset: u64, _: &[u8]) -> io::Result<()> {
            if offset >= self.0 {
                return Err(io::Error::other("disk full"));
            }
            Ok(())
        }
    }

    fn body(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 253) as u8).collect()
    }

    #[test]
    fn copies_and_hashes_across_many_chunks() {
        let data = body(3 * CHUNK + 5 * ALIGN);
        let mut sink = Collect(Vec::new());
        let digest =
            copy_and_hash(&mut &data[..], data.len() as u64, Some(&mut sink), &Silent).unwrap();
        assert_eq!(sink.0, data);
        assert_eq!(&digest[..], ring::digest::digest(&SHA256, &data).as_ref());
    }

    #[test]
    fn short_trailing_and_write_errors() {
        let data = body(2 * CHUNK);
        let mut sink = Collect(Vec::new());
        let short = &data[..CHUNK + 100];
        match copy_and_hash(&mut &short[..], data.len() as u64, Some(&mut sink), &Silent) {
            Err(CopyError::Short { got, want }) => {
                assert_eq!((got, want), (CHUNK as u64 + 100, data.len() as u64))
            }
            other => panic!("{other:?}"),
        }
        // Only the complete first chunk was written; the torn tail never reached the sink.
        assert_eq!(sink.0.len(), CHUNK);

        let err = copy_and_hash(&mut &data[..], CHUNK as u64, None, &Silent).unwrap_err();
        assert!(matches!(err, CopyError::Trailing { .. }), "{err:?}");

        let err = copy_and_hash(
            &mut &data[..],
            data.len() as u64,
            Some(&mut FailAt(CHUNK as u64)),
            &Silent,
        )
        .unwrap_err();
        assert!(
            matches!(err, CopyError::Write { offset, .. } if offset == CHUNK as u64),
            "{err:?}"
        );
    }
}
