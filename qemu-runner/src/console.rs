//! The serial console as QEMU prints it: a reader thread appends every byte to the
//! log file and to an in-memory buffer that waiters search.

use std::fs::File;
use std::io::{Read, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

#[derive(Debug, Default)]
pub struct ConsoleState {
    /// Everything the guest printed since QEMU started.
    pub bytes: Vec<u8>,
    /// QEMU closed its end: it has exited.
    pub closed: bool,
    /// When the last byte arrived.
    pub last_output: Option<Instant>,
}

#[derive(Debug, Default)]
pub struct Console {
    state: Mutex<ConsoleState>,
    changed: Condvar,
}

impl Console {
    fn lock(&self) -> MutexGuard<'_, ConsoleState> {
        // A reader thread never panics while holding the lock; recover regardless.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Calls `check` on every change until it returns `Some`, or until
    /// `deadline` (`None`: no deadline) passes, then returns `None`.
    pub fn wait_until<T>(
        &self,
        deadline: Option<Instant>,
        mut check: impl FnMut(&ConsoleState) -> Option<T>,
    ) -> Option<T> {
        let mut state = self.lock();
        loop {
            if let Some(found) = check(&state) {
                return Some(found);
            }
            state = match deadline {
                None => self
                    .changed
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    self.changed
                        .wait_timeout(state, left)
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .0
                }
            };
        }
    }

    pub fn len(&self) -> usize {
        self.lock().bytes.len()
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// The raw bytes from `start` on.
    pub fn text_bytes_from(&self, start: usize) -> Vec<u8> {
        let state = self.lock();
        state.bytes[start.min(state.bytes.len())..].to_vec()
    }

    pub fn text_from(&self, start: usize) -> String {
        let state = self.lock();
        let start = start.min(state.bytes.len());
        String::from_utf8_lossy(&state.bytes[start..]).into_owned()
    }

    /// When the guest last printed, if it ever did.
    pub fn last_output(&self) -> Option<Instant> {
        self.lock().last_output
    }

    fn append(&self, chunk: &[u8]) {
        let mut state = self.lock();
        state.bytes.extend_from_slice(chunk);
        state.last_output = Some(Instant::now());
        drop(state);
        self.changed.notify_all();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    /// A new QEMU prints on: the console is open again (after its old reader closed it).
    pub fn reopen(&self) {
        self.lock().closed = false;
    }
}

/// Reads `stream` (QEMU's stdout) until it closes.
pub fn spawn_reader(
    mut stream: impl Read + Send + 'static,
    mut log: File,
    echo: bool,
    console: Arc<Console>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("qemu-console".into())
        .spawn(move || {
            let mut chunk = [0u8; 4096];
            let mut log_ok = true;
            loop {
                let n = match stream.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                let bytes = &chunk[..n];
                if log_ok {
                    if let Err(e) = log.write_all(bytes) {
                        eprintln!("keel-qemu: console log write failed, log is incomplete: {e}");
                        log_ok = false;
                    }
                }
                if echo {
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(bytes).and_then(|_| out.flush());
                }
                console.append(bytes);
            }
            console.close();
        })
}

/// Collects a stream (QEMU's stderr) into a shared buffer.
pub fn spawn_collector(
    mut stream: impl Read + Send + 'static,
    sink: Arc<Mutex<Vec<u8>>>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("qemu-stderr".into())
        .spawn(move || {
            let mut chunk = [0u8; 4096];
            loop {
                match stream.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => sink
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
        })
}

/// Position just past the first `needle` in `haystack[from..]`.
pub fn find_after(haystack: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(from.min(haystack.len()));
    }
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|window| window == needle)
        .map(|pos| from + pos + needle.len())
}

/// The last `lines` lines of console output, readable: carriage returns and
/// terminal escape sequences (OVMF draws with them) removed.
pub fn tail(bytes: &[u8], lines: usize) -> String {
    let text = strip_escapes(&String::from_utf8_lossy(bytes));
    let all = collapse_repeats(text.lines());
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs of lines that differ only in their kernel time stamp (a unit printing the same line
/// every second) kept as their first and last line with a count between, so that a tail shows
/// what came before the flood.
fn collapse_repeats<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<String> {
    fn body(line: &str) -> &str {
        match line.strip_prefix('[').and_then(|l| l.split_once("] ")) {
            Some((stamp, rest)) if stamp.trim().parse::<f64>().is_ok() => rest,
            _ => line,
        }
    }
    let mut out: Vec<String> = Vec::new();
    let mut run: Vec<&str> = Vec::new();
    let flush = |run: &mut Vec<&str>, out: &mut Vec<String>| {
        match run.len() {
            0 => {}
            1..=3 => out.extend(run.iter().map(|l| l.to_string())),
            n => {
                out.push(run[0].to_string());
                out.push(format!("… {} more lines like it …", n - 2));
                out.push(run[n - 1].to_string());
            }
        }
        run.clear();
    };
    for line in lines {
        if run.last().is_some_and(|last| body(last) != body(line)) {
            flush(&mut run, &mut out);
        }
        run.push(line);
    }
    flush(&mut run, &mut out);
    out
}

fn strip_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    // CSI: parameters and intermediates, then one final byte @..~
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_after_returns_end_of_match() {
        assert_eq!(find_after(b"abc login: x", 0, b"login:"), Some(10));
        assert_eq!(find_after(b"login: login:", 6, b"login:"), Some(13));
        assert_eq!(find_after(b"login:", 1, b"login:"), None);
        assert_eq!(find_after(b"ab", 5, b"a"), None);
        assert_eq!(find_after(b"ab", 1, b""), Some(1));
    }

    #[test]
    fn tail_collapses_a_flood_of_the_same_line() {
        let mut raw = String::from("[    1.000000] systemd[1]: Started hello.service.\n");
        for i in 0..100 {
            raw.push_str(&format!("[  {:>3}.500000] sh[270]: Hello World\n", i + 2));
        }
        raw.push_str("keel login: ");
        let t = tail(raw.as_bytes(), 5);
        assert_eq!(
            t,
            "[    1.000000] systemd[1]: Started hello.service.\n\
             [    2.500000] sh[270]: Hello World\n\
             … 98 more lines like it …\n\
             [  101.500000] sh[270]: Hello World\n\
             keel login: "
        );
        // Different lines, or a few repeats, are kept as they are.
        let few = b"[ 1.0] a\n[ 2.0] a\n[ 3.0] b\nplain\nplain\n";
        assert_eq!(tail(few, 10), "[ 1.0] a\n[ 2.0] a\n[ 3.0] b\nplain\nplain");
    }

    #[test]
    fn tail_keeps_last_lines_without_escapes() {
        let raw = b"one\r\ntwo\r\n\x1b[1m\x1b[33mthree\x1b[0m\r\nfour";
        assert_eq!(tail(raw, 2), "three\nfour");
        assert_eq!(tail(raw, 10), "one\ntwo\nthree\nfour");
    }

    #[test]
    fn reader_fills_buffer_log_and_closes() {
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("console.log");
        let log = File::create(&log_path).unwrap();
        let console = Arc::new(Console::default());
        let input: &'static [u8] = b"hello\nworld\n";
        let handle = spawn_reader(input, log, false, console.clone()).unwrap();
        let seen = console.wait_until(None, |s| s.closed.then(|| s.bytes.clone()));
        handle.join().unwrap();
        assert_eq!(seen.unwrap(), input);
        assert_eq!(std::fs::read(&log_path).unwrap(), input);
    }
}
