//! The TOML config: arbitrary text through `Config::parse`. Never panics;
//! every error names the file, and a line it names lies inside the text.
#![no_main]

use std::path::Path;

use fenceline_config::{Config, ConfigError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.matches('\n').count() + 1;
    match Config::parse(text, Path::new("/fuzz.toml")) {
        Ok(cfg) => {
            // What parsed validates again without its text.
            let _ = cfg.check(Path::new("/fuzz.toml"));
        }
        Err(e) => {
            assert!(e.to_string().starts_with("/fuzz.toml:"), "{e}");
            match e {
                ConfigError::Parse { line, .. } => {
                    assert!((1..=lines).contains(&line), "line {line} of {lines}")
                }
                ConfigError::Invalid {
                    line: Some(line), ..
                } => assert!((1..=lines).contains(&line), "line {line} of {lines}"),
                _ => {}
            }
        }
    }
});
