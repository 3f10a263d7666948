//! Hides in-place reboots so that a domain's reported state does not flap.
//!
//! libvirt's qemu driver reboots a guest inside the same QEMU process ("fake
//! reboot"). Since 6.0 it hides the details: the state stays `running` and only
//! `VIR_DOMAIN_EVENT_ID_REBOOT` arrives, often 2–3 times about 30 ms apart.
//! Older versions showed `shutdown` (or `paused` with reason shutting-down)
//! for a moment and then `running` again. This filter makes every version look
//! the same: a reboot is one [`Verdict::Rebooted`], never a state change.
//!
//! Rules:
//! - a domain reported running (or blocked) that is now seen in `shutdown`, or
//!   `paused` with reason shutting-down, is *held* for [`FilterConfig::hold_ms`];
//! - back to running (or a REBOOT event) while held: the held transition is
//!   dropped and [`Verdict::Rebooted`] is returned instead;
//! - the hold window expires: the caller re-reads the state and calls
//!   [`RebootFilter::resolve_expired`], which applies it;
//! - any other state (shut off, crashed, paused by the user, ...) is reported
//!   at once and cancels a held transition;
//! - REBOOT events for one domain within [`FilterConfig::reboot_dedup_ms`] of
//!   the last reported reboot collapse into one.
//!
//! The filter is pure: callers pass monotonic timestamps in milliseconds, so
//! tests drive time explicitly.

use std::collections::HashMap;

use fenceline_proto::api::DomainState;

/// Monotonic milliseconds (any fixed origin).
pub type Ms = u64;

/// `VIR_DOMAIN_PAUSED_SHUTTING_DOWN`: paused while the guest shuts down.
pub const PAUSED_SHUTTING_DOWN: i32 = 8;

/// Timing of the filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterConfig {
    /// How long a running → shutdown / paused(shutting-down) transition is held.
    pub hold_ms: Ms,
    /// REBOOT events closer than this to the last reported reboot are duplicates.
    pub reboot_dedup_ms: Ms,
}

impl Default for FilterConfig {
    fn default() -> Self {
        Self {
            hold_ms: 1500,
            reboot_dedup_ms: 1000,
        }
    }
}

/// What the caller must tell the engine after an observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The domain is now in this state (send `LocalDomain`).
    Report(DomainState),
    /// The domain rebooted in place (send `LocalRebooted`).
    Rebooted,
    /// A transition is being held; say nothing yet.
    Held,
    /// Nothing to say: no change, or a duplicate REBOOT.
    Quiet,
}

/// A hold whose window has passed; the caller re-reads the domain and calls
/// [`RebootFilter::resolve_expired`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub uuid: String,
    /// The state that was held (applied if the re-read fails).
    pub held: DomainState,
}

#[derive(Debug, Clone, Copy)]
struct Hold {
    state: DomainState,
    since: Ms,
}

#[derive(Debug, Clone, Default)]
struct Track {
    /// What the engine was last told (or listed) for this domain.
    reported: Option<DomainState>,
    hold: Option<Hold>,
    last_reboot: Option<Ms>,
}

/// Per-connection reboot filter, keyed by domain UUID.
#[derive(Debug, Clone, Default)]
pub struct RebootFilter {
    cfg: FilterConfig,
    doms: HashMap<String, Track>,
}

fn is_up(state: DomainState) -> bool {
    matches!(state, DomainState::Running | DomainState::Blocked)
}

/// True for the states a fake reboot passes through on older libvirt.
pub fn is_transient_stop(state: DomainState, reason: i32) -> bool {
    match state {
        DomainState::Shutdown => true,
        DomainState::Paused => reason == PAUSED_SHUTTING_DOWN,
        _ => false,
    }
}

impl RebootFilter {
    pub fn new(cfg: FilterConfig) -> Self {
        Self {
            cfg,
            doms: HashMap::new(),
        }
    }

