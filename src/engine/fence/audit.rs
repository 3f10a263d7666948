//! The fence audit log: one JSON line per fence record, appended and
//! `fdatasync`ed before the next one, written by a dedicated thread.
//!
//! Each line is the [`api::Event`](fenceline_proto::api::Event) of kind
//! `fence` exactly as `fenceline events --json` prints it (the same public
//! JSON contract). Records the listeners write themselves for requests the
//! engine never saw (permission denied) carry `seq: 0`; engine events start
//! at 1.
//!
//! The caller never blocks: [`AuditTx::record`] queues into a bounded
//! channel; a full queue or a failed write is logged (`error`) and counted as
//! `dropped_audit` in the engine's counters. A file that was moved away
//! (logrotate) or deleted is noticed before the next write and recreated.
//!
//! Before a local fence action the state task writes an *intent* record
//! ([`AuditTx::intent`], a line of kind `intent`: "acting: off vm2a") and
//! waits until it is synced; the `acted` fence event after the action is its
//! result. With `[fencing] audit_required` an intent that cannot be written
//! refuses the action (fail closed).
//!
//! The file is opened with `O_NOFOLLOW` and checked with `fstat` (a regular
//! file owned by root, mode 0600: a looser mode is tightened on the open
//! file). At start a torn last line (a crash or a full disk mid-write) is
//! cut back to the last complete record, and logged.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::time::Duration;

use crate::engine::InputTx;
use crate::engine::model::{DropKind, FenceAct, Input};
use fenceline_proto::api::{Event, EventKind, now_millis};

/// Records the queue holds before new ones are dropped (and counted).
pub const AUDIT_QUEUE: usize = 1024;

enum Msg {
    Record(Box<Event>),
    /// A ready line, written and synced before the answer.
    Intent(Vec<u8>, SyncSender<Result<(), String>>),
    /// Answered once everything queued before it is on disk.
    Barrier(SyncSender<()>),
}

/// The sending side; cheap to clone. The writer thread ends when every
/// `AuditTx` is gone.
#[derive(Clone)]
pub struct AuditTx {
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
    last_error_log: Arc<AtomicU64>,
}

impl AuditTx {
    /// Queues a copy of `ev` if it is a fence event or a confirmation that
    /// a node is down; other kinds are ignored. Never blocks. Returns false
    /// when the record was dropped.
    pub fn record(&self, ev: &Event) -> bool {
        let audited = matches!(
            ev.kind,
            EventKind::Fence { .. }
                | EventKind::Membership {
                    action: fenceline_proto::api::MembershipAction::Confirmed
                        | fenceline_proto::api::MembershipAction::SelfFenced,
                    ..
                }
        );
        if !audited {
            return true;
        }
        match self.tx.try_send(Msg::Record(Box::new(ev.clone()))) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.count_drop("the audit queue is full (the disk is slow?)");
                false
            }
            Err(TrySendError::Disconnected(_)) => {
                self.count_drop("the audit writer has stopped");
                false
            }
        }
    }

    fn count_drop(&self, why: &str) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        // At most one log line per second; the counter has the total.
        let now = now_millis();
        let last = self.last_error_log.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 1000
            && self
                .last_error_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::error!("fence audit record dropped: {why}");
        }
    }

    /// Waits until every record queued so far is written and synced, at most
    /// `limit`. False on timeout or when the writer is gone.
    pub fn barrier(&self, limit: Duration) -> bool {
        let (tx, rx) = mpsc::sync_channel(1);
        if !send_within(&self.tx, Msg::Barrier(tx), limit) {
            return false;
        }
        rx.recv_timeout(limit).is_ok()
    }
}

impl AuditTx {
    /// Writes and syncs the intent record for a local fence action, waiting
    /// at most `limit`. Blocks the caller: meant for the rare fence action.
    pub fn intent(&self, act: &FenceAct, limit: Duration) -> Result<(), String> {
        let line = intent_line(act, now_millis());
        let (tx, rx) = mpsc::sync_channel(1);
        if !send_within(&self.tx, Msg::Intent(line, tx), limit) {
            return Err("the audit writer is busy or stopped".into());
        }
        match rx.recv_timeout(limit) {
            Ok(r) => r,
            Err(_) => Err(format!("the audit record was not synced within {limit:?}")),
        }
    }
}

