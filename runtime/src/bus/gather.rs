//! Lists from read models across the cluster. Each member's projections see only its own log,
//! which holds only the partitions it owns, so a list is gathered: every member hosting the
//! service reads its page after the cursor (waiting, bounded, for `min_position`), and the
//! asking node merges the pages by cursor. An item is about one aggregate: without
//! replication it has one owner, and with replicated partitions each replica lists it, the
//! copies kept once by cursor; a row that changes after it is written is listed only by the
//! members voting in its stream's partition ([`super::Projection::stream_of`]), since a member
//! the partition moved off keeps the row as it was. So a merged page is a page of the whole
//! list.
//!
//! While a member is down its part is missing: the answer says which members are, and a cursor
//! taken from it does not go back for what they held before it.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::{Bus, scan_page_where};
use crate::cluster::{Cluster, Handler};
use crate::codec;

/// The target other members call for their part of a list.
pub(crate) const TARGET: &str = "read-models";

/// One member's part of a list: the items after `cursor` under `prefix` in `projection`'s
/// table (named like the projection), once it has applied the log up to `min_position` or to
/// its own log's end, whichever comes first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PageRequest {
    pub projection: String,
    pub prefix: Vec<u8>,
    pub cursor: Option<String>,
    pub limit: u32,
    pub min_position: Option<u64>,
}

/// What a member answers for its part.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MemberPage {
    /// Up to `limit` entries (cursor, encoded item), and where the member's log ends.
    Page {
        entries: Vec<(String, Vec<u8>)>,
        log_end: u64,
    },
    /// Its projection has not applied the log up to the wanted position within the wait.
    Behind { applied: Option<u64>, wanted: u64 },
}

/// A list gathered from every member hosting a service.
#[derive(Debug, Clone, Default)]
pub struct Gathered {
    /// Entries of every member that answered, merged in cursor order (not cut to a page).
    pub entries: Vec<(String, Vec<u8>)>,
    /// Members whose part is missing (down, not serving, or not answering), with why.
    pub missing: Vec<(String, String)>,
    /// Members whose projection had not reached the wanted position.
    pub behind: Vec<(String, MemberPage)>,
    /// How many members answered with their part.
    pub answered: usize,
    /// The furthest log end among members that answered.
    pub furthest_log_end: u64,
}

/// How long a member waits for its projection to reach the wanted position.
pub const POSITION_WAIT: Duration = Duration::from_secs(2);

/// This node's part of a list.
pub async fn local_page(bus: &Bus, request: &PageRequest) -> Result<MemberPage, String> {
    let projection = bus
        .projections()
        .into_iter()
        .map(|(name, _)| name)
        .find(|name| *name == request.projection)
        .ok_or_else(|| format!("no projection named `{}` runs here", request.projection))?;
    let log_end = *bus.store().watch_log_end().borrow();
    // A position names an event of the log that took the command, which may be another
    // member's: here it only means "whatever this log held by then", bounded by its end.
    if let Some(wanted) = request.min_position
        && log_end > 0
    {
        let wanted = wanted.min(log_end - 1);
        if let Err(behind) = bus.wait_for(projection, wanted, POSITION_WAIT).await {
            return Ok(MemberPage::Behind {
                applied: behind.applied,
                wanted,
            });
        }
    }
    let snapshot = bus.read_models().map_err(|e| e.to_string())?;
    // Only rows this node keeps up to date (with replication, of partitions it votes in).
    let entries = scan_page_where(
        &snapshot,
        projection,
        &request.prefix,
        request.cursor.as_deref(),
        request.limit as usize,
        bus.lister(projection),
    )
    .map_err(|e| e.to_string())?;
    Ok(MemberPage::Page { entries, log_end })
}

/// Asks every member hosting `service` for its part (this node's own part without a call) and
/// merges the answers.
pub async fn gather(cluster: &Cluster, bus: &Bus, service: &str, request: PageRequest) -> Gathered {
    let (up, down) = cluster.hosts_of(service);
    let mut gathered = Gathered {
        missing: down,
        ..Gathered::default()
    };
    let encoded = match codec::encode(&request) {
        Ok(encoded) => encoded,
        Err(error) => {
            gathered
                .missing
                .push((cluster.node().to_owned(), error.to_string()));
            return gathered;
        }
    };
    let asks = up.into_iter().map(|member| {
        let (encoded, request) = (encoded.clone(), &request);
        async move {
            let answer = if member == cluster.node() {
                match cluster.serving() {
                    Ok(()) => local_page(bus, request).await,
                    Err(reason) => Err(reason),
                }
            } else {
                match cluster.call(&member, TARGET, encoded).await {
                    Ok(bytes) => codec::decode::<Result<MemberPage, String>>(&bytes)
                        .unwrap_or_else(|e| Err(format!("an undecodable answer: {e}"))),
                    Err(error) => Err(error.to_string()),
                }
            };
            (member, answer)
        }
    });
    for (member, answer) in futures::future::join_all(asks).await {
        match answer {
            Ok(MemberPage::Page { entries, log_end }) => {
                gathered.answered += 1;
                gathered.furthest_log_end = gathered.furthest_log_end.max(log_end);
                gathered.entries.extend(entries);
            }
            Ok(behind @ MemberPage::Behind { .. }) => gathered.behind.push((member, behind)),
            Err(reason) => gathered.missing.push((member, reason)),
        }
    }
    gathered.entries.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
    gathered.entries.dedup_by(|(a, _), (b, _)| a == b);
    gathered.missing.sort();
    gathered
}

/// Answers other members' [`PageRequest`]s from this node's read models.
struct ReadModelHandler(Bus);

impl Handler for ReadModelHandler {
    fn handle(&self, operation: Vec<u8>) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        let bus = self.0.clone();
        Box::pin(async move {
            let request: PageRequest =
                codec::decode(&operation).map_err(|e| format!("a read-model page request: {e}"))?;
            codec::encode(&local_page(&bus, &request).await).map_err(|e| e.to_string())
        })
    }
}

/// Serves this node's part of read-model lists to the other members of `cluster`.
pub fn serve(cluster: &Cluster, bus: &Bus) {
    cluster.register(TARGET, Arc::new(ReadModelHandler(bus.clone())));
}
