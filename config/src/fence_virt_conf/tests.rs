use super::*;
use std::path::Path;

use crate::{
    Config, FenceBackend, HashName, ListenersSection, MulticastListener, NameMode, PermissionGroup,
    TcpListenerConf, VsockListener,
};

/// Debian's shipped /etc/fence_virt.conf (fence-virtd 4.12.1-1), verbatim.
const DEBIAN: &str = "fence_virtd {\n\tlistener = \"multicast\";\n\tbackend = \"libvirt\";\n}\n\nlisteners {\n\tmulticast {\n\t\tkey_file = \"/etc/fence_virt.key\";\n\t\taddress = \"225.0.0.12\";\n\t\t# Needed on Fedora systems\n\t\tinterface = \"virbr0\";\n\t}\n}\n\nbackends {\n\tlibvirt { \n\t\turi = \"qemu:///system\";\n\t}\n}\n";

fn err(text: &str) -> FvcError {
    match import(text) {
        Ok(i) => panic!("expected an error for {text:?}, got {i:?}"),
        Err(e) => e,
    }
}

#[test]
fn debian_shipped_config() {
    let i = import(DEBIAN).unwrap();
    assert_eq!(i.backend, FenceBackend::Libvirt);
    assert_eq!(i.uris, vec!["qemu:///system".to_string()]);
    assert_eq!(i.name_mode, NameMode::Name);
    assert_eq!(
        i.listeners,
        ListenersSection {
            multicast: Some(MulticastListener {
                address: "225.0.0.12".into(),
                port: 1229,
                interface: Some("virbr0".into()),
                key_file: "/etc/fence_virt.key".into(),
                hash: HashName::Sha256,
                auth: HashName::Sha256,
                callback_networks: vec![],
            }),
            tcp: None,
            vsock: None,
            ..Default::default()
        }
    );
    assert!(i.groups.is_empty());
    assert!(i.notes.is_empty(), "{:?}", i.notes);
}

#[test]
fn the_installed_file_imports_if_present() {
    // The machine's own /etc/fence_virt.conf (Debian ships one).
    let p = Path::new("/etc/fence_virt.conf");
    if p.exists() {
        let i = load(p).unwrap_or_else(|e| panic!("{e}"));
        assert!(!i.uris.is_empty());
    }
}

#[test]
fn grammar_positions_and_shapes() {
    let n = parse("a { b = \"x\" { c = \"1\"; } d { } }\ne = \"multi\nline\";").unwrap();
    assert_eq!(n.len(), 2);
    assert_eq!(n[0].name, "a");
    let kids = n[0].children.as_ref().unwrap();
    assert_eq!(kids[0].value.as_deref(), Some("x"));
    assert_eq!(
        kids[0].children.as_ref().unwrap()[0].value.as_deref(),
        Some("1")
    );
    assert_eq!(
        kids[1].children.as_deref(),
        Some(&[][..]),
        "empty blocks are fine"
    );
    assert_eq!(n[1].value.as_deref(), Some("multi\nline"));
    assert_eq!(n[1].pos, Pos { line: 2, column: 1 });
    // Identifiers take anything but the separators, `#` inside included.
    let n = parse("wé#ird.key:1 = \"v\"; # comment\n").unwrap();
    assert_eq!(n[0].name, "wé#ird.key:1");
}

#[test]
fn syntax_errors_have_line_and_column() {
    let cases: &[(&str, usize, usize, &str)] = &[
        ("", 1, 1, "no statement"),
        ("# only a comment\n\n", 1, 1, "no statement"),
        ("a = \"\";", 1, 5, "empty value"),
        ("a = \"x\"", 1, 8, "`;` missing"),
        (
            "a = \"x\"\nb = \"y\";",
            2,
            1,
            "expected `;` after the value of `a`",
        ),
        (
            "a {\n  b = \"x\";\n",
            3,
            1,
            "end of file inside block `a` opened at line 1, column 1",
        ),
        ("}", 1, 1, "`}` without a block"),
        (
            "a = b;",
            1,
            5,
            "expected a quoted value after `a =`, found `b`",
        ),
        ("a;", 1, 2, "expected `=` or `{` after `a`"),
        ("= \"x\";", 1, 1, "expected a name"),
        ("a = \"never closed;\n", 1, 5, "never closed"),
        ("a = \"x\";\r\n", 1, 9, "carriage return"),
    ];
    for (text, line, col, want) in cases {
        let e = parse(text).expect_err(text);
        assert_eq!((e.line, e.column), (*line, *col), "{text:?}: {e}");
        assert!(e.message.contains(want), "{text:?}: {e}");
    }
    let deep = "a {".repeat(100) + &"}".repeat(100);
    assert!(parse(&deep).unwrap_err().message.contains("nested deeper"));
}

