//! The real client: a 3-guest Pacemaker cluster (corosync + pacemakerd per
//! guest namespace, `stonith:fence_xvm` with `pcmk_host_map`, Dummy
//! resources) fences its members through the daemons on the lab hosts.
//! Nothing is mocked: real corosync, Pacemaker 2.1, `fence_xvm`, a private
//! libvirtd per host (test-driver domains stand in for the guests' VMs: a
//! guest namespace plays the VM's OS), fenceline or fence_virtd.
//!
//! - fenceline: a guest dies → Pacemaker fences it → its domain really
//!   restarts on its host → the Dummies run on a survivor; a manual
//!   `stonith_admin --reboot` works; the fence device's recurring monitor
//!   keeps succeeding. With the host's fenceline SIGKILLed first, the fence
//!   fails and nothing is recovered, until `fenceline confirm <host>`. With
//!   the host cut off (the hosts run `self_fence_secs`), the fence fails
//!   until the host's self-fencing deadline, then succeeds, and the domain
//!   is shut off by its own host.
//! - fence_virtd, same faults (its daemon SIGKILLed; the host cut off): it
//!   reports success and Pacemaker recovers while the domain still runs
//!   (the lie fenceline refuses to tell).
//!
//! Needs root; the two labs run one after the other.
#![cfg(feature = "lab")]

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use fenceline::sandbox::{FenceEvent, GuestFailover, Lab, LabSpec, lab_test_guard};

mod common;
use common::{bin, events_lenient, lab};

/// The two labs are heavy (3 hosts + 3 guests each): never at once.
static SERIAL: Mutex<()> = Mutex::new(());

/// How long a fence and recovery may take after a guest fails.
const RECOVERY: Duration = Duration::from_secs(60);
/// How long the negative case watches Pacemaker not recovering.
const REFUSED_WATCH: Duration = Duration::from_secs(15);
/// `[fencing] self_fence_secs` of the fenceline hosts.
const SELF_FENCE_SECS: u64 = 6;

/// `virsh domid` and `virsh domstate` of a domain on its host.
fn domain(lab: &Lab, host: usize, name: &str) -> (String, String) {
    let id = lab.virsh(host, &["domid", name]).expect("virsh domid");
    let st = lab
        .virsh(host, &["domstate", name])
        .expect("virsh domstate");
    (id.trim().to_string(), st.trim().to_string())
}

/// Count of "success" fence events for `target`, and the failed ones
/// (Pacemaker keeps only the latest failure per target and action), seen
/// from guest g.
fn history(lab: &Lab, g: usize, target: &str) -> (usize, Vec<FenceEvent>) {
    let h = lab
        .guest_fence_history(g, target)
        .expect("stonith_admin --history");
    let ok = h
        .iter()
        .filter(|e| e.target == target && e.status == "success")
        .count();
    let failed = h
        .into_iter()
        .filter(|e| e.target == target && e.status == "failed")
        .collect();
    (ok, failed)
}

fn survivors(lab: &Lab) -> Vec<String> {
    (1..lab.guest_victim()).map(|g| lab.guest_name(g)).collect()
}

/// SIGKILLs the victim guest's corosync and [`watch`]es; returns its
/// domain's id (running) before the kill, and the outcome.
fn kill_victim_and_watch(lab: &Lab) -> (String, GuestFailover) {
    let v = lab.guest_victim();
    let (vname, host) = (lab.guest_name(v), lab.guest_host(v));
    let (id0, st0) = domain(lab, host, &vname);
    assert_eq!(st0, "running");
    let (ok0, _) = history(lab, 1, &vname);
    let t0 = Instant::now();
    lab.kill_guest_corosync(v, libc::SIGKILL).unwrap();
    (id0, lab.watch_guest_failover(t0, ok0, RECOVERY))
}

/// The victim guest boots again and takes its Dummies back.
fn victim_back(lab: &Lab) {
    let v = lab.guest_victim();
    lab.restart_guest(v, 1).unwrap();
    let home = vec![lab.guest_name(v)];
    lab.wait_guest_cluster(1, "Dummies back on the victim", |st| {
        lab.guest_dummies()
            .iter()
            .all(|d| st.started_on_one_of(d, &home))
    })
    .unwrap();
}

/// fence_virtd said "ok" after `fault`, Pacemaker recovered, and the
/// victim's domain (id `id` before) never stopped.
fn false_success(lab: &Lab, fault: &str, id: &str, o: &GuestFailover) {
    let v = lab.guest_victim();
    let (vname, host) = (lab.guest_name(v), lab.guest_host(v));
    eprintln!(
        "fence_virtd, {fault}, {vname} killed: fence recorded successful after {}, \
         Dummies started on a survivor after {}",
        secs(o.fenced),
        secs(o.recovered)
    );
    assert!(o.fenced.is_some() && o.recovered.is_some(), "{o:?}");
    assert_eq!(
        domain(lab, host, &vname),
        (id.to_string(), "running".to_string()),
        "{fault}: the domain still runs with the same id: fence_virtd's success was not true"
    );
}

