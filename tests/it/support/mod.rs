//! Test harness: real `playhouse` processes on free ports with temp data dirs, always stopped.

#![allow(dead_code)] // each test binary uses its own part of the harness

pub mod api;
pub mod cluster;
pub mod ledger;
pub mod netns;
pub mod shop;
pub mod sim;
pub mod tls;
pub mod webdriver;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// The HS256 key every test node signs with.
pub const TEST_KEY: &str = "integration-test-key-0123456789abcdef";
pub const ISSUER: &str = "playhouse";
pub const AUDIENCE: &str = "playhouse-api";

/// Node settings a test may change.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub requests_per_second: u32,
    pub burst: u32,
    /// Free-disk thresholds of /health, percent. Low by default: the test machine's disk is
    /// shared with everything else on it, and its fill level is not the test's to decide.
    pub disk_degraded_below_percent: f64,
    pub disk_unhealthy_below_percent: f64,
    pub disk_unhealthy_below_mib: u64,
    /// Extra lines for the `[edge]` section (`max_connections = 40`).
    pub edge: String,
    /// Extra sections after the others (`[store]` and its keys).
    pub sections: String,
    /// `RUST_LOG` for the node.
    pub log_level: &'static str,
    /// Start the node with this open-file limit (soft and hard), as `ulimit -n` would.
    pub file_limit: Option<u32>,
}

impl Default for NodeOptions {
    fn default() -> Self {
        Self {
            requests_per_second: 10_000,
            burst: 10_000,
            disk_degraded_below_percent: 0.2,
            disk_unhealthy_below_percent: 0.1,
            disk_unhealthy_below_mib: 0,
            edge: String::new(),
            sections: String::new(),
            log_level: "info",
            file_limit: None,
        }
    }
}

/// A running node. Killed (SIGKILL) when dropped, so a failing test leaves nothing behind.
pub struct Node {
    child: Option<Child>,
    pub base: String,
    config: PathBuf,
    /// `PLAYHOUSE_*` overrides (and other variables) the node starts with.
    env: Vec<(String, String)>,
    log: PathBuf,
    log_level: &'static str,
    file_limit: Option<u32>,
}

impl Node {
    /// Starts a node whose data and config live in `dir`, and waits until it answers.
    pub fn start(dir: &Path, options: &NodeOptions) -> Node {
        let config = dir.join("node.toml");
        std::fs::write(
            &config,
            format!(
                r#"
environment = "development"
node_name = "test-node"
data_dir = "{data}"

[edge]
# Port 0: the node binds a free port and logs it; choosing one here could race other tests.
listen = "127.0.0.1:0"
shutdown_grace_ms = 5000
{edge}

[auth]
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
key_env = "PLAYHOUSE_TEST_UNSET_KEY_VARIABLE"
dev_key = "{TEST_KEY}"

[rate_limit]
requests_per_second = {rps}
burst = {burst}

[health]
disk_degraded_below_percent = {degraded}
disk_unhealthy_below_percent = {unhealthy}
disk_unhealthy_below_mib = {unhealthy_mib}
{sections}
"#,
                data = dir.join("data").display(),
                rps = options.requests_per_second,
                burst = options.burst,
                degraded = options.disk_degraded_below_percent,
                unhealthy = options.disk_unhealthy_below_percent,
                unhealthy_mib = options.disk_unhealthy_below_mib,
                edge = options.edge,
                sections = options.sections,
            ),
        )
        .unwrap();
        Node::launch(config, Vec::new(), dir.join("node.log"), options)
    }

