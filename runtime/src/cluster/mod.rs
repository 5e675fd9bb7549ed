//! The cluster: what a node knows of its peers, and the safety checks that keep one owner per
//! aggregate.

pub mod identity;
