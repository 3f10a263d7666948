//! The hook's argv (`NAME OP SUBOP EXTRA` from libvirt): arbitrary string
//! vectors through `HookArgs::parse`. Never panics; what parses holds the
//! arguments it was given, each cut to `MAX_FIELD` bytes at a character
//! boundary, missing ones read as `-`.
#![no_main]

use fenceline_proto::domxml::MAX_FIELD;
use fenceline_proto::hook::data::HookArgs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // NUL separates arguments, as in /proc/<pid>/cmdline.
    let text = String::from_utf8_lossy(data);
    let argv: Vec<&str> = if text.is_empty() {
        Vec::new()
    } else {
        text.split('\0').collect()
    };
    if let Ok(a) = HookArgs::parse(&argv) {
        assert!((2..=4).contains(&argv.len()));
        assert!(!a.network.is_empty() && !a.op.is_empty());
        for (i, f) in [&a.network, &a.op, &a.subop, &a.extra]
            .into_iter()
            .enumerate()
        {
            assert!(f.len() <= MAX_FIELD, "{} bytes", f.len());
            match argv.get(i) {
                Some(arg) => assert!(
                    arg.starts_with(f.as_str()),
                    "{f:?} is not a prefix of {arg:?}"
                ),
                None => assert_eq!(f, "-"),
            }
        }
    }
});
