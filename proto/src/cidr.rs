//! IP networks written as CIDR strings (`10.0.0.0/24`, `fd00::/64`, or a
//! bare address meaning one host): parsed once, then matched against
//! addresses. IPv4-mapped IPv6 addresses match as the IPv4 address they
//! carry. Pure.

use std::net::IpAddr;

/// One network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `addr/prefix` or a bare address (a host route). Host bits
    /// must be zero, so a typo like `10.0.0.1/8` is an error, not a surprise.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not an IP network (e.g. 10.0.0.0/24)"))?;
        let net = net.to_canonical();
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}`: the prefix length must be 0 to {max}"))?,
        };
        let c = Cidr { net, prefix };
        if bits(net) & !c.mask() != 0 {
            return Err(format!("`{s}` has host bits set"));
        }
        Ok(c)
    }

    fn mask(&self) -> u128 {
        let width = if self.net.is_ipv4() { 32 } else { 128 };
        if self.prefix == 0 {
            0
        } else {
            let ones = u128::MAX << (width - u32::from(self.prefix));
            if width == 32 {
                ones & 0xffff_ffff
            } else {
                ones
            }
        }
    }

    /// Whether `ip` is inside (an IPv4-mapped IPv6 address as its IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.net.is_ipv4() && bits(ip) & self.mask() == bits(self.net)
    }

    /// Whether every address of the network is loopback.
    pub fn is_loopback(&self) -> bool {
        self.net.is_loopback() && self.prefix >= if self.net.is_ipv4() { 8 } else { 128 }
    }

    /// Whether every address of the network is link-local (169.254/16, fe80::/10).
    pub fn is_link_local(&self) -> bool {
        match self.net {
            IpAddr::V4(v4) => v4.is_link_local() && self.prefix >= 16,
            IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80 && self.prefix >= 10,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_matches() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains(ip("10.1.2.3")));
        assert!(c.contains(ip("::ffff:10.1.2.3")), "v4-mapped matches as v4");
        assert!(!c.contains(ip("10.2.0.1")));
        assert!(!c.contains(ip("fd00::1")));
        let h = Cidr::parse("192.168.1.5").unwrap();
        assert_eq!(h.to_string(), "192.168.1.5/32");
        assert!(h.contains(ip("192.168.1.5")) && !h.contains(ip("192.168.1.6")));
        let v6 = Cidr::parse("fd00:1::/64").unwrap();
        assert!(v6.contains(ip("fd00:1::9")) && !v6.contains(ip("fd00:2::9")));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains(ip("1.2.3.4")) && !all.contains(ip("::1")));
        assert!(Cidr::parse("::/0").unwrap().contains(ip("fe80::1")));
    }

    #[test]
    fn refuses_bad_networks() {
        for bad in [
            "",
            "10.0.0.0/33",
            "10.0.0.1/8",
            "x/8",
            "fd00::/129",
            "10.0.0.0/-1",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn loopback_and_link_local_networks() {
        assert!(Cidr::parse("127.0.0.0/8").unwrap().is_loopback());
        assert!(Cidr::parse("::1").unwrap().is_loopback());
        assert!(!Cidr::parse("0.0.0.0/0").unwrap().is_loopback());
        assert!(Cidr::parse("169.254.0.0/16").unwrap().is_link_local());
        assert!(Cidr::parse("fe80::/10").unwrap().is_link_local());
        assert!(!Cidr::parse("::/0").unwrap().is_link_local());
    }
}
