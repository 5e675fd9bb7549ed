//! Cluster safety against the real binary: a node refuses another node's data.

mod support;

use std::process::Command;

use support::{Node, NodeOptions};

#[tokio::test]
async fn a_node_refuses_to_start_on_another_nodes_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path(), &NodeOptions::default());
    assert!(node.terminate().success());
    // The same data dir under another node name.
    let config = std::fs::read_to_string(node.config_path()).unwrap();
    let renamed = dir.path().join("renamed.toml");
    std::fs::write(
        &renamed,
        config.replace("node_name = \"test-node\"", "node_name = \"impostor\""),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_playhouse"))
        .args(["node", "--config"])
        .arg(&renamed)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("belongs to node `test-node`, and this is node `impostor`"),
        "{stderr}"
    );
    // Its own node still starts on it.
    node.restart();
}
