//! Membership: the links to the other members and whether each is up.
//!
//! ractor_cluster notices a dead peer only when its TCP link errors: a SIGSTOPped node or a
//! dropped link stays "connected" for minutes. So every member sends each peer a heartbeat
//! every `heartbeat_interval` (a call to its gateway) and counts a peer down when none has been
//! answered for `heartbeat_timeout`, or at once when the link closes. A heartbeat also carries
//! the safety checks: the placement fingerprint (a peer placed differently is refused, never
//! up) and log ends (a node whose peers saw more of its log than it holds stops serving).
//!
//! Links: of two members, the one whose name sorts first dials the other, and redials with
//! exponential backoff and jitter while the link is down; the other waits for it. One link per
//! pair, so ractor_cluster never has two sessions to elect between.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::{NodeEventSubscription, NodeServerMessage};

use super::transport::Transport;
use serde::Serialize;

use super::Cluster;
use super::gateway::GatewayMsg;
use super::wire::Heartbeat;
use crate::codec;
use crate::config::Member;
use crate::metrics::{CLUSTER_HEARTBEAT_RTT, CLUSTER_MEMBER_TRANSITIONS, CLUSTER_MEMBERS_UP};
use crate::placement::Placement;
use crate::resilience::RetryPolicy;

/// A peer's status, as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MemberStatus {
    /// Not heard from since this node started.
    Joining,
    /// Answering heartbeats: calls go to it.
    Up,
    /// Its link closed, or its heartbeats stopped: its partitions are unavailable.
    Down,
    /// Placed differently from this node: never called, never up.
    Refused,
}

impl MemberStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Joining => "joining",
            MemberStatus::Up => "up",
            MemberStatus::Down => "down",
            MemberStatus::Refused => "refused",
        }
    }
}

/// A peer as `/admin/cluster` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MemberView {
    pub name: String,
    /// Its cluster address.
    pub address: String,
    pub status: MemberStatus,
    /// Why it is not up.
    pub reason: Option<String>,
    /// Milliseconds since its last heartbeat answer.
    pub last_heartbeat_ms_ago: Option<u64>,
    /// The last heartbeat's round trip, in microseconds.
    pub rtt_us: Option<u64>,
    /// Its log end at the last heartbeat.
    pub log_end: Option<u64>,
    pub services: Vec<String>,
    /// How many partitions of each service it owns.
    pub partitions: BTreeMap<String, usize>,
    #[serde(skip)]
    #[schema(ignore)]
    last_heartbeat: Option<Instant>,
}

impl MemberView {
    pub(crate) fn joining(member: &Member, placement: &Placement) -> Self {
        Self {
            name: member.name.clone(),
            address: member.address.to_string(),
            status: MemberStatus::Joining,
            reason: Some("not heard from yet".into()),
            last_heartbeat_ms_ago: None,
            rtt_us: None,
            log_end: None,
            services: member.services.clone(),
            partitions: placement
                .owned_by(&member.name)
                .into_iter()
                .map(|(service, owned)| (service, owned.len()))
                .collect(),
            last_heartbeat: None,
        }
    }

    /// This view with its age fields brought up to now.
    pub fn at_now(mut self) -> Self {
        self.last_heartbeat_ms_ago = self
            .last_heartbeat
            .map(|at| u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX));
        self
    }
}

impl Cluster {
    /// The heartbeat this node sends to (or answers) `peer`.
    pub(crate) fn heartbeat_for(&self, peer: Option<&str>) -> Heartbeat {
        Heartbeat {
            from: self.node().to_owned(),
            placement: self.inner.fingerprint,
            log_end: self.inner.store.log_end(),
            seen_of_you: peer.and_then(|peer| self.seen().get(peer)),
        }
    }

    /// A peer's heartbeat arrived: remember its log end, check what it saw of ours, answer.
    pub(crate) fn heard(&self, heartbeat: &Heartbeat) -> Heartbeat {
        if heartbeat.placement == self.inner.fingerprint {
            self.seen().saw(&heartbeat.from, heartbeat.log_end);
            self.check_memory(&heartbeat.from, heartbeat.seen_of_you);
        }
        self.heartbeat_for(Some(&heartbeat.from))
    }

