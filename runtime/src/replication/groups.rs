//! The partition groups a node runs: one openraft `Raft` per partition it replicates, all on
//! the node's one Raft log file and event store, all reached through its one `raft` handler.
//! A node alone runs every partition as a group of one; a member of a replicated cluster
//! runs the partitions its placement proposes it for, set up the first time by `forming`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;

use openraft::rt::WatchReceiver;

use super::directory::Directory;
use super::leadership::{self, LeadershipListener, Listeners};
use super::log_store::{GroupLog, Incarnation, RaftLogs};
use super::metadata::METADATA_GROUP;
use super::network::SnapshotParts;
use super::network::{GroupNetworkFactory, RAFT_TARGET, RaftHandler};
use super::rollback::{Verdict, Witness};
use super::snapshot::{PartitionLayout, PartitionShape};
use super::state_machine::PartitionMachine;
use super::types::{PartitionId, RaftTypes, ReplicaId};
use crate::cluster::Cluster;
use crate::planted::{self, Bug};
use crate::store::{EventStore, StoreError};

/// A partition group's Raft on this node.
pub type PartitionRaft = openraft::Raft<RaftTypes, PartitionMachine>;

/// The timing every group runs with.
#[derive(Debug, Clone)]
pub struct RaftSettings {
    /// How often a leader tells its followers it is alive. Also how long it waits for each
    /// heartbeat's answer (openraft's heartbeat worker times each out after one interval): a
    /// leader that hears no answers for `quorum_loss_probe_interval` stops sending them, and
    /// the followers elect.
    pub heartbeat_interval: Duration,
    /// A follower that hears no leader for a random time in this range stands for election.
    /// The top of the range is also the leader's lease: a leader that has not heard a
    /// majority for that long stops accepting proposals.
    pub election_timeout: (Duration, Duration),
    /// Entries applied between two snapshots of a partition's state; its log is dropped
    /// behind each (see `state_machine`).
    pub snapshot_every: u64,
    /// Partitions that move at once across the cluster (`move_permits`), and so at most a
    /// node's own moves at once (`reconcile`).
    pub max_moves: usize,
}

/// Entries applied between two snapshots of a partition, unless configured.
pub const SNAPSHOT_EVERY: u64 = 10_000;

impl Default for RaftSettings {
    fn default() -> Self {
        Self {
            // 250 ms, not openraft's usual 100: with 100 ms, busy nodes (three debug builds
            // on two cores, 65 groups each) answered heartbeats too late to count, leaders
            // heard none for two seconds, paused them and the followers elected, over and
            // over (an election storm that went on with no load at all). Two to four
            // heartbeats still fall in each election timeout.
            heartbeat_interval: Duration::from_millis(250),
            election_timeout: (Duration::from_millis(500), Duration::from_millis(1000)),
            snapshot_every: SNAPSHOT_EVERY,
            max_moves: 2,
        }
    }
}

impl RaftSettings {
    /// The timing of a node alone's groups of one: no peer awaits a heartbeat and no
    /// election can be lost, so they tick rarely (an idle node's 64 groups would otherwise
    /// wake about 3,000 times a second between them).
    pub fn alone() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(1),
            election_timeout: (Duration::from_secs(3), Duration::from_secs(6)),
            snapshot_every: SNAPSHOT_EVERY,
            max_moves: 2,
        }
    }

    fn openraft_config(&self) -> Result<openraft::Config, String> {
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let (min, max) = (
            millis(self.election_timeout.0),
            millis(self.election_timeout.1),
        );
        openraft::Config {
            cluster_name: "playhouse".to_owned(),
            heartbeat_interval: millis(self.heartbeat_interval),
            election_timeout_min: min,
            election_timeout_max: max,
            // A candidate first asks whether it would win, so a replica cut off for a while
            // does not depose a healthy leader with a higher term when it comes back.
            enable_pre_vote: Some(true),
            // A leader cut off one way keeps renewing its followers' leases with heartbeats
            // they hear but it never hears answered; pausing them lets the majority elect.
            // openraft requires at least the lease plus the longest election timeout.
            quorum_loss_probe_interval: Some(2 * max),
            // A snapshot is the partition's data as the store holds it (see the state
            // machine); the log behind it is dropped, but for the last entries, which a
            // follower a little behind is sent rather than the whole snapshot.
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: (self.snapshot_every / 10).min(1_000),
            install_snapshot_timeout: 30_000,
            // A leader that restarts must win an election again before it serves. Restored
            // at once (openraft's default), it would serve reads from the point its store had
            // applied to, which may be short of what it had committed and answered before the
            // crash: applied state and the commit point are written without waiting for the
            // disk, so both can be lost, and nothing would tell it (openraft's
            // `enable_leader_restore` says the same). Found by the simulation, seed 7.
            enable_leader_restore: Some(false),
            ..openraft::Config::default()
        }
        .validate()
        .map_err(|error| format!("invalid Raft settings: {error}"))
    }
}

