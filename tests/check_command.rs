//! `fenceline check` on a real lab node (corosync, libvirtd, the daemon with
//! its multicast listener on eth0 and its tcp listener on the node's
//! address): healthy (0), a world-readable key (2, the file named), a
//! listener interface that does not exist (2), a daemon waiting for its
//! listener interface (2, then 0 once the interface is created), a peer that
//! left (1 on the survivors), and a node whose corosync was killed (2).
#![cfg(feature = "lab")]

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use fenceline::sandbox::{CmdOutput, Lab, LabSpec, lab_test_guard};

mod common;
use common::{CONVERGE, bin, full_map, lab, wait_status};

/// `fenceline --config <node i's config> check [extra]` on node `i`.
fn check(lab: &Lab, i: usize, config: &std::path::Path) -> CmdOutput {
    let conf = config.to_string_lossy().into_owned();
    lab.fenceline(i, &["--config", &conf, "check", "--timeout-secs", "5"])
        .expect("fenceline check runs")
}

fn code(o: &CmdOutput) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// The exit code is `want` and the summary line (the first) contains `text`.
fn expect(o: &CmdOutput, want: i32, text: &str) {
    let first = o.stdout.lines().next().unwrap_or_default();
    assert!(
        code(o) == want && first.contains(text),
        "wanted exit {want} and a summary with {text:?}: {o:?}"
    );
}

/// Runs `check` on node `i` until its exit code is `want`; the last output.
fn wait_check(lab: &Lab, i: usize, want: i32, timeout: Duration) -> CmdOutput {
    let t0 = Instant::now();
    loop {
        let o = check(lab, i, &lab.fenceline_config_path(i));
        if code(&o) == want || t0.elapsed() > timeout {
            return o;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn check_judges_a_real_node() {
    if !lab_test_guard("check_judges_a_real_node") {
        return;
    }
    let lab = lab(LabSpec {
        fenceline_bin: Some(bin()),
        ..LabSpec::default()
    });
    for i in 1..=3 {
        wait_status(
            &lab,
            i,
            "quorate, full map, every key digest",
            CONVERGE,
            |v| {
                v["quorate"] == true
                    && full_map(v, &[1, 2, 3], false)
                    && v["nodes"].as_array().is_some_and(|n| {
                        n.len() == 3 && n.iter().all(|n| n["key_digests"]["multicast"].is_string())
                    })
            },
        );
    }

    // One request through the cluster, so the last successful fence shows.
    let f = lab
        .fenceline(1, &["fence", "status", "vm2a"])
        .expect("fence");
    assert_eq!(code(&f), 0, "{f:?}");

    // Healthy: 0, one summary line first, the digests compared, the
    // loopback request answered through the tcp listener.
    let o = wait_check(&lab, 1, 0, CONVERGE);
    eprintln!("healthy node 1:\n{}", o.stdout);
    expect(&o, 0, "FENCELINE OK - ");
    for line in [
        "[OK] keys: multicast key digest ".to_string(),
        ": the same on node2 (2), node3 (3)".to_string(),
        format!(
            "[OK] self-test: the tcp listener at {}:1229 verified a signed null request",
            lab.node_ip(1)
        ),
        "225.0.0.12 joined on eth0, udp port 1229 bound".to_string(),
        "last successful request here: status vm2a from control:".to_string(),
        "[OK] quorum: quorate (votes 3/3".to_string(),
    ] {
        assert!(o.stdout.contains(&line), "no {line:?} in\n{}", o.stdout);
    }

    // A world-readable key: critical, and the summary names the file.
    let key = lab.fence_key_path();
    let set_mode = |m| std::fs::set_permissions(&key, std::fs::Permissions::from_mode(m)).unwrap();
    set_mode(0o644);
    let o = check(&lab, 1, &lab.fenceline_config_path(1));
    set_mode(0o600);
    expect(&o, 2, "FENCELINE CRITICAL - ");
    expect(&o, 2, &key.to_string_lossy());
    expect(&o, 2, "readable by others");

    // A listener interface that does not exist (the node's config with
    // another interface; the running daemon keeps its own).
    let conf = std::fs::read_to_string(lab.fenceline_config_path(1)).unwrap();
    assert!(conf.contains("interface = \"eth0\""), "{conf}");
    let other = lab.dir().join("check-nosuch.toml");
    std::fs::write(
        &other,
        conf.replace("interface = \"eth0\"", "interface = \"nosuch0\""),
    )
    .unwrap();
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = check(&lab, 1, &other);
    expect(&o, 2, "multicast: interface nosuch0 does not exist");

    // A daemon whose listener interface appears only later: it waits
    // (issue 11 point 4), `check` is critical until the interface exists,
    // then OK. The interface carries the lab prefix and lives in node 2's
    // namespace, which the teardown deletes.
    let late = format!("{}late0", lab.prefix());
    let conf2 = lab.fenceline_config_path(2);
    let original = std::fs::read_to_string(&conf2).unwrap();
    lab.stop_daemon(2, libc::SIGTERM)
        .expect("stop node 2's daemon");
    std::fs::write(
        &conf2,
        original.replace("interface = \"eth0\"", &format!("interface = \"{late}\"")),
    )
    .unwrap();
    lab.start_daemon(2)
        .expect("the daemon starts and waits for its interface");
    let o = wait_check(&lab, 2, 2, CONVERGE);
    eprintln!("node 2 waiting for {late}:\n{}", o.stdout);
    expect(&o, 2, "FENCELINE CRITICAL - ");
    assert!(o.stdout.contains(&late), "{}", o.stdout);
    // A veth pair (this kernel may lack the dummy driver); its peer stays down.
    let peer = format!("{late}p");
    for argv in [
        vec![
            "ip",
            "link",
            "add",
            late.as_str(),
            "type",
            "veth",
            "peer",
            "name",
            peer.as_str(),
        ],
        vec!["ip", "link", "set", late.as_str(), "up"],
    ] {
        lab.exec_ok(2, &argv).expect("create the interface");
    }
    let o = wait_check(&lab, 2, 0, CONVERGE);
    eprintln!("node 2 after {late} appeared:\n{}", o.stdout);
    expect(&o, 0, "FENCELINE OK - ");
    assert!(
        o.stdout.contains(&format!("225.0.0.12 joined on {late}")),
        "{}",
        o.stdout
    );

    // corosync killed on node 3: node 3 is critical, the survivors warn
    // that node 3 is not accounted for.
    lab.kill_corosync(3, libc::SIGKILL).expect("kill corosync");
    let o = wait_check(&lab, 3, 2, CONVERGE);
    eprintln!("node 3 without corosync:\n{}", o.stdout);
    expect(&o, 2, "corosync unreachable");
    let o = wait_check(&lab, 1, 1, CONVERGE);
    eprintln!("node 1 after node 3 left:\n{}", o.stdout);
    expect(&o, 1, "FENCELINE WARNING - node3 (3) is not accounted for");
}
