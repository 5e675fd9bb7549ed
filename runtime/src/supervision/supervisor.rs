//! The [`Supervisor`] actor: starts its children in order, watches them, restarts them.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use ractor::{
    Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr, SupervisionEvent,
};

use super::current::Current;
use super::policy::{Backoff, Intensity, Restart, RestartWindow, Strategy};
use crate::metrics;

/// How long a sibling stopped by a one-for-all or rest-for-one restart gets to finish its
/// current message before it is killed.
const SIBLING_STOP_TIMEOUT: Duration = Duration::from_secs(5);

type StartFn =
    Arc<dyn Fn(ActorCell) -> BoxFuture<'static, Result<ActorCell, SpawnErr>> + Send + Sync>;

/// How to (re)start one child: an id for logs and metrics, a restart type and a start function
/// that spawns the child linked to the supervisor cell it is given.
#[derive(Clone)]
pub struct ChildSpec {
    pub id: String,
    pub restart: Restart,
    start: StartFn,
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("id", &self.id)
            .field("restart", &self.restart)
            .finish_non_exhaustive()
    }
}

impl ChildSpec {
    /// A child started by `start(supervisor)`, which must link what it spawns to `supervisor`.
    pub fn new<F, Fut>(id: impl Into<String>, restart: Restart, start: F) -> Self
    where
        F: Fn(ActorCell) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ActorCell, SpawnErr>> + Send + 'static,
    {
        Self {
            id: id.into(),
            restart,
            start: Arc::new(move |supervisor| Box::pin(start(supervisor))),
        }
    }

    /// A child that is one actor, built afresh by `make` for every (re)start.
    pub fn actor<T, F>(id: impl Into<String>, restart: Restart, make: F) -> Self
    where
        T: Actor,
        F: Fn() -> (T, T::Arguments) + Send + Sync + 'static,
    {
        Self::new(id, restart, move |supervisor| {
            let (handler, args) = make();
            async move {
                let (actor, _) = T::spawn_linked(None, handler, args, supervisor).await?;
                Ok(actor.get_cell())
            }
        })
    }

    /// Like [`ChildSpec::actor`], publishing every incarnation into `current`, so that the
    /// handles holding it reach the actor after a restart.
    pub fn published<T, F>(
        id: impl Into<String>,
        restart: Restart,
        current: Current<T::Msg>,
        make: F,
    ) -> Self
    where
        T: Actor,
        F: Fn() -> (T, T::Arguments) + Send + Sync + 'static,
    {
        Self::new(id, restart, move |supervisor| {
            let (handler, args) = make();
            let current = current.clone();
            async move {
                let (actor, _) = T::spawn_linked(None, handler, args, supervisor).await?;
                current.set(actor.clone());
                Ok(actor.get_cell())
            }
        })
    }
}

/// A supervisor's configuration.
#[derive(Debug, Clone)]
pub struct SupervisorSpec {
    pub name: String,
    pub strategy: Strategy,
    pub intensity: Intensity,
    pub backoff: Backoff,
    /// Started in this order, stopped in the reverse order.
    pub children: Vec<ChildSpec>,
}

/// What a supervisor reports about one child.
#[derive(Debug, Clone)]
pub struct ChildStatus {
    pub id: String,
    /// `None` while the child is down (waiting out a backoff, or not to be restarted).
    pub actor: Option<ActorCell>,
    pub restarts: u64,
}

pub enum SupervisorMsg {
    /// The children, in start order.
    Children(RpcReplyPort<Vec<ChildStatus>>),
    /// Internal: a backoff has elapsed, (re)start these children in order.
    StartChildren(Vec<usize>),
}

impl fmt::Debug for SupervisorMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SupervisorMsg::Children(_) => f.write_str("Children"),
            SupervisorMsg::StartChildren(which) => write!(f, "StartChildren({which:?})"),
        }
    }
}

impl ractor::Message for SupervisorMsg {}

/// Asks a supervisor for its children (a convenience over [`SupervisorMsg::Children`]).
pub async fn children_of(
    supervisor: &ActorRef<SupervisorMsg>,
) -> Result<Vec<ChildStatus>, ractor::RactorErr<SupervisorMsg>> {
    ractor::call!(supervisor, SupervisorMsg::Children)
}

/// The supervisor actor. Spawn it with [`Supervisor::start`].
#[derive(Debug, Default)]
pub struct Supervisor;

#[derive(Debug)]
struct Slot {
    spec: ChildSpec,
    current: Option<ActorCell>,
    restarts: u64,
}

#[derive(Debug)]
pub struct SupervisorState {
    name: String,
    strategy: Strategy,
    backoff: Backoff,
    window: RestartWindow,
    slots: Vec<Slot>,
}

impl Supervisor {
    /// Starts a supervisor and all its children; linked to `parent` when given.
    pub async fn start(
        spec: SupervisorSpec,
        parent: Option<ActorCell>,
    ) -> Result<ActorRef<SupervisorMsg>, SpawnErr> {
        // Unnamed: ractor's registry is process-global, and several nodes may share a process.
        let (actor, _) = match parent {
            Some(parent) => Supervisor::spawn_linked(None, Supervisor, spec, parent).await?,
            None => Supervisor::spawn(None, Supervisor, spec).await?,
        };
        Ok(actor)
    }

