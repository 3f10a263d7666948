//! Bounded reading of libvirt's XML: `<network>`, `<networkport>`
//! (`virNetworkPortGetXMLDesc`, and the one inside a network hook's
//! `<hookData>`) and a `<domain>`'s interfaces on a network. The libvirt
//! driver (port listings) and the network-hook parser (`hookData`) both read
//! through here, so there is one reading of each element.
//!
//! Input is hostile until proven otherwise: it is bounded ([`MAX_INPUT`]),
//! DTDs are refused, the node count is limited, every text field is capped
//! ([`MAX_FIELD`]), and nothing here panics on any input.

use crate::api::PortView;

/// Largest XML document accepted (bytes). Larger input is refused unparsed.
pub const MAX_INPUT: usize = 1024 * 1024;
/// Longest text kept from any single field (network name, MAC, ...).
pub const MAX_FIELD: usize = 256;
/// XML nodes the parser may build (a real hookData has well under 200;
/// an old-style full domain XML a few thousand).
const NODES_LIMIT: u32 = 100_000;
/// Interfaces read from one `<domain>` at most.
const MAX_DOMAIN_PORTS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("hookData of {0} bytes exceeds the limit of {MAX_INPUT} bytes")]
    TooLarge(usize),
    #[error("hookData is empty")]
    Empty,
    #[error("hookData is not UTF-8 (byte {0})")]
    NotUtf8(usize),
    #[error("bad XML: {0}")]
    Xml(String),
    #[error("root element is <{0}>, expected <hookData>")]
    WrongRoot(String),
}

/// The network as libvirt's `<network>` describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkInfo {
    pub name: Option<String>,
    pub uuid: Option<String>,
    pub bridge: Option<String>,
    /// `connections='N'` (live port count; only on port hooks).
    pub connections: Option<u32>,
}

/// Parses `input` with the bounds above (size, no DTD, node count).
pub fn document(input: &str) -> Result<roxmltree::Document<'_>, ParseError> {
    if input.len() > MAX_INPUT {
        return Err(ParseError::TooLarge(input.len()));
    }
    let opts = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: NODES_LIMIT,
        entity_resolver: None,
    };
    roxmltree::Document::parse_with_options(input, opts)
        .map_err(|e| ParseError::Xml(cap(&e.to_string())))
}

/// The root element, checked to be `<name>`.
pub fn root<'a, 'i>(
    doc: &'a roxmltree::Document<'i>,
    name: &str,
) -> Result<roxmltree::Node<'a, 'i>, ParseError> {
    let root = doc.root_element();
    if root.has_tag_name(name) {
        Ok(root)
    } else {
        Err(ParseError::WrongRoot(cap(root.tag_name().name())))
    }
}

/// Parses a standalone `<networkport>` (`virNetworkPortGetXMLDesc`).
pub fn parse_port(input: &str) -> Result<PortView, ParseError> {
    let doc = document(input)?;
    Ok(port(root(&doc, "networkport")?))
}

/// A `<networkport>` element: `<uuid>`, `<owner><name/><uuid/></owner>`,
/// `<mac address=..>`, `<plug type=..>`.
pub fn port(p: roxmltree::Node<'_, '_>) -> PortView {
    let owner = child(p, "owner");
    PortView {
        owner: owner.and_then(|o| child_text(o, "name")),
        owner_uuid: owner.and_then(|o| child_text(o, "uuid")),
        mac: child(p, "mac").and_then(|m| attr(m, "address")),
        plug: child(p, "plug").and_then(|m| attr(m, "type")),
        uuid: child_text(p, "uuid"),
    }
}

/// A `<network>` element: `<name>`, `<uuid>`, `<bridge name=..>`,
/// `connections='N'`.
pub fn network(n: roxmltree::Node<'_, '_>) -> NetworkInfo {
    NetworkInfo {
        name: child_text(n, "name"),
        uuid: child_text(n, "uuid"),
        bridge: child(n, "bridge").and_then(|b| attr(b, "name")),
        connections: n.attribute("connections").and_then(|c| c.parse().ok()),
    }
}