/// Why a group could not start.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("partition {partition}'s group cannot open its storage: {source}")]
    Storage {
        partition: PartitionId,
        #[source]
        source: StoreError,
    },
    #[error("partition {partition}'s group cannot start: {reason}")]
    Start {
        partition: PartitionId,
        reason: String,
    },
}

/// The node's partition groups. Cheap to clone.
#[derive(Clone)]
pub struct Groups {
    inner: Arc<Inner>,
}

struct Inner {
    node: String,
    /// Changes only once, before any group runs, when the directory was rolled back.
    replica: AtomicU64,
    /// Whether the Raft log file was new at this start (then no peer can know more of it).
    drawn_now: bool,
    /// Set once every group this node holds runs (in a cluster: after its peers vouched for
    /// its directory). Until then it does not say who it is (`forming::hello`).
    started: AtomicBool,
    /// Set when the node stops or crashes: no group opens after that.
    stopped: AtomicBool,
    /// `None` on a node alone.
    cluster: Option<Cluster>,
    store: EventStore,
    logs: RaftLogs,
    config: Arc<openraft::Config>,
    /// How long a leader's lease lasts (the top of the election timeout).
    lease: Duration,
    /// Partitions this node moves at once when it leads them.
    max_moves: usize,
    /// Moves under way on this node (`reconcile`), for the operations page.
    moves: super::reconcile::Moves,
    /// The move permits this node grants while it leads the metadata group.
    move_grants: super::move_permits::Grants,
    /// Each group's snapshot builds put off for want of space (`snapshot_room`).
    put_offs: DashMap<PartitionId, super::snapshot_room::PutOff>,
    /// Nodes that asked to join lately (`admission`).
    asking: super::admission::Asking,
    /// How many partitions there are, and the tables proposals write (for snapshots).
    layout: PartitionLayout,
    groups: DashMap<PartitionId, PartitionRaft>,
    opening: tokio::sync::Mutex<()>,
    listeners: Listeners,
    histories: leadership::Histories,
    serving: leadership::Serving,
    /// When each group's leader was last heard here.
    last_heard: Arc<super::silence::LastHeard>,
    /// What this node saw its peers' replicas hold (`rollback`).
    witness: Arc<Witness>,
    /// Who leads the partitions this node holds no replica of (`directory`).
    directory: Arc<Directory>,
    /// Groups whose leader no longer counts this node's replica (`drain::watch_removals`).
    removed: dashmap::DashSet<PartitionId>,
    /// Snapshot parts sent here and not installed yet (`network`).
    snapshot_parts: SnapshotParts,
    /// Set when the groups could not start in the background: the node has failed.
    failure: tokio::sync::watch::Sender<Option<String>>,
    /// The node's own tasks (each group's leadership watcher, forming), aborted when it stops.
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Groups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Groups")
            .field("node", &self.inner.node)
            .field("replica", &self.replica_id())
            .field("groups", &self.inner.groups.len())
            .finish()
    }
}

