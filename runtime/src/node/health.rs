//! The cluster's part of `/health`.

use crate::cluster::{Cluster, MemberStatus};
use crate::edge::health::{Check, HealthStatus};

/// Unhealthy when this node may not serve its partitions, degraded while a peer is not up (its
/// partitions answer 503), healthy otherwise.
pub(super) fn cluster(cluster: Option<&Cluster>) -> Check {
    let Some(cluster) = cluster else {
        return Check {
            name: "cluster".into(),
            status: HealthStatus::Healthy,
            message: "single node: no peers configured".into(),
        };
    };
    if let Err(reason) = cluster.serving() {
        return Check {
            name: "cluster".into(),
            status: HealthStatus::Unhealthy,
            message: format!("not serving this node's partitions: {reason}"),
        };
    }
    let members = cluster.members();
    let not_up: Vec<String> = members
        .iter()
        .filter(|member| member.status != MemberStatus::Up)
        .map(|member| format!("{} {}", member.name, member.status.as_str()))
        .collect();
    Check {
        name: "cluster".into(),
        status: if not_up.is_empty() {
            HealthStatus::Healthy
        } else {
            HealthStatus::Degraded
        },
        message: if not_up.is_empty() {
            format!("all {} peers up", members.len())
        } else {
            format!(
                "{} of {} peers not up: {}",
                not_up.len(),
                members.len(),
                not_up.join(", ")
            )
        },
    }
}
