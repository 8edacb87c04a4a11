//! Moving a payload body from its stream to the slot: large aligned buffers, the SHA-256 in a
//! second thread, the writes in a third and, where the slot is written with O_DIRECT, the
//! read-back of each written chunk (hashed for the verity tree) in a fourth, so reading, hashing,
//! writing and reading back overlap and no byte is copied between them.

use std::io::{self, Read};
use std::sync::mpsc;

use keel_format::verity::DataHashes;
use ring::digest::{Context, SHA256};

use crate::error::UpdateError;
use keel_cli_support::progress::Progress;

/// Bytes per read and per write.
pub const CHUNK: usize = 4 << 20;
/// Buffers in flight: one being read, one being hashed, one being written, one being read back,
/// one spare.
const BUFFERS: usize = 5;
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

/// Reads back, from the disk and not from a cache, what a [`BodySink`] wrote.
pub trait ReadBack: Send {
    /// Fill `buf` (aligned, a multiple of ALIGN long) with the body bytes at `offset`.
    fn read_chunk(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
}

/// Each chunk, once written, is read back through `source` and the part of it inside the verity
/// data area is hashed into `hashes`, while later chunks are still arriving.
pub struct Verifying<'a> {
    pub source: &'a mut dyn ReadBack,
    pub hashes: &'a mut DataHashes,
}

#[derive(Debug)]
pub enum CopyError {
    Read(io::Error),
    Short { got: u64, want: u64 },
    Trailing { want: u64 },
    Write { offset: u64, source: io::Error },
    ReadBack { offset: u64, source: io::Error },
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
            CopyError::ReadBack { offset, source } => match slot {
                Some((disk, label)) => UpdateError::SlotIo {
                    disk: disk.to_path_buf(),
                    slot: label.to_string(),
                    what: format!("reading back payload {payload} at byte {offset} failed"),
                    source,
                },
                None => transport(source.to_string()),
            },
        }
    }
}

