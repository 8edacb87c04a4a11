//! The cloud-config as plain typed data, read from the normalised node tree. Reading is
//! lenient (a key of the wrong type reads as absent, an unknown key is skipped): the
//! validator is what reports problems, and the boot-time path refuses a document with errors.
//! Items keep the line they start on so whatever applies them can name file:line.

use crate::encoding::{self, DecodeError};
use crate::values;
use crate::yaml::{Node, Resolved, Value};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CloudConfig {
    pub hostname: Option<String>,
    pub users: Vec<User>,
    /// Keys for the user `core`.
    pub ssh_authorized_keys: Vec<String>,
    pub write_files: Vec<WriteFile>,
    pub manage_etc_hosts: Option<String>,
    pub coreos: CoreOs,
    /// The line of each top-level key (normalised), for messages about whole-key settings
    /// (`hostname`, `ssh_authorized_keys`, `manage_etc_hosts`).
    pub key_lines: Vec<(String, usize)>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CoreOs {
    pub units: Vec<Unit>,
    pub update: Option<Update>,
    pub locksmith: Option<Locksmith>,
    pub etcd: Option<Section>,
    pub etcd2: Option<Section>,
    pub fleet: Option<Section>,
    pub flannel: Option<Section>,
    pub oem: Option<Oem>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct User {
    pub line: usize,
    pub name: Option<String>,
    /// A crypt(3) hash, as `/etc/shadow` holds it.
    pub passwd: Option<String>,
    pub groups: Vec<String>,
    pub ssh_authorized_keys: Vec<String>,
    pub homedir: Option<String>,
    pub shell: Option<String>,
    pub primary_group: Option<String>,
    pub gecos: Option<String>,
    pub no_create_home: bool,
    pub system: bool,
    pub no_user_group: bool,
    pub no_log_init: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteFile {
    pub line: usize,
    pub path: Option<String>,
    /// As written (a `!!binary` value already base64-decoded, as go-yaml does); see
    /// [`WriteFile::decoded_content`].
    pub content: Vec<u8>,
    pub encoding: Option<String>,
    /// Octal text as written (`"0644"`); see [`WriteFile::mode`].
    pub permissions: Option<String>,
    /// `user`, `user:group`, or numeric ids.
    pub owner: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitCommand {
    Start,
    Stop,
    Restart,
    Reload,
    TryRestart,
    ReloadOrRestart,
    ReloadOrTryRestart,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Unit {
    pub line: usize,
    pub name: Option<String>,
    pub content: Option<String>,
    /// `None` when absent or not one of the seven verbs (the validator reports the latter).
    pub command: Option<UnitCommand>,
    pub enable: bool,
    /// Write under /run (gone at reboot) instead of /etc.
    pub runtime: bool,
    pub mask: bool,
    pub drop_ins: Vec<DropIn>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DropIn {
    pub line: usize,
    pub name: Option<String>,
    pub content: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebootStrategy {
    EtcdLock,
    Reboot,
    Off,
    BestEffort,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Update {
    pub line: usize,
    pub reboot_strategy: Option<RebootStrategy>,
    pub group: Option<String>,
    pub server: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Locksmith {
    pub line: usize,
    pub endpoint: Option<String>,
    pub etcd_cafile: Option<String>,
    pub etcd_certfile: Option<String>,
    pub etcd_keyfile: Option<String>,
    pub etcd_username: Option<String>,
    pub etcd_password: Option<String>,
    pub group: Option<String>,
    /// `[Day ]HH:MM`, e.g. `Thu 04:00`.
    pub window_start: Option<String>,
    /// A Go duration, e.g. `1h`.
    pub window_length: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Oem {
    pub line: usize,
    pub id: Option<String>,
    pub name: Option<String>,
    pub version_id: Option<String>,
    pub home_url: Option<String>,
    pub bug_report_url: Option<String>,
}

/// A section handed on whole (etcd, etcd2, fleet, flannel): its scalar settings in order,
/// keys normalised (`initial_cluster`), values as written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Section {
    pub line: usize,
    pub settings: Vec<(String, String)>,
}

impl UnitCommand {
    pub fn parse(s: &str) -> Option<UnitCommand> {
        Some(match s {
            "start" => UnitCommand::Start,
            "stop" => UnitCommand::Stop,
            "restart" => UnitCommand::Restart,
            "reload" => UnitCommand::Reload,
            "try-restart" => UnitCommand::TryRestart,
            "reload-or-restart" => UnitCommand::ReloadOrRestart,
            "reload-or-try-restart" => UnitCommand::ReloadOrTryRestart,
            _ => return None,
        })
    }

    /// The systemctl verb.
    pub fn as_str(self) -> &'static str {
        values::UNIT_COMMANDS[self as usize]
    }
}

impl RebootStrategy {
    pub fn parse(s: &str) -> Option<RebootStrategy> {
        Some(match s {
            "etcd-lock" => RebootStrategy::EtcdLock,
            "reboot" => RebootStrategy::Reboot,
            "off" => RebootStrategy::Off,
            "best-effort" => RebootStrategy::BestEffort,
            _ => return None,
        })
    }

    /// The `REBOOT_STRATEGY=` value in update.conf.
    pub fn as_str(self) -> &'static str {
        match self {
            RebootStrategy::EtcdLock => "etcd-lock",
            RebootStrategy::Reboot => "reboot",
            RebootStrategy::Off => "off",
            RebootStrategy::BestEffort => "best-effort",
        }
    }
}

impl WriteFile {
    /// The bytes to write: `content` decoded as `encoding` says.
    pub fn decoded_content(&self) -> Result<Vec<u8>, DecodeError> {
        encoding::decode(&self.content, self.encoding.as_deref().unwrap_or(""))
    }

    /// `permissions` as a mode; `None` when absent or not octal.
    pub fn mode(&self) -> Option<u32> {
        let p = self.permissions.as_deref()?;
        if !values::permissions_ok(p) {
            return None;
        }
        u32::from_str_radix(p, 8).ok()
    }
}

// --- reading the tree -------------------------------------------------------------------

fn scalar_text(n: &Node) -> Option<String> {
    let s = n.as_scalar()?;
    if s.resolve() == Resolved::Null {
        return None;
    }
    Some(String::from_utf8_lossy(s.bytes()).into_owned())
}

fn string(n: &Node, key: &str) -> Option<String> {
    n.get(key).and_then(|e| scalar_text(&e.value))
}

fn flag(n: &Node, key: &str) -> bool {
    n.get(key)
        .and_then(|e| e.value.as_scalar())
        .is_some_and(|s| s.resolve() == Resolved::Bool(true))
}

fn strings(n: &Node, key: &str) -> Vec<String> {
    n.get(key)
        .map(|e| e.value.items().iter().filter_map(scalar_text).collect())
        .unwrap_or_default()
}

fn maps<'a>(n: &'a Node, key: &str) -> impl Iterator<Item = &'a Node> {
    n.get(key)
        .map(|e| e.value.items())
        .unwrap_or_default()
        .iter()
        .filter(|i| matches!(i.value, Value::Map(_)))
}

fn section<'a>(n: &'a Node, key: &str) -> Option<(&'a Node, usize)> {
    n.get(key)
        .filter(|e| matches!(e.value.value, Value::Map(_)))
        .map(|e| (&e.value, e.key_line))
}

impl CloudConfig {
    /// The line of top-level key `key` (1 when unknown: the header).
    pub fn line_of(&self, key: &str) -> usize {
        self.key_lines
            .iter()
            .find(|(k, _)| k == key)
            .map_or(1, |(_, l)| *l)
    }

    /// Read a normalised document root (a mapping).
    pub fn from_node(root: &Node) -> CloudConfig {
        let mut cc = CloudConfig {
            hostname: string(root, "hostname"),
            ssh_authorized_keys: strings(root, "ssh_authorized_keys"),
            manage_etc_hosts: string(root, "manage_etc_hosts"),
            key_lines: match &root.value {
                Value::Map(entries) => entries
                    .iter()
                    .map(|e| (e.key.clone(), e.key_line))
                    .collect(),
                _ => Vec::new(),
            },
            ..CloudConfig::default()
        };
        cc.users = maps(root, "users").map(user).collect();
        cc.write_files = maps(root, "write_files").map(write_file).collect();
        if let Some((c, _)) = section(root, "coreos") {
            cc.coreos = coreos(c);
        }
        cc
    }
}

fn user(n: &Node) -> User {
    User {
        line: n.line,
        name: string(n, "name"),
        passwd: string(n, "passwd"),
        groups: strings(n, "groups"),
        ssh_authorized_keys: strings(n, "ssh_authorized_keys"),
        homedir: string(n, "homedir"),
        shell: string(n, "shell"),
        primary_group: string(n, "primary_group"),
        gecos: string(n, "gecos"),
        no_create_home: flag(n, "no_create_home"),
        system: flag(n, "system"),
        no_user_group: flag(n, "no_user_group"),
        no_log_init: flag(n, "no_log_init"),
    }
}

fn write_file(n: &Node) -> WriteFile {
    WriteFile {
        line: n.line,
        path: string(n, "path"),
        content: n
            .get("content")
            .and_then(|e| e.value.as_scalar())
            .filter(|s| s.resolve() != Resolved::Null)
            .map(|s| s.bytes().to_vec())
            .unwrap_or_default(),
        encoding: string(n, "encoding"),
        permissions: string(n, "permissions"),
        owner: string(n, "owner"),
    }
}

fn coreos(c: &Node) -> CoreOs {
    let whole = |key: &str| {
        section(c, key).map(|(n, line)| Section {
            line,
            settings: match &n.value {
                Value::Map(entries) => entries
                    .iter()
                    .filter_map(|e| Some((e.key.clone(), scalar_text(&e.value)?)))
                    .collect(),
                _ => Vec::new(),
            },
        })
    };
    CoreOs {
        units: maps(c, "units").map(unit).collect(),
        update: section(c, "update").map(|(n, line)| Update {
            line,
            reboot_strategy: string(n, "reboot_strategy")
                .as_deref()
                .and_then(RebootStrategy::parse),
            group: string(n, "group"),
            server: string(n, "server"),
        }),
        locksmith: section(c, "locksmith").map(|(n, line)| Locksmith {
            line,
            endpoint: string(n, "endpoint"),
            etcd_cafile: string(n, "etcd_cafile"),
            etcd_certfile: string(n, "etcd_certfile"),
            etcd_keyfile: string(n, "etcd_keyfile"),
            etcd_username: string(n, "etcd_username"),
            etcd_password: string(n, "etcd_password"),
            group: string(n, "group"),
            window_start: string(n, "window_start"),
            window_length: string(n, "window_length"),
        }),
        oem: section(c, "oem").map(|(n, line)| Oem {
            line,
            id: string(n, "id"),
            name: string(n, "name"),
            version_id: string(n, "version_id"),
            home_url: string(n, "home_url"),
            bug_report_url: string(n, "bug_report_url"),
        }),
        etcd: whole("etcd"),
        etcd2: whole("etcd2"),
        fleet: whole("fleet"),
        flannel: whole("flannel"),
    }
}

fn unit(n: &Node) -> Unit {
    Unit {
        line: n.line,
        name: string(n, "name"),
        content: string(n, "content"),
        command: string(n, "command").as_deref().and_then(UnitCommand::parse),
        enable: flag(n, "enable"),
        runtime: flag(n, "runtime"),
        mask: flag(n, "mask"),
        drop_ins: maps(n, "drop_ins")
            .map(|d| DropIn {
                line: d.line,
                name: string(d, "name"),
                content: string(d, "content"),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_names_round_trip() {
        for name in values::UNIT_COMMANDS {
            assert_eq!(UnitCommand::parse(name).unwrap().as_str(), *name);
        }
        for name in values::REBOOT_STRATEGIES {
            assert_eq!(RebootStrategy::parse(name).unwrap().as_str(), *name);
        }
    }

    #[test]
    fn modes() {
        let f = |p: &str| WriteFile {
            permissions: Some(p.into()),
            ..WriteFile::default()
        };
        assert_eq!(f("0644").mode(), Some(0o644));
        assert_eq!(f("744").mode(), Some(0o744));
        assert_eq!(f("1777").mode(), Some(0o1777));
        assert_eq!(f("rw").mode(), None);
    }
}