    /// Stops serving if `peer` saw this node's log reach further than its store now holds;
    /// otherwise `peer` vouches for this node's store, and it serves.
    fn check_memory(&self, peer: &str, seen_of_me: Option<u64>) {
        let held = self.inner.store.log_end();
        match seen_of_me {
            Some(seen) if seen > held => self.stop_serving(format!(
                "node {peer} saw this node's log reach position {seen}, but its store ends at {held}: \
                 its data was lost or replaced; restore the data directory from a backup (serving \
                 what is left would lose acknowledged writes)"
            )),
            _ => self.confirm_serving(&format!("node {peer} found its store complete")),
        }
    }

    /// Sets `peer`'s status (and reason), counting and logging real changes.
    fn set_status(&self, peer: &str, status: MemberStatus, reason: Option<String>) {
        let mut members = self
            .inner
            .members
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(view) = members.get_mut(peer) else {
            return;
        };
        let changed = view.status != status;
        view.status = status;
        view.reason = reason;
        if changed {
            if status != MemberStatus::Up {
                self.departure(peer).notify_waiters();
            }
            match status {
                MemberStatus::Up => {
                    tracing::info!(node = %self.node(), peer, "cluster member up")
                }
                _ => tracing::warn!(
                    node = %self.node(),
                    peer,
                    status = status.as_str(),
                    reason = view.reason.as_deref().unwrap_or(""),
                    "cluster member not up"
                ),
            }
            metrics::counter!(CLUSTER_MEMBER_TRANSITIONS, "peer" => peer.to_owned(), "to" => status.as_str())
                .increment(1);
            let up = members
                .values()
                .filter(|view| view.status == MemberStatus::Up)
                .count();
            metrics::gauge!(CLUSTER_MEMBERS_UP).set(up as f64);
        }
    }

    fn record_heartbeat(&self, peer: &str, rtt: Duration, log_end: u64) {
        let mut members = self
            .inner
            .members
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(view) = members.get_mut(peer) {
            view.last_heartbeat = Some(Instant::now());
            view.rtt_us = Some(u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX));
            view.log_end = Some(log_end);
        }
        metrics::histogram!(CLUSTER_HEARTBEAT_RTT, "peer" => peer.to_owned())
            .record(rtt.as_secs_f64());
    }

    fn last_heartbeat(&self, peer: &str) -> Option<Instant> {
        self.read_members()
            .get(peer)
            .and_then(|view| view.last_heartbeat)
    }

    fn status(&self, peer: &str) -> Option<MemberStatus> {
        self.read_members().get(peer).map(|view| view.status)
    }
}

/// How a link is redialled: quickly at first, then every few seconds.
const REDIAL: RetryPolicy = RetryPolicy {
    initial: Duration::from_millis(100),
    factor: 2.0,
    max_delay: Duration::from_secs(5),
    max_attempts: u32::MAX,
    jitter: 0.25,
};

/// A dialled link that has not become ready in this long is dialled again.
const DIAL_READY_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the peers' log ends are written down, at most.
const SEEN_FLUSH_EVERY: Duration = Duration::from_secs(2);

pub(crate) enum MembershipMsg {
    Tick,
    Probed {
        peer: String,
        outcome: Result<(Heartbeat, Duration), String>,
    },
    Session(SessionEvent),
    Dial(String),
    Dialed {
        peer: String,
        /// The socket address dialled, or why the link could not be opened.
        result: Result<std::net::SocketAddr, String>,
    },
}

impl ractor::Message for MembershipMsg {}

pub(crate) struct SessionEvent {
    kind: SessionEventKind,
    node_id: u64,
    peer: Option<String>,
    peer_addr: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionEventKind {
    Opened,
    Authenticated,
    Ready,
    Closed,
}

/// Forwards ractor_cluster's session events to the membership actor.
struct Subscription(ActorRef<MembershipMsg>);

impl Subscription {
    fn forward(&self, kind: SessionEventKind, session: NodeServerSessionInformation) {
        let _ = self.0.cast(MembershipMsg::Session(SessionEvent {
            kind,
            node_id: session.node_id,
            // ractor_cluster names a node `{name}@{host}`.
            peer: session
                .peer_name
                .map(|name| match name.name.split_once('@') {
                    Some((node, _)) => node.to_owned(),
                    None => name.name,
                }),
            peer_addr: session.peer_addr,
        }));
    }
}

impl NodeEventSubscription for Subscription {
    fn node_session_opened(&self, session: NodeServerSessionInformation) {
        self.forward(SessionEventKind::Opened, session);
    }

