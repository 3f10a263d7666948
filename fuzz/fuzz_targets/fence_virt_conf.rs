//! fence_virt.conf: parsing and mapping arbitrary text never panics; errors
//! point inside the text; an accepted config prints as fenceline TOML that
//! parses back to the very same settings.
#![no_main]

use std::path::Path;

use fenceline_config::Config;
use fenceline_config::fence_virt_conf::{import_nodes, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.matches('\n').count() + 1;
    let nodes = match parse(text) {
        Ok(n) => n,
        Err(e) => {
            assert!(e.line >= 1 && e.line <= lines && e.column >= 1, "{e}");
            return;
        }
    };
    assert!(!nodes.is_empty(), "a parsed file has a statement");
    let Ok(imported) = import_nodes(&nodes) else {
        return;
    };
    let path = Path::new("/etc/fence_virt.conf");
    let Ok(applied) = imported.apply(Config::default(), None, path) else {
        return;
    };
    let toml_text = imported.to_toml();
    match Config::parse(&toml_text, Path::new("imported.toml")) {
        Ok(c) => assert_eq!(c, applied, "printed TOML differs:\n{toml_text}"),
        Err(e) => panic!("printed TOML does not parse: {e}\n{toml_text}"),
    }
});
