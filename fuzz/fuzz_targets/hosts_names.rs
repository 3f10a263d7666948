//! `[listeners] requester_names`: any bytes parse without a panic into at
//! most `MAX_ENTRIES` names made of hostname characters only (a name is
//! printed in fence events and the audit log), and every label is
//! `kind:name (ip)` or `kind:ip`.
#![no_main]

use std::net::IpAddr;

use fenceline_proto::hosts::{HostNames, MAX_ENTRIES, MAX_NAME_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let h = HostNames::parse(data);
    assert!(h.len() <= MAX_ENTRIES);
    for line in data.split(|&b| b == b'\n') {
        let Some(addr) = std::str::from_utf8(line)
            .ok()
            .and_then(|l| l.split_ascii_whitespace().next())
            .and_then(|a| a.parse::<IpAddr>().ok())
        else {
            continue;
        };
        if let Some(n) = h.name(addr) {
            assert!(!n.is_empty() && n.len() <= MAX_NAME_LEN);
            assert!(
                n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')),
                "{n:?}"
            );
            let ip = addr.to_canonical();
            assert_eq!(h.label("tcp", addr), format!("tcp:{n} ({ip})"));
        } else {
            assert_eq!(h.label("tcp", addr), format!("tcp:{}", addr.to_canonical()));
        }
    }
});
