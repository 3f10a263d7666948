use std::os::unix::fs::PermissionsExt;

use super::*;

/// A model on node 1 of `n` nodes named node1..nodeN, all members.
fn cluster_of(n: u32) -> crate::engine::model::Cluster {
    use crate::engine::model::{Cluster, DEFAULT_MAX_PEER_VMS, FenceRules, ModelConfig};
    let mut c = Cluster::new(ModelConfig {
        event_capacity: 10,
        version: "test".into(),
        started_at: 0,
        libvirt_uris: Vec::new(),
        key_digests: Default::default(),
        max_peer_vms: DEFAULT_MAX_PEER_VMS,
        fence: FenceRules::default(),
    });
    c.apply(Input::CorosyncUp {
        at: 1,
        local_nodeid: 1,
        cluster_name: None,
        nodelist: (1..=n).map(|i| (i, Some(format!("node{i}")))).collect(),
    });
    c.apply(Input::Quorum {
        at: 2,
        quorate: true,
        members: (1..=n).collect(),
    });
    c
}

#[test]
fn only_departed_unaccounted_peers_are_polled() {
    let mut c = cluster_of(3);
    // Members (accounted or not) are not polled.
    assert!(departed_unaccounted(&c.snapshot(3)).is_empty());
    c.apply(Input::Quorum {
        at: 4,
        quorate: true,
        members: vec![1, 2],
    });
    assert_eq!(
        departed_unaccounted(&c.snapshot(5)),
        vec!["node3".to_string()]
    );
    // Once confirmed, it is accounted for: no more polling.
    c.apply(Input::Confirm {
        at: 6,
        id: 1,
        node: "node3".into(),
        source: "t".into(),
    });
    assert!(departed_unaccounted(&c.snapshot(7)).is_empty());
}

fn script(dir: &std::path::Path, body: &str) -> PathBuf {
    let p = dir.join("stonith_admin");
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[tokio::test]
async fn history_is_read_bounded_and_errors_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = PacemakerSettings {
        stonith_admin: script(
            dir.path(),
            r#"echo '<pacemaker-result><fence_event status="success" action="off" target="'"$2"'" completed="2026-12-04 04:30:00 +00:00"/><status code="0" message="OK"/></pacemaker-result>'"#,
        ),
        interval: Duration::from_millis(10),
        timeout: Duration::from_millis(500),
    };
    let h = history(&settings, "node3").await.unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].target, "node3");
    assert!(h[0].is_successful_kill());

    settings.stonith_admin = script(dir.path(), "echo 'not xml'; exit 1");
    assert!(history(&settings, "node3").await.is_err());

    settings.stonith_admin = script(dir.path(), "exec sleep 5");
    let t = Instant::now();
    let e = history(&settings, "node3").await.unwrap_err();
    assert!(e.contains("did not answer"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(3));

    settings.stonith_admin = dir.path().join("missing");
    assert!(history(&settings, "node3").await.is_err());
}

/// The loop runs the command only while a departed node is unaccounted
/// for, and hands its successful kills (of that node only) to the model.
#[tokio::test]
async fn run_polls_only_departed_nodes_and_feeds_kills() {
    let dir = tempfile::tempdir().unwrap();
    let calls = dir.path().join("calls");
    let body = format!(
        r#"echo "$2" >> '{}'
echo '<pacemaker-result><list>'
echo '<fence_event status="success" action="reboot" target="'"$2"'" completed="2026-12-04 04:30:00Z"/>'
echo '<fence_event status="failed" action="reboot" target="'"$2"'" completed="2026-12-04 04:30:01Z"/>'
echo '<fence_event status="success" action="off" target="other" completed="2026-12-04 04:30:02Z"/>'
echo '</list><status code="0" message="OK"/></pacemaker-result>'"#,
        calls.display()
    );
    let settings = PacemakerSettings {
        stonith_admin: script(dir.path(), &body),
        interval: Duration::from_millis(20),
        timeout: Duration::from_secs(2),
    };
    let mut c = cluster_of(2);
    let (snap_tx, snap_rx) = watch::channel(Arc::new(c.snapshot(3)));
    let (tx, mut rx) = InputTx::channel(16);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run(settings, snap_rx, tx, cancel.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!calls.exists(), "no departed node: no stonith_admin call");
    assert!(rx.try_recv().is_err());

    c.apply(Input::Quorum {
        at: 4,
        quorate: true,
        members: vec![1],
    });
    snap_tx.send_replace(Arc::new(c.snapshot(5)));
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("an input within 5 s")
        .expect("the channel is open");
    match got {
        Input::PacemakerFenced { record, .. } => {
            assert_eq!(
                (record.target.as_str(), record.action.as_str()),
                ("node2", "reboot")
            );
            assert!(record.is_successful_kill());
        }
        other => panic!("unexpected input {other:?}"),
    }
    // Only the successful kill of node2 was handed over, polled again later.
    let again = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(again, Input::PacemakerFenced { ref record, .. } if record.action == "reboot" && record.target == "node2")
    );
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the driver stops on cancel")
        .unwrap();
    let polled = std::fs::read_to_string(&calls).unwrap();
    assert!(polled.lines().all(|l| l == "node2"), "{polled}");
}
