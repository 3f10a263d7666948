//! Pure parser of what libvirt hands the network hook: the argv
//! (`NAME OP SUBOP EXTRA`) and the `<hookData>` XML on stdin.
//!
//! Input is hostile until proven otherwise: it is bounded ([`MAX_INPUT`]),
//! must be UTF-8, DTDs are refused, the node count is limited, every text
//! field is capped ([`MAX_FIELD`]), and nothing here panics on any input
//! (see the fuzz target `fuzz/fuzz_targets/hookdata.rs`).
//!
//! What is read (libvirt 9.0 output, see `testdata/`):
//! - `<network>`: `<name>`, `<uuid>`, `<bridge name=..>`, `connections='N'`;
//! - `<networkport>` (port-created / port-deleted, libvirt ≥ 5.5): `<uuid>`,
//!   `<owner><name/><uuid/></owner>`, `<mac address=..>`, `<plug type=..>`;
//! - `<domain>` (plugged / unplugged, libvirt 1.2.2 to 5.x): the owner's
//!   `<name>`/`<uuid>` and its `<interface>`s whose `<source network=..>` is
//!   this network (MAC, interface type).
//!
//! The XML itself is read by [`crate::domxml`], which the libvirt
//! driver's port listings share.

use crate::api::PortView;
use crate::domxml;

use crate::domxml::{MAX_INPUT, NetworkInfo, ParseError, cap};

/// Longest raw excerpt kept with a parse error.
pub const MAX_EXCERPT: usize = 512;

/// The hook's argv after the script name: `NAME OP SUBOP EXTRA`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookArgs {
    pub network: String,
    pub op: String,
    pub subop: String,
    pub extra: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    #[error("expected NAME OP SUBOP EXTRA (4 arguments), got {0}")]
    Count(usize),
    #[error("empty {0}")]
    Empty(&'static str),
}

impl HookArgs {
    /// Parses libvirt's four arguments. Extra arguments are an error (libvirt
    /// always passes exactly four); missing SUBOP/EXTRA read as `-`.
    pub fn parse<S: AsRef<str>>(argv: &[S]) -> Result<Self, ArgsError> {
        if argv.len() < 2 || argv.len() > 4 {
            return Err(ArgsError::Count(argv.len()));
        }
        let get = |i: usize| {
            argv.get(i)
                .map(|s| cap(s.as_ref()))
                .unwrap_or_else(|| "-".into())
        };
        let a = HookArgs {
            network: get(0),
            op: get(1),
            subop: get(2),
            extra: get(3),
        };
        if a.network.is_empty() {
            return Err(ArgsError::Empty("network name"));
        }
        if a.op.is_empty() {
            return Err(ArgsError::Empty("operation"));
        }
        Ok(a)
    }
}

/// Everything read from one `<hookData>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookData {
    pub network: NetworkInfo,
    /// `<networkport>` (libvirt ≥ 5.5).
    pub port: Option<PortView>,
    /// Old plugged/unplugged: the domain's interfaces on this network, each
    /// with the domain as owner. Empty when there is no `<domain>`.
    pub domain_ports: Vec<PortView>,
}

impl HookData {
    /// The one port this hook is about: the `<networkport>`, else the old
    /// format's interface when exactly one is on this network, else (several
    /// interfaces: libvirt does not say which one) the owner alone.
    pub fn primary_port(&self) -> Option<PortView> {
        if let Some(p) = &self.port {
            return Some(p.clone());
        }
        match self.domain_ports.as_slice() {
            [] => None,
            [one] => Some(one.clone()),
            [first, ..] => Some(PortView {
                owner: first.owner.clone(),
                owner_uuid: first.owner_uuid.clone(),
                ..PortView::default()
            }),
        }
    }
}

/// Parses `<hookData>`. The `network` argument selects the old format's
/// interfaces (`<source network=NAME>`).
pub fn parse(input: &[u8], network: &str) -> Result<HookData, ParseError> {
    if input.len() > MAX_INPUT {
        return Err(ParseError::TooLarge(input.len()));
    }
    let text = std::str::from_utf8(input).map_err(|e| ParseError::NotUtf8(e.valid_up_to()))?;
    if text.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    let doc = domxml::document(text)?;
    let root = domxml::root(&doc, "hookData")?;
    Ok(HookData {
        network: domxml::child(root, "network")
            .map(domxml::network)
            .unwrap_or_default(),
        port: domxml::child(root, "networkport").map(domxml::port),
        domain_ports: domxml::child(root, "domain")
            .map(|d| domxml::domain_ports(d, network))
            .unwrap_or_default(),
    })
}

