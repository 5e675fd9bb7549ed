//! Supervision: supervisors that restart their children by a strategy, within a restart
//! intensity, with backoff between restarts.
//!
//! ractor only tells a parent that a linked child stopped or failed; what to do about it is ours.
//! [`Supervisor`] implements OTP's `one_for_one`, `one_for_all` and `rest_for_one` over static
//! child specs. When restarts come faster than its [`Intensity`] allows, the supervisor fails
//! itself, which hands the problem to its own parent: failures escalate up the tree.

mod current;
mod policy;
mod supervisor;

#[cfg(test)]
mod tests;

pub use current::Current;
pub use policy::{Backoff, Intensity, Restart, RestartWindow, Strategy};
pub use supervisor::{
    ChildSpec, ChildStatus, Supervisor, SupervisorMsg, SupervisorSpec, children_of,
};
