//! The cluster: the members a node knows from its config, whether each is up, which one owns an
//! aggregate, and calls to handlers on other nodes.
//!
//! - [`transport`]: the seam between the cluster and what carries its messages: ractor_cluster
//!   links over TCP or mutual TLS behind the hardened cluster port, or an in-memory network
//!   for tests;
//! - `inbound`: what other nodes' messages run here: the registered [`Handler`]s, and heartbeat
//!   answers;
//! - `membership`: dialling the peers, heartbeats, and the safety checks: a peer placed
//!   differently is refused, and a node whose peers saw more of its log than its store holds
//!   stops serving its partitions; `detector`: which peers are up (a pure state machine on
//!   tokio's clock: a stopped or cut-off peer never closes its link, so only silence shows it);
//! - [`identity`]: which node and cluster a data directory belongs to;
//! - [`wire`]: the call envelope and its errors; `seen`: how far each peer's log was seen.
//!
//! Without replication ownership is static ([`crate::placement`]): when an owner is down its
//! partitions are unavailable (a call fails at once) and nothing is written for them anywhere
//! else. With replication a partition's operations go to its group's leader, as the node's
//! [`Leadership`] knows it.

mod detector;
pub mod identity;
mod inbound;
mod membership;
mod seen;
pub mod transport;
pub mod wire;

pub use inbound::Handler;
pub use membership::{MemberStatus, MemberView};
pub use transport::{CallFailure, Channel, Inbound, LinkEvent, Transport};

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use dashmap::DashMap;
use ractor::ActorRef;

use crate::codec;
use crate::config::{ClusterConfig, Member};
use crate::placement::Placement;
use crate::resilience::{BreakerSettings, Breakers};
use crate::store::EventStore;
use inbound::ClusterInbound;
use membership::MembershipMsg;
use seen::SeenLogEnds;
use wire::{CallError, Request, Response};

/// How long a caller is told to wait before retrying a call to an owner that is down.
pub const RETRY_AFTER_MS: u64 = 1_000;

/// Where an aggregate's operations go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This node owns it.
    Local,
    /// This member owns it, and is up.
    Remote(String),
    /// Its owner cannot serve it now: the caller answers "unavailable, retry after" at once.
    Unavailable { owner: String, reason: String },
}

/// The members a node knows of, and where partitions go among them.
#[derive(Debug)]
pub struct Roster {
    /// Every member, this node included, sorted by name once the metadata gave the list.
    pub members: Vec<Member>,
    /// Members being drained: they keep serving while their replicas move away, and are
    /// proposed for nothing.
    pub draining: Vec<String>,
    pub placement: Arc<Placement>,
}

/// Who leads each replicated partition, as this node knows it (its partition groups).
pub trait Leadership: Send + Sync {
    /// The member leading `partition`, if this node knows one.
    fn leader(&self, partition: u32) -> Option<String>;

    /// `member` was just seen down (its link closed, or it fell silent): the groups it led
    /// may elect a new leader without waiting for their own timers.
    fn member_down(&self, member: &str);
}

/// Whether a node serves its own partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ServingState {
    /// Just started: waiting for a peer placed the same way to say how far it saw this node's
    /// log, so that a node restarted on an emptied disk never serves (or writes) a moment
    /// before it is told, and a node whose member list no peer shares never serves at all.
    /// No grace period: a node alone of its cluster waits for a peer, however long.
    Checking,
    Serving,
    /// A peer saw more of this node's log than its store holds.
    Stopped(String),
}

/// The handler every node has that answers what it is sent: a call through the whole path
/// (envelope, link, gateway, handler task) that does no work, for link checks and benchmarks.
pub const ECHO: &str = "echo";

struct Echo;

impl Handler for Echo {
    fn handle(
        &self,
        operation: Vec<u8>,
    ) -> futures::future::BoxFuture<'static, Result<Vec<u8>, String>> {
        Box::pin(std::future::ready(Ok(operation)))
    }
}

/// A node's view of its cluster, and its calls to other members. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.inner.node)
            .finish()
    }
}

