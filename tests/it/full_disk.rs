//! A full disk: a node whose data directory is on a small volume (a 64 MiB tmpfs, mounted in
//! the test's own user and mount namespace) stops taking writes with an error that names the
//! disk once less than its reserve is free, goes on answering reads, takes writes again once
//! space is freed, and keeps every acknowledged write across kill -9.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::netns;
use crate::support::{Node, NodeOptions, assert_problem, get_as, open_account_as, post_as, token};

const NAME: &str = "full_disk::a_node_whose_disk_fills_refuses_writes_naming_it_serves_reads_and_writes_again_once_space_is_freed";
/// Set in the re-run's environment: the directory the small volume is mounted on.
const SMALL_DISK: &str = "TEST_SMALL_DISK_DIR";
const RESERVE_MIB: u64 = 16;

fn free_bytes(dir: &std::path::Path) -> u64 {
    let stats = rustix::fs::statvfs(dir).unwrap();
    stats.f_bavail * stats.f_frsize
}

/// Leaves about `leave` bytes free on the volume of `dir`, with one file there.
fn fill(dir: &std::path::Path, leave: u64) -> PathBuf {
    let filler = dir.join("filler");
    let size = free_bytes(dir).saturating_sub(leave);
    std::fs::write(&filler, vec![7u8; size as usize]).unwrap();
    filler
}

async fn credit(node: &Node, writer: &str, id: &str, amount: i64) -> reqwest::Response {
    let path = format!("/api/v1/accounts/{id}/credit");
    post_as(node, &path, writer, json!({ "amount": amount })).await
}

#[test]
fn a_node_whose_disk_fills_refuses_writes_naming_it_serves_reads_and_writes_again_once_space_is_freed()
 {
    let Some(dir) = std::env::var_os(SMALL_DISK).map(PathBuf::from) else {
        let dir = tempfile::tempdir().unwrap();
        return netns::rerun(
            NAME,
            "-rm",
            "mount -t tmpfs -o size=64m playhouse-test \"$TEST_SMALL_DISK_DIR\"",
            &[(SMALL_DISK, dir.path().display().to_string())],
            "user and mount namespaces (`unshare -rm`) to mount a small tmpfs",
        );
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // Writes straight into the store, and through a Raft group (checked on its leader before
    // it proposes: replicas never refuse to apply).
    for journal in ["direct", "raft"] {
        println!("store.journal = {journal}");
        let node_dir = dir.join(journal);
        std::fs::create_dir_all(&node_dir).unwrap();
        runtime.block_on(fills_and_frees(&node_dir, journal));
    }
}

async fn fills_and_frees(dir: &std::path::Path, journal: &str) {
    let options = NodeOptions {
        sections: format!("[store]\nmin_free_mib = {RESERVE_MIB}\njournal = \"{journal}\""),
        ..NodeOptions::default()
    };
    let mut node = Node::start(dir, &options);
    let writer = token("alice", &["writer"]);
    let id = open_account_as(&node, "alice", "alice", 0).await;
    let mut acknowledged = 0;
    for amount in 1..=10 {
        assert_eq!(
            credit(&node, &writer, &id, amount).await.status(),
            StatusCode::OK
        );
        acknowledged += amount;
    }

    // Under the reserve: refused before anything is written, naming the disk.
    let filler = fill(dir, RESERVE_MIB * 1024 * 1024 / 2);
    println!("filled: {} MiB free", free_bytes(dir) / (1024 * 1024));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = credit(&node, &writer, &id, 1_000).await;
    assert_eq!(refused.headers()["retry-after"], "30");
    let problem = assert_problem(refused, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    let detail = problem["detail"].as_str().unwrap();
    println!("refused: {detail}");
    assert!(detail.contains("short of disk space"), "{detail}");
    assert!(detail.contains("under its 16 MiB reserve"), "{detail}");
    // Reads go on, and say nothing was written.
    let read = get_as(&node, &format!("/api/v1/accounts/{id}"), &writer).await;
    assert_eq!(read.status(), StatusCode::OK);
    let account: serde_json::Value = read.json().await.unwrap();
    assert_eq!(account["balance"], acknowledged);
    // Readiness says why, to its operators: which disk, and the setting.
    let ready = reqwest::get(node.url("/health/ready")).await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let report = ready.text().await.unwrap();
    println!("ready: {report}");
    assert!(report.contains("store.min_free_mib = 16 MiB"), "{report}");
    assert!(
        report.contains(&dir.join("data").display().to_string()),
        "{report}"
    );

    // Space freed: writes go on, with nothing to restart.
    std::fs::remove_file(&filler).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        credit(&node, &writer, &id, 100).await.status(),
        StatusCode::OK
    );
    acknowledged += 100;

    node.kill9();
    node.restart();
    let read = get_as(&node, &format!("/api/v1/accounts/{id}"), &writer).await;
    let account: serde_json::Value = read.json().await.unwrap();
    assert_eq!(account["balance"], acknowledged, "{account}");
}