    fn node_session_disconnected(&self, session: NodeServerSessionInformation) {
        self.forward(SessionEventKind::Closed, session);
    }

    fn node_session_authenticated(&self, session: NodeServerSessionInformation) {
        self.forward(SessionEventKind::Authenticated, session);
    }

    fn node_session_ready(&self, session: NodeServerSessionInformation) {
        self.forward(SessionEventKind::Ready, session);
    }
}

/// What this node knows of its link to one peer.
struct Link {
    /// As configured: `host:port`.
    address: String,
    /// What `address` resolved to when last dialled.
    resolved: Option<std::net::SocketAddr>,
    /// This node dials the peer (its name sorts first).
    dialer: bool,
    /// A heartbeat to it is out.
    probing: bool,
    /// Sessions with it that authenticated, by ractor_cluster's node id.
    sessions: HashSet<u64>,
    ready: bool,
    /// Failed dials in a row (for the backoff), and whether a dial is scheduled or under way.
    dial_failures: u32,
    dial_pending: bool,
    dialled_at: Option<Instant>,
}

pub(crate) struct Membership;

pub(crate) struct MembershipState {
    cluster: Cluster,
    transport: Transport,
    links: HashMap<String, Link>,
    /// Sessions ractor_cluster opened, by node id, with the peer address they came from.
    opened: HashMap<u64, String>,
    last_flush: Instant,
}

/// Starts the membership actor: it subscribes to the transport's session events, dials the
/// peers this node dials, and sends heartbeats.
pub(crate) async fn start(cluster: Cluster, transport: Transport) -> Result<(), String> {
    let name = format!("membership-{}", cluster.node());
    Actor::spawn(Some(name), Membership, (cluster, transport))
        .await
        .map(|_| ())
        .map_err(|e| format!("the membership actor did not start: {e}"))
}

impl Actor for Membership {
    type Msg = MembershipMsg;
    type State = MembershipState;
    type Arguments = (Cluster, Transport);

