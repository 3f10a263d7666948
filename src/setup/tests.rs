use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::*;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn multicast(dir: &Path) -> InitOptions {
    InitOptions {
        interface: Some("virbr0".into()),
        key_file: dir.join("cluster/fence_xvm.key"),
        cluster_key: dir.join("fenceline/cluster.key"),
        host_map: Some("g1:vm1;g2:vm2".into()),
        ..InitOptions::default()
    }
}

#[test]
fn the_effective_config_round_trips_through_the_parser() {
    // The defaults, and a config with every optional part set.
    let mut full = Config::default();
    full.control.readonly_group = Some("haclient".into());
    full.control.admin_group = Some("wheel".into());
    full.listeners.multicast = Some(MulticastListener {
        interface: Some("virbr0".into()),
        callback_networks: vec!["192.168.122.0/24".into()],
        ..MulticastListener::default()
    });
    full.listeners.tcp = Some(TcpListenerConf::default());
    full.listeners.vsock = Some(VsockListener::default());
    full.groups = vec![fenceline_config::PermissionGroup {
        name: "web".into(),
        uuid: vec!["web1".into()],
        ip: vec!["192.168.122.11".into()],
    }];
    full.fencing.timeout_secs = 33;
    for cfg in [Config::default(), full] {
        let text = render(&cfg).unwrap();
        let back = Config::parse(&text, Path::new("show.toml")).unwrap();
        assert_eq!(back, cfg, "{text}");
    }
    // Every section of the defaults is spelled out.
    let text = render(&Config::default()).unwrap();
    for key in [
        "[libvirt]",
        "uris = [\"qemu:///system\"]",
        "[control]",
        "max_streams_per_uid = 8",
        "[fencing]",
        "timeout_secs = 20",
        "reboot_timeout_secs = 60",
        "[events]",
        "[corosync]",
        "[hooks]",
        "[log]",
        "[console]",
    ] {
        assert!(text.contains(key), "missing {key}:\n{text}");
    }
}

#[test]
fn plan_enables_the_chosen_listener_only() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = plan(&multicast(dir.path())).unwrap();
    let m = cfg.listeners.multicast.as_ref().unwrap();
    assert_eq!(m.interface.as_deref(), Some("virbr0"));
    assert_eq!(m.address, "225.0.0.12");
    assert_eq!(m.key_file, dir.path().join("cluster/fence_xvm.key"));
    assert!(cfg.listeners.tcp.is_none() && cfg.listeners.vsock.is_none());

    let tcp = plan(&InitOptions {
        listener: ListenerKind::Tcp,
        address: Some("192.168.122.1".into()),
        uris: vec!["qemu:///system".into(), "test:///default".into()],
        ..InitOptions::default()
    })
    .unwrap();
    assert_eq!(tcp.listeners.tcp.as_ref().unwrap().address, "192.168.122.1");
    assert!(tcp.listeners.multicast.is_none());
    assert_eq!(tcp.libvirt.uris.len(), 2);

    let none = plan(&InitOptions {
        listener: ListenerKind::None,
        ..InitOptions::default()
    })
    .unwrap();
    assert!(none.listener_keys().is_empty());

    // The config's own validation runs on the plan.
    let bad = plan(&InitOptions {
        address: Some("10.0.0.1".into()),
        ..InitOptions::default()
    });
    assert!(bad.is_err(), "a unicast multicast group was accepted");
}

#[test]
fn init_writes_the_config_and_a_fresh_key_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("etc/fenceline.toml");
    let cfg = plan(&multicast(dir.path())).unwrap();
    let out = init(&cfg, &conf, false).unwrap();
    assert_eq!(out.key_created, Some(true));
    let key_path = out.key_file.clone().unwrap();
    let key = std::fs::read(&key_path).unwrap();
    assert_eq!(key.len(), 4096);
    assert_eq!(mode(&key_path), 0o600);
    // Not all one byte: random bytes (a zero-filled buffer would pass the length).
    assert!(key.iter().any(|&b| b != key[0]));
    // The cluster key too, a different one, named in the config.
    let (ck_path, created) = out.cluster_key.clone().unwrap();
    assert!(created);
    let ck = std::fs::read(&ck_path).unwrap();
    assert_eq!((ck.len(), mode(&ck_path)), (4096, 0o600));
    assert_ne!(ck, key);
    assert_eq!(cfg.corosync.cluster_key.as_deref(), Some(ck_path.as_path()));
    assert_eq!(mode(&conf), 0o644);
    let (loaded, _) = Config::load(Some(&conf)).unwrap();
    assert_eq!(loaded, cfg);

    // A second run: the config is refused without --force, and nothing changes.
    let other = plan(&InitOptions {
        listener: ListenerKind::Tcp,
        key_file: key_path.clone(),
        cluster_key: ck_path.clone(),
        ..InitOptions::default()
    })
    .unwrap();
    let err = init(&other, &conf, false).unwrap_err();
    assert!(err.contains("exists") && err.contains("--force"), "{err}");
    assert_eq!(Config::load(Some(&conf)).unwrap().0, cfg);

    // With --force the config is replaced, the existing key is kept byte for byte.
    let out = init(&other, &conf, true).unwrap();
    assert_eq!(out.key_created, Some(false));
    assert_eq!(std::fs::read(&key_path).unwrap(), key);
    assert_eq!(out.cluster_key, Some((ck_path.clone(), false)));
    assert_eq!(std::fs::read(&ck_path).unwrap(), ck);
    assert_eq!(Config::load(Some(&conf)).unwrap().0, other);
    assert!(!conf.with_extension("toml.new").exists());
}

