//! Placement: which member owns an aggregate. Each service's aggregates fall into a fixed number
//! of partitions (by a stable hash of the aggregate's stream name), and each partition's owner is
//! chosen by rendezvous hashing over the members that host the service: every node computes the
//! same owner from the same config, with no coordination, and the owner never changes while the
//! config does not. So an aggregate's events stay in one node's store, and no other node ever
//! writes them.
//!
//! With replication (`store.journal = "raft"`) a partition is shared by every service and has
//! no owner: rendezvous hashing over all members (services aside) proposes its replica set,
//! the members whose hash with the partition is highest, and its Raft group elects the leader
//! that serves it.

use std::collections::BTreeMap;

use crate::config::{ClusterConfig, Member};
use crate::store::{fingerprint, fingerprint_of};

/// The id of the cluster's metadata Raft group (`replication::metadata`), beside the
/// partitions' groups `0..partitions`: every member holds a replica of it. (`u32::MAX` keeps
/// the Raft log's node-wide records.)
pub const METADATA_GROUP: u32 = u32::MAX - 1;

/// Who owns what, from the cluster config. A node with no members configured owns everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    partitions: u32,
    /// Service -> the members hosting it, by name, sorted.
    hosts: BTreeMap<String, Vec<String>>,
    /// With replication: how many members hold each partition.
    replication_factor: Option<u32>,
}

impl Placement {
    pub fn new(cluster: &ClusterConfig) -> Self {
        let placement = Self::of(cluster.partitions, &cluster.members);
        match cluster.replicated {
            true => placement.replicated(cluster.replication_factor),
            false => placement,
        }
    }

    /// This placement with every partition replicated on `factor` members (all of them when
    /// there are fewer).
    pub fn replicated(mut self, factor: u32) -> Self {
        self.replication_factor = Some(factor.max(1));
        self
    }

    /// How many members hold each partition (1 without replication).
    pub fn replication_factor(&self) -> u32 {
        self.replication_factor.unwrap_or(1)
    }

    /// Whether partitions are replicated (and led by their group's leader, not owned).
    pub fn is_replicated(&self) -> bool {
        self.replication_factor.is_some()
    }

    /// Every member, by name, sorted.
    pub fn members(&self) -> Vec<&str> {
        let mut members: Vec<&str> = self.hosts.values().flatten().map(String::as_str).collect();
        members.sort_unstable();
        members.dedup();
        members
    }

    /// The members proposed to hold `partition` (replication only; empty without): of all
    /// members, the `replication_factor` whose hash with the partition is highest, highest
    /// first. The first one sets the group up when the cluster forms. The metadata group
    /// ([`METADATA_GROUP`]) is held by every member, in the same order of hashes.
    pub fn replicas(&self, partition: u32) -> Vec<String> {
        let Some(factor) = self.replication_factor else {
            return Vec::new();
        };
        let factor = match partition {
            METADATA_GROUP => usize::MAX,
            _ => factor as usize,
        };
        let mut members = self.members();
        members.sort_by_key(|member| {
            std::cmp::Reverse(mix(fingerprint(format!("{member}/{partition}").as_bytes())))
        });
        members
            .into_iter()
            .take(factor)
            .map(str::to_owned)
            .collect()
    }

    /// The groups `member` is proposed to hold (replication only): its partitions, then the
    /// metadata group when it is a member.
    pub fn replicated_on(&self, member: &str) -> Vec<u32> {
        (0..self.partitions)
            .chain([METADATA_GROUP])
            .filter(|partition| self.replicas(*partition).iter().any(|m| m == member))
            .collect()
    }

    /// Placement of `partitions` partitions per service over `members`.
    pub fn of(partitions: u32, members: &[Member]) -> Self {
        let mut hosts: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for member in members {
            for service in &member.services {
                hosts
                    .entry(service.clone())
                    .or_default()
                    .push(member.name.clone());
            }
        }
        for members in hosts.values_mut() {
            members.sort();
        }
        Self {
            partitions,
            hosts,
            replication_factor: None,
        }
    }

