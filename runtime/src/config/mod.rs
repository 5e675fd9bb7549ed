//! Node configuration: a TOML file, `PLAYHOUSE_*` environment overrides, then validation into a
//! [`NodeConfig`] the rest of the code trusts.
//!
//! Overrides: `PLAYHOUSE_<KEY>` sets a top-level key and `PLAYHOUSE_<SECTION>__<KEY>` a key of a
//! section (`PLAYHOUSE_EDGE__LISTEN=0.0.0.0:8080`, `PLAYHOUSE_DATA_DIR=/var/lib/playhouse`).
//! Values are read as TOML when they parse as TOML (`8080`, `true`, `["accounts"]`), as strings
//! otherwise. Variables whose first part names no config key (like `PLAYHOUSE_JWT_KEY`) are not
//! overrides. Every error names the file, and the key or variable at fault.

mod file;
mod secret;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use file::{
    AuthSection, ClusterSection, ConfigFile, DEFAULT_PARTITIONS, EdgeSection, Environment,
    HealthSection, JournalKind, LogFormat, MemberSection, RateLimitSection, StoreSection,
    TelemetrySection, TlsSection,
};
pub use secret::{REDACTED, Secret};

/// The prefix of every environment override.
pub const ENV_PREFIX: &str = "PLAYHOUSE_";

/// Top-level keys of [`ConfigFile`]: the only first parts an override may have.
const TOP_LEVEL_KEYS: &[&str] = &[
    "environment",
    "node_name",
    "data_dir",
    "services",
    "edge",
    "auth",
    "rate_limit",
    "store",
    "telemetry",
    "health",
    "cluster",
];

/// Shortest HS256 key accepted in production (256 bits, as RFC 7518 asks).
const MIN_PRODUCTION_KEY_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("{path}: cannot read the config file")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: with environment overrides {vars}: {message}")]
    Override {
        path: PathBuf,
        vars: String,
        message: String,
    },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// A validated node configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The file it was loaded from.
    pub source: PathBuf,
    /// The effective file contents (defaults filled in, overrides applied), for printing.
    pub file: ConfigFile,
    pub environment: Environment,
    pub node_name: String,
    pub data_dir: PathBuf,
    /// The services this node hosts; empty until resolved against the build's (every one of
    /// them) by `runtime::node::prepare`.
    pub services: Vec<String>,
    pub edge: EdgeConfig,
    pub auth: AuthConfig,
    pub rate_limit: RateLimitConfig,
    pub store: StoreConfig,
    pub telemetry: TelemetryConfig,
    pub health: HealthConfig,
    pub cluster: ClusterConfig,
}

/// Free-disk thresholds of `/health`: shares of the volume, and an absolute floor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthConfig {
    pub disk_degraded_below: f64,
    pub disk_unhealthy_below: f64,
    pub disk_unhealthy_below_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct EdgeConfig {
    pub listen: SocketAddr,
    pub body_limit_bytes: usize,
    pub request_timeout: Duration,
    pub shutdown_grace: Duration,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub keep_alive_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub issuer: String,
    pub audience: String,
    pub key: Secret,
    /// Where the key came from, for `config check` and startup logs.
    pub key_source: String,
    pub leeway: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct RateLimitConfig {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub snapshot_every: u64,
    pub idle_timeout: Option<Duration>,
    pub command_timeout: Duration,
    pub max_batch_events: usize,
    pub max_linger: Duration,
    pub cache_bytes: usize,
    pub journal: JournalKind,
    /// See [`file::StoreSection::min_free_mib`].
    pub min_free_bytes: u64,
    /// See [`file::StoreSection::command_retention_seconds`]; `None` keeps every id.
    pub command_retention: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub listen: SocketAddr,
    /// The shared secret members authenticate each other with; `None` only for a node alone.
    pub cookie: Option<Secret>,
    /// Where the cookie came from, for `config check` and startup logs.
    pub cookie_source: String,
    pub members: Vec<Member>,
    /// Whether this node joins a running cluster rather than forming one (see
    /// [`file::ClusterSection::join`]).
    pub join: bool,
    /// Partitions that move at once across the cluster (see [`file::ClusterSection::max_moves`]).
    pub max_moves: u32,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub partitions: u32,
    /// Whether partitions are Raft groups (`store.journal = "raft"`), and on how many
    /// members each is replicated (see [`file::ClusterSection::replication_factor`]).
    pub replicated: bool,
    pub replication_factor: u32,
    pub raft_snapshot_every: u64,
    pub call_timeout: Duration,
    pub max_frame_bytes: u64,
    /// See [`file::ClusterSection`]: the deadline of a connection's handshakes on the cluster
    /// port, and that port's caps.
    pub handshake_timeout: Duration,
    pub max_connections: u32,
    pub max_handshakes: u32,
    pub max_clock_skew: Duration,
    pub tls: Option<TlsConfig>,
}

impl ClusterConfig {
    /// Whether this node has peers: more than one member is configured.
    pub fn has_peers(&self) -> bool {
        self.members.len() > 1
    }

    /// The open files the cluster takes at most: the cluster port's listener and connections,
    /// and a link dialled to each peer. None for a node alone (it opens no port).
    pub fn file_budget(&self) -> u64 {
        if !self.has_peers() {
            return 0;
        }
        1 + u64::from(self.max_connections) + self.members.len() as u64 - 1
    }
}

/// Mutual TLS between nodes (see [`TlsSection`]), with paths resolved against the config file.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    /// Its cluster address, `host:port`: an IP address, or a DNS name resolved each time the
    /// member is dialled (container and Kubernetes names; a restarted pod's new IP is found).
    pub address: String,
    /// Its edge, `host:port`, for clients and tools (not used by the cluster itself).
    pub edge: Option<String>,
    /// The services it hosts; empty until resolved (every service of the build).
    pub services: Vec<String>,
}

