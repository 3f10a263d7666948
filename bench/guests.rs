//! Guest failover benchmark, run by hand as root (`bench/guests.sh`):
//! what users care about most, the time from a guest failure to its
//! resources being safe to recover.
//!
//! A 3-host lab with a 3-guest Pacemaker cluster (`LabSpec.guests`), first
//! with fenceline on every host, then with real fence_virtd. Each round
//! SIGKILLs the victim guest's corosync and polls guest 1 (~100 ms per
//! round): the victim unclean in `crm_mon` (Pacemaker's detection), its
//! fence recorded successful in `stonith_admin --history` (fence_xvm, the
//! daemon, libvirt), every Dummy started on a survivor (recovery). Then the
//! guest boots again and takes its Dummies back.
//!
//! With fenceline, each round is also split by the daemons' own fence events
//! (`fenceline events --json` on every host, wall clock in ms): kill → the
//! request reached a host (Pacemaker's detection and decision, fence_xvm's
//! start), that host's receipt → its answer (fenceline: the CPG round, the
//! claim, the acting host's libvirt), of which the acting host's libvirt
//! action, and the answer → the success recorded (fence_xvm's reply,
//! Pacemaker's fencer). fence_virtd has no such events: its row has the
//! outside figures only.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use fenceline::sandbox::{Lab, LabSpec};

#[path = "common.rs"]
mod common;

use common::{now_ms, pct};
use fenceline_proto::api::{Event, EventKind, FencePhase, FenceResult};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Seconds from the kill: unclean, fenced, recovered; then the fenceline
/// split: request received, answered, the acting host's libvirt action (its
/// duration). NaN where unknown.
type Round = [f64; 6];

/// The fence events of `name` since `since_ms` on every host: (time of the
/// receiving host's ok result, its duration, the acting host's duration).
fn fence_split(lab: &Lab, name: &str, since_ms: u64) -> Option<(u64, u64, u64)> {
    let mut result: Option<(u64, u64)> = None;
    let mut acted = None;
    for i in 1..=lab.node_count() {
        let Ok(o) = lab.fenceline(i, &["events", "--json"]) else {
            continue;
        };
        for e in o
            .stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<Event>(l).ok())
        {
            let EventKind::Fence {
                phase,
                domain,
                result: r,
                duration_ms,
                ..
            } = e.kind
            else {
                continue;
            };
            if domain != name || e.time < since_ms {
                continue;
            }
            match phase {
                FencePhase::Result
                    if r == FenceResult::Ok && result.is_none_or(|(t, _)| e.time < t) =>
                {
                    result = Some((e.time, duration_ms));
                }
                FencePhase::Acted if acted.is_none() => acted = Some(duration_ms),
                _ => {}
            }
        }
    }
    let (t, d) = result?;
    Some((t, d, acted.unwrap_or(0)))
}

/// Per round, [`Round`].
fn measure(lab: &Lab, rounds: usize, split: bool) -> Result<Vec<Round>> {
    let v = lab.guest_victim();
    let name = lab.guest_name(v);
    let home = vec![name.clone()];
    let mut out = Vec::new();
    for r in 1..=rounds {
        let ok0 = lab.guest_fence_successes(1, &name)?;
        let t0 = Instant::now();
        let kill_ms = now_ms();
        lab.kill_guest_corosync(v, libc::SIGKILL)?;
        let o = lab.watch_guest_failover(t0, ok0, TIMEOUT);
        let s = |d: Option<Duration>, what: &str| {
            d.map(|d| d.as_secs_f64())
                .ok_or_else(|| anyhow!("round {r}: {what} not within {TIMEOUT:?}"))
        };
        let ms = |t: u64| t.saturating_sub(kill_ms) as f64 / 1000.0;
        let (received, answered, libvirt) = match split.then(|| fence_split(lab, &name, kill_ms)) {
            Some(Some((t, d, a))) => (ms(t.saturating_sub(d)), ms(t), a as f64 / 1000.0),
            _ => (f64::NAN, f64::NAN, f64::NAN),
        };
        let row = [
            s(o.unclean, "unclean").unwrap_or(f64::NAN),
            s(o.fenced, "fence recorded successful")?,
            s(o.recovered, "Dummies on a survivor")?,
            received,
            answered,
            libvirt,
        ];
        eprintln!(
            "  round {r}: unclean {:.2} s, request at a host {:.2} s, answered {:.2} s (libvirt {:.3} s), fenced {:.2} s, recovered {:.2} s",
            row[0], row[3], row[4], row[5], row[1], row[2]
        );
        out.push(row);
        lab.restart_guest(v, 1)?;
        let dummies = lab.guest_dummies();
        lab.wait_guest_cluster(1, "Dummies back on the victim", |st| {
            dummies.iter().all(|d| st.started_on_one_of(d, &home))
        })?;
    }
    Ok(out)
}

fn run(fence_virtd: bool, bin: &Path, rounds: usize) -> Result<Vec<Round>> {
    let lab = Lab::up(LabSpec::guest_cluster(
        (!fence_virtd).then(|| bin.to_path_buf()),
    ))?;
    let r = measure(&lab, rounds, !fence_virtd);
    lab.down()?;
    r
}

fn main() -> Result<()> {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let bin = PathBuf::from(std::env::var("FENCELINE_BIN").context("FENCELINE_BIN")?);
    eprintln!("phase 1: fenceline on every host ({rounds} rounds)");
    let fl = run(false, &bin, rounds)?;
    eprintln!("phase 2: fence_virtd on every host ({rounds} rounds)");
    let fv = run(true, &bin, rounds)?;
    println!("guest corosync SIGKILL → ..., seen from a surviving guest, {rounds} rounds (s)");
    println!();
    println!("| daemons on the hosts | measure | median | min | max |");
    println!("|---|---|---|---|---|");
    let stat = |v: &mut Vec<f64>| {
        v.retain(|x| !x.is_nan());
        if v.is_empty() {
            return "| n/a | n/a | n/a |".to_string();
        }
        format!(
            "| {:.2} | {:.2} | {:.2} |",
            pct(v, 0.5),
            pct(v, 0.0),
            pct(v, 1.0)
        )
    };
    for (who, rows) in [("fenceline", &fl), ("fence_virtd 4.12.1", &fv)] {
        for (k, what) in [
            "victim unclean (detection)",
            "fence recorded successful",
            "Dummies started on a survivor",
        ]
        .iter()
        .enumerate()
        {
            let mut v: Vec<f64> = rows.iter().map(|r| r[k]).collect();
            println!("| {who} | {what} {}", stat(&mut v));
        }
    }
    println!();
    println!("Where the time goes (s; fenceline's own fence events, wall clock):");
    println!();
    println!("| stage | median | min | max |");
    println!("|---|---|---|---|");
    type Stage = (&'static str, fn(&Round) -> f64);
    let stages: [Stage; 5] = [
        (
            "kill → victim unclean (corosync and Pacemaker's detection)",
            |r| r[0],
        ),
        (
            "unclean → request at a host (Pacemaker's transition, fence_xvm's start)",
            |r| r[3] - r[0],
        ),
        (
            "request → answer (fenceline: CPG round, claim, action)",
            |r| r[4] - r[3],
        ),
        ("of which the acting host's libvirt action", |r| r[5]),
        (
            "answer → success recorded (fence_xvm's reply, Pacemaker's fencer)",
            |r| r[1] - r[4],
        ),
    ];
    for (what, f) in stages {
        let mut v: Vec<f64> = fl.iter().map(f).collect();
        println!("| {what} {}", stat(&mut v));
    }
    Ok(())
}
