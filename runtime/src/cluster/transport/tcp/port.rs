//! The cluster port: accepts connections from other members, gives each its TLS and link
//! handshakes under one deadline, and hands ractor_cluster only the ones that proved the
//! cluster cookie.
//!
//! A member proves the cookie in the first bytes it sends ([`handshake`]), and over plain TCP
//! those bytes are usually there by the time its connection is accepted: the accept loop reads
//! and judges them on the spot, and a member that proved the cookie takes a linked slot at
//! once, so a flood of strangers can delay it only by the connections queued ahead of it.
//! Any other connection waits for its hello (or TLS) in a task of its own, and gets nothing to
//! hold: it cannot block the accept loop, pin memory (it may send [`handshake::HELLO_LEN`]
//! bytes, judged as they arrive), keep a file descriptor past the deadline, or take more than
//! `max_handshakes` of them: at that cap one handshake is closed for the newcomer, a stalled
//! part of a hello before silence (a member writes its hello whole), the address holding the
//! most before others, the oldest first, and a TLS peer that showed a cluster certificate last:
//! so one source flooding the port evicts its own connections. A handshake told to close looks
//! at its socket once more, and links if a whole, right hello came meanwhile. All connections together stay within
//! `max_connections`, the port's share of the open-file limit ([`crate::net::share_files`]).
//! What was closed, and why, is counted in metrics and summed up in at most one warning every
//! [`WARN_EVERY`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ractor_cluster::ClusterBidiStream;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::handshake::{self, Acceptor, Answer, HandshakeError, HelloReader};
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
    acceptor: Acceptor,
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
    acceptor: Acceptor,
    deliver: Deliver,
) -> tokio::task::JoinHandle<()> {
    let port = Arc::new(Port {
        limits,
        tls,
        acceptor,
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
        let mut reader = HelloReader::new();
        if port.tls.is_none() {
            match port.first_look(&stream, &mut reader) {
                FirstLook::Waiting => {}
                FirstLook::Proved(answer) => {
                    match Slots::add_linked(&port.slots, &port.limits, peer.ip()) {
                        Some(slot) => {
                            handshakes.spawn(link_at_once(
                                port.clone(),
                                stream,
                                peer,
                                slot,
                                answer,
                            ));
                        }
                        None => port.report.closed(
                            Outcome::Refused,
                            peer,
                            "every connection slot holds a linked member",
                        ),
                    }
                    continue;
                }
                FirstLook::Closed(outcome, reason) => {
                    port.report.closed(outcome, peer, &reason);
                    continue;
                }
            }
        }
        match port.make_room(peer.ip(), Standing::of(&reader)).await {
            Some((slot, eviction)) => {
                handshakes.spawn(handshake(
                    port.clone(),
                    stream,
                    peer,
                    reader,
                    slot,
                    eviction,
                ));
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

/// What the bytes a new connection had sent by the time it was accepted say.
enum FirstLook {
    /// Not a whole hello yet (the reader holds what came): it waits in a handshake slot.
    Waiting,
    /// A whole hello with a right proof, and the answer to it.
    Proved(Answer),
    /// Closed on the spot: a wrong byte, a wrong proof, or gone already.
    Closed(Outcome, String),
}

/// Sends a member judged on arrival its answer, then hands its link over (or closes it, when
/// the answer refuses it).
async fn link_at_once(
    port: Arc<Port>,
    stream: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    answer: Answer,
) {
    let _ = stream.set_nodelay(true);
    let deadline = Instant::now() + port.limits.handshake_timeout;
    let outcome = send_answer(stream, &answer, deadline)
        .await
        .map_err(|closed| closed.unwrap_or_else(|| timed_out(&port.limits)));
    port.settle(outcome, peer, slot);
}

/// Sends a plain-TCP connection the answer to its hello by `deadline`: the link when the
/// answer links it, why not otherwise (`None`: the deadline passed).
async fn send_answer(
    mut stream: TcpStream,
    answer: &Answer,
    deadline: Instant,
) -> Result<Established, Option<(Outcome, String)>> {
    match tokio::time::timeout_at(deadline, handshake::send(&mut stream, answer)).await {
        Ok(Ok(())) => Ok(Established::Plain(stream)),
        Ok(Err(error)) => Err(Some((outcome_of(&error), error.to_string()))),
        Err(_) => Err(None),
    }
}

fn timed_out(limits: &PortLimits) -> (Outcome, String) {
    (
        Outcome::TimedOut,
        format!(
            "no handshake within {} ms (cluster.handshake_timeout_ms)",
            limits.handshake_timeout.as_millis()
        ),
    )
}

impl Port {
    /// Judges what `stream` has sent so far, without waiting for more.
    fn first_look(&self, stream: &TcpStream, reader: &mut HelloReader) -> FirstLook {
        loop {
            let read = match stream.try_read(reader.unfilled()) {
                Ok(read) => read,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    return FirstLook::Waiting;
                }
                Err(error) => {
                    return FirstLook::Closed(
                        Outcome::Lost,
                        format!("connection lost during the link handshake: {error}"),
                    );
                }
            };
            let judged = match reader.advance(read) {
                Ok(None) => continue,
                Ok(Some(hello)) => self.acceptor.judge(&hello, handshake::unix_millis()),
                Err(error) => Err(error),
            };
            return match judged {
                Ok(answer) => FirstLook::Proved(answer),
                Err(error) => FirstLook::Closed(outcome_of(&error), error.to_string()),
            };
        }
    }

    /// Ends a connection's handshake: linked, or closed and counted.
    fn settle(
        &self,
        outcome: Result<Established, (Outcome, String)>,
        peer: SocketAddr,
        slot: Slot,
    ) {
        match outcome {
            Ok(link) => self.linked(link, peer, slot),
            Err((outcome, reason)) => self.report.closed(outcome, peer, &reason),
        }
    }

    /// A connection proved the cookie: count it and hand it to ractor_cluster.
    fn linked(&self, link: Established, peer: SocketAddr, slot: Slot) {
        slot.linked();
        metrics::counter!(CLUSTER_HANDSHAKES, "outcome" => Outcome::Linked.as_str()).increment(1);
        tracing::debug!(%peer, "cluster port: a connection proved the cookie");
        (self.deliver)(Box::new(LinkStream::new(link, peer.to_string(), slot)));
    }

    /// A slot for a new connection from `peer`: free, or made free by closing a handshake
    /// (see [`Entries::evict_one`]) and waiting until it has gone. `None` when every slot is
    /// held by a linked member.
    async fn make_room(
        &self,
        peer: IpAddr,
        standing: Standing,
    ) -> Option<(Slot, oneshot::Receiver<()>)> {
        loop {
            let room = self.slots.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match Slots::admit(&self.slots, &self.limits, peer, standing) {
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
                return Some(Slots::add(&self.slots, peer, standing));
            }
        }
    }
}

/// How a failed link handshake is counted.
fn outcome_of(error: &HandshakeError) -> Outcome {
    match error {
        HandshakeError::Closed(_) => Outcome::Lost,
        HandshakeError::NotALink(_)
        | HandshakeError::OtherVersion(_)
        | HandshakeError::WrongCookie
        | HandshakeError::Refused(_) => Outcome::Rejected,
    }
}

/// One connection's TLS and link handshakes under the deadline; then it is handed to
/// ractor_cluster, or closed.
async fn handshake(
    port: Arc<Port>,
    stream: TcpStream,
    peer: SocketAddr,
    reader: HelloReader,
    slot: Slot,
    eviction: oneshot::Receiver<()>,
) {
    let _ = stream.set_nodelay(true);
    let deadline = Instant::now() + port.limits.handshake_timeout;
    let outcome = match &port.tls {
        None => plain_handshake(&port, stream, reader, deadline, eviction, &slot.standing)
            .await
            .map_err(|closed| closed.unwrap_or_else(|| timed_out(&port.limits))),
        Some(tls) => tokio::select! {
            result = tokio::time::timeout_at(
                deadline,
                tls_handshake(&port, tls, stream, reader, &slot.standing),
            ) => result.unwrap_or_else(|_| Err(timed_out(&port.limits))),
            _ = eviction => Err(evicted()),
        },
    };
    port.settle(outcome, peer, slot);
}

fn evicted() -> (Outcome, String) {
    (
        Outcome::Evicted,
        "closed to make room for a newer connection".to_owned(),
    )
}

/// The link handshake over plain TCP: the hello judged as its bytes arrive, then the answer.
/// Told to make room, it looks once more before closing: a member's hello that arrived in the
/// meantime still links (its task may not have run since), so only connections that have not
/// proved the cookie are ever evicted. `Err(None)` at the deadline.
async fn plain_handshake(
    port: &Port,
    stream: TcpStream,
    mut reader: HelloReader,
    deadline: Instant,
    mut eviction: oneshot::Receiver<()>,
    standing: &AtomicU8,
) -> Result<Established, Option<(Outcome, String)>> {
    let answer = loop {
        let evicted_now = tokio::select! {
            readable = stream.readable() => {
                readable.map_err(|e| Some((Outcome::Lost, format!("connection lost during the link handshake: {e}"))))?;
                false
            }
            _ = &mut eviction => true,
            () = tokio::time::sleep_until(deadline) => return Err(None),
        };
        match port.first_look(&stream, &mut reader) {
            FirstLook::Proved(answer) => break answer,
            FirstLook::Closed(outcome, reason) => return Err(Some((outcome, reason))),
            FirstLook::Waiting if evicted_now => return Err(Some(evicted())),
            FirstLook::Waiting => standing.store(Standing::of(&reader) as u8, Ordering::Relaxed),
        }
    };
    send_answer(stream, &answer, deadline).await
}

/// TLS, then the link handshake inside it.
async fn tls_handshake(
    port: &Port,
    tls: &TlsAcceptor,
    stream: TcpStream,
    reader: HelloReader,
    standing: &AtomicU8,
) -> Result<Established, (Outcome, String)> {
    let mut stream = tls
        .accept(stream)
        .await
        .map_err(|e| (Outcome::TlsFailed, format!("TLS handshake failed: {e}")))?;
    // It showed a certificate the cluster's CA signed: a member, nearly certainly.
    standing.store(Standing::Certified as u8, Ordering::Relaxed);
    port.acceptor
        .accept(&mut stream, reader)
        .await
        .map_err(|error| (outcome_of(&error), error.to_string()))?;
    Ok(Established::AcceptedTls(Box::new(stream)))
}

/// How far a connection in its handshake has got: when room is needed, the lowest goes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Standing {
    /// It sent part of a hello and stopped. A member writes its hello whole, in one segment,
    /// so this is a stranger holding a slot.
    Stalled = 0,
    /// Nothing judged yet: a member whose hello is still on its way looks like this.
    Silent = 1,
    /// Its TLS handshake showed a certificate of the cluster's CA: a member, nearly certainly.
    Certified = 2,
    /// It proved the cookie (never evicted; listed for completeness).
    Linked = 3,
}

impl Standing {
    /// The standing of a plain-TCP connection whose hello so far is in `reader`.
    fn of(reader: &HelloReader) -> Standing {
        if reader.received() == 0 {
            Standing::Silent
        } else {
            Standing::Stalled
        }
    }
}

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
    /// Its address: when room is needed, the address holding the most handshakes loses one.
    peer: IpAddr,
    linked: bool,
    /// How far its handshake got ([`Standing`]), shared with its task.
    standing: Arc<AtomicU8>,
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

    /// Admits a connection from `peer` into a handshake slot, or tells the handshake to close
    /// that must make room for it.
    fn admit(
        slots: &Arc<Slots>,
        limits: &PortLimits,
        peer: IpAddr,
        standing: Standing,
    ) -> Admission {
        let mut entries = slots.lock();
        let full = entries.by_id.len() >= limits.max_connections
            || entries.handshaking >= limits.max_handshakes;
        if !full {
            drop(entries);
            let (slot, eviction) = Slots::add(slots, peer, standing);
            return Admission::Admitted(slot, eviction);
        }
        // When every handshake is already closing, wait for one to go.
        if entries.evict_one() || entries.handshaking > 0 {
            Admission::Evicting
        } else {
            Admission::Full
        }
    }

    fn add(slots: &Arc<Slots>, peer: IpAddr, standing: Standing) -> (Slot, oneshot::Receiver<()>) {
        let (evict, eviction) = oneshot::channel();
        let slot = Slots::insert(slots, peer, standing, Some(evict));
        (slot, eviction)
    }

    /// A linked slot for a connection that proved the cookie on arrival. It never waits: at
    /// the connection cap a handshake is told to close and the cap is passed until it has
    /// gone. `None` only when linked members hold every slot.
    fn add_linked(slots: &Arc<Slots>, limits: &PortLimits, peer: IpAddr) -> Option<Slot> {
        {
            let mut entries = slots.lock();
            if entries.by_id.len() >= limits.max_connections && !entries.evict_one() {
                return None;
            }
        }
        Some(Slots::insert(slots, peer, Standing::Linked, None))
    }

    /// Counts a connection in: in its handshake when it can be evicted, linked otherwise.
    fn insert(
        slots: &Arc<Slots>,
        peer: IpAddr,
        standing: Standing,
        evict: Option<oneshot::Sender<()>>,
    ) -> Slot {
        let standing = Arc::new(AtomicU8::new(standing as u8));
        let linked = evict.is_none();
        let mut entries = slots.lock();
        let id = entries.next_id;
        entries.next_id += 1;
        entries.by_id.insert(
            id,
            Entry {
                accepted: Instant::now(),
                peer,
                linked,
                standing: standing.clone(),
                evict,
            },
        );
        if !linked {
            entries.handshaking += 1;
        }
        entries.publish();
        Slot {
            slots: slots.clone(),
            id,
            standing,
        }
    }
}

impl Entries {
    /// Tells one handshake to close: the lowest [`Standing`] first (a stalled part of a hello,
    /// then silence, then a cluster certificate), then the address holding the most
    /// handshakes, then the oldest. So one source flooding the port evicts its own, and a
    /// member, dialling from elsewhere or sending its hello whole, keeps its slot. False when
    /// every handshake is already closing (or there is none).
    fn evict_one(&mut self) -> bool {
        let mut held: HashMap<IpAddr, usize> = HashMap::new();
        for entry in self.by_id.values().filter(|entry| entry.evict.is_some()) {
            *held.entry(entry.peer).or_default() += 1;
        }
        let victim = self
            .by_id
            .values_mut()
            .filter(|entry| entry.evict.is_some())
            .min_by_key(|entry| {
                (
                    entry.standing.load(Ordering::Relaxed),
                    std::cmp::Reverse(held[&entry.peer]),
                    entry.accepted,
                )
            });
        match victim.and_then(|entry| entry.evict.take()) {
            Some(evict) => {
                let _ = evict.send(());
                true
            }
            None => false,
        }
    }

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
    standing: Arc<AtomicU8>,
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
