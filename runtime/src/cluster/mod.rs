//! The cluster: the members a node knows from its config, whether each is up, which one owns an
//! aggregate, and calls to handlers on other nodes.
//!
//! - [`transport`]: ractor_cluster's `NodeServer` for the sessions between members, and
//!   dialling them (TCP or mutual TLS, then the link handshake);
//! - [`port`]: the cluster port, where a connection gets nothing until it proves the cookie
//!   ([`handshake`]: deadline, caps, eviction, closed on the first wrong byte); [`link`]: a
//!   connection that did, as ractor_cluster takes it;
//! - [`gateway`]: the one actor per node that other nodes call (a process group per node), and
//!   the [`Handler`]s it dispatches to;
//! - [`membership`]: heartbeats with a timeout (a stopped or cut-off peer never closes its TCP
//!   link, so ractor_cluster alone would not notice), member up/down, and the safety checks:
//!   a peer placed differently is refused, and a node whose peers saw more of its log than its
//!   store holds stops serving its partitions;
//! - [`identity`]: which node and cluster a data directory belongs to;
//! - `wire`: the call envelope and its errors; `seen`: how far each peer's log was seen;
//!   `tls`: mutual TLS for links.
//!
//! Ownership is static ([`crate::placement`]): when an owner is down its partitions are
//! unavailable (a call fails at once) and nothing is written for them anywhere else.

mod gateway;
mod handshake;
pub mod identity;
mod link;
mod membership;
mod port;
mod seen;
mod tls;
mod transport;
pub mod wire;

pub use gateway::Handler;
pub use membership::{MemberStatus, MemberView};

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use dashmap::DashMap;
use ractor::ActorRef;
use ractor::rpc::CallResult;

use crate::codec;
use crate::config::{ClusterConfig, Member};
use crate::placement::Placement;
use crate::resilience::{BreakerSettings, Breakers};
use crate::store::EventStore;
use gateway::GatewayMsg;
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
    placement: Placement,
    fingerprint: u64,
    config: ClusterConfig,
    store: EventStore,
    handlers: DashMap<String, Arc<dyn Handler>>,
    /// Per peer: notified when it is seen down, so that calls in flight to it end at once.
    departures: DashMap<String, Arc<tokio::sync::Notify>>,
    /// Each peer's status, written by the membership actor, read on every routed call.
    members: RwLock<BTreeMap<String, MemberView>>,
    /// Each peer's gateway, found in its process group once the link is up.
    gateways: DashMap<String, ActorRef<GatewayMsg>>,
    /// Whether this node serves its partitions: not before a peer has confirmed its store is
    /// not behind what the peer saw, and never again once one said it is.
    serving: RwLock<ServingState>,
    seen: Mutex<SeenLogEnds>,
    /// One breaker per peer: calls that keep failing stop reaching it for a while.
    breakers: Breakers,
}

impl Cluster {
    /// The cluster of `config` as node `node` sees it, with nothing started yet: every peer
    /// is down until its heartbeats say otherwise.
    pub fn new(node: &str, config: &ClusterConfig, store: EventStore, data_dir: &Path) -> Self {
        let placement = Placement::new(config);
        let members = config
            .members
            .iter()
            .filter(|member| member.name != node)
            .map(|member| (member.name.clone(), MemberView::joining(member, &placement)))
            .collect();
        let handlers: DashMap<String, Arc<dyn Handler>> = DashMap::new();
        handlers.insert(ECHO.to_owned(), Arc::new(Echo));
        Self {
            inner: Arc::new(Inner {
                node: node.to_owned(),
                fingerprint: placement.fingerprint(),
                placement,
                config: config.clone(),
                store,
                handlers,
                departures: DashMap::new(),
                members: RwLock::new(members),
                gateways: DashMap::new(),
                serving: RwLock::new(ServingState::Checking),
                seen: Mutex::new(SeenLogEnds::load(data_dir)),
                breakers: Breakers::new(BreakerSettings {
                    failure_threshold: 5,
                    reset_delay: Duration::from_secs(1),
                }),
            }),
        }
    }

