//! Control sockets: a read-write socket (0600, peers checked: root or
//! `admin_group`) and a read-only socket (0660, group `readonly_group`)
//! speaking one JSON object per line ([`fenceline_proto::api::Request`] in,
//! [`fenceline_proto::api::Reply`] out). The read-only socket refuses every
//! mutating request here, in the daemon; the console hiding keys is only a
//! convenience on top.
//!
//! - `framing`: bounded JSON lines, shared by both sides.
//! - [`server`]: the daemon's side.
//! - [`client`]: the CLI's and the console's side (never imports `server`).

//! - [`access`]: who may connect, and how the socket files are created.
//! - `streams`: streams per uid, shared snapshot encodings, refusals.

pub mod access;
pub mod client;
mod framing;
pub mod server;
mod streams;