    /// A freshly read state (after a lifecycle event or in a full listing).
    pub fn observe(&mut self, now: Ms, uuid: &str, state: DomainState, reason: i32) -> Verdict {
        let dedup = self.cfg.reboot_dedup_ms;
        let t = self.doms.entry(uuid.to_string()).or_default();
        if let Some(hold) = t.hold {
            if is_up(state) {
                t.hold = None;
                return reboot_verdict(t, now, dedup);
            }
            if is_transient_stop(state, reason) {
                // Still on the way down (or shutdown → paused): keep the
                // original window, remember the latest state.
                t.hold = Some(Hold {
                    state,
                    since: hold.since,
                });
                return Verdict::Held;
            }
            t.hold = None;
            return report(t, state);
        }
        if t.reported.is_some_and(is_up) && is_transient_stop(state, reason) {
            t.hold = Some(Hold { state, since: now });
            return Verdict::Held;
        }
        report(t, state)
    }

    /// A `VIR_DOMAIN_EVENT_ID_REBOOT` event.
    pub fn reboot(&mut self, now: Ms, uuid: &str) -> Verdict {
        let dedup = self.cfg.reboot_dedup_ms;
        let t = self.doms.entry(uuid.to_string()).or_default();
        // A REBOOT proves a held transition was part of a reboot, duplicate or not.
        t.hold = None;
        reboot_verdict(t, now, dedup)
    }

    /// The earliest instant at which [`Self::take_expired`] returns something.
    pub fn next_deadline(&self) -> Option<Ms> {
        self.doms
            .values()
            .filter_map(|t| t.hold.map(|h| h.since.saturating_add(self.cfg.hold_ms)))
            .min()
    }

    /// Removes and returns the holds whose window has passed.
    pub fn take_expired(&mut self, now: Ms) -> Vec<Expired> {
        let hold_ms = self.cfg.hold_ms;
        let mut out = Vec::new();
        for (uuid, t) in &mut self.doms {
            if let Some(h) = t.hold
                && now >= h.since.saturating_add(hold_ms)
            {
                t.hold = None;
                out.push(Expired {
                    uuid: uuid.clone(),
                    held: h.state,
                });
            }
        }
        out.sort_by(|a, b| a.uuid.cmp(&b.uuid));
        out
    }

    /// Applies an expired hold given the re-read state (`None` when the
    /// re-read failed: the held state is applied).
    pub fn resolve_expired(
        &mut self,
        now: Ms,
        expired: &Expired,
        reread: Option<DomainState>,
    ) -> Verdict {
        let dedup = self.cfg.reboot_dedup_ms;
        let t = self.doms.entry(expired.uuid.clone()).or_default();
        t.hold = None;
        match reread {
            // Back up without us seeing the event in between: a reboot.
            Some(s) if is_up(s) => reboot_verdict(t, now, dedup),
            Some(s) => report(t, s),
            None => report(t, expired.held),
        }
    }

    /// The state the engine should see for a domain (the pre-hold state while
    /// a transition is held).
    pub fn shown(&self, uuid: &str) -> Option<DomainState> {
        self.doms.get(uuid).and_then(|t| t.reported)
    }

    /// True while a transition of this domain is held.
    pub fn is_held(&self, uuid: &str) -> bool {
        self.doms.get(uuid).is_some_and(|t| t.hold.is_some())
    }

    /// The domain is gone.
    pub fn forget(&mut self, uuid: &str) {
        self.doms.remove(uuid);
    }

    /// Keeps only the domains for which `keep` is true (after a full listing).
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.doms.retain(|k, _| keep(k));
    }

    /// Forgets everything (a new connection).
    pub fn reset(&mut self) {
        self.doms.clear();
    }
}

fn report(t: &mut Track, state: DomainState) -> Verdict {
    if t.reported == Some(state) {
        Verdict::Quiet
    } else {
        t.reported = Some(state);
        Verdict::Report(state)
    }
}

fn reboot_verdict(t: &mut Track, now: Ms, dedup: Ms) -> Verdict {
    if t.last_reboot
        .is_some_and(|last| now.saturating_sub(last) < dedup)
    {
        return Verdict::Quiet;
    }
    t.last_reboot = Some(now);
    Verdict::Rebooted
}

