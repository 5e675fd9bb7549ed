//! The hosts of one aggregate kind: one [`PartitionHost`] per partition, all under one
//! supervisor, and the way from an aggregate id to the running incarnation of its host.

use std::sync::Arc;
use std::time::Duration;

use ractor::{ActorCell, ActorRef, SpawnErr};

use super::host::{HostArgs, HostStats, KindCounters, PartitionHost};
use super::messages::HostMsg;
use super::view::StateView;
use super::{Aggregate, EntitySettings};
use crate::replication::Journal;
use crate::store::EventStore;
use crate::supervision::{
    Backoff, ChildSpec, Current, Intensity, Restart, Strategy, Supervisor, SupervisorSpec,
};

/// A partition host that failed is started again almost at once: until it is, its partition
/// answers "unavailable", and the store holds everything it needs.
const RESTART_BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(1),
    max: Duration::from_secs(1),
};

/// One aggregate kind's partition hosts, as its handle sees them. Cheap to clone.
pub(crate) struct Hosts<A: Aggregate> {
    /// The supervisor's name; its children are `"{name}/{partition}"`.
    pub name: String,
    store: EventStore,
    /// Where the hosts' commands write.
    journal: Journal,
    /// The running incarnation of each partition's host, by partition.
    current: Arc<[Current<HostMsg<A>>]>,
    view: StateView<A>,
    counters: Arc<KindCounters>,
}

impl<A: Aggregate> Clone for Hosts<A> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            store: self.store.clone(),
            journal: self.journal.clone(),
            current: self.current.clone(),
            view: self.view.clone(),
            counters: self.counters.clone(),
        }
    }
}

impl<A: Aggregate> Hosts<A> {
    /// The hosts of `partitions` partitions (none running yet), named `name`.
    pub(crate) fn new(name: String, store: EventStore, journal: Journal, partitions: u32) -> Self {
        let view = StateView::new(partitions);
        // What this node kept of a partition while another led it, or before another came to
        // lead it, may be behind: it is loaded again on next use.
        let forgetting = view.clone();
        journal.on_leadership(Arc::new(move |event| {
            if event.partition() < forgetting.partitions() {
                forgetting.forget_partition(event.partition());
            }
        }));
        Self {
            name,
            store,
            journal,
            current: (0..view.partitions()).map(|_| Current::default()).collect(),
            view,
            counters: Arc::default(),
        }
    }

    pub(crate) fn view(&self) -> &StateView<A> {
        &self.view
    }

    /// The running host of aggregate `id`'s partition, if it has started.
    pub(crate) fn host_of(&self, id: &str) -> Option<ActorRef<HostMsg<A>>> {
        self.current[self.view.partition_of(id) as usize].get()
    }

    pub(crate) fn stats(&self) -> HostStats {
        self.counters.stats(self.view.len())
    }

    /// The supervisor of the kind's partition hosts: one for one, so that one partition's
    /// restart leaves the others serving; more restarts than `intensity` allows fail it.
    pub(crate) fn supervisor(
        &self,
        settings: &EntitySettings,
        intensity: Intensity,
    ) -> SupervisorSpec {
        let children = (0..self.view.partitions())
            .map(|partition| {
                let (hosts, settings) = (self.clone(), settings.clone());
                ChildSpec::published(
                    format!("{}/{partition}", self.name),
                    Restart::Permanent,
                    self.current[partition as usize].clone(),
                    move || {
                        let args = HostArgs {
                            store: hosts.store.clone(),
                            journal: hosts.journal.clone(),
                            view: hosts.view.clone(),
                            partition,
                            settings: settings.clone(),
                            counters: hosts.counters.clone(),
                        };
                        (PartitionHost::<A>::default(), args)
                    },
                )
            })
            .collect();
        SupervisorSpec {
            name: self.name.clone(),
            strategy: Strategy::OneForOne,
            intensity,
            backoff: RESTART_BACKOFF,
            children,
        }
    }

    /// Starts the kind's hosts under their supervisor, linked to `parent` when given.
    pub(crate) async fn start(
        &self,
        settings: &EntitySettings,
        intensity: Intensity,
        parent: Option<ActorCell>,
    ) -> Result<(), SpawnErr> {
        Supervisor::start(self.supervisor(settings, intensity), parent).await?;
        Ok(())
    }
}
