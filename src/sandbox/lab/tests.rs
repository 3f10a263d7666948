use super::corosync::parse_quorumtool;
use super::*;

#[test]
fn domains_and_uuids() {
    let d = lab_domains(2);
    assert_eq!(d[0].name, "vm2a");
    assert_eq!(d[0].uuid, "8f1e0002-0000-4000-8000-000000000011");
    assert_eq!(d[2].name, "vm2off");
    assert_eq!(d[2].uuid, "8f1e0002-0000-4000-8000-000000000019");
    assert!(!d[2].running);
    let u = qemu_domain_uuid(1, "q1");
    assert_eq!(u.len(), 36);
    assert_ne!(u, qemu_domain_uuid(1, "q2"));
}

#[test]
fn quorumtool_parse() {
    let text = "Quorum information\n------------------\nDate:             Sat Nov 21 05:50:00 2026\nQuorum provider:  corosync_votequorum\nNodes:            3\nNode ID:          1\nRing ID:          1.d\nQuorate:          Yes\n\nVotequorum information\n----------------------\nExpected votes:   3\nHighest expected: 3\nTotal votes:      3\nQuorum:           2  \nFlags:            Quorate \n\nMembership information\n----------------------\n    Nodeid      Votes Name\n         1          1 node1 (local)\n         2          1 node2\n         3          1 node3\n";
    let q = parse_quorumtool(text).unwrap();
    assert!(q.quorate);
    assert_eq!(q.nodes, 3);
    assert_eq!(q.members, vec![1, 2, 3]);
    assert!(parse_quorumtool("garbage").is_none());
}
