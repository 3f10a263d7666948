//! Engine benchmark, run by hand as root (`bench/engine.sh`); prints a table.
//!
//! 1. Propagation: `virsh destroy/start` on node 2 of a 3-node lab → the state
//!    change in node 1's event stream (p50/p99).
//! 2. Purge: corosync SIGKILL on node 3 → node 1's membership callback → its
//!    VMs gone from node 1's map (and seen by a client).
//! 3. Scale: one node with 10,000 test-driver domains: daemon RSS, full resync
//!    time, idle CPU over 60 s; fence_virtd (cpg backend) on the same domains
//!    in the same run, where it has the figure.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use fenceline::sandbox::{Lab, LabSpec, wait_until};
use serde_json::Value;

#[path = "common.rs"]
mod common;

use common::{Follower, now_ms, pct};

fn event_time(v: &Value) -> Option<u64> {
    fenceline_proto::api::rfc3339::parse(v["time"].as_str()?)
}

fn is_state(v: &Value, name: &str, state: &str) -> bool {
    v["kind"] == "domain" && v["name"] == name && v["state"] == state
}

struct Row {
    what: String,
    fenceline: String,
    fence_virtd: String,
    target: String,
}

fn propagation(bin: &Path, rounds: usize, rows: &mut Vec<Row>) -> Result<()> {
    let lab = Lab::up(LabSpec {
        fenceline_bin: Some(bin.to_path_buf()),
        ..LabSpec::default()
    })?;
    if !wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        lab.status_json(1)
            .is_ok_and(|v| v["domains"].as_array().is_some_and(|d| d.len() == 9))
    }) {
        bail!("3-node lab did not converge");
    }
    let n1 = Follower::start(&lab, 1, bin)?;
    let n2 = Follower::start(&lab, 2, bin)?;
    std::thread::sleep(Duration::from_millis(500));
    n1.drain();
    n2.drain();
    let mut cmd_to_peer = Vec::new();
    let mut origin_to_peer = Vec::new();
    for r in 0..rounds {
        let (verb, state) = if r % 2 == 0 {
            ("destroy", "shutoff")
        } else {
            ("start", "running")
        };
        let t0 = now_ms();
        lab.virsh(2, &[verb, "vm2a"])?;
        let Some((t_peer, _)) = n1.wait(Duration::from_secs(5), |v| is_state(v, "vm2a", state))
        else {
            bail!("node 1 did not see vm2a {state}");
        };
        let Some((_, origin)) = n2.wait(Duration::from_secs(5), |v| is_state(v, "vm2a", state))
        else {
            bail!("node 2 did not see vm2a {state}");
        };
        cmd_to_peer.push((t_peer - t0) as f64);
        if let Some(t_origin) = event_time(&origin) {
            origin_to_peer.push(t_peer.saturating_sub(t_origin) as f64);
        }
    }
    rows.push(Row {
        what: format!("state change node2 → node1 client, engine part ({rounds} changes)"),
        fenceline: format!(
            "p50 {:.0} ms, p99 {:.0} ms",
            pct(&mut origin_to_peer, 0.5),
            pct(&mut origin_to_peer, 0.99)
        ),
        fence_virtd: "n/a (no live map)".into(),
        target: "p50 < 50 ms, p99 < 200 ms".into(),
    });
    rows.push(Row {
        what: "  same, from `virsh` command start (includes virsh)".into(),
        fenceline: format!(
            "p50 {:.0} ms, p99 {:.0} ms",
            pct(&mut cmd_to_peer, 0.5),
            pct(&mut cmd_to_peer, 0.99)
        ),
        fence_virtd: "n/a".into(),
        target: String::new(),
    });

    // Purge after a hard node loss.
    n1.drain();
    let t_kill = now_ms();
    lab.kill_corosync(3, libc::SIGKILL)?;
    // The first membership callback about node 3 (the CPG confchg or the
    // quorum notification, whichever corosync delivers first) purges; collect
    // events in any order until both the callback and the purge are seen.
    let mut t_cb: Option<u64> = None;
    let mut purge: Option<(u64, u64)> = None;
    let end = Instant::now() + Duration::from_secs(20);
    while (t_cb.is_none() || purge.is_none()) && Instant::now() < end {
        let Some((arrived, v)) = n1.wait(Duration::from_secs(1), |_| true) else {
            continue;
        };
        let about3 = v["nodeid"] == 3;
        if v["kind"] == "membership"
            && about3
            && (v["action"] == "left" || v["action"] == "daemon-left")
        {
            let t = event_time(&v).unwrap_or(0);
            t_cb = Some(t_cb.map_or(t, |c| c.min(t)));
        }
        if v["kind"] == "domain" && v["action"] == "purged" && v["name"] == "vm3b" {
            purge = Some((event_time(&v).unwrap_or(0), arrived));
        }
    }
    let (Some(t_cb), Some((t_purge, t_seen))) = (t_cb, purge) else {
        bail!("node 1 did not see node 3 leave and its VMs purged");
    };
    rows.push(Row {
        what: "lost node: membership callback → VMs gone from map".into(),
        fenceline: format!(
            "{} ms (client saw it after {} ms)",
            t_purge.saturating_sub(t_cb),
            t_seen.saturating_sub(t_cb)
        ),
        fence_virtd: "n/a (no map to show)".into(),
        target: "< 100 ms".into(),
    });
    rows.push(Row {
        what: "  corosync SIGKILL → callback (token 1000 ms)".into(),
        fenceline: format!("{} ms", t_cb.saturating_sub(t_kill)),
        fence_virtd: "same corosync".into(),
        target: String::new(),
    });
    drop(n1);
    drop(n2);
    lab.down()?;
    Ok(())
}