/// Copy exactly `len` bytes from `src` into `sink` (or nowhere) and return their SHA-256. The
/// stream must end right after them. Only whole ALIGN-sized chunks reach the sink: a stream that
/// ends early leaves its tail unwritten and reports `Short`. With `verifying`, every written
/// chunk is read back and its data-area blocks hashed.
pub fn copy_and_hash(
    src: &mut dyn Read,
    len: u64,
    mut sink: Option<&mut dyn BodySink>,
    verifying: Option<Verifying<'_>>,
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
    let (check_tx, check_rx) = mpsc::sync_channel::<(AlignedBuf, u64)>(BUFFERS);
    let read_back = verifying.is_some();

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
        let free = free_tx.clone();
        let writer = s.spawn(move || -> Result<(), CopyError> {
            for (buf, offset) in write_rx {
                if let Some(sink) = sink.as_mut() {
                    sink.write_chunk(offset, buf.filled())
                        .map_err(|source| CopyError::Write { offset, source })?;
                }
                progress.set(offset + buf.filled().len() as u64);
                if read_back {
                    if check_tx.send((buf, offset)).is_err() {
                        break;
                    }
                } else {
                    let _ = free.send(buf);
                }
            }
            Ok(())
        });
        let checker = s.spawn(move || -> Result<(), CopyError> {
            let Some(Verifying { source, hashes }) = verifying else {
                return Ok(());
            };
            for (mut buf, offset) in check_rx {
                let n = buf.filled().len();
                source
                    .read_chunk(offset, &mut buf.space()[..n])
                    .map_err(|source| CopyError::ReadBack { offset, source })?;
                let in_data = hashes.data_size().saturating_sub(offset).min(n as u64) as usize;
                if in_data > 0 {
                    hashes
                        .push(&buf.space()[..in_data])
                        .map_err(|e| CopyError::ReadBack {
                            offset,
                            source: io::Error::other(e.to_string()),
                        })?;
                }
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
            // No free buffer: the writer or the checker stopped, and its error is reported below.
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
        let check_result = checker.join().expect("read-back thread");
        read_result?;
        write_result?;
        check_result?;
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

    /// A disk shared by a sink and a read-back; `flip` is a byte the disk stores wrong.
    #[derive(Clone)]
    struct SharedDisk {
        bytes: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
        flip: Option<usize>,
    }
    impl BodySink for SharedDisk {
        fn write_chunk(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
            let mut disk = self.bytes.lock().unwrap();
            let at = offset as usize;
            disk[at..at + data.len()].copy_from_slice(data);
            if let Some(i) = self.flip.filter(|i| (at..at + data.len()).contains(i)) {
                disk[i] ^= 1;
            }
            Ok(())
        }
    }
    impl ReadBack for SharedDisk {
        fn read_chunk(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            let disk = self.bytes.lock().unwrap();
            let at = offset as usize;
            buf.copy_from_slice(&disk[at..at + buf.len()]);
            Ok(())
        }
    }

    #[test]
    fn read_back_hashes_what_the_disk_holds() {
        let salt = [3u8; 32];
        let data = body(2 * CHUNK + 3 * ALIGN);
        // The data area ends inside the last chunk; the rest stands for the hash area.
        let data_size = (2 * CHUNK + ALIGN) as u64;
        let expected =
            keel_format::verity::build(&mut &data[..], data_size, &salt, uuid::Uuid::nil(), |_| {})
                .unwrap();
        for flip in [None, Some(CHUNK + 5)] {
            let disk = SharedDisk {
                bytes: std::sync::Arc::new(std::sync::Mutex::new(vec![0; data.len()])),
                flip,
            };
            let mut sink = disk.clone();
            let mut source = disk.clone();
            let mut hashes = DataHashes::new(data_size, &salt).unwrap();
            let verifying = Verifying {
                source: &mut source,
                hashes: &mut hashes,
            };
            let digest = copy_and_hash(
                &mut &data[..],
                data.len() as u64,
                Some(&mut sink),
                Some(verifying),
                &Silent,
            )
            .unwrap();
            // The stream's hash is of the bytes that arrived, whatever the disk did with them.
            assert_eq!(&digest[..], ring::digest::digest(&SHA256, &data).as_ref());
            let tree = hashes.finish(uuid::Uuid::nil()).unwrap();
            assert_eq!(
                tree.root_hash == expected.root_hash,
                flip.is_none(),
                "flip {flip:?}"
            );
        }
    }

    #[test]
    fn a_failed_read_back_stops_the_copy() {
        struct Unreadable;
        impl ReadBack for Unreadable {
            fn read_chunk(&mut self, _: u64, _: &mut [u8]) -> io::Result<()> {
                Err(io::Error::other("medium error"))
            }
        }
        let data = body(3 * CHUNK);
        let mut hashes = DataHashes::new(data.len() as u64, &[]).unwrap();
        let err = copy_and_hash(
            &mut &data[..],
            data.len() as u64,
            Some(&mut Collect(Vec::new())),
            Some(Verifying {
                source: &mut Unreadable,
                hashes: &mut hashes,
            }),
            &Silent,
        )
        .unwrap_err();
        assert!(
            matches!(err, CopyError::ReadBack { offset: 0, .. }),
            "{err:?}"
        );
    }

    fn body(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 253) as u8).collect()
    }

    #[test]
    fn copies_and_hashes_across_many_chunks() {
        let data = body(3 * CHUNK + 5 * ALIGN);
        let mut sink = Collect(Vec::new());
        let digest = copy_and_hash(
            &mut &data[..],
            data.len() as u64,
            Some(&mut sink),
            None,
            &Silent,
        )
        .unwrap();
        assert_eq!(sink.0, data);
        assert_eq!(&digest[..], ring::digest::digest(&SHA256, &data).as_ref());
    }

    #[test]
    fn short_trailing_and_write_errors() {
        let data = body(2 * CHUNK);
        let mut sink = Collect(Vec::new());
        let short = &data[..CHUNK + 100];
        match copy_and_hash(
            &mut &short[..],
            data.len() as u64,
            Some(&mut sink),
            None,
            &Silent,
        ) {
            Err(CopyError::Short { got, want }) => {
                assert_eq!((got, want), (CHUNK as u64 + 100, data.len() as u64))
            }
            other => panic!("{other:?}"),
        }
        // Only the complete first chunk was written; the torn tail never reached the sink.
        assert_eq!(sink.0.len(), CHUNK);

        let err = copy_and_hash(&mut &data[..], CHUNK as u64, None, None, &Silent).unwrap_err();
        assert!(matches!(err, CopyError::Trailing { .. }), "{err:?}");

        let err = copy_and_hash(
            &mut &data[..],
            data.len() as u64,
            Some(&mut FailAt(CHUNK as u64)),
            None,
            &Silent,
        )
        .unwrap_err();
        assert!(
            matches!(err, CopyError::Write { offset, .. } if offset == CHUNK as u64),
            "{err:?}"
        );
    }
}