impl Groups {
    /// The groups of node `node`, whose replicas are all of its incarnation, and registers
    /// with `cluster` (on a node with peers) the handlers their messages arrive through. No
    /// group runs yet.
    pub fn new(
        node: &str,
        incarnation: Incarnation,
        cluster: Option<Cluster>,
        store: EventStore,
        logs: RaftLogs,
        settings: &RaftSettings,
        layout: PartitionLayout,
    ) -> Result<Self, String> {
        let groups = Self {
            inner: Arc::new(Inner {
                node: node.to_owned(),
                replica: AtomicU64::new(incarnation.id),
                drawn_now: incarnation.drawn_now,
                started: AtomicBool::new(false),
                stopped: AtomicBool::new(false),
                cluster: cluster.clone(),
                store,
                logs,
                config: Arc::new(settings.openraft_config()?),
                lease: settings.election_timeout.1,
                max_moves: settings.max_moves.max(1),
                moves: super::reconcile::Moves::default(),
                move_grants: super::move_permits::Grants::new(settings.max_moves),
                put_offs: DashMap::new(),
                asking: super::admission::Asking::default(),
                layout,
                groups: DashMap::new(),
                opening: tokio::sync::Mutex::new(()),
                listeners: Listeners::default(),
                histories: leadership::Histories::default(),
                serving: leadership::Serving::default(),
                last_heard: Arc::default(),
                witness: Arc::default(),
                directory: Arc::default(),
                removed: dashmap::DashSet::new(),
                snapshot_parts: SnapshotParts::default(),
                failure: tokio::sync::watch::Sender::new(None),
                tasks: std::sync::Mutex::new(Vec::new()),
            }),
        };
        if let Some(cluster) = cluster {
            cluster.register(RAFT_TARGET, Arc::new(RaftHandler(groups.clone())));
            super::forming::serve(&cluster, &groups);
            super::rollback::serve(&cluster, groups.inner.witness.clone());
            super::directory::serve(&cluster, &groups);
            let members = cluster
                .placement()
                .members()
                .into_iter()
                .map(str::to_owned)
                .collect();
            super::metadata::serve(&cluster, &groups, members);
            super::members::serve(&cluster, &groups);
            super::admission::serve(&cluster, &groups.inner.store, &groups.inner.asking);
            super::drain::serve(&cluster, &groups);
            super::backup::serve(&cluster, &groups);
            super::move_permits::serve(&cluster, &groups);
            super::format::serve(&cluster);
        }
        Ok(groups)
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// How many partitions the cluster's data is cut into.
    pub fn partitions(&self) -> u32 {
        self.inner.layout.partitions
    }

    /// The store every group here applies to.
    pub(crate) fn store(&self) -> &EventStore {
        &self.inner.store
    }

    /// The nodes that asked to join lately and are not members.
    pub fn asking(&self) -> Vec<super::admission::JoinRequest> {
        self.inner.asking.now()
    }

    /// What `name` asked to join with, if it asked lately.
    pub fn asked(&self, name: &str) -> Option<super::admission::JoinRequest> {
        self.inner.asking.get(name)
    }

    /// The moves of replicas under way on this node (in groups it leads).
    pub fn moves(&self) -> Vec<super::reconcile::MoveReport> {
        self.inner.moves.report(self)
    }

    /// The bytes `partition`'s snapshot needs beyond the reserve, if its build is put off
    /// here for want of space (`snapshot_room`).
    pub(crate) fn snapshot_put_off(&self, partition: PartitionId) -> Option<u64> {
        self.inner
            .put_offs
            .get(&partition)
            .and_then(|put_off| put_off.waiting_for())
    }

    /// The move permits this node grants while it leads the metadata group.
    pub(crate) fn move_grants(&self) -> &super::move_permits::Grants {
        &self.inner.move_grants
    }

    pub(crate) fn move_registry(&self) -> &super::reconcile::Moves {
        &self.inner.moves
    }

    /// Whether this node's replica is in `partition`'s group now (a voter or a learner).
    pub fn holds(&self, partition: PartitionId) -> bool {
        self.held(partition).is_some()
    }

    /// Whether this node's replica is a voter of `partition`'s group now (not a learner still
    /// catching up, nor a replica moved off).
    pub fn votes_in(&self, partition: PartitionId) -> bool {
        self.held(partition)
            .is_some_and(|raft| super::leadership::voters(&raft).contains_key(&self.replica_id()))
    }

    /// `partition`'s group, if this node's replica is in it now (its configuration counts
    /// it, and its leader has not been heard not to).
    pub fn held(&self, partition: PartitionId) -> Option<PartitionRaft> {
        if self.inner.removed.contains(&partition) {
            return None;
        }
        self.get(partition)
            .filter(|raft| leadership::holds(raft, self.replica_id()))
    }

    /// Notes whether `partition`'s leader counts this node's replica (`removed`: it does
    /// not).
    pub(crate) fn note_removed(&self, partition: PartitionId, removed: bool) {
        let changed = match removed {
            true => self.inner.removed.insert(partition),
            false => self.inner.removed.remove(&partition).is_some(),
        };
        if changed {
            tracing::info!(
                partition,
                removed,
                "this node's replica of a partition was moved (off, or back on)"
            );
        }
    }

    /// Takes in that `leader` led `partition` in `term` (for the partitions this node does
    /// not hold).
    pub(crate) fn learn_leader(&self, partition: PartitionId, term: u64, leader: &str) {
        self.inner.directory.learn([super::directory::KnownLeader {
            partition,
            term,
            leader: leader.to_owned(),
        }]);
    }

    /// What this node saw its peers' replicas hold (see `rollback`).
    pub(crate) fn snapshot_parts(&self) -> &SnapshotParts {
        &self.inner.snapshot_parts
    }

    pub(crate) fn witness(&self) -> &Witness {
        &self.inner.witness
    }

    /// This node's replica id (its incarnation) in every group.
    pub fn replica_id(&self) -> ReplicaId {
        self.inner.replica.load(Ordering::Acquire)
    }

    /// Whether every group this node holds runs: at once on a node alone, and in a cluster
    /// once its peers have vouched for its directory and the groups have opened.
    pub fn started(&self) -> bool {
        self.inner.started.load(Ordering::SeqCst)
    }

    /// Resolves when the groups could not start (after `start_in_cluster` returned), saying
    /// why; never otherwise.
    pub async fn failed(&self) -> String {
        let mut failure = self.inner.failure.subscribe();
        loop {
            if let Some(reason) = failure.borrow_and_update().clone() {
                return reason;
            }
            if failure.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Fails the node's groups for `reason` (what `failed` resolves with): the node stops.
    pub(crate) fn fail(&self, reason: String) {
        tracing::error!(%reason, "the partition groups cannot go on");
        self.inner.failure.send_replace(Some(reason));
    }

    /// Starts `partition`'s group on this node (its Raft recovers from the log file and the
    /// store), or returns the one already running.
    pub async fn open(&self, partition: PartitionId) -> Result<PartitionRaft, GroupError> {
        // One opening at a time: two Rafts must never recover from one group's storage.
        let _opening = self.inner.opening.lock().await;
        if let Some(raft) = self.get(partition) {
            return Ok(raft);
        }
        let storage = |source| GroupError::Storage { partition, source };
        let log = self.inner.logs.group(partition).await.map_err(storage)?;
        let shape = PartitionShape {
            partition,
            layout: self.inner.layout.clone(),
        };
        let machine = PartitionMachine::open(shape, self.inner.store.clone(), log.clone())
            .await
            .map_err(storage)?;
        self.inner.put_offs.insert(partition, machine.put_off());
        let network = GroupNetworkFactory::new(
            self.inner.cluster.clone(),
            partition,
            self.inner.witness.clone(),
        );
        let raft = PartitionRaft::new(
            self.replica_id(),
            self.inner.config.clone(),
            network,
            log,
            machine,
        )
        .await
        .map_err(|error| GroupError::Start {
            partition,
            reason: error.to_string(),
        })?;
        self.inner.groups.insert(partition, raft.clone());
        // A crash or stop that came while this group was being made has already taken the
        // others: this one must not outlive them.
        if self.inner.stopped.load(Ordering::SeqCst) {
            self.inner.groups.remove(&partition);
            tokio::spawn(async move {
                let _ = raft.shutdown().await;
            });
            return Err(GroupError::Start {
                partition,
                reason: "the node is stopping".to_owned(),
            });
        }
        let watcher = leadership::watch(
            partition,
            raft.clone(),
            self.inner.listeners.clone(),
            self.inner.histories.clone(),
            self.inner.serving.clone(),
        );
        self.keep(watcher);
        Ok(raft)
    }

    /// Stops `partition`'s group here, hands its log to `change` while nothing runs on it,
    /// and starts the group again from what the log holds then: the worst day's recovery
    /// (`recovery`), never a step of a running cluster.
    pub(crate) async fn reopen_after<T, Fut>(
        &self,
        partition: PartitionId,
        change: impl FnOnce(GroupLog) -> Fut,
    ) -> Result<T, String>
    where
        Fut: std::future::Future<Output = Result<T, String>>,
    {
        let changed = {
            // No opening meanwhile: the stopped group's storage is this call's alone.
            let _opening = self.inner.opening.lock().await;
            if let Some((_, raft)) = self.inner.groups.remove(&partition) {
                raft.shutdown()
                    .await
                    .map_err(|error| format!("stopping partition {partition}'s group: {error}"))?;
            }
            let log = self
                .inner
                .logs
                .group(partition)
                .await
                .map_err(|error| format!("reading partition {partition}'s log: {error}"))?;
            change(log).await
        };
        // Started again whether or not the change was made: a group left stopped would
        // answer nothing at all.
        self.open(partition)
            .await
            .map_err(|error| error.to_string())?;
        changed
    }

    fn keep(&self, task: tokio::task::JoinHandle<()>) {
        let mut tasks = self
            .inner
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tasks.retain(|task| !task.is_finished());
        tasks.push(task);
    }

    /// Starts, in the background, the groups `placement` proposes this node for, in
    /// `cluster`, and sets up those it is first to hold once their replicas answer (see
    /// `forming`). A node on a directory it used before first asks its peers whether it was
    /// rolled back (see `rollback`): no group runs, votes or answers until they have said.
    /// They elect leaders as their replicas come up; [`Groups::failed`] says if they cannot
    /// start.
    ///
    /// `founding` is the placement of the members the cluster formed with, for a member that
    /// formed it (`None` for one that joined later: it never sets a group up).
    pub fn start_in_cluster(&self, founding: Option<crate::placement::Placement>) {
        let cluster = self
            .inner
            .cluster
            .clone()
            .expect("groups in a cluster have its handle");
        cluster.set_leadership(Arc::new(self.clone()));
        let groups = self.clone();
        self.keep(tokio::spawn(async move {
            if let Err(reason) = groups.run_in_cluster(cluster, founding).await
                && !groups.inner.stopped.load(Ordering::SeqCst)
            {
                tracing::error!(%reason, "the partition groups cannot start");
                groups.inner.failure.send_replace(Some(reason));
            }
        }));
    }

    async fn run_in_cluster(
        &self,
        cluster: Cluster,
        founding: Option<crate::placement::Placement>,
    ) -> Result<(), String> {
        // The member list as the metadata last recorded it here (members may have joined or
        // left since the config was written).
        // (Not while it does not list this node: a node that joined and stopped before its
        // replica reached its admission holds an older list than the one it was admitted
        // with; `members::follow`.)
        if let Ok(membership) = super::metadata::Membership::read(&self.inner.store)
            && membership.roster.contains_key(&self.inner.node)
            && let Some((members, draining)) =
                membership.roster_members(&cluster.configured_members())
        {
            cluster.set_roster(members, draining);
        }
        let placement = cluster.placement();
        // Every group, whether or not this node is among its replicas now: a leader adds
        // it as a learner when a move brings a partition here, and it must be there to
        // answer.
        let partitions: Vec<PartitionId> = (0..placement.partitions())
            .chain([METADATA_GROUP])
            .collect();
        if !self.inner.drawn_now {
            self.vouch_for_the_directory(&cluster, &placement, &partitions)
                .await?;
        }
        for partition in &partitions {
            self.open(*partition).await.map_err(|e| e.to_string())?;
        }
        self.inner.started.store(true, Ordering::SeqCst);
        self.keep(tokio::spawn(super::metadata::record_own_incarnation(
            self.clone(),
            cluster.clone(),
        )));
        if let Some(founding) = founding {
            self.keep(tokio::spawn(super::forming::form(
                self.clone(),
                cluster.clone(),
                founding,
            )));
        }
        self.keep(tokio::spawn(super::members::follow(
            self.clone(),
            cluster.clone(),
            Duration::from_millis(500),
        )));
        self.keep(tokio::spawn(super::reconcile::run(
            self.clone(),
            cluster.clone(),
            self.inner.max_moves,
        )));
        self.keep(tokio::spawn(super::drain::run(
            self.clone(),
            cluster.clone(),
        )));
        self.keep(tokio::spawn(super::drain::watch_removals(
            self.clone(),
            cluster.clone(),
        )));
        self.keep(tokio::spawn(super::balance::run(
            self.clone(),
            cluster.clone(),
        )));
        self.keep(tokio::spawn(super::format::run(
            self.clone(),
            cluster.clone(),
        )));
        self.keep(tokio::spawn(super::silence::run(
            self.clone(),
            self.inner.last_heard.clone(),
            self.inner.lease,
        )));
        // With more members than the replication factor: who leads what this node lacks.
        self.keep(tokio::spawn(super::directory::run(
            self.clone(),
            self.inner.directory.clone(),
            cluster,
        )));
        Ok(())
    }

    /// Asks the peers whether this node's directory holds every vote and entry they saw of
    /// its replica; when it does not, takes a new incarnation (see `rollback`).
    async fn vouch_for_the_directory(
        &self,
        cluster: &Cluster,
        placement: &crate::placement::Placement,
        partitions: &[PartitionId],
    ) -> Result<(), String> {
        let held = self
            .inner
            .logs
            .held(partitions.to_vec())
            .await
            .map_err(|e| format!("reading the Raft log: {e}"))?;
        let peers = partitions
            .iter()
            .flat_map(|partition| placement.replicas(*partition))
            .filter(|member| *member != self.inner.node)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let replica = self.replica_id();
        match super::rollback::vouch(cluster, peers, replica, &held).await {
            Verdict::Holds { unheard } if unheard.is_empty() => {}
            Verdict::Holds { unheard } => tracing::warn!(
                ?unheard,
                "these peers did not answer whether this node's data directory was rolled back; going on with the others' word"
            ),
            Verdict::Forgot(what) => {
                let new = self
                    .inner
                    .logs
                    .replace_incarnation()
                    .await
                    .map_err(|e| format!("keeping a new incarnation in the Raft log: {e}"))?;
                self.inner.replica.store(new, Ordering::Release);
                tracing::warn!(
                    %what,
                    old = replica,
                    new,
                    "this node's data directory was rolled back (restored from an older copy): it rejoins every group as a new replica, starting from what the directory holds"
                );
            }
        }
        Ok(())
    }

    /// Tells the listeners again that this node leads `partition`, when it serves it: its
    /// data changed under them other than by their own writes (a restore), so the hosts
    /// forget what they kept and the sagas resume from what it holds.
    pub(crate) fn tell_gained_again(&self, partition: PartitionId) {
        if partition != METADATA_GROUP && self.leads(partition) {
            self.inner
                .listeners
                .tell(leadership::LeadershipEvent::Gained(partition));
        }
    }

    /// Calls `listener` whenever this node comes to lead one of its partitions or stops.
    pub fn on_leadership(&self, listener: LeadershipListener) {
        self.inner.listeners.add(listener);
    }

    /// The member leading `partition`, if known here: from this node's replica, or, for a
    /// partition it does not replicate, from what its replicas said last (`directory`).
    pub fn leader_of(&self, partition: PartitionId) -> Option<String> {
        match self.get(partition) {
            Some(_) if self.holds(partition) => self
                .get(partition)
                .and_then(|raft| leadership::leader_of(&raft)),
            _ => self.inner.directory.leader(partition),
        }
    }

    /// Notes that `partition`'s leader was heard just now, in this replica's current term.
    pub(crate) fn heard_from_leader(&self, partition: PartitionId, raft: &PartitionRaft) {
        let term = raft.metrics().borrow_watched().current_term;
        self.inner.last_heard.heard(partition, term);
    }

    /// `partition`'s voters as this node's replica knows them (replica id -> member), if it
    /// replicates the partition.
    pub fn voters_of(
        &self,
        partition: PartitionId,
    ) -> Option<std::collections::BTreeMap<ReplicaId, String>> {
        self.get(partition).map(|raft| leadership::voters(&raft))
    }

    /// Why `partition`'s group stopped here, if it runs here and has stopped (a storage
    /// failure, or openraft finding a broken invariant).
    pub fn stopped(&self, partition: PartitionId) -> Option<String> {
        let raft = self.get(partition)?;
        let metrics = raft.metrics();
        let stopped = metrics.borrow_watched().running_state.clone();
        stopped.err().map(|fatal| fatal.to_string())
    }

    /// Whether this node serves `partition` as its leader: it leads it and has applied its
    /// term's first entry (so its store holds everything committed), as last seen.
    pub fn leads(&self, partition: PartitionId) -> bool {
        self.inner.serving.contains_key(&partition)
    }

    /// Waits until a read of `partition` here is linearizable: this node leads it (a quorum
    /// acknowledged it within its lease, or does now) and has applied everything committed.
    pub async fn read_barrier(&self, partition: PartitionId) -> Result<(), StoreError> {
        let Some(raft) = self.get(partition) else {
            return Err(StoreError::NotLeader {
                partition,
                leader: None,
            });
        };
        if planted::is_planted(Bug::ReadsWithoutBarrier)
            && self.leader_of(partition).as_deref() == Some(self.inner.node.as_str())
        {
            return Ok(());
        }
        let passed = raft
            .ensure_linearizable(leadership::read_barrier())
            .await
            .map(|_| ())
            .map_err(|error| StoreError::NotLeader {
                partition,
                leader: match error {
                    openraft::error::RaftError::APIError(
                        openraft::error::LinearizableReadError::ForwardToLeader(forward),
                    ) => forward.leader_node.map(|node| node.member),
                    _ => None,
                },
            });
        passed?;
        // openraft may say this node leads (a term it won) before the leadership watcher has
        // told the hosts, which then forget what they kept from an earlier term: until then
        // what they hold may lack what another leader wrote meanwhile. Served only once the
        // watcher has told them, for this very term.
        let term = raft.metrics().borrow_watched().current_term;
        if self.inner.serving.get(&partition).map(|served| *served) != Some(term) {
            return Err(StoreError::NotLeader {
                partition,
                leader: None,
            });
        }
        Ok(())
    }

    /// Each partition's group running here as the operations page shows it, by partition
    /// (the metadata group aside: [`Groups::metadata_report`]).
    pub fn report(&self) -> Vec<super::report::PartitionReport> {
        let mut reports: Vec<_> = self
            .running()
            .into_iter()
            .filter(|(partition, _)| *partition != METADATA_GROUP && self.holds(*partition))
            .map(|(partition, raft)| self.report_of(partition, &raft))
            .collect();
        reports.sort_by_key(|report| report.partition);
        reports
    }

    /// The metadata group's replica here, as the operations page shows it.
    pub fn metadata_report(&self) -> Option<super::report::PartitionReport> {
        let raft = self.get(METADATA_GROUP)?;
        Some(self.report_of(METADATA_GROUP, &raft))
    }

    fn report_of(
        &self,
        partition: PartitionId,
        raft: &PartitionRaft,
    ) -> super::report::PartitionReport {
        let history = self
            .inner
            .histories
            .get(&partition)
            .map(|history| *history)
            .unwrap_or_default();
        super::report::of(partition, raft, history)
    }

    /// The index of the last entry this node's replica of `partition` applied.
    pub fn applied_index(&self, partition: PartitionId) -> Option<u64> {
        let raft = self.held(partition)?;
        let metrics = raft.metrics();
        openraft::rt::WatchReceiver::borrow_watched(&metrics)
            .last_applied
            .as_ref()
            .map(|log_id| log_id.index)
    }

    /// Waits, for at most `patience`, until this node's replica of `partition` has applied its
    /// log through `index`.
    pub async fn wait_applied(
        &self,
        partition: PartitionId,
        index: u64,
        patience: Duration,
    ) -> Result<(), String> {
        let raft = self
            .held(partition)
            .ok_or_else(|| format!("this node holds no replica of partition {partition}"))?;
        raft.wait(Some(patience))
            .applied_index_at_least(Some(index), "a read waits for a write")
            .await
            .map(|_| ())
            .map_err(|_| format!("partition {partition} has not applied index {index} here yet"))
    }

    /// Whether this node's groups are in a cluster (not a node alone's groups of one).
    pub(crate) fn in_cluster(&self) -> bool {
        self.inner.cluster.is_some()
    }

    /// Starts the retention cuts of the partitions this node comes to lead: processed command
    /// ids are forgotten `retention` after their events were recorded (`retention`).
    pub fn keep_commands_for(&self, retention: Duration) {
        self.keep(tokio::spawn(super::retention::run(self.clone(), retention)));
    }

    /// Every group running here, by partition.
    pub(crate) fn running(&self) -> Vec<(PartitionId, PartitionRaft)> {
        self.inner
            .groups
            .iter()
            .map(|raft| (*raft.key(), raft.value().clone()))
            .collect()
    }

    /// Starts the groups of `partitions` partitions on a node alone: each a group of one,
    /// this replica its only voter (set up the first time), leading at once. Returns once each
    /// leads, so the node takes writes from its first request on.
    pub async fn start_alone(&self, partitions: u32) -> Result<(), GroupError> {
        let me = std::collections::BTreeMap::from([(
            self.replica_id(),
            super::types::Replica {
                member: self.inner.node.clone(),
            },
        )]);
        for partition in 0..partitions {
            let raft = self.open(partition).await?;
            let failed = |reason: String| GroupError::Start { partition, reason };
            if !raft
                .is_initialized()
                .await
                .map_err(|e| failed(e.to_string()))?
            {
                raft.initialize(me.clone())
                    .await
                    .map_err(|e| failed(e.to_string()))?;
            }
            // A lone voter need not wait out an election timeout to win its own vote (after
            // a clean restart it leads already).
            if !raft.is_leader() {
                raft.trigger()
                    .elect(false)
                    .await
                    .map_err(|e| failed(e.to_string()))?;
            }
        }
        for partition in 0..partitions {
            let raft = self.get(partition).expect("opened above");
            let failed = |reason: String| GroupError::Start { partition, reason };
            let leading = raft
                .wait(Some(Duration::from_secs(30)))
                .state(openraft::ServerState::Leader, "a group of one leads")
                .await
                .map_err(|e| failed(format!("it did not come to lead itself: {e}")))?;
            // Everything its log holds is committed (it is the only voter); what a crash lost
            // of the applied state is applied again before the node serves a request, so a
            // write acknowledged before the crash is seen after it.
            raft.wait(Some(Duration::from_secs(300)))
                .applied_index_at_least(leading.last_log_index, "the log applied")
                .await
                .map_err(|e| failed(format!("its log was not applied: {e}")))?;
        }
        self.inner.started.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// `partition`'s group, if it runs here.
    pub fn get(&self, partition: PartitionId) -> Option<PartitionRaft> {
        self.inner
            .groups
            .get(&partition)
            .map(|raft| raft.value().clone())
    }

    /// `partition`'s group if it runs here as replica `replica` (the one a message is for).
    pub(crate) fn replica(
        &self,
        partition: PartitionId,
        replica: ReplicaId,
    ) -> Option<PartitionRaft> {
        (replica == self.replica_id())
            .then(|| self.get(partition))
            .flatten()
    }

    /// Every running group, no longer reachable through this value (its watchers stopped).
    fn take_all(&self) -> Vec<PartitionRaft> {
        self.inner.stopped.store(true, Ordering::SeqCst);
        for task in self
            .inner
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain(..)
        {
            task.abort();
        }
        let rafts = self
            .inner
            .groups
            .iter()
            .map(|raft| raft.value().clone())
            .collect();
        self.inner.groups.clear();
        rafts
    }

    /// Stops every group at once, as `kill -9` would: nothing more is written by them (their
    /// shutdowns run on, in the background).
    pub fn crash(&self) {
        let rafts = self.take_all();
        self.inner.logs.stop_writing();
        for raft in rafts {
            tokio::spawn(async move {
                let _ = raft.shutdown().await;
            });
        }
    }

    /// Stops every group (their logs and state machines stay as they are on disk).
    pub async fn shutdown(&self) {
        for raft in self.take_all() {
            if let Err(error) = raft.shutdown().await {
                tracing::warn!(%error, "a partition group did not stop cleanly");
            }
        }
        self.inner.logs.close().await;
    }
}

impl crate::cluster::Leadership for Groups {
    fn leader(&self, partition: u32) -> Option<String> {
        self.leader_of(partition)
    }

    /// A follower cannot vote before its leader lease runs out (openraft refuses, so that a
    /// live leader is not deposed), but it need not wait for its election timer after that:
    /// for each group `member` led, the surviving voter with the lowest replica id stands for
    /// election as soon as every lease has run out. The other survivors keep their timers, in
    /// case it cannot. So a leader killed outright (its link closes at once) is replaced about
    /// one lease after, not a lease plus an election timeout.
    fn member_down(&self, member: &str) {
        self.inner.directory.forget(member);
        let lease = self.inner.lease;
        for (partition, raft) in self.running() {
            if leadership::leader_of(&raft).as_deref() != Some(member) {
                continue;
            }
            let voters = leadership::voters(&raft);
            let first_survivor = voters
                .iter()
                .filter(|(_, m)| m.as_str() != member)
                .map(|(id, _)| *id)
                .min();
            if first_survivor != Some(self.replica_id()) {
                continue;
            }
            let member = member.to_owned();
            self.keep(tokio::spawn(async move {
                // Every follower's lease counts from the last heartbeat it heard, which came
                // before the link closed.
                tokio::time::sleep(lease + Duration::from_millis(20)).await;
                if leadership::leader_of(&raft).as_deref() == Some(member.as_str()) {
                    tracing::info!(partition, %member, "its leader went down: standing for election");
                    let _ = raft.trigger().elect(true).await;
                }
            }));
        }
    }
}
