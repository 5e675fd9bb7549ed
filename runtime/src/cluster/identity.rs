//! Which node and cluster a data directory belongs to. A node started on another node's data,
//! or on data of a cluster placed differently, would serve (and write) aggregates it does not
//! own: it refuses to start instead, saying whose data it is.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file in the data directory that records whose data it is.
pub const IDENTITY_FILE: &str = "identity.toml";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Identity {
    /// The node whose store this is.
    node: String,
    /// The placement fingerprint of its cluster (members, services, partitions). For a
    /// replicated cluster, its id: the fingerprint of the members it formed with, which a
    /// member that joined later learns when it is admitted.
    placement: String,
    /// A replicated cluster's settings that must agree on every member, recorded so that a
    /// member whose config lists other members (it joined, or the list changed) is still
    /// checked against them. Absent in directories written before members could join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    partitions: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    replication_factor: Option<u32>,
}

/// The settings every member of a replicated cluster must share: a disagreement would put a
/// stream in two partitions, or a partition on more replicas than its group counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedSettings {
    pub partitions: u32,
    pub replication_factor: u32,
}

impl SharedSettings {
    /// What differs between `self` (this node's config) and `theirs`, or `None`.
    pub fn disagreement(&self, theirs: &SharedSettings) -> Option<String> {
        let mut differences = Vec::new();
        if self.partitions != theirs.partitions {
            differences.push(format!(
                "cluster.partitions is {} here and {} in the cluster",
                self.partitions, theirs.partitions
            ));
        }
        if self.replication_factor != theirs.replication_factor {
            differences.push(format!(
                "cluster.replication_factor is {} here and {} in the cluster",
                self.replication_factor, theirs.replication_factor
            ));
        }
        (!differences.is_empty()).then(|| differences.join("; "))
    }
}

/// Why a node may not use a data directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    #[error(
        "{file}: this data belongs to node `{found}`, and this is node `{expected}`; start `{found}` on it, or give this node its own data_dir"
    )]
    OtherNode {
        file: PathBuf,
        found: String,
        expected: String,
    },
    #[error(
        "{file}: this data belongs to a cluster placed differently (placement {found}, this config's is {expected}): its members, their services, the partition count, store.journal or the replication factor changed, so this store's aggregates would belong to other nodes now (a cluster's direct data directories cannot become replicated in place yet); restore the cluster config it was written under"
    )]
    OtherCluster {
        file: PathBuf,
        found: String,
        expected: String,
    },
    #[error(
        "{file}: this data was written with other cluster settings ({difference}); a change would move streams between partitions: restore the settings it was written under"
    )]
    OtherSettings { file: PathBuf, difference: String },
    #[error("{file}: {message}")]
    Unreadable { file: PathBuf, message: String },
}

/// Records `node` and `placement` in `data_dir` the first time, and checks them every time
/// after.
pub fn claim(data_dir: &Path, node: &str, placement: u64) -> Result<(), IdentityError> {
    let file = data_dir.join(IDENTITY_FILE);
    let expected = Identity {
        node: node.to_owned(),
        placement: format!("{placement:016x}"),
        partitions: None,
        replication_factor: None,
    };
    let unreadable = |message: String| IdentityError::Unreadable {
        file: file.clone(),
        message,
    };
    match std::fs::read_to_string(&file) {
        Ok(text) => {
            let found: Identity = toml::from_str(&text).map_err(|e| unreadable(e.to_string()))?;
            if found.node != expected.node {
                return Err(IdentityError::OtherNode {
                    file,
                    found: found.node,
                    expected: expected.node,
                });
            }
            if found.placement != expected.placement {
                return Err(IdentityError::OtherCluster {
                    file,
                    found: found.placement,
                    expected: expected.placement,
                });
            }
            Ok(())
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            write(&file, &expected).map_err(unreadable)
        }
        Err(error) => Err(unreadable(error.to_string())),
    }
}