impl NodeConfig {
    /// Loads `path` with overrides from this process's environment.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// Loads `path` with overrides (and key variables) from `env`.
    pub fn load_with_env(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text, env.into_iter().collect())
    }

    /// Parses config text as if read from `path` (used for errors and relative paths).
    pub fn parse(path: &Path, text: &str, env: Vec<(String, String)>) -> Result<Self, ConfigError> {
        // Parse the file alone first: its errors then point at a line of the file.
        let file: ConfigFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        // A PLAYHOUSE_ variable that names no key is a typo (PLAYHOUSE_EDGE_LISTEN for
        // PLAYHOUSE_EDGE__LISTEN) unless the config names it as where a secret lives.
        let secrets = [file.auth.key_env.as_str(), file.cluster.cookie_env.as_str()];
        if let Some((name, _)) = env.iter().find(|(name, _)| {
            name.starts_with(ENV_PREFIX)
                && !secrets.contains(&name.as_str())
                && overrides(std::slice::from_ref(&(name.clone(), String::new()))).is_empty()
        }) {
            return Err(ConfigError::Override {
                path: path.to_owned(),
                vars: name.clone(),
                message: format!(
                    "no config key is named by it; overrides are PLAYHOUSE_<KEY> or \
                     PLAYHOUSE_<SECTION>__<KEY> with a key of the file (top-level keys: {})",
                    TOP_LEVEL_KEYS.join(", ")
                ),
            });
        }
        let overrides = overrides(&env);
        let file = if overrides.is_empty() {
            file
        } else {
            apply_overrides(path, text, &overrides)?
        };
        validate(path, file, &env)
    }
}

/// `(variable, key path, raw value)` for every `PLAYHOUSE_*` variable that names a config key.
fn overrides(env: &[(String, String)]) -> Vec<(String, Vec<String>, String)> {
    let mut found: Vec<_> = env
        .iter()
        .filter_map(|(name, value)| {
            let rest = name.strip_prefix(ENV_PREFIX)?;
            let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            TOP_LEVEL_KEYS
                .contains(&path[0].as_str())
                .then(|| (name.clone(), path, value.clone()))
        })
        .collect();
    found.sort();
    found
}

