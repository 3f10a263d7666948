//! fence_xvm / fence_virt wire formats (fence-agents 4.12.1, `include/xvm.h`):
//! the 176-byte `fence_req_t`, the 130-byte `host_state_t` list record, the
//! keyed request hash and the 64-byte challenge/response.
//!
//! Multi-byte integers are little-endian: the structs travel as raw x86
//! memory, and the clients never swap.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

/// Size of `fence_req_t`.
pub const REQ_LEN: usize = 176;
/// Size of `host_state_t`.
pub const HOST_STATE_LEN: usize = 130;
/// Size of a challenge or a response.
pub const CHALLENGE_LEN: usize = 64;
/// Most key-file bytes that are used.
pub const MAX_KEY_LEN: usize = 4096;
/// `MAX_DOMAINNAME_LENGTH`: the domain field; names are at most 63 bytes.
pub const DOMAIN_FIELD: usize = 64;
/// The host-list start byte.
pub const RESP_HOSTLIST: u8 = 253;

const OFF_DOMAIN: usize = 4;
const OFF_ADDRESS: usize = 68;
const OFF_PORT: usize = 96;
const OFF_RANDOM: usize = 98;
const OFF_SEQNO: usize = 104;
const OFF_FAMILY: usize = 108;
const OFF_HASH: usize = 112;
const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;

pub use crate::api::{FenceOp as FenceCmd, FenceResult};

/// `fence_hash_t` / `fence_auth_type_t`: they share numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum HashType {
    None = 0,
    Sha1 = 1,
    #[default]
    Sha256 = 2,
    Sha512 = 3,
}

impl HashType {
    pub fn from_raw(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::None,
            1 => Self::Sha1,
            2 => Self::Sha256,
            3 => Self::Sha512,
            _ => return None,
        })
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "none" => Self::None,
            "sha1" => Self::Sha1,
            "sha256" => Self::Sha256,
            "sha512" => Self::Sha512,
            _ => return None,
        })
    }

    /// SHA-x(parts...) zero-padded to 64 bytes; `None` gives all zeros.
    pub fn digest(self, parts: &[&[u8]]) -> [u8; 64] {
        let mut out = [0u8; 64];
        match self {
            Self::None => {}
            Self::Sha1 => copy_digest(&mut out, parts, Sha1::new()),
            Self::Sha256 => copy_digest(&mut out, parts, Sha256::new()),
            Self::Sha512 => copy_digest(&mut out, parts, Sha512::new()),
        }
        out
    }
}

fn copy_digest<D: Digest>(out: &mut [u8; 64], parts: &[&[u8]], mut d: D) {
    for p in parts {
        d.update(p);
    }
    let r = d.finalize();
    out[..r.len()].copy_from_slice(&r);
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("request is {0} bytes, expected 176")]
    Length(usize),
    #[error("domain name has no NUL within 64 bytes")]
    UnterminatedDomain,
    #[error("domain name is not UTF-8")]
    DomainNotUtf8,
    #[error("domain name longer than 63 bytes")]
    DomainTooLong,
    #[error("{0} is longer than its field")]
    FieldTooLong(&'static str),
}

/// A decoded `fence_req_t`. `request` and `hashtype` stay raw so that an
/// unknown opcode can still be answered with a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceRequest {
    pub request: u8,
    pub hashtype: u8,
    pub addrlen: u8,
    pub flags: u8,
    pub domain: String,
    pub address: [u8; 28],
    pub port: u16,
    pub random: [u8; 6],
    pub seqno: u32,
    pub family: u32,
    pub hash: [u8; 64],
}

impl FenceRequest {
    /// A request as the clients build it, unsigned.
    pub fn new(cmd: FenceCmd, domain: &str, seqno: u32) -> Result<Self, WireError> {
        if domain.len() >= DOMAIN_FIELD {
            return Err(WireError::DomainTooLong);
        }
        Ok(Self {
            request: cmd as u8,
            hashtype: HashType::None as u8,
            addrlen: 0,
            flags: 0,
            domain: domain.to_string(),
            address: [0; 28],
            port: 0,
            random: [0; 6],
            seqno,
            family: 0,
            hash: [0; 64],
        })
    }

    pub fn cmd(&self) -> Option<FenceCmd> {
        FenceCmd::from_raw(self.request)
    }

