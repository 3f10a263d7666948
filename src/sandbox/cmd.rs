//! Running external commands with a deadline, and small polling helpers.

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use fenceline_proto::backoff::Backoff;

/// Default deadline for short commands run inside a lab.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Captured result of a finished command.
#[derive(Debug, Clone)]
pub struct CmdOutput {
    /// Exit status of the command.
    pub status: ExitStatus,
    /// Standard output, lossily decoded as UTF-8.
    pub stdout: String,
    /// Standard error, lossily decoded as UTF-8.
    pub stderr: String,
}

impl CmdOutput {
    /// True when the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The exit code, if the command exited normally.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// Poll `cond` every `poll` until it returns true or `timeout` elapses.
/// The condition is evaluated at least once, and once more at the deadline.
pub fn wait_until(timeout: Duration, poll: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(poll.min(deadline - now));
    }
}

/// A printable form of a command line, for error messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// The last `max` bytes (on a char boundary) of `text`, trimmed.
pub(crate) fn excerpt(text: &str, max: usize) -> String {
    let t = text.trim();
    if t.len() <= max {
        return t.to_string();
    }
    let mut start = t.len() - max;
    while !t.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &t[start..])
}

/// The tail of a log file, for error messages.
pub(crate) fn file_excerpt(path: &std::path::Path, max: usize) -> String {
    match std::fs::read(path) {
        Ok(b) => excerpt(&String::from_utf8_lossy(&b), max),
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

fn spawn_reader<R: Read + Send + 'static>(r: Option<R>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    match r {
        Some(mut r) => {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = r.read_to_end(&mut buf);
                let _ = tx.send(buf);
            });
        }
        None => {
            let _ = tx.send(Vec::new());
        }
    }
    rx
}

fn collect(rx: &mpsc::Receiver<Vec<u8>>, wait: Duration) -> String {
    // A grandchild that inherited the pipe can keep it open; do not wait forever.
    rx.recv_timeout(wait)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Run `cmd` to completion with stdin from /dev/null and captured output.
/// The child is killed when `timeout` elapses, which is an error.
/// A non-zero exit status is NOT an error here (see [`run_checked`]).
pub(crate) fn run(cmd: &mut Command, timeout: Duration) -> Result<CmdOutput> {
    let what = describe(cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot spawn `{what}`"))?;
    let out_rx = spawn_reader(child.stdout.take());
    let err_rx = spawn_reader(child.stderr.take());
    let deadline = Instant::now() + timeout;
    // Poll the child 1 ms, 2 ms, 4 ms, ... up to every 20 ms (no jitter).
    let mut pause =
        Backoff::new(Duration::from_millis(1), Duration::from_millis(20), 0).jitter(0.0);
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) => {}
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e).with_context(|| format!("waiting for `{what}`"));
            }
        }
        let now = Instant::now();
        if now >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = collect(&err_rx, Duration::from_millis(200));
            bail!(
                "`{what}` timed out after {:.1}s and was killed; stderr: {}",
                timeout.as_secs_f64(),
                excerpt(&stderr, 600)
            );
        }
        std::thread::sleep(pause.next_delay().min(deadline - now));
    };
    let stdout = collect(&out_rx, Duration::from_secs(2));
    let stderr = collect(&err_rx, Duration::from_secs(2));
    Ok(CmdOutput {
        status,
        stdout,
        stderr,
    })
}

/// Like [`run`], but a non-zero exit status is an error carrying a stderr excerpt.
pub(crate) fn run_checked(cmd: &mut Command, timeout: Duration) -> Result<CmdOutput> {
    let what = describe(cmd);
    let out = run(cmd, timeout)?;
    if !out.success() {
        let msg = if out.stderr.trim().is_empty() {
            excerpt(&out.stdout, 600)
        } else {
            excerpt(&out.stderr, 600)
        };
        bail!("`{what}` failed ({}): {msg}", out.status);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_captures_and_times_out() {
        let out = run(
            Command::new("sh").args(["-c", "echo hi; echo err >&2; exit 3"]),
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(out.stdout, "hi\n");
        assert_eq!(out.stderr, "err\n");
        assert_eq!(out.code(), Some(3));
        assert!(run_checked(&mut Command::new("false"), Duration::from_secs(5)).is_err());
        let t = Instant::now();
        let e = run(Command::new("sleep").arg("10"), Duration::from_millis(200)).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(3));
        assert!(e.to_string().contains("timed out"), "{e}");
    }

    #[test]
    fn wait_until_and_excerpt() {
        let mut n = 0;
        assert!(wait_until(
            Duration::from_secs(1),
            Duration::from_millis(1),
            || {
                n += 1;
                n > 3
            }
        ));
        assert!(!wait_until(
            Duration::from_millis(30),
            Duration::from_millis(10),
            || false
        ));
        assert_eq!(excerpt("  abc  ", 10), "abc");
        assert_eq!(excerpt("abcdef", 3), "...def");
    }
}
