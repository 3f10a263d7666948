use super::answer::field;
use super::testing::*;
use super::*;
use crate::engine::fence::auth::client_handshake;
use crate::engine::fence::guard::Guard;
use crate::engine::fence::perm::{PermissionGroup, Permissions};
use crate::engine::model::{DropKind, Input};
use fenceline_proto::api::{DomainState, FenceOp, FenceResult};
use fenceline_proto::fence_xvm::{
    self, FenceRequest, HOST_STATE_END, HostState, REQ_LEN, RESP_HOSTLIST,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use tokio::io::AsyncReadExt;

const KEY: &[u8] = b"0123456789abcdef";

fn common(
    rec: Recorder,
    groups: &[PermissionGroup],
    auth: HashType,
) -> (Arc<Common<Recorder>>, tokio::sync::mpsc::Receiver<Input>) {
    let (itx, irx) = InputTx::channel(64);
    let c = Common::with_guard(
        "test",
        KEY.into(),
        HashType::Sha256,
        auth,
        Arc::new(Permissions::new(groups)),
        rec,
        itx,
        None,
        CancellationToken::new(),
        Arc::new(Guard::default()),
    );
    (c, irx)
}

fn signed(op: FenceOp, domain: &str, seq: u32) -> [u8; REQ_LEN] {
    let mut r = FenceRequest::new(op, domain, seq).unwrap();
    r.set_callback("127.0.0.1:1229".parse().unwrap());
    r.sign(KEY, HashType::Sha256, [1, 2, 3, 4, 5, 6]).unwrap();
    r.encode().unwrap()
}

/// What a real client's retransmission is: the same request signed again
/// with fresh random bytes.
fn resigned(op: FenceOp, domain: &str, seq: u32) -> [u8; REQ_LEN] {
    let mut r = FenceRequest::new(op, domain, seq).unwrap();
    r.set_callback("127.0.0.1:1229".parse().unwrap());
    r.sign(KEY, HashType::Sha256, [9, 8, 7, 6, 5, 4]).unwrap();
    r.encode().unwrap()
}

fn origin(ip: &str) -> Origin {
    Origin {
        perm_source: ip.into(),
        label: format!("tcp:{ip}"),
    }
}

/// Runs `serve` against an in-memory client; returns everything the
/// daemon wrote after the handshake.
async fn exchange(c: &Common<Recorder>, raw: &[u8; REQ_LEN], from: &str) -> Vec<u8> {
    let req = c.check(raw).unwrap();
    let (mut a, mut b) = tokio::io::duplex(64 * 1024);
    let client = async move {
        client_handshake(&mut b, HashType::Sha256, KEY, Duration::from_secs(2))
            .await
            .unwrap();
        let mut out = Vec::new();
        b.read_to_end(&mut out).await.unwrap();
        out
    };
    let daemon = async {
        c.serve(&mut a, &req, &origin(from)).await;
        drop(a);
    };
    let ((), out) = tokio::join!(daemon, client);
    out
}

#[tokio::test]
async fn fence_ops_reach_the_engine_with_the_source() {
    let rec = Recorder {
        answers: Arc::new(HashMap::from([("vm1".to_string(), FenceResult::Off)])),
        ..Default::default()
    };
    let (c, _irx) = common(rec.clone(), &[], HashType::Sha256);
    let out = exchange(&c, &signed(FenceOp::Status, "vm1", 1), "10.0.0.7").await;
    assert_eq!(out, vec![2]);
    let calls = rec.calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        vec![FenceCall {
            op: FenceOp::Status,
            domain: "vm1".into(),
            source: "tcp:10.0.0.7".into()
        }]
    );
    // With `requester_names`, the source names the requester by address;
    // another address stays bare.
    c.names.replace(fenceline_proto::hosts::HostNames::parse(
        b"10.0.0.7 guest1\n10.0.0.8 guest2\n",
    ));
    exchange(&c, &signed(FenceOp::Status, "vm1", 2), "10.0.0.7").await;
    exchange(&c, &signed(FenceOp::Status, "vm1", 3), "10.0.0.9").await;
    let sources: Vec<String> = rec.calls.lock().unwrap()[1..]
        .iter()
        .map(|c| c.source.clone())
        .collect();
    assert_eq!(sources, vec!["tcp:guest1 (10.0.0.7)", "tcp:10.0.0.9"]);
}

