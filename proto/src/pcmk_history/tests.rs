use super::*;

/// The shape Pacemaker 2.1.5's `stonith_admin --history guest3 --verbose
/// --output-as=xml` printed in the guest lab.
const GUEST_LAB: &str = r#"<pacemaker-result api-version="2.25" request="stonith_admin --history guest3 --verbose --output-as=xml">
  <list name="fencing history" count="2">
    <fence_event status="failed" extended-status="" exit-reason="" action="reboot" target="guest3" client="pacemaker-controld.7" origin="guest1" delegate="guest2" completed="2026-12-03 23:50:01 +00:00"/>
    <fence_event status="success" action="reboot" target="guest3" client="stonith_admin.9" origin="guest1" delegate="guest1" completed="2026-12-03 23:50:09 +00:00"/>
  </list>
  <status code="0" message="OK"/>
</pacemaker-result>"#;

#[test]
fn lab_output_is_read() {
    let h = parse_history(GUEST_LAB).unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(h[0].state, FenceState::Failed);
    assert!(!h[0].is_successful_kill());
    assert_eq!(h[1].state, FenceState::Success);
    assert!(h[1].is_successful_kill());
    assert_eq!(h[1].target, "guest3");
    assert_eq!(h[1].delegate, "guest1");
    assert_eq!(h[1].origin, "guest1");
    // 2026-12-03 23:50:09 UTC
    assert_eq!(h[1].completed_ms, Some(1_796_341_809_000));
}

/// Captured from the hosts' Pacemaker 2.1.5 in the lab
/// (`tests/pacemaker_hosts.rs`) after `stonith_admin --confirm node3`.
const HOST_LAB: &str = r#"<pacemaker-result api-version="2.25" request="/usr/sbin/stonith_admin --history node3 --verbose --output-as=xml">
  <list name="fencing history" count="1">
    <fence_event action="off" target="node3" client="stonith_admin.27962" origin="node1" status="success" delegate="a human" completed="2026-12-04 04:16:12Z"/>
  </list>
  <status code="0" message="OK"/>
</pacemaker-result>
"#;

#[test]
fn manual_confirm_output_is_read() {
    let h = parse_history(HOST_LAB).unwrap();
    assert_eq!(h.len(), 1);
    assert!(h[0].is_successful_kill());
    assert_eq!(
        (
            h[0].target.as_str(),
            h[0].delegate.as_str(),
            h[0].origin.as_str()
        ),
        ("node3", "a human", "node1")
    );
    // date -ud '2026-12-04 04:16:12' +%s
    assert_eq!(h[0].completed_ms, Some(1_796_357_772_000));
}

#[test]
fn empty_history_is_empty() {
    let xml = r#"<pacemaker-result api-version="2.25" request="stonith_admin --history node3 --output-as=xml">
  <list name="fencing history" count="0"/>
  <status code="0" message="OK"/>
</pacemaker-result>"#;
    assert_eq!(parse_history(xml).unwrap(), vec![]);
}

#[test]
fn errors_are_errors() {
    let failed = r#"<pacemaker-result api-version="2.25" request="stonith_admin">
  <status code="102" message="Not connected"/>
</pacemaker-result>"#;
    assert!(matches!(
        parse_history(failed),
        Err(HistoryError::Status { code: 102, .. })
    ));
    assert!(matches!(parse_history(""), Err(HistoryError::Xml(_))));
    assert!(matches!(
        parse_history("<other/>"),
        Err(HistoryError::WrongRoot(_))
    ));
    assert_eq!(
        parse_history("<pacemaker-result/>"),
        Err(HistoryError::NoStatus)
    );
    let no_target = r#"<pacemaker-result><fence_event status="success" action="off"/><status code="0"/></pacemaker-result>"#;
    assert_eq!(
        parse_history(no_target),
        Err(HistoryError::BadField("target"))
    );
    let dtd = r#"<!DOCTYPE x [<!ENTITY a "aaaa">]><pacemaker-result><status code="0"/></pacemaker-result>"#;
    assert!(parse_history(dtd).is_err());
    let big = "x".repeat(MAX_INPUT + 1);
    assert!(matches!(
        parse_history(&big),
        Err(HistoryError::TooLarge(_))
    ));
    let long = format!(
        r#"<pacemaker-result><fence_event status="success" action="off" target="{}"/><status code="0"/></pacemaker-result>"#,
        "n".repeat(MAX_FIELD + 1)
    );
    assert_eq!(parse_history(&long), Err(HistoryError::BadField("target")));
}

#[test]
fn too_many_records_are_refused() {
    let mut xml = String::from("<pacemaker-result>");
    for _ in 0..=MAX_RECORDS {
        xml.push_str(r#"<fence_event status="success" action="off" target="n"/>"#);
    }
    xml.push_str(r#"<status code="0"/></pacemaker-result>"#);
    assert_eq!(parse_history(&xml), Err(HistoryError::TooMany));
}

#[test]
fn pending_and_unknown_states_prove_nothing() {
    let xml = r#"<pacemaker-result>
  <fence_event status="pending" action="off" target="n3" extended-status="pending"/>
  <fence_event status="weird" action="off" target="n3" completed="2026-12-03 23:50:09 +00:00"/>
  <fence_event status="success" action="on" target="n3" completed="2026-12-03 23:50:09 +00:00"/>
  <status code="0"/></pacemaker-result>"#;
    let h = parse_history(xml).unwrap();
    assert_eq!(h.len(), 3);
    assert_eq!(h[0].completed_ms, None);
    assert!(h.iter().all(|r| !r.is_successful_kill()));
}

#[test]
fn times_are_read_with_offsets_and_fractions() {
    assert_eq!(parse_time("1970-01-01 00:00:00 +00:00"), Some(0));
    assert_eq!(parse_time("1970-01-01 00:00:01"), Some(1000));
    assert_eq!(parse_time("1970-01-01 00:00:01Z"), Some(1000));
    assert_eq!(parse_time("1970-01-01 01:00:01+01:00"), Some(1000));
    assert_eq!(parse_time("1970-01-01 00:00:01.5Z"), Some(1500));
    assert_eq!(parse_time("1970-01-01 01:00:00 +01:00"), Some(0));
    assert_eq!(parse_time("1970-01-01 00:00:00 -0100"), Some(3_600_000));
    assert_eq!(
        parse_time("2000-03-01 00:00:00.25 Z"),
        Some(951_868_800_250)
    );
    assert_eq!(
        parse_time("2024-02-29 12:00:00.123456 +00:00"),
        Some(1_709_208_000_123)
    );
    for bad in [
        "",
        "2026-12-03",
        "2026-13-03 00:00:00",
        "2026-12-03 24:00:00",
        "2026-12-03 00:00:00 +99:00",
        "2026-12-03 00:00:00 x",
        "2026-12-03 00:00:00Zx",
        "2026-12-03 00:00:00-",
        "1969-12-31 23:59:59 +00:00",
        "2026-12-03 00:00:00.",
        "20261-12-03 00:00:00",
        "2026-12-03T00:00:00",
        "２026-12-03 00:00:00",
    ] {
        assert_eq!(parse_time(bad), None, "{bad}");
    }
}
