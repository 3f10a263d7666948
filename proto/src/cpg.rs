//! fence_virtd's CPG wire format (group `fence-agents`, fence-agents 4.12.1
//! `agents/virt/server/cpg.c`, `cpg-virt.c`, `virt.h`).
//!
//! Every message is a 16-byte header followed by a 140-byte payload, 156
//! bytes in total:
//!
//! | Off | Size | Field   | Notes                                              |
//! |-----|------|---------|----------------------------------------------------|
//! | 0   | 4    | type    | 0 = REQUEST, 1 = REPLY, 2 = STORE_VM               |
//! | 4   | 4    | seqno   | REQUEST: sender's counter; REPLY: echo; STORE: 0   |
//! | 8   | 4    | target  | REQUEST/STORE: 0xFFFFFFFF; REPLY: requester nodeid |
//! | 12  | 4    | pad     | uninitialised in fence_virtd; ignored, written 0   |
//!
//! REQUEST/REPLY payload, `struct cpg_fence_req`: `vm_name[128]` (NUL
//! terminated), `request` i32, `seqno` u32, `response` i32.
//!
//! STORE_VM payload, `virt_state_t`: `v_name[65]`, `v_uuid[65]`, 2 bytes of
//! padding, `s_owner` u32, `s_state` i32.
//!
//! **Byte order.** fence_virtd sends its structs raw, in *host* byte order,
//! and never swaps them. Every fence_virtd we interoperate with runs on a
//! little-endian host (x86_64, aarch64), so this module reads and writes
//! little-endian explicitly, whatever the host. A big-endian fence_virtd
//! could not talk to a little-endian one either.
//!
//! **Parse policy** (a malformed message is an `Err`, never a panic):
//! - fewer than 156 bytes: [`WireError::TooShort`];
//! - more than 156 bytes: accepted only when every extra byte is zero
//!   (fence_virtd always sends exactly 156; zero tail room is harmless, a
//!   non-zero tail means a format we do not know): [`WireError::TrailingData`];
//! - an unknown `type`: [`WireError::UnknownType`];
//! - a string field must contain a NUL inside the field
//!   ([`WireError::Unterminated`]) and the bytes before it must be UTF-8
//!   ([`WireError::NotUtf8`]); bytes after the first NUL are ignored;
//! - STORE_VM with both name and uuid empty: [`WireError::EmptyStore`];
//! - STORE_VM with `s_state` outside libvirt's 0..=7: [`WireError::BadState`].
//!   We refuse rather than map to "nostate", so a corrupt or future state
//!   is counted as malformed instead of silently hiding an active VM;
//! - header `pad`, the 2 padding bytes of `virt_state_t`, and the header
//!   `seqno`/`target` of STORE_VM are not checked (fence_virtd leaves the
//!   header pad uninitialised).
//!
//! **Encoding** reproduces fence_virtd's bytes exactly: NUL-padded string
//! fields, zero padding. A string that does not fit its field (including
//! the terminating NUL) or that contains a NUL is an error; nothing is ever
//! truncated silently.

use thiserror::Error;

use crate::api::DomainState;
use crate::messages::VmRecord;

/// Size of the `wire_msg` header.
pub const HEADER_LEN: usize = 16;
/// Size of both payload structs.
pub const PAYLOAD_LEN: usize = 140;
/// Size of every message fence_virtd sends.
pub const MESSAGE_LEN: usize = HEADER_LEN + PAYLOAD_LEN;
/// fence_virtd's "no node" target (REQUEST and STORE_VM).
pub const NODE_ID_NONE: u32 = 0xFFFF_FFFF;

/// Header `type` of a REQUEST.
pub const TYPE_REQUEST: u32 = 0;
/// Header `type` of a REPLY.
pub const TYPE_REPLY: u32 = 1;
/// Header `type` of a STORE_VM.
pub const TYPE_STORE_VM: u32 = 2;

/// Size of `cpg_fence_req.vm_name` (NUL included).
pub const VM_NAME_FIELD: usize = 128;
/// Size of `virt_state_t.v_name` (NUL included).
pub const V_NAME_FIELD: usize = 65;
/// Size of `virt_state_t.v_uuid` (NUL included).
pub const V_UUID_FIELD: usize = 65;

