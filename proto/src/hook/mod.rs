//! libvirt network hook events: the wire format.
//!
//! - [`data`]: the pure parser of the hook's argv and `<hookData>` XML.
//! - [`HookReport`]: what `fenceline-hook` sends to the daemon, one JSON
//!   object in one Unix datagram (the wire format, versioned by `v`). The
//!   daemon's hook intake turns it into the model's `Input::Hook`.
//!
//! Why a datagram socket: one hook call is one message, so there is no
//! framing, no partial read and no connection to accept or time out; the
//! receiver reads into a fixed buffer, so a message can never grow its
//! memory, and an oversized one is detected (truncation) and dropped.

pub mod data;

use serde::{Deserialize, Serialize};

use crate::api::{Millis, PortView};
use crate::messages::HookCall;
use data::HookArgs;

/// The hook socket when neither the config nor `FENCELINE_HOOK_SOCKET` says otherwise.
/// Environment variable naming the hook socket (for `fenceline hook`).
pub const HOOK_SOCKET_ENV: &str = "FENCELINE_HOOK_SOCKET";
/// Version of [`HookReport`] this build writes and reads.
pub const WIRE_VERSION: u32 = 1;
/// Largest report datagram; the receiver drops anything longer. Reports
/// are small by construction (every field is capped by the parser).
pub const MAX_DATAGRAM: usize = 32 * 1024;

/// One hook call, as `fenceline hook` reports it to the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookReport {
    /// [`WIRE_VERSION`].
    pub v: u32,
    /// When the hook ran (the hook's clock: the same host as the daemon).
    pub at: Millis,
    pub network: String,
    pub op: String,
    #[serde(default)]
    pub subop: String,
    #[serde(default)]
    pub extra: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortView>,
    /// Why the XML could not be read, with a bounded raw excerpt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("report of {0} bytes exceeds {MAX_DATAGRAM}")]
    TooLarge(usize),
    #[error("not a hook report: {0}")]
    Json(String),
    #[error("unsupported report version {0} (this build reads {WIRE_VERSION})")]
    Version(u32),
    #[error("empty {0}")]
    Empty(&'static str),
}

impl HookReport {
    /// Builds the report for one hook call from its arguments and stdin
    /// (`Err` = stdin could not be read, with the reason). Never fails: bad
    /// or oversized XML gives a report with `error` set.
    pub fn build(args: &HookArgs, stdin: Result<&[u8], String>, at: Millis) -> Self {
        let mut r = HookReport {
            v: WIRE_VERSION,
            at,
            network: args.network.clone(),
            op: args.op.clone(),
            subop: args.subop.clone(),
            extra: args.extra.clone(),
            network_uuid: None,
            bridge: None,
            port: None,
            error: None,
        };
        let input = match stdin {
            Ok(i) => i,
            Err(e) => {
                r.error = Some(crate::domxml::cap(&format!("cannot read stdin: {e}")));
                return r;
            }
        };
        match data::parse(input, &args.network) {
            Ok(d) => {
                r.port = d.primary_port();
                r.network_uuid = d.network.uuid;
                r.bridge = d.network.bridge;
            }
            Err(e) => {
                let raw = match e {
                    // An excerpt of 1 MiB of junk says nothing more than its start.
                    crate::domxml::ParseError::Empty => String::new(),
                    _ => format!("; raw: {}", data::excerpt(input)),
                };
                r.error = Some(format!("{e}{raw}"));
            }
        }
        r
    }

    /// The model's view of the call.
    pub fn into_call(self) -> HookCall {
        HookCall {
            time: self.at,
            network: self.network,
            op: self.op,
            subop: self.subop,
            network_uuid: self.network_uuid,
            bridge: self.bridge,
            port: self.port,
            error: self.error,
        }
    }