    /// A [`ChildSpec`] that runs a whole supervisor as the child of another.
    pub fn child_spec(spec: SupervisorSpec) -> ChildSpec {
        let id = spec.name.clone();
        ChildSpec::new(id, Restart::Permanent, move |parent| {
            let spec = spec.clone();
            async move { Ok(Supervisor::start(spec, Some(parent)).await?.get_cell()) }
        })
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorSpec;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        spec: SupervisorSpec,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut state = SupervisorState {
            name: spec.name,
            strategy: spec.strategy,
            backoff: spec.backoff,
            window: RestartWindow::new(spec.intensity),
            slots: spec
                .children
                .into_iter()
                .map(|spec| Slot {
                    spec,
                    current: None,
                    restarts: 0,
                })
                .collect(),
        };
        for index in 0..state.slots.len() {
            let spec = &state.slots[index].spec;
            match (spec.start)(myself.get_cell()).await {
                Ok(cell) => state.slots[index].current = Some(cell),
                Err(error) => {
                    let child = spec.id.clone();
                    stop_children(&mut state, 0..index).await;
                    return Err(format!(
                        "supervisor {}: child {child} failed to start: {error}",
                        state.name
                    )
                    .into());
                }
            }
        }
        tracing::debug!(supervisor = %state.name, children = state.slots.len(), "supervisor started");
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let all = 0..state.slots.len();
        stop_children(state, all).await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Children(reply) => {
                let children = state
                    .slots
                    .iter()
                    .map(|slot| ChildStatus {
                        id: slot.spec.id.clone(),
                        actor: slot.current.clone(),
                        restarts: slot.restarts,
                    })
                    .collect();
                let _ = reply.send(children);
                Ok(())
            }
            SupervisorMsg::StartChildren(indices) => start_children(&myself, state, indices).await,
        }
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failure) = match event {
            SupervisionEvent::ActorFailed(cell, error) => (cell, Some(error.to_string())),
            SupervisionEvent::ActorTerminated(cell, _, _) => (cell, None),
            _ => return Ok(()),
        };
        // Events from children we already replaced or stopped on purpose are old news.
        let Some(index) = state
            .slots
            .iter()
            .position(|slot| slot.current.as_ref().map(ActorCell::get_id) == Some(cell.get_id()))
        else {
            return Ok(());
        };
        let child = state.slots[index].spec.id.clone();
        state.slots[index].current = None;
        let failed = failure.is_some();
        if let Some(error) = &failure {
            tracing::warn!(supervisor = %state.name, %child, %error, "child failed");
        } else {
            tracing::info!(supervisor = %state.name, %child, "child stopped");
        }
        if !state.slots[index].spec.restart.should_restart(failed) {
            return Ok(());
        }
        let nth = match state.window.record(tokio::time::Instant::now()) {
            Ok(nth) => nth,
            Err(count) => {
                let intensity = state.window.intensity();
                tracing::error!(supervisor = %state.name, %child, restarts = count,
                    within = ?intensity.within, "restart intensity exceeded; escalating");
                return Err(format!(
                    "supervisor {}: restart intensity exceeded ({count} restarts within {:?}, at most {} allowed); last failure in child {child}",
                    state.name, intensity.within, intensity.max_restarts
                )
                .into());
            }
        };
        let affected = state.strategy.affected(index, state.slots.len());
        let siblings: Vec<usize> = affected.clone().filter(|&i| i != index).collect();
        for &sibling in siblings.iter().rev() {
            stop_children(state, sibling..sibling + 1).await;
        }
        let restart: Vec<usize> = affected
            .filter(|&i| i == index || state.slots[i].spec.restart != Restart::Temporary)
            .collect();
        schedule(&myself, state.backoff.delay(nth), restart);
        Ok(())
    }
}

/// Starts the listed children now, or after `delay`.
fn schedule(myself: &ActorRef<SupervisorMsg>, delay: Duration, indices: Vec<usize>) {
    if delay.is_zero() {
        let _ = myself.send_message(SupervisorMsg::StartChildren(indices));
    } else {
        myself.send_after(delay, move || SupervisorMsg::StartChildren(indices));
    }
}

async fn start_children(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    indices: Vec<usize>,
) -> Result<(), ActorProcessingErr> {
    for (position, &index) in indices.iter().enumerate() {
        if state.slots[index].current.is_some() {
            continue;
        }
        let slot = &mut state.slots[index];
        match (slot.spec.start)(myself.get_cell()).await {
            Ok(cell) => {
                slot.current = Some(cell);
                slot.restarts += 1;
                ::metrics::counter!(metrics::SUPERVISOR_RESTARTS,
                    "supervisor" => state.name.clone(), "child" => slot.spec.id.clone())
                .increment(1);
                tracing::info!(supervisor = %state.name, child = %slot.spec.id, restarts = slot.restarts, "child restarted");
            }
            Err(error) => {
                let child = slot.spec.id.clone();
                tracing::warn!(supervisor = %state.name, %child, %error, "child failed to restart");
                let nth = state
                    .window
                    .record(tokio::time::Instant::now())
                    .map_err(|count| {
                        format!(
                            "supervisor {}: child {child} keeps failing to start ({count} attempts): {error}",
                            state.name
                        )
                    })?;
                schedule(
                    myself,
                    state.backoff.delay(nth),
                    indices[position..].to_vec(),
                );
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Stops the children in `range`, last first, waiting for each (killing it after a timeout).
async fn stop_children(state: &mut SupervisorState, range: std::ops::Range<usize>) {
    for index in range.rev() {
        if let Some(cell) = state.slots[index].current.take() {
            let stopped = cell
                .stop_and_wait(
                    Some("stopped by its supervisor".into()),
                    Some(SIBLING_STOP_TIMEOUT),
                )
                .await;
            if stopped.is_err() {
                cell.kill();
            }
        }
    }
}
