//! The guest Pacemaker cluster's configuration (CIB fragments for
//! `cibadmin`) and what its tools report: `crm_mon -1 --output-as=xml` and
//! `stonith_admin --history --output-as=xml`, read with a small tag scanner
//! (attribute values only; no entities beyond the five XML ones).

use std::path::Path;

/// Number of `ocf:pacemaker:Dummy` resources (dummy1..N).
pub(crate) const DUMMIES: usize = 3;
/// Id of the fence_xvm stonith resource.
pub(crate) const FENCE_RSC: &str = "fence-guests";
/// fence_xvm's multicast group and port (the lab listeners' defaults).
const MCAST_GROUP: &str = "225.0.0.12";
const MCAST_PORT: u16 = 1229;

/// What `crm_mon` reports about the guest cluster, seen from one guest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestStatus {
    /// The designated controller, if there is one.
    pub dc: Option<String>,
    /// Nodes online (member, pacemaker up).
    pub online: Vec<String>,
    /// Nodes marked unclean (to be fenced).
    pub unclean: Vec<String>,
    pub resources: Vec<GuestResource>,
    /// The last recorded operations per node and resource (node_history).
    pub ops: Vec<GuestOp>,
    /// `op_key` of every failed operation crm_mon lists.
    pub failures: Vec<String>,
}

/// One `operation_history` entry in [`GuestStatus`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestOp {
    pub node: String,
    pub rsc: String,
    pub task: String,
    /// e.g. "5000ms"; "0ms" for one-shot operations.
    pub interval: String,
    /// The agent's exit code ("0" = ok).
    pub rc: String,
}

/// One resource in [`GuestStatus`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestResource {
    pub id: String,
    /// crm_mon's role: Started, Stopped, ...
    pub role: String,
    pub active: bool,
    pub failed: bool,
    /// Nodes it runs on.
    pub nodes: Vec<String>,
}

impl GuestStatus {
    pub fn resource(&self, id: &str) -> Option<&GuestResource> {
        self.resources.iter().find(|r| r.id == id)
    }

    /// True when resource `id` is started, not failed, and runs on exactly
    /// one node, which is one of `on`.
    pub fn started_on_one_of(&self, id: &str, on: &[String]) -> bool {
        self.resource(id).is_some_and(|r| {
            r.role == "Started"
                && r.active
                && !r.failed
                && r.nodes.len() == 1
                && on.contains(&r.nodes[0])
        })
    }
}

/// One entry of `stonith_admin --history`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FenceEvent {
    pub action: String,
    pub target: String,
    /// "success", "failed" or "pending".
    pub status: String,
    /// The node whose fencer ran the agent.
    pub delegate: String,
    /// The node that asked.
    pub origin: String,
    pub completed: String,
}

/// `(tag name, attributes)` of every start or empty-element tag, and `("/name", [])`
/// for end tags, in document order.
fn tags(xml: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(at) = rest.find('<') {
        rest = &rest[at + 1..];
        let Some(end) = rest.find('>') else { break };
        let body = &rest[..end];
        rest = &rest[end + 1..];
        if body.starts_with('?') || body.starts_with('!') {
            continue;
        }
        if let Some(name) = body.strip_prefix('/') {
            out.push((format!("/{}", name.trim()), Vec::new()));
            continue;
        }
        let self_closing = body.ends_with('/');
        let body = body.trim_end_matches('/');
        let name_end = body.find(char::is_whitespace).unwrap_or(body.len());
        let name = body[..name_end].to_string();
        let mut attrs = Vec::new();
        let mut a = &body[name_end..];
        while let Some(eq) = a.find('=') {
            let key = a[..eq].trim().to_string();
            let v = a[eq + 1..].trim_start();
            let Some(q) = v.chars().next().filter(|c| *c == '"' || *c == '\'') else {
                break;
            };
            let Some(close) = v[1..].find(q) else { break };
            attrs.push((key, unescape(&v[1..1 + close])));
            a = &v[close + 2..];
        }
        out.push((name.clone(), attrs));
        if self_closing {
            out.push((format!("/{name}"), Vec::new()));
        }
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn attr<'a>(attrs: &'a [(String, String)], key: &str) -> &'a str {
    attrs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

/// Parse `crm_mon -1 --output-as=xml`.
pub(crate) fn parse_crm_mon(xml: &str) -> Option<GuestStatus> {
    let mut st = GuestStatus::default();
    let mut seen_summary = false;
    let mut section = String::new();
    let mut current: Option<GuestResource> = None;
    let (mut hist_node, mut hist_rsc) = (String::new(), String::new());
    for (name, attrs) in tags(xml) {
        match name.as_str() {
            "current_dc" => {
                seen_summary = true;
                if attr(&attrs, "present") == "true" {
                    st.dc = Some(attr(&attrs, "name").to_string());
                }
            }
            "nodes" | "resources" | "node_history" | "fence_history" => section = name.clone(),
            "/nodes" | "/resources" | "/node_history" => section.clear(),
            "node" if section == "node_history" => hist_node = attr(&attrs, "name").to_string(),
            "resource_history" => hist_rsc = attr(&attrs, "id").to_string(),
            "operation_history" => st.ops.push(GuestOp {
                node: hist_node.clone(),
                rsc: hist_rsc.clone(),
                task: attr(&attrs, "task").to_string(),
                interval: attr(&attrs, "interval").to_string(),
                rc: attr(&attrs, "rc").to_string(),
            }),
            "failure" => st.failures.push(attr(&attrs, "op_key").to_string()),
            "node" if section == "nodes" => {
                let n = attr(&attrs, "name").to_string();
                if attr(&attrs, "online") == "true" {
                    st.online.push(n.clone());
                }
                if attr(&attrs, "unclean") == "true" {
                    st.unclean.push(n);
                }
            }
            "resource" if section == "resources" => {
                current = Some(GuestResource {
                    id: attr(&attrs, "id").to_string(),
                    role: attr(&attrs, "role").to_string(),
                    active: attr(&attrs, "active") == "true",
                    failed: attr(&attrs, "failed") == "true",
                    nodes: Vec::new(),
                });
            }
            "node" if section == "resources" => {
                if let Some(r) = current.as_mut() {
                    r.nodes.push(attr(&attrs, "name").to_string());
                }
            }
            "/resource" => st.resources.extend(current.take()),
            _ => {}
        }
    }
    seen_summary.then_some(st)
}

/// Parse `stonith_admin --history <target> --verbose --output-as=xml`.
pub(crate) fn parse_fence_history(xml: &str) -> Option<Vec<FenceEvent>> {
    let tags = tags(xml);
    if !tags.iter().any(|(n, _)| n == "pacemaker-result") {
        return None;
    }
    Some(
        tags.iter()
            .filter(|(n, _)| n == "fence_event")
            .map(|(_, a)| FenceEvent {
                action: attr(a, "action").to_string(),
                target: attr(a, "target").to_string(),
                status: attr(a, "status").to_string(),
                delegate: attr(a, "delegate").to_string(),
                origin: attr(a, "origin").to_string(),
                completed: attr(a, "completed").to_string(),
            })
            .collect(),
    )
}

fn nvpairs(prefix: &str, pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("<nvpair id=\"{prefix}-{k}\" name=\"{k}\" value=\"{v}\"/>"))
        .collect()
}