    /// Parses exactly 176 bytes. fence_virtd reads short packets into a stale
    /// buffer; we refuse anything that is not a whole request.
    pub fn parse(b: &[u8]) -> Result<Self, WireError> {
        if b.len() != REQ_LEN {
            return Err(WireError::Length(b.len()));
        }
        let field = &b[OFF_DOMAIN..OFF_DOMAIN + DOMAIN_FIELD];
        let nul = field
            .iter()
            .position(|&c| c == 0)
            .ok_or(WireError::UnterminatedDomain)?;
        let domain = std::str::from_utf8(&field[..nul])
            .map_err(|_| WireError::DomainNotUtf8)?
            .to_string();
        let mut address = [0u8; 28];
        address.copy_from_slice(&b[OFF_ADDRESS..OFF_ADDRESS + 28]);
        let mut random = [0u8; 6];
        random.copy_from_slice(&b[OFF_RANDOM..OFF_RANDOM + 6]);
        let mut hash = [0u8; 64];
        hash.copy_from_slice(&b[OFF_HASH..OFF_HASH + 64]);
        Ok(Self {
            request: b[0],
            hashtype: b[1],
            addrlen: b[2],
            flags: b[3],
            domain,
            address,
            port: u16::from_le_bytes([b[OFF_PORT], b[OFF_PORT + 1]]),
            random,
            seqno: le32(&b[OFF_SEQNO..]),
            family: le32(&b[OFF_FAMILY..]),
            hash,
        })
    }

    /// The 176 wire bytes, domain NUL-padded.
    pub fn encode(&self) -> Result<[u8; REQ_LEN], WireError> {
        if self.domain.len() >= DOMAIN_FIELD {
            return Err(WireError::DomainTooLong);
        }
        let mut b = [0u8; REQ_LEN];
        b[0] = self.request;
        b[1] = self.hashtype;
        b[2] = self.addrlen;
        b[3] = self.flags;
        b[OFF_DOMAIN..OFF_DOMAIN + self.domain.len()].copy_from_slice(self.domain.as_bytes());
        b[OFF_ADDRESS..OFF_ADDRESS + 28].copy_from_slice(&self.address);
        b[OFF_PORT..OFF_PORT + 2].copy_from_slice(&self.port.to_le_bytes());
        b[OFF_RANDOM..OFF_RANDOM + 6].copy_from_slice(&self.random);
        b[OFF_SEQNO..OFF_SEQNO + 4].copy_from_slice(&self.seqno.to_le_bytes());
        b[OFF_FAMILY..OFF_FAMILY + 4].copy_from_slice(&self.family.to_le_bytes());
        b[OFF_HASH..OFF_HASH + 64].copy_from_slice(&self.hash);
        Ok(b)
    }

    /// Sets the callback address (multicast mode).
    pub fn set_callback(&mut self, addr: SocketAddr) {
        self.address = [0; 28];
        match addr.ip() {
            IpAddr::V4(a) => {
                self.address[..4].copy_from_slice(&a.octets());
                self.addrlen = 4;
                self.family = AF_INET;
            }
            IpAddr::V6(a) => {
                self.address[..16].copy_from_slice(&a.octets());
                self.addrlen = 16;
                self.family = AF_INET6;
            }
        }
        self.port = addr.port();
    }

    /// The address the daemon must call back (multicast mode), from `family`.
    pub fn callback(&self) -> Option<SocketAddr> {
        let ip = match self.family {
            AF_INET => {
                let o: [u8; 4] = self.address[..4].try_into().ok()?;
                IpAddr::V4(Ipv4Addr::from(o))
            }
            AF_INET6 => {
                let o: [u8; 16] = self.address[..16].try_into().ok()?;
                IpAddr::V6(Ipv6Addr::from(o))
            }
            _ => return None,
        };
        if self.port == 0 || ip.is_unspecified() {
            return None;
        }
        Some(SocketAddr::new(ip, self.port))
    }

