//! Pacemaker's fencing history as `stonith_admin --history <node>
//! --output-as=xml` prints it: the one bounded reading of it, for the
//! optional confirmation of a departed host by the hosts' own Pacemaker
//! (`[fencing] pacemaker_confirm`).
//!
//! Input is hostile: bounded in size, records and field length, no DTD;
//! anything unexpected is an error, never a panic. A record whose time
//! cannot be read keeps `completed_ms: None` (it confirms nothing).

use crate::api::Millis;

/// Largest document read.
pub const MAX_INPUT: usize = 1024 * 1024;
/// Most `fence_event` records read from one document.
pub const MAX_RECORDS: usize = 4096;
/// Longest attribute value kept.
pub const MAX_FIELD: usize = 256;
const NODES_LIMIT: u32 = 50_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    #[error("fencing history of {0} bytes exceeds the limit of {MAX_INPUT} bytes")]
    TooLarge(usize),
    #[error("bad XML: {0}")]
    Xml(String),
    #[error("root element is <{0}>, expected <pacemaker-result>")]
    WrongRoot(String),
    #[error("more than {MAX_RECORDS} fence events")]
    TooMany,
    #[error("stonith_admin reported status {code}: {message}")]
    Status { code: i64, message: String },
    #[error("no <status> element")]
    NoStatus,
    #[error("attribute {0} is missing or longer than {MAX_FIELD} bytes")]
    BadField(&'static str),
}

/// The state of one fencing operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceState {
    Success,
    Failed,
    Pending,
    /// A state this build does not know.
    Other,
}

/// One `<fence_event>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceRecord {
    /// "off", "reboot", "on", ...
    pub action: String,
    pub target: String,
    pub state: FenceState,
    /// The node whose fencer carried it out ("" when not given).
    pub delegate: String,
    /// The node that asked ("" when not given).
    pub origin: String,
    /// `completed` as printed (capped), for the audit text.
    pub completed: String,
    /// `completed` in ms since the epoch (the fencer's wall clock, second
    /// resolution unless the output has a fraction); `None` if absent or
    /// unreadable.
    pub completed_ms: Option<Millis>,
}

impl FenceRecord {
    /// A completed power-off or reboot: what can prove a node down.
    pub fn is_successful_kill(&self) -> bool {
        self.state == FenceState::Success && (self.action == "off" || self.action == "reboot")
    }
}

fn field(node: roxmltree::Node<'_, '_>, name: &'static str) -> Result<String, HistoryError> {
    match node.attribute(name) {
        None => Ok(String::new()),
        Some(v) if v.len() <= MAX_FIELD => Ok(v.to_string()),
        Some(_) => Err(HistoryError::BadField(name)),
    }
}

/// Parses the XML of `stonith_admin --history ... --output-as=xml`.
pub fn parse_history(input: &str) -> Result<Vec<FenceRecord>, HistoryError> {
    if input.len() > MAX_INPUT {
        return Err(HistoryError::TooLarge(input.len()));
    }
    let opts = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: NODES_LIMIT,
        entity_resolver: None,
    };
    let doc = roxmltree::Document::parse_with_options(input, opts)
        .map_err(|e| HistoryError::Xml(crate::domxml::cap(&e.to_string())))?;
    let root = doc.root_element();
    if !root.has_tag_name("pacemaker-result") {
        return Err(HistoryError::WrongRoot(crate::domxml::cap(
            root.tag_name().name(),
        )));
    }
    let status = root
        .children()
        .find(|n| n.has_tag_name("status"))
        .ok_or(HistoryError::NoStatus)?;
    let code: i64 = status
        .attribute("code")
        .and_then(|c| c.parse().ok())
        .ok_or(HistoryError::BadField("code"))?;
    if code != 0 {
        return Err(HistoryError::Status {
            code,
            message: crate::domxml::cap(status.attribute("message").unwrap_or("")),
        });
    }
    let mut out = Vec::new();
    for ev in root.descendants().filter(|n| n.has_tag_name("fence_event")) {
        if out.len() >= MAX_RECORDS {
            return Err(HistoryError::TooMany);
        }
        let target = field(ev, "target")?;
        let action = field(ev, "action")?;
        if target.is_empty() {
            return Err(HistoryError::BadField("target"));
        }
        if action.is_empty() {
            return Err(HistoryError::BadField("action"));
        }
        let state = match ev.attribute("status") {
            Some("success") => FenceState::Success,
            Some("failed") => FenceState::Failed,
            Some("pending") => FenceState::Pending,
            _ => FenceState::Other,
        };
        let completed = field(ev, "completed")?;
        out.push(FenceRecord {
            completed_ms: parse_time(&completed),
            action,
            target,
            state,
            delegate: field(ev, "delegate")?,
            origin: field(ev, "origin")?,
            completed,
        });
    }
    Ok(out)
}

fn num(s: &str, len: usize) -> Option<i64> {
    if s.len() != len || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Reads Pacemaker's `completed` time: `YYYY-MM-DD HH:MM:SS[.frac]` then
/// `Z` or `[+-]HH[:]MM`, with or without a space before it (missing: UTC). `None` for anything else
/// or a time before the epoch.
pub fn parse_time(s: &str) -> Option<Millis> {
    let s = s.trim();
    if s.len() > 64 || !s.is_ascii() {
        return None;
    }
    let (date, rest) = s.split_once(' ')?;
    // The zone follows after a space, or directly: `04:16:12Z` (what
    // Pacemaker 2.1.5 prints), `04:16:12+01:00`.
    let (time, zone) = match rest.split_once(' ') {
        Some((t, z)) => (t, Some(z)),
        None => match rest.find(['Z', '+', '-']) {
            Some(i) => (&rest[..i], Some(&rest[i..])),
            None => (rest, None),
        },
    };
    let mut dp = date.split('-');
    let (y, mo, d) = (
        num(dp.next()?, 4)?,
        num(dp.next()?, 2)?,
        num(dp.next()?, 2)?,
    );
    if dp.next().is_some() || !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let (hms, frac) = match time.split_once('.') {
        Some((a, f)) => (a, Some(f)),
        None => (time, None),
    };
    let mut tp = hms.split(':');
    let (h, mi, sec) = (
        num(tp.next()?, 2)?,
        num(tp.next()?, 2)?,
        num(tp.next()?, 2)?,
    );
    if tp.next().is_some() || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let frac_ms = match frac {
        None => 0,
        Some(f) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) => {
            let padded = format!("{f:0<3}");
            padded[..3].parse::<i64>().ok()?
        }
        Some(_) => return None,
    };
    let offset_s = match zone {
        None | Some("Z") | Some("UTC") => 0,
        Some(z) => {
            let (sign, digits) = match z.as_bytes().first()? {
                b'+' => (1, &z[1..]),
                b'-' => (-1, &z[1..]),
                _ => return None,
            };
            let digits = digits.replace(':', "");
            let hh = num(digits.get(..2)?, 2)?;
            let mm = num(digits.get(2..)?, 2)?;
            if hh > 14 || mm > 59 {
                return None;
            }
            sign * (hh * 3600 + mm * 60)
        }
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    let ms = secs.checked_mul(1000)?.checked_add(frac_ms)?;
    Millis::try_from(ms).ok()
}

#[cfg(test)]
mod tests;
