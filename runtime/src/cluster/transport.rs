//! The transport: ractor_cluster's `NodeServer` for the sessions between members, the cluster
//! port in front of it ([`super::port`]), and dialling a peer. Both ends of every link run the
//! link handshake ([`super::handshake`]) over TCP or mutual TLS before ractor_cluster sees the
//! stream, so ractor_cluster only ever talks to holders of the cookie.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorRef};
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::{IncomingEncryptionMode, NodeServer, NodeServerMessage};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;

use super::handshake::{self, LinkKey};
use super::link::{Established, LinkStream};
use super::port::{self, PortLimits};
use super::tls;
use crate::config::ClusterConfig;

/// A node's transport: the node server its links belong to, and what dialling needs. Cheap to
/// clone.
#[derive(Clone)]
pub(crate) struct Transport {
    server: ActorRef<NodeServerMessage>,
    dialler: Arc<Dialler>,
    /// The cluster port's accept loop; aborted when the last clone goes.
    _port: Arc<AbortOnDrop>,
}

struct Dialler {
    key: LinkKey,
    tls: Option<TlsConnector>,
    /// Connecting and both handshakes must end within this.
    timeout: Duration,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the node server and the cluster port on `config.listen`. Fails when the address
/// cannot be bound or the TLS files cannot be used.
pub(crate) async fn start(node: &str, config: &ClusterConfig) -> Result<Transport, String> {
    let cookie = config
        .cookie
        .as_ref()
        .ok_or("a cluster needs a cookie")?
        .expose()
        .to_owned();
    let key = LinkKey::new(&cookie);
    let tls = config.tls.as_ref().map(tls::load).transpose()?;
    let server = NodeServer::new(
        config.listen.port(),
        cookie,
        node.to_owned(),
        config.listen.ip().to_string(),
        // Unused: every stream reaches the node server through the cluster port or a dial,
        // already encrypted when TLS is configured.
        Some(IncomingEncryptionMode::Raw),
        // Only the configured members are linked: never the peers of a peer.
        Some(NodeConnectionMode::Isolated),
    )
    .with_listen_addr(config.listen.ip())
    .with_max_inbound_frame_size(config.max_frame_bytes);
    let (server, _) = Actor::spawn(Some(format!("cluster-server-{node}")), server, ())
        .await
        .map_err(|e| format!("cluster.listen: cannot listen on {}: {e}", config.listen))?;
    remove_own_listener(&server).await?;
    let listener = bind_after_release(config.listen).await?;

    let deliver_to = server.clone();
    let accept_loop = port::serve(
        listener,
        PortLimits {
            max_connections: config.max_connections as usize,
            max_handshakes: config.max_handshakes as usize,
            handshake_timeout: config.handshake_timeout,
        },
        tls.as_ref().map(|tls| tls.acceptor.clone()),
        key.clone(),
        Box::new(move |stream| {
            let _ = deliver_to.cast(NodeServerMessage::ConnectionOpenedExternal {
                stream,
                is_server: true,
            });
        }),
    );
    Ok(Transport {
        server,
        dialler: Arc::new(Dialler {
            key,
            tls: tls.map(|tls| tls.connector),
            timeout: config.handshake_timeout,
        }),
        _port: Arc::new(AbortOnDrop(accept_loop)),
    })
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
async fn bind_after_release(address: SocketAddr) -> Result<tokio::net::TcpListener, String> {
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

impl Transport {
    /// The node server, for its session events.
    pub(crate) fn server(&self) -> &ActorRef<NodeServerMessage> {
        &self.server
    }

    /// Opens a link to `peer` at `address` (`host:port`, resolved now: a name may point
    /// elsewhere after a restart): TCP, then TLS checking that the certificate names `peer`
    /// when configured, then the link handshake; ractor_cluster's own handshake then runs on
    /// its own. Answers the socket address dialled.
    pub(crate) async fn dial(&self, address: &str, peer: &str) -> Result<SocketAddr, String> {
        let resolved: Vec<SocketAddr> = tokio::net::lookup_host(address)
            .await
            .map_err(|e| format!("cannot resolve {address}: {e}"))?
            .collect();
        // A name may resolve to several addresses (localhost: ::1 and 127.0.0.1): the first
        // that takes the connection wins.
        let mut last_error = format!("{address} resolves to no address");
        for candidate in resolved {
            let attempt = tokio::time::timeout(self.dialler.timeout, self.connect(candidate, peer));
            match attempt.await {
                Ok(Ok(established)) => {
                    let stream = LinkStream::new(established, candidate.to_string(), ());
                    ractor_cluster::client_connect_external(&self.server, Box::new(stream))
                        .await
                        .map_err(|_| "this node's cluster transport has stopped".to_owned())?;
                    return Ok(candidate);
                }
                Ok(Err(error)) => last_error = error,
                Err(_) => {
                    last_error = format!(
                        "no link handshake with {candidate} within {} ms",
                        self.dialler.timeout.as_millis()
                    );
                }
            }
        }
        Err(last_error)
    }

    async fn connect(&self, address: SocketAddr, peer: &str) -> Result<Established, String> {
        let stream = TcpStream::connect(address)
            .await
            .map_err(|e| format!("connecting to {address}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let refused = |e: handshake::HandshakeError| format!("node {peer} at {address}: {e}");
        match &self.dialler.tls {
            None => {
                let mut stream = stream;
                handshake::dial(&mut stream, &self.dialler.key)
                    .await
                    .map_err(refused)?;
                Ok(Established::Plain(stream))
            }
            Some(connector) => {
                let name = ServerName::try_from(peer.to_owned()).map_err(|e| {
                    format!("`{peer}` cannot be checked against a certificate: {e}")
                })?;
                let mut stream = connector
                    .connect(name, stream)
                    .await
                    .map_err(|e| format!("TLS with {address}: {e}"))?;
                handshake::dial(&mut stream, &self.dialler.key)
                    .await
                    .map_err(refused)?;
                Ok(Established::DialledTls(Box::new(stream)))
            }
        }
    }
}