#[test]
fn keys_are_case_insensitive_and_the_last_duplicate_wins() {
    let i = import(
        "FENCE_VIRTD { Listener = \"TCP\"; backend = \"libvirt\"; backend = \"cpg\"; }\n\
         Listeners { tcp { port = \"1\"; PORT = \"2\"; } tcp { port = \"3\"; } }\n\
         backends { CPG { uri = \"a:///\"; URI = \"b:///\"; } }",
    )
    .unwrap();
    assert_eq!(i.backend, FenceBackend::Cpg);
    assert_eq!(i.uris, vec!["b:///".to_string()]);
    assert_eq!(
        i.listeners.tcp.as_ref().unwrap().port,
        3,
        "the last block wins whole"
    );
    assert!(
        i.notes
            .iter()
            .any(|n| n.contains("line 2") && n.contains("ignored")),
        "{:?}",
        i.notes
    );
}

#[test]
fn unknown_keys_name_the_path_and_line() {
    let e = err(
        "fence_virtd { listener = \"multicast\"; backend = \"cpg\"; }\nlisteners { multicast { adress = \"225.0.0.12\"; } }\nbackends { cpg { uri = \"qemu:///system\"; } }",
    );
    assert_eq!(e.key.as_deref(), Some("listeners/multicast/@adress"));
    assert_eq!(e.line, 2);
    assert!(e.message.contains("unknown key"), "{e}");
    let e = err("fence_virtd { listener = \"multicast\"; backend = \"cpg\"; }\nbackendz { }");
    assert_eq!(e.key.as_deref(), Some("backendz"));
    let e = err(
        "fence_virtd { listener = \"multicast\"; backend = \"cpg\"; }\nbackends { cpg { uri = \"q:///\"; flavour = \"x\"; } }",
    );
    assert_eq!(e.key.as_deref(), Some("backends/cpg/@flavour"));
    let e = err("fence_virtd { listener { } }");
    assert_eq!(e.key.as_deref(), Some("fence_virtd/listener"));
    assert!(e.message.contains("must be an attribute"), "{e}");
}

#[test]
fn ignored_settings_are_noted() {
    let i = import(
        "fence_virtd { listener = \"multicast\"; backend = \"cpg\"; module_path = \"/usr/lib/x\"; debug = \"3\"; foreground = \"1\"; wait_for_init = \"1\"; }\n\
         listeners { multicast { } tcp { port = \"99\"; } }\n\
         backends { cpg { uri = \"qemu:///system\"; } libvirt { uri = \"test:///default\"; } }",
    )
    .unwrap();
    for k in [
        "module_path",
        "debug",
        "foreground",
        "wait_for_init",
        "listeners/tcp is ignored",
        "backends/libvirt is ignored",
    ] {
        assert!(i.notes.iter().any(|n| n.contains(k)), "{k}: {:?}", i.notes);
    }
    assert_eq!(i.listeners.multicast, Some(MulticastListener::default()));
    assert_eq!(i.listeners.tcp, None);
    assert_eq!(i.uris, vec!["qemu:///system".to_string()]);
}

#[test]
fn listener_and_backend_choices() {
    let base = |l: &str, b: &str| {
        format!(
            "fence_virtd {{ listener = \"{l}\"; backend = \"{b}\"; }}\nbackends {{ {b} {{ uri = \"qemu:///system\"; }} }}"
        )
    };
    assert!(
        err(&base("serial", "libvirt"))
            .message
            .contains("not supported")
    );
    assert!(
        err(&base("carrier-pigeon", "libvirt"))
            .message
            .contains("not a listener")
    );
    assert!(
        err(&base("multicast", "xen"))
            .message
            .contains("not a backend")
    );
    let v = import(&base("vsock", "libvirt")).unwrap();
    assert_eq!(v.listeners.vsock, Some(VsockListener::default()));
    let e = err("fence_virtd { backend = \"cpg\"; }");
    assert_eq!(e.key.as_deref(), Some("fence_virtd/@listener"));
    let e = err("fence_virtd { listener = \"tcp\"; backend = \"cpg\"; }");
    assert_eq!(e.key.as_deref(), Some("backends/cpg/@uri"));
    let e = err("listeners { }");
    assert!(e.message.contains("fence_virtd { ... }"), "{e}");
}

