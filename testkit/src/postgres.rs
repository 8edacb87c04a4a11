//! A throwaway PostgreSQL cluster for tests and benchmarks: Debian's `initdb` and `pg_ctl`, listening
//! only on a unix socket in a temporary directory, stopped (immediately) when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct PgCluster {
    pub dir: tempfile::TempDir,
    bin: PathBuf,
    as_postgres: bool,
}

fn pg_bin() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (Debian's postgresql; ci/install-deps.sh installs it)",
                root.display()
            )
        })
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop().expect("no /usr/lib/postgresql/*/bin/initdb")
}

impl PgCluster {
    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let out = if self.as_postgres {
            // initdb and postgres refuse to run as root.
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&exe)
                .args(args)
                .output()
        } else {
            Command::new(&exe).args(args).output()
        }
        .unwrap_or_else(|e| panic!("{}: {e}", exe.display()));
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn start() -> PgCluster {
        let dir = tempfile::tempdir().unwrap();
        let as_postgres = is_root();
        if as_postgres {
            let out = Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path())
                .output()
                .unwrap();
            assert!(out.status.success(), "chown: {out:?}");
        }
        let c = PgCluster {
            dir,
            bin: pg_bin(),
            as_postgres,
        };
        let data = c.dir.path().join("data");
        let sock = c.dir.path().join("sock");
        let log = c.dir.path().join("log");
        let (data_s, sock_s, log_s) = (
            data.to_str().unwrap(),
            sock.to_str().unwrap(),
            log.to_str().unwrap(),
        );
        c.run(
            "initdb",
            &[
                "-D",
                data_s,
                "-U",
                "keel",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        std::fs::create_dir_all(&sock).unwrap();
        if as_postgres {
            Command::new("chown")
                .arg("postgres:postgres")
                .arg(&sock)
                .status()
                .unwrap();
        }
        let opts = format!(
            "-c listen_addresses='' -c unix_socket_directories={sock_s} -c fsync=off -p 5432"
        );
        c.run(
            "pg_ctl",
            &["-D", data_s, "-l", log_s, "-o", &opts, "-w", "start"],
        );
        c
    }

    /// The connection string for the cluster's `postgres` database as user `keel`.
    pub fn params(&self) -> String {
        format!(
            "host={} port=5432 user=keel dbname=postgres",
            self.dir.path().join("sock").display()
        )
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let exe = self.bin.join("pg_ctl");
        let args = [
            "-D",
            data.to_str().unwrap(),
            "-m",
            "immediate",
            "-w",
            "stop",
        ];
        let _ = if self.as_postgres {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(exe)
                .args(args)
                .output()
        } else {
            Command::new(exe).args(args).output()
        };
    }
}

fn is_root() -> bool {
    // The effective uid, without libc: /proc/self/status "Uid: real effective ...".
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
