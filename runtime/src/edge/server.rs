//! The HTTP/1.1 server under the edge: accepts connections up to a cap, closes request heads
//! that arrive too slowly and keep-alive connections left idle, and makes room for new clients
//! by closing the longest-idle connections when the cap is reached.
//!
//! Why not `axum::serve`: it has no connection cap, no header or idle timeouts (hyper's header
//! timer needs a timer the caller sets), and on `EMFILE` it sleeps a second per failed accept,
//! so a flood of idle connections starves everyone else, `/health/live` included. Here, a
//! connection that has no request in flight is "reusable" (nginx's word): when the cap is
//! reached or the process runs out of file descriptors, the ones idle longest are closed first,
//! so a new client always gets in unless every connection is busy with a request.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tower::Service;

/// Largest request head hyper buffers. Tokens are capped far below this (see `auth`); a head
/// larger than this gets 431 from hyper. It bounds what one slow client can make us hold.
const MAX_HEAD_BYTES: usize = 128 * 1024;

/// How the server treats connections.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Most connections open at once (fitted to the open-file limit by
    /// [`crate::net::share_files`]).
    pub max_connections: usize,
    /// A request head must arrive within this long of the server starting to wait for it.
    /// Hyper's timer also runs while a keep-alive connection waits for its next request, so
    /// this bounds idle connections too.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight and no byte of a next one is closed after this.
    pub keep_alive_timeout: Duration,
}

/// Longest queue of connections the kernel completes before the server accepts them (it caps
/// this at `net.core.somaxconn`). std's default of 128 made a burst of connects wait a second
/// for SYN retries.
const LISTEN_BACKLOG: u32 = 4096;

/// Listens on `address` with a deep accept queue.
pub fn bind(address: SocketAddr) -> io::Result<TcpListener> {
    crate::net::bind(address, LISTEN_BACKLOG)
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, lets every
/// connection finish its request in flight, and returns once all are closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()>,
) {
    let registry = Arc::new(Registry::new());
    // Every connection task lives in this set: when `serve` returns or is dropped (its task
    // aborted), the connections go with it instead of running on detached.
    let mut connections = tokio::task::JoinSet::new();
    let (stopping, stop_seen) = watch::channel(false);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        // Past the edge's own limit (`observe::MAX_HEADER_FIELDS`), so that a client over it
        // is told in problem+json rather than by hyper's bare 431.
        .max_headers(super::observe::MAX_HEADER_FIELDS * 2);
    let mut shutdown = pin!(shutdown);
    let mut fd_warning = RateLimitedWarning::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            // Reaps finished connection tasks, so the set holds only open connections.
            Some(_) = connections.join_next() => continue,
            () = &mut shutdown => break,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(error) if crate::net::is_out_of_resources(&error) => {
                // Something else holds the files the cap assumed free: close a batch of idle
                // connections (unless a batch is still closing), then try again soon.
                let closed = if registry.evictions_in_flight() == 0 {
                    registry.evict_idle(settings.max_connections)
                } else {
                    0
                };
                fd_warning.warn(&error, closed);
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            // A connection reset before it was accepted, and the like: that one is gone.
            Err(error) => {
                tracing::debug!(%error, "accept failed");
                continue;
            }
        };
        // At the cap, room is made for this client before it is served: the longest-idle
        // connections are closed, and the loop waits until they are gone (so the cap, and the
        // file limit under it, is passed by this one held connection at most); when every
        // connection is in a request, it waits for one to end. Only a client actually waiting
        // makes the server close anything.
        while registry.len() >= settings.max_connections {
            let stop = {
                let room = registry.room.wait();
                let mut room = pin!(room);
                room.as_mut().enable();
                if registry.len() < settings.max_connections {
                    registry.room.stop_waiting();
                    break;
                }
                if registry.evictions_in_flight() == 0 {
                    registry.evict_idle(settings.max_connections);
                }
                let stop = tokio::select! {
                    () = room => false,
                    Some(_) = connections.join_next() => false,
                    () = &mut shutdown => true,
                };
                registry.room.stop_waiting();
                stop
            };
            if stop {
                drop(stream);
                return drain(connections, stopping).await;
            }
        }
        let _ = stream.set_nodelay(true);
        let connection = registry.add();
        connections.spawn(run_connection(
            stream,
            remote,
            app.clone(),
            http.clone(),
            connection,
            registry.clone(),
            settings.keep_alive_timeout,
            stop_seen.clone(),
        ));
    }
    drain(connections, stopping).await;
}

/// Tells every connection to finish its request in flight and close, and waits for them.
async fn drain(mut connections: tokio::task::JoinSet<()>, stopping: watch::Sender<bool>) {
    let _ = stopping.send(true);
    while connections.join_next().await.is_some() {}
}

