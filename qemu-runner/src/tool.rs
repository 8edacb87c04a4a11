//! Running the QEMU helper programs, with errors that name the command.

use std::ffi::OsStr;
use std::io::ErrorKind;
use std::process::{Command, Output};

use crate::error::ToolError;

pub const QEMU_SYSTEM: &str = "qemu-system-x86_64";
pub const QEMU_IMG: &str = "qemu-img";

/// Debian package that ships `program`, for error messages.
pub fn package_of(program: &str) -> &'static str {
    if program == QEMU_IMG {
        "qemu-utils"
    } else {
        "qemu-system-x86"
    }
}

/// The command line as a person would type it.
pub fn describe(command: &Command) -> String {
    let mut words = vec![command.get_program().to_string_lossy().into_owned()];
    words.extend(command.get_args().map(|a| a.to_string_lossy().into_owned()));
    words.join(" ")
}

pub fn spawn_error(command: &Command, source: std::io::Error) -> ToolError {
    let program = command.get_program().to_string_lossy().into_owned();
    if source.kind() == ErrorKind::NotFound {
        let package = package_of(&program);
        ToolError::NotFound { program, package }
    } else {
        ToolError::Spawn {
            command: describe(command),
            source,
        }
    }
}

/// Runs `program args...` to completion; a non-zero exit is an error.
pub fn run<I, S>(program: &str, args: I) -> Result<Output, ToolError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(program);
    command.args(args);
    let output = command
        .output()
        .map_err(|source| spawn_error(&command, source))?;
    if !output.status.success() {
        return Err(ToolError::Failed {
            command: describe(&command),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_program_is_named_with_its_package() {
        match run(
            QEMU_IMG
                .to_string()
                .replace("qemu", "no-such-qemu")
                .as_str(),
            ["info"],
        ) {
            Err(ToolError::NotFound { program, .. }) => assert_eq!(program, "no-such-qemu-img"),
            other => panic!("expected NotFound, got {other:?}"),
        }
    }

    #[test]
    fn failing_command_carries_its_stderr() {
        match run(QEMU_IMG, ["info", "/nonexistent/keel.img"]) {
            Err(ToolError::Failed {
                command, stderr, ..
            }) => {
                assert!(command.starts_with("qemu-img info"), "{command}");
                assert!(stderr.contains("/nonexistent/keel.img"), "{stderr}");
            }
            other => panic!("expected Failed, got {other:?}"),
        }
    }
}
