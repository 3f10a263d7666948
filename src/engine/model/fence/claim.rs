//! One connect-back per fence_xvm multicast run, cluster-wide.
//!
//! fence_xvm listens for the connect-back on one fixed TCP port and accepts
//! the first connection; every host that receives its multicast would
//! connect back, and a late connect-back is then accepted by the *next*
//! fence_xvm process, which gets another request's answer (the
//! challenge/response does not bind the answer to the request). So the
//! fenceline hosts that receive a verified request agree first, over the
//! own CPG group, which one of them connects back:
//!
//! - The request's identity is its run id
//!   ([`FenceRequest::round_id`](fenceline_proto::fence_xvm::FenceRequest::round_id)):
//!   what every packet of one fence_xvm run shares, on every interface and
//!   every retransmission, so all hosts see the same id.
//! - The preferred node ([`Cluster::claim_preferred`]: the fenceline node
//!   where the VM is active, else the lowest fenceline node that defines
//!   it, else the lowest fenceline node in the own group) sends an
//!   [`OwnMessage::Claim`] at once; the others only after [`CLAIM_DELAY_MS`]
//!   if no claim for that id was delivered by then. The common case costs
//!   one CPG round.
//! - The first claim delivered in total order wins, on every node; later
//!   ones lose. Only the winner connects back ([`ClaimOutcome::Won`]); the
//!   others drop the request quietly ([`ClaimOutcome::Lost`]). A
//!   retransmission of the same run is answered from the table: the winner
//!   connects back again (its first connect-back failed, or fence_xvm would
//!   not retransmit), the others stay silent.
//! - No decision within [`CLAIM_TIMEOUT_MS`], no quorum, or this node not in
//!   the own group: [`ClaimOutcome::Unavailable`]; nobody here connects
//!   back, fence_xvm times out (a safe failure).
//! - Decided ids are kept [`CLAIM_TTL_MS`] (longer than fence_xvm's default
//!   30 s of retransmissions), at most [`MAX_CLAIMS`] of them; the oldest go
//!   first, counted (`claims_evicted`).
//!
//! Known limit: CPG's total order holds within a component. When a partition
//! forms during a claim round, a node that still believes itself quorate can
//! win in its component while the majority picks another winner: two
//! connect-backs for that run, as before this room existed. Not covered by
//! the simulator (its requests do not come from multicast listeners).
//!
//! Pure: time comes from the inputs (`Input::ClaimAsk`, the delivery, and
//! `Input::Tick` while [`Cluster::claims_busy`]).

use std::collections::{BTreeMap, VecDeque};

use super::super::{Cluster, Effect, Output, OwnMessage};
use fenceline_proto::api::{Millis, NodeId};

/// Non-preferred nodes wait this long for the preferred node's claim.
pub const CLAIM_DELAY_MS: Millis = 150;
/// A request without a decision after this long is not connected back.
pub const CLAIM_TIMEOUT_MS: Millis = 1_500;
/// How long a decided id is remembered.
pub const CLAIM_TTL_MS: Millis = 120_000;
/// Ids remembered at most.
pub const MAX_CLAIMS: usize = 4_096;
/// The longest id accepted from a peer (ours are 32 hex digits).
pub const MAX_CLAIM_ID: usize = 64;

/// What the listener may do with a multicast request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// This node connects back.
    Won,
    /// That node claimed it first; stay silent.
    Lost(NodeId),
    /// No decision: do not connect back (the reason is logged and counted).
    Unavailable(String),
}

#[derive(Debug, Clone)]
struct Entry {
    /// The first delivered claim.
    winner: Option<NodeId>,
    /// Local callers waiting for the decision.
    waiters: Vec<u64>,
    /// When our own claim goes out (`None`: sent, or not ours to send).
    due: Option<Millis>,
    /// Waiters get `Unavailable` after this.
    deadline: Millis,
}

