//! The entity actor: one live aggregate instance, the only writer of its stream.
//!
//! It loads snapshot + tail on start, then handles one message at a time: decide, append with
//! the expected version, apply, reply. It never changes its in-memory state before the store
//! has made the events durable.

use std::marker::PhantomData;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::time::Instant;

use super::messages::{CommandReply, EntityMsg, HostMsg};
use super::upcast;
use super::view::StateView;
use super::{
    Aggregate, CommandEnvelope, CommandError, CommandOutcome, EntitySettings, Versioned,
    stream_name,
};
use crate::codec;
use crate::metrics;
use crate::store::{
    AppendRequest, EventMetadata, EventStore, NewEvent, RecordedEvent, Snapshot, StoreError,
};

pub(crate) struct Entity<A>(PhantomData<fn() -> A>);

impl<A> Entity<A> {
    pub(crate) fn new() -> Self {
        Self(PhantomData)
    }
}

pub(crate) struct EntityArgs<A: Aggregate> {
    pub id: String,
    pub store: EventStore,
    pub settings: EntitySettings,
    pub host: ActorRef<HostMsg<A>>,
    pub view: StateView<A>,
    /// The host incarnation this entity belongs to, stamped on what it publishes.
    pub generation: u64,
    pub metrics: CommandMetrics,
}

/// The metric series of one aggregate kind's commands, registered once by its host: a
/// `counter!` with labels looks its series up in the recorder on every call, which the command
/// path should not pay twice per command.
#[derive(Clone)]
pub(crate) struct CommandMetrics {
    ok: ::metrics::Counter,
    duplicate: ::metrics::Counter,
    rejected: ::metrics::Counter,
    conflict: ::metrics::Counter,
    error: ::metrics::Counter,
    seconds: ::metrics::Histogram,
}

impl CommandMetrics {
    pub(crate) fn of(kind: &'static str) -> Self {
        let outcome = |outcome: &'static str| ::metrics::counter!(metrics::COMMANDS, "aggregate" => kind, "outcome" => outcome);
        Self {
            ok: outcome("ok"),
            duplicate: outcome("duplicate"),
            rejected: outcome("rejected"),
            conflict: outcome("conflict"),
            error: outcome("error"),
            seconds: ::metrics::histogram!(metrics::COMMAND_SECONDS, "aggregate" => kind),
        }
    }

    fn record<A: Aggregate>(&self, result: &CommandReply<A>, took: std::time::Duration) {
        let outcome = match result {
            Ok(outcome) if outcome.deduplicated => &self.duplicate,
            Ok(_) => &self.ok,
            Err(CommandError::Refused(_)) => &self.rejected,
            Err(CommandError::Conflict { .. }) => &self.conflict,
            Err(_) => &self.error,
        };
        outcome.increment(1);
        self.seconds.record(took.as_secs_f64());
    }
}

pub(crate) struct EntityState<A: Aggregate> {
    id: String,
    stream: String,
    store: EventStore,
    settings: EntitySettings,
    host: ActorRef<HostMsg<A>>,
    view: StateView<A>,
    generation: u64,
    metrics: CommandMetrics,
    current: Versioned<A::State>,
    snapshot_version: u64,
    last_active: Instant,
}

impl<A: Aggregate> Actor for Entity<A> {
    type Msg = EntityMsg<A>;
    type State = EntityState<A>;
    type Arguments = EntityArgs<A>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: EntityArgs<A>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let stream = stream_name::<A>(&args.id);
        // A load error (a corrupt record) makes the spawn fail: the host reports it to the
        // caller instead of restarting into the same error again.
        // Replaying a long stream is blocking I/O: keep it off the async workers.
        let (store, loading) = (args.store.clone(), stream.clone());
        let (current, snapshot_version) = args
            .store
            .blocking("loading an aggregate", move || load::<A>(&store, &loading))
            .await
            .map_err(|e| format!("loading {stream}: {e}"))??;
        if let Some(timeout) = args.settings.idle_timeout {
            myself.send_after(timeout, || EntityMsg::CheckIdle);
        }
        args.view.publish(args.generation, &args.id, &current);
        Ok(EntityState {
            id: args.id,
            stream,
            store: args.store,
            settings: args.settings,
            host: args.host,
            view: args.view,
            generation: args.generation,
            metrics: args.metrics,
            current,
            snapshot_version,
            last_active: Instant::now(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            EntityMsg::Execute { envelope, reply } => {
                state.last_active = Instant::now();
                let started = std::time::Instant::now();
                let result = execute::<A>(state, envelope).await;
                let needs_reload = result.as_ref().is_err_and(Failure::leaves_state_unknown);
                let result = result.map_err(|failure| failure.into_command_error(&state.stream));
                state.metrics.record(&result, started.elapsed());
                let _ = reply.send(result);
                if needs_reload {
                    // The write may or may not have landed (the writer may have died after
                    // committing): the store is the truth, so read it again. If even that fails,
                    // fail the actor and let the host restart it.
                    let (current, snapshot_version) = load::<A>(&state.store, &state.stream)?;
                    state.view.publish(state.generation, &state.id, &current);
                    state.current = current;
                    state.snapshot_version = snapshot_version;
                } else {
                    maybe_snapshot::<A>(state).await;
                }
            }
            EntityMsg::Get { reply } => {
                state.last_active = Instant::now();
                let _ = reply.send(Ok(state.current.clone()));
            }
            EntityMsg::CheckIdle => {
                if let Some(timeout) = state.settings.idle_timeout {
                    let idle = state.last_active.elapsed();
                    if idle >= timeout {
                        // The host stops routing to us, then sends Passivate as our last message.
                        let _ = state.host.send_message(HostMsg::Idle {
                            id: state.id.clone(),
                            actor: myself.get_id(),
                        });
                    } else {
                        myself.send_after(timeout - idle, || EntityMsg::CheckIdle);
                    }
                }
            }
            EntityMsg::Passivate => {
                tracing::debug!(stream = %state.stream, version = state.current.version, "passivated");
                myself.stop(Some("passivated".into()));
            }
        }
        Ok(())
    }
}

/// A command's failure inside the entity. Store errors keep their detail here, so that the
/// entity can tell when a write's fate is unknown; callers get the [`CommandError`] it maps to.
enum Failure<E> {
    Refused(E),
    Store(StoreError),
}

impl<E> Failure<E> {
    /// Whether the write may or may not have landed, so that the store must be read again.
    fn leaves_state_unknown(&self) -> bool {
        matches!(
            self,
            Failure::Store(
                StoreError::Conflict { .. } | StoreError::WriterStopped | StoreError::Storage(_)
            )
        )
    }

