//! The HTTP edge end to end against the real binary: health, auth, rate limits, problem bodies,
//! strict JSON, request ids in logs, connection limits and timeouts, metrics and OpenAPI.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::{
    AUDIENCE, Node, NodeOptions, TEST_KEY, assert_problem, client, get_json, is_closed_by_server,
    now, open_account_as, raw_exchange, read_answer_head, read_for, token, token_with,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn health_is_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &NodeOptions::default());
    for path in ["/health", "/health/ready", "/health/live"] {
        let response = client().get(node.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "healthy", "{path}: {body}");
    }
    let body: Value = get_json(&node, "/health", None::<String>).await;
    let names: Vec<&str> = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["store", "disk", "memory", "cluster"]);
}

#[tokio::test]
async fn low_disk_makes_health_degraded_then_unhealthy_with_503() {
    // Thresholds at 100% free (or a floor of an exbibyte): every real disk is "low", so each
    // answer is certain.
    const EXBIBYTE_IN_MIB: u64 = 1 << 40;
    for (degraded, unhealthy, unhealthy_mib, expected_status, http) in [
        (100.0, 0.0, 0, "degraded", StatusCode::OK),
        (
            100.0,
            100.0,
            0,
            "unhealthy",
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        (
            0.0,
            0.0,
            EXBIBYTE_IN_MIB,
            "unhealthy",
            StatusCode::SERVICE_UNAVAILABLE,
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let options = NodeOptions {
            disk_degraded_below_percent: degraded,
            disk_unhealthy_below_percent: unhealthy,
            disk_unhealthy_below_mib: unhealthy_mib,
            ..NodeOptions::default()
        };
        let node = Node::start(dir.path(), &options);
        for path in ["/health", "/health/ready"] {
            let response = client().get(node.url(path)).send().await.unwrap();
            assert_eq!(response.status(), http, "{path}");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["status"], expected_status, "{path}: {body}");
            let disk = body["checks"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == "disk")
                .unwrap();
            assert_eq!(disk["status"], expected_status);
            assert!(
                disk["message"].as_str().unwrap().contains("% free"),
                "{disk}"
            );
        }
        // Liveness says the process answers, whatever the disk.
        let live = client().get(node.url("/health/live")).send().await.unwrap();
        assert_eq!(live.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn missing_or_bad_tokens_get_401_and_missing_roles_403() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &NodeOptions::default());
    let url = node.url("/api/v1/accounts");
    let body = json!({"owner": "mallory", "initial_balance": 1});

    let response = client().post(&url).json(&body).send().await.unwrap();
    let problem = assert_problem(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert!(problem["detail"].as_str().unwrap().contains("Bearer"));

    // alg=none: header {"alg":"none","typ":"JWT"}, valid claims, empty signature.
    let unsigned = format!(
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
        base64url(&format!(
            r#"{{"sub":"mallory","iss":"playhouse","aud":"{AUDIENCE}","exp":{},"roles":["admin"]}}"#,
            now() + 3600
        ))
    );
    let bad_tokens = [
        ("alg=none", unsigned),
        (
            "expired",
            token_with(TEST_KEY, AUDIENCE, now() - 3600, "mallory", &["admin"]),
        ),
        (
            "wrong key",
            token_with(
                "some-other-key-0123456789abcdef!!",
                AUDIENCE,
                now() + 3600,
                "mallory",
                &["admin"],
            ),
        ),
        (
            "wrong audience",
            token_with(TEST_KEY, "another-api", now() + 3600, "mallory", &["admin"]),
        ),
        ("garbage", "not.a.token".to_owned()),
    ];
    for (what, bad) in bad_tokens {
        let response = client()
            .post(&url)
            .bearer_auth(&bad)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{what} token was accepted"
        );
        assert_eq!(response.headers()["www-authenticate"], "Bearer", "{what}");
    }

    // A reader may look but not write.
    let response = client()
        .post(&url)
        .bearer_auth(token("bob", &["reader"]))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::FORBIDDEN, "forbidden").await;
    // Health stays public.
    assert_eq!(
        client()
            .get(node.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

fn base64url(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test]
async fn the_rate_limit_gives_429_with_retry_after_and_ratelimit_headers() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(
        dir.path(),
        &NodeOptions {
            requests_per_second: 1,
            burst: 3,
            ..NodeOptions::default()
        },
    );
    let id = "01234567-89ab-7def-8123-456789abcdef";
    let url = node.url(&format!("/api/v1/accounts/{id}"));
    let reader = token("greedy", &["reader"]);
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let response = client()
            .get(&url)
            .bearer_auth(&reader)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()["x-ratelimit-limit"], "3");
        assert!(response.headers().contains_key("x-ratelimit-reset"));
        remaining.push(
            response.headers()["x-ratelimit-remaining"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let response = client()
        .get(&url)
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(response.headers()["x-ratelimit-remaining"], "0");
    assert_eq!(response.headers()["x-ratelimit-limit"], "3");
    assert!(response.headers().contains_key("x-ratelimit-reset"));
    assert_problem(response, StatusCode::TOO_MANY_REQUESTS, "rate-limited").await;

    // The limit is per subject: another token still gets through.
    let response = client()
        .get(&url)
        .bearer_auth(token("patient", &["reader"]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn metrics_and_openapi_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &NodeOptions::default());
    let id = open_account_as(&node, "alice", "alice", 5).await;
    get_json(
        &node,
        &format!("/api/v1/accounts/{id}"),
        Some(token("alice", &["reader"])),
    )
    .await;
    let metrics = crate::support::metrics_of(&node).await;
    for name in [
        "playhouse_http_requests_total",
        "playhouse_http_request_duration_seconds_bucket",
        "playhouse_commands_total",
        "playhouse_store_batch_events",
        "playhouse_store_commit_seconds",
        "playhouse_live_actors",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}:\n{metrics}");
    }
    assert!(
        metrics.contains(r#"route="/api/v1/accounts/{id}""#),
        "{metrics}"
    );

    let spec: Value = get_json(&node, "/openapi.json", None::<String>).await;
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/accounts",
        "/api/v1/accounts/{id}",
        "/api/v1/accounts/{id}/credit",
        "/api/v1/accounts/{id}/debit",
        "/api/v1/accounts/{id}/events",
        "/health",
    ] {
        assert!(spec["paths"].get(path).is_some(), "the spec lacks {path}");
    }
    assert_eq!(
        spec["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

/// Options for a node whose edge has these extra settings.
fn with_edge(settings: &str) -> NodeOptions {
    NodeOptions {
        edge: settings.to_owned(),
        ..NodeOptions::default()
    }
}

/// Opens `count` connections that send nothing (idle) and `count` that send half a request
/// head (slow), and returns them all.
fn idle_and_slow_connections(address: &str, count: usize) -> Vec<TcpStream> {
    let mut streams = Vec::new();
    for _ in 0..count {
        streams.push(TcpStream::connect(address).unwrap());
        let mut slow = TcpStream::connect(address).unwrap();
        slow.write_all(b"GET /health/live HTTP/1.1\r\nHost: slow\r\n")
            .unwrap();
        streams.push(slow);
    }
    streams
}

/// GET /health/live on a new connection; the status line and how long the answer took.
fn timed_liveness(address: &str) -> (String, Duration) {
    let started = Instant::now();
    let answer = raw_exchange(
        address,
        b"GET /health/live HTTP/1.1\r\nHost: new\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    );
    let status = answer.lines().next().unwrap_or("").to_owned();
    (status, started.elapsed())
}

#[tokio::test]
async fn beyond_the_connection_cap_idle_and_slow_connections_make_room_for_new_clients() {
    let dir = tempfile::tempdir().unwrap();
    // Long timeouts: here only the cap may close connections.
    let node = Node::start(
        dir.path(),
        &with_edge(
            "max_connections = 32\nheader_read_timeout_ms = 60000\nkeep_alive_timeout_ms = 60000",
        ),
    );
    let address = node.address();
    let mut held = idle_and_slow_connections(&address, 40);
    let (status, took) = timed_liveness(&address);
    assert_eq!(status, "HTTP/1.1 200 OK", "log:\n{}", node.log_text());
    println!("a new client was answered in {took:?} with 80 idle and slow connections open");
    let closed = held
        .iter_mut()
        .filter_map(|stream| is_closed_by_server(stream, Duration::from_millis(200)).then_some(()))
        .count();
    // 81 connections came in with room for 32: the oldest idle ones were closed to make room.
    assert!(closed >= 81 - 32, "only {closed} of 80 were closed");
}

#[tokio::test]
async fn at_the_cap_with_every_connection_busy_a_request_ending_makes_room_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // Long timeouts: only the cap, and the requests ending, may make room.
    let node = Node::start(
        dir.path(),
        &with_edge(
            "max_connections = 4\nheader_read_timeout_ms = 60000\nkeep_alive_timeout_ms = 60000\nrequest_timeout_ms = 60000",
        ),
    );
    let body = br#"{"owner":"alice","initial_balance":0}"#;
    let head = format!(
        "POST /api/v1/accounts HTTP/1.1\r\nHost: busy\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        token("alice", &["writer"]),
        body.len()
    );
    // Four requests in flight, each waiting for the rest of its body: the cap is full.
    let mut busy: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut stream = TcpStream::connect(node.address()).unwrap();
            stream.write_all(head.as_bytes()).unwrap();
            stream.write_all(&body[..5]).unwrap();
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let newcomer = {
        let address = node.address();
        std::thread::spawn(move || timed_liveness(&address))
    };
    std::thread::sleep(Duration::from_millis(300));
    // One request ends; its connection stays open, idle: it is closed for the newcomer.
    busy[0].write_all(&body[5..]).unwrap();
    let answer = read_answer_head(&mut busy[0], Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    let (status, took) = newcomer.join().unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK", "log:\n{}", node.log_text());
    println!("the newcomer was answered after {took:?}");
    assert!(is_closed_by_server(&mut busy[0], Duration::from_secs(1)));
}

#[tokio::test]
async fn slow_request_heads_and_idle_keep_alive_connections_are_closed_after_their_timeouts() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(
        dir.path(),
        &with_edge("header_read_timeout_ms = 1000\nkeep_alive_timeout_ms = 500"),
    );
    let address = node.address();

    // A request head trickling in, one header line every 300 ms, never finished.
    let mut slow = TcpStream::connect(&address).unwrap();
    slow.write_all(b"GET /health/live HTTP/1.1\r\n").unwrap();
    let started = Instant::now();
    let mut closed_after = None;
    while started.elapsed() < Duration::from_secs(6) {
        if slow.write_all(b"X-Slow: 1\r\n").is_err()
            || is_closed_by_server(&mut slow, Duration::from_millis(300))
        {
            closed_after = Some(started.elapsed());
            break;
        }
    }
    let closed_after = closed_after.expect("a trickling request head was kept open for 6 s");
    assert!(
        closed_after >= Duration::from_millis(900),
        "{closed_after:?}"
    );

    // A keep-alive connection left idle after its request.
    let mut idle = TcpStream::connect(&address).unwrap();
    idle.write_all(b"GET /health/live HTTP/1.1\r\nHost: idle\r\n\r\n")
        .unwrap();
    let answer = read_for(&mut idle, Duration::from_millis(300));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        is_closed_by_server(&mut idle, Duration::from_secs(5)),
        "an idle keep-alive connection was kept open 5 s"
    );

    // A connection that never sends a byte.
    let mut silent = TcpStream::connect(&address).unwrap();
    assert!(is_closed_by_server(&mut silent, Duration::from_secs(5)));
}

#[tokio::test]
async fn with_a_low_file_limit_a_flood_of_idle_connections_leaves_the_node_serving() {
    let dir = tempfile::tempdir().unwrap();
    // The default config, started with 256 open files allowed: the node must size its
    // connection cap to that, not to its configured maximum.
    let node = Node::start(
        dir.path(),
        &NodeOptions {
            file_limit: Some(256),
            ..NodeOptions::default()
        },
    );
    let address = node.address();
    let _held = idle_and_slow_connections(&address, 200);
    let (status, took) = timed_liveness(&address);
    assert_eq!(status, "HTTP/1.1 200 OK", "log:\n{}", node.log_text());
    println!("answered in {took:?} with 400 connections held against a limit of 256 files");
    assert!(
        !node.log_text().contains("Too many open files"),
        "{}",
        node.log_text()
    );
}

#[tokio::test]
async fn json_bodies_must_be_objects_and_syntax_errors_are_400() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &NodeOptions::default());
    let writer = token("alice", &["writer"]);
    let post_raw = |path: &str, body: String| {
        client()
            .post(node.url(path))
            .bearer_auth(&writer)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let problem = assert_problem(
        post_raw("/api/v1/accounts", r#"["alice", 777]"#.into())
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-field",
    )
    .await;
    assert!(
        problem["detail"].as_str().unwrap().contains("object"),
        "{problem}"
    );
    let id = open_account_as(&node, "alice", "alice", 10).await;
    let credit = format!("/api/v1/accounts/{id}/credit");
    assert_problem(
        post_raw(&credit, "[5]".into()).await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-field",
    )
    .await;
    // Unclosed and nested past the parser's depth limit: a syntax error.
    assert_problem(
        post_raw(&credit, "[".repeat(5000)).await.unwrap(),
        StatusCode::BAD_REQUEST,
        "malformed-body",
    )
    .await;
    let account = get_json(
        &node,
        &format!("/api/v1/accounts/{id}"),
        Some(token("alice", &["reader"])),
    )
    .await;
    assert_eq!(account["balance"], 10, "no array body moved money");
}

#[tokio::test]
async fn every_error_is_problem_json_and_ids_in_details_are_cut_short() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &NodeOptions::default());
    let reader = token("alice", &["reader"]);
    let get = |path: String| client().get(node.url(&path)).bearer_auth(&reader).send();

    assert_problem(
        get("/api/v1/accounts/%ff%fe".into()).await.unwrap(),
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    // Long, though under the 8 KiB a request target may have (past it: 414).
    let long_id = "a".repeat(6_000);
    let problem = assert_problem(
        get(format!("/api/v1/accounts/{long_id}")).await.unwrap(),
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.len() < 200, "a {} byte detail", detail.len());

    let response = client()
        .delete(node.url("/api/v1/accounts"))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["allow"], "POST");
    let problem = assert_problem(
        response,
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
    )
    .await;
    assert!(
        !problem["detail"]
            .as_str()
            .unwrap()
            .trim_end()
            .ends_with(':'),
        "{problem}"
    );

    // Only /api and /admin need a token: an unknown path is simply not there.
    let response = client().get(node.url("/nope")).send().await.unwrap();
    assert_problem(response, StatusCode::NOT_FOUND, "not-found").await;
}

#[tokio::test]
async fn a_body_that_arrives_too_slowly_is_408_and_not_logged_as_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &with_edge("request_timeout_ms = 1000"));
    let head = format!(
        "POST /api/v1/accounts HTTP/1.1\r\nHost: slow\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"owner\"",
        token("alice", &["writer"])
    );
    let answer = raw_exchange(&node.address(), head.as_bytes(), Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(
        !node.log_text().contains("ERROR"),
        "a client's slowness was logged as an error:\n{}",
        node.log_text()
    );
}

#[tokio::test]
async fn an_answer_sent_before_the_body_was_read_says_connection_close() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &NodeOptions::default());
    // No token (401), and a body over the limit (413): both are answered before the body is
    // read, so the connection cannot carry another request and must say so.
    let writer = token("alice", &["writer"]);
    for (auth, length) in [
        (String::new(), 30),
        (format!("Authorization: Bearer {writer}\r\n"), 1_000_000),
    ] {
        let mut stream = TcpStream::connect(node.address()).unwrap();
        write!(
            stream,
            "POST /api/v1/accounts HTTP/1.1\r\nHost: early\r\n{auth}Content-Type: application/json\r\n\
             Content-Length: {length}\r\n\r\n"
        )
        .unwrap();
        let answer = read_for(&mut stream, Duration::from_secs(2)).to_ascii_lowercase();
        assert!(
            answer.starts_with("http/1.1 401") || answer.starts_with("http/1.1 413"),
            "{answer}"
        );
        assert!(answer.contains("connection: close"), "{answer}");
    }
}

#[tokio::test]
async fn request_and_trace_ids_are_taken_only_when_safe() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(
        dir.path(),
        &NodeOptions {
            log_level: "debug",
            ..NodeOptions::default()
        },
    );
    let writer = token("alice", &["writer"]);
    let hostile = r#"abc status=200 msg="request ok" subject="admin""#;
    let response = client()
        .post(node.url("/api/v1/accounts"))
        .bearer_auth(&writer)
        .header("x-request-id", hostile)
        .header(
            "traceparent",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .json(&json!({"owner": "alice", "initial_balance": 1}))
        .send()
        .await
        .unwrap();
    let fresh_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(fresh_id, hostile);
    assert!(uuid_like(&fresh_id), "{fresh_id}");
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let history = get_json(
        &node,
        &format!("/api/v1/accounts/{id}/events"),
        Some(token("alice", &["reader"])),
    )
    .await;
    assert_eq!(history["events"][0]["correlation_id"], fresh_id.as_str());

    // A short id of a safe alphabet is kept, and a valid traceparent gives the trace id.
    let response = client()
        .get(node.url("/health/live"))
        .header("x-request-id", "client-req_42.a:b")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "client-req_42.a:b");

    let log = node.log_text();
    assert!(!log.contains(r#"msg="request ok""#), "{log}");
    assert!(!log.contains("0af7651916cd43dd8448eb211c80319c"), "{log}");
    assert!(log.contains("4bf92f3577b34da6a3ce929d0e0e4736"), "{log}");
}

fn uuid_like(id: &str) -> bool {
    id.len() == 36 && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

#[tokio::test]
async fn tokens_follow_the_jwt_rfcs() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &NodeOptions::default());
    let key = EncodingKey::from_secret(TEST_KEY.as_bytes());
    let exp = now() + 3600;
    let status = |authorization: String| {
        let url = node.url("/api/v1/accounts/01234567-89ab-7def-8123-456789abcdef");
        async move {
            client()
                .get(url)
                .header("authorization", authorization)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    // `aud` as an array holding our audience, and no `iat` (optional in RFC 7519).
    let claims = json!({"sub": "alice", "iss": "playhouse", "aud": ["other", AUDIENCE], "exp": exp, "roles": ["reader"]});
    let token = encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap();
    assert_eq!(
        status(format!("Bearer {token}")).await,
        StatusCode::NOT_FOUND
    );
    // The scheme is case-insensitive (RFC 7235).
    assert_eq!(
        status(format!("BEARER {token}")).await,
        StatusCode::NOT_FOUND
    );
    // An extension we do not understand marked critical (RFC 7515 4.1.11): refused.
    let critical = Header {
        crit: Some(vec!["exp".into()]),
        ..Header::new(Algorithm::HS256)
    };
    let token = encode(&critical, &claims, &key).unwrap();
    assert_eq!(
        status(format!("Bearer {token}")).await,
        StatusCode::UNAUTHORIZED
    );
    // A 10 KB token is refused before anything is decoded or kept (a 100 KB one does not get
    // that far: the headers are over 64 KiB, 431).
    let padding = "x".repeat(10_000);
    let claims =
        json!({"sub": "alice", "iss": "playhouse", "aud": AUDIENCE, "exp": exp, "pad": padding});
    let huge = encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap();
    let response = client()
        .get(node.url("/api/v1/accounts/01234567-89ab-7def-8123-456789abcdef"))
        .bearer_auth(&huge)
        .send()
        .await
        .unwrap();
    let problem = assert_problem(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert!(
        problem["detail"].as_str().unwrap().contains("long"),
        "{problem}"
    );
}

#[tokio::test]
async fn a_connection_flood_never_cuts_off_a_request_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(
        dir.path(),
        &NodeOptions {
            file_limit: Some(256),
            ..NodeOptions::default()
        },
    );
    let id = open_account_as(&node, "alice", "alice", 0).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let (address, stop) = (node.address(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let held: Vec<TcpStream> = (0..400)
                    .filter_map(|_| TcpStream::connect(&address).ok())
                    .collect();
                std::thread::sleep(Duration::from_millis(50));
                drop(held);
            }
        })
    };
    // Back to back on one keep-alive connection (reqwest reuses it): at the cap, the server
    // must close flood connections, never this one in the middle of a request.
    let client = client();
    let writer = token("alice", &["writer"]);
    let (mut acknowledged, mut failures) = (0, Vec::new());
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        let sent = client
            .post(node.url(&format!("/api/v1/accounts/{id}/credit")))
            .bearer_auth(&writer)
            .json(&json!({"amount": 1}))
            .send()
            .await;
        match sent {
            Ok(response) if response.status() == StatusCode::OK => acknowledged += 1,
            Ok(response) => failures.push(response.status().to_string()),
            Err(error) => failures.push(format!("{error:?}")),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flood.join().unwrap();
    let account = get_json(
        &node,
        &format!("/api/v1/accounts/{id}"),
        Some(token("alice", &["reader"])),
    )
    .await;
    // What must never happen: a credit applied whose client heard nothing (its connection
    // closed after the request took effect). A connection closed while a next request was still
    // on its way (HTTP/1.1's keep-alive race) applies nothing, so the balance tells them apart.
    assert_eq!(
        account["balance"], acknowledged,
        "credits applied without an answer; the failures were: {failures:?}"
    );
    assert!(
        failures.len() * 100 <= acknowledged as usize,
        "{} of {acknowledged} credits failed: {failures:?}",
        failures.len()
    );
}

#[tokio::test]
async fn a_head_over_the_edges_limits_is_told_so_in_problem_json() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &NodeOptions::default());
    let long_target = format!(
        "GET /api/v1/accounts?q={} HTTP/1.1\r\nHost: long\r\nConnection: close\r\n\r\n",
        "a".repeat(9 * 1024)
    );
    let answer = raw_exchange(
        &node.address(),
        long_target.as_bytes(),
        Duration::from_secs(5),
    );
    assert!(answer.starts_with("HTTP/1.1 414"), "{answer}");
    assert!(
        answer.contains("urn:playhouse:problem:uri-too-long"),
        "{answer}"
    );
    let many_headers: String = (0..70)
        .map(|n| format!("X-Filler-{n}: {}\r\n", "b".repeat(1000)))
        .collect();
    let heavy = format!(
        "GET /health/live HTTP/1.1\r\nHost: heavy\r\nConnection: close\r\n{many_headers}\r\n"
    );
    let answer = raw_exchange(&node.address(), heavy.as_bytes(), Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(
        answer.contains("urn:playhouse:problem:headers-too-large"),
        "{answer}"
    );
    let many_fields: String = (0..120).map(|n| format!("X-{n}: a\r\n")).collect();
    let crowded = format!(
        "GET /health/live HTTP/1.1\r\nHost: crowded\r\nConnection: close\r\n{many_fields}\r\n"
    );
    let answer = raw_exchange(&node.address(), crowded.as_bytes(), Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(answer.contains("header fields"), "{answer}");
    // The node still answers.
    let live = raw_exchange(
        &node.address(),
        b"GET /health/live HTTP/1.1\r\nHost: after\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(live.starts_with("HTTP/1.1 200"), "{live}");
}
