//! The gateway: the one actor of a node that other nodes call. It sits in the process group
//! `playhouse.gateway.{node}`, which ractor_cluster mirrors to every linked node, so a peer
//! finds it by the node's name. A call is decoded here, checked (the caller's placement, this
//! node still serving) and run by the registered [`Handler`] in its own task, so one slow call
//! never holds up the others; whatever goes wrong is answered, never dropped.

use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use tracing::Instrument;

use super::Cluster;
use super::wire::{CallError, Heartbeat, Request, Response};
use crate::codec;

/// What other nodes call on this one: a handler name's operations, encoded by the handler.
pub trait Handler: Send + Sync + 'static {
    /// Runs `operation` and answers its encoded result; `Err` says why it could not run at
    /// all (an operation that does not decode).
    fn handle(&self, operation: Vec<u8>) -> BoxFuture<'static, Result<Vec<u8>, String>>;

    /// Whether it runs only while this node serves its partitions (true: it reads or writes
    /// them). A handler that reports on the node itself answers also when it does not serve.
    fn needs_serving(&self) -> bool {
        true
    }
}

/// The process group of `node`'s gateway.
pub(crate) fn group(node: &str) -> String {
    format!("playhouse.gateway.{node}")
}

/// The gateway's messages: both carry encoded [`Request`]s or [`Heartbeat`]s, so that the
/// actor-level decoding (ractor's, which drops what it cannot decode) never fails on content.
#[derive(RactorClusterMessage)]
pub enum GatewayMsg {
    #[rpc]
    Call(Vec<u8>, RpcReplyPort<Vec<u8>>),
    #[rpc]
    Heartbeat(Vec<u8>, RpcReplyPort<Vec<u8>>),
}

struct Gateway;

/// Starts this node's gateway and puts it in its process group.
pub(crate) async fn start(cluster: Cluster) -> Result<(), ractor::SpawnErr> {
    let node = cluster.node().to_owned();
    let (gateway, _) = Actor::spawn(Some(format!("gateway-{node}")), Gateway, cluster).await?;
    ractor::pg::join(group(&node), vec![gateway.get_cell()]);
    Ok(())
}

impl Actor for Gateway {
    type Msg = GatewayMsg;
    type State = Cluster;
    type Arguments = Cluster;

    async fn pre_start(
        &self,
        _: ActorRef<GatewayMsg>,
        cluster: Cluster,
    ) -> Result<Cluster, ActorProcessingErr> {
        Ok(cluster)
    }

    async fn handle(
        &self,
        _: ActorRef<GatewayMsg>,
        message: GatewayMsg,
        cluster: &mut Cluster,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            GatewayMsg::Call(bytes, reply) => {
                let cluster = cluster.clone();
                tokio::spawn(async move {
                    let response = serve(&cluster, &bytes).await;
                    let encoded = codec::encode(&response).unwrap_or_else(|error| {
                        let failed: Response = Err(CallError::Handler {
                            target: String::new(),
                            reason: format!("the answer could not be encoded: {error}"),
                        });
                        codec::encode(&failed).unwrap_or_default()
                    });
                    let _ = reply.send(encoded);
                });
            }
            GatewayMsg::Heartbeat(bytes, reply) => {
                let answer = match codec::decode::<Heartbeat>(&bytes) {
                    Ok(heartbeat) => cluster.heard(&heartbeat),
                    Err(error) => {
                        tracing::warn!(%error, "a heartbeat that does not decode; answering ours");
                        cluster.heartbeat_for(None)
                    }
                };
                let _ = reply.send(codec::encode(&answer).unwrap_or_default());
            }
        }
        Ok(())
    }
}

