//! The cluster port: accepts connections from other members, gives each its TLS and link
//! handshakes in a task of its own under one deadline, and hands ractor_cluster only the ones
//! that proved the cluster cookie.
//!
//! A peer that has not shown the cookie gets nothing to hold: it cannot block the accept loop
//! (each handshake runs in its own task), pin memory (it may send
//! [`handshake::CLIENT_HELLO_LEN`] bytes, judged as they arrive), keep a file descriptor past
//! the deadline, or take more than `max_handshakes` of them: at that cap the handshake that has
//! shown the least, oldest first, is closed for the newcomer, so a flood of silent sockets
//! cannot lock a member out for longer than the member's own handshake takes. All connections
//! together stay within `max_connections`, the port's share of the open-file limit
//! ([`crate::net::share_files`]). What was closed, and why, is counted in metrics and summed
//! up in at most one warning every [`WARN_EVERY`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ractor_cluster::ClusterBidiStream;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::handshake::{self, HandshakeError, LinkKey};
use super::link::{Established, LinkStream};
use crate::metrics::{CLUSTER_ACCEPT_ERRORS, CLUSTER_CONNECTIONS, CLUSTER_HANDSHAKES};

/// At most one warning about closed connections this often; the rest are counted into it.
pub(crate) const WARN_EVERY: Duration = Duration::from_secs(10);

/// Accepted connections the kernel queues while the loop is busy.
const LISTEN_BACKLOG: u32 = 1024;

/// The longest pause between accepts after the kernel refused one for want of resources.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// How the port treats connections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PortLimits {
    pub max_connections: usize,
    pub max_handshakes: usize,
    pub handshake_timeout: Duration,
}

/// Binds the cluster port.
pub(crate) fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    crate::net::bind(address, LISTEN_BACKLOG)
}

/// What became of a connection the port accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It proved the cookie and was handed to ractor_cluster.
    Linked,
    /// Closed on arrival: every slot held a linked member.
    Refused,
    /// Closed to make room for a newer connection.
    Evicted,
    /// Its handshakes did not finish within the deadline.
    TimedOut,
    /// Its TLS handshake failed (no certificate, or one the cluster's CA did not sign).
    TlsFailed,
    /// It sent what the link handshake never sends, or a wrong proof of the cookie.
    Rejected,
    /// It went away mid-handshake.
    Lost,
}

impl Outcome {
    /// The outcomes of a connection closed before it proved the cookie.
    const CLOSED: [Outcome; 6] = [
        Outcome::Refused,
        Outcome::Evicted,
        Outcome::TimedOut,
        Outcome::TlsFailed,
        Outcome::Rejected,
        Outcome::Lost,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Linked => "linked",
            Outcome::Refused => "refused",
            Outcome::Evicted => "evicted",
            Outcome::TimedOut => "timed_out",
            Outcome::TlsFailed => "tls_failed",
            Outcome::Rejected => "rejected",
            Outcome::Lost => "lost",
        }
    }
}

/// Where a connection goes once it proved the cookie: ractor_cluster's node server.
pub(crate) type Deliver = Box<dyn Fn(Box<dyn ClusterBidiStream>) + Send + Sync>;

/// Everything the accept loop and its handshake tasks share.
struct Port {
    limits: PortLimits,
    tls: Option<TlsAcceptor>,
    key: LinkKey,
    deliver: Deliver,
    slots: Arc<Slots>,
    report: Report,
}

/// Serves the cluster port on `listener` until the returned task is aborted (which also closes
/// every connection still in its handshake; linked ones belong to whoever `deliver` gave them
/// to).
pub(crate) fn serve(
    listener: TcpListener,
    limits: PortLimits,
    tls: Option<TlsAcceptor>,
    key: LinkKey,
    deliver: Deliver,
) -> tokio::task::JoinHandle<()> {
    let port = Arc::new(Port {
        limits,
        tls,
        key,
        deliver,
        slots: Arc::default(),
        report: Report::default(),
    });
    tokio::spawn(accept_loop(listener, port))
}

