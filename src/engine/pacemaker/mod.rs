//! The Pacemaker driver (`[fencing] pacemaker_confirm`, off by default):
//! while the snapshot names departed nodes that are not accounted for, it
//! reads the hosts' own Pacemaker fencing history for each
//! (`stonith_admin --history NODE --verbose --output-as=xml`, every `interval`, each
//! call bounded by `timeout`, backing off while the command fails) and
//! hands every successful off/reboot record to the model as
//! `Input::PacemakerFenced`. The model decides (`model/pacemaker.rs`).
//!
//! Settings come from the daemon; nothing here reads the config.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fenceline_proto::api::{Snapshot, now_millis};
use fenceline_proto::backoff::Backoff;
use fenceline_proto::pcmk_history::{self, FenceRecord};
use fenceline_proto::ratelimit::RateLimit;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::InputTx;
use super::model::Input;

/// What the daemon hands this driver.
#[derive(Debug, Clone)]
pub struct PacemakerSettings {
    /// `stonith_admin` (found on PATH when not absolute).
    pub stonith_admin: PathBuf,
    /// Time between polls while a departed node is unaccounted for.
    pub interval: Duration,
    /// The longest one `stonith_admin` call may take.
    pub timeout: Duration,
}

impl Default for PacemakerSettings {
    fn default() -> Self {
        Self {
            // Debian's path; elsewhere found on PATH.
            stonith_admin: ["/usr/sbin/stonith_admin", "/usr/bin/stonith_admin"]
                .into_iter()
                .map(PathBuf::from)
                .find(|p| p.exists())
                .unwrap_or_else(|| "stonith_admin".into()),
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(10),
        }
    }
}

/// The departed nodes (not members, not this node) that are not accounted
/// for, by name: Pacemaker knows nodes by name.
pub fn departed_unaccounted(s: &Snapshot) -> Vec<String> {
    s.nodes
        .iter()
        .filter(|n| !n.member && !n.accounted && Some(n.nodeid) != s.local_nodeid)
        .filter_map(|n| n.name.clone())
        .collect()
}

/// One `stonith_admin --history NODE` call, bounded by `timeout`; the
/// child is killed when the wait ends.
async fn history(settings: &PacemakerSettings, node: &str) -> Result<Vec<FenceRecord>, String> {
    let mut cmd = tokio::process::Command::new(&settings.stonith_admin);
    // --verbose: every recorded operation, not only the latest.
    cmd.args(["--history", node, "--verbose", "--output-as=xml"])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(settings.timeout, cmd.output())
        .await
        .map_err(|_| format!("stonith_admin did not answer within {:?}", settings.timeout))?
        .map_err(|e| format!("cannot run {}: {e}", settings.stonith_admin.display()))?;
    let cap = out.stdout.len().min(pcmk_history::MAX_INPUT + 1);
    let text = String::from_utf8_lossy(&out.stdout[..cap]);
    pcmk_history::parse_history(&text).map_err(|e| {
        let err = String::from_utf8_lossy(&out.stderr);
        format!(
            "stonith_admin --history {node} ({}): {e} {}",
            out.status,
            err.trim()
        )
    })
}

/// Runs until `cancel`.
pub async fn run(
    settings: PacemakerSettings,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    inputs: InputTx,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::with_entropy(settings.interval, Duration::from_secs(30));
    // One line a minute per distinct error.
    let mut warn: RateLimit<String> = RateLimit::new(Duration::from_secs(60), 1);
    loop {
        let nodes = departed_unaccounted(&snapshots.borrow_and_update());
        let mut failed = false;
        for node in &nodes {
            match history(&settings, node).await {
                Ok(records) => {
                    tracing::debug!(
                        node,
                        records = records.len(),
                        "pacemaker fencing history read"
                    );
                    for record in records
                        .into_iter()
                        .filter(|r| r.is_successful_kill() && r.target.eq_ignore_ascii_case(node))
                    {
                        let at = now_millis();
                        if !inputs.send(Input::PacemakerFenced { at, record }).await {
                            return;
                        }
                    }
                }
                Err(e) => {
                    failed = true;
                    if let Some(n) = warn.allow(e.clone(), Instant::now()) {
                        tracing::warn!(suppressed = n, "pacemaker_confirm: {e}");
                    }
                }
            }
        }
        let delay = if nodes.is_empty() {
            // Nothing to confirm: wait for a snapshot that names a node
            // (bounded, so a missed change costs at most a minute).
            backoff.reset();
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = tokio::time::timeout(Duration::from_secs(60), snapshots.changed()) => {
                    if matches!(r, Ok(Err(_))) {
                        return;
                    }
                    continue;
                }
            }
        } else if failed {
            backoff.next_delay()
        } else {
            backoff.reset();
            settings.interval
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

#[cfg(test)]
mod tests;
