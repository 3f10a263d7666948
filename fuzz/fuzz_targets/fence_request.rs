//! fence_xvm's 176-byte request: parsing and verifying arbitrary bytes never
//! panics; a parsed request re-encodes to the same bytes.
#![no_main]

use fenceline_proto::fence_xvm::{FenceRequest, HashType, REQ_LEN, verify};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = FenceRequest::parse(data) else {
        return;
    };
    let raw: [u8; REQ_LEN] = match data.try_into() {
        Ok(r) => r,
        Err(_) => panic!("parse accepted a request that is not 176 bytes"),
    };
    for min in [HashType::None, HashType::Sha256] {
        let _ = verify(&raw, Some(b"key"), min);
        let _ = verify(&raw, None, min);
    }
    let _ = req.callback();
    // Bytes after the domain's NUL are not kept, so compare field by field.
    let again = FenceRequest::parse(&req.encode().expect("a parsed request re-encodes"))
        .expect("a re-encoded request parses");
    assert_eq!(again, req);
});
