//! fence_virtd's CPG format: parsing arbitrary bytes never panics, and
//! whatever parses re-encodes to a message that parses to the same value.
#![no_main]

use fenceline::engine::corosync::fence_agents;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = fence_agents::parse(data) {
        let bytes = match fence_agents::encode(&frame) {
            Ok(b) => b,
            Err(e) => panic!("a parsed frame must re-encode: {e} ({frame:?})"),
        };
        assert_eq!(bytes.len(), fence_agents::MESSAGE_LEN);
        match fence_agents::parse(&bytes) {
            Ok(again) => assert_eq!(again, frame),
            Err(e) => panic!("re-encoded frame must parse: {e}"),
        }
    }
});
