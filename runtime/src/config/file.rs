//! The config file's shape, exactly as written in TOML. Unknown keys are errors.
//!
//! Every section has defaults, so a file only says what differs. [`super::NodeConfig`] is what
//! the rest of the code trusts: this raw form after validation.

use std::path::PathBuf;

/// Partitions per aggregate kind when the config does not say (`cluster.partitions`).
pub const DEFAULT_PARTITIONS: u32 = 64;

use serde::{Deserialize, Serialize};

use super::Secret;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `development` allows an inline dev key and prints readable logs; `production` does not.
    pub environment: Environment,
    /// This node's name in the cluster, logs and metrics.
    pub node_name: String,
    #[serde(default = "defaults::data_dir")]
    pub data_dir: PathBuf,
    /// The domain services this node hosts; absent or empty: every service of the build (or,
    /// in a cluster, those its member entry lists).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    #[serde(default)]
    pub edge: EdgeSection,
    pub auth: AuthSection,
    #[serde(default)]
    pub rate_limit: RateLimitSection,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub telemetry: TelemetrySection,
    #[serde(default)]
    pub health: HealthSection,
    /// Parsed and validated now; used once nodes form a cluster.
    #[serde(default)]
    pub cluster: ClusterSection,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Development,
    Production,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeSection {
    /// Address the HTTP edge listens on, `host:port`.
    pub listen: String,
    /// Largest request body accepted, in bytes.
    pub body_limit_bytes: usize,
    /// A request still running after this long is answered 503.
    pub request_timeout_ms: u64,
    /// On SIGTERM/Ctrl-C, how long in-flight requests get to finish.
    pub shutdown_grace_ms: u64,
    /// Most connections open at once; lowered at start to fit the open-file limit. At the cap,
    /// the connections idle longest are closed to let new clients in.
    pub max_connections: usize,
    /// A request head must arrive within this long (this also bounds an idle connection).
    pub header_read_timeout_ms: u64,
    /// A keep-alive connection with no request for this long is closed.
    pub keep_alive_timeout_ms: u64,
}

impl Default for EdgeSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            body_limit_bytes: 64 * 1024,
            request_timeout_ms: 10_000,
            shutdown_grace_ms: 10_000,
            max_connections: 4096,
            header_read_timeout_ms: 10_000,
            keep_alive_timeout_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// The `iss` tokens must carry.
    pub issuer: String,
    /// The `aud` tokens must carry.
    pub audience: String,
    /// Environment variable holding the HS256 key. Takes precedence over the other sources.
    #[serde(default = "defaults::key_env")]
    pub key_env: String,
    /// File holding the HS256 key (trailing newline ignored).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// A key written in the file itself: refused outside `development`.
    #[serde(default)]
    pub dev_key: Option<Secret>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    #[serde(default = "defaults::leeway_seconds")]
    pub leeway_seconds: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSection {
    /// Sustained requests per second per token subject (or per client address without a token).
    pub requests_per_second: u32,
    /// Requests allowed at once above the sustained rate.
    pub burst: u32,
}

