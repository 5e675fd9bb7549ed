//! The host of one aggregate kind: routes messages to entity actors, starting them on first use,
//! passivating idle ones without losing a message, and restarting crashed ones.
//!
//! It is the entities' supervisor (one-for-one, dynamic children, like OTP's simple_one_for_one):
//! a crashed entity is restarted at once and reloads its state from the store; more crashes
//! than the restart intensity allows fail the host, which escalates to its own supervisor.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SpawnErr, SupervisionEvent};

use super::entity::{CommandMetrics, Entity, EntityArgs};
use super::messages::{EntityMsg, HostMsg};
use super::view::StateView;
use super::{Aggregate, CommandError, EntitySettings, stream_name};
use crate::metrics;
use crate::store::{EventStore, StoreError};
use crate::supervision::{Intensity, RestartWindow};

/// Counters a host reports, for tests, metrics and the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HostStats {
    /// Entities in memory.
    pub live: usize,
    /// Entities started (first use, reload after passivation, restart).
    pub started: u64,
    /// Entities restarted after a crash.
    pub restarts: u64,
    pub passivated: u64,
}

/// The host actor of aggregate kind `A`.
pub(crate) struct AggregateHost<A>(PhantomData<fn() -> A>);

impl<A> fmt::Debug for AggregateHost<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AggregateHost")
    }
}

impl<A> Default for AggregateHost<A> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

/// What a host needs to run.
#[derive(Debug)]
pub(crate) struct HostArgs<A: Aggregate> {
    pub store: EventStore,
    /// Where entities publish their state for reads that skip the actors.
    pub view: StateView<A>,
    pub settings: EntitySettings,
    /// Crashes of entities tolerated before the host itself fails.
    pub intensity: Intensity,
}

enum Slot<A: Aggregate> {
    Active(ActorRef<EntityMsg<A>>),
    /// Told to passivate; messages wait here until it has stopped, then go to a fresh entity.
    Passivating {
        waiting: Vec<EntityMsg<A>>,
    },
}

pub(crate) struct HostState<A: Aggregate> {
    args: HostArgs<A>,
    /// This incarnation's generation in the state view.
    generation: u64,
    slots: HashMap<String, Slot<A>>,
    /// Which aggregate id each live entity actor serves, to route supervision events.
    ids: HashMap<ActorId, String>,
    window: RestartWindow,
    stats: HostStats,
    /// Handed to every entity it starts.
    command_metrics: CommandMetrics,
}

