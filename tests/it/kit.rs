//! The service kit from a domain author's side: a service outside the shipped set
//! (`guestbook/`, one folder) runs on a node by adding one line to its list of services, and
//! gets its routes, ownership, problems, idempotent creates, its event history and its place in
//! the OpenAPI document from the kit.

use reqwest::StatusCode;
use serde_json::json;

use crate::guestbook;
use crate::support::api::{Answer, Call};
use crate::support::sim::in_process;
use crate::support::{TEST_KEY, token};
use playhouse_runtime::config::NodeConfig;
use playhouse_runtime::node::{Launch, Node, Telemetry};
use playhouse_runtime::service::ServiceDef;

/// The shipped services, and the example: the one line a new service adds.
fn services() -> &'static [ServiceDef] {
    let mut services = playhouse_actors::SERVICES.to_vec();
    services.push(guestbook::DEF);
    services.leak()
}

async fn node(dir: &tempfile::TempDir) -> Node {
    let text = format!(
        "environment = \"development\"\nnode_name = \"kit\"\ndata_dir = \"{}\"\n\
         [auth]\nissuer = \"playhouse\"\naudience = \"playhouse-api\"\n\
         key_env = \"PLAYHOUSE_KIT_UNSET\"\ndev_key = \"{TEST_KEY}\"\n",
        dir.path().join("data").display()
    );
    let config = NodeConfig::parse(&dir.path().join("kit.toml"), &text, Vec::new()).unwrap();
    Node::start(Launch {
        config,
        services: services(),
        transport: None,
        telemetry: Telemetry::detached(),
        listen: false,
        store: Default::default(),
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_service_outside_the_shipped_set_runs_on_a_node_with_the_kits_routes() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir).await;
    let (ann, bob) = (token("ann", &["writer"]), token("bob", &["reader"]));
    let sign = Call::post("/api/v1/guestbook", &ann, json!({"text": "hello"})).with_key("k1");
    let Answer::Status(StatusCode::CREATED, entry) = in_process(node.edge(), &sign).await else {
        panic!("signing did not create an entry");
    };
    let id = entry["id"].as_str().unwrap().to_owned();
    assert_eq!(entry["author"], "ann");
    // The same Idempotency-Key names the same entry.
    let again = in_process(node.edge(), &sign).await;
    assert_eq!(again, Answer::Status(StatusCode::CREATED, entry.clone()));
    // Public reads, owner-only history, problems that name the field.
    let read = Call::get(format!("/api/v1/guestbook/{id}"), &bob);
    assert_eq!(
        in_process(node.edge(), &read).await,
        Answer::Status(StatusCode::OK, entry)
    );
    let history = Call::get(format!("/api/v1/guestbook/{id}/events"), &bob);
    let Answer::Status(status, _) = in_process(node.edge(), &history).await else {
        panic!("no answer");
    };
    assert_eq!(status, StatusCode::NOT_FOUND, "someone else's history");
    let blank = Call::post("/api/v1/guestbook", &ann, json!({"text": " "}));
    let Answer::Status(status, problem) = in_process(node.edge(), &blank).await else {
        panic!("no answer");
    };
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["field"], "text");
    let openapi = Call::get("/openapi.json", &ann);
    let Answer::Status(StatusCode::OK, document) = in_process(node.edge(), &openapi).await else {
        panic!("no OpenAPI document");
    };
    assert!(document["paths"]["/api/v1/guestbook/{id}/events"].is_object());
    node.stop().await.unwrap();
}
