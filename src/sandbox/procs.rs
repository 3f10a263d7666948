//! Long-running lab processes: spawning, the `pids` file, signalling by PID.
//!
//! A process is identified by (pid, starttime) where starttime is field 22 of
//! `/proc/<pid>/stat` (clock ticks since boot). That pair never repeats, so a
//! recycled pid is never mistaken for one of ours.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use super::cmd::{describe, wait_until};

/// State character and starttime of a process, from `/proc/<pid>/stat`.
pub(crate) fn stat(pid: u32) -> Option<(char, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may contain spaces and parentheses; the fields after the last ')' are fixed.
    let rest = &s[s.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// True if a process with this pid and starttime exists and is not a zombie.
pub(crate) fn alive(pid: u32, starttime: u64) -> bool {
    matches!(stat(pid), Some((st, t)) if t == starttime && st != 'Z' && st != 'X')
}

/// Every other process in the mount namespace of `pid` (for a lab holder:
/// exactly what the lab started inside it).
pub(crate) fn pids_in_mount_ns_of(pid: u32) -> Vec<u32> {
    let ns = |p: u32| std::fs::read_link(format!("/proc/{p}/ns/mnt")).ok();
    let Some(mine) = ns(pid) else {
        return Vec::new();
    };
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .filter(|&p| p != pid && ns(p).as_ref() == Some(&mine))
        .collect()
}

/// argv of a process.
pub(crate) fn cmdline(pid: u32) -> Option<Vec<String>> {
    let b = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        b.split(|c| *c == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect(),
    )
}

/// Basename of argv[0] of a process.
pub(crate) fn program_of(pid: u32) -> Option<String> {
    let argv = cmdline(pid)?;
    let a0 = argv.first()?;
    Some(a0.rsplit('/').next().unwrap_or(a0).to_string())
}

/// Number of threads of a process (entries in /proc/<pid>/task).
pub(crate) fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

pub(crate) fn send_signal(pid: u32, sig: i32) -> bool {
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if p <= 1 {
        return false;
    }
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(p, sig) == 0 }
}

/// Remove libqb shared-memory leftovers of a (dead) corosync with this pid.
pub fn clean_qb_shm(pid: u32) {
    let Ok(rd) = std::fs::read_dir("/dev/shm") else {
        return;
    };
    let a = format!("qb-{pid}-");
    let b = format!("qb-corosync-{pid}-blackbox");
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&a) || name.starts_with(&b) {
            let p = e.path();
            if p.is_dir() {
                let _ = std::fs::remove_dir_all(&p);
            } else {
                let _ = std::fs::remove_file(&p);
            }
        }
    }
}

/// Append a line to the lab's `pids` file.
pub(crate) fn record(pids_file: &Path, pid: u32, starttime: u64, role: &str, program: &str) {
    if let Ok(mut f) = OpenOptions::new().append(true).create(true).open(pids_file) {
        let _ = writeln!(f, "{pid} {starttime} {role} {program}");
    }
}

/// A process started (or adopted) by the lab.
pub(crate) struct Proc {
    pub role: String,
    pub pid: u32,
    pub starttime: u64,
    pub log: Option<PathBuf>,
    child: Option<Child>,
    exit: Option<ExitStatus>,
}

impl Proc {
    /// Spawn `cmd` with stdin from /dev/null and stdout+stderr appended to `log`,
    /// and record it in the pids file. `program` is the basename of argv[0]
    /// once the process has exec'd its final program (checked by cleanup_stale).
    pub fn spawn(
        cmd: &mut Command,
        role: &str,
        program: &str,
        log: &Path,
        pids_file: &Path,
    ) -> Result<Proc> {
        let what = describe(cmd);
        let f = OpenOptions::new()
            .append(true)
            .create(true)
            .open(log)
            .with_context(|| format!("opening log {}", log.display()))?;
        let f2: File = f.try_clone().context("dup log fd")?;
        // Own process group: a Ctrl-C at the terminal reaches only the lab's
        // owner, which then tears the lab down in order.
        cmd.stdin(Stdio::null())
            .stdout(f)
            .stderr(f2)
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("{role}: cannot spawn `{what}`"))?;
        let pid = child.id();
        let starttime = stat(pid).map(|s| s.1).unwrap_or(0);
        record(pids_file, pid, starttime, role, program);
        Ok(Proc {
            role: role.to_string(),
            pid,
            starttime,
            log: Some(log.to_path_buf()),
            child: Some(child),
            exit: None,
        })
    }

    /// Track a process that is not our child (e.g. a qemu started by
    /// libvirtd) and record it in the pids file.
    pub fn adopt(pid: u32, role: &str, pids_file: &Path) -> Option<Proc> {
        let p = Self::adopt_quiet(pid, role)?;
        let program = program_of(pid)?;
        record(pids_file, pid, p.starttime, role, &program);
        Some(p)
    }

    /// Track a process that is not our child, without recording it.
    pub fn adopt_quiet(pid: u32, role: &str) -> Option<Proc> {
        let (_, starttime) = stat(pid)?;
        Some(Proc {
            role: role.to_string(),
            pid,
            starttime,
            log: None,
            child: None,
            exit: None,
        })
    }

    /// True while the process runs. Reaps it (if it is our child) once it exited.
    pub fn running(&mut self) -> bool {
        if self.exit.is_some() {
            return false;
        }
        match &mut self.child {
            Some(c) => match c.try_wait() {
                Ok(None) => true,
                Ok(Some(st)) => {
                    self.exit = Some(st);
                    false
                }
                Err(_) => false,
            },
            None => alive(self.pid, self.starttime),
        }
    }

    /// Exit status, once known.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.running();
        self.exit
    }

    /// Send `sig` if the process still runs. Returns true if it was sent.
    pub fn signal(&mut self, sig: i32) -> bool {
        // For our own children the pid cannot be recycled before we reap it.
        self.running() && send_signal(self.pid, sig)
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        wait_until(timeout, Duration::from_millis(10), || !self.running())
    }

    /// Short description for error messages: exit status and log tail.
    pub fn diagnose(&mut self) -> String {
        let st = match self.exit_status() {
            Some(s) => format!("exited ({s})"),
            None => "still running".to_string(),
        };
        match &self.log {
            Some(l) => format!(
                "{} pid {} {st}; log {}: {}",
                self.role,
                self.pid,
                l.display(),
                super::cmd::file_excerpt(l, 800)
            ),
            None => format!("{} pid {} {st}", self.role, self.pid),
        }
    }
}

/// Stop a group of processes: SIGTERM all, wait up to `grace`, SIGKILL the rest
/// and wait for them. Returns the roles that needed SIGKILL.
pub(crate) fn stop_group(
    procs: &mut [&mut Proc],
    first_signal: i32,
    grace: Duration,
) -> Vec<String> {
    for p in procs.iter_mut() {
        if p.signal(first_signal) {
            // A stopped process only acts on SIGTERM once continued.
            p.signal(libc::SIGCONT);
        }
    }
    wait_until(grace, Duration::from_millis(10), || {
        procs.iter_mut().all(|p| !p.running())
    });
    let mut killed = Vec::new();
    for p in procs.iter_mut() {
        if p.signal(libc::SIGKILL) {
            killed.push(p.role.clone());
        }
    }
    if !killed.is_empty() {
        wait_until(Duration::from_secs(3), Duration::from_millis(10), || {
            procs.iter_mut().all(|p| !p.running())
        });
    }
    killed
}