#[cfg(test)]
mod tests {
    use super::*;
    use DomainState::*;

    const U: &str = "6695eb01-f6a4-8304-79aa-97f2502e193f";

    fn running_filter() -> RebootFilter {
        let mut f = RebootFilter::new(FilterConfig::default());
        assert_eq!(f.observe(0, U, Running, 1), Verdict::Report(Running));
        f
    }

    #[test]
    fn first_sight_is_reported_as_is() {
        let mut f = RebootFilter::default();
        assert_eq!(f.observe(5, U, Shutdown, 0), Verdict::Report(Shutdown));
        assert_eq!(f.shown(U), Some(Shutdown));
        assert_eq!(f.observe(6, U, Shutdown, 0), Verdict::Quiet);
    }

    #[test]
    fn new_libvirt_reboot_events_collapse() {
        let mut f = running_filter();
        assert_eq!(f.reboot(10_000, U), Verdict::Rebooted);
        assert_eq!(f.reboot(10_030, U), Verdict::Quiet);
        assert_eq!(f.reboot(10_061, U), Verdict::Quiet);
        assert_eq!(f.observe(10_070, U, Running, 1), Verdict::Quiet);
        // A later reboot is a new one.
        assert_eq!(f.reboot(11_100, U), Verdict::Rebooted);
        assert_eq!(f.shown(U), Some(Running));
    }

    #[test]
    fn dedup_window_is_anchored_at_the_reported_reboot() {
        let mut f = running_filter();
        assert_eq!(f.reboot(1000, U), Verdict::Rebooted);
        assert_eq!(f.reboot(1999, U), Verdict::Quiet);
        assert_eq!(f.reboot(2000, U), Verdict::Rebooted);
    }

    #[test]
    fn old_libvirt_shutdown_reboot_resumed() {
        let mut f = running_filter();
        assert_eq!(f.observe(1000, U, Shutdown, 1), Verdict::Held);
        assert!(f.is_held(U));
        assert_eq!(f.shown(U), Some(Running));
        assert_eq!(f.reboot(1040, U), Verdict::Rebooted);
        assert!(!f.is_held(U));
        assert_eq!(f.observe(1100, U, Running, 1), Verdict::Quiet);
        assert_eq!(f.next_deadline(), None);
        assert!(f.take_expired(5000).is_empty());
    }

    #[test]
    fn back_to_running_within_window_without_reboot_event() {
        let mut f = running_filter();
        assert_eq!(f.observe(1000, U, Shutdown, 0), Verdict::Held);
        assert_eq!(f.next_deadline(), Some(2500));
        assert_eq!(f.observe(1300, U, Running, 1), Verdict::Rebooted);
        // The REBOOT event that follows is a duplicate.
        assert_eq!(f.reboot(1310, U), Verdict::Quiet);
        assert_eq!(f.next_deadline(), None);
    }

    #[test]
    fn paused_shutting_down_is_held_but_user_pause_is_not() {
        let mut f = running_filter();
        assert_eq!(
            f.observe(1000, U, Paused, PAUSED_SHUTTING_DOWN),
            Verdict::Held
        );
        assert_eq!(f.observe(1200, U, Running, 1), Verdict::Rebooted);

        let mut f = running_filter();
        // VIR_DOMAIN_PAUSED_USER = 1
        assert_eq!(f.observe(1000, U, Paused, 1), Verdict::Report(Paused));
        assert_eq!(f.observe(2000, U, Running, 5), Verdict::Report(Running));
    }

    #[test]
    fn shutdown_then_paused_shutting_down_keeps_one_window() {
        let mut f = running_filter();
        assert_eq!(f.observe(1000, U, Shutdown, 1), Verdict::Held);
        assert_eq!(
            f.observe(1400, U, Paused, PAUSED_SHUTTING_DOWN),
            Verdict::Held
        );
        assert_eq!(f.next_deadline(), Some(2500));
        let exp = f.take_expired(2500);
        assert_eq!(
            exp,
            vec![Expired {
                uuid: U.into(),
                held: Paused
            }]
        );
    }

