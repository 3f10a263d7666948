//! A recording stand-in for the engine: the listener tests check what the
//! listeners hand to the engine, not the engine's routing (tested with
//! the engine). Used in unit tests here and mirrored in
//! tests/fence_listeners.rs.

use std::future::Future;
use std::sync::{Arc, Mutex};

use super::FenceService;
use crate::engine::{FenceAnswer, FenceCall};
use fenceline_proto::api::{Counters, DomainState, DomainView, FenceResult, Link, Snapshot};

#[derive(Clone, Default)]
pub struct Recorder {
    pub calls: Arc<Mutex<Vec<FenceCall>>>,
    pub domains: Arc<Vec<DomainView>>,
    pub answer: Option<FenceResult>,
}

impl FenceService for Recorder {
    fn fence(&self, call: FenceCall) -> impl Future<Output = FenceAnswer> + Send {
        self.calls.lock().unwrap().push(call);
        let result = self.answer.unwrap_or(FenceResult::Ok);
        async move {
            FenceAnswer {
                result,
                acted_by: Some(1),
                duration_ms: 0,
                detail: None,
            }
        }
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        Arc::new(Snapshot {
            version: 1,
            generated_at: 0,
            cluster_name: None,
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
        })
    }
}

pub fn domain(name: &str, uuid: &str, state: DomainState) -> DomainView {
    DomainView {
        name: name.into(),
        uuid: uuid.into(),
        state,
        owner: Some(1),
        since: 0,
        uri: None,
        conflict: false,
        placements: vec![],
    }
}
