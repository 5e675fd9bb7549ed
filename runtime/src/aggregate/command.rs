//! What runs for one request to one aggregate, as a task of its partition's host: activation
//! (snapshot + tail) when the aggregate is not live, then the command (decide, append with the
//! expected version, apply, publish, reply) or the read.
//!
//! The host starts one task per request, one at a time per aggregate and in arrival order, so
//! each aggregate still has a single writer; tasks of different aggregates run side by side. A
//! task never changes an aggregate's published state before the store has made its events
//! durable, and publishes the new state before it replies.

use std::sync::Arc;

use tokio::time::Instant;

use super::messages::{CommandReply, Request, RequestQueue};
use super::upcast;
use super::view::{Live, StateView};
use super::{
    Aggregate, CommandEnvelope, CommandError, CommandOutcome, EntitySettings, Versioned,
    stream_name,
};
use crate::codec;
use crate::metrics;
use crate::position::Position;
use crate::replication::Journal;
use crate::store::{
    AppendRequest, EventMetadata, EventStore, NewEvent, RecordedEvent, Snapshot, StoreError,
};

/// The metric series of one aggregate kind, registered once per host: a `counter!` with labels
/// looks its series up in the recorder on every call, which the command path should not pay
/// twice per command.
#[derive(Clone)]
pub(crate) struct CommandMetrics {
    ok: ::metrics::Counter,
    duplicate: ::metrics::Counter,
    rejected: ::metrics::Counter,
    conflict: ::metrics::Counter,
    error: ::metrics::Counter,
    seconds: ::metrics::Histogram,
    live: ::metrics::Gauge,
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
            live: ::metrics::gauge!(metrics::LIVE_ACTORS, "aggregate" => kind),
        }
    }

    fn record<A: Aggregate>(&self, result: &CommandReply<A>, took: std::time::Duration) {
        let outcome = match result {
            Ok(outcome) if outcome.deduplicated => &self.duplicate,
            Ok(_) => &self.ok,
            // A refusal, or a client that reused a command id for another command: the
            // caller's doing, not the server's.
            Err(CommandError::Refused(_) | CommandError::CommandIdReused { .. }) => &self.rejected,
            Err(CommandError::Conflict { .. }) => &self.conflict,
            Err(_) => &self.error,
        };
        outcome.increment(1);
        self.seconds.record(took.as_secs_f64());
    }

    /// Sets the live-aggregates gauge to `live`.
    pub(crate) fn live(&self, live: usize) {
        self.live.set(live as f64);
    }
}

/// What every task of one host incarnation shares.
pub(crate) struct TaskContext<A: Aggregate> {
    pub store: EventStore,
    /// Where commands write (the store, or the partition's Raft group).
    pub journal: Journal,
    pub settings: EntitySettings,
    pub view: StateView<A>,
    pub partition: u32,
    /// The host incarnation, stamped on what its tasks publish.
    pub generation: u64,
    pub metrics: CommandMetrics,
    /// Counts activations (`HostStats::started`).
    pub activations: Arc<std::sync::atomic::AtomicU64>,
}

/// Serves `first`, then every request queued behind it, for aggregate `id`: loads the aggregate
/// first if it is not live, keeps it in hand between requests, and leaves its entry in the view
/// up to date (or gone, if it could not be read back). Returns once the queue is empty (and so
/// closed).
pub(crate) async fn run<A: Aggregate>(
    context: Arc<TaskContext<A>>,
    id: Box<str>,
    first: Request<A>,
    queue: Arc<RequestQueue<A>>,
) {
    let stream = stream_name::<A>(&id);
    // While this task runs it is the aggregate's only user: the host neither sweeps nor
    // touches a busy aggregate's entry, so what is in hand stays the truth.
    let mut live = context.view.live(context.partition, &id);
    let mut request = first;
    loop {
        live = serve(&context, &id, &stream, live, request).await;
        match queue.next() {
            Some(next) => request = next,
            None => return,
        }
    }
}