struct Inner {
    node: String,
    /// The members as this node knows them now, and the placement over them: the config's
    /// list, until a replicated cluster's metadata says otherwise (members joined or left).
    roster: RwLock<Arc<Roster>>,
    /// What every call and heartbeat carries to say which cluster it is of: the placement
    /// fingerprint, or a replicated cluster's id (the fingerprint it formed with).
    fingerprint: AtomicU64,
    config: ClusterConfig,
    store: EventStore,
    handlers: DashMap<String, Arc<dyn Handler>>,
    /// Per peer: notified when it is seen down, so that calls in flight to it end at once.
    departures: DashMap<String, Arc<tokio::sync::Notify>>,
    /// Each peer's status, written by the membership actor, read on every routed call.
    members: RwLock<BTreeMap<String, MemberView>>,
    /// How this node reaches the others.
    transport: Arc<dyn Transport>,
    /// The membership actor, once started.
    membership: Mutex<Option<ActorRef<MembershipMsg>>>,
    /// Whether this node serves its partitions: not before a peer has confirmed its store is
    /// not behind what the peer saw, and never again once one said it is.
    serving: RwLock<ServingState>,
    seen: Mutex<SeenLogEnds>,
    /// One breaker per peer: calls that keep failing stop reaching it for a while.
    breakers: Breakers,
    /// With replication: who leads each partition (set once the groups run).
    leadership: std::sync::OnceLock<Arc<dyn Leadership>>,
}

