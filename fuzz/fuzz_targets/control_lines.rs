//! The control socket's input: arbitrary bytes through the line framing in
//! arbitrary chunk sizes, then each line as a JSON `Request`. Never panics,
//! never holds more than the limit, and a request that parses prints back to
//! JSON that parses to the same request.
#![no_main]

use fenceline_proto::api::{MAX_REQUEST_LINE, Request};
use fenceline_proto::framing::{LineAssembler, encode_line};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, bytes)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(split).max(1);
    let mut lines = LineAssembler::new(MAX_REQUEST_LINE);
    let mut got = Vec::new();
    for mut part in bytes.chunks(chunk) {
        while !part.is_empty() {
            match lines.push(part) {
                Ok((n, line)) => {
                    assert!(n > 0 && n <= part.len());
                    part = &part[n..];
                    got.extend(line);
                }
                Err(_) => return,
            }
        }
    }
    got.extend(lines.finish().ok().flatten());
    for line in got {
        assert!(line.len() <= MAX_REQUEST_LINE);
        if let Ok(req) = serde_json::from_str::<Request>(&line) {
            let again = encode_line(&req).expect("a request encodes");
            let back: Request = serde_json::from_slice(&again[..again.len() - 1]).unwrap();
            assert_eq!(back, req);
        }
    }
});