/// Serves one request; returns the aggregate as it stands after it (`None` when it must be
/// loaded again).
async fn serve<A: Aggregate>(
    context: &TaskContext<A>,
    id: &str,
    stream: &str,
    live: Option<Live<A::State>>,
    request: Request<A>,
) -> Option<Live<A::State>> {
    // A state loaded before this node's lead of the partition last changed may be behind what
    // another leader wrote meanwhile: it is loaded again (past the read barrier).
    let epoch = context.view.epoch(context.partition);
    let mut live = match live.filter(|live| live.epoch == epoch) {
        Some(live) => live,
        None => match activate(context, stream).await {
            Ok(live) => live,
            Err(error) => {
                request.fail(error);
                return None;
            }
        },
    };
    live.last_active = Instant::now();
    match request {
        Request::Get { reply } => {
            keep(context, id, &live);
            let _ = reply.send(Ok(live.current.clone()));
            Some(live)
        }
        Request::Execute { envelope, reply } => {
            let started = std::time::Instant::now();
            let result = execute::<A>(context, stream, &mut live, envelope).await;
            let needs_reload = result.as_ref().is_err_and(Failure::leaves_state_unknown);
            let result = result.map_err(|failure| failure.into_command_error(stream));
            context.metrics.record(&result, started.elapsed());
            if needs_reload {
                // The write may or may not have landed (the writer may have died after
                // committing): the store is the truth, so read it again. If even that fails,
                // the aggregate stops being live and its next request loads it afresh.
                let epoch = context.view.epoch(context.partition);
                let reloaded = match load_current::<A>(context, stream).await {
                    Ok((current, snapshot_version)) => {
                        live.current = current;
                        live.snapshot_version = snapshot_version;
                        live.epoch = epoch;
                        keep(context, id, &live);
                        Some(live)
                    }
                    Err(error) => {
                        tracing::warn!(%stream, %error, "aggregate cannot be read back; it will be loaded again");
                        if context.view.withdraw(context.partition, id) {
                            context.metrics.live(context.view.len());
                        }
                        None
                    }
                };
                let _ = reply.send(result);
                return reloaded;
            }
            // Published before the reply: whoever reads after this command's answer sees it.
            keep(context, id, &live);
            let _ = reply.send(result);
            if snapshot_due(&context.settings, &live) {
                save_snapshot::<A>(context, id, stream, &mut live).await;
            }
            Some(live)
        }
    }
}

/// Publishes `live` as aggregate `id`'s entry, or removes the entry when the aggregate has no
/// events (a probe of an unknown id keeps nothing in memory).
fn keep<A: Aggregate>(context: &TaskContext<A>, id: &str, live: &Live<A::State>) {
    let changed = if live.current.version == 0 {
        context.view.withdraw(context.partition, id)
    } else {
        context
            .view
            .publish(context.partition, context.generation, id, live.clone())
    };
    if changed {
        context.metrics.live(context.view.len());
    }
}

/// Loads aggregate `stream` from the store (on the blocking pool: replaying a long stream is
/// blocking I/O). A load error (a corrupt record) is the caller's answer; the next request
/// tries again.
async fn activate<A: Aggregate>(
    context: &TaskContext<A>,
    stream: &str,
) -> Result<Live<A::State>, CommandError<A::Error>> {
    // Read before loading: a change of leader during the load makes this state stale at once.
    let epoch = context.view.epoch(context.partition);
    let (current, snapshot_version) =
        load_current::<A>(context, stream).await.map_err(|error| {
            tracing::error!(%stream, %error, "aggregate cannot be loaded");
            CommandError::from_store(error)
        })?;
    context
        .activations
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(Live {
        current,
        snapshot_version,
        last_active: Instant::now(),
        epoch,
    })
}

/// Loads aggregate `stream` once the store's copy of it is known complete (with replication:
/// this node leads its partition and has applied everything committed; see
/// [`Journal::read_barrier`]).
async fn load_current<A: Aggregate>(
    context: &TaskContext<A>,
    stream: &str,
) -> Result<(Versioned<A::State>, u64), StoreError> {
    context.journal.read_barrier(stream).await?;
    load_blocking::<A>(&context.store, stream).await
}

async fn load_blocking<A: Aggregate>(
    store: &EventStore,
    stream: &str,
) -> Result<(Versioned<A::State>, u64), StoreError> {
    let (reader, loading) = (store.clone(), stream.to_owned());
    store
        .blocking("loading an aggregate", move || load::<A>(&reader, &loading))
        .await?
}

