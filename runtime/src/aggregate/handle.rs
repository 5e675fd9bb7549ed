//! [`Aggregates`]: the caller's handle to the host of one aggregate kind.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{ActorCell, SpawnErr};

use serde::de::DeserializeOwned;

use super::command::decode_event;
use super::host::HostStats;
use super::hosts::Hosts;
use super::messages::{HostMsg, Request};
use super::remote::{self, AggregateHandler, Operation};
use super::{
    Aggregate, CommandEnvelope, CommandError, CommandOutcome, EntitySettings, Fenced, Versioned,
    stream_name,
};
use crate::cluster::{Cluster, Route};
use crate::codec;
use crate::config::DEFAULT_PARTITIONS;
use crate::replication::{Journal, NEW_LEADER_WAIT};
use crate::store::{EventStore, StoreError};
use crate::supervision::{ChildSpec, Intensity, Supervisor};

/// Sends commands and queries to the aggregates of kind `A`, each addressed by aggregate id.
///
/// Every operation is async and goes through this handle, which sends it where the aggregate
/// lives: to the host of its partition on this node, or, in a cluster, to the owner node of the
/// aggregate's partition (and fails at once, "unavailable", when that owner is down). No
/// service knows which. It holds every partition host's running incarnation, which the host's
/// spec updates on every restart, so it stays valid when a supervisor restarts a host. Cheap to
/// clone.
pub struct Aggregates<A: Aggregate> {
    inner: Arc<Inner<A>>,
}

struct Inner<A: Aggregate> {
    /// The partition hosts, and the live aggregates they share with this handle.
    hosts: Hosts<A>,
    /// For reads that need no actor: existence checks and event history.
    store: EventStore,
    /// Where fences write (commands write through the hosts, with the same journal).
    journal: Journal,
    timeout: Duration,
    /// Where other nodes' aggregates are; `None` on a node alone.
    cluster: Option<Cluster>,
}

impl<A: Aggregate> Clone for Aggregates<A> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

/// One stored event of an aggregate, decoded.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct HistoryEntry<E> {
    pub version: u64,
    pub event_type: String,
    pub recorded_at_micros: i64,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
    pub event: E,
}

impl<A: Aggregate> fmt::Debug for Aggregates<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Aggregates")
            .field("hosts", &self.inner.hosts.name)
            .finish()
    }
}

impl<A: Aggregate> Aggregates<A> {
    /// A handle to the hosts named `host_name` (one per partition, [`DEFAULT_PARTITIONS`]),
    /// whose aggregates live in `store`; calls wait `timeout` for an answer. Start the hosts
    /// with [`Aggregates::spawn`] or [`Aggregates::child_spec`] on this handle, so that both
    /// share the live aggregates.
    pub fn new(host_name: impl Into<String>, store: EventStore, timeout: Duration) -> Self {
        let journal = Journal::Direct(store.clone());
        Self::placed(host_name, store, journal, timeout, DEFAULT_PARTITIONS, None)
    }

    /// Like [`Aggregates::new`], with `partitions` partitions (the cluster's placement's, when
    /// `cluster` is given: operations on aggregates another member owns go to it, and this node
    /// serves the other members' operations on the ones it owns; the handle registers itself
    /// with the cluster for that). Commands and fences write through `journal`.
    pub fn placed(
        host_name: impl Into<String>,
        store: EventStore,
        journal: Journal,
        timeout: Duration,
        partitions: u32,
        cluster: Option<Cluster>,
    ) -> Self {
        let partitions = cluster
            .as_ref()
            .map_or(partitions, |cluster| cluster.placement().partitions());
        let handle = Self {
            inner: Arc::new(Inner {
                hosts: Hosts::new(host_name.into(), store.clone(), journal.clone(), partitions),
                store,
                journal,
                timeout,
                cluster: cluster.clone(),
            }),
        };
        if let Some(cluster) = cluster {
            cluster.register(
                remote::target::<A>(),
                AggregateHandler::shared(handle.clone()),
            );
        }
        handle
    }

