//! What other nodes' messages run on this node, whatever transport brought them: a call is
//! decoded here, checked (the caller's placement, this node still serving) and run by the
//! registered [`Handler`]; a heartbeat is answered with this node's. Whatever goes wrong is
//! answered, never dropped.

use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use tracing::Instrument;

use super::Cluster;
use super::transport::{Channel, Inbound};
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

    /// Whether it answers nodes of no cluster yet (a node asking to join, which has the
    /// cookie but not the cluster's id): it must then give away nothing but what a node
    /// with the cookie may ask.
    fn open_to_newcomers(&self) -> bool {
        false
    }
}

/// What this node answers to other nodes: calls to its [`Handler`]s, and heartbeats.
pub(crate) struct ClusterInbound(pub Cluster);

impl Inbound for ClusterInbound {
    fn receive(&self, channel: Channel, message: Vec<u8>) -> BoxFuture<'static, Vec<u8>> {
        let cluster = self.0.clone();
        match channel {
            Channel::Call => Box::pin(async move {
                let response = serve(&cluster, &message).await;
                let failed = |reason: String| {
                    let failed: Response = Err(CallError::Handler {
                        target: String::new(),
                        reason,
                    });
                    codec::encode(&failed).unwrap_or_default()
                };
                match codec::encode(&response) {
                    // An answer the caller's link would refuse closes the link, not the call.
                    Ok(bytes) if bytes.len() as u64 > cluster.config().max_frame_bytes => {
                        failed(format!(
                            "the answer is {} bytes, more than one frame may be ({}, cluster.max_frame_bytes)",
                            bytes.len(),
                            cluster.config().max_frame_bytes
                        ))
                    }
                    Ok(bytes) => bytes,
                    Err(error) => failed(format!("the answer could not be encoded: {error}")),
                }
            }),
            Channel::Heartbeat => {
                let answer = match codec::decode::<Heartbeat>(&message) {
                    Ok(heartbeat) => cluster.heard(&heartbeat),
                    Err(error) => {
                        tracing::warn!(%error, "a heartbeat that does not decode; answering ours");
                        cluster.heartbeat_for(None)
                    }
                };
                Box::pin(std::future::ready(
                    codec::encode(&answer).unwrap_or_default(),
                ))
            }
        }
    }
}

/// Runs one call from another node.
async fn serve(cluster: &Cluster, bytes: &[u8]) -> Response {
    let request: Request =
        codec::decode(bytes).map_err(|error| CallError::Undecodable(error.to_string()))?;
    let node = cluster.node().to_owned();
    let handler = cluster
        .inner
        .handlers
        .get(&request.target)
        .map(|handler| handler.clone());
    let ours = cluster.cluster_id();
    if request.placement != ours && !handler.as_ref().is_some_and(|h| h.open_to_newcomers()) {
        return Err(CallError::PlacedDifferently {
            node,
            theirs: request.placement,
            ours,
        });
    }
    let handler = handler.ok_or_else(|| CallError::NoHandler {
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

    use super::*;
    use crate::cluster::transport::memory::MemoryNetwork;
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
            members: vec![member("inbound-test-a", 1), member("inbound-test-b", 2)],
            join: false,
            max_moves: 2,
            heartbeat_interval: Duration::from_millis(250),
            heartbeat_timeout: Duration::from_millis(1500),
            partitions: 8,
            replicated: false,
            replication_factor: 3,
            raft_snapshot_every: 10_000,
            call_timeout: Duration::from_secs(1),
            max_frame_bytes: 1 << 20,
            handshake_timeout: Duration::from_secs(5),
            max_connections: 64,
            max_handshakes: 16,
            max_clock_skew: Duration::from_secs(30),
            tls: None,
        };
        let transport = MemoryNetwork::new(0).transport("inbound-test-a");
        Cluster::new("inbound-test-a", &config, store, dir, transport)
    }

    #[tokio::test]
    async fn a_call_that_does_not_decode_is_answered_with_an_error_not_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let inbound = ClusterInbound(lone_cluster(dir.path()).await);
        for garbage in [vec![], vec![0xff; 64], b"not a request".to_vec()] {
            let bytes = inbound.receive(Channel::Call, garbage).await;
            let response: Response = codec::decode(&bytes).unwrap();
            assert!(
                matches!(response, Err(CallError::Undecodable(_))),
                "{response:?}"
            );
        }
        // A heartbeat that does not decode is answered with this node's own.
        let bytes = inbound.receive(Channel::Heartbeat, vec![1, 2, 3]).await;
        let heartbeat: Heartbeat = codec::decode(&bytes).unwrap();
        assert_eq!(heartbeat.from, "inbound-test-a");
    }
}
