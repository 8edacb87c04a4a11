//! Copy a directory tree keeping what matters for /var: modes (setuid, sticky), owners,
//! symlinks, device nodes and FIFOs, and modification times. Existing files are overwritten,
//! so a copy cut short by a power loss is simply redone.

use std::fs;
use std::io;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use nix::fcntl::{AtFlags, AT_FDCWD};
use nix::sys::stat::{mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, Gid, Uid};

fn nix_io(e: nix::Error) -> io::Error {
    io::Error::from(e)
}

fn with_path(p: &Path) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{}: {e}", p.display()))
}

/// Copy the contents of `src` into `dst` (created if missing). Returns the number of entries.
pub fn copy_tree(src: &Path, dst: &Path) -> io::Result<u64> {
    let meta = fs::symlink_metadata(src).map_err(with_path(src))?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a directory", src.display()),
        ));
    }
    copy_entry(src, dst, &meta)
}

fn copy_entry(src: &Path, dst: &Path, meta: &fs::Metadata) -> io::Result<u64> {
    let ft = meta.file_type();
    let mut count = 1;
    if ft.is_dir() {
        match fs::create_dir(dst) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dst.is_dir() => {}
            r => r.map_err(with_path(dst))?,
        }
        for entry in fs::read_dir(src).map_err(with_path(src))? {
            let entry = entry?;
            let m = entry.metadata()?; // lstat: DirEntry::metadata does not follow symlinks
            count += copy_entry(&entry.path(), &dst.join(entry.file_name()), &m)?;
        }
    } else {
        remove_existing(dst)?;
        if ft.is_symlink() {
            symlink(fs::read_link(src)?, dst).map_err(with_path(dst))?;
        } else if ft.is_file() {
            fs::copy(src, dst).map_err(with_path(dst))?;
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            let kind = if ft.is_char_device() {
                SFlag::S_IFCHR
            } else if ft.is_block_device() {
                SFlag::S_IFBLK
            } else {
                SFlag::S_IFIFO
            };
            mknod(
                dst,
                kind,
                Mode::from_bits_truncate(meta.mode()),
                meta.rdev(),
            )
            .map_err(nix_io)
            .map_err(with_path(dst))?;
        } else {
            // Sockets belong to running programs; there is nothing to copy.
            return Ok(0);
        }
    }
    // Owner before mode: chown clears setuid/setgid bits.
    fchownat(
        AT_FDCWD,
        dst,
        Some(Uid::from_raw(meta.uid())),
        Some(Gid::from_raw(meta.gid())),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(nix_io)
    .map_err(with_path(dst))?;
    if !ft.is_symlink() {
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(with_path(dst))?;
    }
    let atime = TimeSpec::new(meta.atime(), meta.atime_nsec());
    let mtime = TimeSpec::new(meta.mtime(), meta.mtime_nsec());
    utimensat(
        AT_FDCWD,
        dst,
        &atime,
        &mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(nix_io)
    .map_err(with_path(dst))?;
    Ok(count)
}

fn remove_existing(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::chown;

    #[test]
    fn keeps_modes_owners_links_and_nodes() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        let dst = t.path().join("dst");
        fs::create_dir_all(src.join("lib/app")).unwrap();
        fs::create_dir(src.join("tmp")).unwrap();
        fs::set_permissions(src.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
        fs::write(src.join("lib/app/state"), b"hello").unwrap();
        chown(src.join("lib/app"), Some(1234), Some(5678)).unwrap();
        chown(src.join("lib/app/state"), Some(1234), Some(5678)).unwrap();
        fs::set_permissions(
            src.join("lib/app/state"),
            fs::Permissions::from_mode(0o4750),
        )
        .unwrap();
        symlink("../run", src.join("run")).unwrap();
        symlink("/nonexistent", src.join("dangling")).unwrap();
        nix::unistd::mkfifo(&src.join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        mknod(
            &src.join("null"),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap();
        let old = TimeSpec::new(1_000_000, 0);
        utimensat(
            AT_FDCWD,
            &src.join("lib/app/state"),
            &old,
            &old,
            UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();

        // A partial earlier copy: a stale file and a file where a symlink belongs.
        fs::create_dir_all(&dst).unwrap();
        fs::write(dst.join("run"), b"stale").unwrap();

        assert_eq!(copy_tree(&src, &dst).unwrap(), 9);
        let m = fs::metadata(dst.join("lib/app/state")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o4750);
        assert_eq!((m.uid(), m.gid()), (1234, 5678));
        assert_eq!(m.mtime(), 1_000_000);
        assert_eq!(fs::read(dst.join("lib/app/state")).unwrap(), b"hello");
        assert_eq!(fs::metadata(dst.join("lib/app")).unwrap().uid(), 1234);
        assert_eq!(
            fs::metadata(dst.join("tmp")).unwrap().mode() & 0o7777,
            0o1777
        );
        assert_eq!(fs::read_link(dst.join("run")).unwrap(), Path::new("../run"));
        assert_eq!(
            fs::read_link(dst.join("dangling")).unwrap(),
            Path::new("/nonexistent")
        );
        assert!(fs::symlink_metadata(dst.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo());
        let n = fs::symlink_metadata(dst.join("null")).unwrap();
        assert!(n.file_type().is_char_device());
        assert_eq!(n.rdev(), nix::sys::stat::makedev(1, 3));

        // Copying again changes nothing.
        assert_eq!(copy_tree(&src, &dst).unwrap(), 9);
        assert!(copy_tree(&src.join("run"), &dst).is_err());
    }
}