fn big_xml(dir: &Path, n: usize) -> Result<PathBuf> {
    let p = dir.join("big.xml");
    let mut s = String::from("<node xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>\n");
    for i in 0..n {
        let state = if i % 4 == 3 {
            "<test:runstate>5</test:runstate>"
        } else {
            ""
        };
        s.push_str(&format!(
            "<domain type='test'><name>big{i:05}</name><uuid>8f1eb16b-0000-4000-8000-{i:012x}</uuid><memory>65536</memory><os><type>hvm</type></os>{state}</domain>\n"
        ));
    }
    s.push_str("</node>\n");
    std::fs::write(&p, s)?;
    Ok(p)
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn idle_cpu(pid: u32, secs: u64) -> Option<f64> {
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let a = cpu_ticks(pid)?;
    std::thread::sleep(Duration::from_secs(secs));
    let b = cpu_ticks(pid)?;
    Some((b - a) as f64 / hz / secs as f64 * 100.0)
}

fn scale(bin: &Path, n: usize, idle_secs: u64, rows: &mut Vec<Row>) -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("fenceline-bench-")
        .tempdir()?;
    let xml = big_xml(dir.path(), n)?;
    // Served by the node's libvirtd, as qemu:///system is: the domain
    // definitions live in libvirtd, not in the measured process.
    let uri = format!("test+unix://{}", xml.display());
    let lab = Lab::up(LabSpec {
        nodes: 1,
        fenceline_bin: Some(bin.to_path_buf()),
        uris: vec![uri.clone()],
        domains: false,
        ..LabSpec::default()
    })?;
    let count = |lab: &Lab| {
        lab.status_json(1)
            .ok()
            .and_then(|v| v["domains"].as_array().map(Vec::len))
            .unwrap_or(0)
    };
    if !wait_until(Duration::from_secs(60), Duration::from_millis(100), || {
        count(&lab) >= n
    }) {
        bail!("daemon did not list {n} domains");
    }
    // Full resync: restart the daemon and time until the map is complete again.
    lab.stop_daemon(1, libc::SIGTERM)?;
    let t0 = Instant::now();
    lab.start_daemon(1)?;
    if !wait_until(Duration::from_secs(60), Duration::from_millis(20), || {
        count(&lab) >= n
    }) {
        bail!("resync did not complete");
    }
    let resync = t0.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let pid = lab.daemon_pid(1).context("daemon pid")?;
    let rss = rss_kib(pid).unwrap_or(0);
    let cpu = idle_cpu(pid, idle_secs).unwrap_or(f64::NAN);

    // fence_virtd (cpg backend) on the same domains, same node, same corosync.
    lab.stop_daemon(1, libc::SIGTERM)?;
    let fv = start_fence_virtd(&lab, dir.path(), &uri)?;
    let (fv_rss, fv_cpu) = match fv {
        Some(mut child) => {
            let pid = child.id();
            std::thread::sleep(Duration::from_secs(3));
            let rss = rss_kib(pid);
            let cpu = idle_cpu(pid, idle_secs);
            let _ = child.kill();
            let _ = child.wait();
            (
                rss.map(|r| format!("{:.1} MB", r as f64 / 1024.0))
                    .unwrap_or_else(|| "?".into()),
                cpu.map(|c| format!("{c:.2} %"))
                    .unwrap_or_else(|| "?".into()),
            )
        }
        None => ("did not start".into(), "did not start".into()),
    };
    rows.push(Row {
        what: format!("{n} domains: daemon RSS"),
        fenceline: format!("{:.1} MB", rss as f64 / 1024.0),
        fence_virtd: fv_rss,
        target: "< 100 MB".into(),
    });
    rows.push(Row {
        what: format!("{n} domains: full resync (daemon start → complete map)"),
        fenceline: format!("{:.2} s", resync.as_secs_f64()),
        fence_virtd: "n/a (lists on each request)".into(),
        target: "< 2 s".into(),
    });
    rows.push(Row {
        what: format!("{n} domains: idle CPU over {idle_secs} s"),
        fenceline: format!("{cpu:.2} %"),
        fence_virtd: fv_cpu,
        target: "< 1 %".into(),
    });
    lab.down()?;
    Ok(())
}

