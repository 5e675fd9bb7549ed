//! A saga kind's operations across nodes: a saga runs on the owner of its stream's partition,
//! so starting or reading one from another node's edge is a call to that owner.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{SagaError, SagaKind, Sagas};
use crate::cluster::wire::CallError;
use crate::cluster::{Cluster, Handler, Route};
use crate::codec;

/// One operation on a saga, as sent to its owner.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum SagaOperation<I> {
    Start {
        id: String,
        input: I,
        subject: String,
        correlation_id: String,
    },
    Get {
        id: String,
    },
}

/// The target other nodes call for sagas of kind `K`.
pub(crate) fn target<K: SagaKind>() -> String {
    format!("saga:{}", K::KIND)
}

/// Runs other nodes' operations on this node's sagas of kind `K`.
pub(crate) struct SagaHandler<K: SagaKind>(pub Sagas<K>);

impl<K: SagaKind> Handler for SagaHandler<K> {
    fn handle(&self, operation: Vec<u8>) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        let sagas = self.0.clone();
        Box::pin(async move {
            let operation: SagaOperation<K::Input> =
                codec::decode(&operation).map_err(|e| format!("a {} operation: {e}", K::KIND))?;
            let answer = match operation {
                SagaOperation::Start {
                    id,
                    input,
                    subject,
                    correlation_id,
                } => codec::encode(
                    &sagas
                        .local_start(&id, input, &subject, &correlation_id)
                        .await,
                ),
                SagaOperation::Get { id } => codec::encode(&sagas.local_get(&id).await),
            };
            answer.map_err(|e| e.to_string())
        })
    }
}

impl<K: SagaKind> SagaHandler<K> {
    pub(crate) fn shared(sagas: Sagas<K>) -> Arc<dyn Handler> {
        Arc::new(Self(sagas))
    }
}

/// Where saga `id` of kind `K` runs: `None` here, `Some(owner)` on another member.
pub(crate) fn locate<K: SagaKind>(
    cluster: Option<&Cluster>,
    id: &str,
) -> Result<Option<String>, SagaError> {
    let Some(cluster) = cluster else {
        return Ok(None);
    };
    match cluster.route(K::SERVICE, &format!("{}-{id}", K::KIND)) {
        Route::Local => Ok(None),
        Route::Remote(owner) => Ok(Some(owner)),
        Route::Unavailable { owner, reason } => Err(SagaError::Unavailable(format!(
            "saga {}-{id} is owned by node {owner}, which cannot serve it now: {reason}",
            K::KIND
        ))),
    }
}

/// Runs `operation` at `owner` and reads its answer.
pub(crate) async fn call<K: SagaKind, T: DeserializeOwned>(
    cluster: &Cluster,
    owner: &str,
    operation: SagaOperation<K::Input>,
) -> Result<T, SagaError> {
    let bytes = codec::encode(&operation).map_err(|e| SagaError::Store(e.to_string()))?;
    let answer = cluster
        .call(owner, &target::<K>(), bytes)
        .await
        .map_err(|error| match error {
            CallError::Unreachable { .. }
            | CallError::NotServing { .. }
            | CallError::PlacedDifferently { .. } => SagaError::Unavailable(error.to_string()),
            CallError::Interrupted { .. } | CallError::TimedOut { .. } => {
                SagaError::OutcomeUnknown(error.to_string())
            }
            other => SagaError::Store(other.to_string()),
        })?;
    codec::decode::<Result<T, SagaError>>(&answer).map_err(|e| SagaError::Store(e.to_string()))?
}
