//! The engine: one task owns the [`model::Cluster`] and applies [`model::Input`]s
//! that drivers send; everyone else gets immutable snapshots and a bounded
//! event stream through [`EngineHandle`].
//!
//! Drivers (corosync, libvirt, control) depend on the model and on this
//! module's channel types, never on each other.

pub mod control;
pub mod corosync;
pub mod fence;
pub mod hooks;
pub mod libvirt;
pub mod model;
pub mod pacemaker;

mod handle;
mod state;

pub use handle::{EngineHandle, FenceAnswer, FenceCall, InputTx};
pub use state::{
    AuditSink, EffectRoutes, FENCE_ACT_CAPACITY, IntentSink, spawn_state, spawn_state_with,
};

/// Capacity of the driver → engine input channel.
pub const INPUT_CAPACITY: usize = 4096;
/// Capacity of the engine → corosync effect channel.
pub const EFFECT_CAPACITY: usize = 1024;
/// Capacity of the live event broadcast (per subscriber lag bound).
pub const EVENT_CAPACITY: usize = 4096;