fn start_fence_virtd(lab: &Lab, dir: &Path, uri: &str) -> Result<Option<Child>> {
    let Some(module) = [
        "/usr/lib/x86_64-linux-gnu/fence-virt",
        "/usr/lib64/fence-virt",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.join("cpg.so").exists()) else {
        return Ok(None);
    };
    let key = dir.join("fence.key");
    std::fs::write(&key, [7u8; 64])?;
    let conf = dir.join("fence_virt.conf");
    std::fs::write(
        &conf,
        format!(
            "fence_virtd {{\n listener = \"multicast\";\n backend = \"cpg\";\n module_path = \"{}\";\n}}\n\
             listeners {{\n multicast {{\n key_file = \"{}\";\n address = \"225.0.0.12\";\n port = \"1229\";\n interface = \"eth0\";\n }}\n}}\n\
             backends {{\n cpg {{\n uri = \"{uri}\";\n name_mode = \"name\";\n }}\n}}\n",
            module.display(),
            key.display()
        ),
    )?;
    // fence_virtd 4.12.1's startup race leaves its CPG thread dead in most
    // starts; retry until it has two threads (sandbox-cluster.md §5.5a).
    for _ in 0..6 {
        let pidfile = dir.join("fence_virtd.pid");
        let _ = std::fs::remove_file(&pidfile);
        let c = conf.to_string_lossy().into_owned();
        let p = pidfile.to_string_lossy().into_owned();
        let mut cmd = lab.node_command(1, &["fence_virtd", "-F", "-w", "-f", &c, "-p", &p])?;
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = cmd.spawn()?;
        std::thread::sleep(Duration::from_secs(3));
        let threads = std::fs::read_dir(format!("/proc/{}/task", child.id()))
            .map(|d| d.count())
            .unwrap_or(0);
        if threads >= 2 {
            return Ok(Some(child));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    Ok(None)
}

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
        .unwrap_or(40);
    let n: usize = std::env::var("DOMAINS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let idle: u64 = std::env::var("IDLE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let mut rows = Vec::new();
    if std::env::var_os("SKIP_PROPAGATION").is_none() {
        propagation(&bin, rounds, &mut rows)?;
    }
    scale(&bin, n, idle, &mut rows)?;
    println!(
        "\n| {:<62} | {:<36} | {:<28} | {:<26} |",
        "measure", "fenceline", "fence_virtd 4.12.1", "target"
    );
    println!("|{:-<64}|{:-<38}|{:-<30}|{:-<28}|", "", "", "", "");
    for r in rows {
        println!(
            "| {:<62} | {:<36} | {:<28} | {:<26} |",
            r.what, r.fenceline, r.fence_virtd, r.target
        );
    }
    Ok(())
}
