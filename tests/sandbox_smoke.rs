//! Self-test of the sandbox lab harness (needs root; skipped otherwise).
#![cfg(feature = "lab")]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fenceline::sandbox::{Lab, LabSpec, cleanup_stale, lab_domains, lab_test_guard, wait_until};

/// (pid, starttime) of every process recorded in a lab's pids file.
fn recorded_pids(dir: &Path) -> Vec<(u32, u64, String)> {
    std::fs::read_to_string(dir.join("pids"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("owner"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((
                f.first()?.parse().ok()?,
                f.get(1)?.parse().ok()?,
                f.get(2)?.to_string(),
            ))
        })
        .collect()
}

fn proc_alive(pid: u32, starttime: u64) -> bool {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let rest = &s[s.rfind(')').unwrap() + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[19].parse::<u64>().ok() == Some(starttime) && f[0] != "Z" && f[0] != "X"
}

fn netns_with_prefix(prefix: &str) -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

fn assert_gone(prefix: &str, dir: &Path, pids: &[(u32, u64, String)]) {
    assert!(
        netns_with_prefix(prefix).is_empty(),
        "namespaces left: {:?}",
        netns_with_prefix(prefix)
    );
    for (pid, st, role) in pids {
        assert!(!proc_alive(*pid, *st), "{role} (pid {pid}) still alive");
    }
    assert!(!dir.exists(), "{} still exists", dir.display());
}

/// `virsh list --all` → (name, state) pairs.
fn domain_states(list: &str) -> Vec<(String, String)> {
    list.lines()
        .skip(2)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3).then(|| (f[1].to_string(), f[2..].join(" ")))
        })
        .collect()
}

fn assert_lab_domains(lab: &Lab, i: usize) {
    let list = lab.virsh(i, &["list", "--all"]).unwrap();
    let states = domain_states(&list);
    assert!(
        !states.iter().any(|(n, _)| n == "test"),
        "node {i}: built-in domain 'test' still there:\n{list}"
    );
    assert_eq!(states.len(), 3, "node {i}:\n{list}");
    for d in lab_domains(i) {
        let want = if d.running { "running" } else { "shut off" };
        assert!(
            states.iter().any(|(n, s)| *n == d.name && s == want),
            "node {i}: {} should be {want}:\n{list}",
            d.name
        );
        let uuid = lab.virsh(i, &["domuuid", &d.name]).unwrap();
        assert_eq!(uuid.trim(), d.uuid);
    }
}

fn shm_leftovers(pid: u32) -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.starts_with(&format!("qb-{pid}-")) || n.starts_with(&format!("qb-corosync-{pid}-"))
        })
        .collect()
}

