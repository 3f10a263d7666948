//! `fenceline check`: is this host ready to fence? A client of the daemon's
//! read-only socket, never a second daemon. `gather` and `selftest` look at
//! the host; `eval` judges the facts (pure, unit-tested); [`run`] prints
//! one summary line, then the details, and returns the Nagios/Icinga code.

use std::path::PathBuf;
use std::time::Duration;

use fenceline_config::Config;
use fenceline_proto::api::now_millis;

use crate::engine::fence::key::Private;

pub mod eval;
pub mod gather;
mod selftest;

pub use eval::{Facts, Level, Report};

/// Exit codes (Nagios/Icinga plugin API).
pub const OK: u8 = Level::Ok as u8;
pub const WARNING: u8 = Level::Warning as u8;
pub const CRITICAL: u8 = Level::Critical as u8;
pub const UNKNOWN: u8 = Level::Unknown as u8;

pub struct CheckOptions {
    pub config: Config,
    /// The file the config came from (None: built-in defaults).
    pub config_path: Option<PathBuf>,
    /// The control socket (default: the config's read-only socket).
    pub socket: Option<PathBuf>,
    /// Limit of each network step.
    pub timeout: Duration,
}

/// Gathers every fact about this host.
pub fn gather(opts: &CheckOptions) -> Result<Facts, String> {
    let cfg = &opts.config;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    let socket = opts
        .socket
        .clone()
        .unwrap_or_else(|| cfg.control.readonly_socket.clone());
    let ((snapshot, events), self_test) = rt.block_on(async {
        tokio::join!(
            gather::daemon(&socket, opts.timeout),
            selftest::run(cfg, opts.timeout)
        )
    });
    Ok(Facts {
        now: now_millis(),
        config: opts
            .config_path
            .as_deref()
            .map(|p| gather::file(p, Private::Config)),
        uris: cfg.libvirt.uris.clone(),
        keys: gather::keys(cfg),
        snapshot,
        events,
        listeners: gather::listeners(cfg),
        self_test,
    })
}

/// `fenceline check`: prints the report, returns the exit code.
pub fn run(opts: &CheckOptions) -> u8 {
    match gather(opts) {
        Ok(facts) => {
            let report = eval::evaluate(&facts);
            print!("{}", report.render());
            report.level() as u8
        }
        Err(e) => {
            println!("FENCELINE UNKNOWN - {e}");
            UNKNOWN
        }
    }
}
