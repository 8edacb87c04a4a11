//! Children that die with this process: each is spawned with `PR_SET_PDEATHSIG(SIGKILL)`, so a
//! test binary or `keel boot` that is killed outright takes its QEMU, etcd or registry with it
//! instead of leaving them running.
//!
//! The kernel sends that signal when the *thread* that forked the child exits, not the process;
//! a guest started on a test's worker thread would die with the thread. So every tied child is
//! forked on one spawner thread that lives as long as the process.

use std::io;
use std::process::{Child, Command};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::OnceLock;

type Answer = (Command, io::Result<Child>);
type Request = (Command, Sender<Answer>);

static SPAWNER: OnceLock<Sender<Request>> = OnceLock::new();

/// Spawns `command` as [`Command::spawn`] does, with the child killed when this process dies.
/// `command` is used on the spawner thread and handed back unchanged, so callers can still
/// name it in errors; the [`Child`] can be waited for and killed from any thread.
pub fn spawn(command: &mut Command) -> io::Result<Child> {
    let owned = std::mem::replace(command, Command::new(""));
    let (answer_to, answer) = mpsc::channel();
    let gone = || io::Error::other("the spawner thread is gone");
    let request = (owned, answer_to);
    if let Err(mpsc::SendError((owned, _))) = SPAWNER.get_or_init(start_spawner).send(request) {
        *command = owned;
        return Err(gone());
    }
    let (owned, spawned) = answer.recv().map_err(|_| gone())?;
    *command = owned;
    spawned
}

fn start_spawner() -> Sender<Request> {
    let (requests, incoming) = mpsc::channel();
    std::thread::Builder::new()
        .name("keel-tied-spawner".into())
        .spawn(move || serve(incoming))
        .expect("start the spawner thread");
    requests
}

fn serve(incoming: Receiver<Request>) {
    for (mut command, answer_to) in incoming {
        let spawned = spawn_here(&mut command);
        let _ = answer_to.send((command, spawned));
    }
}

fn spawn_here(command: &mut Command) -> io::Result<Child> {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec; it makes only async-signal-safe
    // system calls (prctl, getppid) and allocates nothing (another thread may have held the
    // allocator's lock at the fork).
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent died between fork and prctl: the signal will never come.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        })
    };
    command.spawn()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    fn alive(pid: u32) -> bool {
        // A zombie still has a /proc entry: it counts as dead.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| !stat.contains(") Z "))
            .unwrap_or(false)
    }

    /// A child started on a thread that then exits lives on, and the command comes back as it
    /// was given.
    #[test]
    fn a_child_outlives_the_thread_that_asked_for_it() {
        let (mut child, program) = std::thread::spawn(|| {
            let mut command = Command::new("sleep");
            command.arg("60").stdin(Stdio::null());
            let child = spawn(&mut command).unwrap();
            (child, command.get_program().to_owned())
        })
        .join()
        .unwrap();
        assert_eq!(program, "sleep");
        std::thread::sleep(Duration::from_millis(300));
        assert!(alive(child.id()));
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn a_missing_program_is_the_usual_error() {
        let error = spawn(&mut Command::new("/nonexistent/keel-tied-test")).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
    }

    /// This test binary runs itself as a helper that ties a `sleep` and prints its pid; the
    /// helper is killed with SIGKILL, and the sleep must follow.
    #[test]
    fn a_tied_child_dies_when_its_process_is_killed() {
        if std::env::var_os("KEEL_TIED_HELPER").is_some() {
            let mut child = spawn(Command::new("sleep").arg("120")).unwrap();
            println!("sleep pid {}", child.id());
            // Killed long before the sleep ends.
            let _ = child.wait();
            return;
        }
        let me = std::env::current_exe().unwrap();
        let mut helper = Command::new(&me)
            .args([
                "--exact",
                "tied::tests::a_tied_child_dies_when_its_process_is_killed",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("KEEL_TIED_HELPER", "1")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = io::BufReader::new(helper.stdout.take().unwrap());
        let mut line = String::new();
        let pid = loop {
            line.clear();
            let read = io::BufRead::read_line(&mut out, &mut line).unwrap();
            assert!(read > 0, "{} printed no pid", me.display());
            // libtest's "test NAME ... " precedes it on the same line.
            if let Some((_, pid)) = line.trim().split_once("sleep pid ") {
                break pid.parse::<u32>().unwrap();
            }
        };
        assert!(alive(pid), "the helper's sleep {pid} is not running");
        helper.kill().unwrap();
        helper.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let still = alive(pid);
        if still && Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        assert!(!still, "sleep {pid} outlived the killed helper");
    }
}