/// A short, printable excerpt of raw input for an error report: at most
/// [`MAX_EXCERPT`] bytes, invalid UTF-8 replaced, control characters escaped.
pub fn excerpt(input: &[u8]) -> String {
    let head = &input[..input.len().min(MAX_EXCERPT)];
    let text = String::from_utf8_lossy(head);
    let mut s: String = text.escape_debug().collect();
    if input.len() > MAX_EXCERPT {
        s.push_str(&format!("... ({} bytes in all)", input.len()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domxml::{MAX_FIELD, parse_port};

    // Captured from a private libvirtd 9.0.0 (Debian 12) running the network
    // hook as a capture script: net-start, a qemu domain with one interface,
    // a libvirtd restart (the replayed port-created), net-update,
    // destroy, net-destroy.
    const START: &str = include_str!("testdata/start.xml");
    const STARTED: &str = include_str!("testdata/started.xml");
    const PORT_CREATED: &str = include_str!("testdata/port-created.xml");
    const PORT_REPLAY: &str = include_str!("testdata/port-created-replay.xml");
    const UPDATED: &str = include_str!("testdata/updated.xml");
    const PORT_DELETED: &str = include_str!("testdata/port-deleted.xml");
    const STOPPED: &str = include_str!("testdata/stopped.xml");
    // Written by hand after the old hooks documentation (libvirt < 5.5
    // cannot be run here): `<network>` followed by the full `<domain>`.
    const PLUGGED_OLD: &str = include_str!("testdata/plugged-old.xml");

    const NET_UUID: &str = "62dbb43f-eb39-4879-8478-d0df01188bd5";

    fn net(x: &str) -> HookData {
        parse(x.as_bytes(), "hcnet").unwrap()
    }

    #[test]
    fn network_ops_carry_the_network() {
        for x in [START, STARTED, UPDATED, STOPPED] {
            let d = net(x);
            assert_eq!(d.network.name.as_deref(), Some("hcnet"));
            assert_eq!(d.network.uuid.as_deref(), Some(NET_UUID));
            assert_eq!(d.network.bridge.as_deref(), Some("hcbr0"));
            assert_eq!(d.port, None);
            assert!(d.domain_ports.is_empty());
            assert_eq!(d.primary_port(), None);
        }
        // The real sample has no trailing newline after </hookData>.
        assert!(STOPPED.ends_with("</hookData>"));
    }

    #[test]
    fn port_ops_carry_the_port_and_owner() {
        let want = PortView {
            owner: Some("hcvm".into()),
            owner_uuid: Some("8f1e0001-0000-4000-9000-000000000abc".into()),
            mac: Some("52:54:00:aa:bb:01".into()),
            plug: Some("bridge".into()),
            uuid: Some("7fad4964-7dc2-44b8-bb73-b9948ea34434".into()),
        };
        for x in [PORT_CREATED, PORT_REPLAY, PORT_DELETED] {
            let d = net(x);
            assert_eq!(d.port.as_ref(), Some(&want));
            assert_eq!(d.primary_port(), Some(want.clone()));
            assert_eq!(d.network.bridge.as_deref(), Some("hcbr0"));
        }
        assert_eq!(net(PORT_CREATED).network.connections, Some(1));
        // A replay is byte-identical to the original: the XML cannot tell
        // them apart (the model does, from what it already knows).
        assert_eq!(PORT_CREATED, PORT_REPLAY);
    }

    #[test]
    fn old_plugged_format_reads_the_domain_interfaces() {
        let d = parse(PLUGGED_OLD.as_bytes(), "default").unwrap();
        assert_eq!(d.network.name.as_deref(), Some("default"));
        assert_eq!(d.network.bridge.as_deref(), Some("virbr0"));
        assert_eq!(d.port, None);
        // Two interfaces, one on "default", one on another network.
        assert_eq!(
            d.domain_ports,
            vec![PortView {
                owner: Some("oldvm".into()),
                owner_uuid: Some("c7a5fdbd-cdaf-9455-926a-d65c16db1809".into()),
                mac: Some("52:54:00:11:22:33".into()),
                plug: Some("network".into()),
                uuid: None,
            }]
        );
        assert_eq!(d.primary_port(), Some(d.domain_ports[0].clone()));
        // Asked for the other network, the other interface is picked.
        let other = parse(PLUGGED_OLD.as_bytes(), "isolated").unwrap();
        assert_eq!(
            other.domain_ports[0].mac.as_deref(),
            Some("52:54:00:44:55:66")
        );
    }

    #[test]
    fn several_interfaces_on_the_network_give_the_owner_only() {
        let x = "<hookData><network><name>n</name></network><domain><name>d</name>\
            <devices><interface type='network'><source network='n'/><mac address='a'/></interface>\
            <interface type='network'><source network='n'/><mac address='b'/></interface>\
            </devices></domain></hookData>";
        let d = parse(x.as_bytes(), "n").unwrap();
        assert_eq!(d.domain_ports.len(), 2);
        let p = d.primary_port().unwrap();
        assert_eq!((p.owner.as_deref(), p.mac), (Some("d"), None));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "empty"),
            (b"   \n", "empty"),
            (b"<hookData>", "bad XML"),
            (b"<hookData><network></hookData>", "bad XML"),
            (b"not xml at all", "bad XML"),
            (b"<other/>", "root element"),
            (b"\xff\xfe<hookData/>", "not UTF-8"),
            (
                b"<!DOCTYPE x [<!ENTITY a 'aaaa'>]><hookData>&a;</hookData>",
                "bad XML",
            ),
        ];
        for (input, want) in cases {
            let e = parse(input, "n").unwrap_err().to_string();
            assert!(e.contains(want), "{input:?}: {e}");
        }
    }

    #[test]
    fn oversized_input_is_refused_before_parsing() {
        let mut big = b"<hookData><network><name>".to_vec();
        big.resize(MAX_INPUT + 1, b'a');
        assert_eq!(parse(&big, "n"), Err(ParseError::TooLarge(MAX_INPUT + 1)));
        // Exactly the limit is parsed (and here fails as XML, not as size).
        assert!(matches!(
            parse(&big[..MAX_INPUT], "n"),
            Err(ParseError::Xml(_))
        ));
    }

    #[test]
    fn fields_are_capped() {
        let long = "x".repeat(10_000);
        let x = format!("<hookData><network><name>{long}</name></network></hookData>");
        let d = parse(x.as_bytes(), "n").unwrap();
        assert_eq!(d.network.name.map(|n| n.len()), Some(MAX_FIELD));
        // Multi-byte characters are cut at a boundary.
        let s = "é".repeat(MAX_FIELD);
        assert!(cap(&s).len() <= MAX_FIELD);
        assert!(cap(&s).chars().all(|c| c == 'é'));
    }

    #[test]
    fn minimal_and_unknown_elements() {
        let d = parse(b"<hookData/>", "n").unwrap();
        assert_eq!(d, HookData::default());
        let d = parse(
            b"<hookData><future/><network connections='x'><name> n </name></network></hookData>",
            "n",
        )
        .unwrap();
        assert_eq!(d.network.name.as_deref(), Some("n"));
        assert_eq!(d.network.connections, None);
    }

    #[test]
    fn standalone_port_xml() {
        let x = "<networkport>\n  <uuid>7fad4964-7dc2-44b8-bb73-b9948ea34434</uuid>\n  <owner>\n    <name>hcvm</name>\n    <uuid>8f1e0001-0000-4000-9000-000000000abc</uuid>\n  </owner>\n  <mac address='52:54:00:aa:bb:01'/>\n  <plug type='bridge' bridge='hcbr0'/>\n</networkport>\n";
        assert_eq!(Some(parse_port(x).unwrap()), net(PORT_CREATED).port);
        assert!(parse_port("<hookData/>").is_err());
        assert!(parse_port("<networkport>").is_err());
    }

    #[test]
    fn args() {
        let a = HookArgs::parse(&["net1", "port-created", "begin", "-"]).unwrap();
        assert_eq!(
            (
                a.network.as_str(),
                a.op.as_str(),
                a.subop.as_str(),
                a.extra.as_str()
            ),
            ("net1", "port-created", "begin", "-")
        );
        let a = HookArgs::parse(&["net1", "stopped"]).unwrap();
        assert_eq!((a.subop.as_str(), a.extra.as_str()), ("-", "-"));
        assert_eq!(HookArgs::parse(&["x"]), Err(ArgsError::Count(1)));
        assert_eq!(
            HookArgs::parse(&["a", "b", "c", "d", "e"]),
            Err(ArgsError::Count(5))
        );
        assert_eq!(
            HookArgs::parse(&["", "start"]),
            Err(ArgsError::Empty("network name"))
        );
    }

    #[test]
    fn excerpt_is_bounded_and_printable() {
        let e = excerpt(b"<a>\n\x00\xff");
        assert!(!e.contains('\n') && !e.contains('\0'), "{e}");
        let big = vec![b'x'; 5000];
        let e = excerpt(&big);
        assert!(e.len() < MAX_EXCERPT + 40 && e.ends_with("(5000 bytes in all)"));
    }
}
