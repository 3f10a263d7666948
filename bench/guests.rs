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

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use fenceline::sandbox::{Lab, LabSpec};

#[path = "common.rs"]
mod common;

use common::pct;

const TIMEOUT: Duration = Duration::from_secs(60);

/// Per round: (unclean, fenced, recovered) in seconds after the kill.
fn measure(lab: &Lab, rounds: usize) -> Result<Vec<[f64; 3]>> {
    let v = lab.guest_victim();
    let name = lab.guest_name(v);
    let home = vec![name.clone()];
    let mut out = Vec::new();
    for r in 1..=rounds {
        let ok0 = lab.guest_fence_successes(1, &name)?;
        let t0 = Instant::now();
        lab.kill_guest_corosync(v, libc::SIGKILL)?;
        let o = lab.watch_guest_failover(t0, ok0, TIMEOUT);
        let s = |d: Option<Duration>, what: &str| {
            d.map(|d| d.as_secs_f64())
                .ok_or_else(|| anyhow!("round {r}: {what} not within {TIMEOUT:?}"))
        };
        let row = [
            s(o.unclean, "unclean").unwrap_or(f64::NAN),
            s(o.fenced, "fence recorded successful")?,
            s(o.recovered, "Dummies on a survivor")?,
        ];
        eprintln!(
            "  round {r}: unclean {:.2} s, fenced {:.2} s, recovered {:.2} s",
            row[0], row[1], row[2]
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

fn run(fence_virtd: bool, bin: &Path, rounds: usize) -> Result<Vec<[f64; 3]>> {
    let lab = Lab::up(LabSpec::guest_cluster(
        (!fence_virtd).then(|| bin.to_path_buf()),
    ))?;
    let r = measure(&lab, rounds);
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
    for (who, rows) in [("fenceline", &fl), ("fence_virtd 4.12.1", &fv)] {
        for (k, what) in [
            "victim unclean (detection)",
            "fence recorded successful",
            "Dummies started on a survivor",
        ]
        .iter()
        .enumerate()
        {
            let mut v: Vec<f64> = rows.iter().map(|r| r[k]).filter(|x| !x.is_nan()).collect();
            println!(
                "| {who} | {what} | {:.2} | {:.2} | {:.2} |",
                pct(&mut v, 0.5),
                pct(&mut v, 0.0),
                pct(&mut v, 1.0)
            );
        }
    }
    Ok(())
}
