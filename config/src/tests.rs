use std::path::{Path, PathBuf};

use super::*;

fn parse(s: &str) -> Result<Config, ConfigError> {
    Config::parse(s, Path::new("/etc/fenceline/test.toml"))
}

#[test]
fn contract_example_parses() {
    let c = parse(
        r#"
[libvirt]
uris = ["qemu:///system"]          # one or more
name_mode = "name"                 # or "uuid"
[control]
socket = "/run/fenceline/fenceline.sock"
readonly_socket = "/run/fenceline/fenceline-ro.sock"
[log]
file = ""                          # or a file as well as the journal
"#,
    )
    .unwrap();
    assert_eq!(c, Config::default());
}

#[test]
fn empty_file_is_all_defaults() {
    assert_eq!(parse("").unwrap(), Config::default());
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let e = parse("[libvirt]\nuris = [\"test:///default\"]\nurl = \"x\"\n").unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("/etc/fenceline/test.toml:3:"), "{msg}");
    assert!(msg.contains("libvirt.url"), "{msg}");
    assert!(msg.contains("unknown field"), "{msg}");
}

#[test]
fn wrong_type_names_the_key() {
    let e = parse("[events]\ncapacity = \"lots\"\n").unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains(":2:"), "{msg}");
    assert!(msg.contains("events.capacity"), "{msg}");
}

#[test]
fn bad_name_mode_is_refused() {
    let e = parse("[libvirt]\nname_mode = \"both\"\n").unwrap_err();
    assert!(e.to_string().contains("libvirt.name_mode"), "{e}");
}

#[test]
fn semantic_errors_name_the_key_and_line() {
    let e = parse("[libvirt]\nuris = []\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "/etc/fenceline/test.toml:2: key `libvirt.uris`: needs at least one URI"
    );
    let e = parse("[control]\nsocket = \"rel.sock\"\n").unwrap_err();
    assert!(e.to_string().contains("control.socket"), "{e}");
    let e = parse("[libvirt]\nreconcile_secs = 1\n").unwrap_err();
    assert!(
        e.to_string().contains(":2: key `libvirt.reconcile_secs`"),
        "{e}"
    );
    let e = parse("[libvirt]\nuris = [\"a:///\", \"a:///\"]\n").unwrap_err();
    assert!(e.to_string().contains("twice"), "{e}");
}

#[test]
fn console_section_is_plain_data() {
    let c = parse(
            "[console]\ntheme = \"light\"\n[console.keys]\nfence-off = \"ctrl-k\"\nquit = [\"q\", \"Q\"]\n",
        )
        .unwrap();
    assert_eq!(c.console.theme, "light");
    assert_eq!(c.console.keys.len(), 2);
    // What a theme or a binding means is the console's business: the
    // daemon starts with a theme it could not load.
    let c = parse("[console]\ntheme = \"/missing.toml\"\n").unwrap();
    assert_eq!(c.console.theme, "/missing.toml");
    assert!(parse("[console.keys]\nfence = \"x\"\n").is_ok());
    let e = parse("[console]\ncolour = \"x\"\n").unwrap_err();
    assert!(e.to_string().contains("console.colour"), "{e}");
}

#[test]
fn hooks_section() {
    let c = parse("[hooks]\nsocket = \"/run/fenceline/hook.sock\"\n").unwrap();
    assert_eq!(c, Config::default());
    let c = parse("[hooks]\nsocket = \"/tmp/h.sock\"\nqueue = 10\n").unwrap();
    assert_eq!(c.hooks.socket, PathBuf::from("/tmp/h.sock"));
    assert_eq!(c.hooks.queue, 10);
    let e = parse("[hooks]\nsocket = \"h.sock\"\n").unwrap_err();
    assert!(e.to_string().contains(":2: key `hooks.socket`"), "{e}");
    let e = parse("[hooks]\nsocket = \"/run/fenceline/fenceline.sock\"\n").unwrap_err();
    assert!(e.to_string().contains("must differ"), "{e}");
    let e = parse("[hooks]\nqueue = 0\n").unwrap_err();
    assert!(e.to_string().contains("hooks.queue"), "{e}");
    let e = parse("[hooks]\nsockets = \"/x\"\n").unwrap_err();
    assert!(e.to_string().contains("hooks.sockets"), "{e}");
}

#[test]
fn syntax_error_has_a_line() {
    let e = parse("[libvirt\nuris = 1\n").unwrap_err();
    assert!(e.to_string().contains("test.toml:1:"), "{e}");
}

