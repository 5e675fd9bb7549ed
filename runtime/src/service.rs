//! Services: what a domain service is to a node, and what it gets to build itself.
//!
//! A service is a [`ServiceDef`] (a name and a start function) in the one list of services of
//! a build. Starting it gives a [`Service`]: its supervision group's children (aggregate hosts,
//! projections) and its routes. The [`ServiceContext`] hands out one [`Aggregates`] handle per
//! aggregate kind, and builds the kind's host from that same handle, so that the handle and the
//! host always share their state view, and any service can reach any other's aggregates
//! (orders read catalog prices) through the same handles.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::aggregate::{Aggregate, Aggregates, EntitySettings};
use crate::bus::{Bus, Projection};
use crate::cluster::Cluster;
use crate::edge::Routes;
use crate::replication::Journal;
use crate::saga::{Breakers, SagaKind, SagaSettings, Sagas};
use crate::store::EventStore;
use crate::supervision::{Backoff, ChildSpec, Intensity, Strategy, Supervisor, SupervisorSpec};

/// A service of this build: its name (as configs list it) and how to start it.
#[derive(Debug, Clone, Copy)]
pub struct ServiceDef {
    pub name: &'static str,
    pub start: fn(&ServiceContext) -> Service,
    /// Services whose events its projections read besides its own. A projection sees only its
    /// own node's log, so in a cluster every member hosting one of these must host this
    /// service too (node start checks it).
    pub reads_events_of: &'static [&'static str],
}

/// A started service: the children of its supervision group, its HTTP routes, and its
/// projections (also among the children; listed for `playhouse projections rebuild`).
pub struct Service {
    pub name: &'static str,
    pub children: Vec<ChildSpec>,
    pub routes: Routes,
    pub projections: Vec<Arc<dyn Projection>>,
    /// The aggregate kinds it hosts (`A::KIND`), for naming them by service.
    pub aggregate_kinds: Vec<&'static str>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.name)
            .field("children", &self.children)
            .field(
                "projections",
                &self
                    .projections
                    .iter()
                    .map(|p| p.name())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Service {
    /// A service named `name` with nothing in it yet: add its hosts, projections and routes.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            children: Vec::new(),
            routes: Routes::new(),
            projections: Vec::new(),
            aggregate_kinds: Vec::new(),
        }
    }

    /// Adds the host of aggregate kind `A` (serving `context.aggregates::<A>()`).
    pub fn host<A: Aggregate>(mut self, context: &ServiceContext) -> Self {
        self.children.push(context.host::<A>());
        self.aggregate_kinds.push(A::KIND);
        self
    }

    /// Adds a projection, run by its own runner in the service's group.
    pub fn projection(mut self, context: &ServiceContext, projection: Arc<dyn Projection>) -> Self {
        self.children.push(context.bus().runner(projection.clone()));
        self.projections.push(projection);
        self
    }

    /// Adds the supervisor of a saga kind (it resumes that kind's open sagas when it starts).
    pub fn saga<K: SagaKind>(mut self, sagas: &Sagas<K>) -> Self {
        self.children.push(sagas.child_spec());
        self
    }

    /// Adds routes.
    pub fn routes(mut self, routes: Routes) -> Self {
        self.routes = self.routes.merge(routes);
        self
    }

    /// The service's supervision group: a one-for-one supervisor named after the service.
    pub fn group(&self) -> ChildSpec {
        Supervisor::child_spec(SupervisorSpec {
            name: self.name.to_owned(),
            strategy: Strategy::OneForOne,
            intensity: Intensity::default(),
            backoff: Backoff::default(),
            children: self.children.clone(),
        })
    }
}

/// A partition host that panicked is restarted on its own; only a storm of panics across a
/// kind's partitions fails the kind's hosts' supervisor (and escalates to the service's).
const HOST_INTENSITY: Intensity = Intensity {
    max_restarts: 100,
    within: Duration::from_secs(10),
};

