//! The production transport: ractor_cluster sessions between members, over TCP or mutual TLS,
//! behind the cluster port.
//!
//! - [`port`]: the cluster port, where a connection gets nothing until it proves the cookie
//!   ([`handshake`]: deadline, caps, eviction, closed on the first wrong byte); [`link`]: a
//!   connection that did, as ractor_cluster takes one;
//! - [`server`]: ractor_cluster's node server, whose own listener is stopped at start;
//! - [`dial`]: opening a link to a peer; [`tls`]: mutual TLS (rustls);
//! - [`gateway`]: the actor other nodes call, found through its process group.
//!
//! ractor_cluster keeps process-wide state (its remote actors, process groups), so a process
//! runs one node on this transport; in-process clusters use [`super::memory`].

mod dial;
mod gateway;
mod handshake;
mod link;
mod port;
mod server;
mod tls;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dashmap::DashMap;
use futures::future::BoxFuture;
use ractor::ActorRef;
use ractor::rpc::CallResult;
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::{NodeEventSubscription, NodeServerMessage};
use tokio::sync::mpsc;

use super::{CallFailure, Channel, Inbound, LinkEvent, Transport};
use crate::config::ClusterConfig;
use dial::Dialler;
use gateway::GatewayMsg;
use handshake::{Acceptor, LinkKey};
use port::PortLimits;

/// ractor_cluster links between the members of `config`, as node `node`.
pub(crate) struct TcpTransport {
    node: String,
    config: ClusterConfig,
    running: OnceLock<Running>,
    /// Each peer's gateway, found in its process group once its link is up.
    gateways: Arc<DashMap<String, ActorRef<GatewayMsg>>>,
}

struct Running {
    server: ActorRef<NodeServerMessage>,
    dialler: Arc<Dialler>,
    gateway: ActorRef<GatewayMsg>,
    port: tokio::task::JoinHandle<()>,
    sessions: tokio::task::JoinHandle<()>,
}

impl TcpTransport {
    pub(crate) fn new(node: &str, config: &ClusterConfig) -> Self {
        Self {
            node: node.to_owned(),
            config: config.clone(),
            running: OnceLock::new(),
            gateways: Arc::default(),
        }
    }

    async fn start_running(
        &self,
        inbound: Arc<dyn Inbound>,
        events: mpsc::UnboundedSender<LinkEvent>,
    ) -> Result<Running, String> {
        let config = &self.config;
        let cookie = config
            .cookie
            .as_ref()
            .ok_or("a cluster needs a cookie")?
            .expose()
            .to_owned();
        let key = LinkKey::new(&cookie);
        let tls = config.tls.as_ref().map(tls::load).transpose()?;
        let server =
            server::start(&self.node, config.listen, cookie, config.max_frame_bytes).await?;
        let listener = port::bind(config.listen)
            .map_err(|e| format!("cluster.listen: cannot listen on {}: {e}", config.listen))?;
        let deliver_to = server.clone();
        let port = port::serve(
            listener,
            PortLimits {
                max_connections: config.max_connections as usize,
                max_handshakes: config.max_handshakes as usize,
                handshake_timeout: config.handshake_timeout,
            },
            tls.as_ref().map(|tls| tls.acceptor.clone()),
            Acceptor::new(key.clone(), config.max_clock_skew),
            Box::new(move |stream| {
                let _ = deliver_to.cast(NodeServerMessage::ConnectionOpenedExternal {
                    stream,
                    is_server: true,
                });
            }),
        );
        let gateway = gateway::start(&self.node, inbound)
            .await
            .map_err(|e| format!("the cluster gateway did not start: {e}"))?;
        let (session_events, session_queue) = mpsc::unbounded_channel();
        server
            .cast(NodeServerMessage::SubscribeToEvents {
                id: "playhouse-transport".into(),
                subscription: Box::new(Subscription(session_events)),
            })
            .map_err(|e| format!("the cluster transport stopped at start: {e}"))?;
        let sessions = tokio::spawn(track_sessions(session_queue, events, self.gateways.clone()));
        Ok(Running {
            server,
            dialler: Arc::new(Dialler {
                key,
                tls: tls.map(|tls| tls.connector),
                timeout: config.handshake_timeout,
            }),
            gateway,
            port,
            sessions,
        })
    }

    /// `peer`'s gateway: the one known, or the one its process group holds now.
    fn gateway_of(&self, peer: &str) -> Option<ActorRef<GatewayMsg>> {
        if let Some(gateway) = self.gateways.get(peer) {
            return Some(gateway.clone());
        }
        let found: ActorRef<GatewayMsg> = ractor::pg::get_members(&gateway::group(peer))
            .into_iter()
            .find(|cell| !cell.get_id().is_local())?
            .into();
        self.gateways.insert(peer.to_owned(), found.clone());
        Some(found)
    }
}