impl<A: Aggregate> fmt::Debug for HostState<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostState")
            .field("kind", &A::KIND)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<A: Aggregate> Actor for AggregateHost<A> {
    type Msg = HostMsg<A>;
    type State = HostState<A>;
    type Arguments = HostArgs<A>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: HostArgs<A>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let window = RestartWindow::new(args.intensity);
        // The entities of a previous incarnation were killed with it: forget what they published.
        let generation = args.view.begin_generation();
        Ok(HostState {
            generation,
            args,
            slots: HashMap::new(),
            ids: HashMap::new(),
            window,
            stats: HostStats::default(),
            command_metrics: CommandMetrics::of(A::KIND),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            HostMsg::Execute {
                id,
                envelope,
                reply,
            } => deliver(&myself, state, id, EntityMsg::Execute { envelope, reply }).await,
            HostMsg::Get { id, reply } => {
                deliver(&myself, state, id, EntityMsg::Get { reply }).await
            }
            HostMsg::Idle { id, actor } => {
                if let Some(Slot::Active(entity)) = state.slots.get(&id)
                    && entity.get_id() == actor
                {
                    let _ = entity.send_message(EntityMsg::Passivate);
                    state.slots.insert(
                        id,
                        Slot::Passivating {
                            waiting: Vec::new(),
                        },
                    );
                }
            }
            HostMsg::Stats(reply) => {
                let _ = reply.send(state.stats);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (actor, failure) = match event {
            SupervisionEvent::ActorFailed(cell, error) => (cell.get_id(), Some(error)),
            SupervisionEvent::ActorTerminated(cell, _, _) => (cell.get_id(), None),
            _ => return Ok(()),
        };
        let Some(id) = state.ids.remove(&actor) else {
            return Ok(());
        };
        let slot = state.slots.remove(&id);
        // Before any new entity for this id can start (below, or on a later message).
        state.args.view.withdraw(&id);
        update_live_gauge::<A>(state);
        match (slot, failure) {
            (Some(Slot::Passivating { waiting, .. }), _) => {
                state.stats.passivated += 1;
                // Messages that came in while it was stopping go to a fresh entity.
                for message in waiting {
                    deliver(&myself, state, id.clone(), message).await;
                }
            }
            (Some(Slot::Active(_)), Some(error)) => {
                let stream = stream_name::<A>(&id);
                tracing::warn!(%stream, %error, "aggregate crashed; restarting it from the store");
                if let Err(count) = state.window.record(tokio::time::Instant::now()) {
                    return Err(format!(
                        "{} host: {count} aggregate crashes within {:?}; giving up",
                        A::KIND,
                        state.window.intensity().within
                    )
                    .into());
                }
                state.stats.restarts += 1;
                ::metrics::counter!(metrics::SUPERVISOR_RESTARTS,
                    "supervisor" => A::KIND, "child" => "aggregate")
                .increment(1);
                // Restart now rather than on the next command, so that a crash is repaired
                // (or a broken stream is reported) where it happened.
                if let Err(error) = spawn_entity(&myself, state, &id).await {
                    tracing::error!(%stream, %error, "crashed aggregate could not be restarted");
                }
            }
            // Stopped by someone else, or a late event: nothing to restart.
            (_, _) => {}
        }
        Ok(())
    }
}

/// Routes a message to the entity for `id`, starting it when it is not in memory.
async fn deliver<A: Aggregate>(
    myself: &ActorRef<HostMsg<A>>,
    state: &mut HostState<A>,
    id: String,
    message: EntityMsg<A>,
) {
    match state.slots.get_mut(&id) {
        Some(Slot::Active(entity)) => {
            if let Err(ractor::MessagingErr::SendErr(message)) = entity.send_message(message) {
                // It died and we have not heard yet; its supervision event will restart it.
                message.fail(CommandError::Crashed {
                    stream: stream_name::<A>(&id),
                });
            }
        }
        Some(Slot::Passivating { waiting, .. }) => waiting.push(message),
        None => match spawn_entity(myself, state, &id).await {
            Ok(entity) => {
                let _ = entity.send_message(message);
            }
            Err(error) => message.fail(error),
        },
    }
}

async fn spawn_entity<A: Aggregate>(
    myself: &ActorRef<HostMsg<A>>,
    state: &mut HostState<A>,
    id: &str,
) -> Result<ActorRef<EntityMsg<A>>, CommandError<A::Error>> {
    let args = EntityArgs {
        id: id.to_owned(),
        store: state.args.store.clone(),
        settings: state.args.settings.clone(),
        host: myself.clone(),
        view: state.args.view.clone(),
        generation: state.generation,
        metrics: state.command_metrics.clone(),
    };
    match Entity::<A>::spawn_linked(None, Entity::new(), args, myself.get_cell()).await {
        Ok((entity, _)) => {
            state.ids.insert(entity.get_id(), id.to_owned());
            state
                .slots
                .insert(id.to_owned(), Slot::Active(entity.clone()));
            state.stats.started += 1;
            update_live_gauge::<A>(state);
            Ok(entity)
        }
        Err(error) => {
            let error = startup_error::<A>(id, error);
            tracing::error!(stream = %stream_name::<A>(id), %error, "aggregate cannot be loaded");
            Err(error)
        }
    }
}

/// What a failed entity start means to the caller: the store error that caused it (a damaged
/// stream is internal, a failing store unavailable), or an unavailable aggregate.
fn startup_error<A: Aggregate>(id: &str, error: SpawnErr) -> CommandError<A::Error> {
    if let SpawnErr::StartupFailed(cause) = &error
        && let Some(store_error) = cause.downcast_ref::<StoreError>()
    {
        return CommandError::from_store(store_error.clone());
    }
    CommandError::Unavailable {
        what: format!("aggregate {} ({error})", stream_name::<A>(id)),
        retry_after_ms: 1_000,
    }
}

fn update_live_gauge<A: Aggregate>(state: &mut HostState<A>) {
    state.stats.live = state.slots.len();
    ::metrics::gauge!(metrics::LIVE_ACTORS, "aggregate" => A::KIND).set(state.slots.len() as f64);
}