#[test]
fn two_keys_differ_and_an_existing_file_is_never_touched() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.key"), dir.path().join("b.key"));
    assert!(create_key(&a).unwrap());
    assert!(create_key(&b).unwrap());
    assert_ne!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let mine = dir.path().join("mine.key");
    std::fs::write(&mine, b"short key").unwrap();
    assert!(!create_key(&mine).unwrap());
    assert_eq!(std::fs::read(&mine).unwrap(), b"short key");
    // A symlink at the path is not followed nor replaced.
    let link = dir.path().join("link.key");
    std::os::unix::fs::symlink(dir.path().join("nowhere"), &link).unwrap();
    assert!(!create_key(&link).unwrap());
    assert!(!dir.path().join("nowhere").exists());
}

#[test]
fn advice_matches_the_config_and_its_timeouts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = plan(&multicast(dir.path())).unwrap();
    let key = dir.path().join("cluster/fence_xvm.key");
    let text = advice(&cfg, "kvm1.example.org", Some("g1:vm1;g2:vm2"));
    let k = key.display();
    assert!(
        text.contains(&format!("fence_xvm -o list -a 225.0.0.12 -k {k}")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "pcs stonith create fence_xvm_kvm1 fence_xvm key_file={k} multicast_address=225.0.0.12"
        )),
        "{text}"
    );
    assert!(text.contains("pcmk_host_map=\"g1:vm1;g2:vm2\""), "{text}");
    // reboot_timeout_secs 60 → the agent waits 65 s, Pacemaker 75 s.
    assert!(text.contains("timeout=65"), "{text}");
    assert!(text.contains("pcmk_reboot_timeout=75"), "{text}");

    let mut slow = cfg.clone();
    slow.fencing.reboot_timeout_secs = 120;
    let text = advice(&slow, "h", None);
    assert!(text.contains("timeout=125") && text.contains("pcmk_off_timeout=135"));
    assert!(text.contains("GUEST1:VM1"), "a placeholder map is shown");

    let tcp = plan(&InitOptions {
        listener: ListenerKind::Tcp,
        address: Some("192.168.122.1".into()),
        key_file: key.clone(),
        ..InitOptions::default()
    })
    .unwrap();
    let text = advice(&tcp, "h", None);
    assert!(
        text.contains(&format!(
            "fence_virt -T 192.168.122.1 -p 1229 -k {k} -o list"
        )),
        "{text}"
    );
}

#[test]
fn describe_says_what_was_done_and_what_was_left() {
    let cfg = Config::default();
    let out = InitOutcome {
        config: "/etc/fenceline/fenceline.toml".into(),
        key_created: None,
        key_file: None,
        cluster_key: None,
    };
    let text = describe(&out, &cfg, "h", None);
    assert!(text.contains("wrote /etc/fenceline/fenceline.toml"));
    assert!(text.contains("no listener"));
    assert!(text.contains("cluster key"), "{text}");
}

#[test]
fn the_questions_fill_the_options_and_empty_answers_keep_the_defaults() {
    let mut opts = InitOptions::default();
    let mut input: &[u8] =
        b"tcp\n192.168.122.1\n/etc/cluster/tcp.key\nqemu:///system test:///default\ng1:vm1\n";
    let mut shown = Vec::new();
    ask_with(&mut opts, &mut input, &mut shown).unwrap();
    assert_eq!(opts.listener, ListenerKind::Tcp);
    assert_eq!(opts.address.as_deref(), Some("192.168.122.1"));
    assert_eq!(opts.key_file, Path::new("/etc/cluster/tcp.key"));
    assert_eq!(opts.uris, ["qemu:///system", "test:///default"]);
    assert_eq!(opts.host_map.as_deref(), Some("g1:vm1"));
    let shown = String::from_utf8(shown).unwrap();
    assert!(
        shown.contains("Listener (multicast, tcp, vsock, none) [multicast]: "),
        "{shown}"
    );

    // Enter everywhere: multicast on virbr0, the default group, key and URI.
    let mut opts = InitOptions::default();
    let mut input: &[u8] = b"\n\n\n\n\n\n";
    ask_with(&mut opts, &mut input, &mut Vec::new()).unwrap();
    assert_eq!(opts.listener, ListenerKind::Multicast);
    assert_eq!(opts.interface.as_deref(), Some("virbr0"));
    assert_eq!(opts.address.as_deref(), Some("225.0.0.12"));
    assert_eq!(opts.key_file, Path::new(DEFAULT_KEY_FILE));
    assert_eq!(opts.uris, ["qemu:///system"]);
    assert_eq!(opts.host_map, None);
    assert!(plan(&opts).is_ok());

    // A wrong listener name and the end of input are errors, not defaults.
    let mut input: &[u8] = b"serial\n";
    assert!(ask_with(&mut InitOptions::default(), &mut input, &mut Vec::new()).is_err());
    let mut input: &[u8] = b"multicast\n";
    let e = ask_with(&mut InitOptions::default(), &mut input, &mut Vec::new()).unwrap_err();
    assert!(e.contains("--yes"), "{e}");
}