#[tokio::test]
async fn null_monitor_and_unknown_are_answered_here() {
    let rec = Recorder::default();
    let (c, _irx) = common(rec.clone(), &[], HashType::Sha256);
    assert_eq!(
        exchange(&c, &signed(FenceOp::Null, "", 1), "1.1.1.1").await,
        vec![1]
    );
    assert_eq!(
        exchange(&c, &signed(FenceOp::Monitor, "", 2), "1.1.1.1").await,
        vec![0]
    );
    let mut unknown = FenceRequest::new(FenceOp::Null, "x", 3).unwrap();
    unknown.request = 7; // metadata: never sent by the client
    unknown.set_callback("127.0.0.1:1229".parse().unwrap());
    unknown.sign(KEY, HashType::Sha256, [0; 6]).unwrap();
    let raw = unknown.encode().unwrap();
    assert_eq!(exchange(&c, &raw, "1.1.1.1").await, vec![1]);
    assert!(rec.calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn list_sends_every_visible_vm_then_the_terminator_and_zero() {
    let long = "n".repeat(70);
    let rec = Recorder {
        domains: Arc::new(vec![
            domain("web1", "u-web1", DomainState::Running, 1),
            domain("db1", "u-db1", DomainState::Paused, 1),
            domain(&long, "u-long", DomainState::Shutoff, 1),
        ]),
        ..Default::default()
    };
    let (c, _irx) = common(rec.clone(), &[], HashType::Sha256);
    let out = exchange(&c, &signed(FenceOp::List, "", 1), "1.1.1.1").await;
    assert_eq!(out.len(), 1 + 4 * 130 + 1);
    assert_eq!(out[0], RESP_HOSTLIST);
    let rec_at =
        |i: usize| -> [u8; 130] { out[1 + i * 130..1 + (i + 1) * 130].try_into().unwrap() };
    let h = HostState::parse(&rec_at(0)).unwrap().unwrap();
    assert_eq!(
        (h.domain.as_str(), h.uuid.as_str(), h.state),
        ("web1", "u-web1", 1)
    );
    assert_eq!(HostState::parse(&rec_at(1)).unwrap().unwrap().state, 3);
    let l = rec_at(2);
    assert_eq!(&l[..63], "n".repeat(63).as_bytes(), "truncated to 63 bytes");
    assert_eq!(l[63], 0, "always NUL-terminated");
    assert_eq!(l[129], 0, "padding is zero");
    assert_eq!(rec_at(3), HOST_STATE_END);
    assert_eq!(*out.last().unwrap(), 0);
    assert!(
        rec.calls.lock().unwrap().is_empty(),
        "list does not call the engine"
    );
}

#[tokio::test]
async fn groups_deny_without_calling_the_engine_and_filter_the_list() {
    let rec = Recorder {
        domains: Arc::new(vec![
            domain("web1", "u-web1", DomainState::Running, 1),
            domain("db1", "u-db1", DomainState::Running, 1),
        ]),
        ..Default::default()
    };
    let groups = [PermissionGroup {
        name: "web".into(),
        uuid: vec!["WEB1".into()],
        ip: vec!["10.0.0.1".into()],
    }];
    let (c, _irx) = common(rec.clone(), &groups, HashType::Sha256);
    assert_eq!(
        exchange(&c, &signed(FenceOp::Off, "db1", 1), "10.0.0.1").await,
        vec![3]
    );
    assert_eq!(
        exchange(&c, &signed(FenceOp::Off, "web1", 2), "10.0.0.2").await,
        vec![3]
    );
    assert!(rec.calls.lock().unwrap().is_empty());
    assert_eq!(
        exchange(&c, &signed(FenceOp::Off, "web1", 3), "10.0.0.1").await,
        vec![0]
    );
    assert_eq!(rec.calls.lock().unwrap().len(), 1);
    // null and monitor are never checked.
    assert_eq!(
        exchange(&c, &signed(FenceOp::Monitor, "", 4), "10.9.9.9").await,
        vec![0]
    );
    let out = exchange(&c, &signed(FenceOp::List, "", 5), "10.0.0.1").await;
    assert_eq!(out.len(), 1 + 2 * 130 + 1, "only web1 and the terminator");
    let out = exchange(&c, &signed(FenceOp::List, "", 6), "10.0.0.2").await;
    assert_eq!(out.len(), 1 + 130 + 1, "nothing visible");
}

#[tokio::test]
async fn answered_requests_are_duplicates_for_ten_seconds() {
    let rec = Recorder::default();
    let (c, _irx) = common(rec.clone(), &[], HashType::Sha256);
    let raw = signed(FenceOp::Off, "vm1", 77);
    exchange(&c, &raw, "1.1.1.1").await;
    assert!(matches!(c.check(&raw), Err(Refusal::Replay(_))));
    let again = resigned(FenceOp::Off, "vm1", 77);
    assert_eq!(c.check(&again), Err(Refusal::Duplicate));
    let upper = signed(FenceOp::Off, "VM1", 77);
    assert_eq!(c.check(&upper), Err(Refusal::Duplicate));
    assert!(c.check(&signed(FenceOp::On, "vm1", 77)).is_ok());
    assert_eq!(rec.calls.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_failed_handshake_is_not_recorded_and_not_dispatched() {
    let rec = Recorder::default();
    let (c, _irx) = common(rec.clone(), &[], HashType::Sha256);
    let raw = signed(FenceOp::Off, "vm1", 5);
    let req = c.check(&raw).unwrap();
    let (mut a, mut b) = tokio::io::duplex(1024);
    let client = async move {
        // Wrong key: the client gives up after the daemon's answer.
        let r = client_handshake(&mut b, HashType::Sha256, b"wrong", Duration::from_secs(2)).await;
        assert!(r.is_err());
    };
    let o = origin("1.1.1.1");
    tokio::join!(c.serve(&mut a, &req, &o), client);
    assert!(rec.calls.lock().unwrap().is_empty());
    assert!(
        matches!(c.check(&raw), Err(Refusal::Replay(_))),
        "recorded when verified, not after the handshake"
    );
    let retransmission = resigned(FenceOp::Off, "vm1", 5);
    assert!(
        c.check(&retransmission).is_ok(),
        "a retransmission is tried again"
    );
}

#[tokio::test]
async fn requests_are_bound_to_their_listener_and_replays_cross_listeners() {
    let (itx, _irx) = InputTx::channel(64);
    let guard = Arc::new(Guard::default());
    let make = |name| {
        Common::with_guard(
            name,
            KEY.into(),
            HashType::Sha256,
            HashType::Sha256,
            Arc::new(Permissions::default()),
            Recorder::default(),
            itx.clone(),
            None,
            CancellationToken::new(),
            guard.clone(),
        )
    };
    let (mc, tcp, vsock) = (make("multicast"), make("tcp"), make("vsock"));
    // A multicast packet relayed to tcp/vsock: refused, and not recorded
    // (the real multicast listener still takes it).
    let mc_raw = signed(FenceOp::Off, "vm1", 1);
    assert_eq!(tcp.check(&mc_raw), Err(Refusal::WrongListener));
    assert_eq!(vsock.check(&mc_raw), Err(Refusal::WrongListener));
    assert!(mc.check(&mc_raw).is_ok());
    assert!(matches!(mc.check(&mc_raw), Err(Refusal::Replay(_))));
    // A stream request (callback fields zero) on multicast: refused.
    let mut r = FenceRequest::new(FenceOp::Off, "vm1", 2).unwrap();
    r.sign(KEY, HashType::Sha256, [3; 6]).unwrap();
    let stream_raw = r.encode().unwrap();
    assert_eq!(mc.check(&stream_raw), Err(Refusal::NoCallback));
    // Any non-zero callback field is enough to refuse on tcp.
    let mut p = FenceRequest::new(FenceOp::Off, "vm1", 3).unwrap();
    p.port = 1229;
    p.sign(KEY, HashType::Sha256, [4; 6]).unwrap();
    assert_eq!(tcp.check(&p.encode().unwrap()), Err(Refusal::WrongListener));
    // One record for the process: verified on tcp, a replay on vsock.
    assert!(tcp.check(&stream_raw).is_ok());
    assert!(matches!(vsock.check(&stream_raw), Err(Refusal::Replay(_))));
    assert_eq!(guard.record.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn unsigned_requests_are_not_recorded() {
    // hash = "none" (accepted only when configured so): no random bytes,
    // so a retransmission is an exact copy; fence_virtd's 10 s rule only.
    let (itx, _irx) = InputTx::channel(64);
    let guard = Arc::new(Guard::default());
    let c = Common::with_guard(
        "tcp",
        KEY.into(),
        HashType::None,
        HashType::None,
        Arc::new(Permissions::default()),
        Recorder::default(),
        itx,
        None,
        CancellationToken::new(),
        guard.clone(),
    );
    let mut r = FenceRequest::new(FenceOp::Status, "vm1", 8).unwrap();
    r.sign(KEY, HashType::None, [0; 6]).unwrap();
    let raw = r.encode().unwrap();
    assert!(c.check(&raw).is_ok());
    assert!(c.check(&raw).is_ok(), "not answered yet: tried again");
    assert!(guard.record.lock().unwrap().is_empty());
}

#[tokio::test]
async fn refusals_are_checked_before_anything_else() {
    let (c, _irx) = common(Recorder::default(), &[], HashType::Sha256);
    assert_eq!(c.check(&[0u8; 10]), Err(Refusal::Length(10)));
    assert_eq!(c.check(&[0u8; 177]), Err(Refusal::Length(177)));
    let mut bad = signed(FenceOp::Off, "vm1", 1);
    bad[5] ^= 1;
    assert_eq!(
        c.check(&bad),
        Err(Refusal::Signature(fence_xvm::VerifyError::Mismatch))
    );
    let mut r = FenceRequest::new(FenceOp::Off, "vm1", 1).unwrap();
    r.sign(KEY, HashType::Sha1, [0; 6]).unwrap();
    assert!(matches!(
        c.check(&r.encode().unwrap()),
        Err(Refusal::Signature(
            fence_xvm::VerifyError::WeakerHash { .. }
        ))
    ));
    // Random bytes with a valid-looking hashtype fail the signature.
    let mut junk = [0xAAu8; REQ_LEN];
    junk[1] = 2;
    assert!(matches!(c.check(&junk), Err(Refusal::Signature(_))));
    junk[1] = 9;
    assert_eq!(
        c.check(&junk),
        Err(Refusal::Signature(fence_xvm::VerifyError::UnknownHash(9)))
    );
}

#[tokio::test]
async fn in_flight_copies_are_refused() {
    let (c, _irx) = common(Recorder::default(), &[], HashType::Sha256);
    let req = c.check(&signed(FenceOp::Reboot, "vm1", 9)).unwrap();
    let cb: SocketAddr = "127.0.0.1:1229".parse().unwrap();
    let g = c.begin(&req, Some(cb)).unwrap();
    assert_eq!(c.begin(&req, Some(cb)).err(), Some(Refusal::InFlight));
    assert!(
        c.begin(&req, Some("127.0.0.2:1229".parse().unwrap()))
            .is_ok()
    );
    drop(g);
    assert!(c.begin(&req, Some(cb)).is_ok());
}

#[tokio::test]
async fn drops_reach_the_engine_batched() {
    let (c, mut irx) = common(Recorder::default(), &[], HashType::Sha256);
    for _ in 0..500 {
        c.refuse("x", &Refusal::Length(1));
    }
    // The counter flushes once a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut inputs = Vec::new();
    while let Ok(i) = irx.try_recv() {
        inputs.push(i);
    }
    match inputs.as_slice() {
        [
            Input::Dropped {
                what: DropKind::FencePackets,
                count: 500,
                ..
            },
        ] => {}
        other => panic!("want one batched drop input, got {other:?}"),
    }
}

#[test]
fn field_truncates_on_a_character_boundary() {
    assert_eq!(field("abc"), "abc");
    assert_eq!(field(&"x".repeat(100)).len(), 63);
    let s = format!("{}é", "x".repeat(62)); // é is 2 bytes: 62 + 2 = 64
    assert_eq!(field(&s), "x".repeat(62));
}

/// The multicast listener connects back only when this node wins the run's
/// claim; a lost claim is dropped quietly, an undecided one is a counted
/// drop. (The claim itself is decided by the engine, tested in the model;
/// here the recording stand-in gives the outcome per domain.)
#[tokio::test]
async fn multicast_connects_back_only_when_this_node_wins_the_claim() {
    use crate::engine::model::ClaimOutcome;
    use fenceline_proto::cidr::Cidr;
    let rec = Recorder {
        claims: Arc::new(HashMap::from([
            ("lost".to_string(), ClaimOutcome::Lost(3)),
            (
                "undecided".to_string(),
                ClaimOutcome::Unavailable("no quorum".into()),
            ),
        ])),
        ..Default::default()
    };
    let (c, mut irx) = common(rec.clone(), &[], HashType::Sha256);
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let to = sock.local_addr().unwrap();
    let callback = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cb = callback.local_addr().unwrap();
    let allow: Arc<[Cidr]> = Arc::from(vec![Cidr::parse("127.0.0.0/8").unwrap()]);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(crate::engine::fence::multicast::run(
        sock,
        c,
        allow,
        cancel.clone(),
    ));
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let packet = |vm: &str, seq: u32| {
        let mut r = FenceRequest::new(FenceOp::Status, vm, seq).unwrap();
        r.set_callback(cb);
        r.sign(KEY, HashType::Sha256, [seq as u8; 6]).unwrap();
        r
    };
    let mut runs = Vec::new();
    for (vm, seq) in [("lost", 1), ("undecided", 2)] {
        let r = packet(vm, seq);
        runs.push((r.round_id(), vm.to_string()));
        client.send_to(&r.encode().unwrap(), to).await.unwrap();
    }
    let none = tokio::time::timeout(Duration::from_millis(700), callback.accept()).await;
    assert!(
        none.is_err(),
        "no connect-back for a lost or undecided claim"
    );
    // Only the undecided one is a counted drop (the counter reports once a second).
    let t0 = std::time::Instant::now();
    let dropped = loop {
        match tokio::time::timeout(Duration::from_millis(200), irx.recv()).await {
            Ok(Some(Input::Dropped {
                what: DropKind::FencePackets,
                count,
                ..
            })) => break count,
            _ if t0.elapsed() > Duration::from_secs(3) => panic!("no drop reported"),
            _ => {}
        }
    };
    assert_eq!(dropped, 1);
    let r = packet("won", 3);
    runs.push((r.round_id(), "won".to_string()));
    client.send_to(&r.encode().unwrap(), to).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(3), callback.accept()).await;
    let Ok(Ok((_held, _))) = got else {
        panic!("a won claim connects back: {got:?}")
    };
    // The same run from another address of the client (fence_xvm sends
    // one packet per local address): no second connect-back while the
    // first one is being handled (it waits for our handshake now).
    let second =
        tokio::net::TcpListener::bind(SocketAddr::new("127.0.0.2".parse().unwrap(), cb.port()))
            .await
            .unwrap();
    let mut r2 = FenceRequest::new(FenceOp::Status, "won", 3).unwrap();
    r2.set_callback(second.local_addr().unwrap());
    r2.sign(KEY, HashType::Sha256, [42; 6]).unwrap();
    assert_eq!(r2.round_id(), r.round_id());
    client.send_to(&r2.encode().unwrap(), to).await.unwrap();
    let none = tokio::time::timeout(Duration::from_millis(700), second.accept()).await;
    assert!(none.is_err(), "one connect-back per run on this host too");
    assert_eq!(
        *rec.claim_calls.lock().unwrap(),
        runs,
        "no second claim asked"
    );
    cancel.cancel();
    let _ = task.await;
}
