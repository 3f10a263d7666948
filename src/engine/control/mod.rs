//! Control sockets: a read-write socket (0600) and a read-only socket (0666)
//! speaking one JSON object per line ([`fenceline_proto::api::Request`] in,
//! [`fenceline_proto::api::Reply`] out). The read-only socket refuses every
//! mutating request here, in the daemon; the console hiding keys is only a
//! convenience on top.
//!
//! - `framing`: bounded JSON lines, shared by both sides.
//! - [`server`]: the daemon's side.
//! - [`client`]: the CLI's and the console's side (never imports `server`).

pub mod client;
mod framing;
pub mod server;