    /// Whether there is a cluster at all (members configured).
    pub fn is_clustered(&self) -> bool {
        !self.hosts.is_empty()
    }

    /// The partition of the aggregate whose stream is `stream` (`account-<id>`).
    pub fn partition(&self, stream: &str) -> u32 {
        partition_of(stream, self.partitions)
    }

    /// The member owning `partition` of `service`: of the members hosting the service, the one
    /// whose hash with the partition is highest. `None` when no member hosts it.
    pub fn owner(&self, service: &str, partition: u32) -> Option<&str> {
        self.hosts
            .get(service)?
            .iter()
            .max_by_key(|member| {
                mix(fingerprint(
                    format!("{member}/{service}/{partition}").as_bytes(),
                ))
            })
            .map(String::as_str)
    }

    /// Partitions per service.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The services some member hosts, sorted.
    pub fn services(&self) -> impl Iterator<Item = &str> {
        self.hosts.keys().map(String::as_str)
    }

    /// The member owning the aggregate whose stream is `stream`, in `service`.
    pub fn owner_of(&self, service: &str, stream: &str) -> Option<&str> {
        self.owner(service, self.partition(stream))
    }

    /// The partitions of each service that `member` owns.
    pub fn owned_by(&self, member: &str) -> BTreeMap<String, Vec<u32>> {
        self.hosts
            .keys()
            .map(|service| {
                let owned = (0..self.partitions)
                    .filter(|partition| self.owner(service, *partition) == Some(member))
                    .collect();
                (service.clone(), owned)
            })
            .filter(|(_, owned): &(String, Vec<u32>)| !owned.is_empty())
            .collect()
    }

    /// A fingerprint of what placement depends on (partitions, members and their services,
    /// replication): members whose fingerprints differ would compute different owners or
    /// replica sets, so they refuse each other.
    pub fn fingerprint(&self) -> u64 {
        // A node alone places nothing on others: whether it writes through Raft changes no
        // owner, and its data stays its own either way.
        let text = match self.replication_factor {
            Some(factor) if self.is_clustered() => {
                format!("{}|{:?}|raft x{factor}", self.partitions, self.hosts)
            }
            _ => format!("{}|{:?}", self.partitions, self.hosts),
        };
        fingerprint(text.as_bytes())
    }
}

/// The partition, of `partitions`, of the aggregate whose stream is `stream`: the same on every
/// node, and the unit an aggregate's host serves it in.
pub fn partition_of(stream: &str, partitions: u32) -> u32 {
    partition_of_parts([stream.as_bytes()], partitions)
}

/// [`partition_of`] the stream named by `parts` laid end to end (`[kind, "-", id]`), which
/// spares the hot read path putting the name together.
pub fn partition_of_parts<'a>(parts: impl IntoIterator<Item = &'a [u8]>, partitions: u32) -> u32 {
    (mix(fingerprint_of(parts)) % u64::from(partitions.max(1))) as u32
}