/// Cluster options (for `crm_attribute --type crm_config`) that keep the
/// tests fast and never let Pacemaker panic.
pub(crate) const GUEST_OPTIONS: &[(&str, &str)] = &[
    ("stonith-enabled", "true"),
    ("stonith-timeout", "20s"),
    // Keep trying while fenceline refuses (the default is 10 attempts, then
    // Pacemaker gives up on the node until it rejoins).
    ("stonith-max-attempts", "1000"),
    ("stonith-watchdog-timeout", "0"),
    // "stop", never "panic": a fenced-but-alive guest must not reboot the
    // machine the lab runs on.
    ("fence-reaction", "stop"),
    ("cluster-recheck-interval", "30s"),
    ("no-quorum-policy", "stop"),
];

/// The guest cluster's resources and constraints for `cibadmin`: a
/// `stonith:fence_xvm` device with the lab
/// key, group and `pcmk_host_map` (`guests`: guest name → domain name),
/// preferring `fencer_home`; [`DUMMIES`] Dummy resources preferring `victim`.
pub(crate) fn guest_cib(
    guests: &[(String, String)],
    key: &Path,
    fencer_home: &str,
    victim: &str,
) -> (String, String) {
    let map: Vec<String> = guests.iter().map(|(g, d)| format!("{g}:{d}")).collect();
    let fence = nvpairs(
        FENCE_RSC,
        &[
            ("pcmk_host_map", map.join(";")),
            ("key_file", key.to_string_lossy().into_owned()),
            ("multicast_address", MCAST_GROUP.into()),
            ("ipport", MCAST_PORT.to_string()),
            // fence_xvm's wait for a connect-back (s); the default is 30.
            ("timeout", "5".into()),
            ("pcmk_reboot_retries", "1".into()),
        ],
    );
    let mut resources = format!(
        "<resources><primitive id=\"{FENCE_RSC}\" class=\"stonith\" type=\"fence_xvm\">\
         <instance_attributes id=\"{FENCE_RSC}-ia\">{fence}</instance_attributes>\
         <operations><op id=\"{FENCE_RSC}-monitor\" name=\"monitor\" interval=\"5s\" timeout=\"20s\"/></operations>\
         </primitive>"
    );
    let mut constraints = format!(
        "<constraints><rsc_location id=\"loc-{FENCE_RSC}\" rsc=\"{FENCE_RSC}\" node=\"{fencer_home}\" score=\"100\"/>"
    );
    for d in 1..=DUMMIES {
        resources.push_str(&format!(
            "<primitive id=\"dummy{d}\" class=\"ocf\" provider=\"pacemaker\" type=\"Dummy\">\
             <operations><op id=\"dummy{d}-monitor\" name=\"monitor\" interval=\"3s\" timeout=\"10s\"/></operations>\
             </primitive>"
        ));
        constraints.push_str(&format!(
            "<rsc_location id=\"loc-dummy{d}\" rsc=\"dummy{d}\" node=\"{victim}\" score=\"100\"/>"
        ));
    }
    resources.push_str("</resources>");
    constraints.push_str("</constraints>");
    (resources, constraints)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CRM_MON: &str = r#"<?xml version="1.0"?>
<pacemaker-result api-version="2.29" request="crm_mon -1 --output-as=xml">
  <summary>
    <current_dc present="true" version="2.1.5" name="guest1" id="1" with_quorum="true"/>
  </summary>
  <nodes>
    <node name="guest1" id="1" online="true" standby="false" unclean="false" type="member"/>
    <node name="guest2" id="2" online="true" unclean="false" type="member"/>
    <node name="guest3" id="3" online="false" unclean="true" type="member"/>
  </nodes>
  <resources>
    <resource id="fence-guests" resource_agent="stonith:fence_xvm" role="Started" active="true" failed="false" nodes_running_on="1">
      <node name="guest1" id="1" cached="true"/>
    </resource>
    <resource id="dummy1" resource_agent="ocf:pacemaker:Dummy" role="Started" active="true" failed="false" nodes_running_on="1">
      <node name="guest3" id="3" cached="true"/>
    </resource>
    <resource id="dummy2" resource_agent="ocf:pacemaker:Dummy" role="Stopped" active="false" failed="false" nodes_running_on="0"/>
  </resources>
  <node_history>
    <node name="guest1">
      <resource_history id="fence-guests" orphan="false" migration-threshold="1000000">
        <operation_history call="12" task="monitor" interval="5000ms" rc="0" rc_text="ok"/>
      </resource_history>
    </node>
  </node_history>
  <failures>
    <failure op_key="dummy2_start_0" node="guest2" exitstatus="error" exitreason="" exitcode="1"/>
  </failures>
  <status code="0" message="OK"/>
</pacemaker-result>"#;

    #[test]
    fn crm_mon_xml_is_read() {
        let st = parse_crm_mon(CRM_MON).unwrap();
        assert_eq!(st.dc.as_deref(), Some("guest1"));
        assert_eq!(st.online, vec!["guest1", "guest2"]);
        assert_eq!(st.unclean, vec!["guest3"]);
        assert_eq!(st.resources.len(), 3);
        assert_eq!(st.resource("dummy1").unwrap().nodes, vec!["guest3"]);
        assert_eq!(st.resource("dummy2").unwrap().nodes, Vec::<String>::new());
        let survivors = vec!["guest1".to_string(), "guest2".to_string()];
        assert!(st.started_on_one_of("fence-guests", &survivors));
        assert!(!st.started_on_one_of("dummy1", &survivors));
        assert!(!st.started_on_one_of("dummy2", &survivors));
        assert_eq!(
            st.ops,
            vec![GuestOp {
                node: "guest1".into(),
                rsc: "fence-guests".into(),
                task: "monitor".into(),
                interval: "5000ms".into(),
                rc: "0".into(),
            }]
        );
        assert_eq!(st.failures, vec!["dummy2_start_0"]);
        assert!(parse_crm_mon("crm_mon: error").is_none());
    }

    #[test]
    fn fence_history_xml_is_read() {
        let xml = r#"<pacemaker-result api-version="2.25" request="stonith_admin --history guest3 --verbose --output-as=xml">
  <list name="fencing history" count="2">
    <fence_event status="failed" extended-status="" exit-reason="" action="reboot" target="guest3" client="pacemaker-controld.7" origin="guest1" delegate="guest2" completed="2026-12-03 23:50:01 +00:00"/>
    <fence_event status="success" action="reboot" target="guest3" client="stonith_admin.9" origin="guest1" delegate="guest1" completed="2026-12-03 23:50:09 +00:00"/>
  </list>
  <status code="0" message="OK"/>
</pacemaker-result>"#;
        let h = parse_fence_history(xml).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].status, "failed");
        assert_eq!(h[0].delegate, "guest2");
        assert_eq!(h[1].status, "success");
        assert_eq!(h[1].target, "guest3");
        assert!(parse_fence_history("").is_none());
    }

    #[test]
    fn cib_maps_guests_and_prefers_the_victim() {
        let guests = vec![
            ("guest1".to_string(), "guest1".to_string()),
            ("guest2".to_string(), "vm-b".to_string()),
        ];
        let (rsc, cons) = guest_cib(&guests, Path::new("/tmp/k"), "guest1", "guest2");
        assert!(GUEST_OPTIONS.contains(&("fence-reaction", "stop")));
        assert!(rsc.contains("value=\"guest1:guest1;guest2:vm-b\""));
        assert!(rsc.contains("type=\"fence_xvm\""));
        assert_eq!(rsc.matches("type=\"Dummy\"").count(), DUMMIES);
        assert!(cons.contains("rsc=\"dummy3\" node=\"guest2\""));
        // What we write, our scanner reads back.
        assert_eq!(
            tags(&rsc).iter().filter(|(n, _)| n == "primitive").count(),
            DUMMIES + 1
        );
    }
}
