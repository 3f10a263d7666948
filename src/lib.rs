//! fenceline: a cluster console and fencing daemon for libvirt hosts in a
//! corosync cluster. See ARCHITECTURE.md for the module map and invariants.

pub mod check;
pub mod cli;

pub mod daemon;
#[cfg(feature = "lab")]
pub mod demo;
pub mod engine;

pub mod hook;
pub mod logging;
pub mod notify;
pub mod reload;
#[cfg(feature = "lab")]
pub mod sandbox;
pub mod setup;
pub mod ui;
