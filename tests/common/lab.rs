//! Helpers for tests on a sandbox lab: bring it up, poll a node's
//! `fenceline status --json`, read its events, check the cluster map.

use std::time::{Duration, Instant};

use fenceline::sandbox::{CmdOutput, Lab, LabSpec, lab_domains};
use serde_json::Value;

/// How long a lab cluster gets to converge on a state.
pub const CONVERGE: Duration = Duration::from_secs(30);

/// Brings up a lab; panics with the reason when it does not come up.
pub fn lab(spec: LabSpec) -> Lab {
    match Lab::up(spec) {
        Ok(l) => l,
        Err(e) => panic!("lab did not come up: {e:#}"),
    }
}

/// Polls node `i`'s `status --json` every 100 ms until `pred` holds;
/// panics with the last snapshot (or error) after `timeout`. Returns the
/// status that matched and the time it took.
pub fn wait_status(
    lab: &Lab,
    i: usize,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&Value) -> bool,
) -> (Value, Duration) {
    let t0 = Instant::now();
    let mut last = Value::Null;
    while t0.elapsed() < timeout {
        match lab.status_json(i) {
            Ok(v) if pred(&v) => return (v, t0.elapsed()),
            Ok(v) => last = v,
            Err(e) => last = Value::String(format!("{e:#}")),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "node {i}: timed out after {timeout:?} waiting for {what}; last status:\n{}",
        serde_json::to_string_pretty(&last).unwrap_or_default()
    );
}

/// The domain `name` in a status snapshot.
pub fn domain<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v["domains"].as_array()?.iter().find(|d| d["name"] == name)
}

/// Every lab domain of `nodes` is in the map with its owner; with
/// `initial_state`, also with its UUID and its initial state.
pub fn full_map(v: &Value, nodes: &[usize], initial_state: bool) -> bool {
    nodes.iter().all(|&n| {
        lab_domains(n).iter().all(|d| {
            let state = if d.running { "running" } else { "shutoff" };
            domain(v, &d.name).is_some_and(|x| {
                x["owner"] == n as u64
                    && (!initial_state || (x["state"] == state && x["uuid"] == d.uuid.as_str()))
            })
        })
    })
}

/// `fenceline events --json` on node `i`; the command must succeed and
/// every line must be JSON.
pub fn events(lab: &Lab, i: usize) -> Vec<Value> {
    let out = lab.fenceline(i, &["events", "--json"]).expect("events");
    assert!(out.success(), "events failed: {}", out.stderr);
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("event line is JSON"))
        .collect()
}

/// Like [`events`], but a failed command or a line that is not JSON just
/// yields fewer events.
pub fn events_lenient(lab: &Lab, i: usize) -> Vec<Value> {
    let out = lab.fenceline(i, &["events", "--json"]).expect("events");
    out.stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The real `fence_xvm -o OP -H VM` from the lab's client (guest)
/// namespace, with the lab key and fence_xvm's own timeout `-t 8`.
pub fn client_fence_xvm(lab: &Lab, op: &str, vm: &str) -> CmdOutput {
    let key = lab.fence_key_path();
    let argv = [
        "fence_xvm",
        "-k",
        key.to_str().expect("utf-8 key path"),
        "-t",
        "8",
        "-o",
        op,
        "-H",
        vm,
    ];
    lab.exec_client(&argv, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("fence_xvm runs: {e:#}"))
}
