//! Reports across the cluster: each member serves its own [`NodeStats`] to the others, and the
//! node the page asks gathers every member's at once (its own without a call). A member that
//! is not up is not called: its report is missing, with why, and the page shows it down.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{NodeStats, Ops};
use crate::cluster::{Cluster, Handler, Route};
use crate::codec;

/// The target other members call for this node's report.
const TARGET: &str = "ops";

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

struct ReportHandler(Ops);

impl Handler for ReportHandler {
    fn handle(&self, operation: Vec<u8>) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        let ops = self.0.clone();
        Box::pin(async move {
            let request: ReportRequest =
                codec::decode(&operation).map_err(|e| format!("a report request: {e}"))?;
            codec::encode(&ops.report(request.since_ms)).map_err(|e| e.to_string())
        })
    }
}

impl Cluster {
    /// Serves this node's report to the other members.
    pub fn serve_ops(&self, ops: &Ops) {
        self.register(TARGET, Arc::new(ReportHandler(ops.clone())));
    }
}

/// Every member's report (this node's alone without a cluster), by member name.
pub async fn gather(cluster: Option<&Cluster>, ops: &Ops, since_ms: u64) -> Vec<NodeReport> {
    let Some(cluster) = cluster else {
        return vec![NodeReport::of(ops.node().to_owned(), ops.report(since_ms))];
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
            // This node reports even while it does not serve its partitions: the page is
            // where an operator sees why.
            let answer = if member == cluster.node() {
                ops.report(since_ms)
            } else {
                match cluster.route_to(&member) {
                    Route::Remote(_) => match cluster.call(&member, TARGET, request).await {
                        Ok(bytes) => codec::decode::<Result<NodeStats, String>>(&bytes)
                            .unwrap_or_else(|e| Err(format!("an undecodable report: {e}"))),
                        Err(error) => Err(error.to_string()),
                    },
                    Route::Unavailable { reason, .. } => Err(reason),
                    Route::Local => ops.report(since_ms),
                }
            };
            NodeReport::of(member, answer)
        }
    });
    futures::future::join_all(asks).await
}
