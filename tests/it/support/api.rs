//! The HTTP API as workloads and checkers see it, whatever carries the requests: real nodes'
//! edges over TCP ([`Http`]), or simulated nodes' apps in this process (`support::sim`). A
//! workload written against [`Api`] runs against both.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// One request.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: Method,
    pub path: String,
    pub token: String,
    pub body: Option<Value>,
    /// Sent as `Idempotency-Key`.
    pub key: Option<String>,
    /// Sent as `X-Request-Id` (and the trace id), so that a seeded run names everything the
    /// same way every time.
    pub request_id: Option<String>,
}

impl Call {
    pub fn get(path: impl Into<String>, token: &str) -> Self {
        Self {
            method: Method::GET,
            path: path.into(),
            token: token.to_owned(),
            body: None,
            key: None,
            request_id: None,
        }
    }

    pub fn post(path: impl Into<String>, token: &str, body: Value) -> Self {
        Self {
            method: Method::POST,
            body: Some(body),
            ..Self::get(path, token)
        }
    }

    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn with_request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }
}

/// What came back: a status and body, or why nothing did.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Status(StatusCode, Value),
    /// No answer, after the request may have reached the node: reset, timed out.
    Nothing(String),
    /// The request never reached a node (the connection was refused, or the node was paused
    /// and the client gave up before handing it over): certainly not applied.
    Unreached(String),
}

/// What an operation's answer says about it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Ok(Value),
    /// A definite refusal (4xx): not applied.
    Failed(String),
    /// 503 `unavailable` (the node says nothing was applied; the checkers hold it to that),
    /// or a request that never reached a node.
    NotApplied(String),
    /// No answer, or one that does not say (`outcome-unknown`, other 5xx): applied once or
    /// not at all.
    Unknown(String),
}

/// The problem type of a 503 that says nothing was applied.
const NOT_APPLIED: &str = "urn:playhouse:problem:unavailable";

impl Answer {
    pub fn outcome(self) -> Outcome {
        match self {
            Answer::Nothing(error) => Outcome::Unknown(error),
            Answer::Unreached(error) => Outcome::NotApplied(error),
            Answer::Status(status, body) if status.is_success() => Outcome::Ok(body),
            Answer::Status(status, body) if status.is_client_error() => {
                Outcome::Failed(format!("{status}: {body}"))
            }
            Answer::Status(StatusCode::SERVICE_UNAVAILABLE, body)
                if body["type"] == NOT_APPLIED =>
            {
                Outcome::NotApplied(format!("503: {body}"))
            }
            Answer::Status(status, body) => Outcome::Unknown(format!("{status}: {body}")),
        }
    }
}

impl Outcome {
    /// Refused, or unavailable: either way not applied.
    pub fn not_applied(&self) -> bool {
        matches!(self, Outcome::Failed(_) | Outcome::NotApplied(_))
    }

    /// The verdict's name in the run's counts.
    pub fn verdict(&self) -> &'static str {
        match self {
            Outcome::Ok(_) => "ok",
            Outcome::Failed(_) => "failed",
            Outcome::NotApplied(_) => "unavailable",
            Outcome::Unknown(_) => "unknown",
        }
    }
}

/// A cluster's nodes, reached by index.
pub trait Api: Send + Sync {
    fn nodes(&self) -> usize;

    /// Sends `call` to node `node`'s edge.
    fn send(&self, node: usize, call: Call) -> BoxFuture<'_, Answer>;

    /// Sleeps `wait` on the clock the cluster runs on.
    fn sleep(&self, wait: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(wait))
    }
}

/// GETs `path` through node `node` (then the others in turn, when one does not answer),
/// retrying answers that do not say (5xx, nothing) for up to `patience`; the last answer (503
/// with the reason when nothing answered at all).
pub async fn settled_get(
    api: &dyn Api,
    node: usize,
    path: &str,
    token: &str,
    patience: Duration,
) -> (StatusCode, Value) {
    let deadline = tokio::time::Instant::now() + patience;
    let mut via = node;
    loop {
        let last = match api.send(via, Call::get(path, token)).await {
            Answer::Status(status, body) if !status.is_server_error() => return (status, body),
            Answer::Status(status, body) => (status, body),
            Answer::Nothing(why) | Answer::Unreached(why) => {
                (StatusCode::SERVICE_UNAVAILABLE, Value::String(why))
            }
        };
        if tokio::time::Instant::now() > deadline {
            return last;
        }
        via = (via + 1) % api.nodes();
        api.sleep(Duration::from_millis(100)).await;
    }
}

/// Real nodes' edges over HTTP, each at the base URL it last started on.
pub struct Http {
    pub edges: Arc<RwLock<Vec<String>>>,
    client: reqwest::Client,
}

impl Http {
    pub fn new(edges: Arc<RwLock<Vec<String>>>, timeout: Duration) -> Self {
        Self {
            edges,
            client: reqwest::Client::builder().timeout(timeout).build().unwrap(),
        }
    }
}

impl Api for Http {
    fn nodes(&self) -> usize {
        self.edges.read().unwrap().len()
    }

    fn send(&self, node: usize, call: Call) -> BoxFuture<'_, Answer> {
        let base = self.edges.read().unwrap()[node].clone();
        let mut request = self
            .client
            .request(call.method, format!("{base}{}", call.path))
            .bearer_auth(&call.token);
        if let Some(key) = &call.key {
            request = request.header("Idempotency-Key", key);
        }
        if let Some(id) = &call.request_id {
            request = request.header("X-Request-Id", id);
        }
        if let Some(body) = &call.body {
            request = request.json(body);
        }
        Box::pin(async move {
            match request.send().await {
                Err(error) if error.is_connect() => Answer::Unreached(error.to_string()),
                Err(error) => Answer::Nothing(format!(
                    "{}: {error}",
                    if error.is_timeout() {
                        "timed out"
                    } else {
                        "connection lost"
                    }
                )),
                Ok(response) => {
                    let status = response.status();
                    Answer::Status(status, response.json().await.unwrap_or(Value::Null))
                }
            }
        })
    }
}
