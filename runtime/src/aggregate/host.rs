//! The host of one partition of one aggregate kind: the actor that owns the partition's live
//! aggregates, runs their requests and passivates the idle ones.
//!
//! A live aggregate is an entry in the [`StateView`], not an actor: the host starts a task for
//! an aggregate when a request for it arrives and none is running, and queues the requests that
//! arrive meanwhile for that task, which serves them in arrival order and ends when its queue
//! is empty. One task at a time per aggregate keeps the single writer per stream; tasks of
//! different aggregates run side by side, so a slow or conflicting aggregate does not stall its
//! neighbours. The host itself only routes and bookkeeps: it never awaits I/O.
//!
//! A panic in domain code fails the host: requests that were waiting their turn are answered
//! "unavailable" (never applied), the tasks in flight are aborted with it (their callers hear
//! "crashed": their outcome is unknown), and its supervisor starts a new incarnation, which
//! begins a new generation of the partition (empty) and loads each aggregate again from the
//! store on its next request. The partition is the unit because it is what a leader change
//! will stop and start, and because one panicking aggregate's siblings were sharing its host.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::command::{self, CommandMetrics, TaskContext};
use super::messages::{HostMsg, Request, RequestQueue, TaskEnd};
use super::view::StateView;
use super::{Aggregate, CommandError, EntitySettings, stream_name};
use crate::replication::Journal;
use crate::store::EventStore;

/// Counters a kind's hosts report, for tests, metrics and the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HostStats {
    /// Aggregates in memory.
    pub live: usize,
    /// Aggregates loaded from the store (first use, after passivation, after a restart).
    pub started: u64,
    /// Partition hosts started again (after a panic in domain code, or with all the kind's
    /// hosts when their supervisor was restarted).
    pub restarts: u64,
    pub passivated: u64,
}

/// The counters of one aggregate kind, shared by all its hosts and their incarnations.
#[derive(Debug, Default)]
pub(crate) struct KindCounters {
    pub activations: Arc<AtomicU64>,
    pub restarts: AtomicU64,
    pub passivated: AtomicU64,
}

impl KindCounters {
    pub(crate) fn stats(&self, live: usize) -> HostStats {
        HostStats {
            live,
            started: self.activations.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
            passivated: self.passivated.load(Ordering::Relaxed),
        }
    }
}

/// The host actor of one partition of aggregate kind `A`.
pub(crate) struct PartitionHost<A>(PhantomData<fn() -> A>);

impl<A> fmt::Debug for PartitionHost<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PartitionHost")
    }
}

impl<A> Default for PartitionHost<A> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

/// What a partition host needs to run.
#[derive(Debug)]
pub(crate) struct HostArgs<A: Aggregate> {
    pub store: EventStore,
    pub journal: Journal,
    /// The kind's live aggregates, of which this host owns one partition.
    pub view: StateView<A>,
    pub partition: u32,
    pub settings: EntitySettings,
    pub counters: Arc<KindCounters>,
}

/// An aggregate with a task running: the task, its number, and what waits its turn.
struct Running<A: Aggregate> {
    task: AbortHandle,
    ticket: u64,
    queue: Arc<RequestQueue<A>>,
}

pub(crate) struct HostState<A: Aggregate> {
    context: Arc<TaskContext<A>>,
    counters: Arc<KindCounters>,
    running: HashMap<Box<str>, Running<A>>,
    /// Tasks started by this incarnation, to tell a finished task from its successor.
    tickets: u64,
}

impl<A: Aggregate> fmt::Debug for HostState<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostState")
            .field("kind", &A::KIND)
            .field("partition", &self.context.partition)
            .field("running", &self.running.len())
            .finish_non_exhaustive()
    }
}

impl<A: Aggregate> Drop for HostState<A> {
    /// A host that stops takes its tasks with it: a task of a gone incarnation must not go on
    /// writing while the next one serves the same aggregates.
    fn drop(&mut self) {
        for running in self.running.values() {
            running.task.abort();
        }
    }
}

