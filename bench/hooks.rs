//! Network hook benchmark, run by hand as root (`bench/hooks.sh`); prints a
//! table.
//!
//! On a 2-node lab with the daemons running:
//! 1. the wall time of one `fenceline hook network ...` process (spawn to
//!    exit, the updated.xml sample on stdin), which is what libvirtd waits
//!    for on every network operation;
//! 2. the latency from starting that hook on node 1 to the event arriving in
//!    node 2's `fenceline events --json --follow` stream (hook → node 1's
//!    intake → engine → CPG → node 2's engine → control socket → client).
//! 3. for reference, `virsh net-update` of a real network with the hook
//!    installed (libvirtd runs the hook inside the call).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use fenceline::sandbox::{Lab, LabSpec, QEMU_URI, wait_until};

#[path = "common.rs"]
mod common;

use common::{Follower, now_ms, pct};

fn main() -> Result<()> {
    let bin = std::env::var_os("FENCELINE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/release/fenceline"));
    if !bin.exists() {
        bail!(
            "{} not found; build with cargo build --release",
            bin.display()
        );
    }
    let bin = std::fs::canonicalize(bin)?;
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let lab = Lab::up(LabSpec {
        nodes: 2,
        fenceline_bin: Some(bin.clone()),
        uris: vec![QEMU_URI.to_string()],
        network_hooks: true,
        ..LabSpec::default()
    })?;
    if !wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        lab.status_json(2).is_ok_and(|v| {
            v["networks"]
                .as_array()
                .is_some_and(|n| n.iter().any(|x| x["node"] == 1))
        })
    }) {
        bail!("node 2 never saw node 1's network");
    }
    let follower = Follower::start(&lab, 2, &bin)?;
    std::thread::sleep(Duration::from_millis(500));
    // The hook talks to node 1's daemon through the socket path as seen from
    // here, so nothing but the hook process itself is timed (no nsenter).
    let sock = lab.node_path(1, "/run/fenceline/hook.sock")?;
    let xml = include_bytes!("../proto/src/hook/testdata/updated.xml");
    // What the installed wrapper runs: the small `fenceline-hook` binary.
    let hook_bin = bin.with_file_name("fenceline-hook");
    if !hook_bin.exists() {
        bail!(
            "{} missing (cargo build --release --bin fenceline-hook)",
            hook_bin.display()
        );
    }
    let mut wall = Vec::with_capacity(rounds);
    let mut wall_full = Vec::with_capacity(rounds);
    let mut to_peer = Vec::with_capacity(rounds);
    // `fenceline hook` (the full binary) for comparison: wall time only.
    for r in 0..rounds {
        let t0 = Instant::now();
        let mut child = std::process::Command::new(&bin)
            .args(["hook", "--socket"])
            .arg(&sock)
            .args(["network", &format!("full{r}"), "updated", "begin", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        child.stdin.take().context("stdin")?.write_all(xml)?;
        child.wait()?;
        wall_full.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    for r in 0..rounds {
        let net = format!("bench{r}");
        let t0_ms = now_ms();
        let t0 = Instant::now();
        let mut child = std::process::Command::new(&hook_bin)
            .arg("--socket")
            .arg(&sock)
            .args(["network", &net, "updated", "begin", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        child.stdin.take().context("stdin")?.write_all(xml)?;
        let out = child.wait_with_output()?;
        wall.push(t0.elapsed().as_secs_f64() * 1000.0);
        if !out.status.success() || !out.stderr.is_empty() {
            bail!(
                "hook failed: {} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let Some((t, _)) = follower.wait(Duration::from_secs(5), |v| {
            v["kind"] == "network-hook" && v["node"] == 1 && v["network"] == net.as_str()
        }) else {
            bail!("node 2 did not see {net}");
        };
        to_peer.push(t.saturating_sub(t0_ms) as f64);
    }
    // libvirt's own view: net-update on a real network runs the hook inside.
    let mut update = Vec::new();
    for r in 0..20 {
        let pg = format!("<portgroup name='pg{r}'/>");
        let t0 = Instant::now();
        lab.virsh_uri(
            1,
            QEMU_URI,
            &[
                "net-update",
                "net1",
                "add-last",
                "portgroup",
                &pg,
                "--live",
                "--config",
            ],
        )?;
        update.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\n| {:<58} | {:>9} | {:>9} | {:<14} |",
        "measure", "p50", "p99", "target"
    );
    println!("|{:-<60}|{:->11}|{:->11}|{:-<16}|", "", "", "", "");
    let row = |what: &str, v: &mut Vec<f64>, target: &str| {
        println!(
            "| {:<58} | {:>6.1} ms | {:>6.1} ms | {:<14} |",
            what,
            pct(v, 0.5),
            pct(v, 0.99),
            target
        );
    };
    row(
        &format!("hook process wall time, `fenceline-hook` ({rounds} runs)"),
        &mut wall,
        "p50 < 20 ms",
    );
    row(
        &format!("same with `fenceline hook` (full binary, {rounds} runs)"),
        &mut wall_full,
        "",
    );
    row(
        &format!("hook start → event in peer's `events --follow` ({rounds})"),
        &mut to_peer,
        "p50 < 50 ms",
    );
    row(
        "`virsh net-update` with the hook installed (20 runs)",
        &mut update,
        "-",
    );
    println!("\nload average during the run: {}", load.trim());
    Ok(())
}
