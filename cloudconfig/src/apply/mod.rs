//! Applying a cloud-config to a root directory: [`plan`] turns the typed config into
//! [`Action`]s (nothing touched: a dry run prints them), [`apply`] carries them out against
//! `root` and returns a [`Report`]. Every path is resolved inside `root`; every write is
//! atomic; applying twice changes nothing the second time; one bad action never stops the
//! others. Nothing here runs systemctl or a script: the report lists what the caller runs.

pub mod accounts;
pub mod action;
pub mod plan;
pub mod report;
pub mod rootfs;
pub mod script;
pub mod system;
pub mod units;
pub mod users;

use std::path::Path;

pub use action::{Action, ActionKind};
pub use plan::{plan, plan_script};
pub use report::{Outcome, Report, Status};
pub use script::StoredScript;

use crate::UserData;
use rootfs::Change;

/// Why one action failed (the report adds the config line and field).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Path(#[from] rootfs::PathError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Invalid(String),
}

/// The actions for any user-data (none for an empty or Ignition one).
pub fn plan_user_data(ud: &UserData) -> Vec<Action> {
    match ud {
        UserData::CloudConfig(cc) => plan(cc),
        UserData::Script(text) => plan_script(text),
        UserData::Empty | UserData::Ignition => Vec::new(),
    }
}

/// Carry out `actions` in order against `root`.
pub fn apply(root: &Path, actions: &[Action]) -> Report {
    let mut report = Report::default();
    for a in actions {
        let status = match &a.kind {
            ActionKind::NotApplied { message } => Status::Warning(message.clone()),
            ActionKind::Invalid { message } => Status::Error(message.clone()),
            ActionKind::RunCommand { unit, command } => {
                report.commands.push((unit.clone(), *command));
                Status::ToRun
            }
            ActionKind::Script { text } => match script::store(root, text) {
                Ok((change, stored)) => {
                    report.scripts.push(stored);
                    change.into()
                }
                Err(e) => Status::Error(e.to_string()),
            },
            kind => match apply_one(root, kind) {
                Ok(change) => {
                    if change == Change::Changed
                        && matches!(
                            kind,
                            ActionKind::UnitFile { .. }
                                | ActionKind::MaskUnit { .. }
                                | ActionKind::EnableUnit { .. }
                        )
                    {
                        report.daemon_reload = true;
                    }
                    change.into()
                }
                Err(e) => Status::Error(e.to_string()),
            },
        };
        report.outcomes.push(Outcome {
            line: a.line,
            field: a.field.clone(),
            summary: a.kind.to_string(),
            status,
        });
    }
    report
}

fn apply_one(root: &Path, kind: &ActionKind) -> Result<Change, ApplyError> {
    match kind {
        ActionKind::Hostname(h) => system::hostname(root, h),
        ActionKind::EtcHosts { hostname } => system::etc_hosts(root, hostname.as_deref()),
        ActionKind::User(u) => users::apply_user(root, u),
        ActionKind::AuthorizedKeys { user, keys } => users::authorized_keys(root, user, keys),
        ActionKind::WriteFile {
            path,
            content,
            mode,
            owner,
        } => {
            let at = rootfs::resolve(root, path)?;
            let owner = match owner {
                Some(spec) => {
                    let acc = users::Accounts::read(root)?;
                    Some(
                        accounts::owner(spec, &acc.passwd, &acc.group)
                            .map_err(ApplyError::Invalid)?,
                    )
                }
                None => None,
            };
            Ok(rootfs::write_file(&at, content, *mode, owner)?)
        }
        ActionKind::UnitFile { path, content } => {
            let at = rootfs::resolve(root, path)?;
            Ok(rootfs::write_file(&at, content.as_bytes(), 0o644, None)?)
        }
        ActionKind::MaskUnit { path } => {
            let at = rootfs::resolve(root, path)?;
            Ok(rootfs::symlink(&at, "/dev/null")?)
        }
        ActionKind::EnableUnit { dir, name } => units::enable(root, dir, name),
        ActionKind::UpdateConf { settings } => system::update_conf(root, settings),
        ActionKind::RunCommand { .. }
        | ActionKind::Script { .. }
        | ActionKind::NotApplied { .. }
        | ActionKind::Invalid { .. } => Ok(Change::Unchanged),
    }
}

#[cfg(test)]
pub(crate) mod tests;
