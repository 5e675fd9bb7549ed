//! Guestbook: an example service that is not in the shipped set, to show what adding a service
//! takes: this folder (the same shape as every service under `actors/src/`), and one line in
//! the list of services a node is started with (`kit.rs`). Nothing in the runtime changes.
//!
//! A guestbook entry is signed once, by its author, with a line of text; anyone may read it.

mod aggregate;
mod http;
mod messages;

pub use aggregate::Entry;

use playhouse_runtime::prelude::*;

pub const SERVICE: &str = "guestbook";

pub const DEF: ServiceDef = ServiceDef {
    name: SERVICE,
    start,
    reads_events_of: &[],
};

fn start(context: &ServiceContext) -> Service {
    Service::new(SERVICE)
        .host::<Entry>(context)
        .routes(http::routes(context.aggregates()))
}
