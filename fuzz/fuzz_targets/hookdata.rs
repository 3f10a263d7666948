//! The network hook's input: arbitrary bytes as `<hookData>` (and as a
//! standalone `<networkport>`) never panic, stay within the field caps, and
//! the report built from them always fits one datagram and decodes back.
#![no_main]

use fenceline_proto::domxml::{self, MAX_FIELD};
use fenceline_proto::hook::data::{self, HookArgs};
use fenceline_proto::hook::{HookReport, MAX_DATAGRAM};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = data::parse(data, "net") {
        for f in [&d.network.name, &d.network.uuid, &d.network.bridge]
            .into_iter()
            .flatten()
        {
            assert!(f.len() <= MAX_FIELD);
        }
        assert!(d.domain_ports.len() <= 64);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = domxml::parse_port(text);
    }
    let args = HookArgs::parse(&["net", "port-created", "begin", "-"]).unwrap();
    let r = HookReport::build(&args, Ok(data), 1);
    let bytes = r.encode();
    assert!(bytes.len() <= MAX_DATAGRAM, "{} bytes", bytes.len());
    match HookReport::decode(&bytes) {
        Ok(back) => assert_eq!(back, r),
        Err(e) => panic!("an encoded report must decode: {e}"),
    }
});
