//! Tearing down labs left behind by a crashed or killed run.
//!
//! Only directories named `/tmp/fenceline-lab-<P>` and namespaces named
//! `<P>sw`, `<P>c`, `<P><n>`, `<P>g<n>` are touched, and only processes listed in a lab's
//! `pids` file are killed, after checking that pid, starttime and argv[0]
//! still match what the lab started.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::Result;

use super::cmd::{run, wait_until};
use super::procs::{alive, clean_qb_shm, program_of, send_signal};

pub(crate) const DIR_PREFIX: &str = "fenceline-lab-";
pub(crate) const OWNER_TAG: &str = "owner";
pub(crate) const KEPT_MARKER: &str = "KEPT";

/// `[a-z0-9]`, 2..=8 characters, starting with a letter.
pub(crate) fn valid_prefix(p: &str) -> bool {
    (2..=8).contains(&p.len())
        && p.as_bytes()[0].is_ascii_lowercase()
        && p.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

pub(crate) fn lab_dir_for(prefix: &str) -> PathBuf {
    PathBuf::from(format!("/tmp/{DIR_PREFIX}{prefix}"))
}

/// True if `ns` is one of the namespace names a lab with `prefix` creates.
pub(crate) fn ns_belongs_to(ns: &str, prefix: &str) -> bool {
    let Some(rest) = ns.strip_prefix(prefix) else {
        return false;
    };
    let digits = |r: &str| !r.is_empty() && r.len() <= 3 && r.bytes().all(|b| b.is_ascii_digit());
    // `<P>g<n>`: the guests of a lab's guest Pacemaker cluster.
    rest == "sw" || rest == "c" || digits(rest) || rest.strip_prefix('g').is_some_and(digits)
}

/// The generated prefix (`fl` + 4 hex digits) of a namespace name, if it has one.
fn generated_prefix_of(ns: &str) -> Option<&str> {
    if ns.len() < 7 || !ns.starts_with("fl") || !ns.is_char_boundary(6) {
        return None;
    }
    let p = &ns[..6];
    if !p[2..]
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    ns_belongs_to(ns, p).then_some(p)
}

pub(crate) fn list_netns() -> Vec<String> {
    match run(
        Command::new("ip").args(["netns", "list"]),
        Duration::from_secs(10),
    ) {
        Ok(o) => o
            .stdout
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect(),
        Err(_) => Vec::new(),
    }
}

pub(crate) fn del_netns(ns: &str) {
    let _ = run(
        Command::new("ip").args(["netns", "del", ns]),
        Duration::from_secs(10),
    );
}

/// A line of a `pids` file.
#[derive(Debug, Clone)]
pub(crate) struct PidEntry {
    pub pid: u32,
    pub starttime: u64,
    pub role: String,
    pub program: String,
}

impl PidEntry {
    /// Still the very process the lab started?
    pub fn matches(&self) -> bool {
        alive(self.pid, self.starttime) && program_of(self.pid).is_some_and(|p| p == self.program)
    }
}

pub(crate) struct PidsFile {
    pub owner: Option<(u32, u64)>,
    pub entries: Vec<PidEntry>,
}

pub(crate) fn parse_pids(text: &str) -> PidsFile {
    let mut owner = None;
    let mut entries = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() == 3 && f[0] == OWNER_TAG {
            if let (Ok(p), Ok(t)) = (f[1].parse(), f[2].parse()) {
                owner = Some((p, t));
            }
        } else if f.len() >= 4
            && let (Ok(pid), Ok(starttime)) = (f[0].parse(), f[1].parse())
        {
            entries.push(PidEntry {
                pid,
                starttime,
                role: f[2].to_string(),
                program: f[3].to_string(),
            });
        }
    }
    PidsFile { owner, entries }
}

fn mnt_ns(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok()
}

/// (domain name, pid) of qemu processes that a node's libvirtd started, read
/// from the pid files in the node's private /run and checked to be qemu
/// processes in the holder's mount namespace.
pub(crate) fn qemu_domains_of_holder(holder: u32) -> Vec<(String, u32)> {
    let Some(hns) = mnt_ns(holder) else {
        return Vec::new();
    };
    let dir = format!("/proc/{holder}/root/run/libvirt/qemu");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(dom) = name.strip_suffix(".pid")
            && let Ok(s) = std::fs::read_to_string(e.path())
            && let Ok(pid) = s.trim().parse::<u32>()
            && mnt_ns(pid).as_ref() == Some(&hns)
            // driver.pid holds libvirtd's own pid.
            && program_of(pid).is_some_and(|p| p.starts_with("qemu"))
        {
            out.push((dom.to_string(), pid));
        }
    }
    out
}

pub(crate) fn qemu_pids_of_holder(holder: u32) -> Vec<u32> {
    qemu_domains_of_holder(holder)
        .into_iter()
        .map(|d| d.1)
        .collect()
}

/// SIGTERM, wait up to 3 s, SIGKILL: for processes that are not our children.
fn kill_entries(entries: &[PidEntry]) {
    let live: Vec<&PidEntry> = entries.iter().filter(|e| e.matches()).collect();
    if live.is_empty() {
        return;
    }
    for e in &live {
        send_signal(e.pid, libc::SIGTERM);
    }
    let gone = || live.iter().all(|e| !alive(e.pid, e.starttime));
    if !wait_until(Duration::from_secs(3), Duration::from_millis(20), gone) {
        for e in &live {
            if e.matches() {
                send_signal(e.pid, libc::SIGKILL);
            }
        }
        wait_until(Duration::from_secs(3), Duration::from_millis(20), gone);
    }
}

