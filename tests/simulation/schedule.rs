//! One schedule from one seed: the cluster (3 to 5 hosts, VMs, maybe a
//! fence_virtd peer), the start-up, then bursts of concurrent fence requests
//! and, unless fault-free, a few faults, each with its repair. A quarter of
//! the fault schedules without fence_virtd self-fence (5 to 8 s), with a
//! late burst of requests after the departed hosts' deadlines.

use fenceline::engine::model::ModelConfig;
use fenceline_config::Config;
use fenceline_proto::api::{DomainState, FenceOp, Millis, NodeId};

use crate::rng::Rng;
use crate::world::{Action, Kind, Vm, World};

/// Requests and faults happen in `[ACTIVE_FROM, ACTIVE_FROM + ACTIVE_MS]`.
pub const ACTIVE_FROM: Millis = 3_000;
pub const ACTIVE_MS: Millis = 10_000;
/// A VM name no libvirt knows.
pub const GHOST: &str = "ghost";

/// The model's configuration as the daemon builds it from a default config.
fn model_config() -> ModelConfig {
    let cfg = Config::default();
    ModelConfig {
        event_capacity: cfg.events.capacity,
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: 0,
        fence: fenceline::daemon::fence_rules(&cfg),
        libvirt_uris: cfg.libvirt.uris.clone(),
        key_digests: Default::default(),
        max_peer_vms: fenceline::engine::model::DEFAULT_MAX_PEER_VMS,
    }
}

pub struct Schedule {
    pub world: World,
    /// Run the world until this instant (every timeout has expired).
    pub end: Millis,
    pub faults: usize,
    pub actions: usize,
    /// The hosts self-fence after this long (ms).
    pub self_fence: Option<Millis>,
}

