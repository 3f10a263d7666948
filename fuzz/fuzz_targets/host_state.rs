//! fence_virtd host-state records (`host_state_t`, 130 bytes): arbitrary
//! records through `HostState::parse`. Never panics; a record that parses
//! encodes back to a record that parses to the same value, except a name
//! that fills its whole 64-byte field with no NUL: parse takes it, encode
//! refuses it (fenceline never sends an unterminated name).
#![no_main]

use fenceline_proto::fence_xvm::{HOST_STATE_LEN, HostState};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for chunk in data.chunks_exact(HOST_STATE_LEN) {
        let rec: &[u8; HOST_STATE_LEN] = chunk.try_into().expect("exact chunk");
        let Ok(Some(h)) = HostState::parse(rec) else {
            continue;
        };
        match h.encode() {
            Ok(again) => assert_eq!(HostState::parse(&again), Ok(Some(h))),
            Err(_) => assert!(h.domain.len() == 64 || h.uuid.len() == 64, "{h:?}"),
        }
    }
});
