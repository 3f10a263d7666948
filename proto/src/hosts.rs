//! Requester names (`[listeners] requester_names`): a hosts(5) file read as
//! address → name, so a fence event can say `multicast:guest1
//! (10.213.37.101)` instead of a bare address. The text is untrusted:
//! bounded input ([`MAX_BYTES`]), bounded entries ([`MAX_ENTRIES`]), names
//! restricted to hostname characters and [`MAX_NAME_LEN`], never a panic.
//! The daemon reads the file at start and on SIGHUP; the fence path only
//! looks addresses up in memory (no DNS, nothing that blocks).

use std::collections::HashMap;
use std::net::IpAddr;

/// Input beyond this many bytes is ignored (the caller reads at most this).
pub const MAX_BYTES: usize = 1 << 20;
/// Addresses kept; later lines are counted as skipped.
pub const MAX_ENTRIES: usize = 4096;
/// Longest name kept (a DNS name's limit).
pub const MAX_NAME_LEN: usize = 253;

/// Address → first name, as parsed; the first line naming an address wins
/// (as in glibc's files backend).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostNames {
    names: HashMap<IpAddr, String>,
    /// Lines with an address that were not used: a bad name, a bad
    /// address, the entry limit. Comments, blank lines and repeats of an
    /// address already named are not counted.
    pub skipped: usize,
    /// The input was longer than [`MAX_BYTES`].
    pub truncated: bool,
}

/// A name hosts(5) allows: letters, digits, `-`, `.`, `_` (seen in the
/// wild), not starting with `-` or `.`.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && !s.starts_with(['-', '.'])
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

impl HostNames {
    /// Parses hosts(5) text: `ADDRESS NAME [ALIAS...]`, `#` comments.
    /// Never fails; what it cannot use is counted in `skipped`.
    pub fn parse(input: &[u8]) -> HostNames {
        let truncated = input.len() > MAX_BYTES;
        let input = &input[..input.len().min(MAX_BYTES)];
        let mut out = HostNames {
            truncated,
            ..HostNames::default()
        };
        for raw in input.split(|&b| b == b'\n') {
            let raw = raw.split(|&b| b == b'#').next().unwrap_or_default();
            let Ok(line) = std::str::from_utf8(raw) else {
                out.skipped += 1;
                continue;
            };
            let mut fields = line.split_ascii_whitespace();
            let Some(addr) = fields.next() else { continue };
            let (Ok(ip), Some(name)) = (addr.parse::<IpAddr>(), fields.next()) else {
                out.skipped += 1;
                continue;
            };
            let ip = ip.to_canonical();
            if out.names.contains_key(&ip) {
                continue;
            }
            if !valid_name(name) || out.names.len() >= MAX_ENTRIES {
                out.skipped += 1;
                continue;
            }
            out.names.insert(ip, name.to_string());
        }
        out
    }

    /// The name of `ip` (v4-mapped v6 as v4).
    pub fn name(&self, ip: IpAddr) -> Option<&str> {
        self.names.get(&ip.to_canonical()).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// A fence request's source label: `kind:name (ip)` when `ip` has a
    /// name, else `kind:ip`.
    pub fn label(&self, kind: &str, ip: IpAddr) -> String {
        let ip = ip.to_canonical();
        match self.name(ip) {
            Some(n) => format!("{kind}:{n} ({ip})"),
            None => format!("{kind}:{ip}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn names_addresses_like_the_files_backend() {
        let h = HostNames::parse(
            b"# lab guests\n127.0.0.1\tlocalhost\n\n10.213.37.101 guest1 g1   # first\n\
              10.213.37.102\tguest2.lab guest2\n10.213.37.101 other\nfe80::1%eth0 x\n\
              ::ffff:10.0.0.9 mapped\n2001:db8::5 v6host\n",
        );
        assert_eq!(
            h.name(ip("10.213.37.101")),
            Some("guest1"),
            "first line wins"
        );
        assert_eq!(h.name(ip("10.213.37.102")), Some("guest2.lab"));
        assert_eq!(h.name(ip("10.0.0.9")), Some("mapped"), "v4-mapped as v4");
        assert_eq!(h.name(ip("::ffff:10.213.37.102")), Some("guest2.lab"));
        assert_eq!(h.name(ip("2001:db8::5")), Some("v6host"));
        assert_eq!(h.name(ip("10.213.37.103")), None);
        assert_eq!(h.len(), 5);
        assert_eq!(h.skipped, 1, "the scoped address");
        assert_eq!(
            h.label("multicast", ip("10.213.37.101")),
            "multicast:guest1 (10.213.37.101)"
        );
        assert_eq!(h.label("tcp", ip("10.9.9.9")), "tcp:10.9.9.9");
    }

    #[test]
    fn hostile_input_is_bounded_and_never_named_with_controls() {
        let h = HostNames::parse(
            b"10.0.0.1 \x1b[2Jevil\n10.0.0.2 bad\xffname\n10.0.0.3 -dash\n10.0.0.4\n\
              not-an-ip name\n10.0.0.5 \xe2\x80\xaename\n",
        );
        assert!(h.is_empty(), "{h:?}");
        assert_eq!(h.skipped, 6);
        let long = format!("10.0.0.1 {}\n", "a".repeat(MAX_NAME_LEN + 1));
        assert!(HostNames::parse(long.as_bytes()).is_empty());
        // Entry limit.
        let mut many = String::new();
        for i in 0..MAX_ENTRIES + 10 {
            many.push_str(&format!(
                "10.{}.{}.{} h{i}\n",
                i >> 16,
                (i >> 8) & 255,
                i & 255
            ));
        }
        let h = HostNames::parse(many.as_bytes());
        assert_eq!(h.len(), MAX_ENTRIES);
        assert_eq!(h.skipped, 10);
        // Size limit: what lies beyond MAX_BYTES is not read.
        let mut big = vec![b'#'; MAX_BYTES];
        big.extend_from_slice(b"\n10.0.0.1 late\n");
        let h = HostNames::parse(&big);
        assert!(h.truncated && h.is_empty());
    }

    /// The fuzz target's invariants on pseudo-random mixes of hosts-file
    /// tokens and raw bytes (the fuzz smoke stage goes further).
    #[test]
    fn random_mixes_keep_the_invariants() {
        const TOKENS: &[&[u8]] = &[
            b"10.0.0.1",
            b"::1",
            b"::ffff:10.0.0.1",
            b"fe80::1",
            b"g1",
            b"a.b-c_d",
            b" ",
            b"\t",
            b"\n",
            b"#",
            b"\x1b",
            b"\xff",
            b"\xe2\x80\xae",
            b"-x",
            b"999.1.1.1",
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..3000 {
            let mut input = Vec::new();
            for _ in 0..next() % 40 {
                let r = next();
                if r % 5 == 0 {
                    input.push((r >> 8) as u8);
                } else {
                    input.extend_from_slice(TOKENS[(r >> 8) as usize % TOKENS.len()]);
                }
            }
            let h = HostNames::parse(&input);
            assert!(h.len() <= MAX_ENTRIES);
            for n in h.names.values() {
                assert!(valid_name(n), "{n:?} from {input:?}");
            }
            for (ip, n) in &h.names {
                assert_eq!(h.label("tcp", *ip), format!("tcp:{n} ({ip})"));
            }
        }
    }
}