#[test]
fn uris_are_read_up_to_the_first_gap() {
    let fv = "fence_virtd { listener = \"tcp\"; backend = \"libvirt\"; }\n";
    let i = import(&format!(
        "{fv}backends {{ libvirt {{ uri2 = \"c:///\"; uri = \"a:///\"; uri1 = \"b:///\"; }} }}"
    ))
    .unwrap();
    assert_eq!(i.uris, vec!["a:///", "b:///", "c:///"]);
    let e = err(&format!(
        "{fv}backends {{ libvirt {{ uri = \"a:///\"; uri2 = \"c:///\"; }} }}"
    ));
    assert_eq!(e.key.as_deref(), Some("backends/libvirt/@uri2"));
    assert!(e.message.contains("`uri1` is missing"), "{e}");
    let e = err(&format!(
        "{fv}backends {{ libvirt {{ uri = \"nocolon\"; }} }}"
    ));
    assert!(e.message.contains("not a libvirt URI"), "{e}");
    let e = err(&format!(
        "{fv}backends {{ libvirt {{ uri = \"a:///\"; uri01 = \"b:///\"; }} }}"
    ));
    assert_eq!(e.key.as_deref(), Some("backends/libvirt/@uri01"));
    let e = err(&format!(
        "{fv}backends {{ libvirt {{ uri = \"a:///\"; name_mode = \"uuid\"; }} }}"
    ));
    assert_eq!(
        e.key.as_deref(),
        Some("backends/libvirt/@name_mode"),
        "name_mode is a cpg key"
    );
}

#[test]
fn name_mode_cpg_overrides_the_legacy_one() {
    let i = import("fence_virtd { listener = \"tcp\"; backend = \"cpg\"; name_mode = \"uuid\"; }\nbackends { cpg { uri = \"a:///\"; } }").unwrap();
    assert_eq!(i.name_mode, NameMode::Uuid);
    let i = import("fence_virtd { listener = \"tcp\"; backend = \"cpg\"; name_mode = \"uuid\"; }\nbackends { cpg { uri = \"a:///\"; name_mode = \"name\"; } }").unwrap();
    assert_eq!(i.name_mode, NameMode::Name);
    let e = err(
        "fence_virtd { listener = \"tcp\"; backend = \"cpg\"; name_mode = \"both\"; }\nbackends { cpg { uri = \"a:///\"; } }",
    );
    assert_eq!(e.key.as_deref(), Some("fence_virtd/@name_mode"));
}

#[test]
fn listener_values() {
    let fv = |l: &str, body: &str| {
        format!(
            "fence_virtd {{ listener = \"{l}\"; backend = \"libvirt\"; }}\nlisteners {{ {l} {{ {body} }} }}\nbackends {{ libvirt {{ uri = \"qemu:///system\"; }} }}"
        )
    };
    let m = import(&fv(
        "multicast",
        "family = \"ipv6\"; hash = \"SHA512\"; auth = \"sha1\"; port = \"1300\";",
    ))
    .unwrap();
    let m = m.listeners.multicast.unwrap();
    assert_eq!(m.address, "ff05::3:1", "the family's default group");
    assert_eq!(
        (m.hash, m.auth, m.port),
        (HashName::Sha512, HashName::Sha1, 1300)
    );
    let e = err(&fv(
        "multicast",
        "family = \"ipv4\"; address = \"ff05::3:1\";",
    ));
    assert!(e.message.contains("does not match"), "{e}");
    let e = err(&fv("multicast", "address = \"10.1.1.1\";"));
    assert!(e.message.contains("not a multicast address"), "{e}");
    let e = err(&fv("multicast", "port = \"0\";"));
    assert_eq!(e.key.as_deref(), Some("listeners/multicast/@port"));
    let e = err(&fv("multicast", "port = \"1229x\";"));
    assert!(e.message.contains("not a port"), "{e}");
    let e = err(&fv("multicast", "hash = \"md5\";"));
    assert!(e.message.contains("not a hash"), "{e}");
    let e = err(&fv("multicast", "key_file = \"fence.key\";"));
    assert!(e.message.contains("absolute"), "{e}");
    let e = err(&fv("multicast", "family = \"ipx\";"));
    assert!(e.message.contains("not a family"), "{e}");
    let i = import(&fv("multicast", "address = \"ff05::3:1\";")).unwrap();
    assert!(
        i.notes.iter().any(|n| n.contains("without `family")),
        "{:?}",
        i.notes
    );

    let t = import(&fv("tcp", "family = \"ipv6\";"))
        .unwrap()
        .listeners
        .tcp
        .unwrap();
    assert_eq!((t.address.as_str(), t.port), ("::1", 1229));
    let e = err(&fv("tcp", "interface = \"eth0\";"));
    assert_eq!(
        e.key.as_deref(),
        Some("listeners/tcp/@interface"),
        "tcp has no interface"
    );
    let v = import(&fv("vsock", "port = \"4294967294\";"))
        .unwrap()
        .listeners
        .vsock
        .unwrap();
    assert_eq!(v.port, u32::MAX - 1);
    let e = err(&fv("vsock", "address = \"1.2.3.4\";"));
    assert_eq!(e.key.as_deref(), Some("listeners/vsock/@address"));
}

