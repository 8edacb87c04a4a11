//! The only code that touches the target filesystem: paths resolved inside a root (like
//! openat2's RESOLVE_IN_ROOT), atomic writes (temp file in the same directory, fsync, rename,
//! fsync of the directory), symlinks replaced atomically, directories created with a mode.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Symlinks followed while resolving one path before giving up (Linux's own limit).
const MAX_LINKS: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("path {0:?} is not absolute")]
    Relative(String),
    #[error("path {0:?} contains \"..\"")]
    DotDot(String),
    #[error("path {0:?} names no file")]
    NoName(String),
    #[error("path {path:?}: symlink {link} leads out of the root")]
    Escape { path: String, link: String },
    #[error("path {path:?}: {component} is not a directory")]
    NotDir { path: String, component: String },
    #[error("path {0:?}: too many levels of symlinks")]
    Loop(String),
    #[error("path {path:?}: {source}")]
    Io { path: String, source: io::Error },
}

/// A path inside the root, resolved: `dir` is the host path of its (resolved) parent
/// directory, which may not exist yet; `name` its last component, never followed.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub dir: PathBuf,
    pub name: OsString,
}

impl Resolved {
    pub fn host_path(&self) -> PathBuf {
        self.dir.join(&self.name)
    }
}

/// Resolve the absolute guest path `path` inside `root`, component by component. `..` in
/// `path` is refused; symlinks met on the way are followed inside the root (an absolute
/// target starts again at the root, a relative one that climbs above the root is refused).
/// The final component is not followed: writing replaces a symlink there, never writes
/// through it.
pub fn resolve(root: &Path, path: &str) -> Result<Resolved, PathError> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(PathError::Relative(path.into()));
    }
    let mut parts: Vec<OsString> = Vec::new();
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => return Err(PathError::DotDot(path.into())),
            Component::Normal(n) => parts.push(n.to_os_string()),
            Component::Prefix(_) => return Err(PathError::Relative(path.into())),
        }
    }
    let name = parts.pop().ok_or_else(|| PathError::NoName(path.into()))?;
    let mut queue: VecDeque<OsString> = parts.into();
    let mut stack: Vec<OsString> = Vec::new();
    let mut links = 0;
    let host = |stack: &[OsString]| stack.iter().fold(root.to_path_buf(), |p, c| p.join(c));
    while let Some(comp) = queue.pop_front() {
        if comp == ".." {
            // Only symlink targets bring `..` here.
            if stack.pop().is_none() {
                return Err(PathError::Escape {
                    path: path.into(),
                    link: "a symlink".into(),
                });
            }
            continue;
        }
        if comp == "." || comp.is_empty() {
            continue;
        }
        let candidate = host(&stack).join(&comp);
        match fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(PathError::Loop(path.into()));
                }
                let target = fs::read_link(&candidate).map_err(|source| PathError::Io {
                    path: path.into(),
                    source,
                })?;
                let guest_link = format!("/{}", guest(&stack, &comp));
                let mut expanded: Vec<OsString> = Vec::new();
                let mut depth = if target.is_absolute() { 0 } else { stack.len() };
                for c in target.components() {
                    match c {
                        Component::ParentDir => {
                            if depth == 0 {
                                return Err(PathError::Escape {
                                    path: path.into(),
                                    link: format!("{guest_link} -> {}", target.display()),
                                });
                            }
                            depth -= 1;
                            expanded.push("..".into());
                        }
                        Component::Normal(n) => {
                            depth += 1;
                            expanded.push(n.to_os_string());
                        }
                        _ => {}
                    }
                }
                if target.is_absolute() {
                    stack.clear();
                }
                for c in expanded.into_iter().rev() {
                    queue.push_front(c);
                }
            }
            Ok(m) if m.is_dir() => stack.push(comp),
            Ok(_) => {
                return Err(PathError::NotDir {
                    path: path.into(),
                    component: format!("/{}", guest(&stack, &comp)),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => stack.push(comp),
            Err(source) => {
                return Err(PathError::Io {
                    path: path.into(),
                    source,
                })
            }
        }
    }
    Ok(Resolved {
        dir: host(&stack),
        name,
    })
}

fn guest(stack: &[OsString], last: &OsStr) -> String {
    stack
        .iter()
        .map(|c| c.to_string_lossy())
        .chain(std::iter::once(last.to_string_lossy()))
        .collect::<Vec<_>>()
        .join("/")
}

/// Did a write change anything?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Changed,
    Unchanged,
}

impl Change {
    pub fn or(self, other: Change) -> Change {
        if self == Change::Changed || other == Change::Changed {
            Change::Changed
        } else {
            Change::Unchanged
        }
    }
}

/// `dir` and its missing parents, each new one created with `mode` and (when given) owner.
pub fn create_dirs(dir: &Path, mode: u32, owner: Option<(u32, u32)>) -> io::Result<Change> {
    if dir.is_dir() {
        return Ok(Change::Unchanged);
    }
    if let Some(parent) = dir.parent() {
        create_dirs(parent, 0o755, None)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(Change::Unchanged),
        Err(e) => return Err(e),
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
    }
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(Change::Changed)
}

/// Make an existing directory have `mode` and owner; `Changed` when it had to.
pub fn fix_dir(dir: &Path, mode: u32, owner: Option<(u32, u32)>) -> io::Result<Change> {
    let m = fs::metadata(dir)?;
    let mut change = Change::Unchanged;
    if m.mode() & 0o7777 != mode {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode))?;
        change = Change::Changed;
    }
    if let Some((uid, gid)) = owner {
        if (m.uid(), m.gid()) != (uid, gid) {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
            change = Change::Changed;
        }
    }
    Ok(change)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn temp_name(name: &OsStr) -> OsString {
    let mut t = OsString::from(".");
    t.push(name);
    t.push(format!(".keel-tmp-{}", std::process::id()));
    t
}

