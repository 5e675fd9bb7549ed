//! Config loading: defaults, overrides, and errors that name the file and the key.

use std::path::Path;

use super::*;

const MINIMAL: &str = r#"
environment = "development"
node_name = "node-1"
services = ["accounts"]

[auth]
issuer = "playhouse"
audience = "playhouse-api"
dev_key = "a-development-key-of-some-length"
"#;

fn parse(text: &str, env: &[(&str, &str)]) -> Result<NodeConfig, ConfigError> {
    let env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    NodeConfig::parse(Path::new("test.toml"), text, env)
}

#[test]
fn a_minimal_file_gets_the_defaults() {
    let config = parse(MINIMAL, &[]).unwrap();
    assert_eq!(config.edge.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.rate_limit.per_second.get(), 100);
    assert_eq!(config.telemetry.format, LogFormat::Pretty);
    assert_eq!(config.auth.key.expose(), "a-development-key-of-some-length");
    assert_eq!(config.auth.key_source, "auth.dev_key (development only)");
}

#[test]
fn environment_variables_override_the_file() {
    let config = parse(
        MINIMAL,
        &[
            ("PLAYHOUSE_EDGE__LISTEN", "0.0.0.0:9090"),
            ("PLAYHOUSE_DATA_DIR", "/var/lib/playhouse"),
            ("PLAYHOUSE_RATE_LIMIT__BURST", "7"),
            ("PLAYHOUSE_SERVICES", r#"["accounts", "orders"]"#),
            ("PLAYHOUSE_JWT_KEY", "a-key-from-the-environment-0123456789"),
            ("UNRELATED", "x"),
        ],
    )
    .unwrap();
    assert_eq!(config.edge.listen.to_string(), "0.0.0.0:9090");
    assert_eq!(config.data_dir, Path::new("/var/lib/playhouse"));
    assert_eq!(config.rate_limit.burst.get(), 7);
    assert_eq!(config.services, ["accounts", "orders"]);
    // PLAYHOUSE_JWT_KEY is the key variable, not an override, and beats the dev key.
    assert_eq!(
        config.auth.key.expose(),
        "a-key-from-the-environment-0123456789"
    );
    assert_eq!(
        config.auth.key_source,
        "environment variable PLAYHOUSE_JWT_KEY"
    );
}

#[test]
fn a_misspelt_key_is_named_with_its_line() {
    let text = MINIMAL.replace("[auth]", "[edge]\nlisten_addr = \"x\"\n\n[auth]");
    let message = parse(&text, &[]).unwrap_err().to_string();
    assert!(message.starts_with("test.toml: "), "{message}");
    assert!(message.contains("unknown field `listen_addr`"), "{message}");
    assert!(message.contains("line 7"), "{message}");
}

#[test]
fn a_variable_that_names_no_key_is_an_error_not_ignored() {
    let message = parse(MINIMAL, &[("PLAYHOUSE_EDGE_LISTEN", "0.0.0.0:1")])
        .unwrap_err()
        .to_string();
    assert!(message.contains("PLAYHOUSE_EDGE_LISTEN"), "{message}");
    assert!(message.contains("PLAYHOUSE_<SECTION>__<KEY>"), "{message}");
    // The variables the config names for its secrets are not overrides, and are fine.
    parse(
        MINIMAL,
        &[
            ("PLAYHOUSE_JWT_KEY", "a-key-from-the-environment-0123456789"),
            ("PLAYHOUSE_CLUSTER_COOKIE", "c"),
        ],
    )
    .unwrap();
}

#[test]
fn a_bad_override_names_the_variable() {
    let error = parse(MINIMAL, &[("PLAYHOUSE_EDGE__LISTN", "1")]).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("PLAYHOUSE_EDGE__LISTN"), "{message}");
    assert!(message.contains("unknown field `listn`"), "{message}");
}

