//! fence_virtd's CPG format: parsing arbitrary bytes never panics, and
//! whatever parses re-encodes to a message that parses to the same value.
#![no_main]

use fenceline_proto::cpg;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = cpg::parse(data) {
        let bytes = match cpg::encode(&frame) {
            Ok(b) => b,
            Err(e) => panic!("a parsed frame must re-encode: {e} ({frame:?})"),
        };
        assert_eq!(bytes.len(), cpg::MESSAGE_LEN);
        match cpg::parse(&bytes) {
            Ok(again) => assert_eq!(again, frame),
            Err(e) => panic!("re-encoded frame must parse: {e}"),
        }
    }
});