impl Cluster {
    /// The cluster of `config` as node `node` sees it, reached through `transport`, with
    /// nothing started yet: every peer is joining until its heartbeats say otherwise.
    pub fn new(
        node: &str,
        config: &ClusterConfig,
        store: EventStore,
        data_dir: &Path,
        transport: Arc<dyn Transport>,
    ) -> Self {
        let placement = Placement::new(config);
        let members = config
            .members
            .iter()
            .filter(|member| member.name != node)
            .map(|member| (member.name.clone(), MemberView::joining(member, &placement)))
            .collect();
        let roster = Roster {
            members: config.members.clone(),
            draining: Vec::new(),
            placement: Arc::new(placement.clone()),
        };
        let handlers: DashMap<String, Arc<dyn Handler>> = DashMap::new();
        handlers.insert(ECHO.to_owned(), Arc::new(Echo));
        Self {
            inner: Arc::new(Inner {
                node: node.to_owned(),
                fingerprint: AtomicU64::new(placement.fingerprint()),
                roster: RwLock::new(Arc::new(roster)),
                config: config.clone(),
                store,
                handlers,
                departures: DashMap::new(),
                members: RwLock::new(members),
                transport,
                membership: Mutex::new(None),
                serving: RwLock::new(ServingState::Checking),
                seen: Mutex::new(SeenLogEnds::load(data_dir)),
                breakers: Breakers::new(BreakerSettings {
                    failure_threshold: 5,
                    reset_delay: Duration::from_secs(1),
                }),
                leadership: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Starts the transport (answering other nodes with this node's handlers) and the
    /// membership actor (which dials the peers and sends heartbeats). Fails if the transport
    /// cannot start: the cluster address cannot be bound, the TLS files cannot be used.
    pub async fn start(&self) -> Result<(), String> {
        let (events, queue) = tokio::sync::mpsc::unbounded_channel();
        self.inner
            .transport
            .start(Arc::new(ClusterInbound(self.clone())), events)
            .await?;
        let membership =
            membership::start(self.clone(), self.inner.transport.clone(), queue).await?;
        *self
            .inner
            .membership
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(membership);
        Ok(())
    }

    /// Stops the membership actor and the transport: no more calls in or out.
    pub fn stop(&self) {
        if let Some(membership) = self
            .inner
            .membership
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            membership.kill();
        }
        self.inner.transport.stop();
    }

    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// Every member's name (this node's too), in the roster's order.
    pub fn member_names(&self) -> Vec<String> {
        self.roster()
            .members
            .iter()
            .map(|member| member.name.clone())
            .collect()
    }

    /// What the roster says of `member`.
    pub fn member(&self, name: &str) -> Option<Member> {
        self.roster()
            .members
            .iter()
            .find(|member| member.name == name)
            .cloned()
    }

    /// The members this node's config lists (the founders of a replicated cluster, or for a
    /// node that joined one, itself and the members it contacts).
    pub fn configured_members(&self) -> Vec<Member> {
        self.inner.config.members.clone()
    }

    /// Where partitions go, over the members as this node knows them now (draining members
    /// left out).
    pub fn placement(&self) -> Arc<Placement> {
        self.roster().placement.clone()
    }

    /// The members as this node knows them now.
    pub fn roster(&self) -> Arc<Roster> {
        self.inner
            .roster
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Takes in a new member list (a replicated cluster's metadata changed): placement is
    /// made over the members not `draining`, links are opened to new members and closed to
    /// members no longer listed. Returns whether anything changed.
    pub fn set_roster(&self, mut members: Vec<Member>, draining: Vec<String>) -> bool {
        let services = self
            .inner
            .config
            .members
            .iter()
            .find(|member| member.name == self.inner.node)
            .map(|member| member.services.clone())
            .unwrap_or_default();
        for member in &mut members {
            if member.services.is_empty() {
                member.services = services.clone();
            }
        }
        members.sort_by(|a, b| a.name.cmp(&b.name));
        let current = self.roster();
        let same_members = current.members.len() == members.len()
            && current
                .members
                .iter()
                .zip(&members)
                .all(|(a, b)| a.name == b.name && a.address == b.address && a.edge == b.edge);
        if same_members && current.draining == draining {
            return false;
        }
        let serving: Vec<Member> = members
            .iter()
            .filter(|member| !draining.contains(&member.name))
            .cloned()
            .collect();
        let mut placement = Placement::of(self.inner.config.partitions, &serving);
        if self.inner.config.replicated {
            placement = placement.replicated(self.inner.config.replication_factor);
        }
        tracing::info!(
            node = %self.inner.node,
            members = ?members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ?draining,
            "the cluster's members changed"
        );
        {
            let mut views = self
                .inner
                .members
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            views.retain(|name, _| members.iter().any(|member| member.name == *name));
            for member in members.iter().filter(|m| m.name != self.inner.node) {
                views
                    .entry(member.name.clone())
                    .or_insert_with(|| MemberView::joining(member, &placement));
            }
        }
        *self
            .inner
            .roster
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(Roster {
            members: members.clone(),
            draining,
            placement: Arc::new(placement),
        });
        if let Some(membership) = self
            .inner
            .membership
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
        {
            let _ = membership.cast(MembershipMsg::Roster);
        }
        true
    }

    /// The id every call and heartbeat of this node carries (see [`Self::adopt_cluster_id`]).
    pub fn cluster_id(&self) -> u64 {
        self.inner.fingerprint.load(Ordering::Acquire)
    }

    /// From now on this node speaks as a member of replicated cluster `id` (its data
    /// directory's, or the one it was just admitted to), whatever its config's member list.
    pub fn adopt_cluster_id(&self, id: u64) {
        self.inner.fingerprint.store(id, Ordering::Release);
    }

    fn config(&self) -> &ClusterConfig {
        &self.inner.config
    }

    /// The largest call a peer takes (`cluster.max_frame_bytes`, less room for the envelope):
    /// what must go in parts when it is larger (a partition's snapshot).
    pub fn max_call_bytes(&self) -> u64 {
        self.inner
            .config
            .max_frame_bytes
            .saturating_sub(wire::FRAME_ENVELOPE_BYTES)
    }

    /// The largest operation a call to handler `target` may carry: [`Self::max_call_bytes`]
    /// less what the call wraps it with (this node's name, the target's, a trace id).
    pub fn max_operation_bytes(&self, target: &str) -> u64 {
        const TRACE_ID_AND_LENGTHS: u64 = 128;
        self.max_call_bytes()
            .saturating_sub(self.inner.node.len() as u64 + target.len() as u64)
            .saturating_sub(TRACE_ID_AND_LENGTHS)
    }

    /// Every member but this node, as the roster lists them now.
    fn peers(&self) -> Vec<Member> {
        self.roster()
            .members
            .iter()
            .filter(|member| member.name != self.inner.node)
            .cloned()
            .collect()
    }

    /// Every member's name but this node's.
    pub fn peer_names(&self) -> Vec<String> {
        self.peers().into_iter().map(|member| member.name).collect()
    }

    /// Registers the handler other nodes reach as `target` (an aggregate or saga kind, a read
    /// model).
    pub fn register(&self, target: impl Into<String>, handler: Arc<dyn Handler>) {
        let target = target.into();
        if self
            .inner
            .handlers
            .insert(target.clone(), handler)
            .is_some()
        {
            // Two handles of one kind, or a kind named like another target: a build bug.
            tracing::warn!(node = %self.inner.node, %target, "a cluster handler was registered twice; the last one answers");
        }
    }

    /// Tells the cluster who leads the replicated partitions (once; later calls are ignored).
    pub fn set_leadership(&self, leadership: Arc<dyn Leadership>) {
        let _ = self.inner.leadership.set(leadership);
    }

    /// Where the aggregate whose stream is `stream`, in `service`, is served: its owner, or
    /// with replication its partition's leader.
    pub fn route(&self, service: &str, stream: &str) -> Route {
        let placement = self.placement();
        if placement.is_replicated() {
            let partition = placement.partition(stream);
            let leader = self
                .inner
                .leadership
                .get()
                .and_then(|leadership| leadership.leader(partition));
            return match leader {
                Some(leader) => self.route_to(&leader),
                None => Route::Unavailable {
                    owner: String::new(),
                    reason: format!(
                        "partition {partition} has no leader this node knows of (an election may be under way)"
                    ),
                },
            };
        }
        let Some(owner) = placement.owner_of(service, stream) else {
            return Route::Unavailable {
                owner: String::new(),
                reason: format!("no member hosts the {service} service"),
            };
        };
        self.route_to(owner)
    }

    /// Whether calls for data `member` owns can go to it now.
    pub fn route_to(&self, member: &str) -> Route {
        if member == self.inner.node {
            return match self.serving() {
                Ok(()) => Route::Local,
                Err(reason) => Route::Unavailable {
                    owner: member.to_owned(),
                    reason,
                },
            };
        }
        let status = self
            .read_members()
            .get(member)
            .map(|view| (view.status, view.reason.clone()));
        match status {
            Some((MemberStatus::Up, _)) => Route::Remote(member.to_owned()),
            Some((status, reason)) => Route::Unavailable {
                owner: member.to_owned(),
                reason: reason.unwrap_or_else(|| format!("node {member} is {}", status.as_str())),
            },
            None => Route::Unavailable {
                owner: member.to_owned(),
                reason: format!("node {member} is not a member"),
            },
        }
    }

    /// The members hosting `service` that are up (this node included, when it serves), and
    /// those that are not, with why.
    pub fn hosts_of(&self, service: &str) -> (Vec<String>, Vec<(String, String)>) {
        let (mut up, mut down) = (Vec::new(), Vec::new());
        for member in &self.roster().members {
            if !member.services.iter().any(|s| s == service) {
                continue;
            }
            match self.route_to(&member.name) {
                Route::Local | Route::Remote(_) => up.push(member.name.clone()),
                Route::Unavailable { reason, .. } => down.push((member.name.clone(), reason)),
            }
        }
        (up, down)
    }

    /// Calls handler `target` on `member` with `operation`, waiting at most the configured
    /// call timeout. Fails at once when the member is down or its breaker is open.
    pub async fn call(
        &self,
        member: &str,
        target: &str,
        operation: Vec<u8>,
    ) -> Result<Vec<u8>, CallError> {
        self.call_with(member, target, operation, self.config().call_timeout, true)
            .await
    }

    /// A call that the member's breaker neither stops nor counts, waiting at most `timeout`:
    /// for reports about the member (the operations page), which must not open or close the
    /// breaker that commands and sagas rely on.
    pub async fn call_uncounted(
        &self,
        member: &str,
        target: &str,
        operation: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, CallError> {
        self.call_with(member, target, operation, timeout, false)
            .await
    }

    async fn call_with(
        &self,
        member: &str,
        target: &str,
        operation: Vec<u8>,
        timeout: Duration,
        counted: bool,
    ) -> Result<Vec<u8>, CallError> {
        let unreachable = |reason: String| CallError::Unreachable {
            node: member.to_owned(),
            reason,
        };
        // Registered before the member's status is read, so that a "down" from then on ends
        // the wait (a Notified hears notify_waiters from its creation).
        let departure = self.departure(member);
        let went_down = departure.notified();
        if let Route::Unavailable { reason, .. } = self.route_to(member) {
            return Err(unreachable(reason));
        }
        if counted && !self.inner.breakers.with(member, |breaker| breaker.allow()) {
            return Err(unreachable(format!(
                "calls to node {member} keep failing; retrying shortly"
            )));
        }
        let request = Request {
            from: self.inner.node.clone(),
            placement: self.cluster_id(),
            trace_id: crate::trace::current().map(|id| id.to_string()),
            target: target.to_owned(),
            operation,
        };
        let bytes = codec::encode(&request).map_err(|e| CallError::Undecodable(e.to_string()))?;
        let limit = self
            .inner
            .config
            .max_frame_bytes
            .saturating_sub(wire::FRAME_ENVELOPE_BYTES);
        if bytes.len() as u64 > limit {
            return Err(CallError::TooLarge {
                node: member.to_owned(),
                bytes: bytes.len() as u64,
                limit,
            });
        }
        let answered = tokio::select! {
            answered = self.inner.transport.call(member, Channel::Call, bytes, timeout) => answered,
            // Seen down with the call in flight: answer now, not at the call timeout. It may
            // have been applied, as with a link that closes.
            () = went_down => Err(CallFailure::Closed),
        };
        let outcome = match answered {
            Ok(bytes) => codec::decode::<Response>(&bytes)
                .map_err(|e| CallError::Undecodable(format!("the answer from {member}: {e}")))
                .and_then(|response| response),
            Err(CallFailure::TimedOut(after)) => Err(CallError::TimedOut {
                node: member.to_owned(),
                after_ms: u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
            }),
            Err(CallFailure::NotLinked) => Err(unreachable("its link is not up".into())),
            Err(CallFailure::Closed) => Err(CallError::Interrupted {
                node: member.to_owned(),
            }),
        };
        let worked = !matches!(
            outcome,
            Err(CallError::TimedOut { .. }
                | CallError::Unreachable { .. }
                | CallError::Interrupted { .. })
        );
        if counted {
            self.inner
                .breakers
                .with(member, |breaker| breaker.record(worked));
        }
        outcome
    }

    /// A call from a node not admitted yet (it has the cookie, not the cluster's id) to
    /// handler `target` on `peer` at `address`, dialling it first when no link is up: only
    /// handlers open to newcomers answer it.
    pub async fn call_as_newcomer(
        &self,
        peer: &str,
        address: &str,
        target: &str,
        operation: Vec<u8>,
    ) -> Result<Vec<u8>, String> {
        let request = Request {
            from: self.inner.node.clone(),
            placement: self.cluster_id(),
            trace_id: None,
            target: target.to_owned(),
            operation,
        };
        let bytes = codec::encode(&request).map_err(|e| e.to_string())?;
        let timeout = self.config().call_timeout;
        let transport = &self.inner.transport;
        let mut answered = transport
            .call(peer, Channel::Call, bytes.clone(), timeout)
            .await;
        if answered == Err(CallFailure::NotLinked) {
            transport.dial(peer, address).await?;
            answered = transport.call(peer, Channel::Call, bytes, timeout).await;
        }
        let answer = answered.map_err(|failure| failure.to_string())?;
        codec::decode::<Response>(&answer)
            .map_err(|e| format!("its answer: {e}"))?
            .map_err(|e| e.to_string())
    }

    /// Writes down how far each peer's log was seen (otherwise done every 2 s), for a
    /// graceful stop.
    pub fn remember_peers(&self) {
        self.seen().flush();
    }

    /// `member` was seen down: calls in flight to it end now, and its partitions' groups hear.
    fn departed(&self, member: &str) {
        self.departure(member).notify_waiters();
        if let Some(leadership) = self.inner.leadership.get() {
            leadership.member_down(member);
        }
    }

    /// What calls in flight to `member` wait on besides their answer: it is notified when
    /// the member is seen down.
    fn departure(&self, member: &str) -> Arc<tokio::sync::Notify> {
        // Read first: every call takes this, and `entry` would lock the shard for writing.
        if let Some(notify) = self.inner.departures.get(member) {
            return notify.clone();
        }
        self.inner
            .departures
            .entry(member.to_owned())
            .or_default()
            .clone()
    }

    /// Every peer as this node sees it.
    pub fn members(&self) -> Vec<MemberView> {
        self.read_members().values().cloned().collect()
    }

    /// Whether this node serves its partitions, and why not.
    pub fn serving(&self) -> Result<(), String> {
        match &*self.read_serving() {
            ServingState::Serving => Ok(()),
            ServingState::Stopped(reason) => Err(reason.clone()),
            ServingState::Checking => Err(
                "this node is waiting for a peer with the same member list to confirm that its store is complete"
                    .into(),
            ),
        }
    }

    /// A peer placed the same way found this node's store complete: serve.
    fn confirm_serving(&self, how: &str) {
        let mut serving = self.write_serving();
        if *serving == ServingState::Checking {
            tracing::info!(node = %self.inner.node, how, "serving this node's partitions");
            *serving = ServingState::Serving;
        }
    }

    /// Stops serving this node's partitions, for good (until a restart), saying why.
    fn stop_serving(&self, reason: String) {
        let mut serving = self.write_serving();
        if !matches!(*serving, ServingState::Stopped(_)) {
            tracing::error!(node = %self.inner.node, %reason, "this node stops serving its partitions");
            *serving = ServingState::Stopped(reason);
        }
    }

    fn write_serving(&self) -> std::sync::RwLockWriteGuard<'_, ServingState> {
        self.inner
            .serving
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn read_members(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, MemberView>> {
        self.inner
            .members
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn read_serving(&self) -> std::sync::RwLockReadGuard<'_, ServingState> {
        self.inner
            .serving
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, SeenLogEnds> {
        self.inner
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