/// The claim table inside [`Cluster`].
#[derive(Debug, Clone, Default)]
pub(in crate::engine::model) struct Claims {
    entries: BTreeMap<String, Entry>,
    /// Ids in the order they were first seen (with that time), for expiry
    /// and eviction; every id in `entries` is here exactly once.
    order: VecDeque<(Millis, String)>,
}

impl Claims {
    fn undecided_work(&self) -> bool {
        self.entries
            .values()
            .any(|e| e.winner.is_none() && (e.due.is_some() || !e.waiters.is_empty()))
    }
}

/// A well-formed claim id: 1 to [`MAX_CLAIM_ID`] hex digits.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_CLAIM_ID && id.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Cluster {
    /// True while a claim waits for its delivery or its delay (the state
    /// task sends `Tick`s then).
    pub fn claims_busy(&self) -> bool {
        self.fence.claims.undecided_work()
    }

    /// A listener asks whether it may connect back for run `claim` of a
    /// request for `domain`; answered by `Effect::ClaimDone` `id`, now or
    /// when the decision is delivered.
    pub(in crate::engine::model) fn claim_ask(
        &mut self,
        at: Millis,
        id: u64,
        claim: String,
        domain: &str,
        out: &mut Output,
    ) {
        out.changed = true;
        if !self.cfg.fence.cpg {
            // The libvirt backend: no cluster to agree with.
            return self.claim_done(id, ClaimOutcome::Won, out);
        }
        let me = self.local_nodeid;
        let why = if !valid_id(&claim) {
            Some("malformed claim id".to_string())
        } else if !self.quorate() {
            Some("no quorum: not claiming the connect-back".into())
        } else if !me.is_some_and(|me| self.is_fenceline_peer(me)) {
            Some("not in fenceline's own CPG group yet".into())
        } else {
            None
        };
        if let Some(why) = why {
            return self.claim_done(id, ClaimOutcome::Unavailable(why), out);
        }
        self.expire_claims(at, out);
        if let Some(e) = self.fence.claims.entries.get_mut(&claim) {
            match e.winner {
                Some(w) => {
                    let o = self.outcome_for(w);
                    self.claim_done(id, o, out);
                }
                None => {
                    e.waiters.push(id);
                    e.deadline = e.deadline.max(at + CLAIM_TIMEOUT_MS);
                }
            }
            return;
        }
        let now = self.claim_preferred(domain);
        if now {
            out.effects
                .push(Effect::Own(OwnMessage::Claim { id: claim.clone() }));
        }
        self.insert_claim(
            at,
            claim,
            Entry {
                winner: None,
                waiters: vec![id],
                due: (!now).then_some(at + CLAIM_DELAY_MS),
                deadline: at + CLAIM_TIMEOUT_MS,
            },
            out,
        );
    }

    /// A claim was delivered (ours too, in total order): the first one for
    /// an id wins; later ones lose.
    pub(in crate::engine::model) fn claim_delivered(
        &mut self,
        at: Millis,
        from: NodeId,
        claim: String,
        out: &mut Output,
    ) {
        if !valid_id(&claim) {
            self.counters.malformed_own += 1;
            out.changed = true;
            return;
        }
        self.expire_claims(at, out);
        let Some(e) = self.fence.claims.entries.get_mut(&claim) else {
            // Not received here (yet): remember who won, so a copy that
            // arrives late is not connected back.
            let e = Entry {
                winner: Some(from),
                waiters: Vec::new(),
                due: None,
                deadline: at,
            };
            return self.insert_claim(at, claim, e, out);
        };
        if e.winner.is_some() {
            return;
        }
        e.winner = Some(from);
        e.due = None;
        let waiters = std::mem::take(&mut e.waiters);
        let o = self.outcome_for(from);
        for w in waiters {
            self.claim_done(w, o.clone(), out);
        }
    }

    /// Delayed claims go out; undecided requests past their deadline are
    /// answered `Unavailable`; old ids expire.
    pub(in crate::engine::model) fn claims_tick(&mut self, at: Millis, out: &mut Output) {
        self.expire_claims(at, out);
        let mut done = Vec::new();
        for (claim, e) in self.fence.claims.entries.iter_mut() {
            if e.winner.is_some() {
                continue;
            }
            if e.due.is_some_and(|d| d <= at) {
                e.due = None;
                out.effects
                    .push(Effect::Own(OwnMessage::Claim { id: claim.clone() }));
            }
            if !e.waiters.is_empty() && e.deadline <= at {
                done.append(&mut e.waiters);
            }
        }
        let why = format!(
            "no claim for the connect-back was delivered within {CLAIM_TIMEOUT_MS} ms \
             (fenceline's own CPG group is slow or unavailable)"
        );
        for w in done {
            self.claim_done(w, ClaimOutcome::Unavailable(why.clone()), out);
        }
    }

    /// Who claims first: the fenceline node where the VM is active, else
    /// the lowest fenceline node that defines it, else the lowest fenceline
    /// node in the own group. Nodes may disagree (their maps differ for a
    /// moment): then both claim at once, and the total order still picks one.
    pub(in crate::engine::model) fn claim_preferred(&self, domain: &str) -> bool {
        let Some(me) = self.local_nodeid else {
            return false;
        };
        let fenceline = |n: &NodeId| *n == me || self.is_fenceline_peer(*n);
        if let Some(n) = self.live_active(domain).iter().find(|n| fenceline(n)) {
            return *n == me;
        }
        let (_, mut all) = self.holders(domain).unwrap_or_default();
        if self.find_local(domain).is_some() {
            all.insert(me);
        }
        if let Some(n) = all.iter().find(|n| fenceline(n)) {
            return *n == me;
        }
        let lowest = self
            .nodes
            .iter()
            .filter(|(_, n)| n.member && !n.own_pids.is_empty())
            .map(|(id, _)| *id)
            .min();
        lowest.is_none_or(|l| l == me)
    }

    fn outcome_for(&self, winner: NodeId) -> ClaimOutcome {
        if Some(winner) == self.local_nodeid {
            ClaimOutcome::Won
        } else {
            ClaimOutcome::Lost(winner)
        }
    }

    fn claim_done(&mut self, id: u64, outcome: ClaimOutcome, out: &mut Output) {
        let c = &mut self.counters;
        match outcome {
            ClaimOutcome::Won => c.claims_won += 1,
            ClaimOutcome::Lost(_) => c.claims_lost += 1,
            ClaimOutcome::Unavailable(_) => c.claims_unavailable += 1,
        }
        out.changed = true;
        out.effects.push(Effect::ClaimDone { id, outcome });
    }

    fn insert_claim(&mut self, at: Millis, claim: String, e: Entry, out: &mut Output) {
        while self.fence.claims.entries.len() >= MAX_CLAIMS {
            let Some((_, old)) = self.fence.claims.order.pop_front() else {
                break;
            };
            if let Some(gone) = self.fence.claims.entries.remove(&old) {
                self.counters.claims_evicted += 1;
                for w in gone.waiters {
                    let why = "the claim table is full".to_string();
                    self.claim_done(w, ClaimOutcome::Unavailable(why), out);
                }
            }
        }
        self.fence.claims.order.push_back((at, claim.clone()));
        self.fence.claims.entries.insert(claim, e);
        out.changed = true;
    }

    /// Forgets ids first seen more than [`CLAIM_TTL_MS`] ago (their waiters,
    /// if any, were answered long before).
    fn expire_claims(&mut self, at: Millis, out: &mut Output) {
        let claims = &mut self.fence.claims;
        let mut orphans = Vec::new();
        while let Some((first, _)) = claims.order.front() {
            if first.saturating_add(CLAIM_TTL_MS) > at {
                break;
            }
            if let Some((_, id)) = claims.order.pop_front()
                && let Some(e) = claims.entries.remove(&id)
            {
                // Empty in practice (the deadline is far below the TTL).
                orphans.extend(e.waiters);
            }
        }
        for w in orphans {
            let why = "the claim expired".to_string();
            self.claim_done(w, ClaimOutcome::Unavailable(why), out);
        }
    }
}
