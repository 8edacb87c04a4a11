//! What applying did, action by action, and what is left for the caller to run.

use super::rootfs::Change;
use super::script::StoredScript;
use crate::config::UnitCommand;

#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    Changed,
    Unchanged,
    /// A unit command, listed in [`Report::commands`] for the caller.
    ToRun,
    Warning(String),
    Error(String),
}

impl From<Change> for Status {
    fn from(c: Change) -> Status {
        match c {
            Change::Changed => Status::Changed,
            Change::Unchanged => Status::Unchanged,
        }
    }
}

/// One action's result, with the config line and field it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub line: usize,
    pub field: String,
    pub summary: String,
    pub status: Status,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub outcomes: Vec<Outcome>,
    /// `systemctl COMMAND UNIT`, in config order, to run after `systemctl daemon-reload`.
    pub commands: Vec<(String, UnitCommand)>,
    /// A unit file or link changed: the caller runs `systemctl daemon-reload` first.
    pub daemon_reload: bool,
    /// `#!` user-data stored; the caller runs those not `already_ran`, then marks them.
    pub scripts: Vec<StoredScript>,
}

impl Report {
    pub fn errors(&self) -> impl Iterator<Item = &Outcome> {
        self.outcomes
            .iter()
            .filter(|o| matches!(o.status, Status::Error(_)))
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Outcome> {
        self.outcomes
            .iter()
            .filter(|o| matches!(o.status, Status::Warning(_)))
    }

    /// Did anything change on disk?
    pub fn changed(&self) -> bool {
        self.outcomes.iter().any(|o| o.status == Status::Changed)
    }

    /// One line per action, `FILE:LINE: FIELD: status: summary`, for the console.
    pub fn to_human(&self, file: &str) -> String {
        let mut s = String::new();
        for o in &self.outcomes {
            let status = match &o.status {
                Status::Changed => "changed".to_string(),
                Status::Unchanged => "unchanged".to_string(),
                Status::ToRun => "to run".to_string(),
                Status::Warning(w) => format!("warning: {w}"),
                Status::Error(e) => format!("error: {e}"),
            };
            // A warning or error that is its own summary (a section not applied, an item that
            // cannot be applied as written) is said once.
            if matches!(&o.status, Status::Warning(w) | Status::Error(w) if *w == o.summary) {
                s.push_str(&format!("{file}:{}: {}: {status}\n", o.line, o.field));
            } else {
                s.push_str(&format!(
                    "{file}:{}: {}: {status}: {}\n",
                    o.line, o.field, o.summary
                ));
            }
        }
        s
    }
}