#[test]
fn invalid_values_name_their_key() {
    let cases = [
        (MINIMAL.replace("node-1", "node 1"), "node_name"),
        (
            MINIMAL.replace(r#"["accounts"]"#, r#"["accounts", "accounts"]"#),
            "services",
        ),
        (
            format!("{MINIMAL}\n[rate_limit]\nburst = 0\n"),
            "rate_limit.burst",
        ),
        (
            MINIMAL.replace("[auth]", "[edge]\nlisten = \"localhost\"\n[auth]"),
            "edge.listen",
        ),
        (
            MINIMAL.replace("a-development-key-of-some-length", "short"),
            "auth",
        ),
    ];
    for (text, key) in cases {
        match parse(&text, &[]) {
            Err(ConfigError::Invalid { key: found, .. }) => assert_eq!(found, key),
            other => panic!("expected {key} to be invalid, got {other:?}"),
        }
    }
}

#[test]
fn production_refuses_inline_keys_and_wants_long_ones() {
    let production = MINIMAL.replace("\"development\"", "\"production\"");
    match parse(&production, &[]) {
        Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, "auth.dev_key"),
        other => panic!("{other:?}"),
    }
    let without_dev_key: String = production
        .lines()
        .filter(|line| !line.starts_with("dev_key"))
        .map(|line| format!("{line}\n"))
        .collect();
    let message = parse(&without_dev_key, &[]).unwrap_err().to_string();
    assert!(
        message.contains("set the environment variable PLAYHOUSE_JWT_KEY"),
        "{message}"
    );
    let message = parse(
        &without_dev_key,
        &[("PLAYHOUSE_JWT_KEY", "only-twenty-bytes-xx")],
    )
    .unwrap_err()
    .to_string();
    assert!(message.contains("at least 32"), "{message}");
    let config = parse(
        &without_dev_key,
        &[("PLAYHOUSE_JWT_KEY", "0123456789abcdef0123456789abcdef")],
    )
    .unwrap();
    assert_eq!(config.telemetry.format, LogFormat::Json);
}

#[test]
fn secrets_do_not_show_in_debug_or_printed_config() {
    let config = parse(MINIMAL, &[("PLAYHOUSE_CLUSTER_COOKIE", "cookie-value")]).unwrap();
    let debug = format!("{config:?}");
    assert!(
        !debug.contains("a-development-key-of-some-length"),
        "{debug}"
    );
    assert!(!debug.contains("cookie-value"), "{debug}");
    let printed = toml::to_string(&config.file).unwrap();
    assert!(
        !printed.contains("a-development-key-of-some-length"),
        "{printed}"
    );
    assert!(printed.contains(REDACTED));
}

#[test]
fn cluster_members_must_include_this_node() {
    let text = format!(
        "{MINIMAL}\n[cluster]\nmembers = [{{ name = \"node-2\", address = \"127.0.0.1:4601\", services = [\"accounts\"] }}]\n"
    );
    match parse(&text, &[]) {
        Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, "cluster.members"),
        other => panic!("{other:?}"),
    }
}

/// MINIMAL as node-1 of a two-node cluster, with `extra` cluster keys.
fn two_nodes(extra: &str) -> String {
    format!(
        "{MINIMAL}\n[cluster]\n{extra}\nmembers = [\n  {{ name = \"node-1\", address = \"127.0.0.1:4601\", services = [\"accounts\"] }},\n  {{ name = \"node-2\", address = \"127.0.0.1:4602\", services = [\"accounts\"] }},\n]\n"
    )
}

fn invalid_key(result: Result<NodeConfig, ConfigError>) -> (String, String) {
    match result {
        Err(ConfigError::Invalid { key, message, .. }) => (key, message),
        other => panic!("expected an invalid key, got {other:?}"),
    }
}

