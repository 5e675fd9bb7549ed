//! playhouse-actors: the domain services of the shop-and-bank system, each a folder of the same
//! shape (`mod.rs` spawns the group, `aggregate.rs` is pure logic), built only on the runtime's
//! traits.

pub mod accounts;
