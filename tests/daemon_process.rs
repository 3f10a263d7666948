//! The daemon as a process: control-socket modes and hostile requests, a
//! second daemon on the same sockets, config errors, SIGTERM. libvirt is the
//! in-process test driver (real libvirt code); corosync is deliberately absent
//! here (the daemon must run and say it is stale), the cluster tests cover it.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::bin;

struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
}

/// A scratch directory with a daemon config: `control` and `fencing` are
/// extra lines for those tables.
fn scratch(control: &str, fencing: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("fenceline-dtest-")
        .tempdir()
        .unwrap();
    std::fs::write(
        dir.path().join("f.toml"),
        format!(
            "[libvirt]\nuris = [\"test:///default\"]\n[control]\nsocket = \"{0}/rw.sock\"\nreadonly_socket = \"{0}/ro.sock\"\n{control}\n[log]\nfile = \"{0}/log/fenceline.log\"\n[fencing]\naudit_log = \"{0}/log/audit.jsonl\"\n{fencing}\n[hooks]\nsocket = \"{0}/hook.sock\"\n[corosync]\nfence_group = \"fl-test-fa\"\nown_group = \"fl-test-own\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    dir
}

/// Runs a daemon on `dir`'s config that must refuse to start; its stderr.
fn refused_start(dir: &Path) -> String {
    let out = Command::new(bin())
        .args(["daemon", "--config"])
        .arg(dir.join("f.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "the daemon started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

impl Daemon {
    fn start() -> Daemon {
        Self::start_in(scratch("", ""))
    }

    fn start_in(dir: tempfile::TempDir) -> Daemon {
        let cfg = dir.path().join("f.toml");
        let child = Command::new(bin())
            .args(["daemon", "--config"])
            .arg(&cfg)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let d = Daemon { child, dir };
        let ro = d.ro();
        let t0 = Instant::now();
        while UnixStream::connect(&ro).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "daemon did not open its sockets"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    fn ro(&self) -> PathBuf {
        self.dir.path().join("ro.sock")
    }

    fn rw(&self) -> PathBuf {
        self.dir.path().join("rw.sock")
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("f.toml")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn request(sock: &Path, line: &[u8]) -> Vec<Value> {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(line).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    BufReader::new(s)
        .lines()
        .map_while(Result::ok)
        .map(|l| serde_json::from_str(&l).unwrap())
        .collect()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(15), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sockets_status_events_and_hostile_input() {
    let d = Daemon::start();
    let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(d.rw()), 0o600);
    assert_eq!(mode(d.ro()), 0o660);

    // The test driver's "test" domain appears; without corosync the state is stale.
    wait_for("domain `test` in status", || {
        let r = request(&d.ro(), b"{\"op\":\"status\"}\n");
        r[0]["snapshot"]["domains"].as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x["name"] == "test" && x["state"] == "running")
        })
    });
    let out = Command::new(bin())
        .args(["status", "--json", "--socket"])
        .arg(d.ro())
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["stale"], true);
    assert_eq!(v["quorate"], false, "no quorum claim without corosync");
    assert_eq!(v["libvirt"][0]["uri"], "test:///default");
    assert_eq!(v["libvirt"][0]["connected"], true);

    let out = Command::new(bin())
        .args(["events", "--json", "--socket"])
        .arg(d.ro())
        .output()
        .unwrap();
    assert!(out.status.success());
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "domain" && e["name"] == "test")
    );
    assert!(
        events
            .iter()
            .all(|e| e["time"].as_str().is_some_and(|t| t.ends_with('Z')))
    );

    // Garbage, unknown ops and non-UTF-8 get an error reply, not a crash.
    for bad in [
        &b"not json\n"[..],
        b"{\"op\":\"format-disk\"}\n",
        b"\xff\xfe\n",
        b"{\"op\":\"status\"",
    ] {
        let r = request(&d.ro(), bad);
        assert_eq!(r[0]["reply"], "error", "{bad:?} → {r:?}");
        assert_eq!(r[0]["code"], "bad-request");
    }
    // An endless line is cut off at the limit.
    let mut s = UnixStream::connect(d.ro()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let chunk = vec![b'a'; 1 << 20];
    let _ = s.write_all(&chunk);
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(reply.contains("longer than"), "{reply}");
    // A client that connects and says nothing does not block others.
    let _idle = UnixStream::connect(d.ro()).unwrap();
    let r = request(&d.rw(), b"{\"op\":\"ping\"}\n");
    assert_eq!(r[0]["reply"], "pong");

    // A second daemon on the same sockets refuses to start.
    let out = Command::new(bin())
        .args(["daemon", "--config"])
        .arg(d.config())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already listening"), "{err}");
    // ... and the first one still answers.
    assert_eq!(request(&d.ro(), b"{\"op\":\"ping\"}\n")[0]["reply"], "pong");

    // The log file is written.
    let log = std::fs::read_to_string(d.dir.path().join("log/fenceline.log")).unwrap();
    assert!(log.contains("fenceline daemon starting"), "{log}");
}

#[test]
fn sigterm_exits_cleanly_and_removes_sockets() {
    let mut d = Daemon::start();
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    let rc = unsafe { libc::kill(d.child.id() as i32, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = d.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "daemon ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    assert!(!d.ro().exists() && !d.rw().exists(), "sockets removed");
}

#[test]
fn config_errors_stop_the_daemon_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "[libvirt]\nuris = [\"qemu:///system\"]\n\n[control]\nsockett = \"/tmp/x\"\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["daemon", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:5:", cfg.display())), "{err}");
    assert!(err.contains("control.sockett"), "{err}");
    // A missing explicit config file is an error too.
    let out = Command::new(bin())
        .args(["daemon", "--config", "/nonexistent/fenceline.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn status_without_a_daemon_says_how_to_fix_it() {
    let out = Command::new(bin())
        .args(["status", "--socket", "/nonexistent/fenceline-ro.sock"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is `fenceline daemon` running?"), "{err}");
}

/// Runs `python3` as `nobody` (uid 65534, gid `gid`, no other groups):
/// connects to `sock`, sends a ping, prints the reply or the error.
fn ping_as_nobody(sock: &Path, gid: u32) -> String {
    // A refused peer's reply may arrive before its request is sent (the
    // send then fails with EPIPE): the reply is read either way.
    let script = "import socket,sys\ntry:\n s=socket.socket(socket.AF_UNIX)\n s.connect(sys.argv[1])\n try:\n  s.sendall(b'{\"op\":\"ping\"}\\n')\n except BrokenPipeError:\n  pass\n print(s.makefile().readline())\nexcept OSError as e:\n print('oserror', e)\n";
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            &format!("--regid={gid}"),
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            script,
        ])
        .arg(sock)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Issue 10: the read-only socket is 0660 for its group; the read-write
/// socket checks the peer's credentials on every connection, even when its
/// file mode would let anyone in.
#[test]
fn peer_credentials_decide_who_uses_the_sockets() {
    let dir = scratch(
        "readonly_group = \"nogroup\"\nadmin_group = \"nogroup\"",
        "",
    );
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = Daemon::start_in(dir);
    let md = std::fs::metadata(d.ro()).unwrap();
    assert_eq!(md.permissions().mode() & 0o777, 0o660);
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&md), 65534);
    // nobody in the group reads; nobody outside it is refused by the mode.
    assert!(ping_as_nobody(&d.ro(), 65534).contains("pong"));
    let r = ping_as_nobody(&d.ro(), 65533);
    assert!(
        r.contains("oserror") && r.contains("Permission denied"),
        "{r}"
    );
    // The read-write file opened to all (an operator's mistake): the
    // credentials still decide.
    std::fs::set_permissions(d.rw(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let r = ping_as_nobody(&d.rw(), 65533);
    assert!(r.contains("permission-denied"), "{r}");
    assert!(
        ping_as_nobody(&d.rw(), 65534).contains("pong"),
        "admin_group"
    );
    assert_eq!(request(&d.rw(), b"{\"op\":\"ping\"}\n")[0]["reply"], "pong");
    let log = std::fs::read_to_string(d.dir.path().join("log/fenceline.log")).unwrap();
    assert!(log.contains("refused a read-write connection"), "{log}");
}

/// Issue 10: what sits at the socket and audit paths must be what it
/// claims; a symlink or a regular file there stops the start, untouched.
#[test]
fn symlinks_and_files_at_socket_and_audit_paths_stop_the_start() {
    let dir = scratch("", "");
    let d = dir.path();
    std::os::unix::fs::symlink("/etc/passwd", d.join("rw.sock")).unwrap();
    let err = refused_start(d);
    assert!(
        err.contains("rw.sock") && err.contains("a symlink"),
        "{err}"
    );
    assert!(
        std::fs::symlink_metadata(d.join("rw.sock")).is_ok(),
        "left alone"
    );
    std::fs::remove_file(d.join("rw.sock")).unwrap();

    std::fs::write(d.join("ro.sock"), b"precious").unwrap();
    let err = refused_start(d);
    assert!(
        err.contains("ro.sock") && err.contains("a regular file"),
        "{err}"
    );
    assert_eq!(std::fs::read(d.join("ro.sock")).unwrap(), b"precious");
    std::fs::remove_file(d.join("ro.sock")).unwrap();

    std::fs::create_dir_all(d.join("log")).unwrap();
    std::os::unix::fs::symlink(d.join("elsewhere"), d.join("log/audit.jsonl")).unwrap();
    let err = refused_start(d);
    assert!(err.contains("audit") && err.contains("symlink"), "{err}");
    assert!(
        !d.join("elsewhere").exists(),
        "nothing written through the link"
    );
    std::fs::remove_file(d.join("log/audit.jsonl")).unwrap();

    // A socket directory others may write to.
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = refused_start(d);
    assert!(err.contains("writable"), "{err}");
}

/// Issue 10: a torn last audit record is cut back at start; the intent of a
/// local action is on disk before it; with `audit_required` an audit log
/// that cannot be written refuses the fence (answer fail, VM untouched).
#[test]
fn audit_log_is_repaired_and_audit_required_fails_closed() {
    let dir = scratch("", "backend = \"libvirt\"\naudit_required = true");
    let log = dir.path().join("log");
    std::fs::create_dir_all(&log).unwrap();
    std::fs::write(log.join("audit.jsonl"), "{\"seq\":1}\n{\"seq\":2,\"ti").unwrap();
    let d = Daemon::start_in(dir);
    assert_eq!(
        std::fs::read_to_string(log.join("audit.jsonl")).unwrap(),
        "{\"seq\":1}\n",
        "the torn line is cut"
    );
    let running = || {
        let r = request(&d.ro(), b"{\"op\":\"status\"}\n");
        r[0]["snapshot"]["domains"].as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x["name"] == "test" && x["state"] == "running")
        })
    };
    wait_for("domain `test` running", running);
    // The audit log cannot be written any more: its directory is a file.
    std::fs::rename(&log, d.dir.path().join("log.old")).unwrap();
    std::fs::write(&log, b"").unwrap();
    let r = request(
        &d.rw(),
        b"{\"op\":\"fence\",\"action\":\"off\",\"domain\":\"test\"}\n",
    );
    assert_eq!(r[0]["result"], "fail", "{r:?}");
    assert!(
        r[0]["detail"]
            .as_str()
            .unwrap_or("")
            .contains("audit_required"),
        "{r:?}"
    );
    assert!(running(), "the VM was touched");
    // Writable again: the intent comes first, the action goes ahead.
    std::fs::remove_file(&log).unwrap();
    std::fs::rename(d.dir.path().join("log.old"), &log).unwrap();
    let r = request(
        &d.rw(),
        b"{\"op\":\"fence\",\"action\":\"off\",\"domain\":\"test\"}\n",
    );
    assert_eq!(r[0]["result"], "ok", "{r:?}");
    // The result record is written by the audit thread after the answer
    // went out: wait for it (bounded).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let text = loop {
        let text = std::fs::read_to_string(log.join("audit.jsonl")).unwrap();
        if text.contains("\"result\":\"ok\"") || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let intent = text.find("\"kind\":\"intent\"").expect(&text);
    let acted = text.find("\"result\":\"ok\"").expect(&text);
    assert!(intent < acted, "{text}");
    assert!(text.contains("acting: off test"), "{text}");
}

/// A guest or a peer chooses the names the CLI prints. A name carrying a
/// terminal escape (clear screen), a C1 CSI and a bidi override comes out
/// of `fence`, `events` and `events --json` escaped, never raw.
#[test]
fn terminal_escapes_in_names_are_printed_escaped() {
    let d = Daemon::start();
    let evil = "ev\u{1b}[2Jil\u{9b}31mx\u{202e}y";
    let raw = |b: &[u8]| {
        let s = String::from_utf8_lossy(b).into_owned();
        s.chars()
            .any(|c| matches!(c, '\u{1b}' | '\u{9b}' | '\u{202e}'))
    };
    // Without corosync the router refuses: the refusal names the target.
    let out = Command::new(bin())
        .args(["fence", "status", evil, "--socket"])
        .arg(d.rw())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!raw(&out.stdout) && !raw(&out.stderr), "{out:?}");

    let text = Command::new(bin())
        .args(["events", "--socket"])
        .arg(d.ro())
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&text.stdout);
    assert!(!raw(&text.stdout), "{shown}");
    assert!(shown.contains("ev\\x1b[2Jil\\x9b31mx\\u{202e}y"), "{shown}");

    let json = Command::new(bin())
        .args(["events", "--json", "--socket"])
        .arg(d.ro())
        .output()
        .unwrap();
    assert!(!raw(&json.stdout));
    let names: Vec<Value> = String::from_utf8_lossy(&json.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["kind"] == "fence")
        .collect();
    assert!(
        names.iter().any(|e| e.to_string().contains("\\u001b[2Jil")
            && e.as_object().unwrap().values().any(|v| v == evil)),
        "the JSON still parses to the exact name: {names:?}"
    );
}