    /// The partition aggregate `id` belongs to (the cluster's placement's partition of it).
    pub fn partition_of(&self, id: &str) -> u32 {
        self.inner.hosts.view().partition_of(id)
    }

    /// Where aggregate `id` is served: `None` here, `Some(owner)` on another member.
    fn locate(&self, id: &str) -> Result<Option<String>, CommandError<A::Error>> {
        let Some(cluster) = &self.inner.cluster else {
            return Ok(None);
        };
        let stream = stream_name::<A>(id);
        match cluster.route(A::SERVICE, &stream) {
            Route::Local => Ok(None),
            Route::Remote(owner) => Ok(Some(owner)),
            Route::Unavailable { owner, reason } => {
                Err(remote::unavailable(&stream, &owner, &reason))
            }
        }
    }

    /// Waits until this node may answer a read of aggregate `id` from what it holds: at once
    /// without replication; with it, once this node is known to lead the aggregate's partition
    /// and has applied everything committed, so that a leader that was paused, cut off or
    /// deposed never answers from what it had.
    async fn read_barrier(&self, id: &str) -> Result<(), CommandError<A::Error>> {
        self.inner
            .journal
            .read_barrier(&stream_name::<A>(id))
            .await
            .map_err(CommandError::from_store)
    }

    /// Runs an operation on aggregate `id` where it is served: `local` here, or `operation` at
    /// another member. With replication, an answer "unavailable" (refused before anything was
    /// proposed: the node asked no longer leads the partition, or leads it but does not serve
    /// it yet) or "interrupted" (the leader was lost mid-write) is sent again where the
    /// partition is led now, until an answer settles it or [`NEW_LEADER_WAIT`] has passed since
    /// the first send, so a change of leader costs a resend, not an error. Every command
    /// carries an id with replication, so however many sends reach a leader, it applies once.
    async fn routed<T, Local, Answer>(
        &self,
        id: &str,
        local: Local,
        operation: impl Fn() -> Result<Operation<A>, CommandError<A::Error>>,
    ) -> Result<T, CommandError<A::Error>>
    where
        T: DeserializeOwned,
        Local: Fn() -> Answer,
        Answer: std::future::Future<Output = Result<T, CommandError<A::Error>>>,
    {
        let deadline = tokio::time::Instant::now() + NEW_LEADER_WAIT;
        let first = self.locate_within(id, None, deadline).await?;
        let answer = match &first {
            None => local().await,
            Some(owner) => self.remote(owner, id, operation()?).await,
        };
        let retryable = |answer: &Result<T, CommandError<A::Error>>| {
            matches!(
                answer,
                Err(CommandError::Unavailable { .. } | CommandError::Interrupted { .. })
            )
        };
        if !(self.inner.journal.is_replicated() && retryable(&answer)) {
            return answer;
        }
        // Once a send was interrupted, only an answer that says what the command did settles
        // it: done (or done before: the id is known), or refused. Unsettled, the client hears
        // "interrupted", never "not applied".
        let mut interrupted = matches!(answer, Err(CommandError::Interrupted { .. }));
        let mut last = answer;
        let mut refused_by = first;
        let mut pause = Duration::from_millis(20);
        while tokio::time::Instant::now() < deadline {
            // Another node may lead already; the one that refused may come to serve shortly.
            let wait_for_another = tokio::time::Instant::now() + pause;
            let Ok(target) = self
                .locate_within(id, Some(&refused_by), wait_for_another.min(deadline))
                .await
            else {
                continue;
            };
            let again = match &target {
                None => local().await,
                Some(owner) => match operation() {
                    Ok(operation) => self.remote(owner, id, operation).await,
                    Err(error) => Err(error),
                },
            };
            let after = if interrupted {
                "interrupted"
            } else {
                "unavailable"
            };
            metrics::counter!(crate::metrics::ROUTED_RESENDS, "after" => after).increment(1);
            let settles = matches!(
                again,
                Ok(_)
                    | Err(CommandError::Refused(_)
                        | CommandError::Conflict { .. }
                        | CommandError::CommandIdReused { .. })
            );
            if settles || !(interrupted || retryable(&again)) {
                return again;
            }
            if matches!(again, Err(CommandError::Interrupted { .. })) && !interrupted {
                interrupted = true;
                last = again;
            } else if !interrupted {
                last = again;
            }
            if target == refused_by {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            refused_by = target;
        }
        last
    }

    /// Where aggregate `id` is served, other than `not` when given. With replication, while
    /// its partition has no leader known here (an election) or only `not`, it waits (until
    /// `deadline`) for one; then answers what it knows.
    async fn locate_within(
        &self,
        id: &str,
        not: Option<&Option<String>>,
        deadline: tokio::time::Instant,
    ) -> Result<Option<String>, CommandError<A::Error>> {
        loop {
            let located = self.locate(id);
            let settled = match &located {
                Ok(target) => not != Some(target),
                Err(_) => false,
            };
            if settled
                || !self.inner.journal.is_replicated()
                || tokio::time::Instant::now() >= deadline
            {
                return located;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs `operation` on aggregate `id` at its owner, another member.
    async fn remote<T: DeserializeOwned>(
        &self,
        owner: &str,
        id: &str,
        operation: Operation<A>,
    ) -> Result<T, CommandError<A::Error>> {
        let stream = stream_name::<A>(id);
        let Some(cluster) = &self.inner.cluster else {
            unreachable!("locate names another owner only in a cluster")
        };
        let bytes = codec::encode(&operation).map_err(|e| CommandError::Internal {
            message: format!("an operation on {stream} cannot be encoded: {e}"),
        })?;
        remote::answer::<A, T>(
            &stream,
            owner,
            cluster.call(owner, &remote::target::<A>(), bytes).await,
        )
    }

    /// Whether aggregate `id` has any event. Answered from the state view or the store's index,
    /// without starting an actor (so that probing unknown ids costs no memory).
    pub async fn exists(&self, id: &str) -> Result<bool, CommandError<A::Error>> {
        self.routed(
            id,
            || self.local_exists(id),
            || Ok(Operation::Exists { id: id.to_owned() }),
        )
        .await
    }

    pub(crate) async fn local_exists(&self, id: &str) -> Result<bool, CommandError<A::Error>> {
        self.read_barrier(id).await?;
        self.exists_here(id)
    }

    /// Whether aggregate `id` has any event, from what this node holds (past the read barrier).
    fn exists_here(&self, id: &str) -> Result<bool, CommandError<A::Error>> {
        if let Some(current) = self.inner.hosts.view().get(id) {
            return Ok(current.version > 0);
        }
        let version = self
            .inner
            .store
            .stream_version(&stream_name::<A>(id))
            .map_err(CommandError::from_store)?;
        Ok(version > 0)
    }

    /// Every event of aggregate `id`, oldest first, decoded (read on the blocking pool). An
    /// aggregate with no events has an empty history.
    pub async fn history(
        &self,
        id: &str,
    ) -> Result<Vec<HistoryEntry<A::Event>>, CommandError<A::Error>> {
        self.history_range(id, 1, u64::MAX).await
    }

    /// The events of aggregate `id` with `from_version <= version <= to_version`, oldest first.
    pub async fn history_range(
        &self,
        id: &str,
        from_version: u64,
        to_version: u64,
    ) -> Result<Vec<HistoryEntry<A::Event>>, CommandError<A::Error>> {
        self.routed(
            id,
            || self.local_history_range(id, from_version, to_version),
            || {
                Ok(Operation::History {
                    id: id.to_owned(),
                    from_version,
                    to_version,
                })
            },
        )
        .await
    }

    pub(crate) async fn local_history_range(
        &self,
        id: &str,
        from_version: u64,
        to_version: u64,
    ) -> Result<Vec<HistoryEntry<A::Event>>, CommandError<A::Error>> {
        self.read_barrier(id).await?;
        let (store, stream) = (self.inner.store.clone(), stream_name::<A>(id));
        self.inner
            .store
            .blocking("reading a history", move || {
                Self::read_history(&store, &stream, from_version, to_version)
            })
            .await
            .map_err(CommandError::from_store)?
            .map_err(CommandError::from_store)
    }

    fn read_history(
        store: &EventStore,
        stream: &str,
        from_version: u64,
        to_version: u64,
    ) -> Result<Vec<HistoryEntry<A::Event>>, StoreError> {
        store
            .read_stream_range(stream, from_version, to_version)?
            .into_iter()
            .map(|record| {
                let event = decode_event::<A>(&record)?;
                Ok(HistoryEntry {
                    version: record.version,
                    event_type: record.event_type,
                    recorded_at_micros: record.recorded_at_micros,
                    correlation_id: record.correlation_id,
                    causation_id: record.causation_id,
                    event,
                })
            })
            .collect()
    }

    /// Starts this handle's partition hosts under their supervisor (linked to `supervisor`
    /// when given), which restarts a failed host up to `intensity` and then fails itself.
    pub async fn spawn(
        &self,
        settings: EntitySettings,
        intensity: Intensity,
        supervisor: Option<ActorCell>,
    ) -> Result<(), SpawnErr> {
        self.inner
            .hosts
            .start(&settings, intensity, supervisor)
            .await
    }

    /// A supervisor child spec that (re)starts this handle's partition hosts, under a
    /// supervisor of their own (see [`Aggregates::spawn`]).
    pub fn child_spec(&self, settings: EntitySettings, intensity: Intensity) -> ChildSpec {
        Supervisor::child_spec(self.inner.hosts.supervisor(&settings, intensity))
    }

    /// Runs a command on aggregate `id` and waits for its outcome.
    pub async fn execute(
        &self,
        id: &str,
        mut envelope: CommandEnvelope<A::Command>,
    ) -> Result<CommandOutcome<A>, CommandError<A::Error>> {
        // With replication every command gets an id (an `Idempotency-Key`'s, or one of its
        // own), so that a command whose leader was lost mid-write can be sent again to the
        // next one: applying runs the command-id check again, so it applies once.
        if self.inner.journal.is_replicated() && envelope.command_id.is_none() {
            envelope.command_id = Some(format!("auto:{}", uuid::Uuid::now_v7()));
        }
        // A command is sent again only after a former leader refused it or lost it (with
        // replication), and commands are not Clone: the second send decodes a copy kept
        // encoded.
        let spare = match self.inner.journal.is_replicated() {
            true => codec::encode(&envelope).ok(),
            false => None,
        };
        let envelope = std::sync::Mutex::new(Some(envelope));
        let take = || {
            let first = envelope
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            first.or_else(|| spare.as_deref().and_then(|bytes| codec::decode(bytes).ok()))
        };
        let lost = || CommandError::Internal {
            message: format!(
                "the command to {} could not be sent again",
                stream_name::<A>(id)
            ),
        };
        self.routed(
            id,
            || {
                let envelope = take();
                async move {
                    match envelope {
                        Some(envelope) => self.local_execute(id, envelope).await,
                        None => Err(lost()),
                    }
                }
            },
            || match take() {
                Some(envelope) => Ok(Operation::Execute {
                    id: id.to_owned(),
                    envelope,
                }),
                None => Err(lost()),
            },
        )
        .await
    }

    pub(crate) async fn local_execute(
        &self,
        id: &str,
        envelope: CommandEnvelope<A::Command>,
    ) -> Result<CommandOutcome<A>, CommandError<A::Error>> {
        let id = id.to_owned();
        self.call(&id, |reply| HostMsg::Request {
            id: id.clone(),
            request: Request::Execute { envelope, reply },
        })
        .await?
    }

    /// Settles the command sent to aggregate `id` with `command_id` when its answer was never
    /// heard (every attempt timed out): whether it was applied or refused, or, if it was not
    /// processed, fences its id so it never will be (see [`EventStore::fence_command`]).
    pub async fn fence(
        &self,
        id: &str,
        command_id: &str,
    ) -> Result<Fenced<A::Error>, CommandError<A::Error>> {
        self.routed(
            id,
            || self.local_fence(id, command_id),
            || {
                Ok(Operation::Fence {
                    id: id.to_owned(),
                    command_id: command_id.to_owned(),
                })
            },
        )
        .await
    }

    pub(crate) async fn local_fence(
        &self,
        id: &str,
        command_id: &str,
    ) -> Result<Fenced<A::Error>, CommandError<A::Error>> {
        let stream = stream_name::<A>(id);
        let processed = self
            .inner
            .journal
            .fence(&stream, command_id)
            .await
            .map_err(CommandError::from_store)?;
        let Some(processed) = processed else {
            return Ok(Fenced::NeverApplied);
        };
        if processed.stream != stream {
            return Err(CommandError::CommandIdReused {
                command_id: command_id.to_owned(),
            });
        }
        match processed.rejection {
            None => Ok(Fenced::Applied),
            Some(encoded) => codec::decode(&encoded)
                .map(Fenced::Refused)
                .map_err(|source| {
                    CommandError::from_store(StoreError::Corrupt {
                        stream,
                        version: processed.last_version,
                        source,
                    })
                }),
        }
    }

    /// The current state and version of aggregate `id` (default state, version 0, if it has
    /// no events). Served from the live aggregates' view when it is live; an aggregate with no
    /// events is answered without loading anything.
    pub async fn get(&self, id: &str) -> Result<Versioned<A::State>, CommandError<A::Error>> {
        self.routed(
            id,
            || self.local_get(id),
            || Ok(Operation::Get { id: id.to_owned() }),
        )
        .await
    }

    pub(crate) async fn local_get(
        &self,
        id: &str,
    ) -> Result<Versioned<A::State>, CommandError<A::Error>> {
        self.read_barrier(id).await?;
        if let Some(current) = self.inner.hosts.view().get(id) {
            return Ok(current);
        }
        if !self.exists_here(id)? {
            return Ok(Versioned {
                state: A::State::default(),
                version: 0,
            });
        }
        let id = id.to_owned();
        self.call(&id, |reply| HostMsg::Request {
            id: id.clone(),
            request: Request::Get { reply },
        })
        .await?
    }

    /// The counters of this kind's hosts.
    pub async fn stats(&self) -> Result<HostStats, CommandError<A::Error>> {
        Ok(self.inner.hosts.stats())
    }

    async fn call<T: Send + 'static>(
        &self,
        id: &str,
        message: impl FnOnce(ractor::RpcReplyPort<T>) -> HostMsg<A>,
    ) -> Result<T, CommandError<A::Error>> {
        let unavailable = || CommandError::Unavailable {
            what: format!("the host of {}", stream_name::<A>(id)),
            retry_after_ms: 1_000,
        };
        let host = self.inner.hosts.host_of(id).ok_or_else(unavailable)?;
        let timeout = self.inner.timeout;
        match host.call(message, Some(timeout)).await {
            Ok(CallResult::Success(answer)) => Ok(answer),
            Ok(CallResult::Timeout) => Err(CommandError::TimedOut {
                stream: stream_name::<A>(id),
                after_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            }),
            // The reply port was dropped unanswered: its task or host died holding it.
            Ok(CallResult::SenderError) => Err(CommandError::Crashed {
                stream: stream_name::<A>(id),
            }),
            Err(_) => Err(unavailable()),
        }
    }
}
