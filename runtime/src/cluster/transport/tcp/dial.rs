//! Dialling a peer: TCP, then TLS checking that the certificate names the peer (when
//! configured), then the link handshake; the stream then goes to ractor_cluster's node server,
//! whose own cookie handshake runs on it.

use std::net::SocketAddr;
use std::time::Duration;

use ractor::ActorRef;
use ractor_cluster::NodeServerMessage;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;

use super::handshake::{self, LinkKey};
use super::link::{Established, LinkStream};

/// What dialling needs.
pub(super) struct Dialler {
    pub key: LinkKey,
    pub tls: Option<TlsConnector>,
    /// Connecting and both handshakes must end within this.
    pub timeout: Duration,
}

impl Dialler {
    /// Opens a link to `peer` at `address` (`host:port`, resolved now: a name may point
    /// elsewhere after a restart) for `server`. Answers the socket address dialled.
    pub(super) async fn dial(
        &self,
        server: &ActorRef<NodeServerMessage>,
        address: &str,
        peer: &str,
    ) -> Result<SocketAddr, String> {
        let resolved: Vec<SocketAddr> = tokio::net::lookup_host(address)
            .await
            .map_err(|e| format!("cannot resolve {address}: {e}"))?
            .collect();
        // A name may resolve to several addresses (localhost: ::1 and 127.0.0.1): the first
        // that takes the connection wins.
        let mut last_error = format!("{address} resolves to no address");
        for candidate in resolved {
            let attempt = tokio::time::timeout(self.timeout, self.connect(candidate, peer));
            match attempt.await {
                Ok(Ok(established)) => {
                    let stream = LinkStream::new(established, candidate.to_string(), ());
                    ractor_cluster::client_connect_external(server, Box::new(stream))
                        .await
                        .map_err(|_| "this node's cluster transport has stopped".to_owned())?;
                    return Ok(candidate);
                }
                Ok(Err(error)) => last_error = error,
                Err(_) => {
                    last_error = format!(
                        "no link handshake with {candidate} within {} ms",
                        self.timeout.as_millis()
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
        match &self.tls {
            None => {
                let mut stream = stream;
                handshake::dial(&mut stream, &self.key)
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
                handshake::dial(&mut stream, &self.key)
                    .await
                    .map_err(refused)?;
                Ok(Established::DialledTls(Box::new(stream)))
            }
        }
    }
}
