//! The transport seam: how a node's cluster reaches the other members, whatever carries it.
//!
//! The cluster asks a [`Transport`] for three things: to open a link to a peer (`dial`), to
//! send a peer a message and wait for its answer (`call`), and to hear what happens to links
//! ([`LinkEvent`]s). The transport hands what other nodes send to this node's [`Inbound`].
//! Everything above (heartbeats, the failure detector, routing, handlers) is the same whatever
//! the transport:
//!
//! - [`tcp`]: ractor_cluster sessions over TCP or mutual TLS, behind the hardened cluster port;
//!   what a node in production uses;
//! - [`memory`]: an in-process network for tests, whose links can be delayed, dropped,
//!   reordered, cut one way or both, and paused, all on tokio's clock.

pub mod memory;
pub(crate) mod tcp;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::mpsc;

/// The production transport of node `node` in the cluster of `config` (see [`tcp`]).
pub fn tcp(node: &str, config: &crate::config::ClusterConfig) -> Arc<dyn Transport> {
    Arc::new(tcp::TcpTransport::new(node, config))
}

/// Which of a node's two doors a message knocks on. Heartbeats are kept apart from calls so
/// that they are answered whatever the node's state (a call may be refused while it does not
/// serve; a heartbeat never is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Call,
    Heartbeat,
}

/// What a node answers to the messages other nodes send it.
pub trait Inbound: Send + Sync + 'static {
    /// Answers one message; an answer that cannot be made is itself an encoded error, never
    /// silence.
    fn receive(&self, channel: Channel, message: Vec<u8>) -> BoxFuture<'static, Vec<u8>>;
}

/// What happened to a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// A link to `peer` is ready: calls to it can be sent.
    Up { peer: String },
    /// The link to `peer` closed (its process died, the connection failed): calls on it are
    /// answered [`CallFailure::Closed`], and the peer is down until a new link is up.
    Down { peer: String, reason: String },
}

/// Why a call got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallFailure {
    /// Not sent: there is no link to the peer.
    #[error("no link to it is up")]
    NotLinked,
    /// Sent, and the link closed before the answer came: it may have been acted on.
    #[error("its link closed before it answered")]
    Closed,
    /// Sent, and no answer came in time: it may have been acted on.
    #[error("no answer within {} ms", .0.as_millis())]
    TimedOut(Duration),
}

/// A node's way to the other members.
pub trait Transport: Send + Sync + 'static {
    /// Starts serving: messages from other nodes go to `inbound`, and link news to `events`.
    fn start(
        &self,
        inbound: Arc<dyn Inbound>,
        events: mpsc::UnboundedSender<LinkEvent>,
    ) -> BoxFuture<'_, Result<(), String>>;

    /// Opens a link to `peer` at `address` (as the config gives it). `Ok` once the link is up
    /// (a [`LinkEvent::Up`] follows); `Err` says why it could not be opened.
    fn dial(&self, peer: &str, address: &str) -> BoxFuture<'static, Result<(), String>>;

    /// Sends `message` to `peer` on `channel` and waits, at most `timeout`, for its answer.
    fn call(
        &self,
        peer: &str,
        channel: Channel,
        message: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, CallFailure>>;

    /// Stops: no more messages in or out, links closed.
    fn stop(&self);
}