fn secs(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.1} s", d.as_secs_f64()))
        .unwrap_or_else(|| "never".into())
}

#[test]
fn pacemaker_guests_fence_through_fenceline_and_never_on_a_lie() {
    if !lab_test_guard("pacemaker_guests_fence_through_fenceline_and_never_on_a_lie") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let t_up = Instant::now();
    let lab = lab(LabSpec {
        fenceline_extra_toml: format!("[fencing]\nself_fence_secs = {SELF_FENCE_SECS}\n"),
        ..LabSpec::guest_cluster(Some(bin()))
    });
    eprintln!(
        "lab + guest cluster up in {:.1} s",
        t_up.elapsed().as_secs_f64()
    );
    let v = lab.guest_victim();
    let (vname, host) = (lab.guest_name(v), lab.guest_host(v));
    let hostname = format!("node{host}");

    // 1. A guest dies: Pacemaker fences it through fence_xvm and fenceline
    //    restarts its domain on its host; its resources move.
    let (id0, o) = kill_victim_and_watch(&lab);
    eprintln!(
        "fenceline, {vname} killed: fence recorded successful after {}, Dummies started on a survivor after {}",
        secs(o.fenced),
        secs(o.recovered)
    );
    assert!(o.fenced.is_some() && o.recovered.is_some(), "{o:?}");
    let (id1, st1) = domain(&lab, host, &vname);
    assert_eq!(st1, "running", "rebooted: destroyed and started again");
    assert_ne!(id1, id0, "the domain on {hostname} was really restarted");
    let last = lab.guest_fence_history(1, &vname).unwrap();
    let last = last.iter().rfind(|e| e.status == "success").unwrap();
    assert_eq!(last.action, "reboot");
    assert!(survivors(&lab).contains(&last.delegate), "{last:?}");
    // The host that served the guest's fence_xvm names the requesting guest
    // (`[listeners] requester_names` = the lab's hosts file).
    let g = (1..=lab.guest_count())
        .find(|&g| lab.guest_name(g) == last.delegate)
        .unwrap();
    let want = format!("multicast:{} ({})", last.delegate, lab.guest_ip(g));
    let named = (1..=lab.node_count()).any(|i| {
        events_lenient(&lab, i).iter().any(|e| {
            e["kind"] == "fence"
                && e["phase"] == "result"
                && e["domain"] == vname.as_str()
                && e["source"] == want.as_str()
        })
    });
    assert!(named, "no host's fence event has source {want:?}");

    // 2. An admin fences from a guest with stonith_admin.
    let o = lab
        .guest_exec(
            1,
            &["stonith_admin", "--reboot", &vname],
            Duration::from_secs(60),
        )
        .unwrap();
    assert!(o.success(), "stonith_admin --reboot {vname}: {o:?}");
    let (id2, st2) = domain(&lab, host, &vname);
    assert_eq!(st2, "running");
    assert_ne!(
        id2, id1,
        "stonith_admin --reboot restarted the domain again"
    );

    // The guest boots again and takes its resources back.
    victim_back(&lab);

    // 3. The truth rule from Pacemaker's side: the host's fenceline is
    //    SIGKILLed, then the guest dies. No daemon can see the domain: the
    //    fence fails, and Pacemaker recovers nothing.
    lab.stop_daemon(host, libc::SIGKILL).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let (id3, _) = domain(&lab, host, &vname);
    let (ok3, failed3) = history(&lab, 1, &vname);
    lab.kill_guest_corosync(v, libc::SIGKILL).unwrap();
    let t1 = Instant::now();
    let mut failures_seen: Vec<FenceEvent> = Vec::new();
    let mut first_failure = None;
    // At least REFUSED_WATCH, and until a failed attempt is recorded (a
    // fence_xvm that hears no answer fails only after its 5 s timeout).
    while t1.elapsed() < REFUSED_WATCH || (failures_seen.is_empty() && t1.elapsed() < RECOVERY) {
        let (ok, failed) = history(&lab, 1, &vname);
        assert_eq!(
            ok, ok3,
            "a fence of {vname} was recorded successful while {hostname}'s daemon is down"
        );
        for f in failed {
            if !failed3.contains(&f) && !failures_seen.contains(&f) {
                first_failure.get_or_insert(t1.elapsed());
                failures_seen.push(f);
            }
        }
        let st = lab.guest_status(1).unwrap();
        let on = survivors(&lab);
        for d in lab.guest_dummies() {
            assert!(
                !st.resource(&d)
                    .is_some_and(|r| r.nodes.iter().any(|n| on.contains(n))),
                "{d} was recovered on a survivor without a true fence: {st:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let watched = t1.elapsed();
    assert!(
        !failures_seen.is_empty(),
        "Pacemaker tried to fence {vname} and failed; status: {:?}",
        lab.guest_status(1)
    );
    assert_eq!(
        domain(&lab, host, &vname).0,
        id3,
        "nobody touched the domain"
    );
    let st = lab.guest_status(1).unwrap();
    assert!(st.unclean.contains(&vname), "{vname} stays unclean: {st:?}");

    // The admin asserts that the host is down: the next fence succeeds and
    // recovery proceeds.
    let o = lab.fenceline(1, &["confirm", &hostname]).unwrap();
    assert!(o.success(), "fenceline confirm {hostname}: {o:?}");
    let t2 = Instant::now();
    let o = lab.watch_guest_failover(t2, ok3, RECOVERY);
    eprintln!(
        "fenceline, {hostname}'s daemon down, {vname} killed: fence failed ({} failures recorded, first after {:.1} s, \
         last by {}), nothing recovered in {:.0} s; after `fenceline confirm {hostname}`: fence successful after {}, \
         Dummies on a survivor after {}",
        failures_seen.len(),
        first_failure.map(|d| d.as_secs_f64()).unwrap_or(-1.0),
        failures_seen
            .last()
            .map(|f| f.delegate.as_str())
            .unwrap_or("?"),
        watched.as_secs_f64(),
        secs(o.fenced),
        secs(o.recovered)
    );
    assert!(o.fenced.is_some() && o.recovered.is_some(), "{o:?}");

    // 4. The fence device's recurring monitor kept succeeding all along.
    let st = lab.guest_status(1).unwrap();
    let fence = lab.guest_fence_resource();
    assert!(
        !st.failures.iter().any(|f| f.starts_with(fence)),
        "failed operations of {fence}: {:?}",
        st.failures
    );
    let monitors: Vec<_> = st
        .ops
        .iter()
        .filter(|op| op.rsc == fence && op.task == "monitor" && op.interval != "0ms")
        .collect();
    assert!(
        !monitors.is_empty() && monitors.iter().all(|op| op.rc == "0"),
        "recurring monitor of {fence}: {monitors:?}"
    );

    // 5. The victim's host cut off from the cluster (its daemon back first),
    //    then the guest dies. The majority refuses until the host's
    //    self-fencing deadline has passed by its own clock; the host has
    //    destroyed its VMs by then, and the fence succeeds.
    lab.start_daemon(host).unwrap();
    victim_back(&lab);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while lab.status_json(1).ok().and_then(|v| {
        v["nodes"].as_array().and_then(|n| {
            n.iter()
                .find(|x| x["nodeid"] == host as u64)
                .map(|x| x["accounted"] == true && x["self_fence_secs"] == SELF_FENCE_SECS)
        })
    }) != Some(true)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{hostname} accounted for again"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (ok5, failed5) = history(&lab, 1, &vname);
    let cut = Instant::now();
    lab.set_link(host, false).unwrap();
    lab.kill_guest_corosync(v, libc::SIGKILL).unwrap();
    let o = lab.watch_guest_failover(cut, ok5, RECOVERY);
    let (_, failed) = history(&lab, 1, &vname);
    let refused = failed.iter().filter(|f| !failed5.contains(f)).count();
    let st5 = domain(&lab, host, &vname).1;
    eprintln!(
        "fenceline, {hostname} cut off (self_fence_secs = {SELF_FENCE_SECS}), {vname} killed: {refused} failed attempts, \
         fence successful after {}, Dummies on a survivor after {}; the domain on {hostname}: {st5}",
        secs(o.fenced),
        secs(o.recovered)
    );
    assert!(o.fenced.is_some() && o.recovered.is_some(), "{o:?}");
    assert!(
        o.fenced >= Some(Duration::from_secs(SELF_FENCE_SECS)),
        "success before the host could have self-fenced: {o:?}"
    );
    assert!(refused >= 1, "Pacemaker's first attempts were refused");
    assert_eq!(st5, "shut off", "{hostname} destroyed its own VM");
    lab.set_link(host, true).unwrap();
    lab.down().unwrap();
}

#[test]
fn pacemaker_guests_fence_virtd_reports_success_for_a_running_domain() {
    if !lab_test_guard("pacemaker_guests_fence_virtd_reports_success_for_a_running_domain") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let lab = lab(LabSpec::guest_cluster(None));
    let v = lab.guest_victim();
    let (vname, host) = (lab.guest_name(v), lab.guest_host(v));

    // The same faults as fenceline's negative case.
    lab.stop_fence_virtd(host, libc::SIGKILL).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let (id0, o) = kill_victim_and_watch(&lab);
    false_success(&lab, &format!("node{host}'s fence_virtd down"), &id0, &o);

    // The host cut off instead: its peers drop its VMs, the unknown-VM rule
    // answers, and Pacemaker recovers while the domain runs on.
    lab.start_fence_virtd(host).unwrap();
    victim_back(&lab);
    std::thread::sleep(Duration::from_secs(3));
    let (id1, st1) = domain(&lab, host, &vname);
    assert_eq!(st1, "running");
    let (ok1, _) = history(&lab, 1, &vname);
    lab.set_link(host, false).unwrap();
    let t0 = Instant::now();
    lab.kill_guest_corosync(v, libc::SIGKILL).unwrap();
    let o = lab.watch_guest_failover(t0, ok1, RECOVERY);
    false_success(&lab, &format!("node{host} cut off"), &id1, &o);
    lab.set_link(host, true).unwrap();
    lab.down().unwrap();
}