/// A `<domain>` element's `<interface>`s whose `<source network=..>` is
/// `network` (MAC, interface type), each with the domain as owner; at most
/// 64.
pub fn domain_ports(d: roxmltree::Node<'_, '_>, network: &str) -> Vec<PortView> {
    let owner = child_text(d, "name");
    let owner_uuid = child_text(d, "uuid");
    let mut out = Vec::new();
    let Some(devices) = child(d, "devices") else {
        return out;
    };
    for iface in devices
        .children()
        .filter(|c| c.is_element() && c.has_tag_name("interface"))
    {
        let on_this = child(iface, "source")
            .and_then(|s| s.attribute("network"))
            .is_some_and(|n| n == network);
        if !on_this {
            continue;
        }
        out.push(PortView {
            owner: owner.clone(),
            owner_uuid: owner_uuid.clone(),
            mac: child(iface, "mac").and_then(|m| attr(m, "address")),
            plug: attr(iface, "type"),
            uuid: None,
        });
        if out.len() >= MAX_DOMAIN_PORTS {
            break;
        }
    }
    out
}

/// The first child element named `name`.
pub fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    n.children()
        .find(|c| c.is_element() && c.has_tag_name(name))
}

fn child_text(n: roxmltree::Node<'_, '_>, name: &str) -> Option<String> {
    child(n, name)
        .and_then(|c| c.text())
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(cap)
}

fn attr(n: roxmltree::Node<'_, '_>, name: &str) -> Option<String> {
    n.attribute(name)
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(cap)
}

/// At most [`MAX_FIELD`] bytes, cut at a character boundary.
pub fn cap(s: &str) -> String {
    if s.len() <= MAX_FIELD {
        return s.to_string();
    }
    let mut end = MAX_FIELD;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standalone_port() {
        let x = "<networkport><uuid> p </uuid><owner><name>vm</name><uuid>u</uuid></owner>\
            <mac address='52:54:00:aa:bb:01'/><plug type='bridge' bridge='br0'/></networkport>";
        assert_eq!(
            parse_port(x).unwrap(),
            PortView {
                owner: Some("vm".into()),
                owner_uuid: Some("u".into()),
                mac: Some("52:54:00:aa:bb:01".into()),
                plug: Some("bridge".into()),
                uuid: Some("p".into()),
            }
        );
        assert!(matches!(
            parse_port("<network/>"),
            Err(ParseError::WrongRoot(r)) if r == "network"
        ));
        assert!(matches!(
            parse_port("<networkport>"),
            Err(ParseError::Xml(_))
        ));
        let big = "x".repeat(MAX_INPUT + 1);
        assert_eq!(parse_port(&big), Err(ParseError::TooLarge(MAX_INPUT + 1)));
    }

    #[test]
    fn domain_interfaces_on_one_network() {
        let x = "<domain><name>d</name><devices>\
            <interface type='network'><source network='a'/><mac address='m1'/></interface>\
            <interface type='bridge'><source bridge='b'/><mac address='m2'/></interface>\
            </devices></domain>";
        let doc = document(x).unwrap();
        let ports = domain_ports(root(&doc, "domain").unwrap(), "a");
        assert_eq!(ports.len(), 1);
        assert_eq!(
            (ports[0].owner.as_deref(), ports[0].mac.as_deref()),
            (Some("d"), Some("m1"))
        );
        assert!(domain_ports(doc.root_element(), "b").is_empty());
    }

    #[test]
    fn dtds_are_refused_and_fields_capped() {
        assert!(matches!(
            document("<!DOCTYPE x [<!ENTITY a 'aaaa'>]><n>&a;</n>"),
            Err(ParseError::Xml(_))
        ));
        let s = "é".repeat(MAX_FIELD);
        assert!(cap(&s).len() <= MAX_FIELD && cap(&s).chars().all(|c| c == 'é'));
    }
}