async fn accept_loop(listener: TcpListener, port: Arc<Port>) {
    // Handshake tasks live in this set, so that they end with the loop.
    let mut handshakes = tokio::task::JoinSet::new();
    let mut backoff = Duration::ZERO;
    // Checked every second; a warning goes out at most every WARN_EVERY (see `Report`).
    let mut summary = tokio::time::interval(Duration::from_secs(1));
    summary.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            // Reaps finished handshake tasks, so the set holds only running ones.
            Some(_) = handshakes.join_next() => continue,
            _ = summary.tick() => {
                port.report.flush();
                continue;
            }
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff = Duration::ZERO;
                accepted
            }
            Err(error) if crate::net::is_out_of_resources(&error) => {
                // Retrying at once fails at once: back off, doubling, and say so (summed up).
                backoff = (backoff * 2).clamp(Duration::from_millis(5), MAX_ACCEPT_BACKOFF);
                port.report.accept_failed(&error);
                tokio::time::sleep(backoff).await;
                continue;
            }
            // A connection reset before it was accepted, and the like: that one is gone.
            Err(error) => {
                tracing::debug!(%error, "cluster port: accept failed");
                continue;
            }
        };
        match port.make_room().await {
            Some((slot, eviction)) => {
                handshakes.spawn(handshake(port.clone(), stream, peer, slot, eviction));
            }
            None => {
                drop(stream);
                port.report.closed(
                    Outcome::Refused,
                    peer,
                    "every connection slot holds a linked member",
                );
            }
        }
    }
}

impl Port {
    /// A slot for a new connection: free, or made free by closing the handshake that has
    /// shown the least (oldest first) and waiting until it has gone. `None` when every slot
    /// is held by a linked member.
    async fn make_room(&self) -> Option<(Slot, oneshot::Receiver<()>)> {
        loop {
            let room = self.slots.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match Slots::admit(&self.slots, &self.limits) {
                Admission::Admitted(slot, eviction) => return Some((slot, eviction)),
                Admission::Full => return None,
                Admission::Evicting => {}
            }
            // The evicted handshake closes at its next poll; should it take longer, admitting
            // anyway beats starving the newcomer (the cap is then passed by one).
            if tokio::time::timeout(Duration::from_secs(1), room)
                .await
                .is_err()
            {
                return Some(Slots::add(&self.slots));
            }
        }
    }
}

/// One connection's TLS and link handshakes under the deadline; then it is handed to
/// ractor_cluster, or closed.
async fn handshake(
    port: Arc<Port>,
    stream: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    eviction: oneshot::Receiver<()>,
) {
    let _ = stream.set_nodelay(true);
    let outcome = tokio::select! {
        result = tokio::time::timeout(
            port.limits.handshake_timeout,
            establish(&port, stream, &slot.progress),
        ) => match result {
            Ok(result) => result,
            Err(_) => Err((Outcome::TimedOut, format!(
                "no handshake within {} ms (cluster.handshake_timeout_ms)",
                port.limits.handshake_timeout.as_millis()
            ))),
        },
        _ = eviction => Err((Outcome::Evicted, "closed to make room for a newer connection".to_owned())),
    };
    match outcome {
        Ok(link) => {
            slot.linked();
            metrics::counter!(CLUSTER_HANDSHAKES, "outcome" => Outcome::Linked.as_str())
                .increment(1);
            tracing::debug!(%peer, "cluster port: a connection proved the cookie");
            (port.deliver)(Box::new(LinkStream::new(link, peer.to_string(), slot)));
        }
        Err((outcome, reason)) => port.report.closed(outcome, peer, &reason),
    }
}

