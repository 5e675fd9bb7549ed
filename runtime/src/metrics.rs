//! The runtime's metric names, declared once with their descriptions.
//!
//! The `metrics` facade is a no-op until a recorder is installed (the node installs the
//! Prometheus one), so libraries and tests can record freely.

use std::time::Duration;

pub const STORE_COMMITS: &str = "playhouse_store_commits_total";
pub const STORE_BATCH_EVENTS: &str = "playhouse_store_batch_events";
pub const STORE_BATCH_OPS: &str = "playhouse_store_batch_operations";
pub const STORE_COMMIT_SECONDS: &str = "playhouse_store_commit_seconds";
pub const COMMANDS: &str = "playhouse_commands_total";
pub const COMMAND_SECONDS: &str = "playhouse_command_seconds";
pub const SUPERVISOR_RESTARTS: &str = "playhouse_supervisor_restarts_total";
pub const LIVE_ACTORS: &str = "playhouse_live_actors";
pub const HTTP_REQUESTS: &str = "playhouse_http_requests_total";
pub const HTTP_DURATION: &str = "playhouse_http_request_duration_seconds";
pub const PROJECTED_EVENTS: &str = "playhouse_projection_events_total";
pub const PROJECTION_LAG: &str = "playhouse_projection_lag_events";
pub const SAGAS: &str = "playhouse_sagas_total";
pub const SAGA_STEP_RETRIES: &str = "playhouse_saga_step_retries_total";
pub const SAGAS_RUNNING: &str = "playhouse_sagas_running";
pub const CIRCUIT_STATE: &str = "playhouse_circuit_state";
pub const CIRCUIT_TRANSITIONS: &str = "playhouse_circuit_transitions_total";
pub const CLUSTER_SERVED_SECONDS: &str = "playhouse_cluster_served_seconds";
pub const CLUSTER_MEMBERS_UP: &str = "playhouse_cluster_members_up";
pub const CLUSTER_MEMBER_TRANSITIONS: &str = "playhouse_cluster_member_transitions_total";
pub const CLUSTER_HEARTBEAT_RTT: &str = "playhouse_cluster_heartbeat_rtt_seconds";
pub const CLUSTER_HANDSHAKES: &str = "playhouse_cluster_handshakes_total";
pub const CLUSTER_CONNECTIONS: &str = "playhouse_cluster_connections";
pub const CLUSTER_ACCEPT_ERRORS: &str = "playhouse_cluster_accept_errors_total";
pub const RAFT_LEADERS: &str = "playhouse_raft_partitions_led";
pub const RAFT_LEADER_CHANGES: &str = "playhouse_raft_leader_changes_total";
pub const RAFT_ELECTIONS: &str = "playhouse_raft_terms_total";
pub const RAFT_REPLICATION_LAG: &str = "playhouse_raft_replication_lag_entries";
pub const ROUTED_RESENDS: &str = "playhouse_routed_resends_total";

/// Registers the descriptions of every runtime metric with the installed recorder.
pub fn describe() {
    metrics::describe_counter!(STORE_COMMITS, "Durable store transactions committed");
    metrics::describe_histogram!(STORE_BATCH_EVENTS, "Events per group commit");
    metrics::describe_histogram!(STORE_BATCH_OPS, "Write operations per group commit");
    metrics::describe_histogram!(
        STORE_COMMIT_SECONDS,
        metrics::Unit::Seconds,
        "Time to write and fsync one group commit"
    );
    metrics::describe_counter!(
        COMMANDS,
        "Commands handled, by aggregate kind and outcome: ok, duplicate (its command id seen before), rejected (refused by the domain, or a command id reused for another command), conflict, error"
    );
    metrics::describe_histogram!(
        COMMAND_SECONDS,
        metrics::Unit::Seconds,
        "Time an entity took for a command (decide, durable append, apply), by aggregate kind"
    );
    metrics::describe_counter!(
        SUPERVISOR_RESTARTS,
        "Child restarts, by supervisor and child"
    );
    metrics::describe_gauge!(
        LIVE_ACTORS,
        "Live aggregates in memory (loaded, not passivated), by kind"
    );
    metrics::describe_counter!(HTTP_REQUESTS, "HTTP requests, by route, method and status");
    metrics::describe_histogram!(
        HTTP_DURATION,
        metrics::Unit::Seconds,
        "HTTP request latency, by route and method"
    );
    metrics::describe_counter!(
        PROJECTED_EVENTS,
        "Log events read by a projection, by projection"
    );
    metrics::describe_counter!(
        SAGAS,
        "Saga transitions that end or block one: started, completed, compensated, stuck; by kind"
    );
    metrics::describe_counter!(
        SAGA_STEP_RETRIES,
        "Saga steps and compensations retried after a failure, by kind"
    );
    metrics::describe_gauge!(SAGAS_RUNNING, "Saga actors running, by kind");
    metrics::describe_gauge!(
        CIRCUIT_STATE,
        "Circuit breaker state per target service: 0 closed, 1 half-open, 2 open"
    );
    metrics::describe_counter!(
        CIRCUIT_TRANSITIONS,
        "Circuit breaker transitions, by target service and new state"
    );
    metrics::describe_histogram!(
        CLUSTER_SERVED_SECONDS,
        metrics::Unit::Seconds,
        "Time to serve a call from another node, by handler"
    );
    metrics::describe_gauge!(
        CLUSTER_MEMBERS_UP,
        "Peers currently up, as this node sees them"
    );
    metrics::describe_counter!(
        CLUSTER_MEMBER_TRANSITIONS,
        "Peer status changes, by peer and new status"
    );
    metrics::describe_histogram!(
        CLUSTER_HEARTBEAT_RTT,
        metrics::Unit::Seconds,
        "Heartbeat round trips, by peer"
    );
    metrics::describe_counter!(
        CLUSTER_HANDSHAKES,
        "Connections to the cluster port, by outcome: linked (proved the cookie), or closed before it: refused, evicted, timed_out, tls_failed, rejected, lost"
    );
    metrics::describe_gauge!(
        CLUSTER_CONNECTIONS,
        "Connections the cluster port holds, by state: handshaking or linked"
    );
    metrics::describe_counter!(
        CLUSTER_ACCEPT_ERRORS,
        "Accepts on the cluster port that failed for want of resources (file descriptors, memory)"
    );
    metrics::describe_gauge!(
        RAFT_LEADERS,
        "Partitions this node leads (and has applied its term's first entry of)"
    );
    metrics::describe_counter!(
        RAFT_LEADER_CHANGES,
        "Times a partition this node replicates got another leader (or lost it), as this node saw it: failovers and handovers"
    );
    metrics::describe_counter!(
        RAFT_ELECTIONS,
        "New terms this node's replicas saw: each is an election, won or not"
    );
    metrics::describe_counter!(
        ROUTED_RESENDS,
        "Operations on aggregates sent again to their partition's new leader, by what the first send answered (unavailable, interrupted)"
    );
    metrics::describe_gauge!(
        RAFT_REPLICATION_LAG,
        "On a leader: entries the furthest-behind replica of its partitions lacks"
    );
    metrics::describe_gauge!(
        PROJECTION_LAG,
        "Events in the log that a projection has not applied yet, by projection"
    );
}

pub(crate) fn record_commit(ops: usize, events: usize, took: Duration) {
    metrics::counter!(STORE_COMMITS).increment(1);
    metrics::histogram!(STORE_BATCH_OPS).record(ops as f64);
    metrics::histogram!(STORE_BATCH_EVENTS).record(events as f64);
    metrics::histogram!(STORE_COMMIT_SECONDS).record(took.as_secs_f64());
}
