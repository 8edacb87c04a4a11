//! Files and commands: sparse copies, byte ranges, a flipped bit, a command's output.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A writable sparse copy of `src` in `dir`, under the same name.
pub fn sparse_copy(src: &Path, dir: &Path) -> PathBuf {
    let dst = dir.join(src.file_name().unwrap());
    sparse_copy_to(src, &dst);
    dst
}

/// A writable sparse copy of `src` at `dst`.
pub fn sparse_copy_to(src: &Path, dst: &Path) {
    let st = Command::new("cp")
        .arg("--sparse=always")
        .arg(src)
        .arg(dst)
        .status()
        .unwrap();
    assert!(st.success(), "cp {} {}", src.display(), dst.display());
}

/// Copy `len` bytes at `offset` of `src` into a new file `dst`.
pub fn extract(src: &Path, offset: u64, len: u64, dst: &Path) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut i = File::open(src).unwrap();
    i.seek(SeekFrom::Start(offset)).unwrap();
    let mut o = File::create(dst).unwrap();
    let mut left = len;
    let mut buf = vec![0u8; 4 << 20];
    while left > 0 {
        let n = (buf.len() as u64).min(left) as usize;
        i.read_exact(&mut buf[..n]).unwrap();
        o.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
}

/// Flip one bit of the byte at `offset`.
pub fn flip_byte(path: &Path, offset: u64) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.read_exact(&mut b).unwrap();
    b[0] ^= 0x01;
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&b).unwrap();
}

/// Run a command, returning (success, stdout + stderr).
pub fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The standard output of a command that must succeed, or what went wrong (the command, its
/// status and its standard error).
pub fn stdout_of(command: &mut Command) -> Result<String, String> {
    let shown = format!("{command:?}");
    let output = command
        .output()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{shown} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