/// The replicated cluster a data directory belongs to, if it was claimed: its id, checked
/// against `node` and `settings` (settings recorded by a build before joins are taken as
/// this config's when `founding`, the fingerprint of the config's member list, is the id).
pub fn replicated_cluster(
    data_dir: &Path,
    node: &str,
    settings: SharedSettings,
    founding: u64,
) -> Result<Option<u64>, IdentityError> {
    let file = data_dir.join(IDENTITY_FILE);
    let unreadable = |message: String| IdentityError::Unreadable {
        file: file.clone(),
        message,
    };
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(unreadable(error.to_string())),
    };
    let mut found: Identity = toml::from_str(&text).map_err(|e| unreadable(e.to_string()))?;
    if found.node != node {
        return Err(IdentityError::OtherNode {
            file,
            found: found.node,
            expected: node.to_owned(),
        });
    }
    let id = u64::from_str_radix(&found.placement, 16)
        .map_err(|e| unreadable(format!("placement `{}`: {e}", found.placement)))?;
    match (found.partitions, found.replication_factor) {
        (Some(partitions), Some(replication_factor)) => {
            let recorded = SharedSettings {
                partitions,
                replication_factor,
            };
            if let Some(difference) = settings.disagreement(&recorded) {
                return Err(IdentityError::OtherSettings { file, difference });
            }
        }
        _ if id == founding => {
            found.partitions = Some(settings.partitions);
            found.replication_factor = Some(settings.replication_factor);
            write(&file, &found).map_err(unreadable)?;
        }
        _ => {
            return Err(IdentityError::OtherCluster {
                file,
                found: found.placement,
                expected: format!("{founding:016x}"),
            });
        }
    }
    Ok(Some(id))
}

/// Claims `data_dir` for `node` in the replicated cluster `id`, with `settings`: the first
/// start of a member forming the cluster, or of one just admitted to it.
pub fn claim_replicated(
    data_dir: &Path,
    node: &str,
    id: u64,
    settings: SharedSettings,
) -> Result<(), IdentityError> {
    let file = data_dir.join(IDENTITY_FILE);
    let identity = Identity {
        node: node.to_owned(),
        placement: format!("{id:016x}"),
        partitions: Some(settings.partitions),
        replication_factor: Some(settings.replication_factor),
    };
    write(&file, &identity).map_err(|message| IdentityError::Unreadable { file, message })
}

fn write(file: &Path, identity: &Identity) -> Result<(), String> {
    let text = toml::to_string(identity).map_err(|e| e.to_string())?;
    let text =
        format!("# Whose data this is: a node refuses to start on another node's data.\n{text}");
    // Written aside and renamed: a crash mid-write leaves the old file or the new one.
    let aside = file.with_extension("toml.new");
    std::fs::write(&aside, text).map_err(|e| e.to_string())?;
    std::fs::rename(&aside, file).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_directory_serves_only_the_node_and_placement_it_was_written_by() {
        let dir = tempfile::tempdir().unwrap();
        claim(dir.path(), "node-1", 7).unwrap();
        claim(dir.path(), "node-1", 7).unwrap();
        let other = claim(dir.path(), "node-2", 7).unwrap_err();
        assert!(
            other.to_string().contains("belongs to node `node-1`"),
            "{other}"
        );
        let moved = claim(dir.path(), "node-1", 8).unwrap_err();
        assert!(
            matches!(moved, IdentityError::OtherCluster { .. }),
            "{moved}"
        );
    }

    #[test]
    fn a_replicated_clusters_id_outlives_its_member_list_but_not_its_settings() {
        let dir = tempfile::tempdir().unwrap();
        let settings = SharedSettings {
            partitions: 64,
            replication_factor: 3,
        };
        assert_eq!(
            replicated_cluster(dir.path(), "node-4", settings, 9).unwrap(),
            None
        );
        // Written by a build before joins: the id alone, which the founding list must match.
        claim(dir.path(), "node-4", 7).unwrap();
        let other = replicated_cluster(dir.path(), "node-4", settings, 8).unwrap_err();
        assert!(
            matches!(other, IdentityError::OtherCluster { .. }),
            "{other}"
        );
        assert_eq!(
            replicated_cluster(dir.path(), "node-4", settings, 7).unwrap(),
            Some(7)
        );
        // Now recorded with its settings: any member list opens it, other settings do not.
        assert_eq!(
            replicated_cluster(dir.path(), "node-4", settings, 8).unwrap(),
            Some(7)
        );
        let fewer = SharedSettings {
            partitions: 32,
            ..settings
        };
        let refused = replicated_cluster(dir.path(), "node-4", fewer, 7).unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("cluster.partitions is 32 here and 64"),
            "{refused}"
        );
        claim_replicated(dir.path(), "node-5", 11, settings).unwrap();
        let other_node = replicated_cluster(dir.path(), "node-4", settings, 11).unwrap_err();
        assert!(
            matches!(other_node, IdentityError::OtherNode { .. }),
            "{other_node}"
        );
    }
}