    async fn pre_start(
        &self,
        myself: ActorRef<MembershipMsg>,
        (cluster, transport): (Cluster, Transport),
    ) -> Result<MembershipState, ActorProcessingErr> {
        transport
            .server()
            .cast(NodeServerMessage::SubscribeToEvents {
                id: "playhouse-membership".into(),
                subscription: Box::new(Subscription(myself.clone())),
            })?;
        let me = cluster.node().to_owned();
        let links: HashMap<String, Link> = cluster
            .peers()
            .map(|member| {
                let link = Link {
                    address: member.address.clone(),
                    resolved: None,
                    dialer: me < member.name,
                    probing: false,
                    sessions: HashSet::new(),
                    ready: false,
                    dial_failures: 0,
                    dial_pending: false,
                    dialled_at: None,
                };
                (member.name.clone(), link)
            })
            .collect();
        for (peer, link) in &links {
            if link.dialer {
                myself.cast(MembershipMsg::Dial(peer.clone()))?;
            }
        }
        myself.send_interval(cluster.config().heartbeat_interval, || MembershipMsg::Tick);
        Ok(MembershipState {
            cluster,
            transport,
            links,
            opened: HashMap::new(),
            last_flush: Instant::now(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<MembershipMsg>,
        message: MembershipMsg,
        state: &mut MembershipState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            MembershipMsg::Tick => tick(&myself, state),
            MembershipMsg::Probed { peer, outcome } => probed(state, &peer, outcome),
            MembershipMsg::Session(event) => session(&myself, state, event),
            MembershipMsg::Dial(peer) => dial(&myself, state, &peer),
            MembershipMsg::Dialed { peer, result } => dialed(&myself, state, &peer, result),
        }
        Ok(())
    }
}

/// Every heartbeat interval: count silent peers down, send heartbeats, write the log ends.
fn tick(myself: &ActorRef<MembershipMsg>, state: &mut MembershipState) {
    let cluster = state.cluster.clone();
    let timeout = cluster.config().heartbeat_timeout;
    for (peer, link) in &mut state.links {
        let silent = cluster
            .last_heartbeat(peer)
            .is_none_or(|at| at.elapsed() > timeout);
        if silent && cluster.status(peer) == Some(MemberStatus::Up) {
            cluster.set_status(
                peer,
                MemberStatus::Down,
                Some(format!(
                    "no heartbeat answer for {} ms",
                    timeout.as_millis()
                )),
            );
        }
        if link.dialer
            && !link.ready
            && !link.dial_pending
            && link
                .dialled_at
                .is_some_and(|at| at.elapsed() > DIAL_READY_TIMEOUT)
        {
            // Connected but never ready (the peer stopped mid-handshake): dial again.
            link.dialled_at = None;
            let _ = myself.cast(MembershipMsg::Dial(peer.clone()));
        }
        if link.probing {
            continue;
        }
        let Some(gateway) = cluster.gateway_of(peer) else {
            continue;
        };
        link.probing = true;
        probe(myself.clone(), &cluster, peer.clone(), gateway, timeout);
    }
    if state.last_flush.elapsed() >= SEEN_FLUSH_EVERY {
        state.last_flush = Instant::now();
        if let Some(pending) = cluster.seen().changes() {
            let cluster = cluster.clone();
            tokio::task::spawn_blocking(move || {
                if let Err(error) = pending.write() {
                    tracing::warn!(%error, "cannot record the peers' log ends; retrying");
                    cluster.seen().unwritten();
                }
            });
        }
    }
}

/// Sends one heartbeat to `peer` and reports how it went.
fn probe(
    myself: ActorRef<MembershipMsg>,
    cluster: &Cluster,
    peer: String,
    gateway: ActorRef<GatewayMsg>,
    timeout: Duration,
) {
    let heartbeat = cluster.heartbeat_for(Some(&peer));
    tokio::spawn(async move {
        let started = Instant::now();
        let outcome = match codec::encode(&heartbeat) {
            Err(error) => Err(error.to_string()),
            Ok(bytes) => match gateway
                .call(|reply| GatewayMsg::Heartbeat(bytes, reply), Some(timeout))
                .await
            {
                Ok(CallResult::Success(answer)) => codec::decode::<Heartbeat>(&answer)
                    .map(|answer| (answer, started.elapsed()))
                    .map_err(|e| format!("its heartbeat answer does not decode: {e}")),
                Ok(CallResult::Timeout) => Err(format!(
                    "no heartbeat answer within {} ms",
                    timeout.as_millis()
                )),
                Ok(CallResult::SenderError) | Err(_) => Err("its link closed".into()),
            },
        };
        let _ = myself.cast(MembershipMsg::Probed { peer, outcome });
    });
}

fn probed(state: &mut MembershipState, peer: &str, outcome: Result<(Heartbeat, Duration), String>) {
    if let Some(link) = state.links.get_mut(peer) {
        link.probing = false;
    }
    let cluster = &state.cluster;
    match outcome {
        Ok((answer, _)) if answer.placement != cluster.inner.fingerprint => {
            cluster.set_status(
                peer,
                MemberStatus::Refused,
                Some(format!(
                    "placed differently: its members, their services or the partition count differ from this node's config (placement {:016x}, ours {:016x}); two configs would make two owners of one aggregate",
                    answer.placement, cluster.inner.fingerprint
                )),
            );
        }
        Ok((answer, rtt)) => {
            cluster.seen().saw(peer, answer.log_end);
            cluster.check_memory(peer, answer.seen_of_you);
            cluster.record_heartbeat(peer, rtt, answer.log_end);
            cluster.set_status(peer, MemberStatus::Up, None);
        }
        Err(reason) => {
            if reason == "its link closed" {
                cluster.inner.gateways.remove(peer);
            }
            if cluster.status(peer) == Some(MemberStatus::Up) {
                cluster.set_status(peer, MemberStatus::Down, Some(reason));
            }
        }
    }
}

fn session(myself: &ActorRef<MembershipMsg>, state: &mut MembershipState, event: SessionEvent) {
    let cluster = state.cluster.clone();
    match event.kind {
        SessionEventKind::Opened => {
            state.opened.insert(event.node_id, event.peer_addr);
        }
        SessionEventKind::Authenticated | SessionEventKind::Ready => {
            let Some(peer) = event.peer else {
                return;
            };
            if !state.links.contains_key(&peer) {
                tracing::warn!(node = %cluster.node(), stranger = %peer, "a node that is not a member linked up; it is never called");
                return;
            }
            let link = state.links.get_mut(&peer).expect("checked above");
            link.sessions.insert(event.node_id);
            if event.kind == SessionEventKind::Ready {
                link.ready = true;
                link.dial_failures = 0;
                tracing::info!(node = %cluster.node(), %peer, "cluster link ready");
            }
        }
        SessionEventKind::Closed => {
            let opened_from = state.opened.remove(&event.node_id);
            let known = state.links.iter_mut().find_map(|(peer, link)| {
                link.sessions.remove(&event.node_id).then(|| peer.clone())
            });
            let (peer, authenticated) = match known {
                Some(peer) => (peer, true),
                // Closed before authenticating: find the peer by the address dialled.
                None => match state.links.iter().find(|(_, link)| {
                    opened_from.as_deref().is_some_and(|from| {
                        from == link.address || link.resolved.is_some_and(|r| r.to_string() == from)
                    })
                }) {
                    Some((peer, _)) => (peer.clone(), false),
                    None => {
                        tracing::warn!(node = %cluster.node(), from = opened_from.as_deref().unwrap_or("?"), "a cluster link closed before authenticating (wrong cookie, or not a playhouse node?)");
                        return;
                    }
                },
            };
            let link = state.links.get_mut(&peer).expect("found above");
            if !link.sessions.is_empty() {
                return;
            }
            link.ready = false;
            cluster.inner.gateways.remove(&peer);
            let reason = if authenticated {
                format!("the link to node {peer} closed")
            } else {
                format!(
                    "the link to node {peer} closed before authenticating: do both nodes have the same cluster cookie (and TLS CA)?"
                )
            };
            if authenticated || cluster.status(&peer) == Some(MemberStatus::Up) {
                cluster.set_status(&peer, MemberStatus::Down, Some(reason));
            } else {
                tracing::warn!(node = %cluster.node(), %peer, "{reason}");
                let status = cluster.status(&peer).unwrap_or(MemberStatus::Joining);
                cluster.set_status(&peer, status, Some(reason));
            }
            if link.dialer {
                link.dial_failures += 1;
                schedule_dial(myself, &peer, link);
            }
        }
    }
}

fn schedule_dial(myself: &ActorRef<MembershipMsg>, peer: &str, link: &mut Link) {
    if link.dial_pending {
        return;
    }
    link.dial_pending = true;
    let wait = REDIAL.delay(
        link.dial_failures.max(1),
        crate::resilience::noise(
            crate::store::fingerprint(peer.as_bytes()),
            link.dial_failures,
        ),
    );
    let peer = peer.to_owned();
    myself.send_after(wait, move || MembershipMsg::Dial(peer));
}

fn dial(myself: &ActorRef<MembershipMsg>, state: &mut MembershipState, peer: &str) {
    let Some(link) = state.links.get_mut(peer) else {
        return;
    };
    link.dial_pending = false;
    if link.ready {
        return;
    }
    link.dial_pending = true;
    link.dialled_at = Some(Instant::now());
    let (transport, address, myself) = (
        state.transport.clone(),
        link.address.clone(),
        myself.clone(),
    );
    let peer = peer.to_owned();
    tokio::spawn(async move {
        let result = transport.dial(&address, &peer).await;
        let _ = myself.cast(MembershipMsg::Dialed { peer, result });
    });
}

fn dialed(
    myself: &ActorRef<MembershipMsg>,
    state: &mut MembershipState,
    peer: &str,
    result: Result<std::net::SocketAddr, String>,
) {
    let cluster = state.cluster.clone();
    let Some(link) = state.links.get_mut(peer) else {
        return;
    };
    link.dial_pending = false;
    if let Ok(resolved) = result {
        link.resolved = Some(resolved);
    }
    if let Err(reason) = result {
        link.dial_failures += 1;
        if link.dial_failures == 1 || link.dial_failures.is_multiple_of(20) {
            tracing::warn!(node = %cluster.node(), %peer, failures = link.dial_failures, %reason, "cannot reach cluster member; retrying");
        }
        if cluster.status(peer) != Some(MemberStatus::Up) {
            let status = cluster.status(peer).unwrap_or(MemberStatus::Joining);
            let status = if status == MemberStatus::Joining {
                MemberStatus::Joining
            } else {
                MemberStatus::Down
            };
            cluster.set_status(peer, status, Some(format!("cannot reach it: {reason}")));
        }
        schedule_dial(myself, peer, link);
    }
}
