//! Control sockets: a read-write socket (0600) and a read-only socket (0666)
//! speaking one JSON object per line ([`fenceline_proto::api::Request`] in,
//! [`fenceline_proto::api::Reply`] out). The read-only socket refuses every
//! mutating request here, in the daemon; the console hiding keys is only a
//! convenience on top.

pub mod client;
pub mod server;

/// Longest request line the server accepts.
pub const MAX_REQUEST_LINE: usize = 64 * 1024;
/// Longest reply line the client accepts (a 10,000-domain snapshot is ~3 MiB).
pub const MAX_REPLY_LINE: usize = 64 * 1024 * 1024;
