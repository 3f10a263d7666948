//! fenceline's own CPG format: parsing arbitrary bytes never panics, and a
//! parsed message survives encode/parse and chunking unchanged.
#![no_main]

use fenceline_proto::messages::OwnMessage;
use fenceline_proto::own;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = own::parse(data) else {
        return;
    };
    let bytes = match own::encode(&msg) {
        Ok(b) => b,
        Err(e) => panic!("a parsed message must re-encode: {e}"),
    };
    match own::parse(&bytes) {
        Ok(again) => assert_eq!(again, msg),
        Err(e) => panic!("re-encoded message must parse: {e}"),
    }
    // Chunking with a small limit keeps every entry, in order.
    if let Ok(parts) = own::encode_chunked(&msg, 512) {
        let mut vms = Vec::new();
        for p in &parts {
            assert!(p.len() <= 512);
            match own::parse(p) {
                Ok(OwnMessage::Vms { vms: v }) | Ok(OwnMessage::Gone { vms: v }) => vms.extend(v),
                Ok(other) => assert_eq!(parts.len(), 1, "{other:?}"),
                Err(e) => panic!("chunk must parse: {e}"),
            }
        }
        if let OwnMessage::Vms { vms: all } | OwnMessage::Gone { vms: all } = &msg {
            assert_eq!(&vms, all);
        }
    }
});
