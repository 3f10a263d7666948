//! fenceline's own CPG group format (versioned).
//!
//! Every message is a 12-byte header followed by a JSON payload:
//!
//! | Off | Size | Field    | Value                                      |
//! |-----|------|----------|--------------------------------------------|
//! | 0   | 4    | magic    | `b"FNLN"`                                  |
//! | 4   | 1    | version  | [`VERSION`] (1)                            |
//! | 5   | 1    | flags    | 0; receivers ignore unknown flags          |
//! | 6   | 2    | reserved | 0; receivers ignore it                     |
//! | 8   | 4    | length   | payload length in bytes, little-endian     |
//! | 12  | n    | payload  | `serde_json` of [`OwnMessage`] (compact)   |
//!
//! Compatibility rules: a receiver refuses a version newer than its own
//! ([`WireError::UnsupportedVersion`], counted as malformed by the caller).
//! Within one version, new optional JSON fields may be added (unknown fields
//! are ignored); a new message type needs a new version or is parsed as
//! [`OwnMessage::Unknown`] by receivers of this version (counted, ignored:
//! so a new type must never carry map data). A known type that does not
//! parse is an error: the caller counts it and stops accounting for the
//! sender until its next complete inventory.
//!
//! An inventory is `InventoryBegin`, `Vms` chunks, `InventoryEnd` with the
//! generation and the number of domains the chunks carry (`count`), so a
//! receiver notices a chunk lost under flow control.
//!
//! Big `Vms`/`Gone` lists are split by [`encode_chunked`] so each CPG
//! message stays below a size limit ([`DEFAULT_CHUNK`]). Receivers refuse
//! payloads above [`MAX_PAYLOAD`].

use thiserror::Error;

use crate::messages::{LocalDomain, OwnMessage};

/// Header magic.
pub const MAGIC: [u8; 4] = *b"FNLN";
/// The newest version this build speaks.
pub const VERSION: u8 = 1;
/// Header size.
pub const HEADER_LEN: usize = 12;
/// Largest payload a receiver accepts.
pub const MAX_PAYLOAD: usize = 1024 * 1024;
/// Default upper bound of one encoded message (header included).
pub const DEFAULT_CHUNK: usize = 256 * 1024;

/// Why an own-group message could not be parsed or encoded.
#[derive(Debug, Error)]
pub enum WireError {
    #[error("message too short: {len} bytes, need at least {HEADER_LEN}")]
    TooShort { len: usize },
    #[error("bad magic {0:02x?}")]
    BadMagic([u8; 4]),
    #[error("unsupported version {0} (this build speaks {VERSION})")]
    UnsupportedVersion(u8),
    #[error("payload length field says {declared} bytes, message carries {actual}")]
    LengthMismatch { declared: usize, actual: usize },
    #[error("payload of {len} bytes exceeds the limit of {max}")]
    PayloadTooLarge { len: usize, max: usize },
    #[error("bad JSON payload: {0}")]
    Json(#[from] serde_json::Error),
    #[error("one domain entry alone needs {need} bytes, the limit is {max}")]
    ItemTooLarge { need: usize, max: usize },
}

/// Parses one own-group message.
pub fn parse(buf: &[u8]) -> Result<OwnMessage, WireError> {
    if buf.len() < HEADER_LEN {
        return Err(WireError::TooShort { len: buf.len() });
    }
    let mut magic = [0u8; 4];
    magic.copy_from_slice(&buf[0..4]);
    if magic != MAGIC {
        return Err(WireError::BadMagic(magic));
    }
    let version = buf[4];
    if version == 0 || version > VERSION {
        return Err(WireError::UnsupportedVersion(version));
    }
    // buf[5] (flags) and buf[6..8] (reserved) are ignored on purpose.
    let mut len = [0u8; 4];
    len.copy_from_slice(&buf[8..12]);
    let declared = usize::try_from(u32::from_le_bytes(len)).unwrap_or(usize::MAX);
    if declared > MAX_PAYLOAD {
        return Err(WireError::PayloadTooLarge {
            len: declared,
            max: MAX_PAYLOAD,
        });
    }
    let payload = &buf[HEADER_LEN..];
    if declared != payload.len() {
        return Err(WireError::LengthMismatch {
            declared,
            actual: payload.len(),
        });
    }
    Ok(serde_json::from_slice(payload)?)
}

fn frame(payload: &[u8]) -> Result<Vec<u8>, WireError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(WireError::PayloadTooLarge {
            len: payload.len(),
            max: MAX_PAYLOAD,
        });
    }
    // MAX_PAYLOAD fits in u32, checked above.
    let len = u32::try_from(payload.len()).map_err(|_| WireError::PayloadTooLarge {
        len: payload.len(),
        max: MAX_PAYLOAD,
    })?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(0); // flags
    out.extend_from_slice(&[0, 0]); // reserved
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Encodes one message (no splitting).
pub fn encode(msg: &OwnMessage) -> Result<Vec<u8>, WireError> {
    frame(&serde_json::to_vec(msg)?)
}