#[expect(
    clippy::too_many_arguments,
    reason = "one connection task's parts, passed once"
)]
async fn run_connection(
    stream: TcpStream,
    remote: SocketAddr,
    app: Router,
    http: hyper::server::conn::http1::Builder,
    connection: Arc<Connection>,
    registry: Arc<Registry>,
    keep_alive_timeout: Duration,
    mut stopping: watch::Receiver<bool>,
) {
    let io = TokioIo::new(TrackedIo {
        inner: stream,
        activity: connection.activity.clone(),
    });
    let activity = connection.activity.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(remote));
        let in_request = activity.begin();
        let handled = app.clone().call(request);
        async move {
            let response = handled.await;
            // The request stays in flight until its whole answer is flushed to the socket: a
            // streamed body (a backup) may take far longer than the keep-alive timeout, and
            // the connection must not look idle meanwhile.
            response.map(|response| {
                response.map(|body| {
                    axum::body::Body::new(TrackedBody {
                        inner: body,
                        in_request: Some(in_request),
                    })
                })
            })
        }
    });
    // Boxed (once per connection), so that it can be dropped, closing the socket, before the
    // slot is given back below.
    let mut conn = Box::pin(http.serve_connection(io, service));
    let evicted = connection.evicted.notified();
    let mut evicted = pin!(evicted);
    let idle_check = tokio::time::sleep(keep_alive_timeout);
    let mut idle_check = pin!(idle_check);
    let mut stop_requested = *stopping.borrow();
    if stop_requested {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    // Header timeouts, resets and malformed requests: the client's doing.
                    tracing::debug!(%error, %remote, "connection ended with an error");
                }
                break;
            }
            () = &mut evicted => {
                // Chosen while idle, but a request may have started since: then it stays, and
                // the server looks for another to close.
                if connection.activity.idle_since().is_some() {
                    tracing::debug!(%remote, "idle connection closed to make room");
                    break;
                }
                registry.spare(&connection);
                evicted.set(connection.evicted.notified());
            }
            changed = stopping.changed(), if !stop_requested => {
                stop_requested = true;
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
            () = &mut idle_check => {
                match connection.activity.idle_deadline(keep_alive_timeout) {
                    Some(deadline) if deadline <= Instant::now() => {
                        tracing::debug!(%remote, "idle keep-alive connection closed");
                        break;
                    }
                    Some(deadline) => idle_check.as_mut().reset(deadline),
                    None => idle_check.as_mut().reset(Instant::now() + keep_alive_timeout),
                }
            }
        }
    }
    // The socket closes before the slot is given back, so that the cap also bounds open files.
    drop(conn);
    registry.remove(connection.id);
}

/// Warns about running out of file descriptors at most once every 10 s, with a count.
#[derive(Default)]
struct RateLimitedWarning {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedWarning {
    fn warn(&mut self, error: &io::Error, closed_idle: usize) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < Duration::from_secs(10))
        {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(
            %error,
            closed_idle,
            suppressed = self.suppressed,
            "out of file descriptors (or kernel memory) while accepting; closing idle connections (raise the open-file limit or lower edge.max_connections)"
        );
        self.last = Some(now);
        self.suppressed = 0;
    }
}

/// The open connections, for the cap and for choosing which idle ones to close.
struct Registry {
    /// The origin of every connection's millisecond timestamps, so that they compare.
    epoch: Instant,
    connections: Mutex<HashMap<u64, Arc<Connection>>>,
    next_id: AtomicU64,
    /// Connections told to close that have not closed yet.
    evicting: AtomicUsize,
    /// Wakes the accept loop, waiting at the cap, when a connection closes or goes idle.
    room: Arc<Room>,
}