fn apply_overrides(
    path: &Path,
    text: &str,
    overrides: &[(String, Vec<String>, String)],
) -> Result<ConfigFile, ConfigError> {
    let vars = overrides
        .iter()
        .map(|(name, _, _)| name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let error = |message: String| ConfigError::Override {
        path: path.to_owned(),
        vars: vars.clone(),
        message,
    };
    let mut document: toml::Table = toml::from_str(text).map_err(|e| error(e.to_string()))?;
    for (name, keys, raw) in overrides {
        let value = parse_override_value(raw);
        let (last, parents) = keys.split_last().expect("split never yields nothing");
        let mut table = &mut document;
        for key in parents {
            let entry = table
                .entry(key.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = entry
                .as_table_mut()
                .ok_or_else(|| error(format!("{name}: `{key}` is not a section")))?;
        }
        table.insert(last.clone(), value);
    }
    toml::Value::Table(document)
        .try_into()
        .map_err(|e: toml::de::Error| error(e.message().to_owned()))
}

/// `8080` is a number, `true` a bool, `["a"]` an array; anything that is not TOML is a string.
fn parse_override_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut table| table.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

/// Turns the raw file into a [`NodeConfig`], or says which key is wrong and why.
fn validate(
    path: &Path,
    file: ConfigFile,
    env: &[(String, String)],
) -> Result<NodeConfig, ConfigError> {
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        path: path.to_owned(),
        key: key.to_owned(),
        message,
    };
    let env_var = |name: &str| {
        env.iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
            .filter(|value| !value.is_empty())
    };
    let address = |key: &str, value: &str| -> Result<SocketAddr, ConfigError> {
        value.parse().map_err(|_| {
            invalid(
                key,
                format!("`{value}` is not a socket address like 127.0.0.1:8080"),
            )
        })
    };

    if file.node_name.is_empty()
        || !file
            .node_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(invalid(
            "node_name",
            format!(
                "`{}` must be non-empty letters, digits, `-`, `_` or `.`",
                file.node_name
            ),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(duplicate) = file.services.iter().find(|s| !seen.insert(s.as_str())) {
        return Err(invalid(
            "services",
            format!("`{duplicate}` is listed twice"),
        ));
    }

    let edge = EdgeConfig {
        listen: address("edge.listen", &file.edge.listen)?,
        body_limit_bytes: positive(
            "edge.body_limit_bytes",
            file.edge.body_limit_bytes,
            &invalid,
        )?,
        request_timeout: Duration::from_millis(positive(
            "edge.request_timeout_ms",
            file.edge.request_timeout_ms,
            &invalid,
        )?),
        shutdown_grace: Duration::from_millis(file.edge.shutdown_grace_ms),
        max_connections: positive("edge.max_connections", file.edge.max_connections, &invalid)?,
        header_read_timeout: Duration::from_millis(positive(
            "edge.header_read_timeout_ms",
            file.edge.header_read_timeout_ms,
            &invalid,
        )?),
        keep_alive_timeout: Duration::from_millis(positive(
            "edge.keep_alive_timeout_ms",
            file.edge.keep_alive_timeout_ms,
            &invalid,
        )?),
    };
    // The header timer also runs while a connection waits for its next request, so a longer
    // keep-alive timeout could never take effect.
    if edge.keep_alive_timeout > edge.header_read_timeout {
        return Err(invalid(
            "edge.keep_alive_timeout_ms",
            format!(
                "{} is longer than edge.header_read_timeout_ms ({}), which also bounds idle connections",
                file.edge.keep_alive_timeout_ms, file.edge.header_read_timeout_ms
            ),
        ));
    }

    let auth = &file.auth;
    if auth.issuer.is_empty() {
        return Err(invalid("auth.issuer", "must not be empty".into()));
    }
    if auth.audience.is_empty() {
        return Err(invalid("auth.audience", "must not be empty".into()));
    }
    if auth.dev_key.is_some() && file.environment != Environment::Development {
        return Err(invalid(
            "auth.dev_key",
            "a key written in the config file is only allowed with environment = \"development\"; \
             use auth.key_env or auth.key_file"
                .into(),
        ));
    }
    let (key, key_source) = if let Some(key) = env_var(&auth.key_env) {
        (key, format!("environment variable {}", auth.key_env))
    } else if let Some(key_file) = &auth.key_file {
        let key_path = path.parent().unwrap_or(Path::new(".")).join(key_file);
        let key = std::fs::read_to_string(&key_path).map_err(|e| {
            invalid(
                "auth.key_file",
                format!("cannot read {}: {e}", key_path.display()),
            )
        })?;
        (
            key.trim_end_matches(['\n', '\r']).to_owned(),
            format!("file {}", key_path.display()),
        )
    } else if let Some(dev_key) = &auth.dev_key {
        (
            dev_key.expose().to_owned(),
            "auth.dev_key (development only)".to_owned(),
        )
    } else {
        return Err(invalid(
            "auth",
            format!(
                "no signing key: set the environment variable {} or auth.key_file",
                auth.key_env
            ),
        ));
    };
    let min_key = match file.environment {
        Environment::Production => MIN_PRODUCTION_KEY_BYTES,
        Environment::Development => 16,
    };
    if key.len() < min_key {
        return Err(invalid(
            "auth",
            format!(
                "the key from {key_source} has {} bytes; at least {min_key} are needed",
                key.len()
            ),
        ));
    }
    let auth = AuthConfig {
        issuer: auth.issuer.clone(),
        audience: auth.audience.clone(),
        key: Secret::new(key),
        key_source,
        leeway: Duration::from_secs(auth.leeway_seconds),
    };

    let rate_limit = RateLimitConfig {
        per_second: NonZeroU32::new(file.rate_limit.requests_per_second).ok_or_else(|| {
            invalid(
                "rate_limit.requests_per_second",
                "must be at least 1".into(),
            )
        })?,
        burst: NonZeroU32::new(file.rate_limit.burst)
            .ok_or_else(|| invalid("rate_limit.burst", "must be at least 1".into()))?,
    };

    let store = StoreConfig {
        snapshot_every: file.store.snapshot_every,
        idle_timeout: (file.store.idle_timeout_seconds > 0)
            .then(|| Duration::from_secs(file.store.idle_timeout_seconds)),
        command_timeout: Duration::from_millis(positive(
            "store.command_timeout_ms",
            file.store.command_timeout_ms,
            &invalid,
        )?),
        max_batch_events: positive(
            "store.max_batch_events",
            file.store.max_batch_events,
            &invalid,
        )?,
        max_linger: Duration::from_micros(file.store.max_linger_us),
        cache_bytes: file.store.cache_mib * 1024 * 1024,
        min_free_bytes: file.store.min_free_mib.saturating_mul(1024 * 1024),
        command_retention: (file.store.command_retention_seconds > 0)
            .then(|| Duration::from_secs(file.store.command_retention_seconds)),
        journal: file.store.journal,
    };

    let telemetry = TelemetryConfig {
        format: file.telemetry.log_format.unwrap_or(match file.environment {
            Environment::Development => LogFormat::Pretty,
            Environment::Production => LogFormat::Json,
        }),
        level: file
            .telemetry
            .log_level
            .clone()
            .unwrap_or_else(|| "info".into()),
    };

    let (degraded, unhealthy) = (
        file.health.disk_degraded_below_percent,
        file.health.disk_unhealthy_below_percent,
    );
    if !(0.0..=100.0).contains(&unhealthy) || !(unhealthy..=100.0).contains(&degraded) {
        return Err(invalid(
            "health",
            format!(
                "need 0 <= disk_unhealthy_below_percent ({unhealthy}) <= disk_degraded_below_percent ({degraded}) <= 100"
            ),
        ));
    }
    let health = HealthConfig {
        disk_degraded_below: degraded / 100.0,
        disk_unhealthy_below: unhealthy / 100.0,
        disk_unhealthy_below_bytes: file
            .health
            .disk_unhealthy_below_mib
            .saturating_mul(1024 * 1024),
    };

    let file = joining_if_unlisted(file);
    let cookie = cluster_cookie(path, &file, env_var(&file.cluster.cookie_env), &invalid)?;
    let cluster = validate_cluster(path, &file, cookie, &invalid, &address)?;
    let mut cluster = cluster;
    cluster.replicated = store.journal == JournalKind::Raft;
    if cluster.join && !cluster.replicated {
        return Err(invalid(
            "cluster.join",
            "a node joins a running cluster only with store.journal = \"raft\" (a direct cluster's member list is fixed)".into(),
        ));
    }
    if cluster.join && cluster.members.len() < 2 {
        return Err(invalid(
            "cluster.members",
            "with cluster.join = true, list this node and at least one member of the cluster to contact".into(),
        ));
    }

    // The printed config shows what the node runs with, defaults chosen by environment included.
    let mut file = file;
    file.telemetry.log_format = Some(telemetry.format);
    file.telemetry.log_level = Some(telemetry.level.clone());

    Ok(NodeConfig {
        source: path.to_owned(),
        environment: file.environment,
        node_name: file.node_name.clone(),
        data_dir: file.data_dir.clone(),
        services: file.services.clone(),
        edge,
        auth,
        rate_limit,
        store,
        telemetry,
        health,
        cluster,
        file,
    })
}

/// The cluster cookie and where it came from: the environment variable, the cookie file, or
/// (in development only) `cluster.dev_cookie`.
fn cluster_cookie(
    path: &Path,
    file: &ConfigFile,
    from_env: Option<String>,
    invalid: &impl Fn(&str, String) -> ConfigError,
) -> Result<Option<(String, String)>, ConfigError> {
    let section = &file.cluster;
    if section.dev_cookie.is_some() && file.environment != Environment::Development {
        return Err(invalid(
            "cluster.dev_cookie",
            "a cookie written in the config file is only allowed with environment = \"development\"; \
             use cluster.cookie_env or cluster.cookie_file"
                .into(),
        ));
    }
    if let Some(cookie) = from_env {
        return Ok(Some((
            cookie,
            format!("environment variable {}", section.cookie_env),
        )));
    }
    if let Some(cookie_file) = &section.cookie_file {
        let cookie_path = path.parent().unwrap_or(Path::new(".")).join(cookie_file);
        let cookie = std::fs::read_to_string(&cookie_path).map_err(|e| {
            invalid(
                "cluster.cookie_file",
                format!("cannot read {}: {e}", cookie_path.display()),
            )
        })?;
        return Ok(Some((
            cookie.trim_end_matches(['\n', '\r']).to_owned(),
            format!("file {}", cookie_path.display()),
        )));
    }
    Ok(section.dev_cookie.as_ref().map(|cookie| {
        (
            cookie.expose().to_owned(),
            "cluster.dev_cookie (development only)".to_owned(),
        )
    }))
}

/// Shortest cluster cookie accepted: it is the only thing keeping strangers out of the cluster
/// when TLS is off.
const MIN_COOKIE_BYTES: usize = 16;

/// Checks a `host:port` address: a port from 1 to 65535 after the last `:`, and a host that is
/// an IP address (IPv6 in brackets) or a DNS name.
fn host_port(
    key: &str,
    value: &str,
    invalid: &impl Fn(&str, String) -> ConfigError,
) -> Result<String, ConfigError> {
    let wrong = || {
        invalid(
            key,
            format!("`{value}` is not an address like 10.0.0.1:4600 or node-1.playhouse:4600"),
        )
    };
    if value.parse::<SocketAddr>().is_ok() {
        return Ok(value.to_owned());
    }
    let (host, port) = value.rsplit_once(':').ok_or_else(wrong)?;
    let port_ok = port.parse::<u16>().is_ok_and(|port| port > 0);
    let name_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if port_ok && name_ok {
        Ok(value.to_owned())
    } else {
        Err(wrong())
    }
}

/// With `cluster.advertise` set, a node that `cluster.members` does not list is added to it at
/// that address and joins through the members listed; the printed config shows it so.
fn joining_if_unlisted(mut file: ConfigFile) -> ConfigFile {
    let cluster = &mut file.cluster;
    if let Some(advertise) = &cluster.advertise
        && !cluster.members.iter().any(|m| m.name == file.node_name)
    {
        cluster.members.insert(
            0,
            file::MemberSection {
                name: file.node_name.clone(),
                address: advertise.clone(),
                edge: None,
                services: Vec::new(),
            },
        );
        cluster.join = true;
    }
    file
}

fn validate_cluster(
    path: &Path,
    file: &ConfigFile,
    cookie: Option<(String, String)>,
    invalid: &impl Fn(&str, String) -> ConfigError,
    address: &impl Fn(&str, &str) -> Result<SocketAddr, ConfigError>,
) -> Result<ClusterConfig, ConfigError> {
    let section = &file.cluster;
    let mut members = Vec::with_capacity(section.members.len());
    for (index, member) in section.members.iter().enumerate() {
        let key = |field: &str| format!("cluster.members[{index}].{field}");
        if members.iter().any(|m: &Member| m.name == member.name) {
            return Err(invalid(
                &key("name"),
                format!("`{}` is listed twice", member.name),
            ));
        }
        members.push(Member {
            name: member.name.clone(),
            address: host_port(&key("address"), &member.address, invalid)?,
            edge: member
                .edge
                .as_deref()
                .map(|edge| host_port(&key("edge"), edge, invalid))
                .transpose()?,
            services: member.services.clone(),
        });
    }
    if !members.is_empty() {
        let Some(me) = members.iter().find(|m| m.name == file.node_name) else {
            return Err(invalid(
                "cluster.members",
                format!("this node (`{}`) is not among the members", file.node_name),
            ));
        };
        let mut mine = me.services.clone();
        let mut configured = file.services.clone();
        mine.sort();
        configured.sort();
        // Either may be left out (every service, or the other's list); both given, they agree.
        if !mine.is_empty() && !configured.is_empty() && mine != configured {
            return Err(invalid(
                "cluster.members",
                format!(
                    "this node's entry lists services {mine:?} but `services` is {configured:?}; placement needs them equal"
                ),
            ));
        }
    }
    if members.len() > 1 && cookie.is_none() {
        return Err(invalid(
            "cluster",
            format!(
                "a cluster needs a cookie: set the environment variable {} or cluster.cookie_file{}",
                section.cookie_env,
                match file.environment {
                    Environment::Development => " (or cluster.dev_cookie)",
                    Environment::Production => "",
                }
            ),
        ));
    }
    if let Some((cookie, source)) = &cookie
        && members.len() > 1
        && cookie.len() < MIN_COOKIE_BYTES
    {
        return Err(invalid(
            "cluster",
            format!(
                "the cookie from {source} has {} bytes; at least {MIN_COOKIE_BYTES} are needed",
                cookie.len()
            ),
        ));
    }
    if section.heartbeat_timeout_ms <= section.heartbeat_interval_ms {
        return Err(invalid(
            "cluster.heartbeat_timeout_ms",
            "must be longer than cluster.heartbeat_interval_ms".into(),
        ));
    }
    if members.len() > 1 && section.call_timeout_ms >= file.edge.request_timeout_ms {
        return Err(invalid(
            "cluster.call_timeout_ms",
            format!(
                "must be shorter than edge.request_timeout_ms ({} ms): a request served on another node must get its answer, or its error, before the edge gives up on it",
                file.edge.request_timeout_ms
            ),
        ));
    }
    let max_handshakes = positive("cluster.max_handshakes", section.max_handshakes, invalid)?;
    let max_connections = positive("cluster.max_connections", section.max_connections, invalid)?;
    // Room for a link from every peer besides the handshakes, so that strangers filling the
    // handshakes never crowd a member out.
    let needed = u64::from(max_handshakes) + members.len() as u64;
    if u64::from(max_connections) < needed {
        return Err(invalid(
            "cluster.max_connections",
            format!(
                "must be at least cluster.max_handshakes ({max_handshakes}) plus the {} members, {needed}; got {max_connections}",
                members.len()
            ),
        ));
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let tls = match &section.tls {
        None => None,
        Some(tls) => {
            let readable = |key: &str, file: &Path| -> Result<PathBuf, ConfigError> {
                let resolved = base.join(file);
                std::fs::metadata(&resolved).map_err(|e| {
                    invalid(key, format!("cannot read {}: {e}", resolved.display()))
                })?;
                Ok(resolved)
            };
            Some(TlsConfig {
                cert: readable("cluster.tls.cert", &tls.cert)?,
                key: readable("cluster.tls.key", &tls.key)?,
                ca: readable("cluster.tls.ca", &tls.ca)?,
            })
        }
    };
    let (cookie, cookie_source) = match cookie {
        Some((cookie, source)) => (Some(Secret::new(cookie)), source),
        None => (None, "none (a node alone)".to_owned()),
    };
    Ok(ClusterConfig {
        listen: address("cluster.listen", &section.listen)?,
        cookie,
        cookie_source,
        members,
        join: section.join,
        max_moves: positive("cluster.max_moves", section.max_moves, invalid)?,
        heartbeat_interval: Duration::from_millis(positive(
            "cluster.heartbeat_interval_ms",
            section.heartbeat_interval_ms,
            invalid,
        )?),
        heartbeat_timeout: Duration::from_millis(section.heartbeat_timeout_ms),
        partitions: positive("cluster.partitions", section.partitions, invalid)?,
        replicated: false,
        replication_factor: positive(
            "cluster.replication_factor",
            section.replication_factor,
            invalid,
        )?,
        raft_snapshot_every: positive(
            "cluster.raft_snapshot_every",
            section.raft_snapshot_every,
            invalid,
        )?,
        call_timeout: Duration::from_millis(positive(
            "cluster.call_timeout_ms",
            section.call_timeout_ms,
            invalid,
        )?),
        max_frame_bytes: positive("cluster.max_frame_bytes", section.max_frame_bytes, invalid)?,
        handshake_timeout: Duration::from_millis(positive(
            "cluster.handshake_timeout_ms",
            section.handshake_timeout_ms,
            invalid,
        )?),
        max_connections,
        max_handshakes,
        max_clock_skew: Duration::from_millis(positive(
            "cluster.max_clock_skew_ms",
            section.max_clock_skew_ms,
            invalid,
        )?),
        tls,
    })
}

fn positive<T: PartialOrd + Default + Copy + std::fmt::Display>(
    key: &str,
    value: T,
    invalid: &impl Fn(&str, String) -> ConfigError,
) -> Result<T, ConfigError> {
    if value > T::default() {
        Ok(value)
    } else {
        Err(invalid(key, format!("must be greater than 0, got {value}")))
    }
}

#[cfg(test)]
mod tests;