    /// Starts a node from `config` with `env` set, logging to `log`, and waits until it
    /// answers.
    pub fn launch(
        config: PathBuf,
        env: Vec<(String, String)>,
        log: PathBuf,
        options: &NodeOptions,
    ) -> Node {
        let mut node = Node {
            child: None,
            base: String::new(),
            config,
            env,
            log,
            log_level: options.log_level,
            file_limit: options.file_limit,
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        let logged_before = std::fs::metadata(&self.log).map_or(0, |m| m.len() as usize);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let binary = env!("CARGO_BIN_EXE_playhouse");
        let mut command = match self.file_limit {
            // The shell lowers both limits, then becomes the node (exec): the pid stays the node's.
            Some(limit) => {
                let mut shell = Command::new("sh");
                shell.args(["-c", &format!("ulimit -n {limit} && exec \"$0\" \"$@\"")]);
                shell.arg(binary);
                shell
            }
            None => Command::new(binary),
        };
        let child = command
            .args(["node", "--config"])
            .arg(&self.config)
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .env("RUST_LOG", self.log_level)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_until_live(logged_before);
    }

    /// Waits for this start's "listening on" log line, takes the address from it, then waits
    /// until the node answers there.
    fn wait_until_live(&mut self, logged_before: usize) {
        const MARK: &str = "HTTP edge listening on ";
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = self.log_text();
            let this_start = text.get(logged_before..).unwrap_or("");
            if let Some(at) = this_start.find(MARK) {
                let address = this_start[at + MARK.len()..].split_whitespace().next();
                self.base = address.unwrap().to_owned();
                break;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("node exited with {status} before listening; log:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "node did not listen within 30 s; log:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let url = format!("{}/health/live", self.base);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "node exited with {status} before answering; log:\n{}",
                    self.log_text()
                );
            }
            if blocking_get_status(&url) == Some(200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("node did not answer within 30 s; log:\n{}", self.log_text());
    }

    /// Starts the node again on the same config and data.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the node before restarting it");
        self.spawn();
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM, then the exit status (killed after 20 s).
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("node is running");
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                child.kill().unwrap();
                panic!("node did not exit within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGSTOP: the process stays, its sockets stay open, and it answers nothing. Returns
    /// once every thread is stopped: `kill` only marks the signal pending, and a thread on
    /// another (possibly descheduled) CPU can run on for a while, answering what it holds.
    pub fn pause(&self) {
        self.signal(rustix::process::Signal::STOP);
        let tasks = format!("/proc/{}/task", self.pid());
        let deadline = Instant::now() + Duration::from_secs(5);
        while !every_thread_stopped(&tasks) {
            assert!(
                Instant::now() < deadline,
                "node not stopped 5 s after SIGSTOP"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// SIGCONT after [`Node::pause`].
    pub fn resume(&self) {
        self.signal(rustix::process::Signal::CONT);
    }

    fn signal(&self, signal: rustix::process::Signal) {
        let child = self.child.as_ref().expect("node is running");
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        rustix::process::kill_process(pid, signal).unwrap();
    }

    /// How the process ended, if it has (without waiting).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("node is running").id()
    }

    /// Whether the process is running (started and not reaped).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The node's config file.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The edge's `host:port`.
    pub fn address(&self) -> String {
        self.base.trim_start_matches("http://").to_owned()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn blocking_get_status(url: &str) -> Option<u16> {
    // A bare HTTP/1.0 GET: no async runtime needed while waiting for the node.
    use std::io::Write;
    let address = url.strip_prefix("http://")?.split('/').next()?.to_owned();
    let path = &url[url.find(&address)? + address.len()..];
    let mut stream = std::net::TcpStream::connect(&address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    iss: &'a str,
    aud: &'a str,
    exp: u64,
    iat: u64,
    roles: Vec<&'a str>,
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token signed with `key`, for `audience`, expiring at `exp`.
pub fn token_with(key: &str, audience: &str, exp: u64, sub: &str, roles: &[&str]) -> String {
    let claims = Claims {
        sub,
        iss: ISSUER,
        aud: audience,
        exp,
        iat: now(),
        roles: roles.to_vec(),
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
    )
    .unwrap()
}

/// A valid token for `sub` with `roles`.
pub fn token(sub: &str, roles: &[&str]) -> String {
    token_with(TEST_KEY, AUDIENCE, now() + 3600, sub, roles)
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// `node`'s `/metrics` text, through a new connection (a node closes idle keep-alive ones).
pub async fn metrics_of(node: &Node) -> String {
    client()
        .get(node.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Opens an account as `subject` (a writer) and returns its id.
pub async fn open_account_as(node: &Node, subject: &str, owner: &str, balance: i64) -> String {
    let response = client()
        .post(node.url("/api/v1/accounts"))
        .bearer_auth(token(subject, &["writer"]))
        .json(&serde_json::json!({ "owner": owner, "initial_balance": balance }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::CREATED);
    let body: serde_json::Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

/// GETs `path` (with a bearer token when given) and parses the JSON answer.
pub async fn get_json(
    node: &Node,
    path: &str,
    token: Option<impl std::fmt::Display>,
) -> serde_json::Value {
    let mut request = client().get(node.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().json().await.unwrap()
}

/// Asserts a problem+json answer with `status` and `type` slug; returns the body.
pub async fn assert_problem(
    response: reqwest::Response,
    status: reqwest::StatusCode,
    slug: &str,
) -> serde_json::Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body["type"],
        format!("urn:playhouse:problem:{slug}"),
        "{body}"
    );
    assert_eq!(body["status"], status.as_u16());
    body
}

/// Sends `request` as raw bytes on a new connection and reads until the server closes it or
/// `wait` passes; returns what came back.
pub fn raw_exchange(address: &str, request: &[u8], wait: Duration) -> String {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.write_all(request).unwrap();
    read_for(&mut stream, wait)
}

/// Reads what the server sends within `wait` (or until it closes the connection).
pub fn read_for(stream: &mut std::net::TcpStream, wait: Duration) -> String {
    read_until(stream, wait, |_| false)
}

/// What `stream` receives until an answer's head has arrived (its blank line), it closes, or
/// `wait` passes: on a busy machine an answer may take a while, and a kept-alive connection
/// never closes.
pub fn read_answer_head(stream: &mut std::net::TcpStream, wait: Duration) -> String {
    read_until(stream, wait, |received| {
        received.windows(4).any(|four| four == b"\r\n\r\n")
    })
}

fn read_until(
    stream: &mut std::net::TcpStream,
    wait: Duration,
    enough: impl Fn(&[u8]) -> bool,
) -> String {
    let deadline = Instant::now() + wait;
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                received.extend_from_slice(&buffer[..n]);
                if enough(&received) {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break;
            }
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

/// Whether the server has closed `stream`: a read sees end of file or a reset within `wait`.
pub fn is_closed_by_server(stream: &mut std::net::TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut buffer = [0u8; 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// POSTs `body` to `path` with `token`.
pub async fn post_as(
    node: &Node,
    path: &str,
    token: &str,
    body: serde_json::Value,
) -> reqwest::Response {
    client()
        .post(node.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// GETs `path` with `token`.
pub async fn get_as(node: &Node, path: &str, token: &str) -> reqwest::Response {
    client()
        .get(node.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// Asserts `status` and returns the JSON body.
pub async fn json_of(
    response: reqwest::Response,
    status: reqwest::StatusCode,
) -> serde_json::Value {
    let actual = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(actual, status, "{text}");
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{error}: {text}"))
}

/// The `X-Playhouse-Position` of a command's answer.
pub fn position_of(response: &reqwest::Response) -> u64 {
    response.headers()["x-playhouse-position"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Creates a product as `subject` (a writer) and returns its id.
pub async fn create_product(node: &Node, subject: &str, sku: &str, price: i64) -> String {
    let response = post_as(
        node,
        "/api/v1/products",
        &token(subject, &["writer"]),
        serde_json::json!({"name": format!("product {sku}"), "sku": sku, "price": price}),
    )
    .await;
    json_of(response, reqwest::StatusCode::CREATED).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Registers a customer as `subject` (a writer) and returns its id.
pub async fn register_customer(node: &Node, subject: &str, credit_limit: i64) -> String {
    let response = post_as(
        node,
        "/api/v1/customers",
        &token(subject, &["writer"]),
        serde_json::json!({"name": subject, "email": format!("{subject}@example.com"), "credit_limit": credit_limit}),
    )
    .await;
    json_of(response, reqwest::StatusCode::CREATED).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Polls `path` (a JSON resource with a `status`) until its status is not `pending`, for at
/// most 10 s; returns it.
pub async fn settled(node: &Node, path: &str, token: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = json_of(get_as(node, path, token).await, reqwest::StatusCode::OK).await;
        if body["status"] != "pending" {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} still pending after 10 s: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Receives `quantity` units of `product` as its owner `subject`.
pub async fn receive_stock(node: &Node, subject: &str, product: &str, quantity: u64) {
    let response = post_as(
        node,
        &format!("/api/v1/inventory/{product}/receive"),
        &token(subject, &["writer"]),
        serde_json::json!({ "quantity": quantity }),
    )
    .await;
    assert_eq!(response.status(), reqwest::StatusCode::OK);
}

/// Whether every thread under `/proc/<pid>/task` is in state `T` (stopped by a signal).
fn every_thread_stopped(tasks: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(tasks) else {
        return false;
    };
    entries.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
            // The state follows the command name, which is in parentheses and may hold spaces.
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                == Some("T")
        })
    })
}
