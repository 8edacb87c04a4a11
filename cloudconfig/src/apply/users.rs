//! Users (passwd, shadow, group, home directory) and `~/.ssh/authorized_keys`.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::accounts::{self, Table, GROUP_FIELDS, PASSWD_FIELDS, SHADOW_FIELDS};
use super::rootfs::{self, Change};
use super::ApplyError;
use crate::config::User;

/// The shell and home parent of a new user, as Flatcar's useradd defaults.
pub const DEFAULT_SHELL: &str = "/bin/bash";
pub const HOME_MODE: u32 = 0o700;
/// The `users` group, for `no_user_group`.
const USERS_GID: u32 = 100;

/// The three account files, read from the root.
pub struct Accounts {
    pub passwd: Table,
    pub group: Table,
    pub shadow: Table,
}

fn read_table(root: &Path, path: &str, width: usize) -> Result<Table, ApplyError> {
    let at = rootfs::resolve(root, path)?;
    let bytes = rootfs::read(&at)?.unwrap_or_default();
    Ok(Table::parse(&String::from_utf8_lossy(&bytes), width))
}

impl Accounts {
    pub fn read(root: &Path) -> Result<Accounts, ApplyError> {
        Ok(Accounts {
            passwd: read_table(root, "/etc/passwd", PASSWD_FIELDS)?,
            group: read_table(root, "/etc/group", GROUP_FIELDS)?,
            shadow: read_table(root, "/etc/shadow", SHADOW_FIELDS)?,
        })
    }

    /// Write each file that changed, atomically (passwd and group 0644, shadow 0640).
    fn write(&self, root: &Path) -> Result<Change, ApplyError> {
        let mut change = Change::Unchanged;
        for (path, table, mode) in [
            ("/etc/group", &self.group, 0o644),
            ("/etc/passwd", &self.passwd, 0o644),
            ("/etc/shadow", &self.shadow, 0o640),
        ] {
            let at = rootfs::resolve(root, path)?;
            let text = table.render();
            if rootfs::read(&at)?.as_deref() == Some(text.as_bytes()) {
                continue;
            }
            // Keep the mode an existing file has (shadow is 0640 or 0600 by distribution).
            let mode = fs::metadata(at.host_path())
                .map(|m| m.mode() & 0o7777)
                .unwrap_or(mode);
            change = change.or(rootfs::write_file(&at, text.as_bytes(), mode, None)?);
        }
        Ok(change)
    }
}

fn days_since_epoch() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 86400)
        .unwrap_or(0)
}

/// Add the user, or update the one that exists (fields the config gives; groups added,
/// never removed). Missing supplementary groups are an error after everything else is done.
pub fn apply_user(root: &Path, u: &User) -> Result<Change, ApplyError> {
    let name = u.name.as_deref().unwrap_or_default();
    if name.is_empty() || name.contains([':', '\n', '/']) {
        return Err(ApplyError::Invalid(format!("{name:?} is not a user name")));
    }
    for (field, v) in [
        ("gecos", &u.gecos),
        ("shell", &u.shell),
        ("homedir", &u.homedir),
        ("passwd", &u.passwd),
    ] {
        if v.as_deref().is_some_and(|v| v.contains([':', '\n'])) {
            return Err(ApplyError::Invalid(format!(
                "{field} cannot contain ':' or a newline"
            )));
        }
    }
    let mut acc = Accounts::read(root)?;
    let primary_gid = match &u.primary_group {
        Some(g) => Some(accounts::group_id(g, &acc.group).map_err(ApplyError::Invalid)?),
        None => None,
    };

    let (uid, gid, home) = if let Some(e) = acc.passwd.get_mut(name) {
        // An existing user: updated, never duplicated.
        if let Some(g) = primary_gid {
            e[3] = g.to_string();
        }
        if let Some(v) = &u.gecos {
            e[4] = v.clone();
        }
        if let Some(v) = &u.homedir {
            e[5] = v.clone();
        }
        if let Some(v) = &u.shell {
            e[6] = v.clone();
        }
        let (uid, gid) = (accounts::id(e.get(2)), accounts::id(e.get(3)));
        let home = e[5].clone();
        match (uid, gid) {
            (Some(uid), Some(gid)) => (uid, gid, home),
            _ => {
                return Err(ApplyError::Invalid(format!(
                    "{name} in /etc/passwd has no numeric uid/gid"
                )))
            }
        }
    } else {
        let range = if u.system {
            accounts::SYSTEM_IDS
        } else {
            accounts::USER_IDS
        };
        let used = [acc.passwd.ids(), acc.group.ids()];
        let uid = accounts::free_id(range, &used[..1])
            .ok_or_else(|| ApplyError::Invalid("no free uid".into()))?;
        let gid = match primary_gid {
            Some(g) => g,
            None if u.no_user_group => USERS_GID,
            None => match acc.group.get(name) {
                Some(e) => accounts::id(e.get(2)).unwrap_or(USERS_GID),
                None => {
                    let gid = if acc.group.by_id(uid).is_none() {
                        uid
                    } else {
                        accounts::free_id(range, &used)
                            .ok_or_else(|| ApplyError::Invalid("no free gid".into()))?
                    };
                    acc.group.push(vec![
                        name.into(),
                        "x".into(),
                        gid.to_string(),
                        String::new(),
                    ]);
                    gid
                }
            },
        };
        let home = u.homedir.clone().unwrap_or_else(|| format!("/home/{name}"));
        acc.passwd.push(vec![
            name.into(),
            "x".into(),
            uid.to_string(),
            gid.to_string(),
            u.gecos.clone().unwrap_or_default(),
            home.clone(),
            u.shell.clone().unwrap_or_else(|| DEFAULT_SHELL.into()),
        ]);
        (uid, gid, home)
    };

    // Shadow: the given hash; a new user without one is locked (`!`).
    match (acc.shadow.get_mut(name), &u.passwd) {
        (Some(e), Some(hash)) => e[1] = hash.clone(),
        (Some(_), None) => {}
        (None, hash) => acc.shadow.push(
            [
                name,
                hash.as_deref().unwrap_or("!"),
                &days_since_epoch().to_string(),
                "0",
                "99999",
                "7",
                "",
                "",
                "",
            ]
            .map(String::from)
            .to_vec(),
        ),
    }

    let mut missing = Vec::new();
    for g in &u.groups {
        if acc.group.get(g).is_none() {
            missing.push(g.as_str());
        } else {
            accounts::add_member(&mut acc.group, g, name);
        }
    }

    let mut change = acc.write(root)?;
    if !u.no_create_home {
        change = change.or(make_home(root, &home, uid, gid)?);
    }
    if !missing.is_empty() {
        return Err(ApplyError::Invalid(format!(
            "{name} was applied, but group(s) {} are not in /etc/group",
            missing.join(", ")
        )));
    }
    Ok(change)
}

