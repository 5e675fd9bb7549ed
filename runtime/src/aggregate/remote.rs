//! An aggregate kind's operations across nodes: what `Aggregates<A>` sends to the owner of an
//! aggregate on another node, the handler that runs them there, and how the cluster's failures
//! read to a caller.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::handle::Aggregates;
use super::{Aggregate, CommandEnvelope, CommandError};
use crate::cluster::wire::CallError;
use crate::cluster::{Handler, RETRY_AFTER_MS};
use crate::codec;

/// The gateway target of aggregate kind `A`'s operations.
pub(crate) fn target<A: Aggregate>() -> String {
    format!("aggregate:{}", A::KIND)
}

/// One operation on an aggregate, as sent to its owner.
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound(serialize = "", deserialize = ""))]
pub(crate) enum Operation<A: Aggregate> {
    Execute {
        id: String,
        envelope: CommandEnvelope<A::Command>,
    },
    Get {
        id: String,
    },
    Exists {
        id: String,
    },
    History {
        id: String,
        from_version: u64,
        to_version: u64,
    },
    Fence {
        id: String,
        command_id: String,
    },
}

/// Runs operations from other nodes on this node's aggregates of kind `A` (never routing them
/// on: this node owns them, or the caller's placement would have been refused).
pub(crate) struct AggregateHandler<A: Aggregate>(pub Aggregates<A>);

impl<A: Aggregate> Handler for AggregateHandler<A> {
    fn handle(&self, operation: Vec<u8>) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        let aggregates = self.0.clone();
        Box::pin(async move {
            let operation: Operation<A> =
                codec::decode(&operation).map_err(|e| format!("a {} operation: {e}", A::KIND))?;
            let answer = match operation {
                Operation::Execute { id, envelope } => {
                    codec::encode(&aggregates.local_execute(&id, envelope).await)
                }
                Operation::Get { id } => codec::encode(&aggregates.local_get(&id).await),
                Operation::Exists { id } => codec::encode(&aggregates.local_exists(&id).await),
                Operation::History {
                    id,
                    from_version,
                    to_version,
                } => codec::encode(
                    &aggregates
                        .local_history_range(&id, from_version, to_version)
                        .await,
                ),
                Operation::Fence { id, command_id } => {
                    codec::encode(&aggregates.local_fence(&id, &command_id).await)
                }
            };
            answer.map_err(|e| e.to_string())
        })
    }
}

impl<A: Aggregate> AggregateHandler<A> {
    pub(crate) fn shared(aggregates: Aggregates<A>) -> Arc<dyn Handler> {
        Arc::new(Self(aggregates))
    }
}

/// The answer of an operation run on another node, or what the call's failure means to the
/// caller: an owner that could not be reached (or refused the call before running it) did not
/// apply it, which is `Unavailable`; one that did not answer in time, or whose link closed
/// mid-call, may still have (`TimedOut`, `Interrupted`: retry with its command id).
pub(crate) fn answer<A: Aggregate, T: DeserializeOwned>(
    stream: &str,
    owner: &str,
    called: Result<Vec<u8>, CallError>,
) -> Result<T, CommandError<A::Error>> {
    let bytes = called.map_err(|error| match error {
        CallError::Unreachable { .. }
        | CallError::NotServing { .. }
        | CallError::PlacedDifferently { .. } => unavailable(stream, owner, &error.to_string()),
        CallError::TimedOut { after_ms, .. } => CommandError::TimedOut {
            stream: stream.to_owned(),
            after_ms,
        },
        CallError::Interrupted { .. } => CommandError::Interrupted {
            stream: stream.to_owned(),
            reason: error.to_string(),
        },
        // Not sent (`TooLarge`): the edge's body limit keeps commands far below a frame.
        CallError::Undecodable(_)
        | CallError::NoHandler { .. }
        | CallError::Handler { .. }
        | CallError::TooLarge { .. } => {
            tracing::error!(%stream, owner, %error, "a call to the aggregate's owner failed");
            CommandError::Internal {
                message: format!("{stream} on node {owner}: {error}"),
            }
        }
    })?;
    codec::decode::<Result<T, CommandError<A::Error>>>(&bytes).map_err(|error| {
        CommandError::Internal {
            message: format!("the answer for {stream} from node {owner}: {error}"),
        }
    })?
}

/// "The owner of `stream` cannot serve it now."
pub(crate) fn unavailable<E>(stream: &str, owner: &str, reason: &str) -> CommandError<E> {
    CommandError::Unavailable {
        what: format!("{stream} (owned by node {owner}: {reason})"),
        retry_after_ms: RETRY_AFTER_MS,
    }
}