// Payload offsets of `virt_state_t`.
const V_NAME_OFF: usize = 0;
const V_UUID_OFF: usize = V_NAME_OFF + V_NAME_FIELD; // 65
const S_OWNER_OFF: usize = 132; // after 2 bytes of alignment padding at 130
const S_STATE_OFF: usize = 136;

// Payload offsets of `cpg_fence_req`.
const REQ_REQUEST_OFF: usize = VM_NAME_FIELD; // 128
const REQ_SEQNO_OFF: usize = 132;
const REQ_RESPONSE_OFF: usize = 136;

/// `fence_cmd_t` values carried in [`FenceReq::request`].
pub mod cmd {
    pub const NULL: i32 = 0;
    pub const OFF: i32 = 1;
    pub const REBOOT: i32 = 2;
    pub const ON: i32 = 3;
    pub const STATUS: i32 = 4;
    pub const DEVSTATUS: i32 = 5;
    pub const HOSTLIST: i32 = 6;
}

/// Why a `fence-agents` message could not be parsed or encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    #[error("message too short: {len} bytes, need {MESSAGE_LEN}")]
    TooShort { len: usize },
    #[error("message of {len} bytes has non-zero data after byte {MESSAGE_LEN}")]
    TrailingData { len: usize },
    #[error("unknown message type {0}")]
    UnknownType(u32),
    #[error("field {field} has no NUL terminator within {size} bytes")]
    Unterminated { field: &'static str, size: usize },
    #[error("field {field} is not valid UTF-8")]
    NotUtf8 { field: &'static str },
    #[error("STORE_VM with empty name and uuid")]
    EmptyStore,
    #[error("STORE_VM with unknown domain state {0}")]
    BadState(i32),
    #[error("field {field}: {len} bytes do not fit (at most {max})")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("field {field} contains a NUL byte")]
    EmbeddedNul { field: &'static str },
}

/// The payload of a REQUEST or a REPLY (`struct cpg_fence_req`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceReq {
    /// VM name or UUID, as the fence client asked for it.
    pub vm_name: String,
    /// `fence_cmd_t` (see [`cmd`]).
    pub request: i32,
    /// The client's own sequence number (0 for status and reboot).
    pub seqno: u32,
    /// 0 in requests; the result code in replies.
    pub response: i32,
}

/// The body of a `fence-agents` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FenceAgentsMsg {
    Request(FenceReq),
    Reply(FenceReq),
    StoreVm(VmRecord),
}

/// A whole `fence-agents` message: header fields plus body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Header `seqno`: the request counter (REQUEST/REPLY), 0 for STORE_VM.
    pub seqno: u32,
    /// Header `target`: the requester's nodeid for REPLY, else [`NODE_ID_NONE`].
    pub target: u32,
    pub msg: FenceAgentsMsg,
}

impl Frame {
    /// A STORE_VM exactly as fence_virtd sends it (seqno 0, target none).
    pub fn store_vm(record: VmRecord) -> Self {
        Frame {
            seqno: 0,
            target: NODE_ID_NONE,
            msg: FenceAgentsMsg::StoreVm(record),
        }
    }
}

fn read_u32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

fn read_i32(b: &[u8], off: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    i32::from_le_bytes(a)
}

fn write_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

