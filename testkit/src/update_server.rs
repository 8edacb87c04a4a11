//! `keel-update-server serve` as a child process, for the tests of the server and of the agent.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Starts `bin --config CONFIG serve` and waits for its first line on stderr, which names the
/// address it listens on: (the child, its base URL `http://HOST:PORT`).
pub fn spawn_update_server(bin: &Path, config: &Path) -> (Child, String) {
    let mut child = crate::spawn_tied(
        Command::new(bin)
            .arg("--config")
            .arg(config)
            .arg("serve")
            .stderr(Stdio::piped()),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let mut line = String::new();
    BufReader::new(child.stderr.as_mut().expect("piped stderr"))
        .read_line(&mut line)
        .unwrap();
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .trim_end_matches('/')
        .to_owned();
    (child, base)
}
