//! Reports across the cluster: each member serves its own [`NodeStats`] to the others, and the
//! node the page asks gathers every member's at once (its own without a call). A member that
//! is not up is not called: its report is missing, with why, and the page shows it down.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{NodeStats, Ops};
use crate::cluster::{Cluster, Handler, Route};
use crate::codec;

/// The target other members call for this node's report.
const TARGET: &str = "ops";
/// How long a member's report is waited for: the page polls every 2 s, and a member too slow
/// to answer is shown without its report rather than holding up the others'.
const REPORT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ReportRequest {
    since_ms: u64,
}

/// One member's report, or why there is none.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct NodeReport {
    pub node: String,
    pub stats: Option<NodeStats>,
    pub error: Option<String>,
}

impl NodeReport {
    fn of(node: String, answer: Result<NodeStats, String>) -> Self {
        match answer {
            Ok(stats) => Self {
                node,
                stats: Some(stats),
                error: None,
            },
            Err(error) => Self {
                node,
                stats: None,
                error: Some(error),
            },
        }
    }
}

struct ReportHandler {
    ops: Ops,
    cluster: Cluster,
}

impl Handler for ReportHandler {
    fn handle(&self, operation: Vec<u8>) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        let (ops, cluster) = (self.ops.clone(), self.cluster.clone());
        Box::pin(async move {
            let request: ReportRequest =
                codec::decode(&operation).map_err(|e| format!("a report request: {e}"))?;
            codec::encode(&own_report(&ops, Some(&cluster), request.since_ms).await)
                .map_err(|e| e.to_string())
        })
    }

    /// A node that does not serve still reports: the page is where an operator sees why.
    fn needs_serving(&self) -> bool {
        false
    }
}

impl Cluster {
    /// Serves this node's report to the other members.
    pub fn serve_ops(&self, ops: &Ops) {
        let handler = ReportHandler {
            ops: ops.clone(),
            cluster: self.clone(),
        };
        self.register(TARGET, Arc::new(handler));
    }
}

/// This node's report, with whether it serves its partitions.
async fn own_report(
    ops: &Ops,
    cluster: Option<&Cluster>,
    since_ms: u64,
) -> Result<NodeStats, String> {
    let mut stats = ops.report(since_ms).await?;
    stats.not_serving_reason = cluster.and_then(|cluster| cluster.serving().err());
    Ok(stats)
}

/// `member`'s report, asked for without feeding its breaker.
async fn ask(cluster: &Cluster, member: &str, request: Vec<u8>) -> Result<NodeStats, String> {
    let bytes = cluster
        .call_uncounted(member, TARGET, request, REPORT_TIMEOUT)
        .await
        .map_err(|error| error.to_string())?;
    codec::decode::<Result<NodeStats, String>>(&bytes).unwrap_or_else(|error| {
        Err(format!(
            "its report does not decode ({error}): is it running another version of \
             playhouse? Members must run the same one"
        ))
    })
}

/// Every member's report (this node's alone without a cluster), by member name.
pub async fn gather(cluster: Option<&Cluster>, ops: &Ops, since_ms: u64) -> Vec<NodeReport> {
    let Some(cluster) = cluster else {
        return vec![NodeReport::of(
            ops.node().to_owned(),
            own_report(ops, None, since_ms).await,
        )];
    };
    let request = match codec::encode(&ReportRequest { since_ms }) {
        Ok(request) => request,
        Err(error) => {
            return vec![NodeReport::of(
                ops.node().to_owned(),
                Err(error.to_string()),
            )];
        }
    };
    let mut names: Vec<String> = cluster.member_names();
    names.sort();
    let asks = names.into_iter().map(|member| {
        let request = request.clone();
        async move {
            let answer = if member == cluster.node() {
                // Also while this node does not serve (`route_to` would call it unavailable).
                own_report(ops, Some(cluster), since_ms).await
            } else if let Route::Unavailable { reason, .. } = cluster.route_to(&member) {
                Err(reason)
            } else {
                ask(cluster, &member, request).await
            };
            NodeReport::of(member, answer)
        }
    });
    futures::future::join_all(asks).await
}
