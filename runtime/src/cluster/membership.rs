//! Membership: the links to the other members and whether each is up.
//!
//! A transport notices a dead peer only when its link errors: a SIGSTOPped node or a dropped
//! link stays "connected" for minutes. So every member sends each peer a heartbeat every
//! `heartbeat_interval` and counts a peer down when none has been answered for
//! `heartbeat_timeout`, or at once when the link closes. A heartbeat also carries
//! the safety checks: the placement fingerprint (a peer placed differently is refused, never
//! up) and log ends (a node whose peers saw more of its log than it holds stops serving).
//!
//! Links: of two members, the one whose name sorts first dials the other, and redials with
//! exponential backoff and jitter while the link is down; the other waits for it. One link per
//! pair, so a transport never has two to choose between. Which peer is up is the
//! [`Detector`]'s call; this actor feeds it and sends what it needs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Cluster;
use super::detector::{Change, Detector};
use super::transport::{Channel, LinkEvent, Transport};
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
            placement: self.cluster_id(),
            log_end: self.inner.store.log_end(),
            seen_of_you: peer.and_then(|peer| self.seen().get(peer)),
        }
    }

    /// A peer's heartbeat arrived: remember its log end, check what it saw of ours, answer.
    pub(crate) fn heard(&self, heartbeat: &Heartbeat) -> Heartbeat {
        if heartbeat.placement == self.cluster_id() {
            self.seen().saw(&heartbeat.from, heartbeat.log_end);
            self.check_memory(&heartbeat.from, heartbeat.seen_of_you);
        }
        self.heartbeat_for(Some(&heartbeat.from))
    }

    /// Stops serving if `peer` saw this node's log reach further than its store now holds;
    /// otherwise `peer` vouches for this node's store, and it serves.
    fn check_memory(&self, peer: &str, seen_of_me: Option<u64>) {
        // With replication the store is a replica's applied state: a crash may take its
        // unsynced tail, which the Raft log applies again, and a lost disk is healed by the
        // partitions' groups, so how far a peer saw it proves nothing.
        if self.placement().is_replicated() {
            self.confirm_serving(&format!("node {peer} shares its placement"));
            return;
        }
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
                self.departed(peer);
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

    /// Applies the detector's `change`.
    fn apply(&self, change: Change) {
        self.set_status(&change.peer, change.status, change.reason);
    }

    /// Says why `peer` is not up, without changing its status.
    fn explain(&self, peer: &str, reason: String) {
        let mut members = self
            .inner
            .members
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(view) = members.get_mut(peer)
            && view.status != MemberStatus::Up
        {
            view.reason = Some(reason);
        }
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

/// A dialled link that has not come up in this long is dialled again.
const DIAL_UP_TIMEOUT: Duration = Duration::from_secs(5);

/// A member that cannot be reached is warned about at most this often (with the count).
const DIAL_WARN_EVERY: Duration = Duration::from_secs(10);

/// How often the peers' log ends are written down, at most.
const SEEN_FLUSH_EVERY: Duration = Duration::from_secs(2);

pub(crate) enum MembershipMsg {
    Tick,
    Probed {
        peer: String,
        outcome: Result<(Heartbeat, Duration), String>,
    },
    Link(LinkEvent),
    Dial(String),
    Dialed {
        peer: String,
        result: Result<(), String>,
    },
    /// The roster changed: link to new members, forget those no longer listed.
    Roster,
}

impl ractor::Message for MembershipMsg {}

/// What this node knows of its link to one peer.
struct Link {
    /// As configured: `host:port`.
    address: String,
    /// This node dials the peer (its name sorts first).
    dialer: bool,
    /// A heartbeat to it is out.
    probing: bool,
    up: bool,
    /// Failed dials in a row (for the backoff), and whether a dial is scheduled or under way.
    dial_failures: u32,
    dial_pending: bool,
    dialled_at: Option<Instant>,
    /// When a failed dial was last logged: at most one warning per [`DIAL_WARN_EVERY`].
    warned_at: Option<Instant>,
}

impl Link {
    /// A link from node `me` to `member`, not up yet.
    fn to(me: &str, member: &Member) -> Self {
        Link {
            address: member.address.clone(),
            dialer: *me < *member.name,
            probing: false,
            up: false,
            dial_failures: 0,
            dial_pending: false,
            dialled_at: None,
            warned_at: None,
        }
    }
}

pub(crate) struct Membership;

pub(crate) struct MembershipState {
    cluster: Cluster,
    transport: Arc<dyn Transport>,
    links: BTreeMap<String, Link>,
    /// Nodes that are not members (yet) whose links are up: a node asking to join dials the
    /// members it contacts, and its link is taken over once the roster lists it, rather than
    /// dialled a second time.
    strangers: std::collections::BTreeSet<String>,
    detector: Detector,
    last_flush: Instant,
}

/// Starts the membership actor: it takes the transport's link news from `events`, dials the
/// peers this node dials, and sends heartbeats.
pub(crate) async fn start(
    cluster: Cluster,
    transport: Arc<dyn Transport>,
    events: mpsc::UnboundedReceiver<LinkEvent>,
) -> Result<ActorRef<MembershipMsg>, String> {
    let (membership, _) = Actor::spawn(None, Membership, (cluster, transport))
        .await
        .map_err(|e| format!("the membership actor did not start: {e}"))?;
    let forward = membership.clone();
    tokio::spawn(async move {
        let mut events = events;
        while let Some(event) = events.recv().await {
            if forward.cast(MembershipMsg::Link(event)).is_err() {
                break;
            }
        }
    });
    Ok(membership)
}

impl Actor for Membership {
    type Msg = MembershipMsg;
    type State = MembershipState;
    type Arguments = (Cluster, Arc<dyn Transport>);

    async fn pre_start(
        &self,
        myself: ActorRef<MembershipMsg>,
        (cluster, transport): (Cluster, Arc<dyn Transport>),
    ) -> Result<MembershipState, ActorProcessingErr> {
        let me = cluster.node().to_owned();
        let links: BTreeMap<String, Link> = cluster
            .peers()
            .into_iter()
            .map(|member| (member.name.clone(), Link::to(&me, &member)))
            .collect();
        for (peer, link) in &links {
            if link.dialer {
                myself.cast(MembershipMsg::Dial(peer.clone()))?;
            }
        }
        let detector = Detector::new(links.keys().cloned(), cluster.config().heartbeat_timeout);
        myself.send_interval(cluster.config().heartbeat_interval, || MembershipMsg::Tick);
        Ok(MembershipState {
            cluster,
            transport,
            links,
            strangers: std::collections::BTreeSet::new(),
            detector,
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
            MembershipMsg::Link(event) => link_event(&myself, state, event),
            MembershipMsg::Dial(peer) => dial(&myself, state, &peer),
            MembershipMsg::Dialed { peer, result } => dialed(&myself, state, &peer, result),
            MembershipMsg::Roster => follow_roster(&myself, state),
        }
        Ok(())
    }
}

/// The roster changed: a link to each new member (dialled when this node dials it), none to a
/// member no longer listed (its heartbeats stop; the transport's link closes with the node).
fn follow_roster(myself: &ActorRef<MembershipMsg>, state: &mut MembershipState) {
    let me = state.cluster.node().to_owned();
    let peers = state.cluster.peers();
    state
        .links
        .retain(|name, _| peers.iter().any(|member| member.name == *name));
    for member in &peers {
        let link = state
            .links
            .entry(member.name.clone())
            .or_insert_with(|| Link {
                up: state.strangers.remove(&member.name),
                ..Link::to(&me, member)
            });
        // A member whose address changed is dialled where it is now.
        link.address.clone_from(&member.address);
        if link.dialer && !link.up && !link.dial_pending {
            let _ = myself.cast(MembershipMsg::Dial(member.name.clone()));
        }
    }
    state
        .detector
        .track(peers.into_iter().map(|member| member.name));
}

/// Every heartbeat interval: count silent peers down, redial links that never came up, send
/// heartbeats, write the log ends.
fn tick(myself: &ActorRef<MembershipMsg>, state: &mut MembershipState) {
    let cluster = state.cluster.clone();
    let now = Instant::now();
    for change in state.detector.tick(now) {
        cluster.apply(change);
    }
    let timeout = cluster.config().heartbeat_timeout;
    for (peer, link) in &mut state.links {
        if link.dialer
            && !link.up
            && !link.dial_pending
            && link
                .dialled_at
                .is_some_and(|at| now.saturating_duration_since(at) > DIAL_UP_TIMEOUT)
        {
            // Dialled but never up (the peer stopped mid-handshake): dial again.
            link.dialled_at = None;
            let _ = myself.cast(MembershipMsg::Dial(peer.clone()));
        }
        if link.probing || !link.up {
            continue;
        }
        link.probing = true;
        probe(
            myself.clone(),
            &cluster,
            &state.transport,
            peer.clone(),
            timeout,
        );
    }
    if now.saturating_duration_since(state.last_flush) >= SEEN_FLUSH_EVERY {
        state.last_flush = now;
        if let Some(pending) = cluster.seen().changes() {
            let (writer, store) = (cluster.clone(), cluster.inner.store.clone());
            tokio::spawn(async move {
                let written = store.blocking("recording the peers' log ends", move || {
                    if let Err(error) = pending.write() {
                        tracing::warn!(%error, "cannot record the peers' log ends; retrying");
                        writer.seen().unwritten();
                    }
                });
                let _ = written.await;
            });
        }
    }
}

/// Sends one heartbeat to `peer` and reports how it went.
fn probe(
    myself: ActorRef<MembershipMsg>,
    cluster: &Cluster,
    transport: &Arc<dyn Transport>,
    peer: String,
    timeout: Duration,
) {
    let heartbeat = cluster.heartbeat_for(Some(&peer));
    let transport = transport.clone();
    tokio::spawn(async move {
        let started = Instant::now();
        let outcome = match codec::encode(&heartbeat) {
            Err(error) => Err(error.to_string()),
            Ok(bytes) => match transport
                .call(&peer, Channel::Heartbeat, bytes, timeout)
                .await
            {
                Ok(answer) => codec::decode::<Heartbeat>(&answer)
                    .map(|answer| (answer, started.elapsed()))
                    .map_err(|e| format!("its heartbeat answer does not decode: {e}")),
                Err(failure) => Err(failure.to_string()),
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
    let change = match outcome {
        Ok((answer, _)) if answer.placement != cluster.cluster_id() => state.detector.refused(
            peer,
            format!(
                "placed differently: its members, their services or the partition count differ from this node's config (placement {:016x}, ours {:016x}); two configs would make two owners of one aggregate",
                answer.placement, cluster.cluster_id()
            ),
        ),
        Ok((answer, rtt)) => {
            cluster.seen().saw(peer, answer.log_end);
            cluster.check_memory(peer, answer.seen_of_you);
            cluster.record_heartbeat(peer, rtt, answer.log_end);
            state.detector.answered(peer, Instant::now())
        }
        Err(reason) => state.detector.failed(peer, reason),
    };
    if let Some(change) = change {
        cluster.apply(change);
    }
}

fn link_event(myself: &ActorRef<MembershipMsg>, state: &mut MembershipState, event: LinkEvent) {
    let cluster = state.cluster.clone();
    match event {
        LinkEvent::Up { peer } => {
            let Some(link) = state.links.get_mut(&peer) else {
                tracing::info!(node = %cluster.node(), stranger = %peer, "a node that is not a member linked up (asking to join?); it is not called until admitted");
                state.strangers.insert(peer);
                return;
            };
            if !link.up {
                tracing::info!(node = %cluster.node(), %peer, failed_dials = link.dial_failures, "cluster link ready");
            }
            link.up = true;
            link.dial_failures = 0;
            link.warned_at = None;
        }
        LinkEvent::Down { peer, reason } => {
            state.strangers.remove(&peer);
            let Some(link) = state.links.get_mut(&peer) else {
                return;
            };
            link.up = false;
            if let Some(change) = state.detector.link_closed(&peer, reason) {
                cluster.apply(change);
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
    if link.up {
        return;
    }
    link.dial_pending = true;
    link.dialled_at = Some(Instant::now());
    let dialling = state.transport.dial(peer, &link.address);
    let (myself, peer) = (myself.clone(), peer.to_owned());
    tokio::spawn(async move {
        let result = dialling.await;
        let _ = myself.cast(MembershipMsg::Dialed { peer, result });
    });
}

fn dialed(
    myself: &ActorRef<MembershipMsg>,
    state: &mut MembershipState,
    peer: &str,
    result: Result<(), String>,
) {
    let cluster = state.cluster.clone();
    let Some(link) = state.links.get_mut(peer) else {
        return;
    };
    link.dial_pending = false;
    if let Err(reason) = result {
        link.dial_failures += 1;
        // Time-based, not every n-th failure: the backoff makes failures rarer the longer they
        // last, and a person reading the log wants the latest reason at a steady pace.
        let now = Instant::now();
        if link
            .warned_at
            .is_none_or(|at| now.saturating_duration_since(at) >= DIAL_WARN_EVERY)
        {
            link.warned_at = Some(now);
            tracing::warn!(node = %cluster.node(), %peer, failures = link.dial_failures, %reason, "cannot reach cluster member; retrying");
        }
        cluster.explain(peer, format!("cannot reach it: {reason}"));
        schedule_dial(myself, peer, link);
    }
}
