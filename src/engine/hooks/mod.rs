//! libvirt network hook events: the daemon's side.
//!
//! libvirtd runs `fenceline-hook` (or `fenceline hook`), which sends one
//! [`fenceline_proto::hook::HookReport`] datagram per call; [`intake`]
//! receives them on the hook socket and feeds them to the model as
//! [`crate::engine::model::Input::Hook`]. The report format and the parser
//! of libvirt's `<hookData>` live in the protocol layer
//! (`fenceline_proto::hook`).

pub mod intake;