impl Transport for TcpTransport {
    fn start(
        &self,
        inbound: Arc<dyn Inbound>,
        events: mpsc::UnboundedSender<LinkEvent>,
    ) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let running = self.start_running(inbound, events).await?;
            self.running
                .set(running)
                .map_err(|_| "the cluster transport was started twice".to_owned())
        })
    }

    fn dial(&self, peer: &str, address: &str) -> BoxFuture<'static, Result<(), String>> {
        let Some(running) = self.running.get() else {
            return Box::pin(std::future::ready(Err(
                "the transport is not started".into()
            )));
        };
        let (server, dialler) = (running.server.clone(), running.dialler.clone());
        let (peer, address) = (peer.to_owned(), address.to_owned());
        Box::pin(async move { dialler.dial(&server, &address, &peer).await.map(|_| ()) })
    }

    fn call(
        &self,
        peer: &str,
        channel: Channel,
        message: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, CallFailure>> {
        let Some(gateway) = self.gateway_of(peer) else {
            return Box::pin(std::future::ready(Err(CallFailure::NotLinked)));
        };
        let (peer, gateways) = (peer.to_owned(), self.gateways.clone());
        Box::pin(async move {
            let answered = gateway
                .call(
                    |reply| match channel {
                        Channel::Call => GatewayMsg::Call(message, reply),
                        Channel::Heartbeat => GatewayMsg::Heartbeat(message, reply),
                    },
                    Some(timeout),
                )
                .await;
            match answered {
                Ok(CallResult::Success(answer)) => Ok(answer),
                Ok(CallResult::Timeout) => Err(CallFailure::TimedOut(timeout)),
                // Sent, and the link closed before the answer: the next link's gateway will
                // be another actor.
                Ok(CallResult::SenderError) => {
                    gateways.remove_if(&peer, |_, known| known.get_id() == gateway.get_id());
                    Err(CallFailure::Closed)
                }
                // Never left: the remote actor behind this gateway is gone.
                Err(_) => {
                    gateways.remove_if(&peer, |_, known| known.get_id() == gateway.get_id());
                    Err(CallFailure::NotLinked)
                }
            }
        })
    }

    fn stop(&self) {
        if let Some(running) = self.running.get() {
            running.port.abort();
            running.sessions.abort();
            running.gateway.kill();
            running.server.kill();
        }
    }
}

/// A session event from ractor_cluster: which session, with whom (once known), what happened.
struct SessionEvent {
    node_id: u64,
    peer: Option<String>,
    kind: SessionKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionKind {
    Ready,
    Closed,
}

/// Forwards ractor_cluster's session events to [`track_sessions`].
struct Subscription(mpsc::UnboundedSender<SessionEvent>);

impl Subscription {
    fn forward(&self, kind: SessionKind, session: NodeServerSessionInformation) {
        let _ = self.0.send(SessionEvent {
            node_id: session.node_id,
            // ractor_cluster names a node `{name}@{host}`.
            peer: session
                .peer_name
                .map(|name| match name.name.split_once('@') {
                    Some((node, _)) => node.to_owned(),
                    None => name.name,
                }),
            kind,
        });
    }
}

impl NodeEventSubscription for Subscription {
    fn node_session_opened(&self, _: NodeServerSessionInformation) {}

    fn node_session_disconnected(&self, session: NodeServerSessionInformation) {
        self.forward(SessionKind::Closed, session);
    }

    fn node_session_authenticated(&self, _: NodeServerSessionInformation) {}

    fn node_session_ready(&self, session: NodeServerSessionInformation) {
        self.forward(SessionKind::Ready, session);
    }
}

/// Turns sessions into links: a peer's link is up from its first ready session, and down when
/// its last one closes.
async fn track_sessions(
    mut sessions: mpsc::UnboundedReceiver<SessionEvent>,
    events: mpsc::UnboundedSender<LinkEvent>,
    gateways: Arc<DashMap<String, ActorRef<GatewayMsg>>>,
) {
    let mut owners: HashMap<u64, String> = HashMap::new();
    let mut ready: HashMap<String, HashSet<u64>> = HashMap::new();
    while let Some(event) = sessions.recv().await {
        match event.kind {
            SessionKind::Ready => {
                let Some(peer) = event.peer else { continue };
                owners.insert(event.node_id, peer.clone());
                ready.entry(peer.clone()).or_default().insert(event.node_id);
                let _ = events.send(LinkEvent::Up { peer });
            }
            SessionKind::Closed => {
                let Some(peer) = owners.remove(&event.node_id) else {
                    continue;
                };
                let sessions = ready.entry(peer.clone()).or_default();
                sessions.remove(&event.node_id);
                if sessions.is_empty() {
                    gateways.remove(&peer);
                    let _ = events.send(LinkEvent::Down {
                        reason: format!("the link to node {peer} closed"),
                        peer,
                    });
                }
            }
        }
    }
}
