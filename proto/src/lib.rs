//! fenceline's pure layer. Everything here is data, parsing, encoding and
//! pure helpers: no sockets, no files, no processes, no logging, no async
//! runtime. The daemon's drivers, the console, the hook binary and the fuzz
//! targets all build on it; none of them needs libvirt or corosync to use it.
//! See ARCHITECTURE.md ("The protocol layer").

pub mod api;
pub mod backoff;
pub mod cidr;
pub mod cpg;
pub mod display;
pub mod domxml;
pub mod fence_virt_conf;
pub mod fence_xvm;
pub mod framing;
pub mod handshake;
pub mod hook;
pub mod hosts;
pub mod messages;
pub mod own;
pub mod paths;
pub mod pcmk_history;
pub mod ratelimit;
pub mod readiness;
pub mod replay;
pub mod seal;
