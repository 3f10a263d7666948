//! Carries out the fence router's local actions ([`FenceAct`]) on the URI
//! workers and reports each outcome to the engine (`Input::FenceActed`).
//!
//! Result mapping (fence_virtd's, except where it had bugs):
//! - status: active → ok, shut off or gone → off, no state → fail;
//! - off: shut off afterwards (or gone: a transient VM that vanished, which
//!   the router checks against the map again) → ok; a domain in no state is
//!   destroyed like a running one (it may be running), never reported off;
//! - on: active afterwards → ok;
//! - reboot: destroyed and started again → ok; a shut-off VM stays off → ok;
//!   destroyed but the restart failed → ok with the failure in the detail
//!   (the guest was fenced; fence_virtd does the same).

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{CommandError, Commander, DomainRef, LibvirtCommand};
use crate::engine::InputTx;
use crate::engine::model::{FenceAct, Input};
use fenceline_proto::api::{DomainState, FenceOp, FenceResult, now_millis};

/// How long one action may take on the worker.
#[derive(Debug, Clone, Copy)]
pub struct ActTimeouts {
    pub op: Duration,
    pub reboot: Duration,
}

/// Runs until `cancel` or until the engine drops the sender.
pub async fn run_fence_actions(
    commander: Commander,
    mut acts: mpsc::Receiver<FenceAct>,
    inputs: InputTx,
    timeouts: ActTimeouts,
    cancel: CancellationToken,
) {
    loop {
        let act = tokio::select! {
            _ = cancel.cancelled() => return,
            a = acts.recv() => match a { Some(a) => a, None => return },
        };
        let commander = commander.clone();
        let inputs = inputs.clone();
        tokio::spawn(async move {
            let job = act.job;
            let Performed {
                result,
                detail,
                not_found,
                migrated,
            } = perform(&commander, &act, timeouts).await;
            tracing::info!(job, op = %act.op, domain = %act.name, uri = %act.uri, %result, detail = detail.as_deref().unwrap_or(""), "fence action done");
            inputs
                .send(Input::FenceActed {
                    at: now_millis(),
                    job,
                    result,
                    detail,
                    not_found,
                    migrated,
                })
                .await;
        });
    }
}

/// Destroy (or, for reboot, destroy and start) a domain in this state:
/// anything but shut off, "no state" included (it may be running).
pub(super) fn must_destroy(state: DomainState) -> bool {
    state != DomainState::Shutoff
}

/// What one local action found.
struct Performed {
    result: FenceResult,
    detail: Option<String>,
    /// libvirt did not find the domain.
    not_found: bool,
    /// libvirt says the copy is shut off because it migrated away.
    migrated: bool,
}

impl Performed {
    fn fail(detail: String) -> Self {
        Performed {
            result: FenceResult::Fail,
            detail: Some(detail),
            not_found: false,
            migrated: false,
        }
    }
}

async fn perform(commander: &Commander, act: &FenceAct, timeouts: ActTimeouts) -> Performed {
    let Some(index) = commander.uri_index(&act.uri) else {
        return Performed::fail(format!("no libvirt worker serves {}", act.uri));
    };
    let target = if act.uuid.is_empty() {
        DomainRef::Name(act.name.clone())
    } else {
        DomainRef::Uuid(act.uuid.to_ascii_lowercase())
    };
    let (cmd, timeout) = match act.op {
        FenceOp::Status => (LibvirtCommand::State(target), timeouts.op),
        FenceOp::Off => (LibvirtCommand::Destroy(target), timeouts.op),
        FenceOp::On => (LibvirtCommand::Start(target), timeouts.op),
        FenceOp::Reboot => (LibvirtCommand::Reboot(target), timeouts.reboot),
        other => return Performed::fail(format!("`{other}` is not a libvirt action")),
    };
    tracing::info!(op = %act.op, domain = %act.name, uri = %act.uri, "fence action");
    let r = commander.execute_timeout(index, cmd, timeout).await;
    let not_found = matches!(r, Err(CommandError::NotFound(_)));
    let migrated = matches!(&r, Ok(d) if d.migrated);
    let (result, detail) = map_result(act.op, r);
    Performed {
        result,
        detail,
        not_found,
        migrated,
    }
}

