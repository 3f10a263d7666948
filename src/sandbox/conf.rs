//! Text of the configuration files and scripts the lab writes.

use std::fmt::Write as _;
use std::path::Path;

/// Subnet used inside every lab (each lab has its own bridge namespace, so
/// labs may reuse it).
pub const SUBNET: &str = "10.213.37";
/// Host part of the client-only namespace's address.
pub const CLIENT_HOST: u32 = 200;
/// Where libvirtd binds its sockets at first; the lab moves them to
/// /run/libvirt once the test domains are in place (see `Lab::start_libvirtd`).
pub const LIBVIRT_SETUP_SOCK_DIR: &str = "/run/libvirt-lab";
/// URI through which the lab prepares a fresh libvirtd before clients see it.
pub const LIBVIRT_SETUP_URI: &str = "test+unix:///default?socket=/run/libvirt-lab/libvirt-sock";
/// Test-driver URI served by a node's libvirtd (per node, through its /run).
pub const TEST_URI: &str = "test+unix:///default";
/// qemu URI served by a node's libvirtd.
pub const QEMU_URI: &str = "qemu:///system";

fn quote(s: &str) -> String {
    // A JSON string literal is a valid TOML basic string for our inputs.
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

pub(crate) fn corosync_conf(cluster: &str, nodes: usize, me_dir: &Path, token_ms: u32) -> String {
    let members: Vec<(u32, String, String)> = (1..=nodes as u32)
        .map(|n| (n, format!("node{n}"), format!("{SUBNET}.{n}")))
        .collect();
    corosync_conf_for(cluster, &members, me_dir, token_ms, "")
}

/// corosync.conf for `members` (nodeid, name, ring0 address); `totem_extra`
/// is added to the totem section and ends with a newline.
pub(crate) fn corosync_conf_for(
    cluster: &str,
    members: &[(u32, String, String)],
    me_dir: &Path,
    token_ms: u32,
    totem_extra: &str,
) -> String {
    let mut s = String::new();
    s.push_str("totem {\n    version: 2\n");
    let _ = writeln!(s, "    cluster_name: {cluster}");
    s.push_str("    transport: knet\n    crypto_cipher: none\n    crypto_hash: none\n");
    if token_ms > 0 {
        let _ = writeln!(s, "    token: {token_ms}");
    }
    s.push_str(totem_extra);
    s.push_str("}\n\nnodelist {\n");
    for (id, name, addr) in members {
        let _ = write!(
            s,
            "    node {{\n        ring0_addr: {addr}\n        name: {name}\n        nodeid: {id}\n    }}\n"
        );
    }
    s.push_str("}\n\nquorum {\n    provider: corosync_votequorum\n}\n\n");
    let _ = write!(
        s,
        "logging {{\n    to_logfile: yes\n    logfile: {}\n    to_syslog: no\n    to_stderr: no\n    timestamp: hires\n}}\n\n",
        me_dir.join("corosync.log").display()
    );
    let _ = writeln!(
        s,
        "system {{\n    state_dir: {}\n}}",
        me_dir.join("cs-state").display()
    );
    s
}

/// qemu.conf for the private libvirtds: lets real TCG guests start as root in
/// a namespace without touching the host's /etc/libvirt/qemu.conf.
pub(crate) const QEMU_CONF: &str = r#"# written by the fenceline sandbox lab
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
namespaces = [ ]
cgroup_controllers = [ ]
"#;

pub(crate) fn libvirtd_conf() -> String {
    format!(
        "# written by the fenceline sandbox lab\nunix_sock_dir = \"{LIBVIRT_SETUP_SOCK_DIR}\"\nunix_sock_group = \"root\"\nunix_sock_rw_perms = \"0770\"\nauth_unix_ro = \"none\"\nauth_unix_rw = \"none\"\n"
    )
}

/// The host UUID of lab node `node`'s libvirtd.
pub fn lab_host_uuid(node: usize) -> String {
    format!("8f1e{node:04x}-0000-4000-a000-00000000f00d")
}

/// Shell script run by the holder process of node `node`, inside
/// `ip netns exec <ns> unshare -m --propagation private`. Each node's
/// libvirtd gets a host UUID of its own, as separate hosts have: libvirt
/// refuses a live migration between two hosts with the same one.
pub(crate) fn holder_script(lab_dir: &Path, node: usize) -> String {
    let d = lab_dir.display();
    let host_uuid = lab_host_uuid(node);
    format!(
        r#"set -e
for m in /run /var/lib/libvirt /var/cache/libvirt /var/log/libvirt /etc/libvirt; do
  mount -t tmpfs -o mode=0755 tmpfs "$m"
done
if [ -d /var/lib/corosync ]; then mount -t tmpfs -o mode=0755 tmpfs /var/lib/corosync; fi
mkdir -p /run/lock /run/fenceline /run/libvirt {LIBVIRT_SETUP_SOCK_DIR} \
  /var/lib/libvirt/qemu /var/cache/libvirt/qemu /var/log/libvirt/qemu \
  /etc/libvirt/qemu/networks/autostart /etc/libvirt/hooks /etc/libvirt/nwfilter \
  /etc/libvirt/secrets /etc/libvirt/storage
cp '{d}/qemu.conf' /etc/libvirt/qemu.conf
cp '{d}/libvirtd.conf' /etc/libvirt/libvirtd.conf
echo 'host_uuid = "{host_uuid}"' >> /etc/libvirt/libvirtd.conf
echo ready
exec sleep infinity
"#
    )
}

/// fenceline daemon configuration for one node.
pub(crate) fn fenceline_toml(
    uris: &[String],
    log_file: &Path,
    key_file: &Path,
    cluster_key: &Path,
    node_ip: &str,
    hosts: &Path,
    extra: &str,
) -> String {
    let list: Vec<String> = uris.iter().map(|u| quote(u)).collect();
    let mut s = format!(
        "[libvirt]\nuris = [{}]\nname_mode = \"name\"\n\n[control]\nsocket = \"/run/fenceline/fenceline.sock\"\nreadonly_socket = \"/run/fenceline/fenceline-ro.sock\"\n\n[log]\nfile = {}\n",
        list.join(", "),
        quote(&log_file.to_string_lossy())
    );
    // The audit log goes to the node's scratch dir, never the host's /var/log.
    let audit = format!(
        "audit_log = {}\n",
        quote(&log_file.with_file_name("audit.jsonl").to_string_lossy())
    );
    // fence_xvm (multicast on the lab link) and fence_virt -T (the node's
    // address) reach the daemon with the lab's key, like fence_virtd.
    let key = quote(&key_file.to_string_lossy());
    if !extra.contains("[listeners.multicast]") {
        s.push_str(&format!(
            "\n[listeners.multicast]\ninterface = \"eth0\"\nkey_file = {key}\n"
        ));
    }
    if !extra.contains("[listeners.tcp]") {
        s.push_str(&format!(
            "\n[listeners.tcp]\naddress = {}\nkey_file = {key}\n",
            quote(node_ip)
        ));
    }
    // The lab's own hosts file (never the machine's /etc/hosts) names the
    // guests, the client and the nodes in fence events.
    if !extra.contains("[listeners]") {
        s.push_str(&format!(
            "\n[listeners]\nrequester_names = {}\n",
            quote(&hosts.to_string_lossy())
        ));
    }
    if !extra.contains("[corosync]") {
        s.push_str(&format!(
            "\n[corosync]\ncluster_key = {}\n",
            quote(&cluster_key.to_string_lossy())
        ));
    }
    let mut extra = extra.to_string();
    match extra.find("[fencing]\n") {
        Some(at) => extra.insert_str(at + "[fencing]\n".len(), &audit),
        None => extra = format!("{extra}\n[fencing]\n{audit}"),
    }
    s.push('\n');
    s.push_str(&extra);
    if !extra.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// fence_virtd configuration (multicast listener, cpg backend).
pub(crate) fn fence_virt_conf(key_file: &Path, module_path: &Path, uri: &str) -> String {
    format!(
        "fence_virtd {{\n\tlistener = \"multicast\";\n\tbackend = \"cpg\";\n\tmodule_path = \"{}\";\n}}\n\nlisteners {{\n\tmulticast {{\n\t\tkey_file = \"{}\";\n\t\taddress = \"225.0.0.12\";\n\t\tport = \"1229\";\n\t\tinterface = \"eth0\";\n\t}}\n}}\n\nbackends {{\n\tcpg {{\n\t\turi = \"{uri}\";\n\t\tname_mode = \"name\";\n\t}}\n}}\n",
        module_path.display(),
        key_file.display()
    )
}

/// Domain XML for the libvirt test driver.
pub(crate) fn test_domain_xml(name: &str, uuid: &str) -> String {
    format!(
        "<domain type='test'>\n  <name>{name}</name>\n  <uuid>{uuid}</uuid>\n  <memory unit='KiB'>65536</memory>\n  <vcpu>1</vcpu>\n  <os><type>hvm</type></os>\n</domain>\n"
    )
}

/// Domain XML for a tiny real qemu (TCG) guest: 32 MiB, no disk, and one
/// interface `(network, mac)` when given (e1000, no boot ROM).
pub(crate) fn qemu_domain_xml_nic(name: &str, uuid: &str, nic: Option<(&str, &str)>) -> String {
    let nic = nic
        .map(|(net, mac)| {
            format!(
                "    <interface type='network'>\n      <source network='{net}'/>\n      <mac address='{mac}'/>\n      <model type='e1000'/>\n      <rom enabled='no'/>\n    </interface>\n"
            )
        })
        .unwrap_or_default();
    format!(
        "<domain type='qemu'>\n  <name>{name}</name>\n  <uuid>{uuid}</uuid>\n  <memory unit='MiB'>32</memory>\n  <vcpu>1</vcpu>\n  <os><type arch='x86_64' machine='pc'>hvm</type></os>\n  <on_poweroff>destroy</on_poweroff>\n  <on_reboot>restart</on_reboot>\n  <on_crash>destroy</on_crash>\n  <devices>\n    <emulator>/usr/bin/qemu-system-x86_64</emulator>\n{nic}  </devices>\n</domain>\n"
    )
}

/// A libvirt network in forward mode bridge on an existing bridge: no
/// addresses, no dnsmasq, no firewall rules.
pub(crate) fn bridge_network_xml(name: &str, bridge: &str) -> String {
    format!(
        "<network>\n  <name>{name}</name>\n  <forward mode='bridge'/>\n  <bridge name='{bridge}'/>\n</network>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corosync_conf_has_no_text_after_open_brace() {
        let c = corosync_conf("flabclu", 3, Path::new("/tmp/x/n1"), 1000);
        for line in c.lines() {
            if let Some(i) = line.find('{') {
                assert!(line[i + 1..].trim().is_empty(), "bad line {line:?}");
            }
        }
        assert!(c.contains("name: node3"));
        assert!(c.contains("token: 1000"));
        assert!(!corosync_conf("c", 1, Path::new("/x"), 0).contains("token:"));
    }

    #[test]
    fn fenceline_toml_parses() {
        let t = fenceline_toml(
            &["test+unix:///default".into(), "qemu:///system".into()],
            Path::new("/tmp/a \"b\"/fenceline.log"),
            Path::new("/tmp/k"),
            Path::new("/tmp/ck"),
            "10.0.0.1",
            Path::new("/tmp/hosts"),
            "[extra]\nx = 1",
        );
        let v: toml::Value = toml::from_str(&t).unwrap();
        assert_eq!(v["libvirt"]["uris"][1].as_str(), Some("qemu:///system"));
        assert_eq!(
            v["log"]["file"].as_str(),
            Some("/tmp/a \"b\"/fenceline.log")
        );
        assert_eq!(v["extra"]["x"].as_integer(), Some(1));
        assert_eq!(v["corosync"]["cluster_key"].as_str(), Some("/tmp/ck"));
        assert_eq!(
            v["listeners"]["requester_names"].as_str(),
            Some("/tmp/hosts")
        );
    }
}