impl Registry {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            connections: Mutex::default(),
            next_id: AtomicU64::new(0),
            evicting: AtomicUsize::new(0),
            room: Arc::default(),
        }
    }

    fn add(&self) -> Arc<Connection> {
        let connection = Arc::new(Connection {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            activity: Arc::new(Activity::new(self.epoch, self.room.clone())),
            evicting: AtomicBool::new(false),
            evicted: Notify::new(),
        });
        self.lock().insert(connection.id, connection.clone());
        connection
    }

    fn remove(&self, id: u64) {
        let removed = self.lock().remove(&id);
        if removed.is_some_and(|connection| connection.evicting.load(Ordering::Acquire)) {
            self.evicting.fetch_sub(1, Ordering::AcqRel);
        }
        self.room.made();
    }

    /// Takes back the eviction of `connection`, busy again before it could close.
    fn spare(&self, connection: &Connection) {
        if connection.evicting.swap(false, Ordering::AcqRel) {
            self.evicting.fetch_sub(1, Ordering::AcqRel);
        }
        self.room.made();
    }

    fn evictions_in_flight(&self) -> usize {
        self.evicting.load(Ordering::Acquire)
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    /// Closes idle connections (no request in flight, no answer unflushed): a batch of 1/64
    /// of the cap, so that a stream of new clients does not scan the registry on every accept.
    /// Those that never completed a request go first (a flood, a slow client's half-sent head),
    /// oldest first, so that the newest (perhaps not read from yet) goes last; then those that
    /// have served requests, idle longest first. A client between two requests is idle for a
    /// moment only, and a burst of new connections must not push it out.
    /// Returns how many were told to close.
    fn evict_idle(&self, cap: usize) -> usize {
        let batch = (cap / 64).max(1);
        let mut idle: Vec<((bool, u64), Arc<Connection>)> = self
            .lock()
            .values()
            .filter(|c| !c.evicting.load(Ordering::Acquire))
            .filter_map(|c| {
                let since = c.activity.idle_since()?;
                Some(((c.activity.has_served(), since), c.clone()))
            })
            .collect();
        idle.sort_unstable_by_key(|(order, _)| *order);
        let chosen = idle.len().min(batch);
        for (_, connection) in idle.into_iter().take(chosen) {
            // Told once: until its task ends it is still counted, and must not be chosen again
            // in place of another.
            connection.evicting.store(true, Ordering::Release);
            self.evicting.fetch_add(1, Ordering::AcqRel);
            // A stored permit: the connection sees it even if it is not polling right now.
            connection.evicted.notify_one();
        }
        chosen
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Connection>>> {
        // A panic while holding this lock leaves a map that is still consistent.
        self.connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// How the accept loop, waiting at the cap, learns that there may be room: a connection
/// closed, or one went idle (and can be closed for a new client). Connections signal only
/// while the loop waits, so that a busy server's requests do not pay for it.
#[derive(Default)]
struct Room {
    waiting: AtomicBool,
    made: Notify,
}

impl Room {
    /// A wait for room; enable it, then check, then await it.
    fn wait(&self) -> tokio::sync::futures::Notified<'_> {
        // SeqCst, paired with `Activity::end`: either the loop's scan sees the request over,
        // or the request's end sees the loop waiting and wakes it.
        self.waiting.store(true, Ordering::SeqCst);
        self.made.notified()
    }

    fn stop_waiting(&self) {
        self.waiting.store(false, Ordering::SeqCst);
    }

    /// There may be room now.
    fn made(&self) {
        self.made.notify_waiters();
    }

    fn made_if_waited_for(&self) {
        if self.waiting.load(Ordering::SeqCst) {
            self.made();
        }
    }
}

struct Connection {
    id: u64,
    activity: Arc<Activity>,
    /// Chosen by [`Registry::evict_idle`] and told to close (through `evicted`).
    evicting: AtomicBool,
    evicted: Notify,
}

/// What a connection is doing, shared by its reader, its service and the registry.
struct Activity {
    /// The registry's epoch, origin of the millisecond timestamps below.
    epoch: Instant,
    /// Requests from their start until their answer is flushed to the socket: a connection
    /// with one is never chosen to close (its client would not learn whether its request
    /// took effect).
    in_flight: AtomicU32,
    /// Answers produced and waiting to be flushed.
    unflushed: AtomicU32,
    /// Answers delivered on this connection.
    served: AtomicU64,
    /// Microseconds since `epoch` when the last answer was flushed (or the connection opened).
    idle_since_us: AtomicU64,
    /// Whether any byte has arrived since then: a next request is on its way.
    read_since_idle: AtomicBool,
    room: Arc<Room>,
}

impl Activity {
    /// A connection just opened: idle, with nothing read yet.
    fn new(epoch: Instant, room: Arc<Room>) -> Self {
        let activity = Self {
            epoch,
            in_flight: AtomicU32::new(0),
            unflushed: AtomicU32::new(0),
            served: AtomicU64::new(0),
            idle_since_us: AtomicU64::new(0),
            read_since_idle: AtomicBool::new(false),
            room,
        };
        activity
            .idle_since_us
            .store(activity.now_us(), Ordering::Release);
        activity
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn begin(self: &Arc<Self>) -> InRequest {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InRequest {
            activity: self.clone(),
            answered: false,
        }
    }

    /// `count` requests are over: the connection is idle from now, with nothing read.
    fn end(&self, count: u32) {
        self.idle_since_us.store(self.now_us(), Ordering::Release);
        self.read_since_idle.store(false, Ordering::Release);
        self.in_flight.fetch_sub(count, Ordering::SeqCst);
        self.room.made_if_waited_for();
    }

    /// The socket has flushed what was written: the answers waiting for that are delivered.
    fn flushed(&self) {
        let delivered = self.unflushed.swap(0, Ordering::AcqRel);
        if delivered > 0 {
            self.served
                .fetch_add(u64::from(delivered), Ordering::AcqRel);
            self.end(delivered);
        }
    }

    /// Whether it has delivered an answer: a client's connection, not a bare one.
    fn has_served(&self) -> bool {
        self.served.load(Ordering::Acquire) > 0
    }

    /// When it went idle, in microseconds since `epoch` (for ordering evictions), or `None`
    /// while a request is in flight.
    fn idle_since(&self) -> Option<u64> {
        (self.in_flight.load(Ordering::SeqCst) == 0)
            .then(|| self.idle_since_us.load(Ordering::Acquire))
    }

    /// Whether part of a next request has arrived: closing it now would lose that request.
    fn receiving(&self) -> bool {
        self.read_since_idle.load(Ordering::Acquire)
    }

    /// When an idle connection passes its keep-alive timeout; `None` while it is busy or a
    /// next request is arriving (the header timeout governs that).
    fn idle_deadline(&self, timeout: Duration) -> Option<Instant> {
        if self.receiving() {
            return None;
        }
        let since = self.idle_since()?;
        Some(self.epoch + Duration::from_micros(since) + timeout)
    }
}

/// A request in flight on a connection. Dropped once answered, it waits for the answer to be
/// flushed; dropped unanswered (the client went away), it ends at once.
struct InRequest {
    activity: Arc<Activity>,
    answered: bool,
}

impl Drop for InRequest {
    fn drop(&mut self) {
        if self.answered {
            self.activity.unflushed.fetch_add(1, Ordering::AcqRel);
        } else {
            self.activity.end(1);
        }
    }
}

/// An answer's body, holding its request in flight until the body has been written whole
/// (then it waits for the flush, as any answer) or is dropped unfinished (the client went
/// away: over at once).
struct TrackedBody {
    inner: axum::body::Body,
    in_request: Option<InRequest>,
}

impl http_body::Body for TrackedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled
            && let Some(mut in_request) = self.in_request.take()
        {
            in_request.answered = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        // hyper drops a body it has read to its end without asking for more.
        if let Some(in_request) = self.in_request.as_mut() {
            in_request.answered = http_body::Body::is_end_stream(&self.inner);
        }
    }
}

/// The socket, noting when bytes arrive so that the idle check can tell an idle connection
/// from one whose next request is on its way.
struct TrackedIo {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before && !self.activity.read_since_idle.load(Ordering::Relaxed) {
            self.activity.read_since_idle.store(true, Ordering::Release);
        }
        polled
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut self.inner).poll_flush(cx);
        if matches!(flushed, Poll::Ready(Ok(()))) {
            self.activity.flushed();
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn aborting_the_server_closes_its_connections() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let address = listener.local_addr().unwrap();
        let settings = ServerSettings {
            max_connections: 8,
            header_read_timeout: Duration::from_secs(60),
            keep_alive_timeout: Duration::from_secs(60),
        };
        let server = tokio::spawn(serve(
            listener,
            Router::new(),
            settings,
            std::future::pending(),
        ));
        let mut client = TcpStream::connect(address).await.unwrap();
        // Half a request head: the connection task waits on it for a minute.
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        server.abort();
        let mut buffer = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buffer))
            .await
            .expect("the connection outlived its server");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_between_requests_with_no_bytes_arriving() {
        let activity = Arc::new(Activity::new(Instant::now(), Arc::default()));
        let timeout = Duration::from_secs(5);
        assert!(activity.idle_deadline(timeout).is_some(), "new and silent");
        let mut request = activity.begin();
        assert_eq!(activity.idle_since(), None);
        assert_eq!(activity.idle_deadline(timeout), None);
        tokio::time::advance(Duration::from_secs(2)).await;
        request.answered = true;
        drop(request);
        assert_eq!(activity.idle_since(), None, "answered, not yet flushed");
        tokio::time::advance(Duration::from_secs(1)).await;
        activity.flushed();
        let deadline = activity.idle_deadline(timeout).unwrap();
        assert_eq!(deadline, activity.epoch + Duration::from_secs(8));
        // A request abandoned unanswered ends at once.
        drop(activity.begin());
        assert!(activity.idle_since().is_some());
        activity.read_since_idle.store(true, Ordering::Release);
        assert_eq!(
            activity.idle_deadline(timeout),
            None,
            "a request is arriving"
        );
        assert!(
            activity.idle_since().is_some(),
            "still reusable for the cap"
        );
    }
}
