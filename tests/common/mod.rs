//! Helpers shared by the integration tests: each test file says `mod common;`
//! and uses what it needs (hence `dead_code` is allowed here). The helpers
//! that drive a sandbox lab are in `lab` and need the `lab` feature.
#![allow(dead_code)]

#[cfg(feature = "lab")]
mod lab;

// Not every test file uses the lab helpers.
#[cfg(feature = "lab")]
#[allow(unused_imports)]
pub use lab::*;

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The fenceline binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_fenceline");

/// [`BIN`] as a path.
pub fn bin() -> PathBuf {
    PathBuf::from(BIN)
}

/// Runs `argv` with stdin from /dev/null; a non-zero exit is an error
/// carrying its stderr.
pub fn run_ok(argv: &[&str]) -> Result<(), String> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{argv:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{argv:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
