//! Fencing: fence_xvm / fence_virt wire formats, authentication, the
//! listeners (multicast, tcp, vsock) with dedup and permission groups, and
//! the audit log writer. The CPG router lives in the engine's state task;
//! the listeners reach it through [`listeners::FenceService`]. The daemon
//! hands the listeners their settings ([`listeners::ListenerSettings`]);
//! nothing here reads the config.

pub mod audit;
pub mod auth;
pub mod guard;
pub mod history;
pub mod key;
pub mod listeners;
pub mod multicast;
pub mod names;
pub mod perm;
mod stream;
pub mod tcp;
pub mod vsock;
