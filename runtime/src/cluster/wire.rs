//! What nodes say to each other, inside the one message type their gateways exchange: calls to
//! a handler on another node and their answers, and heartbeats. Everything is encoded with the
//! store's codec, so a frame that does not decode is an error answered to its sender, never a
//! message dropped in silence.

use serde::{Deserialize, Serialize};

/// A call to handler `target` on another node (an aggregate kind, a saga kind, a read model).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The calling node.
    pub from: String,
    /// The caller's placement fingerprint: a node placed differently is refused.
    pub placement: u64,
    /// The trace id of the request that led here, so both nodes' logs share it.
    pub trace_id: Option<String>,
    pub target: String,
    /// The operation, encoded by the target's handler.
    pub operation: Vec<u8>,
}

/// Why a call was not answered by its handler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CallError {
    #[error("the request could not be decoded: {0}")]
    Undecodable(String),
    #[error("node {node} is placed differently (placement {theirs:016x}, ours {ours:016x})")]
    PlacedDifferently {
        node: String,
        theirs: u64,
        ours: u64,
    },
    #[error("node {node} has no handler `{target}`")]
    NoHandler { node: String, target: String },
    #[error("node {node} does not serve its partitions: {reason}")]
    NotServing { node: String, reason: String },
    /// The call was not sent: the node is down, or its link is not up.
    #[error("node {node} is unreachable: {reason}")]
    Unreachable { node: String, reason: String },
    /// The call was sent, then its link closed before the answer came.
    #[error("the link to node {node} closed before it answered")]
    Interrupted { node: String },
    #[error("node {node} did not answer within {after_ms} ms")]
    TimedOut { node: String, after_ms: u64 },
    #[error("handler `{target}` failed: {reason}")]
    Handler { target: String, reason: String },
    /// Not sent: larger than a peer takes in one frame (`cluster.max_frame_bytes`), which
    /// would close the link (and everything else on it) rather than fail the one call.
    #[error(
        "a call of {bytes} bytes to node {node} is larger than one frame may be ({limit} bytes, cluster.max_frame_bytes less room for the envelope)"
    )]
    TooLarge {
        node: String,
        bytes: u64,
        limit: u64,
    },
}

/// Room kept in a frame for what wraps a call's operation or answer (names, ids, lengths).
pub const FRAME_ENVELOPE_BYTES: u64 = 16 * 1024;

/// What a call answers: the handler's encoded answer, or why there is none.
pub type Response = Result<Vec<u8>, CallError>;

/// A heartbeat: who is alive, how it is placed, how far its log has come, and how far it has
/// seen the receiver's log come (a node whose peers saw more of its log than it holds has lost
/// its disk).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub from: String,
    pub placement: u64,
    /// The sender's log end (the next position it will write).
    pub log_end: u64,
    /// The largest log end the sender has heard of from the receiver, if any.
    pub seen_of_you: Option<u64>,
}