    /// Starts the transport, this node's gateway and the membership actor (which dials the
    /// peers and sends heartbeats). Fails if the cluster address cannot be bound or the TLS
    /// files cannot be used.
    pub async fn start(&self) -> Result<(), String> {
        let transport = transport::start(&self.inner.node, &self.inner.config).await?;
        gateway::start(self.clone())
            .await
            .map_err(|e| format!("the cluster gateway did not start: {e}"))?;
        membership::start(self.clone(), transport).await
    }

    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// Every member's name (this node's too), in the config's order.
    pub fn member_names(&self) -> Vec<String> {
        self.inner
            .config
            .members
            .iter()
            .map(|member| member.name.clone())
            .collect()
    }

    /// What the config says of `member`.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.inner
            .config
            .members
            .iter()
            .find(|member| member.name == name)
    }

    pub fn placement(&self) -> &Placement {
        &self.inner.placement
    }

    fn config(&self) -> &ClusterConfig {
        &self.inner.config
    }

    fn peers(&self) -> impl Iterator<Item = &Member> {
        self.inner
            .config
            .members
            .iter()
            .filter(|member| member.name != self.inner.node)
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

    /// Where the aggregate whose stream is `stream`, in `service`, is served.
    pub fn route(&self, service: &str, stream: &str) -> Route {
        let Some(owner) = self.inner.placement.owner_of(service, stream) else {
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
        for member in &self.inner.config.members {
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
        let gateway = self
            .gateway_of(member)
            .ok_or_else(|| unreachable("its link is not up yet".into()))?;
        let request = Request {
            from: self.inner.node.clone(),
            placement: self.inner.fingerprint,
            trace_id: crate::trace::current().map(|id| id.to_string()),
            target: target.to_owned(),
            operation,
        };
        let bytes = codec::encode(&request).map_err(|e| CallError::Undecodable(e.to_string()))?;
        let answered = tokio::select! {
            answered = gateway.call(|reply| GatewayMsg::Call(bytes, reply), Some(timeout)) => answered,
            // Seen down with the call in flight: answer now, not at the call timeout. It may
            // have been applied, as with a link that closes.
            () = went_down => Ok(CallResult::SenderError),
        };
        let outcome = match answered {
            Ok(CallResult::Success(bytes)) => codec::decode::<Response>(&bytes)
                .map_err(|e| CallError::Undecodable(format!("the answer from {member}: {e}")))
                .and_then(|response| response),
            Ok(CallResult::Timeout) => Err(CallError::TimedOut {
                node: member.to_owned(),
                after_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            }),
            // The message never left: the remote actor behind this gateway is gone.
            Err(_) => {
                self.forget_gateway(member, &gateway);
                Err(unreachable("its link closed".into()))
            }
            // Sent, and the link closed before the answer: the next heartbeat finds the new one.
            Ok(CallResult::SenderError) => {
                self.forget_gateway(member, &gateway);
                Err(CallError::Interrupted {
                    node: member.to_owned(),
                })
            }
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

    /// Writes down how far each peer's log was seen (otherwise done every 2 s), for a
    /// graceful stop.
    pub fn remember_peers(&self) {
        self.seen().flush();
    }

    /// `peer`'s gateway: the one known, or the one its process group now holds (a new link's).
    pub(crate) fn gateway_of(&self, peer: &str) -> Option<ActorRef<GatewayMsg>> {
        if let Some(gateway) = self.inner.gateways.get(peer) {
            return Some(gateway.clone());
        }
        let found: ActorRef<GatewayMsg> = ractor::pg::get_members(&gateway::group(peer))
            .into_iter()
            .find(|cell| !cell.get_id().is_local())?
            .into();
        self.inner.gateways.insert(peer.to_owned(), found.clone());
        Some(found)
    }

    /// Forgets `gateway` as `peer`'s, unless another (a new link's) has replaced it already.
    fn forget_gateway(&self, peer: &str, gateway: &ActorRef<GatewayMsg>) {
        self.inner
            .gateways
            .remove_if(peer, |_, known| known.get_id() == gateway.get_id());
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