fn write_i32(b: &mut [u8], off: usize, v: i32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// Reads a NUL-terminated string from a fixed-size field.
fn read_cstr(field_bytes: &[u8], field: &'static str) -> Result<String, WireError> {
    let end = field_bytes
        .iter()
        .position(|&c| c == 0)
        .ok_or(WireError::Unterminated {
            field,
            size: field_bytes.len(),
        })?;
    std::str::from_utf8(&field_bytes[..end])
        .map(str::to_owned)
        .map_err(|_| WireError::NotUtf8 { field })
}

/// Writes `s` NUL-padded into a fixed-size field (the buffer is zeroed).
fn write_cstr(buf: &mut [u8], s: &str, field: &'static str) -> Result<(), WireError> {
    let bytes = s.as_bytes();
    if bytes.contains(&0) {
        return Err(WireError::EmbeddedNul { field });
    }
    // One byte is always left for the terminating NUL.
    let max = buf.len() - 1;
    if bytes.len() > max {
        return Err(WireError::TooLong {
            field,
            len: bytes.len(),
            max,
        });
    }
    buf[..bytes.len()].copy_from_slice(bytes);
    Ok(())
}

/// Parses one `fence-agents` message (see the module docs for the policy).
pub fn parse(buf: &[u8]) -> Result<Frame, WireError> {
    if buf.len() < MESSAGE_LEN {
        return Err(WireError::TooShort { len: buf.len() });
    }
    if buf[MESSAGE_LEN..].iter().any(|&b| b != 0) {
        return Err(WireError::TrailingData { len: buf.len() });
    }
    let msg_type = read_u32(buf, 0);
    let seqno = read_u32(buf, 4);
    let target = read_u32(buf, 8);
    let p = &buf[HEADER_LEN..MESSAGE_LEN];
    let msg = match msg_type {
        TYPE_REQUEST | TYPE_REPLY => {
            let req = FenceReq {
                vm_name: read_cstr(&p[..VM_NAME_FIELD], "vm_name")?,
                request: read_i32(p, REQ_REQUEST_OFF),
                seqno: read_u32(p, REQ_SEQNO_OFF),
                response: read_i32(p, REQ_RESPONSE_OFF),
            };
            if msg_type == TYPE_REQUEST {
                FenceAgentsMsg::Request(req)
            } else {
                FenceAgentsMsg::Reply(req)
            }
        }
        TYPE_STORE_VM => {
            let name = read_cstr(&p[V_NAME_OFF..V_NAME_OFF + V_NAME_FIELD], "v_name")?;
            let uuid = read_cstr(&p[V_UUID_OFF..V_UUID_OFF + V_UUID_FIELD], "v_uuid")?;
            if name.is_empty() && uuid.is_empty() {
                return Err(WireError::EmptyStore);
            }
            let raw_state = read_i32(p, S_STATE_OFF);
            if !(0..=7).contains(&raw_state) {
                return Err(WireError::BadState(raw_state));
            }
            FenceAgentsMsg::StoreVm(VmRecord {
                name,
                uuid,
                owner: read_u32(p, S_OWNER_OFF),
                state: DomainState::from_raw(i64::from(raw_state)),
            })
        }
        other => return Err(WireError::UnknownType(other)),
    };
    Ok(Frame { seqno, target, msg })
}

/// Encodes one message byte for byte as fence_virtd would (156 bytes).
pub fn encode(frame: &Frame) -> Result<Vec<u8>, WireError> {
    let mut buf = vec![0u8; MESSAGE_LEN];
    let msg_type = match &frame.msg {
        FenceAgentsMsg::Request(_) => TYPE_REQUEST,
        FenceAgentsMsg::Reply(_) => TYPE_REPLY,
        FenceAgentsMsg::StoreVm(_) => TYPE_STORE_VM,
    };
    write_u32(&mut buf, 0, msg_type);
    write_u32(&mut buf, 4, frame.seqno);
    write_u32(&mut buf, 8, frame.target);
    // Bytes 12..16 (pad) stay zero.
    let p = &mut buf[HEADER_LEN..];
    match &frame.msg {
        FenceAgentsMsg::Request(req) | FenceAgentsMsg::Reply(req) => {
            write_cstr(&mut p[..VM_NAME_FIELD], &req.vm_name, "vm_name")?;
            write_i32(p, REQ_REQUEST_OFF, req.request);
            write_u32(p, REQ_SEQNO_OFF, req.seqno);
            write_i32(p, REQ_RESPONSE_OFF, req.response);
        }
        FenceAgentsMsg::StoreVm(rec) => {
            write_cstr(
                &mut p[V_NAME_OFF..V_NAME_OFF + V_NAME_FIELD],
                &rec.name,
                "v_name",
            )?;
            write_cstr(
                &mut p[V_UUID_OFF..V_UUID_OFF + V_UUID_FIELD],
                &rec.uuid,
                "v_uuid",
            )?;
            // Bytes 130..132 (alignment padding) stay zero.
            write_u32(p, S_OWNER_OFF, rec.owner);
            write_i32(p, S_STATE_OFF, rec.state.as_raw());
        }
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "8f1e0001-0000-4000-8000-000000000011";

    fn rec(name: &str, uuid: &str, owner: u32, state: DomainState) -> VmRecord {
        VmRecord {
            name: name.into(),
            uuid: uuid.into(),
            owner,
            state,
        }
    }

    fn store_bytes() -> Vec<u8> {
        encode(&Frame::store_vm(rec("vm1", UUID, 2, DomainState::Running))).unwrap()
    }

    #[test]
    fn store_vm_matches_documented_layout() {
        let b = store_bytes();
        assert_eq!(b.len(), 156);
        // Header: type 2, seqno 0, target 0xFFFFFFFF, pad 0.
        assert_eq!(
            &b[0..16],
            &[2, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]
        );
        // v_name at 16, NUL padded to 65 bytes.
        assert_eq!(&b[16..19], b"vm1");
        assert!(b[19..16 + 65].iter().all(|&c| c == 0));
        // v_uuid at 16+65 = 81, NUL padded to 65 bytes.
        assert_eq!(&b[81..81 + 36], UUID.as_bytes());
        assert!(b[81 + 36..16 + 130].iter().all(|&c| c == 0));
        // 2 padding bytes at 16+130.
        assert_eq!(&b[146..148], &[0, 0]);
        // s_owner at 16+132, s_state at 16+136.
        assert_eq!(&b[148..152], &[2, 0, 0, 0]);
        assert_eq!(&b[152..156], &[1, 0, 0, 0]);
    }

    #[test]
    fn hand_built_store_parses() {
        let mut b = vec![0u8; 156];
        b[0] = 2;
        b[8..12].copy_from_slice(&[0xff; 4]);
        b[12..16].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]); // uninitialised pad: ignored
        b[16..19].copy_from_slice(b"vm1");
        b[81..117].copy_from_slice(UUID.as_bytes());
        b[148] = 2;
        b[152] = 1;
        let f = parse(&b).unwrap();
        assert_eq!(f.seqno, 0);
        assert_eq!(f.target, NODE_ID_NONE);
        assert_eq!(
            f.msg,
            FenceAgentsMsg::StoreVm(rec("vm1", UUID, 2, DomainState::Running))
        );
    }

    #[test]
    fn request_layout_and_round_trip() {
        let f = Frame {
            seqno: 7,
            target: NODE_ID_NONE,
            msg: FenceAgentsMsg::Request(FenceReq {
                vm_name: "guest-a".into(),
                request: cmd::OFF,
                seqno: 0x0102_0304,
                response: 0,
            }),
        };
        let b = encode(&f).unwrap();
        assert_eq!(b.len(), 156);
        assert_eq!(&b[0..4], &[0, 0, 0, 0]);
        assert_eq!(&b[4..8], &[7, 0, 0, 0]);
        assert_eq!(&b[16..23], b"guest-a");
        assert!(b[23..16 + 128].iter().all(|&c| c == 0));
        assert_eq!(&b[144..148], &[1, 0, 0, 0]);
        assert_eq!(&b[148..152], &[4, 3, 2, 1]);
        assert_eq!(&b[152..156], &[0, 0, 0, 0]);
        assert_eq!(parse(&b).unwrap(), f);
    }

    #[test]
    fn reply_round_trip() {
        let f = Frame {
            seqno: 3,
            target: 2,
            msg: FenceAgentsMsg::Reply(FenceReq {
                vm_name: UUID.into(),
                request: cmd::STATUS,
                seqno: 0,
                response: 2,
            }),
        };
        let b = encode(&f).unwrap();
        assert_eq!(b[0], 1);
        assert_eq!(parse(&b).unwrap(), f);
    }

    #[test]
    fn store_round_trip_all_states() {
        for raw in 0..=7 {
            let state = DomainState::from_raw(raw);
            let f = Frame::store_vm(rec("x", "", 0xffff_fffe, state));
            assert_eq!(parse(&encode(&f).unwrap()).unwrap(), f);
        }
        // Name only, uuid only, both at the maximum length.
        let long = "n".repeat(64);
        for r in [
            rec(&long, "", 1, DomainState::Shutoff),
            rec("", &long, 1, DomainState::Paused),
        ] {
            let f = Frame::store_vm(r);
            assert_eq!(parse(&encode(&f).unwrap()).unwrap(), f);
        }
    }

    #[test]
    fn too_long_names_are_refused_not_truncated() {
        let e = encode(&Frame::store_vm(rec(
            &"n".repeat(65),
            UUID,
            1,
            DomainState::Running,
        )));
        assert_eq!(
            e,
            Err(WireError::TooLong {
                field: "v_name",
                len: 65,
                max: 64
            })
        );
        let e = encode(&Frame::store_vm(rec(
            "a",
            &"u".repeat(70),
            1,
            DomainState::Running,
        )));
        assert!(matches!(
            e,
            Err(WireError::TooLong {
                field: "v_uuid",
                ..
            })
        ));
        let req = |name: String| Frame {
            seqno: 1,
            target: NODE_ID_NONE,
            msg: FenceAgentsMsg::Request(FenceReq {
                vm_name: name,
                request: cmd::STATUS,
                seqno: 0,
                response: 0,
            }),
        };
        assert!(encode(&req("r".repeat(127))).is_ok());
        assert!(matches!(
            encode(&req("r".repeat(128))),
            Err(WireError::TooLong { max: 127, .. })
        ));
        assert_eq!(
            encode(&Frame::store_vm(rec("a\0b", "", 1, DomainState::Running))),
            Err(WireError::EmbeddedNul { field: "v_name" })
        );
    }

    #[test]
    fn short_message() {
        let b = store_bytes();
        assert_eq!(parse(&b[..155]), Err(WireError::TooShort { len: 155 }));
        assert_eq!(parse(&[]), Err(WireError::TooShort { len: 0 }));
        assert_eq!(parse(&b[..16]), Err(WireError::TooShort { len: 16 }));
    }

    #[test]
    fn trailing_bytes() {
        let mut b = store_bytes();
        b.extend_from_slice(&[0; 8]);
        assert!(parse(&b).is_ok(), "zero tail is tolerated");
        b.push(1);
        assert_eq!(parse(&b), Err(WireError::TrailingData { len: 165 }));
    }

    #[test]
    fn unknown_type() {
        let mut b = store_bytes();
        b[0] = 3;
        assert_eq!(parse(&b), Err(WireError::UnknownType(3)));
        // A big-endian sender's STORE_VM (type 2 in the high byte).
        b[0..4].copy_from_slice(&2u32.to_be_bytes());
        assert_eq!(parse(&b), Err(WireError::UnknownType(0x0200_0000)));
    }

    #[test]
    fn unterminated_names() {
        let mut b = store_bytes();
        b[16..16 + 65].fill(b'a');
        assert_eq!(
            parse(&b),
            Err(WireError::Unterminated {
                field: "v_name",
                size: 65
            })
        );
        let mut b = store_bytes();
        b[81..81 + 65].fill(b'u');
        assert!(matches!(
            parse(&b),
            Err(WireError::Unterminated {
                field: "v_uuid",
                ..
            })
        ));
        let mut b = encode(&Frame {
            seqno: 1,
            target: NODE_ID_NONE,
            msg: FenceAgentsMsg::Request(FenceReq {
                vm_name: "x".into(),
                request: 1,
                seqno: 0,
                response: 0,
            }),
        })
        .unwrap();
        b[16..16 + 128].fill(b'x');
        assert!(matches!(
            parse(&b),
            Err(WireError::Unterminated {
                field: "vm_name",
                ..
            })
        ));
    }

    #[test]
    fn non_utf8_name() {
        let mut b = store_bytes();
        b[16] = 0xff;
        assert_eq!(parse(&b), Err(WireError::NotUtf8 { field: "v_name" }));
    }

    #[test]
    fn bytes_after_the_nul_are_ignored() {
        let mut b = store_bytes();
        b[16 + 10] = b'z'; // garbage after "vm1\0"
        let f = parse(&b).unwrap();
        assert!(matches!(f.msg, FenceAgentsMsg::StoreVm(ref r) if r.name == "vm1"));
    }

    #[test]
    fn empty_store() {
        let mut b = store_bytes();
        b[16..16 + 130].fill(0);
        assert_eq!(parse(&b), Err(WireError::EmptyStore));
    }

    #[test]
    fn bad_state() {
        let mut b = store_bytes();
        b[152..156].copy_from_slice(&8i32.to_le_bytes());
        assert_eq!(parse(&b), Err(WireError::BadState(8)));
        b[152..156].copy_from_slice(&(-1i32).to_le_bytes());
        assert_eq!(parse(&b), Err(WireError::BadState(-1)));
    }

    #[test]
    fn no_panic_on_any_short_prefix_or_byte_flip() {
        let base = store_bytes();
        for n in 0..=base.len() {
            let _ = parse(&base[..n]);
        }
        for i in 0..base.len() {
            for v in [0u8, 1, 0x7f, 0x80, 0xff] {
                let mut b = base.clone();
                b[i] = v;
                let _ = parse(&b);
            }
        }
    }
}