/// Spreads a hash's bits (splitmix64's finalizer): FNV-1a of keys that differ in one early
/// byte stays ordered the same way after it, which would hand one member every partition.
fn mix(hash: u64) -> u64 {
    let mut z = hash;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(members: &[(&str, &[&str])], partitions: u32) -> (u32, Vec<Member>) {
        let members = members
            .iter()
            .enumerate()
            .map(|(n, (name, services))| Member {
                name: (*name).to_owned(),
                address: format!("127.0.0.1:{}", 4600 + n),
                edge: None,
                services: services.iter().map(|s| (*s).to_owned()).collect(),
            })
            .collect();
        (partitions, members)
    }

    fn placement((partitions, members): (u32, Vec<Member>)) -> Placement {
        Placement::of(partitions, &members)
    }

    #[test]
    fn every_partition_has_one_owner_among_the_services_hosts() {
        let all = &["accounts", "orders"][..];
        let placement = placement(cluster(
            &[("n1", all), ("n2", all), ("n3", &["accounts"])],
            64,
        ));
        let mut counts: BTreeMap<&str, u32> = BTreeMap::new();
        for partition in 0..64 {
            let owner = placement.owner("accounts", partition).unwrap();
            *counts.entry(owner).or_default() += 1;
            assert_ne!(
                placement.owner("orders", partition),
                Some("n3"),
                "n3 does not host orders"
            );
        }
        // Spread over all three (rendezvous hashing balances well enough at 64 partitions).
        assert_eq!(counts.len(), 3, "{counts:?}");
        assert!(counts.values().all(|c| *c >= 10), "{counts:?}");
        assert_eq!(placement.owner("catalog", 0), None);
        let owned = placement.owned_by("n3");
        assert_eq!(owned.keys().collect::<Vec<_>>(), ["accounts"]);
    }

    #[test]
    fn the_same_config_places_the_same_way_and_a_different_one_is_told_apart() {
        let members: &[(&str, &[&str])] = &[("n1", &["accounts"]), ("n2", &["accounts"])];
        let a = placement(cluster(members, 64));
        let b = placement(cluster(members, 64));
        assert_eq!(a.fingerprint(), b.fingerprint());
        for id in 0..100 {
            let stream = format!("account-{id}");
            assert_eq!(
                a.owner_of("accounts", &stream),
                b.owner_of("accounts", &stream)
            );
        }
        let fewer = placement(cluster(&members[..1], 64));
        assert_ne!(a.fingerprint(), fewer.fingerprint());
        let repartitioned = placement(cluster(members, 32));
        assert_ne!(a.fingerprint(), repartitioned.fingerprint());
        // Removing a member moves only the partitions it owned (rendezvous hashing).
        let three: &[(&str, &[&str])] = &[
            ("n1", &["accounts"]),
            ("n2", &["accounts"]),
            ("n3", &["accounts"]),
        ];
        let with_three = placement(cluster(three, 64));
        for partition in 0..64 {
            let owner = with_three.owner("accounts", partition).unwrap();
            if owner != "n3" {
                assert_eq!(a.owner("accounts", partition), Some(owner));
            }
        }
    }

    #[test]
    fn a_replicated_partition_has_its_factor_of_distinct_members_spread_over_all() {
        let all = &["accounts"][..];
        let five = cluster(
            &[
                ("n1", all),
                ("n2", all),
                ("n3", all),
                ("n4", all),
                ("n5", all),
            ],
            64,
        );
        let replicated = placement(five.clone()).replicated(3);
        assert!(replicated.is_replicated());
        assert_ne!(replicated.fingerprint(), placement(five).fingerprint());
        let mut held: BTreeMap<String, u32> = BTreeMap::new();
        let mut first: BTreeMap<String, u32> = BTreeMap::new();
        for partition in 0..64 {
            let replicas = replicated.replicas(partition);
            let mut distinct = replicas.clone();
            distinct.sort();
            distinct.dedup();
            assert_eq!(distinct.len(), 3, "partition {partition}: {replicas:?}");
            for member in &replicas {
                *held.entry(member.clone()).or_default() += 1;
            }
            *first.entry(replicas[0].clone()).or_default() += 1;
        }
        // 192 copies over five members, and the members that set groups up spread too.
        assert_eq!(held.values().sum::<u32>(), 192);
        assert!(held.values().all(|n| (25..=52).contains(n)), "{held:?}");
        assert_eq!(first.len(), 5, "{first:?}");
        assert_eq!(
            replicated.replicated_on("n1").len() as u32,
            held["n1"] + 1,
            "replicated_on agrees with replicas, and adds the metadata group"
        );
        // The metadata group is on every member, whatever the factor.
        assert_eq!(replicated.replicas(METADATA_GROUP).len(), 5);
        assert_eq!(replicated.replicated_on("n4").last(), Some(&METADATA_GROUP));
        // Fewer members than the factor: every member holds every partition.
        let two = placement(cluster(&[("n1", all), ("n2", all)], 8)).replicated(3);
        assert!((0..8).all(|p| two.replicas(p).len() == 2));
        assert_eq!(
            two.replicated_on("n2"),
            (0..8).chain([METADATA_GROUP]).collect::<Vec<_>>()
        );
    }
}