#[test]
fn tcp_and_vsock_auth_reproduce_fence_virtd() {
    let fv = |l: &str, body: &str| {
        format!(
            "fence_virtd {{ listener = \"{l}\"; backend = \"libvirt\"; }}\nlisteners {{ {l} {{ {body} }} }}\nbackends {{ libvirt {{ uri = \"qemu:///system\"; }} }}"
        )
    };
    // fence_virtd: `auth` overwrote the packet hash; the handshake stayed sha256.
    let i = import(&fv("tcp", "hash = \"sha512\"; auth = \"none\";")).unwrap();
    let t = i.listeners.tcp.unwrap();
    assert_eq!((t.hash, t.auth), (HashName::None, HashName::Sha256));
    assert!(
        i.notes.iter().any(|n| n.contains("its bug")),
        "{:?}",
        i.notes
    );
    let t = import(&fv("tcp", "hash = \"sha1\";"))
        .unwrap()
        .listeners
        .tcp
        .unwrap();
    assert_eq!((t.hash, t.auth), (HashName::Sha1, HashName::Sha256));
    let v = import(&fv("vsock", "auth = \"sha512\";"))
        .unwrap()
        .listeners
        .vsock
        .unwrap();
    assert_eq!((v.hash, v.auth), (HashName::Sha512, HashName::Sha256));
}

#[test]
fn groups_map_and_validate() {
    let fv = "fence_virtd { listener = \"multicast\"; backend = \"cpg\"; }\nbackends { cpg { uri = \"qemu:///system\"; } }\n";
    let i = import(&format!(
        "{fv}groups {{\n group {{ name = \"web\"; uuid = \"web1\"; uuid = \"8f1e0001-0000-4000-8000-000000000011\"; ip = \"10.0.0.1\"; ip = \"3\"; }}\n group {{ uuid = \"db1\"; ip = \"10.0.0.2\"; }}\n group {{ }}\n}}"
    ))
    .unwrap();
    assert_eq!(
        i.groups,
        vec![
            PermissionGroup {
                name: "web".into(),
                uuid: vec!["web1".into(), "8f1e0001-0000-4000-8000-000000000011".into()],
                ip: vec!["10.0.0.1".into(), "3".into()],
            },
            PermissionGroup {
                name: "unnamed-2".into(),
                uuid: vec!["db1".into()],
                ip: vec!["10.0.0.2".into()],
            },
        ]
    );
    assert!(
        i.notes
            .iter()
            .any(|n| n.contains("line 6") && n.contains("dropped")),
        "{:?}",
        i.notes
    );
    let e = err(&format!(
        "{fv}groups {{ group {{ name = \"x\"; uuid = \"vm\"; }} }}"
    ));
    assert!(e.message.contains("no `ip` entries"), "{e}");
    let e = err(&format!("{fv}groups {{ grp {{ }} }}"));
    assert_eq!(e.key.as_deref(), Some("groups/grp"));
    let e = err(&format!(
        "{fv}groups {{ group {{ ip = \"1.1.1.1\"; host = \"x\"; }} }}"
    ));
    assert_eq!(e.key.as_deref(), Some("groups/group/@host"));
}