/// Rebuilds a list message of the same variant from a chunk.
type Rebuild = fn(Vec<LocalDomain>) -> OwnMessage;

/// Encodes `msg` into one or more messages of at most `max` bytes each
/// (header included; `max` is capped so receivers accept every payload).
///
/// `Vms` and `Gone` lists are split into several messages of the same
/// variant, in order; other variants are always one message. An empty list
/// stays one message. Errors when a single entry (or a small variant) does
/// not fit on its own.
pub fn encode_chunked(msg: &OwnMessage, max: usize) -> Result<Vec<Vec<u8>>, WireError> {
    let max = max.min(HEADER_LEN + MAX_PAYLOAD);
    let (vms, rebuild): (&[LocalDomain], Rebuild) = match msg {
        OwnMessage::Vms { vms } => (vms, |vms| OwnMessage::Vms { vms }),
        OwnMessage::Gone { vms } => (vms, |vms| OwnMessage::Gone { vms }),
        other => {
            let one = encode(other)?;
            if one.len() > max {
                return Err(WireError::ItemTooLarge {
                    need: one.len(),
                    max,
                });
            }
            return Ok(vec![one]);
        }
    };
    // serde_json's compact form of `{"type":..,"vms":[a,b,c]}` is the empty
    // form plus every entry plus one comma between entries, so sizes add up
    // exactly and each chunk can be sized before it is encoded.
    let empty_len = HEADER_LEN + serde_json::to_vec(&rebuild(Vec::new()))?.len();
    let mut out = Vec::new();
    let mut chunk: Vec<LocalDomain> = Vec::new();
    let mut chunk_len = empty_len;
    for vm in vms {
        let item = serde_json::to_vec(vm)?.len();
        let single = empty_len + item;
        if single > max {
            return Err(WireError::ItemTooLarge { need: single, max });
        }
        let add = item + usize::from(!chunk.is_empty());
        if chunk_len + add > max {
            out.push(encode(&rebuild(std::mem::take(&mut chunk)))?);
            chunk_len = empty_len;
            chunk_len += item;
        } else {
            chunk_len += add;
        }
        chunk.push(vm.clone());
    }
    if !chunk.is_empty() || out.is_empty() {
        out.push(encode(&rebuild(chunk))?);
    }
    debug_assert!(out.iter().all(|m| m.len() <= max));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{DomainState, LibvirtHealth};
    use crate::messages::PeerInfo;

    fn dom(i: usize) -> LocalDomain {
        LocalDomain {
            name: format!("vm-{i:05}"),
            uuid: format!("8f1e0001-0000-4000-8000-{i:012}"),
            state: if i.is_multiple_of(2) {
                DomainState::Running
            } else {
                DomainState::Shutoff
            },
            migration: None,
        }
    }

    fn samples() -> Vec<OwnMessage> {
        vec![
            OwnMessage::Info(PeerInfo {
                version: "0.1.0".into(),
                started_at: 1_700_000_000_000,
                libvirt: vec![LibvirtHealth {
                    uri: "qemu:///system".into(),
                    connected: true,
                    since: 5,
                    error: None,
                    domains: 3,
                }],
                inventory_complete: true,
                key_digests: [("multicast".to_string(), "0011223344556677".to_string())].into(),
                self_fence_secs: Some(30),
            }),
            OwnMessage::InventoryBegin { generation: 7 },
            OwnMessage::Vms {
                vms: (0..3).map(dom).collect(),
            },
            OwnMessage::Gone { vms: vec![dom(9)] },
            OwnMessage::Vms { vms: vec![] },
            OwnMessage::InventoryEnd {
                generation: 7,
                count: Some(3),
            },
            OwnMessage::NetEvent {
                time: 1_700_000_000_123,
                event: Box::new(crate::api::EventKind::NetworkHook {
                    network: "net1".into(),
                    op: "port-created".into(),
                    subop: "begin".into(),
                    network_uuid: Some("62dbb43f-eb39-4879-8478-d0df01188bd5".into()),
                    bridge: Some("br1".into()),
                    port: Some(crate::api::PortView {
                        owner: Some("vm1".into()),
                        mac: Some("52:54:00:aa:bb:01".into()),
                        ..Default::default()
                    }),
                    replay: true,
                    error: None,
                }),
            },
            OwnMessage::NetState {
                network: Box::new(crate::api::NetworkView {
                    node: 1,
                    name: "net1".into(),
                    uuid: "62dbb43f-eb39-4879-8478-d0df01188bd5".into(),
                    active: true,
                    bridge: Some("br1".into()),
                    ports: vec![],
                    since: 5,
                }),
            },
            OwnMessage::NetList {
                names: vec!["net1".into()],
            },
            OwnMessage::Claim {
                id: "0123456789abcdef0123456789abcdef".into(),
            },
        ]
    }

    #[test]
    fn round_trip_samples() {
        for m in samples() {
            let b = encode(&m).unwrap();
            assert_eq!(&b[0..4], b"FNLN");
            assert_eq!(b[4], 1);
            assert_eq!(&b[5..8], &[0, 0, 0]);
            assert_eq!(
                u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize,
                b.len() - 12
            );
            assert_eq!(parse(&b).unwrap(), m);
        }
    }

    #[test]
    fn network_messages_are_version_1_with_new_type_tags() {
        // Added without a version bump: an older receiver parses the header
        // and fails on the unknown `type`, a counted malformed message.
        for (m, tag) in [
            (&samples()[6], "net-event"),
            (&samples()[7], "net-state"),
            (&samples()[8], "net-list"),
        ] {
            let b = encode(m).unwrap();
            assert_eq!(b[4], 1);
            let v: serde_json::Value = serde_json::from_slice(&b[HEADER_LEN..]).unwrap();
            assert_eq!(v["type"], tag);
        }
        let b = frame(br#"{"type":"net-something-newer","x":1}"#).unwrap();
        assert_eq!(parse(&b).unwrap(), OwnMessage::Unknown);
    }

    #[test]
    fn header_bytes_of_a_known_message() {
        let b = encode(&OwnMessage::InventoryBegin { generation: 1 }).unwrap();
        let json = br#"{"type":"inventory-begin","generation":1}"#;
        let mut want = b"FNLN\x01\x00\x00\x00".to_vec();
        want.extend_from_slice(&(json.len() as u32).to_le_bytes());
        want.extend_from_slice(json);
        assert_eq!(b, want);
    }

    #[test]
    fn wrong_magic() {
        let mut b = encode(&samples()[1]).unwrap();
        b[0] = b'X';
        assert!(matches!(parse(&b), Err(WireError::BadMagic(_))));
    }

    #[test]
    fn newer_version_is_refused() {
        let mut b = encode(&samples()[1]).unwrap();
        b[4] = 2;
        assert!(matches!(parse(&b), Err(WireError::UnsupportedVersion(2))));
        b[4] = 0;
        assert!(matches!(parse(&b), Err(WireError::UnsupportedVersion(0))));
    }

    #[test]
    fn flags_and_reserved_are_ignored() {
        let mut b = encode(&samples()[1]).unwrap();
        b[5] = 0x80;
        b[6] = 1;
        assert_eq!(parse(&b).unwrap(), samples()[1]);
    }

    #[test]
    fn length_mismatch() {
        let mut b = encode(&samples()[1]).unwrap();
        b.push(b' ');
        assert!(matches!(parse(&b), Err(WireError::LengthMismatch { .. })));
        let b = encode(&samples()[1]).unwrap();
        assert!(matches!(
            parse(&b[..b.len() - 1]),
            Err(WireError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn short_messages() {
        for n in 0..HEADER_LEN {
            assert!(matches!(
                parse(&b"FNLN\x01\x00\x00\x00\x00\x00\x00\x00"[..n]),
                Err(WireError::TooShort { .. })
            ));
        }
        // A header with an empty payload is not valid JSON.
        assert!(matches!(
            parse(b"FNLN\x01\x00\x00\x00\x00\x00\x00\x00"),
            Err(WireError::Json(_))
        ));
    }

    #[test]
    fn payload_over_limit() {
        let mut b = b"FNLN\x01\x00\x00\x00".to_vec();
        b.extend_from_slice(&((MAX_PAYLOAD + 1) as u32).to_le_bytes());
        assert!(matches!(parse(&b), Err(WireError::PayloadTooLarge { .. })));
        b[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(parse(&b), Err(WireError::PayloadTooLarge { .. })));
    }

    #[test]
    fn json_errors() {
        for payload in [
            &b"not json"[..],
            br#"{"no-type":"vms"}"#,
            br#"{"type":7}"#,
            br#"{"type":"vms"}"#,
            br#"{"type":"vms","vms":[{"name":"a","uuid":"b","state":"flying"}]}"#,
            br#"[1,2,3]"#,
        ] {
            let b = frame(payload).unwrap();
            assert!(matches!(parse(&b), Err(WireError::Json(_))), "{payload:?}");
        }
        // Unknown fields are ignored (forward compatibility within a version).
        let b = frame(br#"{"type":"inventory-end","generation":3,"extra":true}"#).unwrap();
        assert_eq!(
            parse(&b).unwrap(),
            OwnMessage::InventoryEnd {
                generation: 3,
                count: None
            }
        );
    }

    #[test]
    fn an_unknown_type_is_ignorable_but_a_known_one_with_bad_fields_is_an_error() {
        let b = frame(br#"{"type":"no-such-type","vms":[1]}"#).unwrap();
        assert_eq!(parse(&b).unwrap(), OwnMessage::Unknown);
        // A newer domain state inside a known type is not ignorable: the
        // receiver would miss an update of the map.
        let b =
            frame(br#"{"type":"vms","vms":[{"name":"a","uuid":"","state":"new-state"}]}"#).unwrap();
        assert!(matches!(parse(&b), Err(WireError::Json(_))));
    }

    #[test]
    fn inventory_end_carries_its_count_and_reads_the_older_form() {
        let m = OwnMessage::InventoryEnd {
            generation: 4,
            count: Some(12),
        };
        let b = encode(&m).unwrap();
        assert_eq!(
            &b[HEADER_LEN..],
            br#"{"type":"inventory-end","generation":4,"count":12}"#
        );
        assert_eq!(parse(&b).unwrap(), m);
        // The previous version's end (no count) still parses; an older
        // receiver ignores the new field (unknown fields are ignored).
        let old = frame(br#"{"type":"inventory-end","generation":4}"#).unwrap();
        assert_eq!(
            parse(&old).unwrap(),
            OwnMessage::InventoryEnd {
                generation: 4,
                count: None
            }
        );
    }

    #[test]
    fn chunking_splits_big_lists_and_keeps_order() {
        let all: Vec<LocalDomain> = (0..5000).map(dom).collect();
        for (msg, is_vms) in [
            (OwnMessage::Vms { vms: all.clone() }, true),
            (OwnMessage::Gone { vms: all.clone() }, false),
        ] {
            let whole = encode(&msg).unwrap();
            let max = 16 * 1024;
            assert!(whole.len() > 10 * max);
            let parts = encode_chunked(&msg, max).unwrap();
            assert!(parts.len() > 10);
            let mut back = Vec::new();
            for p in &parts {
                assert!(p.len() <= max, "{} > {max}", p.len());
                match parse(p).unwrap() {
                    OwnMessage::Vms { vms } if is_vms => back.extend(vms),
                    OwnMessage::Gone { vms } if !is_vms => back.extend(vms),
                    other => panic!("unexpected variant {other:?}"),
                }
            }
            assert_eq!(back, all);
            // Chunks are filled: all but the last would overflow with one more entry.
            let item = serde_json::to_vec(&all[0]).unwrap().len();
            for p in &parts[..parts.len() - 1] {
                assert!(p.len() + item + 1 > max);
            }
        }
    }

    #[test]
    fn chunk_limit_is_exact() {
        let msg = OwnMessage::Vms {
            vms: (0..10).map(dom).collect(),
        };
        let whole = encode(&msg).unwrap();
        assert_eq!(
            encode_chunked(&msg, whole.len()).unwrap(),
            vec![whole.clone()]
        );
        assert_eq!(encode_chunked(&msg, whole.len() - 1).unwrap().len(), 2);
    }

    #[test]
    fn small_and_empty_messages_are_one_chunk() {
        for m in samples() {
            let parts = encode_chunked(&m, DEFAULT_CHUNK).unwrap();
            assert_eq!(parts, vec![encode(&m).unwrap()]);
        }
    }

    #[test]
    fn entry_larger_than_limit_is_an_error() {
        let big = LocalDomain {
            name: "x".repeat(1000),
            uuid: String::new(),
            state: DomainState::Running,
            migration: None,
        };
        let msg = OwnMessage::Vms { vms: vec![big] };
        assert!(matches!(
            encode_chunked(&msg, 200),
            Err(WireError::ItemTooLarge { .. })
        ));
        assert!(matches!(
            encode_chunked(&OwnMessage::InventoryBegin { generation: 1 }, 10),
            Err(WireError::ItemTooLarge { .. })
        ));
    }

    #[test]
    fn no_panic_on_garbage() {
        let base = encode(&samples()[2]).unwrap();
        for n in 0..=base.len() {
            let _ = parse(&base[..n]);
        }
        for i in 0..base.len() {
            let mut b = base.clone();
            b[i] ^= 0xa5;
            let _ = parse(&b);
        }
    }

    #[test]
    fn an_older_peers_info_counts_as_an_incomplete_inventory() {
        let old = r#"{"version":"0.0.9","started_at":1,"libvirt":[]}"#;
        let info: PeerInfo = serde_json::from_str(old).unwrap();
        assert!(!info.inventory_complete, "the safe direction");
        assert!(
            info.key_digests.is_empty(),
            "an older peer announces no key digest"
        );
        assert_eq!(
            info.self_fence_secs, None,
            "an older peer never self-fences"
        );
    }

    #[test]
    fn a_peer_without_a_key_digest_keeps_its_old_json() {
        let info = PeerInfo {
            version: "0.1.0".into(),
            started_at: 1,
            libvirt: vec![],
            inventory_complete: true,
            key_digests: Default::default(),
            self_fence_secs: None,
        };
        let json = serde_json::to_string(&info).unwrap();
        assert!(!json.contains("key_digests"), "{json}");
    }

    #[test]
    fn a_node_that_does_not_self_fence_sends_no_new_field() {
        let info: PeerInfo =
            serde_json::from_str(r#"{"version":"1","started_at":1,"inventory_complete":true}"#)
                .unwrap();
        let json = serde_json::to_string(&info).unwrap();
        assert!(!json.contains("self_fence"), "{json}");
    }

    #[test]
    fn a_confirmation_round_trips() {
        let m = OwnMessage::Confirmed {
            nodeid: 3,
            source: "control:uid=0,pid=1".into(),
        };
        assert_eq!(parse(&encode(&m).unwrap()).unwrap(), m);
    }

    #[test]
    fn a_claim_round_trips_and_older_receivers_count_it_as_malformed() {
        let m = OwnMessage::Claim {
            id: "00112233445566778899aabbccddeeff".into(),
        };
        let b = encode(&m).unwrap();
        assert_eq!(b[4], VERSION);
        assert_eq!(parse(&b).unwrap(), m);
        assert_eq!(
            &b[HEADER_LEN..],
            br#"{"type":"claim","id":"00112233445566778899aabbccddeeff"}"#
        );
        assert_eq!(encode_chunked(&m, DEFAULT_CHUNK).unwrap(), vec![b]);
        // Hostile shapes are errors, not panics.
        for payload in [
            &br#"{"type":"claim"}"#[..],
            br#"{"type":"claim","id":7}"#,
            br#"{"type":"claim","id":null}"#,
        ] {
            assert!(matches!(
                parse(&frame(payload).unwrap()),
                Err(WireError::Json(_))
            ));
        }
    }

    #[test]
    fn a_placement_that_is_not_lost_keeps_its_old_json() {
        let p = crate::api::Placement {
            nodeid: 2,
            state: DomainState::Running,
            lost: false,
            lost_since: None,
        };
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"nodeid":2,"state":"running"}"#
        );
        let old: crate::api::Placement =
            serde_json::from_str(r#"{"nodeid":2,"state":"running"}"#).unwrap();
        assert_eq!(old, p);
    }
}
