//! The transport: ractor_cluster's `NodeServer` bound to the configured interface and port,
//! with the cluster cookie, the frame limit and (when configured) mutual TLS; and dialling a
//! peer.

use std::net::SocketAddr;

use ractor::{Actor, ActorRef};
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::{IncomingEncryptionMode, NodeServer, NodeServerMessage};
use tokio_rustls::rustls::pki_types::ServerName;

use super::tls;
use crate::config::{ClusterConfig, TlsConfig};

/// Starts the node server on `config.listen`. Fails when the address cannot be bound.
pub(crate) async fn start(
    node: &str,
    config: &ClusterConfig,
) -> Result<ActorRef<NodeServerMessage>, String> {
    let cookie = config
        .cookie
        .as_ref()
        .ok_or("a cluster needs a cookie")?
        .expose()
        .to_owned();
    let encryption = match &config.tls {
        Some(tls) => IncomingEncryptionMode::Tls(tls::load(tls)?.acceptor),
        None => IncomingEncryptionMode::Raw,
    };
    let server = NodeServer::new(
        config.listen.port(),
        cookie,
        node.to_owned(),
        config.listen.ip().to_string(),
        Some(encryption),
        // Only the configured members are linked: never the peers of a peer.
        Some(NodeConnectionMode::Isolated),
    )
    .with_listen_addr(config.listen.ip())
    .with_max_inbound_frame_size(config.max_frame_bytes);
    let (server, _) = Actor::spawn(Some(format!("cluster-server-{node}")), server, ())
        .await
        .map_err(|e| format!("cluster.listen: cannot listen on {}: {e}", config.listen))?;
    Ok(server)
}

/// Opens a link to `peer` at `address` (`host:port`, resolved now: a name may point elsewhere
/// after a restart), over TLS checking that its certificate names `peer` when configured; the
/// cookie handshake then runs on its own. Answers the socket address dialled.
pub(crate) async fn dial(
    server: &ActorRef<NodeServerMessage>,
    address: &str,
    peer: &str,
    tls: Option<&TlsConfig>,
) -> Result<SocketAddr, String> {
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host(address)
        .await
        .map_err(|e| format!("cannot resolve {address}: {e}"))?
        .collect();
    // A name may resolve to several addresses (localhost: ::1 and 127.0.0.1): the first that
    // takes the connection wins.
    let mut last_error = format!("{address} resolves to no address");
    for candidate in resolved {
        match connect(server, candidate, peer, tls).await {
            Ok(()) => return Ok(candidate),
            Err(error) => last_error = error,
        }
    }
    Err(last_error)
}

async fn connect(
    server: &ActorRef<NodeServerMessage>,
    address: SocketAddr,
    peer: &str,
    tls: Option<&TlsConfig>,
) -> Result<(), String> {
    match tls {
        None => ractor_cluster::client_connect(server, address)
            .await
            .map_err(|e| connect_error(address, e)),
        Some(config) => {
            let connector = tls::load(config)?.connector;
            let name = ServerName::try_from(peer.to_owned())
                .map_err(|e| format!("`{peer}` cannot be checked against a certificate: {e}"))?;
            ractor_cluster::client_connect_enc(server, address, connector, name)
                .await
                .map_err(|e| connect_error(address, e))
        }
    }
}

/// A failed dial in words (ractor_cluster's own text is its Debug form).
fn connect_error(address: SocketAddr, error: ractor_cluster::ClientConnectErr) -> String {
    use ractor_cluster::ClientConnectErr;
    match error {
        ClientConnectErr::Socket(error) => format!("connecting to {address}: {error}"),
        ClientConnectErr::Encryption(error) => format!("TLS with {address}: {error}"),
        ClientConnectErr::Messaging(_) => "this node's cluster transport has stopped".to_owned(),
    }
}