    /// The identity of one fence_xvm run, the same on every host that
    /// receives any of its packets: a digest (SHA-256, first 16 bytes, hex)
    /// of what every packet of the run shares: op, hash type, flags,
    /// domain, callback port, seqno and family. Left out: the callback
    /// address (one packet per local address of the client), the random
    /// bytes and the hash (fresh in every packet and every retransmission).
    pub fn round_id(&self) -> String {
        let mut h = Sha256::new();
        h.update([self.request, self.hashtype, self.flags]);
        h.update((self.domain.len() as u32).to_le_bytes());
        h.update(self.domain.as_bytes());
        h.update(self.port.to_le_bytes());
        h.update(self.seqno.to_le_bytes());
        h.update(self.family.to_le_bytes());
        h.finalize()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Signs in place: hash = SHA-x(key ‖ request with a zero hash field).
    /// With `HashType::None`, random and hash stay zero.
    pub fn sign(&mut self, key: &[u8], ht: HashType, random: [u8; 6]) -> Result<(), WireError> {
        self.hashtype = ht as u8;
        self.hash = [0; 64];
        if ht == HashType::None {
            self.random = [0; 6];
            return Ok(());
        }
        self.random = random;
        let bytes = self.encode()?;
        self.hash = ht.digest(&[key, &bytes]);
        Ok(())
    }
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Why a request's signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("hash type {got} is weaker than the configured minimum {min:?}")]
    WeakerHash { got: u8, min: HashType },
    #[error("unknown hash type {0}")]
    UnknownHash(u8),
    #[error("signed request but no key is configured")]
    NoKey,
    #[error("key mismatch")]
    Mismatch,
}

/// Verifies the 176 raw bytes the way fence_virtd does: a hash weaker than
/// `min` is refused; all 64 bytes of the hash field are compared (the padding
/// after the digest must be zero). Constant-time comparison.
pub fn verify(raw: &[u8; REQ_LEN], key: Option<&[u8]>, min: HashType) -> Result<(), VerifyError> {
    let ht_raw = raw[1];
    let ht = HashType::from_raw(ht_raw).ok_or(VerifyError::UnknownHash(ht_raw))?;
    if ht < min {
        return Err(VerifyError::WeakerHash { got: ht_raw, min });
    }
    if ht == HashType::None {
        return Ok(());
    }
    let key = key.ok_or(VerifyError::NoKey)?;
    let mut zeroed = *raw;
    zeroed[OFF_HASH..OFF_HASH + 64].fill(0);
    let want = ht.digest(&[key, &zeroed]);
    if bool::from(want.ct_eq(&raw[OFF_HASH..OFF_HASH + 64])) {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

/// The answer to a challenge: SHA-x(key ‖ challenge), zero-padded to 64.
pub fn response(auth: HashType, key: &[u8], challenge: &[u8; CHALLENGE_LEN]) -> [u8; 64] {
    auth.digest(&[key, challenge])
}

/// The domain-separation prefix of [`key_digest`]: the digest can never be
/// confused with a request hash or a challenge answer made with the key.
pub const KEY_DIGEST_PREFIX: &[u8] = b"fenceline key digest v1\0";

/// A short fingerprint of a fence key that fenceline peers announce so that
/// `fenceline check` can tell whether every host holds the same key: the
/// first 8 bytes of SHA-256(prefix ‖ key), in hex. Never the key itself, and
/// nothing a request or a handshake could use.
pub fn key_digest(key: &[u8]) -> String {
    let d = Sha256::new()
        .chain_update(KEY_DIGEST_PREFIX)
        .chain_update(key)
        .finalize();
    d[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Constant-time check of a peer's answer.
pub fn response_ok(
    auth: HashType,
    key: &[u8],
    challenge: &[u8; CHALLENGE_LEN],
    answer: &[u8; 64],
) -> bool {
    bool::from(response(auth, key, challenge).ct_eq(answer))
}

/// One `host_state_t` record of a host list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostState {
    pub domain: String,
    pub uuid: String,
    /// libvirt `virDomainState`.
    pub state: u8,
}

impl HostState {
    /// 130 bytes. Names longer than 63 bytes are refused (fence_virtd
    /// truncates and leaves garbage; we never send garbage).
    pub fn encode(&self) -> Result<[u8; HOST_STATE_LEN], WireError> {
        if self.domain.len() >= 64 {
            return Err(WireError::FieldTooLong("domain"));
        }
        if self.uuid.len() >= 64 {
            return Err(WireError::FieldTooLong("uuid"));
        }
        let mut b = [0u8; HOST_STATE_LEN];
        b[..self.domain.len()].copy_from_slice(self.domain.as_bytes());
        b[64..64 + self.uuid.len()].copy_from_slice(self.uuid.as_bytes());
        b[128] = self.state;
        Ok(b)
    }

    /// Parses one record; `None` for the all-empty terminator.
    pub fn parse(b: &[u8; HOST_STATE_LEN]) -> Result<Option<Self>, WireError> {
        let cstr = |f: &[u8]| -> Result<String, WireError> {
            let end = f.iter().position(|&c| c == 0).unwrap_or(f.len());
            std::str::from_utf8(&f[..end])
                .map(str::to_string)
                .map_err(|_| WireError::DomainNotUtf8)
        };
        let domain = cstr(&b[..64])?;
        let uuid = cstr(&b[64..128])?;
        if domain.is_empty() && uuid.is_empty() {
            return Ok(None);
        }
        Ok(Some(Self {
            domain,
            uuid,
            state: b[128],
        }))
    }
}

/// The all-zero terminator record.
pub const HOST_STATE_END: [u8; HOST_STATE_LEN] = [0; HOST_STATE_LEN];

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    const KEY: &[u8] = b"0123456789abcdef";
    // fence-virt-protocol.md §1 test vector, accepted by real fence_virtd.
    const VECTOR: &str = "
        04020400766d3100000000000000000000000000000000000000000000000000
        0000000000000000000000000000000000000000000000000000000000000000
        000000000a000001000000000000000000000000000000000000000000000000
        cd0401020304050639300000020000005549d184a4e2419bfe3d43aeaf3899be
        26d11d75230461081a669a2941b8473400000000000000000000000000000000
        00000000000000000000000000000000";

    #[test]
    fn reference_vector_signs_identically() {
        let mut r = FenceRequest::new(FenceCmd::Status, "vm1", 12345).unwrap();
        r.set_callback("10.0.0.1:1229".parse().unwrap());
        r.sign(KEY, HashType::Sha256, [1, 2, 3, 4, 5, 6]).unwrap();
        assert_eq!(r.encode().unwrap().to_vec(), hex(VECTOR));
    }

    #[test]
    fn round_id_is_shared_by_every_packet_of_one_run() {
        let packet = |addr: &str, random: [u8; 6]| {
            let mut r = FenceRequest::new(FenceCmd::Status, "vm1", 12345).unwrap();
            r.set_callback(addr.parse().unwrap());
            r.sign(KEY, HashType::Sha256, random).unwrap();
            r
        };
        let a = packet("10.0.0.1:1229", [1, 2, 3, 4, 5, 6]);
        // Another local address of the client, a retransmission: same run.
        let id = a.round_id();
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(packet("192.168.1.7:1229", [9; 6]).round_id(), id);
        assert_eq!(packet("10.0.0.1:1229", [7; 6]).round_id(), id);
        // Another run, op, domain or port: another id.
        let mut b = a.clone();
        b.seqno += 1;
        assert_ne!(b.round_id(), id);
        let mut b = a.clone();
        b.request = FenceCmd::Off as u8;
        assert_ne!(b.round_id(), id);
        let mut b = a.clone();
        b.domain = "vm10".into();
        assert_ne!(b.round_id(), id);
        let mut b = a.clone();
        b.port = 1230;
        assert_ne!(b.round_id(), id);
    }

    #[test]
    fn reference_vector_parses_and_verifies() {
        let raw: [u8; REQ_LEN] = hex(VECTOR).try_into().unwrap();
        let r = FenceRequest::parse(&raw).unwrap();
        assert_eq!(r.cmd(), Some(FenceCmd::Status));
        assert_eq!(r.domain, "vm1");
        assert_eq!(r.seqno, 12345);
        assert_eq!(r.callback(), Some("10.0.0.1:1229".parse().unwrap()));
        assert_eq!(verify(&raw, Some(KEY), HashType::Sha256), Ok(()));
        // A stronger hash than configured is fine; the key must match.
        assert_eq!(verify(&raw, Some(KEY), HashType::Sha1), Ok(()));
        assert_eq!(
            verify(&raw, Some(b"0123456789abcdeX"), HashType::Sha256),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn one_corrupted_byte_is_refused_anywhere() {
        let raw: [u8; REQ_LEN] = hex(VECTOR).try_into().unwrap();
        for i in (0..REQ_LEN).filter(|&i| i != 1) {
            let mut bad = raw;
            bad[i] ^= 0x01;
            assert!(
                verify(&bad, Some(KEY), HashType::Sha256).is_err(),
                "byte {i} corrupted but accepted"
            );
        }
    }

    #[test]
    fn weaker_hash_than_configured_is_refused() {
        let mut r = FenceRequest::new(FenceCmd::Off, "vm1", 1).unwrap();
        r.sign(KEY, HashType::Sha1, [9; 6]).unwrap();
        let raw = r.encode().unwrap();
        assert_eq!(
            verify(&raw, Some(KEY), HashType::Sha256),
            Err(VerifyError::WeakerHash {
                got: 1,
                min: HashType::Sha256
            })
        );
        assert_eq!(verify(&raw, Some(KEY), HashType::Sha1), Ok(()));
        let mut none = FenceRequest::new(FenceCmd::Off, "vm1", 1).unwrap();
        none.sign(KEY, HashType::None, [9; 6]).unwrap();
        let raw = none.encode().unwrap();
        assert_eq!(none.random, [0; 6]);
        assert!(verify(&raw, Some(KEY), HashType::Sha1).is_err());
        assert_eq!(verify(&raw, None, HashType::None), Ok(()));
    }

    #[test]
    fn sha512_and_unknown_hash() {
        let mut r = FenceRequest::new(FenceCmd::Reboot, "db", 7).unwrap();
        r.sign(KEY, HashType::Sha512, [1; 6]).unwrap();
        let raw = r.encode().unwrap();
        assert_eq!(verify(&raw, Some(KEY), HashType::Sha512), Ok(()));
        assert_eq!(
            verify(&raw, None, HashType::Sha256),
            Err(VerifyError::NoKey)
        );
        let mut odd = raw;
        odd[1] = 9;
        assert_eq!(
            verify(&odd, Some(KEY), HashType::None),
            Err(VerifyError::UnknownHash(9))
        );
    }

    #[test]
    fn challenge_response_vector() {
        let mut c = [0u8; 64];
        for (i, b) in c.iter_mut().enumerate() {
            *b = i as u8;
        }
        let r = response(HashType::Sha256, KEY, &c);
        let mut want = hex("74f1d96ec68a0a2508a507c6d0c1ed0daee1cf2a221624f501c4a8473fd382f2");
        want.resize(64, 0);
        assert_eq!(r.to_vec(), want);
        assert!(response_ok(HashType::Sha256, KEY, &c, &r));
        let mut bad = r;
        bad[63] = 1; // the padding counts too
        assert!(!response_ok(HashType::Sha256, KEY, &c, &bad));
    }

    #[test]
    fn malformed_requests_are_errors_not_panics() {
        assert_eq!(FenceRequest::parse(&[]), Err(WireError::Length(0)));
        assert_eq!(FenceRequest::parse(&[0; 175]), Err(WireError::Length(175)));
        assert_eq!(FenceRequest::parse(&[0; 177]), Err(WireError::Length(177)));
        let mut raw = [0u8; REQ_LEN];
        raw[OFF_DOMAIN..OFF_DOMAIN + 64].fill(b'a');
        assert_eq!(
            FenceRequest::parse(&raw),
            Err(WireError::UnterminatedDomain)
        );
        raw[OFF_DOMAIN..OFF_DOMAIN + 64].fill(0);
        raw[OFF_DOMAIN] = 0xff;
        assert_eq!(FenceRequest::parse(&raw), Err(WireError::DomainNotUtf8));
        raw[OFF_DOMAIN] = b'x';
        raw[0] = 200;
        let r = FenceRequest::parse(&raw).unwrap();
        assert_eq!(r.cmd(), None);
        assert_eq!(r.callback(), None, "family 0 has no callback");
        assert_eq!(
            FenceRequest::new(FenceCmd::Off, &"a".repeat(64), 0),
            Err(WireError::DomainTooLong)
        );
    }

    #[test]
    fn ipv6_callback_round_trips() {
        let mut r = FenceRequest::new(FenceCmd::Status, "v", 1).unwrap();
        r.set_callback("[fd00::5]:1229".parse().unwrap());
        let back = FenceRequest::parse(&r.encode().unwrap()).unwrap();
        assert_eq!(back.callback(), Some("[fd00::5]:1229".parse().unwrap()));
        assert_eq!(back.addrlen, 16);
    }

    #[test]
    fn host_state_records() {
        let h = HostState {
            domain: "vm1".into(),
            uuid: "8f1e0001-0000-4000-8000-000000000011".into(),
            state: 1,
        };
        let b = h.encode().unwrap();
        assert_eq!(&b[..4], b"vm1\0");
        assert_eq!(&b[64..68], b"8f1e");
        assert_eq!(b[128], 1);
        assert_eq!(b[129], 0);
        assert_eq!(HostState::parse(&b).unwrap(), Some(h));
        assert_eq!(HostState::parse(&HOST_STATE_END).unwrap(), None);
        let long = HostState {
            domain: "x".repeat(64),
            uuid: String::new(),
            state: 0,
        };
        assert!(long.encode().is_err());
    }

    #[test]
    fn key_digest_is_short_stable_and_separated() {
        let key = [7u8; 4096];
        let d = key_digest(&key);
        assert_eq!(d.len(), 16);
        assert!(d.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(d, key_digest(&key));
        assert_ne!(d, key_digest(&[8u8; 4096]));
        // Not a plain SHA-256 of the key (the prefix separates it).
        let plain: String = Sha256::digest(key)[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_ne!(d, plain);
    }
}