/// A command's failure inside its task. Store errors keep their detail here, so that the
/// task can tell when a write's fate is unknown; callers get the [`CommandError`] it maps to.
enum Failure<E> {
    Refused(E),
    Store(StoreError),
}

impl<E> Failure<E> {
    /// Whether the write may or may not have landed, or the state in hand may be behind the
    /// store (this node stopped leading the partition, and another may write it meanwhile),
    /// so that the store must be read again.
    fn leaves_state_unknown(&self) -> bool {
        matches!(
            self,
            Failure::Store(
                StoreError::Conflict { .. }
                    | StoreError::NotLeader { .. }
                    | StoreError::WriterStopped
                    | StoreError::Storage(_)
                    | StoreError::OutcomeUnknown { .. }
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
                StoreError::WriterStopped
                | StoreError::Storage(_)
                | StoreError::TaskFailed { .. }
                | StoreError::OutcomeUnknown { .. },
            ) => CommandError::Crashed {
                stream: stream.to_owned(),
            },
            Failure::Store(error) => CommandError::from_store(error),
        }
    }
}

type Executed<A> = Result<CommandOutcome<A>, Failure<<A as Aggregate>::Error>>;

/// Decides `envelope`'s command against `live`, appends what it decided and applies it to
/// `live` once durable (or answers a command id seen before as it was answered then).
async fn execute<A: Aggregate>(
    context: &TaskContext<A>,
    stream: &str,
    live: &mut Live<A::State>,
    envelope: CommandEnvelope<A::Command>,
) -> Executed<A> {
    let store = &context.store;
    let fingerprint = match &envelope.command_id {
        Some(_) => codec::encode(&envelope.command)
            .map(|bytes| crate::store::fingerprint(&bytes))
            .map_err(|source| {
                Failure::Store(StoreError::Encode {
                    stream: stream.to_owned(),
                    source,
                })
            })?,
        None => 0,
    };
    if let Some(command_id) = &envelope.command_id
        && let Some(previous) = store
            .processed_command(command_id)
            .map_err(Failure::Store)?
    {
        if previous.stream != stream || previous.fingerprint != fingerprint {
            return Err(Failure::Store(StoreError::CommandIdReused {
                command_id: command_id.clone(),
                first_stream: previous.stream,
                stream: stream.to_owned(),
            }));
        }
        // Replicated, the first run's place in the partition's log is not kept: what this
        // replica has applied is at or after it.
        let at = match context.journal.applied_at(stream) {
            Some((partition, index)) => Place::Raft { partition, index },
            None => Place::Log(previous.first_position),
        };
        return replay_previous::<A>(
            store,
            stream,
            &live.current,
            &previous.rejection,
            previous.first_version,
            previous.last_version,
            at,
        );
    }

    let (events, rejection) = match A::decide(&live.current.state, &envelope.command) {
        Ok(events) => (events, None),
        // Without a command id a refusal is just answered; with one it is recorded (below), so
        // that a retry gets this same refusal even if the state has changed since.
        Err(error) if envelope.command_id.is_none() => return Err(Failure::Refused(error)),
        Err(error) => {
            let encoded = codec::encode(&error).map_err(|source| {
                Failure::Store(StoreError::Encode {
                    stream: stream.to_owned(),
                    source,
                })
            })?;
            (Vec::new(), Some((error, encoded)))
        }
    };
    if events.is_empty() && envelope.command_id.is_none() {
        return Ok(CommandOutcome {
            events,
            state: live.current.clone(),
            deduplicated: false,
            position: None,
        });
    }
    let mut encoded = Vec::with_capacity(events.len());
    for event in &events {
        let payload = codec::encode(event).map_err(|source| {
            Failure::Store(StoreError::Encode {
                stream: stream.to_owned(),
                source,
            })
        })?;
        encoded.push(NewEvent {
            event_type: A::event_type(event).to_owned(),
            schema_version: upcast::version_of::<A>(event),
            payload,
        });
    }
    let outcome = context
        .journal
        .append(AppendRequest {
            stream: stream.to_owned(),
            expected_version: live.current.version,
            events: encoded,
            metadata: EventMetadata {
                correlation_id: envelope.correlation_id,
                causation_id: envelope.command_id.clone(),
                recorded_at_micros: None,
            },
            command_id: envelope.command_id,
            fingerprint,
            rejection: rejection.as_ref().map(|(_, encoded)| encoded.clone()),
            table_changes: Vec::new(),
        })
        .await
        .map_err(Failure::Store)?;
    let at = match outcome.replicated_at {
        Some((partition, index)) => Place::Raft { partition, index },
        None => Place::Log(outcome.first_position),
    };
    if outcome.deduplicated {
        return replay_previous::<A>(
            store,
            stream,
            &live.current,
            &outcome.rejection,
            outcome.first_version,
            outcome.last_version,
            at,
        );
    }
    if let Some((error, _)) = rejection {
        return Err(Failure::Refused(error));
    }
    for event in &events {
        A::apply(&mut live.current.state, event);
    }
    live.current.version = outcome.last_version;
    Ok(CommandOutcome {
        position: at.last_of(events.len() as u64),
        events,
        state: live.current.clone(),
        deduplicated: false,
    })
}