#[test]
fn fencing_sections_parse() {
    let c = parse(
        r#"
[fencing]
backend = "libvirt"
timeout_secs = 30
audit_log = ""
[listeners.multicast]
address = "ff05::3:1"
interface = "br0"
key_file = "/etc/cluster/fence_xvm.key"
hash = "sha512"
auth = "sha1"
[listeners.tcp]
address = "::1"
port = 1230
[listeners.vsock]
port = 1231
[[groups]]
name = "web"
uuid = ["web1", "8f1e0001-0000-4000-8000-000000000011"]
ip = ["10.0.0.1", "3"]
"#,
    )
    .unwrap();
    assert_eq!(c.fencing.backend, FenceBackend::Libvirt);
    let m = c.listeners.multicast.as_ref().unwrap();
    assert_eq!((m.hash, m.auth), (HashName::Sha512, HashName::Sha1));
    assert_eq!(m.port, 1229, "defaults fill the rest");
    assert_eq!(c.listeners.tcp.as_ref().unwrap().port, 1230);
    assert_eq!(c.listeners.vsock.as_ref().unwrap().port, 1231);
    assert_eq!(c.groups.len(), 1);
    // An empty table enables a listener with every default.
    let c = parse(
        "[listeners.multicast]\ncallback_networks = [\"10.0.0.0/24\", \"fd00:1::/64\", \"127.0.0.1\"]\n",
    )
    .unwrap();
    let m = c.listeners.multicast.as_ref().unwrap();
    assert_eq!(m.callback_networks.len(), 3);
    let c = parse("[listeners.multicast]\n").unwrap();
    assert_eq!(c.listeners.multicast, Some(MulticastListener::default()));
    assert_eq!(c.listeners.tcp, None);
}

#[test]
fn fencing_errors_name_the_key_and_line() {
    let cases: &[(&str, &str)] = &[
        (
            "[fencing]\ntimeout_secs = 0\n",
            ":2: key `fencing.timeout_secs`",
        ),
        (
            "[fencing]\nreboot_timeout_secs = 10000\n",
            ":2: key `fencing.reboot_timeout_secs`",
        ),
        (
            "[fencing]\nself_fence_secs = 2\n",
            ":2: key `fencing.self_fence_secs`: must be 0 (off) or 5 to 3600",
        ),
        (
            "[fencing]\nself_fence_secs = 86400\n",
            ":2: key `fencing.self_fence_secs`",
        ),
        (
            "[fencing]\naudit_log = \"audit.jsonl\"\n",
            ":2: key `fencing.audit_log`: `audit.jsonl` must be an absolute path",
        ),
        (
            "[listeners.multicast]\naddress = \"10.0.0.1\"\n",
            ":2: key `listeners.multicast.address`: 10.0.0.1 is not a multicast address",
        ),
        (
            "[listeners.multicast]\naddress = \"x\"\n",
            "`x` is not an IP address",
        ),
        (
            "[listeners.multicast]\nport = 0\n",
            ":2: key `listeners.multicast.port`",
        ),
        (
            "[listeners.multicast]\ninterface = \"\"\n",
            "key `listeners.multicast.interface`",
        ),
        (
            "[listeners.multicast]\nkey_file = \"k.key\"\n",
            ":2: key `listeners.multicast.key_file`: `k.key` must be an absolute path",
        ),
        (
            "[listeners.multicast]\nport = 1229\ncallback_networks = [\"10.0.0.0/24\", \"10.1.0.1/16\"]\n",
            ":3: key `listeners.multicast.callback_networks`: `10.1.0.1/16` has host bits set",
        ),
        (
            "[listeners.multicast]\ncallback_networks = [\"fd00::/200\"]\n",
            ":2: key `listeners.multicast.callback_networks`: `fd00::/200`: the prefix length",
        ),
        (
            "[listeners.tcp]\naddress = \"localhost\"\n",
            "key `listeners.tcp.address`: `localhost` is not an IP address",
        ),
        ("[listeners.tcp]\nport = 0\n", "key `listeners.tcp.port`"),
        (
            "[listeners.vsock]\nport = 0\n",
            "key `listeners.vsock.port`",
        ),
        (
            "[listeners.vsock]\nkey_file = \"rel\"\n",
            "key `listeners.vsock.key_file`",
        ),
        (
            "[[groups]]\nname = \"a\"\nuuid = [\"vm\"]\nip = [\"1.1.1.1\"]\n[[groups]]\nname = \"b\"\nuuid = [\"vm\"]\n",
            ":5: key `groups[1].ip`: group `b` has no `ip` entries",
        ),
        (
            "[[groups]]\nip = [\"1.1.1.1\"]\n",
            ":1: key `groups[0].uuid`: group #1 has no `uuid` entries",
        ),
        (
            "[[groups]]\nip = [\"1.1.1.1\"]\nuuid = [\" \"]\n",
            "key `groups[0].uuid`: group #1 has an empty entry",
        ),
    ];
    for (text, want) in cases {
        let e = parse(text).expect_err(text).to_string();
        assert!(e.contains(want), "{text:?}: got {e:?}, want {want:?}");
    }
    // Unknown keys and hash names are refused by the parser.
    let e = parse("[listeners.multicast]\nhash = \"md5\"\n").unwrap_err();
    assert!(e.to_string().contains("listeners.multicast.hash"), "{e}");
    let e = parse("[listeners.tcp]\nfamily = \"ipv6\"\n").unwrap_err();
    assert!(e.to_string().contains("unknown field"), "{e}");
    let e = parse("[fencing]\nbackend = \"xen\"\n").unwrap_err();
    assert!(e.to_string().contains("fencing.backend"), "{e}");
}