    /// What the caller is told. A write whose fate is unknown (the writer stopped, storage or
    /// its task failed mid-append) is `Crashed`: it may have been applied, so a saga fences it
    /// rather than compensating as if it never happened. (`Unavailable` means not applied.)
    fn into_command_error(self, stream: &str) -> CommandError<E> {
        match self {
            Failure::Refused(error) => CommandError::Refused(error),
            Failure::Store(
                StoreError::WriterStopped | StoreError::Storage(_) | StoreError::TaskFailed { .. },
            ) => CommandError::Crashed {
                stream: stream.to_owned(),
            },
            Failure::Store(error) => CommandError::from_store(error),
        }
    }
}

type Executed<A> = Result<CommandOutcome<A>, Failure<<A as Aggregate>::Error>>;

async fn execute<A: Aggregate>(
    state: &mut EntityState<A>,
    envelope: CommandEnvelope<A::Command>,
) -> Executed<A> {
    let fingerprint = match &envelope.command_id {
        Some(_) => codec::encode(&envelope.command)
            .map(|bytes| crate::store::fingerprint(&bytes))
            .map_err(|source| {
                Failure::Store(StoreError::Encode {
                    stream: state.stream.clone(),
                    source,
                })
            })?,
        None => 0,
    };
    if let Some(command_id) = &envelope.command_id
        && let Some(previous) = state
            .store
            .processed_command(command_id)
            .map_err(Failure::Store)?
    {
        if previous.stream != state.stream || previous.fingerprint != fingerprint {
            return Err(Failure::Store(StoreError::CommandIdReused {
                command_id: command_id.clone(),
                first_stream: previous.stream,
                stream: state.stream.clone(),
            }));
        }
        return replay_previous::<A>(
            state,
            &previous.rejection,
            previous.first_version,
            previous.last_version,
            previous.first_position,
        );
    }

    let (events, rejection) = match A::decide(&state.current.state, &envelope.command) {
        Ok(events) => (events, None),
        // Without a command id a refusal is just answered; with one it is recorded (below), so
        // that a retry gets this same refusal even if the state has changed since.
        Err(error) if envelope.command_id.is_none() => return Err(Failure::Refused(error)),
        Err(error) => {
            let encoded = codec::encode(&error).map_err(|source| {
                Failure::Store(StoreError::Encode {
                    stream: state.stream.clone(),
                    source,
                })
            })?;
            (Vec::new(), Some((error, encoded)))
        }
    };
    if events.is_empty() && envelope.command_id.is_none() {
        return Ok(CommandOutcome {
            events,
            state: state.current.clone(),
            deduplicated: false,
            position: None,
        });
    }
    let mut encoded = Vec::with_capacity(events.len());
    for event in &events {
        let payload = codec::encode(event).map_err(|source| {
            Failure::Store(StoreError::Encode {
                stream: state.stream.clone(),
                source,
            })
        })?;
        encoded.push(NewEvent {
            event_type: A::event_type(event).to_owned(),
            schema_version: upcast::version_of::<A>(event),
            payload,
        });
    }
    let outcome = state
        .store
        .append(AppendRequest {
            stream: state.stream.clone(),
            expected_version: state.current.version,
            events: encoded,
            metadata: EventMetadata {
                correlation_id: envelope.correlation_id,
                causation_id: envelope.command_id.clone(),
            },
            command_id: envelope.command_id,
            fingerprint,
            rejection: rejection.as_ref().map(|(_, encoded)| encoded.clone()),
            table_changes: Vec::new(),
        })
        .await
        .map_err(Failure::Store)?;
    if outcome.deduplicated {
        return replay_previous::<A>(
            state,
            &outcome.rejection,
            outcome.first_version,
            outcome.last_version,
            outcome.first_position,
        );
    }
    if let Some((error, _)) = rejection {
        return Err(Failure::Refused(error));
    }
    for event in &events {
        A::apply(&mut state.current.state, event);
    }
    state.current.version = outcome.last_version;
    // Published before the reply: whoever reads after this command's answer sees it.
    state
        .view
        .publish(state.generation, &state.id, &state.current);
    Ok(CommandOutcome {
        position: last_position(outcome.first_position, events.len() as u64),
        events,
        state: state.current.clone(),
        deduplicated: false,
    })
}

/// The position of the last of `count` events written from `first_position` on.
fn last_position(first_position: u64, count: u64) -> Option<u64> {
    (count > 0).then(|| first_position + count - 1)
}

/// The answer to a repeated command id: the events it produced the first time, and the state
/// right after them (replayed from the stream when later events have moved it on).
fn replay_previous<A: Aggregate>(
    state: &EntityState<A>,
    rejection: &Option<Vec<u8>>,
    first_version: u64,
    last_version: u64,
    first_position: u64,
) -> Executed<A> {
    if let Some(encoded) = rejection {
        let error: A::Error = codec::decode(encoded).map_err(|source| {
            Failure::Store(StoreError::Corrupt {
                stream: state.stream.clone(),
                version: last_version,
                source,
            })
        })?;
        return Err(Failure::Refused(error));
    }
    // When later events moved the state on, the state right after the command is replayed
    // from the start; the command's own events are the tail of that same read.
    let moved_on = last_version != state.current.version;
    let from = if moved_on { 1 } else { first_version };
    let mut replayed = state
        .store
        .read_stream_range(&state.stream, from, last_version)
        .and_then(|records| {
            records
                .iter()
                .map(|r| Ok((r.version, decode_event::<A>(r)?)))
                .collect::<Result<Vec<_>, StoreError>>()
        })
        .map_err(Failure::Store)?;
    let at_that_time = if !moved_on {
        state.current.clone()
    } else {
        let mut then = Versioned {
            state: A::State::default(),
            version: last_version,
        };
        for (_, event) in &replayed {
            A::apply(&mut then.state, event);
        }
        then
    };
    replayed.retain(|(version, _)| *version >= first_version);
    let events: Vec<A::Event> = replayed.into_iter().map(|(_, event)| event).collect();
    Ok(CommandOutcome {
        position: last_position(first_position, events.len() as u64),
        events,
        state: at_that_time,
        deduplicated: true,
    })
}

async fn maybe_snapshot<A: Aggregate>(state: &mut EntityState<A>) {
    let every = state.settings.snapshot_every;
    if every == 0 || state.current.version - state.snapshot_version < every {
        return;
    }
    let snapshot = match codec::encode(&state.current.state) {
        Ok(bytes) => Snapshot {
            version: state.current.version,
            schema_version: A::STATE_VERSION,
            state: bytes,
        },
        Err(error) => {
            tracing::warn!(stream = %state.stream, %error, "state cannot be encoded; no snapshot");
            return;
        }
    };
    // A failed snapshot costs only replay time on the next load.
    match state.store.save_snapshot(&state.stream, snapshot).await {
        Ok(()) => state.snapshot_version = state.current.version,
        Err(error) => tracing::warn!(stream = %state.stream, %error, "snapshot not saved"),
    }
}

/// Loads the latest usable snapshot and applies the events after it.
pub(crate) fn load<A: Aggregate>(
    store: &EventStore,
    stream: &str,
) -> Result<(Versioned<A::State>, u64), StoreError> {
    let mut current = Versioned {
        state: A::State::default(),
        version: 0,
    };
    if let Some(snapshot) = store.load_snapshot(stream)? {
        // A snapshot of another schema version is skipped: the events are the truth.
        if snapshot.schema_version == A::STATE_VERSION {
            current.state =
                codec::decode(&snapshot.state).map_err(|source| StoreError::Corrupt {
                    stream: stream.to_owned(),
                    version: snapshot.version,
                    source,
                })?;
            current.version = snapshot.version;
        }
    }
    let snapshot_version = current.version;
    for record in store.read_stream_from(stream, current.version + 1)? {
        let event = decode_event::<A>(&record)?;
        A::apply(&mut current.state, &event);
        current.version = record.version;
    }
    Ok((current, snapshot_version))
}

pub(crate) fn decode_event<A: Aggregate>(record: &RecordedEvent) -> Result<A::Event, StoreError> {
    upcast::read::<A>(&record.event_type, record.schema_version, &record.payload).map_err(
        |source| StoreError::CorruptEvent {
            stream: record.stream.clone(),
            version: record.version,
            event_type: record.event_type.clone(),
            schema_version: record.schema_version,
            source,
        },
    )
}