/// Where a command's events were written: from a position of this node's log on, or by one
/// entry of a partition's Raft log.
#[derive(Debug, Clone, Copy)]
enum Place {
    Log(u64),
    Raft { partition: u32, index: u64 },
}

impl Place {
    /// The position of the last of `count` events written here (none without events).
    fn last_of(self, count: u64) -> Option<Position> {
        (count > 0).then(|| match self {
            Place::Log(first_position) => Position::Log(first_position + count - 1),
            Place::Raft { partition, index } => Position::Raft { partition, index },
        })
    }
}

/// The answer to a repeated command id: the events it produced the first time, and the state
/// right after them (replayed from the stream when later events have moved it on).
fn replay_previous<A: Aggregate>(
    store: &EventStore,
    stream: &str,
    current: &Versioned<A::State>,
    rejection: &Option<Vec<u8>>,
    first_version: u64,
    last_version: u64,
    at: Place,
) -> Executed<A> {
    if let Some(encoded) = rejection {
        let error: A::Error = codec::decode(encoded).map_err(|source| {
            Failure::Store(StoreError::Corrupt {
                stream: stream.to_owned(),
                version: last_version,
                source,
            })
        })?;
        return Err(Failure::Refused(error));
    }
    // When later events moved the state on, the state right after the command is replayed
    // from the start; the command's own events are the tail of that same read.
    let moved_on = last_version != current.version;
    let from = if moved_on { 1 } else { first_version };
    let mut replayed = store
        .read_stream_range(stream, from, last_version)
        .and_then(|records| {
            records
                .iter()
                .map(|r| Ok((r.version, decode_event::<A>(r)?)))
                .collect::<Result<Vec<_>, StoreError>>()
        })
        .map_err(Failure::Store)?;
    let at_that_time = if !moved_on {
        current.clone()
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
        position: at.last_of(events.len() as u64),
        events,
        state: at_that_time,
        deduplicated: true,
    })
}

fn snapshot_due<S>(settings: &EntitySettings, live: &Live<S>) -> bool {
    let every = settings.snapshot_every;
    every > 0 && live.current.version - live.snapshot_version >= every
}

/// Saves a snapshot of `live`'s state. A failed snapshot costs only replay time on the next
/// load.
async fn save_snapshot<A: Aggregate>(
    context: &TaskContext<A>,
    id: &str,
    stream: &str,
    live: &mut Live<A::State>,
) {
    let version = live.current.version;
    let snapshot = match codec::encode(&live.current.state) {
        Ok(bytes) => Snapshot {
            version,
            schema_version: A::STATE_VERSION,
            state: bytes,
        },
        Err(error) => {
            tracing::warn!(%stream, %error, "state cannot be encoded; no snapshot");
            return;
        }
    };
    match context.store.save_snapshot(stream, snapshot).await {
        Ok(()) => {
            live.snapshot_version = version;
            context
                .view
                .snapshot_saved(context.partition, context.generation, id, version);
        }
        Err(error) => tracing::warn!(%stream, %error, "snapshot not saved"),
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