fn map_result(
    op: FenceOp,
    r: Result<super::CommandReply, CommandError>,
) -> (FenceResult, Option<String>) {
    match (op, r) {
        (FenceOp::Status, Ok(d)) if d.state.is_active() => (FenceResult::Ok, None),
        (FenceOp::Status, Ok(d)) if d.state == DomainState::Nostate => (
            FenceResult::Fail,
            Some("libvirt reports no state: it may be running; refusing to answer off".into()),
        ),
        (FenceOp::Status, Ok(d)) => (FenceResult::Off, Some(format!("state {}", d.state))),
        (FenceOp::Status, Err(CommandError::NotFound(_))) => {
            (FenceResult::Off, Some("no longer defined".into()))
        }
        (FenceOp::Off, Ok(d)) if d.state == DomainState::Shutoff => (FenceResult::Ok, None),
        (FenceOp::Off, Ok(d)) => (
            FenceResult::Fail,
            Some(format!("still {} after destroy", d.state)),
        ),
        (FenceOp::Off, Err(CommandError::NotFound(_))) => (
            FenceResult::Ok,
            Some("vanished (a transient VM that stopped)".into()),
        ),
        (FenceOp::On, Ok(d)) if d.state.is_active() => (FenceResult::Ok, None),
        (FenceOp::On, Ok(d)) => (
            FenceResult::Fail,
            Some(format!("still {} after start", d.state)),
        ),
        (FenceOp::Reboot, Ok(d)) if d.state.is_active() => (FenceResult::Ok, None),
        (FenceOp::Reboot, Ok(d)) if d.state == DomainState::Shutoff => (
            FenceResult::Ok,
            Some("it was shut off; a fenced VM that is off stays off".into()),
        ),
        (FenceOp::Reboot, Err(CommandError::RestartFailed(e))) => (
            FenceResult::Ok,
            Some(format!("powered off, but the restart failed: {e}")),
        ),
        (FenceOp::Reboot, Err(CommandError::NotFound(_))) => (
            FenceResult::Ok,
            Some("vanished before the reboot (a transient VM): it is not running".into()),
        ),
        (_, Err(e)) => (FenceResult::Fail, Some(e.to_string())),
        (_, Ok(d)) => (
            FenceResult::Fail,
            Some(format!("unexpected state {}", d.state)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::libvirt::CommandReply;

    fn reply(state: DomainState) -> Result<CommandReply, CommandError> {
        Ok(CommandReply {
            name: "vm".into(),
            uuid: "u".into(),
            state,
            migrated: false,
        })
    }

    #[test]
    fn results_follow_fence_virt_with_the_fixes() {
        use DomainState::*;
        use FenceOp as O;
        use FenceResult as R;
        let cases = [
            (O::Status, reply(Running), R::Ok),
            (O::Status, reply(Paused), R::Ok),
            (O::Status, reply(Shutoff), R::Off),
            (O::Status, Err(CommandError::NotFound("x".into())), R::Off),
            (O::Off, reply(Shutoff), R::Ok),
            (O::Off, reply(Running), R::Fail),
            (O::Off, Err(CommandError::NotFound("x".into())), R::Ok),
            (O::Off, Err(CommandError::Timeout), R::Fail),
            (O::On, reply(Running), R::Ok),
            (O::On, reply(Shutoff), R::Fail),
            (O::On, Err(CommandError::NotFound("x".into())), R::Fail),
            (O::Reboot, reply(Running), R::Ok),
            (O::Reboot, reply(Shutoff), R::Ok),
            // No state: it may be running. Never "off", never "ok" unless
            // libvirt reports it shut off after the destroy.
            (O::Status, reply(Nostate), R::Fail),
            (O::Off, reply(Nostate), R::Fail),
            (O::Reboot, reply(Nostate), R::Fail),
            (
                O::Reboot,
                Err(CommandError::RestartFailed("no".into())),
                R::Ok,
            ),
            (
                O::Reboot,
                Err(CommandError::Libvirt("denied".into())),
                R::Fail,
            ),
            (
                O::Reboot,
                Err(CommandError::NotConnected("u".into())),
                R::Fail,
            ),
        ];
        for (op, r, want) in cases {
            let dbg = format!("{op} {r:?}");
            assert_eq!(map_result(op, r).0, want, "{dbg}");
        }
    }

    #[test]
    fn a_domain_in_no_state_is_destroyed_like_a_running_one() {
        use DomainState::*;
        for s in [
            Nostate,
            Running,
            Paused,
            Blocked,
            Shutdown,
            Crashed,
            Pmsuspended,
        ] {
            assert!(must_destroy(s), "{s}");
        }
        assert!(!must_destroy(Shutoff));
    }
}