/// Runs one call from another node.
async fn serve(cluster: &Cluster, bytes: &[u8]) -> Response {
    let request: Request =
        codec::decode(bytes).map_err(|error| CallError::Undecodable(error.to_string()))?;
    let node = cluster.node().to_owned();
    if request.placement != cluster.inner.fingerprint {
        return Err(CallError::PlacedDifferently {
            node,
            theirs: request.placement,
            ours: cluster.inner.fingerprint,
        });
    }
    let handler = cluster
        .inner
        .handlers
        .get(&request.target)
        .map(|handler| handler.clone())
        .ok_or_else(|| CallError::NoHandler {
            node: node.clone(),
            target: request.target.clone(),
        })?;
    if handler.needs_serving()
        && let Err(reason) = cluster.serving()
    {
        return Err(CallError::NotServing { node, reason });
    }
    let started = Instant::now();
    let span = tracing::debug_span!(
        "remote_call",
        from = %request.from,
        target = %request.target,
        trace_id = request.trace_id.as_deref().unwrap_or(""),
    );
    let work = handler.handle(request.operation);
    let answered = match &request.trace_id {
        Some(trace_id) => {
            crate::trace::traced(Arc::from(trace_id.as_str()), work.instrument(span)).await
        }
        None => work.instrument(span).await,
    };
    let elapsed = started.elapsed();
    metrics::histogram!(crate::metrics::CLUSTER_SERVED_SECONDS, "target" => request.target.clone())
        .record(elapsed.as_secs_f64());
    // The caller's trace id, so that one request reads across both nodes' logs.
    tracing::debug!(
        from = %request.from,
        target = %request.target,
        trace_id = request.trace_id.as_deref().unwrap_or(""),
        ok = answered.is_ok(),
        elapsed_ms = elapsed.as_secs_f64() * 1e3,
        "served a call from another node"
    );
    answered.map_err(|reason| CallError::Handler {
        target: request.target,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ractor::rpc::CallResult;

    use super::*;
    use crate::cluster::wire::CallError;
    use crate::config::{ClusterConfig, Member};
    use crate::store::{EventStore, StoreOptions};

    async fn lone_cluster(dir: &std::path::Path) -> Cluster {
        let store = EventStore::open(dir.join("events.redb"), StoreOptions::default())
            .await
            .unwrap();
        let member = |name: &str, port: u16| Member {
            name: name.into(),
            address: format!("127.0.0.1:{port}"),
            edge: None,
            services: vec!["accounts".into()],
        };
        let config = ClusterConfig {
            listen: "127.0.0.1:1".parse().unwrap(),
            cookie: None,
            cookie_source: "none".into(),
            members: vec![member("gateway-test-a", 1), member("gateway-test-b", 2)],
            heartbeat_interval: Duration::from_millis(250),
            heartbeat_timeout: Duration::from_millis(1500),
            partitions: 8,
            call_timeout: Duration::from_secs(1),
            max_frame_bytes: 1 << 20,
            handshake_timeout: Duration::from_secs(5),
            max_connections: 64,
            max_handshakes: 16,
            tls: None,
        };
        Cluster::new("gateway-test-a", &config, store, dir)
    }

    #[tokio::test]
    async fn a_call_that_does_not_decode_is_answered_with_an_error_not_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = lone_cluster(dir.path()).await;
        let (gateway, _) = Actor::spawn(None, Gateway, cluster).await.unwrap();
        for garbage in [vec![], vec![0xff; 64], b"not a request".to_vec()] {
            let answered = gateway
                .call(
                    |reply| GatewayMsg::Call(garbage.clone(), reply),
                    Some(Duration::from_secs(2)),
                )
                .await
                .unwrap();
            let CallResult::Success(bytes) = answered else {
                panic!("no answer to {garbage:?}: {answered:?}");
            };
            let response: Response = codec::decode(&bytes).unwrap();
            assert!(
                matches!(response, Err(CallError::Undecodable(_))),
                "{response:?}"
            );
        }
        // A heartbeat that does not decode is answered with this node's own.
        let answered = gateway
            .call(
                |reply| GatewayMsg::Heartbeat(vec![1, 2, 3], reply),
                Some(Duration::from_secs(2)),
            )
            .await
            .unwrap();
        let CallResult::Success(bytes) = answered else {
            panic!("no answer to a bad heartbeat");
        };
        let heartbeat: Heartbeat = codec::decode(&bytes).unwrap();
        assert_eq!(heartbeat.from, "gateway-test-a");
        gateway.stop(None);
    }
}