    #[test]
    fn shutoff_is_immediate_and_cancels_a_hold() {
        let mut f = running_filter();
        assert_eq!(f.observe(1000, U, Shutdown, 1), Verdict::Held);
        assert_eq!(f.observe(1250, U, Shutoff, 1), Verdict::Report(Shutoff));
        assert!(!f.is_held(U));
        assert!(f.take_expired(10_000).is_empty());
        // And from running directly.
        let mut f = running_filter();
        assert_eq!(f.observe(10, U, Crashed, 1), Verdict::Report(Crashed));
    }

    #[test]
    fn expired_hold_is_applied_after_reread() {
        let mut f = running_filter();
        assert_eq!(f.observe(1000, U, Shutdown, 1), Verdict::Held);
        assert!(f.take_expired(2499).is_empty());
        let exp = f.take_expired(2500);
        assert_eq!(exp.len(), 1);
        assert_eq!(
            f.resolve_expired(2501, &exp[0], Some(Shutdown)),
            Verdict::Report(Shutdown)
        );
        assert_eq!(f.shown(U), Some(Shutdown));
        // Now in shutdown: a later shutoff is a plain change.
        assert_eq!(f.observe(3000, U, Shutoff, 1), Verdict::Report(Shutoff));
    }

    #[test]
    fn expired_hold_found_running_is_a_reboot() {
        let mut f = running_filter();
        f.observe(1000, U, Shutdown, 1);
        let exp = f.take_expired(3000);
        assert_eq!(
            f.resolve_expired(3000, &exp[0], Some(Running)),
            Verdict::Rebooted
        );
        assert_eq!(f.shown(U), Some(Running));
    }

    #[test]
    fn expired_hold_found_shutoff_or_unreadable() {
        let mut f = running_filter();
        f.observe(1000, U, Shutdown, 1);
        let exp = f.take_expired(3000);
        assert_eq!(
            f.resolve_expired(3000, &exp[0], Some(Shutoff)),
            Verdict::Report(Shutoff)
        );

        let mut f = running_filter();
        f.observe(1000, U, Paused, PAUSED_SHUTTING_DOWN);
        let exp = f.take_expired(3000);
        assert_eq!(
            f.resolve_expired(3000, &exp[0], None),
            Verdict::Report(Paused)
        );
    }

    #[test]
    fn duplicate_reboot_still_clears_a_hold() {
        let mut f = running_filter();
        assert_eq!(f.reboot(1000, U), Verdict::Rebooted);
        assert_eq!(f.observe(1030, U, Shutdown, 1), Verdict::Held);
        assert_eq!(f.reboot(1060, U), Verdict::Quiet);
        assert!(!f.is_held(U));
        assert_eq!(f.observe(1100, U, Running, 1), Verdict::Quiet);
    }

    #[test]
    fn domains_are_independent_and_forgettable() {
        const V: &str = "11111111-2222-3333-4444-555555555555";
        let mut f = running_filter();
        assert_eq!(f.observe(0, V, Running, 1), Verdict::Report(Running));
        assert_eq!(f.reboot(100, U), Verdict::Rebooted);
        assert_eq!(f.reboot(110, V), Verdict::Rebooted);
        f.observe(200, V, Shutdown, 1);
        f.retain(|u| u == V);
        assert_eq!(f.shown(U), None);
        assert!(f.is_held(V));
        f.forget(V);
        assert_eq!(f.next_deadline(), None);
        f.observe(0, U, Running, 1);
        f.reset();
        assert_eq!(f.shown(U), None);
    }

    #[test]
    fn shutdown_from_paused_is_not_held() {
        let mut f = running_filter();
        assert_eq!(f.observe(100, U, Paused, 1), Verdict::Report(Paused));
        assert_eq!(f.observe(200, U, Shutdown, 1), Verdict::Report(Shutdown));
    }
}