pub fn build(seed: u64, faults: bool) -> Schedule {
    let mut rng = Rng::new(seed);
    let n = rng.range(3, 5) as NodeId;
    let fvd = (faults && rng.chance(1, 4)).then(|| rng.range(2, u64::from(n)) as NodeId);
    let mut vms = Vec::new();
    for h in 1..=n {
        if fvd == Some(h) && rng.chance(1, 2) {
            continue;
        }
        for j in 0..rng.range(1, 2) {
            let mut on = std::collections::BTreeMap::new();
            let state = if rng.chance(3, 4) {
                DomainState::Running
            } else {
                DomainState::Shutoff
            };
            on.insert(h, state);
            if rng.chance(1, 4) {
                // Shared storage: also defined (shut off) on another host.
                let other = (h + rng.range(0, u64::from(n) - 2) as NodeId) % n + 1;
                on.insert(other, DomainState::Shutoff);
            }
            let k = vms.len() + 1;
            vms.push(Vm {
                name: format!("vm{h}{}", (b'a' + j as u8) as char),
                uuid: format!("5e1f0000-0000-4000-8000-{k:012x}"),
                on,
                last_all_off: None,
                migrated: None,
                migrated_from: None,
                rebooted: None,
            });
        }
    }
    // A daemon that starts while its libvirtd is down: an empty inventory.
    let lv_down_at_start =
        (faults && rng.chance(1, 6)).then(|| rng.range(1, u64::from(n)) as NodeId);
    let hosts = (1..=n)
        .map(|h| {
            let kind = if fvd == Some(h) {
                Kind::FenceVirtd
            } else {
                Kind::Fenceline
            };
            (kind, lv_down_at_start != Some(h))
        })
        .collect();
    let vm_count = vms.len();
    let multi: Vec<usize> = (0..vm_count).filter(|&v| vms[v].on.len() > 1).collect();
    let single: Vec<usize> = (0..vm_count).filter(|&v| vms[v].on.len() == 1).collect();
    let vm_names: Vec<String> = vms.iter().map(|v| v.name.clone()).collect();
    let definers: Vec<Vec<NodeId>> = vms.iter().map(|v| v.on.keys().copied().collect()).collect();
    // Self-fencing in a quarter of the fault schedules, decided from its own
    // stream so that every other schedule (and every kept seed) is unchanged.
    // FENCELINE_SIM_SELF_FENCE=off leaves it out (to compare).
    let mut sf_rng = Rng::new(seed ^ 0x5e1f_fe0c_e000_0001);
    let sf_allowed = std::env::var("FENCELINE_SIM_SELF_FENCE").as_deref() != Ok("off");
    let self_fence = (sf_allowed && faults && fvd.is_none() && sf_rng.chance(1, 4))
        .then(|| sf_rng.range(5, 8) * 1000);
    let mut cfg = model_config();
    if let Some(ms) = self_fence {
        cfg.fence.self_fence_ms = ms;
    }
    let fork = Rng::new(rng.next_u64());
    let mut world = World::new(fork, hosts, vms, cfg);
    let mut actions: Vec<(Millis, Action)> = Vec::new();
    for h in 1..=n {
        actions.push((rng.range(0, 1000), Action::Start { host: h }));
    }
    if let Some(h) = lv_down_at_start {
        actions.push((rng.range(2_000, 8_000), Action::LibvirtUp { host: h }));
    }
    let t = |rng: &mut Rng| ACTIVE_FROM + rng.range(0, ACTIVE_MS);
    let fenceline_hosts: Vec<NodeId> = (1..=n).filter(|h| fvd != Some(*h)).collect();
    // Bursts of concurrent requests from several guests.
    for _ in 0..rng.range(1, 4) {
        let at = t(&mut rng);
        for _ in 0..rng.range(1, 3) {
            let host = fenceline_hosts[rng.index(fenceline_hosts.len())];
            let op = match rng.range(0, 9) {
                0..=3 => FenceOp::Status,
                4..=6 => FenceOp::Off,
                7..=8 => FenceOp::Reboot,
                _ => FenceOp::On,
            };
            let vm = if op == FenceOp::On && !faults {
                // Refused by design otherwise (unknown, or shared storage).
                if single.is_empty() {
                    continue;
                }
                vm_names[single[rng.index(single.len())]].clone()
            } else if rng.chance(1, 10) {
                GHOST.to_string()
            } else {
                vm_names[rng.index(vm_count)].clone()
            };
            actions.push((at + rng.range(0, 300), Action::Submit { host, op, vm }));
        }
    }
    let mut fault_count = 0;
    if faults {
        fault_count = rng.range(1, 3) as usize;
        for _ in 0..fault_count {
            let at = t(&mut rng).saturating_sub(1_000);
            let host = rng.range(1, u64::from(n)) as NodeId;
            let mut kind = rng.range(0, 7);
            if self_fence.is_some() && matches!(kind, 0 | 3 | 6) {
                // Self-fencing relies on the cut-off host's daemon and
                // libvirtd (README "What it relies on"): with it, a crash
                // or a libvirt outage becomes a partition or a corosync loss.
                kind = 1 + (kind % 2);
            }
            match kind {
                0 => {
                    actions.push((at, Action::Crash { host }));
                    if rng.chance(2, 3) {
                        actions.push((at + rng.range(300, 6_000), Action::Start { host }));
                    }
                }
                1 => {
                    let mut side: Vec<NodeId> = (1..=n).filter(|_| rng.chance(1, 2)).collect();
                    if side.is_empty() || side.len() == n as usize {
                        side = vec![host];
                    }
                    actions.push((at, Action::Partition { side }));
                    if rng.chance(3, 4) {
                        actions.push((at + rng.range(500, 8_000), Action::Heal));
                    }
                }
                2 => {
                    actions.push((at, Action::CorosyncDown { host }));
                    actions.push((at + rng.range(300, 4_000), Action::CorosyncUp { host }));
                }
                3 => {
                    actions.push((at, Action::LibvirtDown { host }));
                    actions.push((at + rng.range(300, 6_000), Action::LibvirtUp { host }));
                }
                4 => {
                    let vm = rng.index(vm_count);
                    let d = &definers[vm];
                    let host = d[rng.index(d.len())];
                    actions.push((at, Action::GuestToggle { vm, host }));
                }
                5 if !multi.is_empty() => {
                    let vm = multi[rng.index(multi.len())];
                    actions.push((at, Action::Migrate { vm }));
                }
                _ => {
                    // The daemon restarts while its libvirtd is down.
                    let back = at + rng.range(100, 1_000);
                    actions.push((at, Action::LibvirtDown { host }));
                    actions.push((at + 10, Action::Crash { host }));
                    actions.push((back, Action::Start { host }));
                    actions.push((back + rng.range(200, 6_000), Action::LibvirtUp { host }));
                }
            }
        }
    }
    if let Some(ms) = self_fence {
        // Requests after the departed hosts' deadlines (N + max(5 s, N/2)).
        let late =
            ACTIVE_FROM + ACTIVE_MS + ms + fenceline::engine::model::self_fence_margin_ms(ms);
        for _ in 0..sf_rng.range(2, 6) {
            let host = fenceline_hosts[sf_rng.index(fenceline_hosts.len())];
            let op = if sf_rng.chance(1, 2) {
                FenceOp::Status
            } else {
                FenceOp::Off
            };
            let vm = vm_names[sf_rng.index(vm_count)].clone();
            let at = late + sf_rng.range(0, 3_000);
            actions.push((at, Action::Submit { host, op, vm }));
        }
    }
    actions.sort_by_key(|(at, _)| *at);
    let last = actions.iter().map(|(at, _)| *at).max().unwrap_or(0);
    let count = actions.len();
    for (at, a) in actions {
        world.schedule(at, a);
    }
    Schedule {
        world,
        end: last + 60_000 + 5_000,
        faults: fault_count,
        actions: count,
        self_fence,
    }
}

/// [`build`] plus fence_xvm multicast runs (claims), drawn from a second
/// stream of the seed so that the plain schedules, and the regression seeds,
/// stay exactly as they were.
pub fn build_with_claims(seed: u64, faults: bool) -> Schedule {
    let mut s = build(seed, faults);
    let mut rng = Rng::new(seed ^ 0x636c_6169_6d5f_7275);
    let mut vms: Vec<String> = s.world.vms.iter().map(|v| v.name.clone()).collect();
    vms.push(GHOST.to_string());
    for _ in 0..rng.range(1, 3) {
        let at = ACTIVE_FROM + rng.range(0, ACTIVE_MS);
        for _ in 0..rng.range(1, 6) {
            let vm = vms[rng.index(vms.len())].clone();
            let run = format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64());
            s.world
                .schedule(at + rng.range(0, 300), Action::Multicast { vm, run });
            s.actions += 1;
        }
    }
    s.world.exact_claims = !faults;
    s
}