#[test]
fn a_cluster_takes_its_cookie_from_the_environment_a_file_or_in_development_the_config() {
    let (key, message) = invalid_key(parse(&two_nodes(""), &[]));
    assert_eq!(key, "cluster");
    assert!(message.contains("PLAYHOUSE_CLUSTER_COOKIE"), "{message}");

    let config = parse(&two_nodes("dev_cookie = \"a-development-cookie\""), &[]).unwrap();
    assert_eq!(
        config.cluster.cookie.unwrap().expose(),
        "a-development-cookie"
    );
    assert_eq!(
        config.cluster.cookie_source,
        "cluster.dev_cookie (development only)"
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cookie"), "a-cookie-from-a-file-0123\n").unwrap();
    let text = two_nodes("cookie_file = \"cookie\"");
    let config = NodeConfig::parse(&dir.path().join("node.toml"), &text, Vec::new()).unwrap();
    assert_eq!(
        config.cluster.cookie.unwrap().expose(),
        "a-cookie-from-a-file-0123"
    );

    let config = parse(
        &two_nodes("dev_cookie = \"a-development-cookie\""),
        &[("PLAYHOUSE_CLUSTER_COOKIE", "the-environment-cookie")],
    )
    .unwrap();
    assert_eq!(
        config.cluster.cookie.unwrap().expose(),
        "the-environment-cookie"
    );

    let (key, _) = invalid_key(parse(&two_nodes("dev_cookie = \"short\""), &[]));
    assert_eq!(key, "cluster");
    let production = two_nodes("dev_cookie = \"a-development-cookie\"")
        .replace("\"development\"", "\"production\"")
        .replace("dev_key = \"a-development-key-of-some-length\"", "");
    let (key, _) = invalid_key(parse(
        &production,
        &[("PLAYHOUSE_JWT_KEY", "a-production-key-of-thirty-two-bytes!")],
    ));
    assert_eq!(key, "cluster.dev_cookie");
}

#[test]
fn this_nodes_member_entry_must_list_its_services_and_tls_files_must_exist() {
    let text = two_nodes("dev_cookie = \"a-development-cookie\"").replacen(
        "address = \"127.0.0.1:4601\", services = [\"accounts\"]",
        "address = \"127.0.0.1:4601\", services = [\"accounts\", \"orders\"]",
        1,
    );
    let (key, message) = invalid_key(parse(&text, &[]));
    assert_eq!(key, "cluster.members");
    assert!(message.contains("placement needs them equal"), "{message}");

    let text = two_nodes(
        "dev_cookie = \"a-development-cookie\"\ntls = { cert = \"no-such.pem\", key = \"k.pem\", ca = \"ca.pem\" }",
    );
    let (key, message) = invalid_key(parse(&text, &[]));
    assert_eq!(key, "cluster.tls.cert");
    assert!(message.contains("no-such.pem"), "{message}");
}

#[test]
fn member_addresses_may_be_ip_addresses_or_dns_names_with_a_port() {
    let with_peer = |address: &str| {
        two_nodes("dev_cookie = \"a-development-cookie\"").replace("127.0.0.1:4602", address)
    };
    for good in [
        "10.0.0.2:4600",
        "[::1]:4600",
        "node-2.playhouse.default.svc:4600",
        "node-2:4600",
    ] {
        let config = parse(&with_peer(good), &[]).unwrap();
        assert_eq!(config.cluster.members[1].address, good);
    }
    for bad in [
        "node-2",
        "node-2:0",
        "node-2:99999",
        "node_2:4600",
        "-node:4600",
        ":4600",
    ] {
        let (key, message) = invalid_key(parse(&with_peer(bad), &[]));
        assert_eq!(key, "cluster.members[1].address", "{bad}");
        assert!(message.contains(bad), "{message}");
    }
}

#[test]
fn a_call_to_another_node_must_time_out_before_the_edge_does() {
    let text = two_nodes("dev_cookie = \"a-development-cookie\"\ncall_timeout_ms = 20000");
    let (key, message) = invalid_key(parse(&text, &[]));
    assert_eq!(key, "cluster.call_timeout_ms");
    assert!(message.contains("edge.request_timeout_ms"), "{message}");
}

/// One config for the founders and every node added later (a StatefulSet's pods): a founder,
/// listed, forms the cluster; a node not listed joins at its advertised address.
#[test]
fn an_advertised_node_that_is_not_listed_joins_and_a_listed_one_forms() {
    let shared = r#"
environment = "development"
node_name = "pod-0"

[auth]
issuer = "playhouse"
audience = "playhouse-api"
dev_key = "a-development-key-of-some-length"

[store]
journal = "raft"

[cluster]
dev_cookie = "a-cookie-of-some-length"
members = [
    { name = "pod-0", address = "pod-0.nodes:4600" },
    { name = "pod-1", address = "pod-1.nodes:4600" },
    { name = "pod-2", address = "pod-2.nodes:4600" },
]
"#;
    let as_pod = |n: usize| {
        parse(
            shared,
            &[
                ("PLAYHOUSE_NODE_NAME", &format!("pod-{n}")),
                (
                    "PLAYHOUSE_CLUSTER__ADVERTISE",
                    &format!("pod-{n}.nodes:4600"),
                ),
            ],
        )
    };
    let founder = as_pod(1).unwrap();
    assert!(!founder.cluster.join);
    assert_eq!(founder.cluster.members.len(), 3);
    let added = as_pod(3).unwrap();
    assert!(added.cluster.join);
    let names: Vec<_> = added
        .cluster
        .members
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(names, ["pod-3", "pod-0", "pod-1", "pod-2"]);
    assert_eq!(added.cluster.members[0].address, "pod-3.nodes:4600");
    // Without the address, a node not listed is refused as before, naming the key.
    let unlisted = parse(shared, &[("PLAYHOUSE_NODE_NAME", "pod-3")]).unwrap_err();
    assert!(
        unlisted.to_string().contains("not among the members"),
        "{unlisted}"
    );
}