    /// One JSON line.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec());
        v.push(b'\n');
        v
    }

    /// Parses and checks a received datagram.
    pub fn decode(buf: &[u8]) -> Result<Self, ReportError> {
        if buf.len() > MAX_DATAGRAM {
            return Err(ReportError::TooLarge(buf.len()));
        }
        let r: HookReport =
            serde_json::from_slice(buf).map_err(|e| ReportError::Json(e.to_string()))?;
        if r.v != WIRE_VERSION {
            return Err(ReportError::Version(r.v));
        }
        if r.network.is_empty() {
            return Err(ReportError::Empty("network"));
        }
        if r.op.is_empty() {
            return Err(ReportError::Empty("op"));
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(op: &str) -> HookArgs {
        HookArgs::parse(&["hcnet", op, "begin", "-"]).unwrap()
    }

    #[test]
    fn report_of_a_port_hook() {
        let xml = include_bytes!("testdata/port-created.xml");
        let r = HookReport::build(&args("port-created"), Ok(xml), 42);
        assert_eq!(r.error, None);
        assert_eq!(r.bridge.as_deref(), Some("hcbr0"));
        let p = r.port.as_ref().unwrap();
        assert_eq!(p.owner.as_deref(), Some("hcvm"));
        assert_eq!(p.mac.as_deref(), Some("52:54:00:aa:bb:01"));
        let bytes = r.encode();
        assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 1);
        assert!(bytes.ends_with(b"\n"));
        assert_eq!(HookReport::decode(&bytes).unwrap(), r);
    }

    #[test]
    fn bad_xml_becomes_a_raw_report() {
        let r = HookReport::build(&args("started"), Ok(b"<hookData><oops"), 1);
        let e = r.error.unwrap();
        assert!(
            e.starts_with("bad XML") && e.contains("raw: <hookData><oops"),
            "{e}"
        );
        let big = vec![b'<'; crate::domxml::MAX_INPUT + 10];
        let r = HookReport::build(&args("started"), Ok(&big), 1);
        let e = r.error.clone().unwrap();
        assert!(e.contains("exceeds the limit"), "{e}");
        // Bounded: fits in one datagram.
        assert!(r.encode().len() < MAX_DATAGRAM);
        let r = HookReport::build(&args("started"), Err("timed out".into()), 1);
        assert_eq!(r.error.as_deref(), Some("cannot read stdin: timed out"));
    }

    #[test]
    fn worst_case_report_fits_a_datagram() {
        // Every field at its cap, all escaped to \u00XX by JSON.
        let long = "\u{1}".repeat(crate::domxml::MAX_FIELD);
        let a = HookArgs::parse(&[long.as_str(), &long, &long, &long]).unwrap();
        let port = format!(
            "<networkport><uuid>{long}</uuid><owner><name>{long}</name><uuid>{long}</uuid></owner>\
             <mac address='{long}'/><plug type='{long}'/></networkport>"
        )
        .replace('\u{1}', "&#1;");
        let xml = format!(
            "<hookData><network><name>x</name><uuid>{long}</uuid><bridge name='{long}'/></network>{port}</hookData>"
        )
        .replace('\u{1}', "&#1;");
        let r = HookReport::build(&a, Ok(xml.as_bytes()), u64::MAX);
        // XML 1.0 refuses &#1;: the worst case is then the raw excerpt.
        let n = r.encode().len();
        assert!(n < MAX_DATAGRAM, "{n}");
        let junk: Vec<u8> = (0..crate::domxml::MAX_INPUT)
            .map(|i| (i % 32) as u8)
            .collect();
        let r = HookReport::build(&a, Ok(&junk), u64::MAX);
        let n = r.encode().len();
        assert!(n < MAX_DATAGRAM, "{n}");
    }

    #[test]
    fn decode_refuses_garbage() {
        assert!(matches!(
            HookReport::decode(b"nope"),
            Err(ReportError::Json(_))
        ));
        assert!(matches!(
            HookReport::decode(br#"{"v":2,"at":1,"network":"n","op":"x"}"#),
            Err(ReportError::Version(2))
        ));
        assert!(matches!(
            HookReport::decode(br#"{"v":1,"at":1,"network":"","op":"x"}"#),
            Err(ReportError::Empty("network"))
        ));
        assert!(matches!(
            HookReport::decode(&vec![b' '; MAX_DATAGRAM + 1]),
            Err(ReportError::TooLarge(_))
        ));
        // Unknown fields are accepted (a newer hook binary).
        let r = HookReport::decode(br#"{"v":1,"at":1,"network":"n","op":"x","new":true}"#).unwrap();
        assert_eq!(r.subop, "");
    }
}