/// Write `content` at `at` atomically with `mode` and (when given) owner, creating missing
/// parent directories 0755. `Unchanged` (and nothing touched) when a regular file there
/// already has that content, mode and owner.
pub fn write_file(
    at: &Resolved,
    content: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> io::Result<Change> {
    let path = at.host_path();
    if let Ok(m) = fs::symlink_metadata(&path) {
        if m.is_file()
            && m.mode() & 0o7777 == mode
            && owner.is_none_or(|o| o == (m.uid(), m.gid()))
            && fs::read(&path)? == content
        {
            return Ok(Change::Unchanged);
        }
    }
    create_dirs(&at.dir, 0o755, None)?;
    let tmp = at.dir.join(temp_name(&at.name));
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(content)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        }
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        sync_dir(&at.dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| Change::Changed)
}

/// Make `at` a symlink to `target` (replacing whatever is there atomically).
pub fn symlink(at: &Resolved, target: &str) -> io::Result<Change> {
    let path = at.host_path();
    if fs::read_link(&path).is_ok_and(|t| t == Path::new(target)) {
        return Ok(Change::Unchanged);
    }
    if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} is a directory", path.display()),
        ));
    }
    create_dirs(&at.dir, 0o755, None)?;
    let tmp = at.dir.join(temp_name(&at.name));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    if let Err(e) = fs::rename(&tmp, &path) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(&at.dir)?;
    Ok(Change::Changed)
}

/// The bytes of the regular file at `at` (`None` when there is none).
pub fn read(at: &Resolved) -> io::Result<Option<Vec<u8>>> {
    match fs::read(at.host_path()) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_inside_and_refuses_escapes() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        fs::create_dir_all(root.join("usr/lib")).unwrap();
        fs::create_dir_all(root.join("etc")).unwrap();
        std::os::unix::fs::symlink("../usr/lib", root.join("etc/rel")).unwrap();
        std::os::unix::fs::symlink("/usr/lib", root.join("etc/abs")).unwrap();
        std::os::unix::fs::symlink("../../../..", root.join("etc/out")).unwrap();
        std::os::unix::fs::symlink("/etc/loop", root.join("etc/loop")).unwrap();
        fs::write(root.join("etc/file"), "x").unwrap();

        let r = resolve(root, "/etc/rel/x.conf").unwrap();
        assert_eq!(r.host_path(), root.join("usr/lib/x.conf"));
        // An absolute target starts again at the root, never at the host's /.
        let r = resolve(root, "/etc/abs/new/x.conf").unwrap();
        assert_eq!(r.host_path(), root.join("usr/lib/new/x.conf"));
        // The final component is never followed.
        let r = resolve(root, "/etc/out").unwrap();
        assert_eq!(r.host_path(), root.join("etc/out"));

        let err = resolve(root, "/etc/out/passwd").unwrap_err();
        assert!(matches!(err, PathError::Escape { .. }), "{err}");
        assert!(err.to_string().contains("/etc/out -> ../../../.."), "{err}");
        assert!(matches!(
            resolve(root, "/etc/../x").unwrap_err(),
            PathError::DotDot(_)
        ));
        assert!(matches!(
            resolve(root, "etc/x").unwrap_err(),
            PathError::Relative(_)
        ));
        assert!(matches!(
            resolve(root, "/etc/loop/x").unwrap_err(),
            PathError::Loop(_)
        ));
        assert!(matches!(
            resolve(root, "/etc/file/x").unwrap_err(),
            PathError::NotDir { .. }
        ));
        assert!(matches!(
            resolve(root, "/").unwrap_err(),
            PathError::NoName(_)
        ));
    }

    #[test]
    fn writes_atomically_and_idempotently() {
        let t = tempfile::tempdir().unwrap();
        let at = resolve(t.path(), "/a/b/c.txt").unwrap();
        assert_eq!(
            write_file(&at, b"hi", 0o640, None).unwrap(),
            Change::Changed
        );
        assert_eq!(
            write_file(&at, b"hi", 0o640, None).unwrap(),
            Change::Unchanged
        );
        let m = fs::metadata(at.host_path()).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o640);
        assert_eq!(
            write_file(&at, b"hi", 0o644, None).unwrap(),
            Change::Changed
        );
        assert_eq!(
            write_file(&at, b"ho", 0o644, None).unwrap(),
            Change::Changed
        );
        assert_eq!(fs::read(at.host_path()).unwrap(), b"ho");
        // No temp file left behind.
        assert_eq!(fs::read_dir(&at.dir).unwrap().count(), 1);
    }

    #[test]
    fn replaces_a_final_symlink_instead_of_writing_through_it() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        fs::write(&victim, "keep").unwrap();
        fs::create_dir(t.path().join("etc")).unwrap();
        std::os::unix::fs::symlink(&victim, t.path().join("etc/x")).unwrap();
        let at = resolve(t.path(), "/etc/x").unwrap();
        write_file(&at, b"new", 0o644, None).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert_eq!(fs::read(t.path().join("etc/x")).unwrap(), b"new");
    }

    #[test]
    fn symlinks_are_idempotent() {
        let t = tempfile::tempdir().unwrap();
        let at = resolve(t.path(), "/etc/systemd/system/x.service").unwrap();
        assert_eq!(symlink(&at, "/dev/null").unwrap(), Change::Changed);
        assert_eq!(symlink(&at, "/dev/null").unwrap(), Change::Unchanged);
        assert_eq!(
            fs::read_link(at.host_path()).unwrap(),
            Path::new("/dev/null")
        );
    }
}