#[test]
fn missing_explicit_file_is_an_error_but_missing_default_is_not() {
    let e = Config::load(Some(Path::new("/nonexistent/fenceline.toml"))).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/fenceline.toml"));
}

#[test]
fn shipped_example_config_is_the_defaults() {
    let text = include_str!("../../contrib/fenceline.toml");
    let c = Config::parse(text, Path::new("contrib/fenceline.toml")).unwrap();
    assert_eq!(c, Config::default());
}

#[test]
fn security_keys_parse_and_are_checked() {
    let cfg = Config::parse(
        "[control]\nreadonly_group = \"\"\nadmin_group = \"wheel\"\nmax_streams_per_uid = 4\n\
         [fencing]\naudit_required = true\n[listeners]\nallow_loose_key_mode = true\n",
        Path::new("t.toml"),
    )
    .unwrap();
    assert_eq!(cfg.control.readonly_group.as_deref(), Some(""));
    assert_eq!(cfg.control.admin_group.as_deref(), Some("wheel"));
    assert_eq!(cfg.control.max_streams_per_uid, 4);
    assert!(cfg.fencing.audit_required);
    assert!(cfg.listeners.allow_loose_key_mode);
    let d = Config::default();
    assert_eq!(d.control.readonly_group, None, "haclient if it exists");
    assert_eq!(d.control.max_streams_per_uid, 8);
    assert!(!d.fencing.audit_required && !d.listeners.allow_loose_key_mode);
    let e = Config::parse("[control]\nmax_streams_per_uid = 0\n", Path::new("t.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("t.toml:2") && e.contains("max_streams_per_uid"),
        "{e}"
    );
    let e = Config::parse(
        "[fencing]\naudit_log = \"\"\naudit_required = true\n",
        Path::new("t.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("t.toml:3") && e.contains("audit_required"),
        "{e}"
    );
}

#[test]
fn cluster_key_must_be_absolute_and_authenticated_only_needs_it() {
    let c = parse(
        "[corosync]\ncluster_key = \"/etc/fenceline/cluster.key\"\nauthenticated_only = true\n",
    )
    .unwrap();
    assert_eq!(
        c.corosync.cluster_key.as_deref(),
        Some(std::path::Path::new("/etc/fenceline/cluster.key"))
    );
    assert!(c.corosync.authenticated_only);
    let e = parse("[corosync]\nauthenticated_only = true\n").unwrap_err();
    assert!(e.to_string().contains("corosync.authenticated_only"), "{e}");
    assert!(e.to_string().contains("cluster_key"), "{e}");
    assert_eq!(c.corosync.max_peer_vms, 10_000);
    let e = parse("[corosync]\nmax_peer_vms = 5\n").unwrap_err();
    assert!(e.to_string().contains("corosync.max_peer_vms"), "{e}");
    let e = parse("[corosync]\ncluster_key = \"cluster.key\"\n").unwrap_err();
    assert!(e.to_string().contains("corosync.cluster_key"), "{e}");
}

#[test]
fn self_fencing_is_off_unless_set() {
    assert_eq!(parse("").unwrap().fencing.self_fence_secs, 0);
    assert_eq!(
        parse("[fencing]\nself_fence_secs = 0\n")
            .unwrap()
            .fencing
            .self_fence_secs,
        0
    );
    assert_eq!(
        parse("[fencing]\nself_fence_secs = 30\n")
            .unwrap()
            .fencing
            .self_fence_secs,
        30
    );
}

#[test]
fn requester_names_is_off_unless_set_and_absolute() {
    assert_eq!(parse("").unwrap().listeners.requester_names, None);
    assert_eq!(
        parse("[listeners]\nrequester_names = \"/etc/hosts\"\n")
            .unwrap()
            .listeners
            .requester_names,
        Some("/etc/hosts".into())
    );
    let e = parse("[listeners]\nrequester_names = \"hosts\"\n").unwrap_err();
    assert!(e.to_string().contains("listeners.requester_names"), "{e}");
}

#[test]
fn pacemaker_confirm_is_off_unless_set() {
    assert!(!parse("").unwrap().fencing.pacemaker_confirm);
    assert!(
        parse("[fencing]\npacemaker_confirm = true\n")
            .unwrap()
            .fencing
            .pacemaker_confirm
    );
    assert!(parse("[fencing]\npacemaker_confirm = 1\n").is_err());
}
