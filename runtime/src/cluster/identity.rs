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
    /// The placement fingerprint of its cluster (members, services, partitions).
    placement: String,
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
            let text = toml::to_string(&expected).map_err(|e| unreadable(e.to_string()))?;
            let text = format!(
                "# Whose data this is: a node refuses to start on another node's data.\n{text}"
            );
            std::fs::write(&file, text).map_err(|e| unreadable(e.to_string()))
        }
        Err(error) => Err(unreadable(error.to_string())),
    }
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
}