/// What services build themselves from. Cheap to clone; clones share the handles.
#[derive(Clone)]
pub struct ServiceContext {
    store: EventStore,
    settings: EntitySettings,
    bus: Bus,
    /// The circuit breakers every saga of the node shares, one per target service.
    breakers: Breakers,
    /// One handle per aggregate kind (boxed `Aggregates<A>`), made on first use.
    handles: Arc<Mutex<HashMap<TypeId, Box<dyn Any + Send + Sync>>>>,
    /// The cluster the handles route in; `None` on a node alone.
    cluster: Option<Cluster>,
    /// Partitions per aggregate kind: one host each.
    partitions: u32,
    /// Where aggregates and sagas write: the store, or their partitions' Raft groups.
    journal: Journal,
}

impl std::fmt::Debug for ServiceContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceContext")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl ServiceContext {
    pub fn new(store: EventStore, settings: EntitySettings, bus: Bus) -> Self {
        Self {
            journal: Journal::Direct(store.clone()),
            store,
            settings,
            bus,
            breakers: Breakers::default(),
            handles: Arc::default(),
            cluster: None,
            partitions: crate::config::DEFAULT_PARTITIONS,
        }
    }

    /// This context with `partitions` partitions per aggregate kind (a cluster's placement
    /// decides it there).
    pub fn with_partitions(mut self, partitions: u32) -> Self {
        self.partitions = partitions;
        self
    }

    /// This context with its aggregates and sagas writing through `journal`.
    pub fn with_journal(mut self, journal: Journal) -> Self {
        self.journal = journal;
        self
    }

    /// This context in `cluster`: its handles route to the owners of aggregates and sagas.
    pub fn in_cluster(mut self, cluster: Option<Cluster>) -> Self {
        self.cluster = cluster;
        self
    }

    /// The handle to the aggregates of kind `A` (the same one for every caller).
    pub fn aggregates<A: Aggregate>(&self) -> Aggregates<A> {
        let mut handles = self
            .handles
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        handles
            .entry(TypeId::of::<A>())
            .or_insert_with(|| {
                Box::new(Aggregates::<A>::placed(
                    host_name::<A>(),
                    self.store.clone(),
                    self.journal.clone(),
                    self.settings.call_timeout,
                    self.partitions,
                    self.cluster.clone(),
                ))
            })
            .downcast_ref::<Aggregates<A>>()
            .expect("the handle stored for a kind is of that kind")
            .clone()
    }

    /// The child spec of kind `A`'s partition hosts, serving the handle [`Self::aggregates`] gives.
    pub fn host<A: Aggregate>(&self) -> ChildSpec {
        self.aggregates::<A>()
            .child_spec(self.settings.clone(), HOST_INTENSITY)
    }

    /// The sagas of kind `K`, run by `kind`, with the node's circuit breakers. Make it once per
    /// kind (its supervisor has a registered name).
    pub fn sagas<K: SagaKind>(&self, kind: K) -> Sagas<K> {
        let settings = SagaSettings {
            breakers: self.breakers.clone(),
            ..SagaSettings::default()
        };
        Sagas::new(kind, self.store.clone(), settings)
            .with_journal(self.journal.clone())
            .in_cluster(self.cluster.clone())
    }

    /// The cluster this node is part of, if any.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_ref()
    }

    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// `service`'s read models, as its routes query them (gathered from every member hosting
    /// it, in a cluster).
    pub fn read_models(&self, service: &'static str) -> crate::edge::kit::ReadModels {
        crate::edge::kit::ReadModels::new(
            self.bus.clone(),
            self.cluster.clone(),
            self.journal.clone(),
            service,
        )
    }

    /// The node's event bus: subscriptions and projections.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }
}

/// The registered name of kind `A`'s host (one per node).
pub fn host_name<A: Aggregate>() -> String {
    format!("{}-host", A::KIND)
}
