//! The commands that match a config: distributing the key, a first request
//! from a guest, and the Pacemaker stonith resource with timeouts that fit
//! fenceline's own (`fencing.timeout_secs`, `reboot_timeout_secs`).

use fenceline_config::Config;

/// fence_xvm's own wait (`-t`/`timeout=`): longer than fenceline's longest
/// answer (a whole reboot), so that fenceline's answer, a refusal included,
/// reaches Pacemaker instead of a client timeout.
pub fn agent_timeout(cfg: &Config) -> u64 {
    cfg.fencing
        .timeout_secs
        .max(cfg.fencing.reboot_timeout_secs)
        + 5
}

/// Pacemaker's limit for one off/reboot (`pcmk_off_timeout`,
/// `pcmk_reboot_timeout`): longer than the agent's, so the agent's answer
/// is what Pacemaker records.
pub fn pacemaker_timeout(cfg: &Config) -> u64 {
    agent_timeout(cfg) + 10
}

/// The advice text: one section per step, every command complete.
pub fn advice(cfg: &Config, hostname: &str, host_map: Option<&str>) -> String {
    let l = &cfg.listeners;
    let mut s = String::new();
    let key = cfg
        .listener_keys()
        .first()
        .map(|(_, p)| p.display().to_string());
    if let Some(key) = &key {
        s.push_str(&format!(
            "On every other KVM host: the same key at the same path (mode 0600, root):\n\
             \x20 scp -p {key} root@OTHER-HOST:{key}\n\
             \x20 fenceline config init ...           # the same flags or answers (the copied key is kept), or copy this config\n\
             \x20 fenceline check                      # 0 = ready; it compares key digests across hosts\n\n\
             In every guest: the same key at the same path, then a first request:\n"
        ));
    }
    let timeout = agent_timeout(cfg);
    let pcmk = pacemaker_timeout(cfg);
    let map = host_map.unwrap_or("GUEST1:VM1;GUEST2:VM2");
    let name = format!("fence_xvm_{}", device_suffix(hostname));
    if let Some(m) = &l.multicast {
        let port = if m.port == 1229 {
            String::new()
        } else {
            format!(" -p {}", m.port)
        };
        let ipport = if m.port == 1229 {
            String::new()
        } else {
            format!(" ipport={}", m.port)
        };
        let k = m.key_file.display();
        s.push_str(&format!(
            "  fence_xvm -o list -a {a}{port} -k {k}\n\n\
             Pacemaker, once per guest cluster (every host routes a request to the VM's \
             owner,\nso one device covers all hosts):\n\
             \x20 pcs stonith create {name} fence_xvm key_file={k} multicast_address={a}{ipport} \\\n\
             \x20   pcmk_host_map=\"{map}\" timeout={timeout} \\\n\
             \x20   pcmk_off_timeout={pcmk} pcmk_reboot_timeout={pcmk} op monitor interval=60s\n",
            a = m.address,
        ));
    } else if let Some(t) = &l.tcp {
        let k = t.key_file.display();
        s.push_str(&format!(
            "  fence_virt -T {a} -p {p} -k {k} -o list\n\n\
             Pacemaker, once per guest cluster:\n\
             \x20 pcs stonith create {name} fence_virt ipaddr={a} ipport={p} key_file={k} \\\n\
             \x20   pcmk_host_map=\"{map}\" timeout={timeout} \\\n\
             \x20   pcmk_off_timeout={pcmk} pcmk_reboot_timeout={pcmk} op monitor interval=60s\n",
            a = t.address,
            p = t.port,
        ));
    } else if let Some(v) = &l.vsock {
        let k = v.key_file.display();
        s.push_str(&format!(
            "  fence_virt -S 2 -p {p} -k {k} -o list\n\n\
             Pacemaker, once per guest cluster:\n\
             \x20 pcs stonith create {name} fence_virt vsock=2 ipport={p} key_file={k} \\\n\
             \x20   pcmk_host_map=\"{map}\" timeout={timeout} \\\n\
             \x20   pcmk_off_timeout={pcmk} pcmk_reboot_timeout={pcmk} op monitor interval=60s\n",
            p = v.port,
        ));
    } else {
        s.push_str(
            "No listener: guests cannot fence through this host. `fenceline fence off VM` \
             works from the host.\n",
        );
    }
    if key.is_some() {
        if host_map.is_none() {
            s.push_str(
                "  (pcmk_host_map: each guest's cluster node name : its libvirt domain name)\n",
            );
        }
        s.push_str(&format!(
            "  (fenceline answers off/status within {}s and reboot within {}s \
             (fencing.timeout_secs, reboot_timeout_secs); timeout={timeout} lets the agent \
             wait for that answer)\n",
            cfg.fencing.timeout_secs, cfg.fencing.reboot_timeout_secs
        ));
    }
    s
}

/// A resource-id-safe form of the host name: letters, digits, `_`, `-`.
fn device_suffix(hostname: &str) -> String {
    let short = hostname.split('.').next().unwrap_or("");
    let s: String = short
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() { "host".into() } else { s }
}