async fn establish(
    port: &Port,
    stream: TcpStream,
    progress: &AtomicU8,
) -> Result<Established, (Outcome, String)> {
    let on_progress = || progress.store(PROGRESS_HELLO, Ordering::Relaxed);
    let rejected = |error: HandshakeError| {
        let outcome = match error {
            HandshakeError::Closed(_) => Outcome::Lost,
            HandshakeError::NotALink(_) | HandshakeError::WrongCookie => Outcome::Rejected,
        };
        (outcome, error.to_string())
    };
    match &port.tls {
        None => {
            let mut stream = stream;
            progress.store(PROGRESS_CONNECTED, Ordering::Relaxed);
            handshake::accept(&mut stream, &port.key, on_progress)
                .await
                .map_err(rejected)?;
            Ok(Established::Plain(stream))
        }
        Some(acceptor) => {
            let mut stream = acceptor
                .accept(stream)
                .await
                .map_err(|e| (Outcome::TlsFailed, format!("TLS handshake failed: {e}")))?;
            progress.store(PROGRESS_CONNECTED, Ordering::Relaxed);
            handshake::accept(&mut stream, &port.key, on_progress)
                .await
                .map_err(rejected)?;
            Ok(Established::AcceptedTls(Box::new(stream)))
        }
    }
}

/// How far a connection in its handshake got: the lower, the sooner it is closed for room.
const PROGRESS_NONE: u8 = 0;
/// TLS done (or none configured).
const PROGRESS_CONNECTED: u8 = 1;
/// Its link hello started right.
const PROGRESS_HELLO: u8 = 2;

/// The port's connections, counted against its caps.
#[derive(Default)]
struct Slots {
    entries: Mutex<Entries>,
    /// Notified whenever a connection goes, for the accept loop waiting for room.
    room: Notify,
}

#[derive(Default)]
struct Entries {
    next_id: u64,
    by_id: HashMap<u64, Entry>,
    /// Entries not yet linked.
    handshaking: usize,
}

struct Entry {
    accepted: Instant,
    linked: bool,
    progress: Arc<AtomicU8>,
    /// Closes the connection while in its handshake; taken once it is asked to.
    evict: Option<oneshot::Sender<()>>,
}

enum Admission {
    Admitted(Slot, oneshot::Receiver<()>),
    /// A handshake was told to close: wait for it to go, then ask again.
    Evicting,
    /// Every slot holds a linked member.
    Full,
}

