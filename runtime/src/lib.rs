//! playhouse-runtime: the reusable actor runtime under the playhouse services. It knows nothing
//! of any domain: event store, aggregate actors, supervision, and the codec they share.

pub mod aggregate;
pub mod bus;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod edge;
pub mod metrics;
pub mod net;
pub mod node;
pub mod ops;
pub mod placement;
pub mod planted;
pub mod position;
pub mod prelude;
pub mod replication;
pub mod resilience;
pub mod saga;
pub mod service;
pub mod store;
pub mod supervision;
pub mod telemetry;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod text;
pub mod time;
pub mod trace;

/// The actor types services need to wire themselves into a supervision tree, re-exported so that
/// domain crates do not depend on ractor directly.
pub mod actor {
    pub use ractor::{ActorCell, ActorRef, SpawnErr};
}
