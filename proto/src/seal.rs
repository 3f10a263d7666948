//! The authenticated envelope of fenceline's own-group messages.
//!
//! corosync lets every process with a CPG grant (Pacemaker gives one to the
//! `haclient` group) join any group and send anything. With a cluster key
//! configured (`[corosync] cluster_key`, the same file on every host), each
//! own-group message travels sealed:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0  | 4  | magic `FNLA` |
//! | 4  | 1  | version (1) |
//! | 5  | 4  | sender nodeid, little-endian |
//! | 9  | 4  | sender pid, little-endian |
//! | 13 | 32 | HMAC-SHA256(key, context ‖ group ‖ 0 ‖ bytes 0..13 ‖ payload) |
//! | 45 | …  | the own-group message ([`crate::own`]) |
//!
//! A receiver opens it only when the tag verifies *and* the nodeid and pid
//! it names are those corosync reports for the sender. So a process without
//! the key cannot forge a message, and one that has captured a sealed
//! message cannot replay it from another process or node. The group name
//! is in the tag, so a message cannot be moved to another group. Pure.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The envelope's magic.
pub const MAGIC: [u8; 4] = *b"FNLA";
/// The envelope version this build writes and reads.
pub const VERSION: u8 = 1;
/// Bytes the envelope adds to a message.
pub const OVERHEAD: usize = HEADER + TAG;
/// The shortest cluster key accepted (bytes).
pub const MIN_KEY_LEN: usize = 32;

const HEADER: usize = 13;
const TAG: usize = 32;
const CONTEXT: &[u8] = b"fenceline own-group v1\0";

/// Why a message was not opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("not sealed (sent without the cluster key)")]
    NotSealed,
    #[error("sealed message truncated ({0} bytes)")]
    Truncated(usize),
    #[error("unsupported envelope version {0}")]
    Version(u8),
    #[error("sealed for node {node} pid {pid}, but sent by another process")]
    Sender { node: u32, pid: u32 },
    #[error("wrong tag (another cluster key, or altered)")]
    BadTag,
}

fn mac(key: &[u8], group: &str, header: &[u8], payload: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    m.update(CONTEXT);
    m.update(group.as_bytes());
    m.update(&[0]);
    m.update(header);
    m.update(payload);
    m
}

/// Whether `data` starts like a sealed message.
pub fn is_sealed(data: &[u8]) -> bool {
    data.starts_with(&MAGIC)
}

/// Seals `payload` as sent by `nodeid`/`pid` on `group`.
pub fn seal(key: &[u8], group: &str, nodeid: u32, pid: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(OVERHEAD + payload.len());
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&nodeid.to_le_bytes());
    out.extend_from_slice(&pid.to_le_bytes());
    let tag = mac(key, group, &out, payload).finalize().into_bytes();
    out.extend_from_slice(&tag);
    out.extend_from_slice(payload);
    out
}

fn header(data: &[u8]) -> Result<(u32, u32), SealError> {
    if !is_sealed(data) {
        return Err(SealError::NotSealed);
    }
    if data.len() < OVERHEAD {
        return Err(SealError::Truncated(data.len()));
    }
    if data[4] != VERSION {
        return Err(SealError::Version(data[4]));
    }
    let le = |i: usize| u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
    Ok((le(5), le(9)))
}

/// Opens a message corosync delivered from `from`/`pid` on `group`: the
/// payload, or why it must be dropped. The tag is compared in constant time.
pub fn open<'a>(
    key: &[u8],
    group: &str,
    from: u32,
    pid: u32,
    data: &'a [u8],
) -> Result<&'a [u8], SealError> {
    let (node, sealed_pid) = header(data)?;
    let payload = &data[OVERHEAD..];
    mac(key, group, &data[..HEADER], payload)
        .verify_slice(&data[HEADER..OVERHEAD])
        .map_err(|_| SealError::BadTag)?;
    if (node, sealed_pid) != (from, pid) {
        return Err(SealError::Sender {
            node,
            pid: sealed_pid,
        });
    }
    Ok(payload)
}

/// The payload of a sealed message, unverified: for a daemon that has no
/// cluster key (it trusts every CPG member anyway) in a cluster that is
/// being moved to one.
pub fn unverified(data: &[u8]) -> Result<&[u8], SealError> {
    header(data).map(|_| &data[OVERHEAD..])
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = &[7; 32];

    #[test]
    fn a_sealed_message_opens_only_for_its_sender_group_and_key() {
        let m = seal(KEY, "fenceline", 2, 4242, b"FNLN payload");
        assert_eq!(m.len(), OVERHEAD + 12);
        assert_eq!(
            open(KEY, "fenceline", 2, 4242, &m),
            Ok(&b"FNLN payload"[..])
        );
        assert_eq!(unverified(&m), Ok(&b"FNLN payload"[..]));
        // Replayed by another process or node.
        assert_eq!(
            open(KEY, "fenceline", 2, 999, &m),
            Err(SealError::Sender { node: 2, pid: 4242 })
        );
        assert!(matches!(
            open(KEY, "fenceline", 3, 4242, &m),
            Err(SealError::Sender { .. })
        ));
        // Another key, another group, one flipped bit anywhere.
        assert_eq!(
            open(&[8; 32], "fenceline", 2, 4242, &m),
            Err(SealError::BadTag)
        );
        assert_eq!(open(KEY, "other", 2, 4242, &m), Err(SealError::BadTag));
        for i in 5..m.len() {
            let mut bad = m.clone();
            bad[i] ^= 1;
            assert!(open(KEY, "fenceline", 2, 4242, &bad).is_err(), "byte {i}");
        }
    }

    #[test]
    fn unsealed_short_and_future_messages_are_refused() {
        assert_eq!(
            open(KEY, "g", 1, 1, b"FNLN\x01rest"),
            Err(SealError::NotSealed)
        );
        assert_eq!(
            open(KEY, "g", 1, 1, b"FNLA\x01"),
            Err(SealError::Truncated(5))
        );
        let mut m = seal(KEY, "g", 1, 1, b"");
        m[4] = 2;
        assert_eq!(open(KEY, "g", 1, 1, &m), Err(SealError::Version(2)));
        assert!(unverified(b"").is_err());
    }
}
