//! Helpers shared by the benchmarks (included with `#[path]`; not a crate).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use fenceline::sandbox::Lab;
use serde_json::Value;

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i]
}

/// A follower of `fenceline events --json --follow` inside a node; every
/// line is delivered with the bench's arrival time.
pub struct Follower {
    child: Child,
    rx: mpsc::Receiver<(u64, Value)>,
}

impl Follower {
    pub fn start(lab: &Lab, i: usize, bin: &Path) -> Result<Self> {
        let b = bin.to_string_lossy().into_owned();
        let mut cmd = lab.node_command(i, &[&b, "events", "--json", "--follow"])?;
        cmd.stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = cmd.spawn().context("events --follow")?;
        let out = child.stdout.take().context("no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let t = now_ms();
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && tx.send((t, v)).is_err()
                {
                    return;
                }
            }
        });
        Ok(Self { child, rx })
    }

    /// The first event matching `pred` within `timeout`, with its arrival time.
    pub fn wait(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<(u64, Value)> {
        let end = Instant::now() + timeout;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok((t, v)) if pred(&v) => return Some((t, v)),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }

    pub fn drain(&self) {
        while self.rx.try_recv().is_ok() {}
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
