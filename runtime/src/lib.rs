//! playhouse-runtime: the reusable actor runtime under the playhouse services. It knows nothing
//! of any domain: event store, aggregate actors, supervision, and the codec they share.

pub mod aggregate;
pub mod codec;
pub mod metrics;
pub mod store;
pub mod supervision;