impl Default for RateLimitSection {
    fn default() -> Self {
        Self {
            requests_per_second: 100,
            burst: 200,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// Snapshot an aggregate every this many events (0 = never).
    pub snapshot_every: u64,
    /// Passivate an aggregate after this long without a command (0 = never).
    pub idle_timeout_seconds: u64,
    /// How long a command may take before the caller gets a timeout.
    pub command_timeout_ms: u64,
    /// Most events in one group commit.
    pub max_batch_events: usize,
    /// How long the writer waits for more work before committing, in microseconds.
    pub max_linger_us: u64,
    /// redb page cache of the event log, in MiB (the stream index gets a quarter more).
    pub cache_mib: usize,
    /// Where a node writes its aggregates' and sagas' events: `direct` into its store (each
    /// partition lives on one member), or `raft`, through each partition's Raft group, which
    /// replicates it on `cluster.replication_factor` members (a node alone: a group of one;
    /// slower today, see BENCHMARKS.md). Every member must say the same.
    pub journal: JournalKind,
    /// Free space to keep on the data directory's volume, in MiB: below it, writes are
    /// refused (503, naming the disk) and reads go on, so a full disk never fails a commit
    /// halfway. 0 keeps no reserve.
    pub min_free_mib: u64,
    /// How long a processed command id is kept, in seconds: a command sent again with the
    /// same id (an `Idempotency-Key`, a saga's step) within it is answered as the first was,
    /// later it applies as new. Refusals and fences are kept for good. 0 keeps every id. With
    /// replicated partitions, each partition's leader's setting decides for its replicas:
    /// give every member the same.
    pub command_retention_seconds: u64,
}

/// See [`StoreSection::journal`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JournalKind {
    #[default]
    Direct,
    Raft,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            snapshot_every: 100,
            idle_timeout_seconds: 300,
            command_timeout_ms: 5_000,
            max_batch_events: 4096,
            max_linger_us: 0,
            cache_mib: 2,
            min_free_mib: 256,
            command_retention_seconds: 7 * 24 * 3600,
            journal: JournalKind::Direct,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthSection {
    /// `/health` turns degraded when the data volume has less than this share free (percent).
    pub disk_degraded_below_percent: f64,
    /// ...and unhealthy (503) below this share...
    pub disk_unhealthy_below_percent: f64,
    /// ...or below this many MiB free, whatever the share. A share alone misjudges volumes:
    /// 8% of a 250 GiB disk is 20 GiB of room, while 10% of a 4 GiB volume is a few minutes.
    pub disk_unhealthy_below_mib: u64,
}

impl Default for HealthSection {
    fn default() -> Self {
        Self {
            disk_degraded_below_percent: 10.0,
            disk_unhealthy_below_percent: 2.0,
            disk_unhealthy_below_mib: 1024,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySection {
    /// `pretty` or `json`; by default pretty in development, JSON in production.
    pub log_format: Option<LogFormat>,
    /// A tracing filter (`info`, `playhouse=debug,info`); `RUST_LOG` overrides it.
    pub log_level: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// Address the cluster transport listens on, `host:port`: only that interface is bound.
    pub listen: String,
    /// Environment variable holding the shared cluster cookie. Takes precedence over the other
    /// sources.
    pub cookie_env: String,
    /// File holding the cookie (trailing newline ignored).
    pub cookie_file: Option<PathBuf>,
    /// A cookie written in the file itself: refused outside `development`.
    pub dev_cookie: Option<Secret>,
    /// Every member, this node included. With `join = true`: this node and a few members of
    /// the running cluster to contact (the cluster's own member list is in its metadata).
    pub members: Vec<MemberSection>,
    /// With `store.journal = "raft"`: this node joins a running cluster (it asks the other
    /// members listed to be admitted, and an admin admits it) rather than forming a new one
    /// with the members listed.
    pub join: bool,
    /// This node's cluster address as the members reach it, `host:port`. A node not listed in
    /// `members` is added to the list at this address and joins the cluster through the
    /// members listed (`join = true`); a node listed ignores it. So one config serves the
    /// founding members and every node added later (a Kubernetes StatefulSet's pods).
    pub advertise: Option<String>,
    /// With `store.journal = "raft"`: how many partitions move to other members at once
    /// across the cluster (a join, a drain, a member removed), so serving goes on during a
    /// move. The member leading the metadata group grants the moves: its setting rules.
    pub max_moves: u32,
    pub heartbeat_interval_ms: u64,
    /// A member silent for this long is considered down.
    pub heartbeat_timeout_ms: u64,
    /// Partitions per service; fixed for the life of the data.
    pub partitions: u32,
    /// With `store.journal = "raft"`: how many members hold a copy of each partition (its
    /// Raft group's voters); all of them when there are fewer members.
    pub replication_factor: u32,
    /// With `store.journal = "raft"`: a partition's applied state is snapshotted after this
    /// many entries, and its Raft log dropped behind the snapshot (a replica too far behind
    /// is sent the snapshot instead of the entries).
    pub raft_snapshot_every: u64,
    /// How long a call to another node may take before its caller gets a timeout.
    pub call_timeout_ms: u64,
    /// Largest frame accepted from another node, in bytes; a peer sending more is disconnected.
    pub max_frame_bytes: u64,
    /// A connection to the cluster port must finish its TLS and cookie handshakes within this,
    /// or it is closed.
    pub handshake_timeout_ms: u64,
    /// Connections the cluster port holds at most, linked or still in their handshake: its
    /// share of the open-file limit.
    pub max_connections: u32,
    /// Of those, connections still in their handshake (not yet proved the cookie) at most; at
    /// the cap, the oldest of the address holding the most is closed to make room.
    pub max_handshakes: u32,
    /// How far apart two members' clocks may be: a member's link hello carries its time, and
    /// one further from the acceptor's clock is refused (it could be a recording).
    pub max_clock_skew_ms: u64,
    /// Mutual TLS for the links between nodes; plain TCP when absent.
    pub tls: Option<TlsSection>,
}

impl Default for ClusterSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:4600".into(),
            cookie_env: "PLAYHOUSE_CLUSTER_COOKIE".into(),
            cookie_file: None,
            dev_cookie: None,
            members: Vec::new(),
            join: false,
            advertise: None,
            max_moves: 2,
            heartbeat_interval_ms: 250,
            heartbeat_timeout_ms: 1_500,
            partitions: DEFAULT_PARTITIONS,
            replication_factor: 3,
            raft_snapshot_every: 10_000,
            call_timeout_ms: 5_000,
            max_frame_bytes: 4 * 1024 * 1024,
            handshake_timeout_ms: 5_000,
            max_connections: 128,
            max_handshakes: 32,
            max_clock_skew_ms: 30_000,
            tls: None,
        }
    }
}

/// Mutual TLS between nodes: each node presents `cert` (whose subject alternative names carry
/// its member name) and accepts only peers whose certificates `ca` signed. Paths are relative
/// to the config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// This node's certificate chain, PEM.
    pub cert: PathBuf,
    /// Its private key, PEM.
    pub key: PathBuf,
    /// The CA that signs every member's certificate, PEM.
    pub ca: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberSection {
    pub name: String,
    /// The member's cluster address.
    pub address: String,
    /// The member's HTTP edge address, for forwarding.
    #[serde(default)]
    pub edge: Option<String>,
    /// The services it hosts; absent or empty: every service of the build.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
}

mod defaults {
    use std::path::PathBuf;

    pub fn data_dir() -> PathBuf {
        PathBuf::from("./data")
    }

    pub fn key_env() -> String {
        "PLAYHOUSE_JWT_KEY".into()
    }

    pub fn leeway_seconds() -> u64 {
        5
    }
}
