//! ractor_cluster's node server, with the cluster port in front of it: the server holds the
//! sessions between members, the port decides which connections reach it.

use std::net::SocketAddr;
use std::time::Duration;

use ractor::{Actor, ActorRef};
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::{IncomingEncryptionMode, NodeServer, NodeServerMessage};

use super::port;

/// Starts the node server of `node` for `listen`, with the cluster `cookie` and the frame
/// limit, and leaves `listen` free for the cluster port.
pub(super) async fn start(
    node: &str,
    listen: SocketAddr,
    cookie: String,
    max_frame_bytes: u64,
) -> Result<ActorRef<NodeServerMessage>, String> {
    let server = NodeServer::new(
        listen.port(),
        cookie,
        node.to_owned(),
        listen.ip().to_string(),
        // Unused: every stream reaches the node server through the cluster port or a dial,
        // already encrypted when TLS is configured.
        Some(IncomingEncryptionMode::Raw),
        // Only the configured members are linked: never the peers of a peer.
        Some(NodeConnectionMode::Isolated),
    )
    .with_listen_addr(listen.ip())
    .with_max_inbound_frame_size(max_frame_bytes);
    let (server, _) = Actor::spawn(Some(format!("cluster-server-{node}")), server, ())
        .await
        .map_err(|e| format!("cluster.listen: cannot listen on {listen}: {e}"))?;
    remove_own_listener(&server).await?;
    Ok(server)
}

/// ractor_cluster's node server always starts a listener of its own, which would accept
/// anyone with none of the cluster port's limits (its accept loop even waits out each TLS
/// handshake in turn). It has bound the configured address by now: stop it without the node
/// server noticing (unlinked first, it is not restarted), and close any session it accepted
/// in the moment it was up, so that the cluster port is the only way in.
async fn remove_own_listener(server: &ActorRef<NodeServerMessage>) -> Result<(), String> {
    let children = server.get_children();
    let [listener] = children.as_slice() else {
        return Err(format!(
            "the cluster transport started with {} children where its listener alone was expected",
            children.len()
        ));
    };
    listener.unlink(server.get_cell());
    listener
        .kill_and_wait(Some(Duration::from_secs(5)))
        .await
        .map_err(|e| format!("the cluster transport's own listener did not stop: {e}"))?;
    for session in server.get_children() {
        session.kill();
    }
    Ok(())
}

/// Binds the cluster port where the node server's listener just was; its socket may take a
/// moment to close after the listener stopped.
pub(super) async fn bind_port(address: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        match port::bind(address) {
            Ok(listener) => return Ok(listener),
            Err(error)
                if error.kind() == std::io::ErrorKind::AddrInUse
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(error) => {
                return Err(format!(
                    "cluster.listen: cannot listen on {address}: {error}"
                ));
            }
        }
    }
}