impl Slots {
    fn lock(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn admit(slots: &Arc<Slots>, limits: &PortLimits) -> Admission {
        let mut entries = slots.lock();
        let full = entries.by_id.len() >= limits.max_connections
            || entries.handshaking >= limits.max_handshakes;
        if !full {
            drop(entries);
            let (slot, eviction) = Slots::add(slots);
            return Admission::Admitted(slot, eviction);
        }
        let victim = entries
            .by_id
            .values_mut()
            .filter(|entry| entry.evict.is_some())
            .min_by_key(|entry| (entry.progress.load(Ordering::Relaxed), entry.accepted));
        match victim.and_then(|entry| entry.evict.take()) {
            Some(evict) => {
                let _ = evict.send(());
                Admission::Evicting
            }
            // Every handshake is already closing: wait for one to go.
            None if entries.handshaking > 0 => Admission::Evicting,
            None => Admission::Full,
        }
    }

    fn add(slots: &Arc<Slots>) -> (Slot, oneshot::Receiver<()>) {
        let (evict, eviction) = oneshot::channel();
        let progress = Arc::new(AtomicU8::new(PROGRESS_NONE));
        let mut entries = slots.lock();
        let id = entries.next_id;
        entries.next_id += 1;
        entries.by_id.insert(
            id,
            Entry {
                accepted: Instant::now(),
                linked: false,
                progress: progress.clone(),
                evict: Some(evict),
            },
        );
        entries.handshaking += 1;
        entries.publish();
        let slot = Slot {
            slots: slots.clone(),
            id,
            progress,
        };
        (slot, eviction)
    }
}

impl Entries {
    fn publish(&self) {
        metrics::gauge!(CLUSTER_CONNECTIONS, "state" => "handshaking").set(self.handshaking as f64);
        metrics::gauge!(CLUSTER_CONNECTIONS, "state" => "linked")
            .set((self.by_id.len() - self.handshaking) as f64);
    }
}

/// One connection's place in the port's count, freed when the connection is dropped: at the
/// end of a failed handshake, or when ractor_cluster drops both halves of a link.
struct Slot {
    slots: Arc<Slots>,
    id: u64,
    progress: Arc<AtomicU8>,
}

impl Slot {
    /// The connection proved the cookie: it holds a linked slot, which is never evicted.
    fn linked(&self) {
        let mut entries = self.slots.lock();
        if let Some(entry) = entries.by_id.get_mut(&self.id)
            && !entry.linked
        {
            entry.linked = true;
            entry.evict = None;
            entries.handshaking -= 1;
            entries.publish();
        }
        drop(entries);
        // A newcomer may be waiting for this handshake, evicted too late, to go.
        self.slots.room.notify_waiters();
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut entries = self.slots.lock();
        if let Some(entry) = entries.by_id.remove(&self.id)
            && !entry.linked
        {
            entries.handshaking -= 1;
        }
        entries.publish();
        drop(entries);
        self.slots.room.notify_waiters();
    }
}

/// Counts of what the port closed, summed up in one warning at most every [`WARN_EVERY`]:
/// a flood of bad connections costs a line per period, not a line per connection.
#[derive(Default)]
struct Report {
    state: Mutex<ReportState>,
}

#[derive(Default)]
struct ReportState {
    closed: [u64; Outcome::CLOSED.len()],
    last_closed: Option<(SocketAddr, Outcome, String)>,
    accept_errors: u64,
    last_accept_error: Option<String>,
    last_warning: Option<Instant>,
}

impl Report {
    fn lock(&self) -> MutexGuard<'_, ReportState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn closed(&self, outcome: Outcome, peer: SocketAddr, reason: &str) {
        metrics::counter!(CLUSTER_HANDSHAKES, "outcome" => outcome.as_str()).increment(1);
        tracing::debug!(%peer, outcome = outcome.as_str(), reason, "cluster port: connection closed before it proved the cookie");
        let mut state = self.lock();
        if let Some(index) = Outcome::CLOSED.iter().position(|o| *o == outcome) {
            state.closed[index] += 1;
        }
        state.last_closed = Some((peer, outcome, reason.to_owned()));
        state.warn_if_due();
    }

    fn accept_failed(&self, error: &std::io::Error) {
        metrics::counter!(CLUSTER_ACCEPT_ERRORS).increment(1);
        let mut state = self.lock();
        state.accept_errors += 1;
        state.last_accept_error = Some(error.to_string());
        state.warn_if_due();
    }

    /// Warns of what was counted since the last warning, if it is time.
    fn flush(&self) {
        self.lock().warn_if_due();
    }
}

impl ReportState {
    fn warn_if_due(&mut self) {
        let counted = self.closed.iter().sum::<u64>() + self.accept_errors;
        let due = self
            .last_warning
            .is_none_or(|at| at.elapsed() >= WARN_EVERY);
        if counted == 0 || !due {
            return;
        }
        if let Some((peer, outcome, reason)) = self.last_closed.take() {
            let [refused, evicted, timed_out, tls_failed, rejected, lost] = self.closed;
            tracing::warn!(
                refused,
                evicted,
                timed_out,
                tls_failed,
                rejected,
                lost,
                last_peer = %peer,
                last_outcome = outcome.as_str(),
                last_reason = %reason,
                "cluster port: closed connections that did not prove the cluster cookie \
                 (counts since the last such warning; a member with another cookie or CA, \
                 or someone else, is connecting)"
            );
        }
        if let Some(error) = self.last_accept_error.take() {
            tracing::warn!(
                failures = self.accept_errors,
                last_error = %error,
                "cluster port: accepting connections failed, backing off (counts since the \
                 last such warning; out of file descriptors? raise the open-file limit)"
            );
        }
        self.closed = [0; Outcome::CLOSED.len()];
        self.accept_errors = 0;
        self.last_warning = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests;