/// One intent line: `{"time":..,"kind":"intent","job":..,"op":"off",
/// "domain":..,"uuid":..,"uri":..,"detail":"acting: off vm2a"}`.
fn intent_line(act: &FenceAct, at: u64) -> Vec<u8> {
    let v = serde_json::json!({
        "time": fenceline_proto::api::rfc3339::format(at),
        "kind": "intent",
        "job": act.job,
        "op": act.op,
        "domain": act.name,
        "uuid": act.uuid,
        "uri": act.uri,
        "detail": format!("acting: {} {}", act.op, act.name),
    });
    let mut line = v.to_string().into_bytes();
    line.push(b'\n');
    line
}

/// std's `SyncSender` has no send with a deadline: poll `try_send`.
fn send_within(tx: &SyncSender<Msg>, mut m: Msg, limit: Duration) -> bool {
    let t0 = std::time::Instant::now();
    loop {
        match tx.try_send(m) {
            Ok(()) => return true,
            Err(TrySendError::Disconnected(_)) => return false,
            Err(TrySendError::Full(back)) => {
                if t0.elapsed() >= limit {
                    return false;
                }
                m = back;
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// The running writer.
pub struct AuditWriter {
    pub tx: AuditTx,
    pub thread: std::thread::JoinHandle<()>,
}

/// Opens (creating the parent directory and a 0600 file if needed) and starts
/// the writer thread. An unusable path is an error now, not at the first
/// fence request.
pub fn spawn(path: &Path, input_tx: InputTx) -> std::io::Result<AuditWriter> {
    spawn_with(path, input_tx, AUDIT_QUEUE)
}

fn spawn_with(path: &Path, input_tx: InputTx, queue: usize) -> std::io::Result<AuditWriter> {
    let file = open(path)?;
    let cut = repair(&file)?;
    if cut > 0 {
        tracing::warn!(
            path = %path.display(),
            bytes = cut,
            "the fence audit log ended in a torn record (a crash or a full disk); cut back to the last complete one"
        );
    }
    let (tx, rx) = mpsc::sync_channel(queue);
    let dropped = Arc::new(AtomicU64::new(0));
    let writer = Writer {
        path: path.to_path_buf(),
        file: Some(file),
        dropped: dropped.clone(),
        input_tx,
    };
    let thread = std::thread::Builder::new()
        .name("fence-audit".into())
        .spawn(move || writer.run(rx))?;
    Ok(AuditWriter {
        tx: AuditTx {
            tx,
            dropped,
            last_error_log: Arc::new(AtomicU64::new(0)),
        },
        thread,
    })
}

fn open(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir)?;
    }
    let f = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => refused("is a symlink; name the file itself"),
            _ => e,
        })?;
    let md = f.metadata()?;
    if !md.file_type().is_file() {
        return Err(refused("is not a regular file"));
    }
    let me = unsafe { libc::geteuid() };
    if md.uid() != 0 && md.uid() != me {
        return Err(refused("is owned by another user than root"));
    }
    if md.mode() & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            "the fence audit log was mode {:o}; made 0600",
            md.mode() & 0o777
        );
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(f)
}

fn refused(why: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::PermissionDenied, why.to_string())
}

/// Cuts a torn last line (no newline: a crash or a full disk mid-write)
/// back to the end of the last complete record. Returns the bytes cut.
fn repair(f: &File) -> std::io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let len = f.metadata()?.len();
    let mut end = len;
    let mut buf = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        f.read_exact_at(chunk, start)?;
        if end == len && chunk.last() == Some(&b'\n') {
            return Ok(0);
        }
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            let good = start + i as u64 + 1;
            f.set_len(good)?;
            f.sync_data()?;
            return Ok(len - good);
        }
        end = start;
    }
    f.set_len(0)?;
    f.sync_data()?;
    Ok(len)
}

