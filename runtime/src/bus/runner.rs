//! The actor that feeds one projection from the global log: reads a batch after its
//! checkpoint, applies it, commits the changes with the new checkpoint, and waits for the log
//! to grow.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::watch;

use super::projection::{Projection, ProjectionError, Tables};
use crate::store::EventStore;

/// Events read and applied per transaction.
const BATCH: usize = 512;
/// Batches per message, so that a long catch-up still lets a rebuild or a stop in.
const BATCHES_PER_TURN: usize = 8;

pub(crate) enum RunnerMsg {
    /// The log may have grown: apply what is new.
    Catch,
    /// Start again from the beginning of the log, with empty tables.
    Rebuild(RpcReplyPort<Result<(), String>>),
}

impl ractor::Message for RunnerMsg {}

pub(crate) struct Runner;

pub(crate) struct RunnerArgs {
    pub projection: Arc<dyn Projection>,
    pub store: EventStore,
    /// The last position applied, for queries waiting to read their writes.
    pub progress: watch::Sender<Option<u64>>,
}

pub(crate) struct RunnerState {
    args: RunnerArgs,
    /// The next log position to apply.
    next: u64,
    /// Tells this actor when the log grows.
    forwarder: tokio::task::JoinHandle<()>,
}

impl Actor for Runner {
    type Msg = RunnerMsg;
    type State = RunnerState;
    type Arguments = RunnerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RunnerMsg>,
        args: RunnerArgs,
    ) -> Result<RunnerState, ActorProcessingErr> {
        let checkpoint = args.store.checkpoint(args.projection.name())?;
        args.progress.send_replace(checkpoint);
        let mut log_end = args.store.watch_log_end();
        let notify = myself.clone();
        let forwarder = tokio::spawn(async move {
            while log_end.changed().await.is_ok() {
                if notify.cast(RunnerMsg::Catch).is_err() {
                    break;
                }
            }
        });
        myself.cast(RunnerMsg::Catch)?;
        Ok(RunnerState {
            args,
            next: checkpoint.map_or(0, |position| position + 1),
            forwarder,
        })
    }

    async fn post_stop(
        &self,
        _: ActorRef<RunnerMsg>,
        state: &mut RunnerState,
    ) -> Result<(), ActorProcessingErr> {
        state.forwarder.abort();
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<RunnerMsg>,
        message: RunnerMsg,
        state: &mut RunnerState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RunnerMsg::Catch => {
                for _ in 0..BATCHES_PER_TURN {
                    let applied = apply_batch(&state.args, state.next).await?;
                    match applied {
                        Some(last) => state.next = last + 1,
                        None => return Ok(()),
                    }
                }
                // More may be waiting: come back after whatever else is queued.
                myself.cast(RunnerMsg::Catch)?;
            }
            RunnerMsg::Rebuild(reply) => {
                let projection = &state.args.projection;
                let reset = state
                    .args
                    .store
                    .reset_projection(projection.name(), projection.tables())
                    .await;
                if reset.is_ok() {
                    tracing::info!(projection = projection.name(), "rebuilding from position 0");
                    state.next = 0;
                    state.args.progress.send_replace(None);
                    myself.cast(RunnerMsg::Catch)?;
                }
                let _ = reply.send(reset.map_err(|error| error.to_string()));
            }
        }
        Ok(())
    }
}

/// Applies the events from `next` on (one batch) and commits them with the checkpoint.
/// Returns the last position applied, or `None` when there was nothing new.
pub(crate) async fn apply_batch(
    args: &RunnerArgs,
    next: u64,
) -> Result<Option<u64>, ProjectionError> {
    let (store, projection) = (args.store.clone(), args.projection.clone());
    let applied = args
        .store
        .blocking("applying a projection batch", move || {
            let events = store.read_all_from(next, BATCH)?;
            let Some(last) = events.last().map(|event| event.position) else {
                return Ok::<_, ProjectionError>(None);
            };
            let snapshot = store.read_models()?;
            let mut tables = Tables::new(&snapshot);
            for event in &events {
                projection.apply(event, &mut tables)?;
            }
            Ok(Some((last, tables.into_changes(), events.len())))
        })
        .await
        .map_err(|error| ProjectionError::Other(format!("projection task failed: {error}")))??;
    let Some((last, changes, count)) = applied else {
        return Ok(None);
    };
    args.store
        .commit_projection(args.projection.name(), last, changes)
        .await?;
    args.progress.send_replace(Some(last));
    let name = args.projection.name();
    metrics::counter!(crate::metrics::PROJECTED_EVENTS, "projection" => name)
        .increment(count as u64);
    let end = *args.store.watch_log_end().borrow();
    metrics::gauge!(crate::metrics::PROJECTION_LAG, "projection" => name)
        .set(end.saturating_sub(last + 1) as f64);
    Ok(Some(last))
}

/// Runs `projection` from the beginning of the log to its end, with emptied tables, outside
/// any actor: for `playhouse projections rebuild` on a stopped node. Returns the events read.
pub async fn rebuild_offline(
    store: &EventStore,
    projection: Arc<dyn Projection>,
) -> Result<u64, ProjectionError> {
    store
        .reset_projection(projection.name(), projection.tables())
        .await
        .map_err(ProjectionError::Store)?;
    let args = RunnerArgs {
        projection,
        store: store.clone(),
        progress: watch::channel(None).0,
    };
    let mut next = 0;
    while let Some(last) = apply_batch(&args, next).await? {
        next = last + 1;
    }
    Ok(next)
}