/// Create the home directory (0700, owned by the user) with `/etc/skel`'s files copied in,
/// when it does not exist yet. An existing home is left as it is.
fn make_home(root: &Path, home: &str, uid: u32, gid: u32) -> Result<Change, ApplyError> {
    let at = rootfs::resolve(root, home)?;
    let path = at.host_path();
    if fs::symlink_metadata(&path).is_ok() {
        return Ok(Change::Unchanged);
    }
    rootfs::create_dirs(&path, HOME_MODE, Some((uid, gid)))?;
    let skel = rootfs::resolve(root, "/etc/skel/x")?.dir;
    if let Ok(entries) = fs::read_dir(&skel) {
        for e in entries.flatten() {
            let m = e.metadata()?;
            if !m.is_file() {
                continue;
            }
            let mut guest = format!("{home}/");
            guest.push_str(&e.file_name().to_string_lossy());
            let dst = rootfs::resolve(root, &guest)?;
            let mode = m.permissions().mode() & 0o7777;
            rootfs::write_file(&dst, &fs::read(e.path())?, mode, Some((uid, gid)))?;
        }
    }
    Ok(Change::Changed)
}

/// Merge `keys` into `~user/.ssh/authorized_keys` (dir 0700, file 0600, owned by the user):
/// keys already there are not added twice; other lines are kept.
pub fn authorized_keys(root: &Path, user: &str, keys: &[String]) -> Result<Change, ApplyError> {
    let acc = Accounts::read(root)?;
    let e = acc
        .passwd
        .get(user)
        .ok_or_else(|| ApplyError::Invalid(format!("user {user:?} is not in /etc/passwd")))?;
    let (uid, gid) = match (accounts::id(e.get(2)), accounts::id(e.get(3))) {
        (Some(u), Some(g)) => (u, g),
        _ => {
            return Err(ApplyError::Invalid(format!(
                "{user} in /etc/passwd has no numeric uid/gid"
            )))
        }
    };
    let home = e[5].trim_end_matches('/').to_string();
    let ssh = rootfs::resolve(root, &format!("{home}/.ssh"))?;
    let ssh_dir = ssh.host_path();
    let mut change = rootfs::create_dirs(&ssh_dir, 0o700, Some((uid, gid)))?;
    change = change.or(rootfs::fix_dir(&ssh_dir, 0o700, Some((uid, gid)))?);
    let at = rootfs::resolve(root, &format!("{home}/.ssh/authorized_keys"))?;
    let existing = rootfs::read(&at)?.unwrap_or_default();
    let mut text = String::from_utf8_lossy(&existing).into_owned();
    let present: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    let mut added: Vec<&str> = Vec::new();
    for k in keys {
        let k = k.trim();
        if k.is_empty() || k.contains('\n') || present.iter().any(|p| p == k) || added.contains(&k)
        {
            continue;
        }
        added.push(k);
        text.push_str(k);
        text.push('\n');
    }
    Ok(change.or(rootfs::write_file(
        &at,
        text.as_bytes(),
        0o600,
        Some((uid, gid)),
    )?))
}

