//! A minimal QMP client: QEMU's JSON machine protocol on a unix socket, used to
//! know that QEMU finished starting and to press the ACPI power button.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::error::SessionError;

const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Qmp {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Qmp {
    /// Connects, reads the greeting and leaves capabilities negotiation mode.
    pub fn connect(socket: &Path) -> Result<Qmp, SessionError> {
        let io = |context: &str, source| SessionError::Io {
            context: format!("QMP {context} on {}", socket.display()),
            source,
        };
        let writer = UnixStream::connect(socket).map_err(|e| io("connect", e))?;
        writer
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(|e| io("set timeout", e))?;
        let reader = BufReader::new(writer.try_clone().map_err(|e| io("clone", e))?);
        let mut qmp = Qmp { writer, reader };
        let greeting = qmp.read_message("greeting")?;
        if greeting.get("QMP").is_none() {
            return Err(SessionError::Qmp {
                command: "greeting".into(),
                message: format!("unexpected greeting {greeting}"),
            });
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// Runs one command and returns its `return` value. Events that arrive
    /// meanwhile are skipped.
    pub fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, SessionError> {
        let mut request = json!({ "execute": command });
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        let mut line = request.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|source| SessionError::Io {
                context: format!("QMP send {command}"),
                source,
            })?;
        loop {
            let message = self.read_message(command)?;
            if let Some(value) = message.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = message.get("error") {
                return Err(SessionError::Qmp {
                    command: command.into(),
                    message: error.to_string(),
                });
            }
        }
    }

    fn read_message(&mut self, command: &str) -> Result<Value, SessionError> {
        let mut line = String::new();
        let read = self
            .reader
            .read_line(&mut line)
            .map_err(|source| SessionError::Io {
                context: format!("QMP read reply to {command}"),
                source,
            })?;
        if read == 0 {
            return Err(SessionError::Qmp {
                command: command.into(),
                message: "QEMU closed the QMP connection".into(),
            });
        }
        serde_json::from_str(&line).map_err(|e| SessionError::Qmp {
            command: command.into(),
            message: format!("invalid reply {line:?}: {e}"),
        })
    }
}