/// Issue 11: under systemd (stderr is the stream JOURNAL_STREAM names) each
/// log line carries sd-daemon's `<N>` priority prefix, which journald turns
/// into the entry's priority, and no timestamp of its own; a JOURNAL_STREAM
/// naming another stream leaves ordinary timestamped lines. Either way one
/// event is one line: a network name with a newline and a forged `<0>`
/// prefix, in a hook report, stays inside its line. (No journald runs here: the test
/// reads the stream journald would read.)
#[test]
fn under_systemd_log_lines_carry_their_priority_and_stay_one_line() {
    use std::os::unix::fs::MetadataExt;
    let run = |journal_stream: &dyn Fn(u64, u64) -> String| {
        let dir = scratch("", "");
        std::fs::write(
            dir.path().join("f.toml"),
            std::fs::read_to_string(dir.path().join("f.toml"))
                .unwrap()
                .replace("[log]\n", "[log]\nlevel = \"debug\"\n"),
        )
        .unwrap();
        let (mut err_r, err_w) = std::io::pipe().unwrap();
        let m = std::fs::File::from(std::os::fd::OwnedFd::from(err_w.try_clone().unwrap()))
            .metadata()
            .unwrap();
        let mut child = Command::new(bin())
            .args(["daemon", "--config"])
            .arg(dir.path().join("f.toml"))
            .env("JOURNAL_STREAM", journal_stream(m.dev(), m.ino()))
            .stderr(err_w)
            .spawn()
            .unwrap();
        let rw = dir.path().join("rw.sock");
        wait_for("the daemon's sockets", || UnixStream::connect(&rw).is_ok());
        // A hook report (logged at debug with the network's name as text).
        let report = b"{\"v\":1,\"at\":0,\"network\":\"net\\n<0>forged entry\",\"op\":\"plugged\"}";
        std::os::unix::net::UnixDatagram::unbound()
            .unwrap()
            .send_to(report, dir.path().join("hook.sock"))
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let _ = child.wait();
        let mut stderr = String::new();
        err_r.read_to_string(&mut stderr).unwrap();
        stderr
    };

    let journal = run(&|dev, ino| format!("{dev}:{ino}"));
    let lines: Vec<&str> = journal.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<6>") && l.contains("libvirt worker started")),
        "{journal}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("<4>")),
        "corosync is absent here: a warning is expected: {journal}"
    );
    for l in &lines {
        let p = l.get(..3).unwrap_or_default();
        assert!(
            ["<3>", "<4>", "<6>", "<7>"].contains(&p),
            "a line without its priority: {l:?}"
        );
        assert!(
            !l[3..].starts_with("20"),
            "a timestamp in the journal: {l:?}"
        );
    }
    assert!(
        lines.iter().any(|l| l.contains("net\\n<0>forged entry")),
        "the report with the hostile name is logged, escaped: {journal}"
    );

    let plain = run(&|dev, ino| format!("{dev}:{}", ino + 1));
    assert!(
        plain
            .lines()
            .any(|l| l.starts_with("20") && l.contains(" INFO ")),
        "{plain}"
    );
    assert!(!plain.lines().any(|l| l.starts_with('<')), "{plain}");
    assert!(plain.contains("net\\n<0>forged entry"), "{plain}");
}
