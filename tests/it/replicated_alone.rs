//! A node alone on the replicated write path (`store.journal = "raft"`): each partition a Raft
//! group of one. In process, on a simulated disk that loses what was not synced when the node
//! crashes, on tokio's paused clock: every acknowledged credit and transfer is still there
//! after each crash, applied once.

use std::time::Duration;

use playhouse_runtime::config::NodeConfig;
use playhouse_runtime::node::{Launch, Node, Telemetry};
use playhouse_runtime::store::{Disk, SimulatedDisk, StoreOptions};
use serde_json::{Value, json};

use crate::support::api::{Answer, Call};
use crate::support::sim::in_process;
use crate::support::{TEST_KEY, token};

fn config(dir: &std::path::Path) -> NodeConfig {
    let text = format!(
        r#"
environment = "development"
node_name = "alone"
data_dir = "{data}"

[edge]
listen = "127.0.0.1:0"

[auth]
issuer = "playhouse"
audience = "playhouse-api"
key_env = "PLAYHOUSE_ALONE_UNSET_KEY_VARIABLE"
dev_key = "{TEST_KEY}"

[rate_limit]
requests_per_second = 1000000
burst = 1000000

[health]
disk_degraded_below_percent = 0.1
disk_unhealthy_below_percent = 0.05
disk_unhealthy_below_mib = 0

[store]
journal = "raft"

[cluster]
partitions = 4
"#,
        data = dir.join("alone").display()
    );
    NodeConfig::parse(&dir.join("alone.toml"), &text, Vec::new()).unwrap()
}

async fn start(config: &NodeConfig, disk: &SimulatedDisk) -> Node {
    Node::start(Launch {
        config: config.clone(),
        services: playhouse_actors::SERVICES,
        transport: None,
        telemetry: Telemetry::detached(),
        listen: false,
        store: StoreOptions {
            disk: Disk::Simulated(disk.clone()),
            ..StoreOptions::default()
        },
    })
    .await
    .unwrap()
}

async fn ok(node: &Node, call: Call) -> Value {
    match in_process(node.edge(), &call).await {
        Answer::Status(status, body) if status.is_success() => body,
        other => panic!("{} {}: {other:?}", call.method, call.path),
    }
}

async fn balance(node: &Node, token: &str, id: &str) -> i64 {
    let account = ok(node, Call::get(format!("/api/v1/accounts/{id}"), token)).await;
    account["balance"].as_i64().unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_node_alone_on_raft_keeps_every_acknowledged_write_across_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let disk = SimulatedDisk::new();
    let writer = token("alice", &["writer"]);
    let mut node = start(&config, &disk).await;
    let open = |owner: &str| json!({"owner": owner, "initial_balance": 100});
    let a = ok(&node, Call::post("/api/v1/accounts", &writer, open("a"))).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = ok(&node, Call::post("/api/v1/accounts", &writer, open("b"))).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut expected_a = 100;
    for round in 0..3 {
        for credit in 1..=5 {
            let path = format!("/api/v1/accounts/{a}/credit");
            let call = Call::post(path, &writer, json!({"amount": credit}))
                .with_key(format!("credit-{round}-{credit}"));
            ok(&node, call).await;
            expected_a += credit;
        }
        // A transfer: a saga whose every step goes through the groups too.
        let transfer = ok(
            &node,
            Call::post(
                "/api/v1/transfers",
                &writer,
                json!({"from": a, "to": b, "amount": 10}),
            ),
        )
        .await;
        let id = transfer["id"].as_str().unwrap().to_owned();
        let mut status = Value::Null;
        for _ in 0..200 {
            status = ok(&node, Call::get(format!("/api/v1/transfers/{id}"), &writer)).await;
            if status["status"] != "pending" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(status["status"], "completed", "{status}");
        expected_a -= 10;

        // Killed: what the disk had not synced is gone. The Raft log had every acknowledged
        // entry; the groups apply what the store lost again before the node serves.
        node.crash();
        disk.crash();
        node = start(&config, &disk).await;
        assert_eq!(
            balance(&node, &writer, &a).await,
            expected_a,
            "round {round}"
        );
        assert_eq!(
            balance(&node, &writer, &b).await,
            100 + 10 * (round + 1),
            "round {round}"
        );
        // A credit retried with its key after the crash is answered, not applied again.
        let again = Call::post(
            format!("/api/v1/accounts/{a}/credit"),
            &writer,
            json!({"amount": 5}),
        )
        .with_key(format!("credit-{round}-5"));
        ok(&node, again).await;
        assert_eq!(balance(&node, &writer, &a).await, expected_a);
    }
    let sizes = disk.sizes();
    assert!(
        sizes.keys().any(|path| path.ends_with("raft.redb")),
        "the groups' log is on the disk: {sizes:?}"
    );
    node.crash();
}