impl<A: Aggregate> Actor for PartitionHost<A> {
    type Msg = HostMsg<A>;
    type State = HostState<A>;
    type Arguments = HostArgs<A>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: HostArgs<A>,
    ) -> Result<Self::State, ActorProcessingErr> {
        // What a previous incarnation had live is not trusted: its aggregates load again.
        let (generation, dropped) = args.view.begin_generation(args.partition);
        let metrics = CommandMetrics::of(A::KIND);
        if dropped > 0 {
            metrics.live(args.view.len());
        }
        if generation > 1 {
            args.counters.restarts.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(timeout) = args.settings.idle_timeout {
            myself.send_after(sweep_period(timeout), || HostMsg::Sweep);
        }
        Ok(HostState {
            context: Arc::new(TaskContext {
                store: args.store,
                journal: args.journal,
                settings: args.settings,
                view: args.view,
                partition: args.partition,
                generation,
                metrics,
                activations: args.counters.activations.clone(),
            }),
            counters: args.counters,
            running: HashMap::new(),
            tickets: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            HostMsg::Request { id, request } => dispatch(&myself, state, id, request),
            HostMsg::Finished { id, ticket, end } => match end {
                TaskEnd::Done => {
                    // A newer task may already serve the aggregate (this one had closed its
                    // queue); it keeps its entry.
                    if state.running.get(&id).is_some_and(|r| r.ticket == ticket) {
                        state.running.remove(&id);
                    }
                }
                TaskEnd::Panicked(panic) => return Err(fail(state, &id, &panic).into()),
            },
            HostMsg::Sweep => {
                if let Some(timeout) = state.context.settings.idle_timeout {
                    passivate_idle(state, timeout);
                    myself.send_after(sweep_period(timeout), || HostMsg::Sweep);
                }
            }
        }
        Ok(())
    }
}

/// How often a host looks for idle aggregates: an aggregate is passivated between one and
/// one and a quarter idle timeouts after its last use.
fn sweep_period(idle_timeout: Duration) -> Duration {
    (idle_timeout / 4).max(Duration::from_millis(10))
}

/// Serves `request` now, or after the requests already waiting for aggregate `id`.
fn dispatch<A: Aggregate>(
    myself: &ActorRef<HostMsg<A>>,
    state: &mut HostState<A>,
    id: String,
    request: Request<A>,
) {
    let request = match state.running.get(id.as_str()) {
        Some(running) => match running.queue.push(request) {
            Ok(()) => return,
            // Its task has served its last request and published: a new one takes over.
            Err(request) => request,
        },
        None => request,
    };
    // A read of a live aggregate needs no task (the handle reads the view itself; this is a
    // read that raced its activation).
    let request = match request {
        Request::Get { reply } => {
            let partition = state.context.partition;
            match state.context.view.live(partition, &id) {
                Some(live) => {
                    state.context.view.touch(partition, &id);
                    let _ = reply.send(Ok(live.current));
                    return;
                }
                None => Request::Get { reply },
            }
        }
        execute => execute,
    };
    let id: Box<str> = id.into();
    let queue = Arc::new(RequestQueue::new());
    state.tickets += 1;
    let ticket = state.tickets;
    let task = spawn_task(myself, state, id.clone(), ticket, request, queue.clone());
    state.running.insert(
        id,
        Running {
            task,
            ticket,
            queue,
        },
    );
}

/// Runs `request` (and those queued behind it) as a task that tells the host when it is done,
/// or that domain code panicked.
fn spawn_task<A: Aggregate>(
    myself: &ActorRef<HostMsg<A>>,
    state: &HostState<A>,
    id: Box<str>,
    ticket: u64,
    request: Request<A>,
    queue: Arc<RequestQueue<A>>,
) -> AbortHandle {
    let (host, context) = (myself.clone(), state.context.clone());
    let task = tokio::spawn(async move {
        let run = command::run(context, id.clone(), request, queue);
        // The task's own state (the caller's reply port among it) is dropped by the unwind, so
        // its caller hears "crashed" at once; the host hears why from this message.
        let end = match AssertUnwindSafe(run).catch_unwind().await {
            Ok(()) => TaskEnd::Done,
            Err(panic) => TaskEnd::Panicked(panic_message(panic.as_ref())),
        };
        let _ = host.send_message(HostMsg::Finished { id, ticket, end });
    });
    task.abort_handle()
}

/// Ends this incarnation after a panic in aggregate `id`'s domain code: what waits is answered
/// "unavailable" (it never ran), and the error says what happened for the supervisor's log.
fn fail<A: Aggregate>(state: &mut HostState<A>, id: &str, panic: &str) -> String {
    let stream = stream_name::<A>(id);
    let partition = state.context.partition;
    tracing::error!(%stream, partition, %panic,
        "domain code panicked; restarting the partition's host from the store");
    for running in state.running.values() {
        for request in running.queue.drain() {
            request.fail(CommandError::Unavailable {
                what: format!("{} partition {partition} (restarting)", A::KIND),
                retry_after_ms: 100,
            });
        }
    }
    format!(
        "{} partition {partition}: domain code panicked on {stream}: {panic}",
        A::KIND
    )
}

/// Removes from memory the aggregates unused for `timeout`, except those with requests in
/// flight. They load again, from their snapshot and tail, on their next request.
fn passivate_idle<A: Aggregate>(state: &mut HostState<A>, timeout: Duration) {
    let Some(idle_since) = Instant::now().checked_sub(timeout) else {
        return;
    };
    let context = &state.context;
    let running = &state.running;
    let passivated = context
        .view
        .passivate_idle(context.partition, idle_since, |id| running.contains_key(id));
    if passivated > 0 {
        tracing::debug!(
            kind = A::KIND,
            partition = context.partition,
            passivated,
            "passivated idle aggregates"
        );
        state
            .counters
            .passivated
            .fetch_add(passivated as u64, Ordering::Relaxed);
        context.metrics.live(context.view.len());
    }
}

/// A panic's message, when it has one.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}