#[cfg(test)]
mod tests {
    use super::super::tests::fixture_root;
    use super::*;

    fn user(name: &str) -> User {
        User {
            name: Some(name.into()),
            ..User::default()
        }
    }

    #[test]
    fn adds_then_leaves_alone() {
        let t = fixture_root();
        let root = t.path();
        let mut u = user("elroy");
        u.groups = vec!["wheel".into()];
        u.gecos = Some("Elroy Jetson".into());
        assert_eq!(apply_user(root, &u).unwrap(), Change::Changed);
        assert_eq!(apply_user(root, &u).unwrap(), Change::Unchanged);
        let passwd = fs::read_to_string(root.join("etc/passwd")).unwrap();
        assert!(passwd.contains("elroy:x:1000:1000:Elroy Jetson:/home/elroy:/bin/bash\n"));
        assert_eq!(
            passwd.lines().filter(|l| l.starts_with("elroy:")).count(),
            1
        );
        let group = fs::read_to_string(root.join("etc/group")).unwrap();
        assert!(group.contains("elroy:x:1000:\n"), "{group}");
        assert!(group.contains("wheel:x:10:root,elroy\n"), "{group}");
        let shadow = fs::read_to_string(root.join("etc/shadow")).unwrap();
        assert!(shadow.contains("elroy:!:"), "{shadow}");
        let home = fs::metadata(root.join("home/elroy")).unwrap();
        assert_eq!(home.mode() & 0o7777, 0o700);
        assert_eq!((home.uid(), home.gid()), (1000, 1000));
        let skel = fs::metadata(root.join("home/elroy/.bashrc")).unwrap();
        assert_eq!((skel.uid(), skel.mode() & 0o777), (1000, 0o644));
    }

    #[test]
    fn updates_an_existing_user_and_system_users() {
        let t = fixture_root();
        let root = t.path();
        let mut u = user("core");
        u.passwd = Some("$6$abc$def".into());
        u.shell = Some("/bin/sh".into());
        u.groups = vec!["wheel".into(), "nosuch".into()];
        let err = apply_user(root, &u).unwrap_err();
        assert!(err.to_string().contains("nosuch"), "{err}");
        let passwd = fs::read_to_string(root.join("etc/passwd")).unwrap();
        assert!(passwd.contains("core:x:500:500:Keel Admin:/home/core:/bin/sh\n"));
        assert_eq!(passwd.lines().filter(|l| l.starts_with("core:")).count(), 1);
        let shadow = fs::read_to_string(root.join("etc/shadow")).unwrap();
        assert!(shadow.contains("core:$6$abc$def:"), "{shadow}");

        let mut s = user("svc");
        s.system = true;
        s.no_create_home = true;
        s.primary_group = Some("wheel".into());
        apply_user(root, &s).unwrap();
        let passwd = fs::read_to_string(root.join("etc/passwd")).unwrap();
        assert!(
            passwd.contains("svc:x:101:10::/home/svc:/bin/bash\n"),
            "{passwd}"
        );
        assert!(!root.join("home/svc").exists());
    }

    #[test]
    fn keys_merge_without_duplicates() {
        let t = fixture_root();
        let root = t.path();
        let keys = vec![
            "ssh-ed25519 AAAA a@b".to_string(),
            "ssh-rsa BBBB c@d".into(),
        ];
        assert_eq!(
            authorized_keys(root, "core", &keys).unwrap(),
            Change::Changed
        );
        assert_eq!(
            authorized_keys(root, "core", &keys).unwrap(),
            Change::Unchanged
        );
        let more = vec!["ssh-rsa BBBB c@d".to_string(), "ssh-rsa CCCC e@f".into()];
        assert_eq!(
            authorized_keys(root, "core", &more).unwrap(),
            Change::Changed
        );
        let path = root.join("home/core/.ssh/authorized_keys");
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "ssh-ed25519 AAAA a@b\nssh-rsa BBBB c@d\nssh-rsa CCCC e@f\n"
        );
        let m = fs::metadata(&path).unwrap();
        assert_eq!((m.mode() & 0o777, m.uid(), m.gid()), (0o600, 500, 500));
        let d = fs::metadata(root.join("home/core/.ssh")).unwrap();
        assert_eq!((d.mode() & 0o777, d.uid()), (0o700, 500));
        assert!(authorized_keys(root, "ghost", &more).is_err());
    }
}
