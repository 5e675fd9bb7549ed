//! Transfers end to end: the saga debits then credits; a refused debit fails it, a refused
//! credit puts the money back; the accounts' histories show each move once, under the saga's
//! command ids; ownership; `/admin/sagas`.

use crate::support::{
    Node, NodeOptions, assert_problem, get_as, json_of, open_account_as, post_as, settled, token,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn balance(node: &Node, id: &str) -> i64 {
    let account = get_as(
        node,
        &format!("/api/v1/accounts/{id}"),
        &token("ops", &["admin"]),
    )
    .await;
    json_of(account, StatusCode::OK).await["balance"]
        .as_i64()
        .unwrap()
}

async fn transfer(node: &Node, subject: &str, from: &str, to: &str, amount: i64) -> Value {
    let response = post_as(
        node,
        "/api/v1/transfers",
        &token(subject, &["writer"]),
        json!({"from": from, "to": to, "amount": amount}),
    )
    .await;
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let started = json_of(response, StatusCode::ACCEPTED).await;
    assert_eq!(
        location,
        format!("/api/v1/transfers/{}", started["id"].as_str().unwrap())
    );
    settled(node, &location, &token(subject, &["reader"])).await
}

/// The (type, causation id) of each event of an account.
async fn history(node: &Node, id: &str) -> Vec<(String, Option<String>)> {
    let events = get_as(
        node,
        &format!("/api/v1/accounts/{id}/events"),
        &token("ops", &["admin"]),
    )
    .await;
    json_of(events, StatusCode::OK).await["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let causation = e["causation_id"].as_str().map(str::to_owned);
            (e["type"].as_str().unwrap().to_owned(), causation)
        })
        .collect()
}

#[tokio::test]
async fn a_transfer_moves_money_once_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &NodeOptions::default());
    let alice = open_account_as(&node, "alice", "alice", 10_000).await;
    let bob = open_account_as(&node, "bob", "bob", 0).await;

    let done = transfer(&node, "alice", &alice, &bob, 2_500).await;
    assert_eq!(
        (&done["status"], &done["reason"]),
        (&json!("completed"), &Value::Null)
    );
    assert_eq!(
        (balance(&node, &alice).await, balance(&node, &bob).await),
        (7_500, 2_500)
    );
    // Each move once, under the saga's step command ids.
    let id = done["id"].as_str().unwrap();
    assert_eq!(
        history(&node, &bob).await[1],
        (
            "AccountCredited".to_owned(),
            Some(format!("saga:transfer:{id}:1:act"))
        )
    );
    assert_eq!(
        history(&node, &alice).await[1],
        (
            "AccountDebited".to_owned(),
            Some(format!("saga:transfer:{id}:0:act"))
        )
    );

    // More than there is: refused at the debit, nothing moves.
    let refused = transfer(&node, "alice", &alice, &bob, 1_000_000).await;
    assert_eq!(refused["status"], "failed");
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("insufficient funds"),
        "{refused}"
    );
    assert_eq!(
        (balance(&node, &alice).await, balance(&node, &bob).await),
        (7_500, 2_500)
    );

    // To an account that does not exist: debited, refused at the credit, credited back.
    let nowhere = "01234567-89ab-7def-8123-456789abcdef";
    let back = transfer(&node, "alice", &alice, nowhere, 1_000).await;
    assert_eq!(back["status"], "failed");
    assert!(
        back["reason"].as_str().unwrap().contains("does not exist"),
        "{back}"
    );
    assert_eq!(balance(&node, &alice).await, 7_500);
    let types: Vec<String> = history(&node, &alice)
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(
        types,
        [
            "AccountOpened",
            "AccountDebited",
            "AccountDebited",
            "AccountCredited"
        ]
    );
}

#[tokio::test]
async fn a_transfer_is_its_starters_and_moves_only_from_their_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &NodeOptions::default());
    let alice = open_account_as(&node, "alice", "alice", 10_000).await;
    let bob = open_account_as(&node, "bob", "bob", 0).await;
    let mallory = token("mallory", &["writer"]);
    let theft = post_as(
        &node,
        "/api/v1/transfers",
        &mallory,
        json!({"from": alice, "to": bob, "amount": 1}),
    )
    .await;
    assert_problem(theft, StatusCode::NOT_FOUND, "not-found").await;
    // To oneself: allowed, and nothing changes.
    let round_trip = transfer(&node, "alice", &alice, &alice, 1).await;
    assert_eq!(round_trip["status"], "completed");
    assert_eq!(balance(&node, &alice).await, 10_000);
    let done = transfer(&node, "alice", &alice, &bob, 100).await;
    let path = format!("/api/v1/transfers/{}", done["id"].as_str().unwrap());
    assert_problem(
        get_as(&node, &path, &token("bob", &["reader"])).await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    assert_eq!(
        get_as(&node, &path, &token("ops", &["admin"]))
            .await
            .status(),
        StatusCode::OK
    );

    // The operators' view: finished sagas, by kind and status.
    let admin = token("ops", &["admin"]);
    let sagas: Value = json_of(
        get_as(&node, "/admin/sagas?kind=transfer&status=completed", &admin).await,
        StatusCode::OK,
    )
    .await;
    let items = sagas["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "the round trip and this one: {sagas}");
    assert_eq!(
        items[1]["id"], done["id"],
        "in id order, which is start order"
    );
    assert!(items.iter().all(|saga| saga["kind"] == "transfer"));
    let none: Value = json_of(
        get_as(&node, "/admin/sagas?status=stuck", &admin).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(none["items"], json!([]));
    let forbidden = get_as(&node, "/admin/sagas", &token("alice", &["writer"])).await;
    assert_problem(forbidden, StatusCode::FORBIDDEN, "forbidden").await;
}
