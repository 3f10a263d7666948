//! A recording stand-in for the engine: the listener tests check what the
//! listeners hand to the engine, not the engine's routing (tested with
//! the engine). Used by the unit tests here and by tests/fence_listeners.rs
//! (through the `fixtures` feature).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::FenceService;
use crate::engine::model::ClaimOutcome;
use crate::engine::{FenceAnswer, FenceCall};
use fenceline_proto::api::{
    Counters, DomainState, DomainView, FenceResult, Link, LocalView, Snapshot,
};

/// The stand-in for the engine: records every call, answers per domain.
#[derive(Clone, Default)]
pub struct Recorder {
    pub calls: Arc<Mutex<Vec<FenceCall>>>,
    pub domains: Arc<Vec<DomainView>>,
    /// Answer per domain (default ok).
    pub answers: Arc<HashMap<String, FenceResult>>,
    /// How long the "engine" takes per domain (default at once).
    pub delays: Arc<HashMap<String, Duration>>,
    /// The claim outcome per domain (default: this node won).
    pub claims: Arc<HashMap<String, ClaimOutcome>>,
    /// Every claim asked: (run id, domain).
    pub claim_calls: Arc<Mutex<Vec<(String, String)>>>,
}

impl Recorder {
    /// The calls recorded so far.
    pub fn calls(&self) -> Vec<FenceCall> {
        self.calls.lock().unwrap().clone()
    }
}

impl FenceService for Recorder {
    fn fence(&self, call: FenceCall) -> impl Future<Output = FenceAnswer> + Send {
        let result = self
            .answers
            .get(&call.domain)
            .copied()
            .unwrap_or(FenceResult::Ok);
        let delay = self.delays.get(&call.domain).copied();
        self.calls.lock().unwrap().push(call);
        async move {
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            FenceAnswer {
                result,
                acted_by: Some(1),
                duration_ms: 1,
                detail: None,
            }
        }
    }

    fn claim(&self, claim: String, domain: String) -> impl Future<Output = ClaimOutcome> + Send {
        let o = self
            .claims
            .get(&domain)
            .cloned()
            .unwrap_or(ClaimOutcome::Won);
        self.claim_calls.lock().unwrap().push((claim, domain));
        async move { o }
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        Arc::new(Snapshot {
            version: 1,
            generated_at: 0,
            cluster_name: Some("test".into()),
            local_nodeid: Some(1),
            quorate: true,
            expected_votes: None,
            total_votes: None,
            quorum: None,
            stale: false,
            corosync: Link {
                connected: true,
                since: 0,
                error: None,
            },
            nodes: vec![],
            domains: (*self.domains).clone(),
            libvirt: vec![],
            networks: vec![],
            counters: Counters::default(),
            daemon_version: "test".into(),
            // A healthy host: `monitor` answers ok.
            local: LocalView {
                fence_group: true,
                own_group: true,
                inventory_complete: true,
                listeners: vec![],
            },
        })
    }
}

/// A domain in the cluster's map, owned by node `owner`.
pub fn domain(name: &str, uuid: &str, state: DomainState, owner: u32) -> DomainView {
    DomainView {
        name: name.into(),
        uuid: uuid.into(),
        state,
        owner: Some(owner),
        since: 0,
        uri: None,
        conflict: false,
        migrating: None,
        placements: vec![],
    }
}
