//! fence_virtd's `/etc/fence_virt.conf`: a parser for its grammar and the
//! mapping onto fenceline's [`Config`], so `fenceline daemon
//! --fence-virt-conf /etc/fence_virt.conf` runs what fence_virtd ran.
//!
//! Grammar (fence-agents `config/config.l`, `config.y`):
//! - identifier: any run of characters but space, tab, newline, `{`, `}`,
//!   `;`, `=` and `"`; a token that starts with `#` is a comment to the end
//!   of the line;
//! - value: `"…"` with at least one character, no `"` inside, no escapes; it
//!   may span lines;
//! - statements: `ID = "VAL";` (attribute), `ID { … }` and `ID = "VAL" { … }`
//!   (blocks, which may be empty); the file needs at least one statement.
//!
//! Keys compare ignoring ASCII case; of duplicate keys or blocks the last
//! one wins (fence_virtd prepends, then takes the first match). Everything
//! fence_virtd does not read is an error here, naming the key path and line,
//! so a typo does not silently change what runs.
//!
//! Rooms: `syntax` (the grammar: text to a tree of [`Node`]s, pure, no
//! fenceline types), `import` (the tree to fenceline's settings, with notes
//! about what is accepted but unused) and `apply` (the imported settings
//! into a [`Config`](crate::Config), and printed as fenceline TOML).

mod apply;
mod import;
#[cfg(test)]
mod tests;

pub use apply::daemon_config;
pub use fenceline_proto::fence_virt_conf::{FvcError, Node, Pos, parse};
pub use import::{Imported, import, import_nodes, in_file, load};
