//! Fencing benchmark, run by hand as root (`bench/fence.sh`); prints a table.
//!
//! One 3-node lab (real corosync, a private libvirtd per node serving the
//! test driver, a client namespace playing a guest). Phase 1: real
//! fence_virtd (cpg backend, multicast listener) on every node. Phase 2: the
//! same lab with fence_virtd stopped and fenceline daemons on every node. In
//! both phases real `fence_xvm` runs the same operations from the guest on
//! the same VMs, and the wall time of each run is measured.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use fenceline::sandbox::{Lab, LabSpec, wait_until};

#[path = "common.rs"]
mod common;

use common::pct;

/// The operations, in the order they run each round.
const OPS: [(&str, &str, &str); 5] = [
    ("list", "list", ""),
    ("status", "status", "vm2a"),
    ("off", "off", "vm2b"),
    ("on", "on", "vm2b"),
    ("reboot", "reboot", "vm1a"),
];

fn fence_xvm(lab: &Lab, op: &str, vm: &str) -> Result<f64> {
    let key = lab.fence_key_path();
    let key = key.to_string_lossy().into_owned();
    let mut argv = vec!["fence_xvm", "-k", &key, "-t", "10", "-o", op];
    if !vm.is_empty() {
        argv.extend(["-H", vm]);
    }
    let t0 = Instant::now();
    let out = lab.exec_client(&argv, Duration::from_secs(30))?;
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    if !out.success() {
        bail!(
            "fence_xvm -o {op} {vm}: exit {:?}: {} {}",
            out.status.code(),
            out.stdout.trim(),
            out.stderr.trim()
        );
    }
    Ok(ms)
}

fn measure(lab: &Lab, rounds: usize) -> Result<Vec<Vec<f64>>> {
    // One warm-up round (first connections, ARP, caches), not counted.
    for (_, op, vm) in OPS {
        fence_xvm(lab, op, vm)?;
    }
    let mut times = vec![Vec::new(); OPS.len()];
    for _ in 0..rounds {
        for (k, (_, op, vm)) in OPS.iter().enumerate() {
            times[k].push(fence_xvm(lab, op, vm)?);
        }
    }
    Ok(times)
}

fn main() -> Result<()> {
    let bin = PathBuf::from(
        std::env::var_os("FENCELINE_BIN").context("set FENCELINE_BIN to the fenceline binary")?,
    );
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let lab = Lab::up(LabSpec {
        fenceline_bin: Some(bin),
        fence_virtd_nodes: vec![1, 2, 3],
        client_ns: true,
        ..LabSpec::default()
    })?;
    eprintln!("phase 1: fence_virtd on every node ({rounds} rounds)");
    let fv = measure(&lab, rounds)?;
    for i in 1..=3 {
        lab.stop_fence_virtd(i, libc::SIGTERM)?;
    }
    for i in 1..=3 {
        lab.start_daemon(i)?;
    }
    if !wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        (1..=3).all(|i| {
            lab.status_json(i).is_ok_and(|v| {
                v["quorate"] == true && v["domains"].as_array().is_some_and(|d| d.len() == 9)
            })
        })
    }) {
        bail!("fenceline daemons did not converge");
    }
    eprintln!("phase 2: fenceline on every node ({rounds} rounds)");
    let fl = measure(&lab, rounds)?;
    lab.down()?;

    println!("fence_xvm wall time from a guest namespace, 3-node lab, {rounds} rounds (ms)");
    println!();
    println!(
        "| op | fence_virtd p50 | fence_virtd p99 | fenceline p50 | fenceline p99 | ratio p50 (fenceline/fence_virtd) | target |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (k, (name, _, _)) in OPS.iter().enumerate() {
        let (mut a, mut b) = (fv[k].clone(), fl[k].clone());
        let (a50, a99, b50, b99) = (
            pct(&mut a, 0.5),
            pct(&mut a, 0.99),
            pct(&mut b, 0.5),
            pct(&mut b, 0.99),
        );
        let ratio = b50 / a50;
        let (target, ok) = if *name == "reboot" {
            ("≤ 0.1×", ratio <= 0.1)
        } else {
            ("≤ 1×", ratio <= 1.0)
        };
        println!(
            "| {name} | {a50:.1} | {a99:.1} | {b50:.1} | {b99:.1} | {ratio:.3} | {target} {} |",
            if ok { "met" } else { "MISSED" }
        );
    }
    Ok(())
}
