//! Fencing: fence_xvm / fence_virt wire formats and authentication. The
//! listeners and the CPG router build on these (see the fencing issue).

pub mod wire;
