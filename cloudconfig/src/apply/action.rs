//! What applying a config does, as plain data: [`plan`](super::plan) makes these, a dry run
//! prints them, [`apply`](super::apply) carries them out.

use std::fmt;

use crate::config::{UnitCommand, User};

/// One thing to do, with the config line and field it comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    pub line: usize,
    /// Where in the config, e.g. `write_files[0] /etc/conf.d/nfs`.
    pub field: String,
    pub kind: ActionKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ActionKind {
    /// `/etc/hostname`.
    Hostname(String),
    /// `manage_etc_hosts: localhost`: a `127.0.0.1` line for the hostname in `/etc/hosts`
    /// (the config's hostname, else the root's `/etc/hostname`).
    EtcHosts { hostname: Option<String> },
    /// Add or update a user in passwd, shadow, group; create the home directory.
    User(Box<User>),
    /// Merge keys into `~user/.ssh/authorized_keys`.
    AuthorizedKeys { user: String, keys: Vec<String> },
    /// A file with its decoded content; `owner` resolved at apply time.
    WriteFile {
        path: String,
        content: Vec<u8>,
        mode: u32,
        owner: Option<String>,
    },
    /// A unit or drop-in file (0644).
    UnitFile { path: String, content: String },
    /// `path` → `/dev/null`.
    MaskUnit { path: String },
    /// The `[Install]` symlinks of unit `name`, made in `dir` (`/etc/systemd/system` or
    /// `/run/systemd/system`).
    EnableUnit { dir: String, name: String },
    /// Set these keys in `/etc/keel/update.conf`, keeping its other lines.
    UpdateConf { settings: Vec<(String, String)> },
    /// For the caller: `systemctl COMMAND UNIT`, after a daemon-reload.
    RunCommand { unit: String, command: UnitCommand },
    /// A `#!` user-data: stored under `/var/lib/keel/cloudinit`, run once by the caller.
    Script { text: String },
    /// A section Keel does not apply yet: a warning, never silence.
    NotApplied { message: String },
    /// Something the config asks for that cannot be done as written (reported as an error).
    Invalid { message: String },
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActionKind::Hostname(h) => write!(f, "set hostname {h:?} in /etc/hostname"),
            ActionKind::EtcHosts { .. } => write!(f, "127.0.0.1 line in /etc/hosts"),
            ActionKind::User(u) => write!(
                f,
                "user {} in /etc/passwd, /etc/shadow, /etc/group",
                u.name.as_deref().unwrap_or("?")
            ),
            ActionKind::AuthorizedKeys { user, keys } => {
                write!(
                    f,
                    "{} key(s) for {user} in ~/.ssh/authorized_keys",
                    keys.len()
                )
            }
            ActionKind::WriteFile { path, mode, .. } => write!(f, "write {path} ({mode:04o})"),
            ActionKind::UnitFile { path, .. } => write!(f, "write unit {path}"),
            ActionKind::MaskUnit { path } => write!(f, "mask {path} -> /dev/null"),
            ActionKind::EnableUnit { dir, name } => write!(f, "enable {name} in {dir}"),
            ActionKind::UpdateConf { settings } => {
                let keys: Vec<&str> = settings.iter().map(|(k, _)| k.as_str()).collect();
                write!(f, "set {} in /etc/keel/update.conf", keys.join(", "))
            }
            ActionKind::RunCommand { unit, command } => {
                write!(f, "systemctl {} {unit}", command.as_str())
            }
            ActionKind::Script { .. } => write!(f, "store the #! user-data to run once"),
            ActionKind::NotApplied { message } | ActionKind::Invalid { message } => {
                f.write_str(message)
            }
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}: {}", self.line, self.field, self.kind)
    }
}