struct Writer {
    path: PathBuf,
    file: Option<File>,
    dropped: Arc<AtomicU64>,
    input_tx: InputTx,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        loop {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(Msg::Record(ev)) => {
                    if let Err(e) = self.write(&ev) {
                        self.file = None;
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(
                            path = %self.path.display(),
                            "fence audit record lost: {e}"
                        );
                    }
                }
                Ok(Msg::Intent(line, done)) => {
                    let r = self.write_line(&line).map_err(|e| {
                        self.file = None;
                        tracing::error!(path = %self.path.display(), "fence intent record not written: {e}");
                        format!("{}: {e}", self.path.display())
                    });
                    let _ = done.try_send(r);
                }
                Ok(Msg::Barrier(done)) => {
                    self.report_drops();
                    let _ = done.try_send(());
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.report_drops();
                    return;
                }
            }
            self.report_drops();
        }
    }

    /// One `Input::Dropped` for everything lost since the last report.
    fn report_drops(&self) {
        let n = self.dropped.swap(0, Ordering::Relaxed);
        if n > 0
            && !self.input_tx.try_send(Input::Dropped {
                at: now_millis(),
                what: DropKind::Audit,
                count: n,
            })
        {
            // The engine is busy or gone; keep the count for the next try.
            self.dropped.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn write(&mut self, ev: &Event) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(ev).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.write_line(&line)
    }

    fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.moved_away() {
            self.file = None;
        }
        if self.file.is_none() {
            self.file = Some(open(&self.path)?);
        }
        let f = self.file.as_mut().expect("opened above");
        f.write_all(line)?;
        f.sync_data()
    }

    /// True when the path no longer names the open file (rotated or deleted).
    fn moved_away(&self) -> bool {
        let Some(f) = &self.file else {
            return false;
        };
        match (std::fs::metadata(&self.path), f.metadata()) {
            (Ok(p), Ok(o)) => p.dev() != o.dev() || p.ino() != o.ino(),
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fenceline_proto::api::{FenceOp, FencePhase, FenceResult};
    use std::os::unix::fs::PermissionsExt;

    fn fence_event(seq: u64, domain: &str) -> Event {
        Event {
            seq,
            time: 1_700_000_000_123,
            node: Some(1),
            kind: EventKind::Fence {
                phase: FencePhase::Result,
                op: FenceOp::Off,
                domain: domain.into(),
                source: "multicast:10.0.0.5".into(),
                requester: Some(1),
                acted_by: Some(2),
                result: FenceResult::Ok,
                duration_ms: 42,
                detail: None,
            },
        }
    }

    fn lines(p: &Path) -> Vec<Event> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn records_are_appended_as_json_lines_in_a_0600_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/audit.jsonl");
        let (itx, _irx) = InputTx::channel(16);
        let w = spawn(&path, itx).unwrap();
        assert!(w.tx.record(&fence_event(1, "vm1")));
        assert!(w.tx.record(&fence_event(2, "vm2")));
        // Not a fence event: ignored.
        let other = Event {
            seq: 3,
            time: 0,
            node: None,
            kind: EventKind::Daemon {
                action: fenceline_proto::api::DaemonAction::Started,
                uri: None,
                detail: None,
            },
        };
        assert!(w.tx.record(&other));
        assert!(w.tx.barrier(Duration::from_secs(5)));
        let got = lines(&path);
        assert_eq!(got, vec![fence_event(1, "vm1"), fence_event(2, "vm2")]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(r#"{"seq":1,"time":"2023-11-14T22:13:20.123Z","node":1,"kind":"fence","phase":"result","op":"off""#), "{text}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        drop(w.tx);
        w.thread.join().unwrap();
    }

    #[test]
    fn a_new_writer_appends_to_the_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        for i in 1..=3 {
            let (itx, _irx) = InputTx::channel(16);
            let w = spawn(&path, itx).unwrap();
            assert!(w.tx.record(&fence_event(i, "vm")));
            drop(w.tx);
            w.thread.join().unwrap();
        }
        let seqs: Vec<u64> = lines(&path).iter().map(|e| e.seq).collect();
        assert_eq!(
            seqs,
            vec![1, 2, 3],
            "closing the sender drains the queue first"
        );
    }

    #[test]
    fn a_rotated_file_is_recreated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let (itx, _irx) = InputTx::channel(16);
        let w = spawn(&path, itx).unwrap();
        assert!(w.tx.record(&fence_event(1, "before")));
        assert!(w.tx.barrier(Duration::from_secs(5)));
        std::fs::rename(&path, dir.path().join("audit.jsonl.1")).unwrap();
        assert!(w.tx.record(&fence_event(2, "after")));
        assert!(w.tx.barrier(Duration::from_secs(5)));
        assert_eq!(lines(&path), vec![fence_event(2, "after")]);
        assert_eq!(
            lines(&dir.path().join("audit.jsonl.1")),
            vec![fence_event(1, "before")]
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_full_queue_is_counted_not_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let (itx, mut irx) = InputTx::channel(16);
        // A queue of one, and a writer we keep busy: the first record may be
        // taken at once, so fill well past the capacity.
        let w = spawn_with(&path, itx, 1).unwrap();
        let t0 = std::time::Instant::now();
        let accepted = (0..200)
            .filter(|i| w.tx.record(&fence_event(*i, "vm")))
            .count();
        assert!(t0.elapsed() < Duration::from_secs(1), "record never blocks");
        assert!(accepted < 200, "some records must have been dropped");
        assert!(w.tx.barrier(Duration::from_secs(5)));
        let written = lines(&path).len();
        assert_eq!(written, accepted);
        let mut reported = 0;
        while let Ok(i) = irx.try_recv() {
            match i {
                Input::Dropped {
                    what: DropKind::Audit,
                    count,
                    ..
                } => reported += count,
                other => panic!("unexpected input {other:?}"),
            }
        }
        assert_eq!(reported as usize, 200 - accepted);
    }

    #[test]
    fn an_unusable_path_fails_at_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file"), b"").unwrap();
        let (itx, _irx) = InputTx::channel(16);
        assert!(spawn(&dir.path().join("file/audit.jsonl"), itx).is_err());
    }

    fn act() -> FenceAct {
        FenceAct {
            job: 7,
            op: FenceOp::Off,
            uri: "test:///default".into(),
            name: "vm2a".into(),
            uuid: "6695eb01-f6a4-8304-79aa-97f2502e193f".into(),
        }
    }

    #[test]
    fn a_torn_last_line_is_cut_back_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let good = serde_json::to_string(&fence_event(1, "vm1")).unwrap() + "\n";
        std::fs::write(&path, format!("{good}{{\"seq\":2,\"ti")).unwrap();
        let (itx, _irx) = InputTx::channel(16);
        let w = spawn(&path, itx).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), good);
        assert!(w.tx.record(&fence_event(3, "vm3")));
        assert!(w.tx.barrier(Duration::from_secs(5)));
        let seqs: Vec<u64> = lines(&path).iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![1, 3]);
        drop(w.tx);
        w.thread.join().unwrap();
        // No newline at all: nothing complete, the file is emptied.
        std::fs::write(&path, "{\"seq\":1").unwrap();
        let f = open(&path).unwrap();
        assert_eq!(repair(&f).unwrap(), 8);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }

    #[test]
    fn the_intent_is_synced_before_the_answer_and_a_failure_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log/audit.jsonl");
        let (itx, _irx) = InputTx::channel(16);
        let w = spawn(&path, itx).unwrap();
        w.tx.intent(&act(), Duration::from_secs(5)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["kind"], "intent");
        assert_eq!(v["op"], "off");
        assert_eq!(v["domain"], "vm2a");
        assert_eq!(v["job"], 7);
        assert_eq!(v["detail"], "acting: off vm2a");
        // The log's directory is replaced by a file: the record cannot be
        // written, and the caller hears so.
        std::fs::rename(dir.path().join("log"), dir.path().join("old")).unwrap();
        std::fs::write(dir.path().join("log"), b"").unwrap();
        let e = w.tx.intent(&act(), Duration::from_secs(5)).unwrap_err();
        assert!(e.contains("audit.jsonl"), "{e}");
        drop(w.tx);
        w.thread.join().unwrap();
    }

    #[test]
    fn a_symlink_or_a_foreign_file_is_not_an_audit_log() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"").unwrap();
        let link = dir.path().join("audit.jsonl");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let (itx, _irx) = InputTx::channel(16);
        let e = spawn(&link, itx).err().unwrap().to_string();
        assert!(e.contains("symlink"), "{e}");
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(open(&target).unwrap());
        let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "a loose audit log is tightened");
    }
}
