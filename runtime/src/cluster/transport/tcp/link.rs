//! A connection that proved the cluster cookie, in the form ractor_cluster takes a stream made
//! outside it: two boxed halves, each holding a guard that is released when both are gone
//! (the cluster port counts its connections that way).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use ractor_cluster::{BoxRead, BoxWrite, ClusterBidiStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The stream under a link, over TLS or not.
pub(crate) enum Established {
    Plain(TcpStream),
    AcceptedTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    DialledTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// A link for ractor_cluster, labelled with the peer's address (which its session events
/// carry), holding `guard` until both halves are dropped.
pub(crate) struct LinkStream<G> {
    established: Established,
    peer: String,
    guard: G,
}

impl<G: Send + Sync + 'static> LinkStream<G> {
    pub(crate) fn new(established: Established, peer: String, guard: G) -> Self {
        Self {
            established,
            peer,
            guard,
        }
    }
}

impl<G: Send + Sync + 'static> ClusterBidiStream for LinkStream<G> {
    fn split(self: Box<Self>) -> (BoxRead, BoxWrite) {
        let guard = Arc::new(self.guard);
        match self.established {
            // A TCP stream splits without a lock between its halves.
            Established::Plain(stream) => {
                let (read, write) = stream.into_split();
                halves(read, write, guard)
            }
            Established::AcceptedTls(stream) => {
                let (read, write) = tokio::io::split(*stream);
                halves(read, write, guard)
            }
            Established::DialledTls(stream) => {
                let (read, write) = tokio::io::split(*stream);
                halves(read, write, guard)
            }
        }
    }

    fn peer_label(&self) -> Option<String> {
        Some(self.peer.clone())
    }
}

fn halves<R, W, G>(read: R, write: W, guard: Arc<G>) -> (BoxRead, BoxWrite)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
    G: Send + Sync + 'static,
{
    (
        Box::new(Guarded {
            inner: read,
            _guard: guard.clone(),
        }),
        Box::new(Guarded {
            inner: write,
            _guard: guard,
        }),
    )
}

/// One half, keeping the link's guard alive.
struct Guarded<T, G> {
    inner: T,
    _guard: Arc<G>,
}

impl<T: AsyncRead + Unpin, G> AsyncRead for Guarded<T, G> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin, G> AsyncWrite for Guarded<T, G> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
