//! Pacemaker's fencing history (`stonith_admin --history --output-as=xml`):
//! arbitrary text never panics, stays within the bounds, and a record's
//! time, when read, is what `parse_time` reads from its printed text.
#![no_main]

use fenceline_proto::pcmk_history::{self, MAX_FIELD, MAX_RECORDS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = pcmk_history::parse_time(text);
    if let Ok(records) = pcmk_history::parse_history(text) {
        assert!(records.len() <= MAX_RECORDS);
        for r in &records {
            for f in [&r.action, &r.target, &r.delegate, &r.origin, &r.completed] {
                assert!(f.len() <= MAX_FIELD);
            }
            assert!(!r.target.is_empty() && !r.action.is_empty());
            assert_eq!(r.completed_ms, pcmk_history::parse_time(&r.completed));
        }
    }
});
