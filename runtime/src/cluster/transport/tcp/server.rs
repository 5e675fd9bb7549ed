//! ractor_cluster's node server, with the cluster port in front of it: the server holds the
//! sessions between members, the port decides which connections reach it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use ractor::{Actor, ActorRef};
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::{IncomingEncryptionMode, NodeServer, NodeServerMessage, NodeSessionMessage};

/// Starts the node server of `node`, whose cluster port is `listen`, with the cluster
/// `cookie` and the frame limit. `listen` itself is left alone for the cluster port.
pub(super) async fn start(
    node: &str,
    listen: SocketAddr,
    cookie: String,
    max_frame_bytes: u64,
) -> Result<ActorRef<NodeServerMessage>, String> {
    // ractor_cluster's node server always starts a listener of its own, which would accept
    // anyone with none of the cluster port's limits (its accept loop even waits out each TLS
    // handshake in turn). It is given a port of the system's choosing on loopback, where no
    // other machine reaches it, and stopped at once below.
    let loopback = match listen.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
    };
    let server = NodeServer::new(
        0,
        cookie,
        node.to_owned(),
        // The host part of the node's connection string, which ractor_cluster compares with
        // each peer's to refuse a session with itself: the node's name, unique in a cluster.
        // The listen address is not: every container of a deployment listens on 0.0.0.0:4600,
        // so with it each member took every peer for itself and no link ever formed.
        node.to_owned(),
        // Unused: every stream reaches the node server through the cluster port or a dial,
        // already encrypted when TLS is configured.
        Some(IncomingEncryptionMode::Raw),
        // Only the configured members are linked: never the peers of a peer.
        Some(NodeConnectionMode::Isolated),
    )
    .with_listen_addr(loopback)
    .with_max_inbound_frame_size(max_frame_bytes);
    let (server, _) = Actor::spawn(Some(format!("cluster-server-{node}")), server, ())
        .await
        .map_err(|e| format!("the cluster transport did not start: {e}"))?;
    remove_own_listener(&server).await?;
    // The listener told the server its port; the address the node is known by is the cluster
    // port's.
    server
        .cast(NodeServerMessage::PortChanged {
            port: listen.port(),
        })
        .map_err(|e| format!("the cluster transport stopped at start: {e}"))?;
    Ok(server)
}

/// Stops the node server's own listener without the server noticing (unlinked first, it is not
/// restarted), and closes any session it accepted in the moment it was up (a local process
/// that found the port), so that the cluster port is the only way in.
async fn remove_own_listener(server: &ActorRef<NodeServerMessage>) -> Result<(), String> {
    let children = server.get_children();
    let (sessions, listeners): (Vec<_>, Vec<_>) = children
        .into_iter()
        .partition(|child| child.is_message_type_of::<NodeSessionMessage>() == Some(true));
    let [listener] = listeners.as_slice() else {
        return Err(format!(
            "the cluster transport started {} listeners where one was expected",
            listeners.len()
        ));
    };
    listener.unlink(server.get_cell());
    listener
        .kill_and_wait(Some(Duration::from_secs(5)))
        .await
        .map_err(|e| format!("the cluster transport's own listener did not stop: {e}"))?;
    for session in sessions {
        session.kill();
    }
    Ok(())
}