#[test]
fn printed_toml_is_a_valid_config_with_the_same_settings() {
    let text = format!(
        "{DEBIAN}\ngroups {{ group {{ name = \"g\"; uuid = \"vm1\"; ip = \"10.0.0.9\"; }} }}\n"
    );
    let i = import(&text).unwrap();
    let toml_text = i.to_toml();
    let c = Config::parse(&toml_text, Path::new("imported.toml"))
        .unwrap_or_else(|e| panic!("{e}\n{toml_text}"));
    let applied = i
        .apply(Config::default(), None, Path::new("/etc/fence_virt.conf"))
        .unwrap();
    assert_eq!(c, applied);
    assert_eq!(c.listeners, i.listeners);
    assert_eq!(c.groups, i.groups);
    assert!(toml_text.contains("[listeners.multicast]"), "{toml_text}");
    assert!(toml_text.contains("[[groups]]"), "{toml_text}");
}

#[test]
fn notes_with_multi_line_values_stay_comments() {
    let i = import("fence_virtd { listener = \"tcp\"; backend = \"cpg\"; module_path = \"/a\nb = 1\"; }\nbackends { cpg { uri = \"q:///\"; } }").unwrap();
    let t = i.to_toml();
    assert!(t.contains("#   b = 1"), "{t}");
    let i = import("fence_virtd { listener = \"tcp\"; backend = \"cpg\"; debug = \"\x1b[1m\x0c\"; }\nbackends { cpg { uri = \"q:///\nx\ty\"; } }").unwrap();
    let t = i.to_toml();
    let c = Config::parse(&t, Path::new("x.toml")).unwrap_or_else(|e| panic!("{e}\n{t}"));
    assert_eq!(c.libvirt.uris, vec!["q:///\nx\ty".to_string()]);
    let c = Config::parse(&t, Path::new("x.toml")).unwrap();
    assert_eq!(c.listeners.tcp, Some(TcpListenerConf::default()));
}

#[test]
fn apply_refuses_settings_given_twice() {
    let i = import(DEBIAN).unwrap();
    let p = Path::new("/etc/fenceline/fenceline.toml");
    let fvc = Path::new("/etc/fence_virt.conf");
    for (toml_text, key) in [
        ("[fencing]\nbackend = \"cpg\"\n", "fencing.backend"),
        ("[libvirt]\nuris = [\"qemu:///system\"]\n", "libvirt.uris"),
        ("[libvirt]\nname_mode = \"uuid\"\n", "libvirt.name_mode"),
        ("[listeners.tcp]\n", "listeners"),
        ("[[groups]]\nuuid = [\"a\"]\nip = [\"b\"]\n", "groups"),
    ] {
        let base = Config::parse(toml_text, p).unwrap();
        let e = i
            .apply(base, Some((toml_text, p)), fvc)
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("key `{key}`")), "{e}");
        assert!(e.contains("--fence-virt-conf /etc/fence_virt.conf"), "{e}");
    }
    // fenceline-only settings combine.
    let toml_text =
        "[log]\nlevel = \"debug\"\n[fencing]\ntimeout_secs = 9\n[libvirt]\nreconcile_secs = 120\n";
    let base = Config::parse(toml_text, p).unwrap();
    let c = i.apply(base, Some((toml_text, p)), fvc).unwrap();
    assert_eq!(c.log.level, "debug");
    assert_eq!(c.fencing.timeout_secs, 9);
    assert_eq!(c.libvirt.reconcile_secs, 120);
    assert_eq!(c.fencing.backend, FenceBackend::Libvirt);
    assert_eq!(c.listeners, i.listeners);
}

#[test]
fn load_names_the_file_and_refuses_non_utf8() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("fence_virt.conf");
    std::fs::write(&p, b"fence_virtd {\n listener = \"m\xffx\";\n}").unwrap();
    let e = load(&p).unwrap_err().to_string();
    assert!(e.contains("fence_virt.conf:2:"), "{e}");
    assert!(e.contains("not UTF-8"), "{e}");
    std::fs::write(&p, "fence_virtd { listener = \"tcp\"; }\n").unwrap();
    let e = load(&p).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}:1:", p.display())), "{e}");
    assert!(load(&dir.path().join("missing")).is_err());
}