enum LabState {
    Live,
    Young,
    Kept,
    Stale(PidsFile),
}

fn lab_state(dir: &Path) -> LabState {
    if dir.join(KEPT_MARKER).exists() {
        return LabState::Kept;
    }
    let text = std::fs::read_to_string(dir.join("pids")).unwrap_or_default();
    let pf = parse_pids(&text);
    match pf.owner {
        Some((pid, t)) if alive(pid, t) => LabState::Live,
        Some(_) => LabState::Stale(pf),
        None => {
            // Being created right now (owner not written yet)?
            let young = std::fs::metadata(dir)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| SystemTime::now().duration_since(m).ok())
                .is_none_or(|age| age < Duration::from_secs(120));
            if young {
                LabState::Young
            } else {
                LabState::Stale(pf)
            }
        }
    }
}

fn clean_lab(prefix: &str, dir: &Path, pf: &PidsFile, netns: &[String]) {
    let holders: Vec<PidEntry> = pf
        .entries
        .iter()
        .filter(|e| e.role.starts_with("holder"))
        .cloned()
        .collect();
    // qemu guests first, while their libvirtd's /run is still reachable.
    let mut qemus = Vec::new();
    for h in holders.iter().filter(|h| h.matches()) {
        for pid in qemu_pids_of_holder(h.pid) {
            if let (Some((_, t)), Some(prog)) = (super::procs::stat(pid), program_of(pid)) {
                qemus.push(PidEntry {
                    pid,
                    starttime: t,
                    role: "qemu".into(),
                    program: prog,
                });
            }
        }
    }
    kill_entries(&qemus);
    let others: Vec<PidEntry> = pf
        .entries
        .iter()
        .filter(|e| !e.role.starts_with("holder"))
        .cloned()
        .collect();
    kill_entries(&others);
    // The guest cluster's processes (pacemakerd's children are not all
    // recorded): whatever still runs in a guest holder's mount namespace.
    let guests: Vec<PidEntry> = holders
        .iter()
        .filter(|h| h.role.starts_with("holder/g") && h.matches())
        .flat_map(|h| super::procs::pids_in_mount_ns_of(h.pid))
        .filter_map(|pid| {
            Some(PidEntry {
                pid,
                starttime: super::procs::stat(pid)?.1,
                role: "guest".into(),
                program: program_of(pid)?,
            })
        })
        .collect();
    kill_entries(&guests);
    kill_entries(&holders);
    for e in pf.entries.iter().filter(|e| e.program == "corosync") {
        if !alive(e.pid, e.starttime) {
            clean_qb_shm(e.pid);
        }
    }
    for ns in netns.iter().filter(|n| ns_belongs_to(n, prefix)) {
        del_netns(ns);
    }
    super::lab::kill_tmux_server(prefix);
    let _ = std::fs::remove_dir_all(dir);
}

/// Tear down labs whose owning process is gone: kill their recorded processes
/// (by verified PID), delete their namespaces, clean libqb leftovers, remove
/// their scratch directories. Also deletes namespaces with a generated lab
/// prefix whose scratch directory no longer exists. Labs of live processes
/// and labs kept with FENCELINE_KEEP_LAB=1 are left alone.
/// Returns the prefixes of the labs and namespaces it cleaned.
pub fn cleanup_stale() -> Result<Vec<String>> {
    let mut cleaned = Vec::new();
    let netns = list_netns();
    if let Ok(rd) = std::fs::read_dir("/tmp") {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(prefix) = name.strip_prefix(DIR_PREFIX) else {
                continue;
            };
            if !valid_prefix(prefix) || !e.path().is_dir() {
                continue;
            }
            if let LabState::Stale(pf) = lab_state(&e.path()) {
                clean_lab(prefix, &e.path(), &pf, &netns);
                cleaned.push(prefix.to_string());
            }
        }
    }
    for ns in &netns {
        if let Some(p) = generated_prefix_of(ns)
            && !lab_dir_for(p).exists()
        {
            del_netns(ns);
            if !cleaned.iter().any(|c| c == p) {
                cleaned.push(p.to_string());
            }
        }
    }
    Ok(cleaned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_prefix("fl1a2b"));
        assert!(!valid_prefix("Fl1a"));
        assert!(!valid_prefix("f"));
        assert!(!valid_prefix("fl-1"));
        assert!(!valid_prefix("1abc"));
        assert!(ns_belongs_to("fl1a2bsw", "fl1a2b"));
        assert!(ns_belongs_to("fl1a2b12", "fl1a2b"));
        assert!(ns_belongs_to("fl1a2bc", "fl1a2b"));
        assert!(ns_belongs_to("fl1a2bg3", "fl1a2b"));
        assert!(!ns_belongs_to("fl1a2bg", "fl1a2b"));
        assert!(!ns_belongs_to("fl1a2bx", "fl1a2b"));
        assert!(!ns_belongs_to("fl1a2b", "fl1a2b"));
        assert_eq!(generated_prefix_of("fl1a2b3"), Some("fl1a2b"));
        assert_eq!(generated_prefix_of("fl1a2bsw"), Some("fl1a2b"));
        assert_eq!(generated_prefix_of("flzz2b3"), None);
        assert_eq!(generated_prefix_of("fl1a2b"), None);
        assert_eq!(generated_prefix_of("other"), None);
    }

    #[test]
    fn pids_file() {
        let pf =
            parse_pids("owner 10 20\n11 21 holder/n1 sleep\n12 22 corosync/n1 corosync\nbad\n");
        assert_eq!(pf.owner, Some((10, 20)));
        assert_eq!(pf.entries.len(), 2);
        assert_eq!(pf.entries[1].program, "corosync");
    }
}