#[test]
fn three_node_lab_smoke() {
    if !lab_test_guard("three_node_lab_smoke") {
        return;
    }
    let t0 = Instant::now();
    let lab = Lab::up(LabSpec {
        nodes: 3,
        ..Default::default()
    })
    .expect("lab up");
    eprintln!(
        "three_node_lab_smoke: up in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    let prefix = lab.prefix().to_string();
    let dir: PathBuf = lab.dir().to_path_buf();
    assert!(dir.starts_with("/tmp"));
    assert_eq!(lab.node_count(), 3);

    // corosync: 3 nodes, quorate, as printed by the real tool on node 1.
    let q = lab.exec(1, &["corosync-quorumtool", "-s"]).unwrap();
    let text = q.stdout;
    assert!(
        text.lines()
            .any(|l| l.starts_with("Quorate:") && l.contains("Yes")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("Nodes:") && l.trim_end().ends_with('3')),
        "{text}"
    );
    assert!(text.contains("node1") && text.contains("node3"), "{text}");
    let qi = lab.quorum(2).unwrap();
    assert_eq!(
        (qi.quorate, qi.nodes, qi.members.clone()),
        (true, 3, vec![1, 2, 3])
    );

    // Each node: its own libvirtd, its own domains, no built-in "test".
    for i in 1..=3 {
        assert_lab_domains(&lab, i);
    }
    // The node's mount namespace is private: /run/libvirt differs per node.
    {
        use std::os::unix::fs::MetadataExt;
        let ino = |i| {
            let p = lab.node_path(i, "/run/libvirt/libvirt-sock").unwrap();
            let m = std::fs::metadata(&p).unwrap();
            (m.dev(), m.ino())
        };
        assert_ne!(ino(1), ino(2));
    }

    // An extra domain with the UUID of node 1's vm1a, on node 2 (conflict setup).
    let dup = &lab_domains(1)[0];
    lab.define_test_domain(2, &dup.name, &dup.uuid, true)
        .unwrap();
    let l2 = domain_states(&lab.virsh(2, &["list", "--all"]).unwrap());
    assert!(
        l2.iter().any(|(n, s)| *n == dup.name && s == "running"),
        "{l2:?}"
    );

    // libvirtd restart: new pid, domains back in their initial state.
    lab.virsh(2, &["destroy", "vm2a"]).unwrap();
    let old = lab.libvirtd_pid(2).unwrap();
    let t = Instant::now();
    lab.restart_libvirtd(2).unwrap();
    eprintln!("libvirtd restart took {:.2}s", t.elapsed().as_secs_f64());
    let new = lab.libvirtd_pid(2).unwrap();
    assert_ne!(old, new);
    assert_lab_domains(&lab, 2);

    // SIGKILL corosync on node 3: node 1 sees 2 members (token 1000 → ~3.5 s).
    let cs3 = lab.corosync_pid(3).unwrap();
    let t = Instant::now();
    lab.kill_corosync(3, libc::SIGKILL).unwrap();
    assert!(lab.corosync_pid(3).is_none());
    let q = lab.wait_members(1, 2, Duration::from_secs(20)).unwrap();
    eprintln!(
        "node 1 saw 2 members {:.2}s after SIGKILL of node 3's corosync",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(q.members, vec![1, 2]);
    assert!(q.quorate);
    assert!(shm_leftovers(cs3).is_empty(), "{:?}", shm_leftovers(cs3));

    // ...and it rejoins.
    lab.start_corosync(3).unwrap();
    lab.wait_members(1, 3, Duration::from_secs(20)).unwrap();

    let pids = recorded_pids(&dir);
    assert!(pids.len() >= 10, "{pids:?}");
    let t = Instant::now();
    drop(lab);
    eprintln!(
        "three_node_lab_smoke: down in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    assert_gone(&prefix, &dir, &pids);
}

#[test]
fn fence_virtd_node_joins_cpg() {
    if !lab_test_guard("fence_virtd_node_joins_cpg") {
        return;
    }
    let t0 = Instant::now();
    let lab = Lab::up(LabSpec {
        nodes: 3,
        fence_virtd_nodes: vec![3],
        client_ns: true,
        ..Default::default()
    })
    .expect("lab up");
    eprintln!(
        "fence_virtd_node_joins_cpg: up in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    let prefix = lab.prefix().to_string();
    let dir = lab.dir().to_path_buf();

    let pid = lab.fence_virtd_pid(3).expect("fence_virtd runs on node 3");
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count();
    assert!(threads >= 2, "fence_virtd has {threads} thread(s)");
    assert!(lab.fence_virtd_pid(1).is_none());

    // Its CPG group is visible from another node.
    let mut last = String::new();
    let seen = wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
        last = lab.exec(1, &["corosync-cpgtool"]).unwrap().stdout;
        last.contains("fence-agents") && last.contains(&pid.to_string())
    });
    assert!(seen, "corosync-cpgtool on node 1:\n{last}");

    // And it answers fence_xvm from the client namespace, using node 3's libvirtd.
    if fenceline::sandbox::which("fence_xvm").is_some() {
        let key = lab.fence_key_path();
        let key = key.to_str().unwrap();
        let status = |vm: &str| {
            lab.exec_client(
                &["fence_xvm", "-k", key, "-t", "10", "-o", "status", "-H", vm],
                Duration::from_secs(20),
            )
            .unwrap()
        };
        let on = status("vm3a");
        assert_eq!(on.code(), Some(0), "{on:?}");
        let off = status("vm3off");
        assert_eq!(off.code(), Some(2), "{off:?}");
    }

    let pids = recorded_pids(&dir);
    drop(lab);
    assert_gone(&prefix, &dir, &pids);
}

#[test]
fn cleanup_stale_removes_orphaned_lab() {
    if !lab_test_guard("cleanup_stale_removes_orphaned_lab") {
        return;
    }
    let lab = Lab::up(LabSpec {
        nodes: 1,
        ..Default::default()
    })
    .expect("lab up");
    let prefix = lab.prefix().to_string();
    let dir = lab.dir().to_path_buf();
    let pids = recorded_pids(&dir);
    // Pretend the owner crashed (a pid above pid_max cannot be alive) and skip Drop.
    let text = std::fs::read_to_string(dir.join("pids")).unwrap();
    let fixed: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with("owner") {
                "owner 4194305 1".into()
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(dir.join("pids"), fixed.join("\n") + "\n").unwrap();
    std::mem::forget(lab);
    cleanup_stale().unwrap();
    assert_gone(&prefix, &dir, &pids);
}

#[test]
fn failed_up_cleans_up() {
    if !lab_test_guard("failed_up_cleans_up") {
        return;
    }
    // A "daemon" that exits at once makes Lab::up fail after everything else is up.
    let prefix = format!("fz{:x}", std::process::id() % 0xfffff);
    let err = match Lab::up(LabSpec {
        nodes: 1,
        prefix: Some(prefix.clone()),
        fenceline_bin: Some(PathBuf::from("/bin/false")),
        ..Default::default()
    }) {
        Ok(_) => panic!("Lab::up with /bin/false as daemon must fail"),
        Err(e) => format!("{e:#}"),
    };
    eprintln!("expected error: {err}");
    assert!(err.contains("fenceline daemon on node 1"), "{err}");
    let dir = PathBuf::from(format!("/tmp/fenceline-lab-{prefix}"));
    assert_gone(&prefix, &dir, &[]);
}
