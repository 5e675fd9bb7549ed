//! Reading and writing a saga's stream, with its summary in the saga tables kept in step (in
//! the same transaction as each event).

use std::marker::PhantomData;

use crate::bus::key;
use crate::codec;
use crate::replication::{Journal, ReplicatedTable};
use crate::store::{AppendRequest, EventMetadata, EventStore, NewEvent, StoreError, TableChange};

use super::record::{Phase, SagaEvent, SagaState, SagaSummary};
use super::{SagaKind, Step};

/// kind/id -> [`SagaSummary`], for every saga.
pub const SAGAS_TABLE: &str = "sagas";
/// kind/id -> (), for the sagas not finished: what a node resumes when it starts.
pub const SAGAS_OPEN_TABLE: &str = "sagas_open";
/// kind/status -> how many sagas of the kind finished so (a counter, see
/// [`TableChange::Add`]), for `completed` and `compensated`: what the operations page shows
/// without reading every saga.
pub const SAGA_COUNTS_TABLE: &str = "saga_counts";

/// The saga tables as a partition's snapshot carries them: a saga's summary goes with its
/// stream's partition, and brings along its entry among the open sagas, or its count among the
/// finished ones.
pub fn replicated_tables() -> Vec<ReplicatedTable> {
    vec![ReplicatedTable {
        table: SAGAS_TABLE,
        stream_of: stream_of_entry,
        with_row: companions_of_summary,
    }]
}

/// The stream of the saga whose entry key is `kind/id/` (see [`SagaLog::stream`]).
fn stream_of_entry(key: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(key).ok()?.strip_suffix('/')?;
    let (kind, id) = text.split_once('/')?;
    Some(format!("{kind}-{id}"))
}

/// What a summary's row brings when a snapshot installs it: the saga is open, or it counts
/// among its kind's finished sagas (and is not open).
fn companions_of_summary(key: &[u8], value: &[u8]) -> Vec<TableChange> {
    let Ok(summary) = codec::decode::<SagaSummary>(value) else {
        return Vec::new();
    };
    if matches!(summary.status.as_str(), "completed" | "compensated") {
        vec![
            TableChange::Delete {
                table: SAGAS_OPEN_TABLE.into(),
                key: key.to_vec(),
            },
            TableChange::Add {
                table: SAGA_COUNTS_TABLE.into(),
                key: crate::bus::key(&[&summary.kind, &summary.status]),
                delta: 1,
            },
        ]
    } else {
        vec![TableChange::Put {
            table: SAGAS_OPEN_TABLE.into(),
            key: key.to_vec(),
            value: Vec::new(),
        }]
    }
}

pub(crate) struct SagaLog<K: SagaKind> {
    store: EventStore,
    /// Where the saga's transitions are written (the store, or its partition's group).
    journal: Journal,
    kind: PhantomData<fn() -> K>,
}

impl<K: SagaKind> Clone for SagaLog<K> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            journal: self.journal.clone(),
            kind: PhantomData,
        }
    }
}

impl<K: SagaKind> SagaLog<K> {
    /// The store the sagas live in.
    pub(crate) fn store(&self) -> &EventStore {
        &self.store
    }

    pub(crate) fn new(store: EventStore) -> Self {
        Self {
            journal: Journal::Direct(store.clone()),
            store,
            kind: PhantomData,
        }
    }

    /// This log writing through `journal`.
    pub(crate) fn with_journal(self, journal: Journal) -> Self {
        Self { journal, ..self }
    }

    /// Whether this node runs saga `id` now: it writes the saga's stream (with replication:
    /// it leads the stream's partition).
    pub(crate) fn runs_here(&self, id: &str) -> bool {
        self.journal.leads(&Self::stream(id))
    }

    /// Whether the saga streams are written through partition groups (where a change of
    /// leader refuses writes for a moment).
    pub(crate) fn is_replicated(&self) -> bool {
        self.journal.is_replicated()
    }

    /// Calls `listener` when this node comes to lead a partition or stops (see
    /// [`Journal::on_leadership`]).
    pub(crate) fn on_leadership(&self, listener: crate::replication::LeadershipListener) {
        self.journal.on_leadership(listener);
    }

    /// Waits until this node may read saga `id` from its store (see
    /// [`Journal::read_barrier`]).
    pub(crate) async fn read_barrier(&self, id: &str) -> Result<(), StoreError> {
        self.journal.read_barrier(&Self::stream(id)).await
    }

    pub(crate) fn stream(id: &str) -> String {
        format!("{}-{id}", K::KIND)
    }

    /// The saga's state from its stream; `None` if it was never started.
    pub(crate) fn load(&self, id: &str) -> Result<Option<SagaState<K::Input>>, StoreError> {
        let stream = Self::stream(id);
        let records = self.store.read_stream(&stream)?;
        let events = records
            .iter()
            .map(|record| {
                codec::decode::<SagaEvent<K::Input>>(&record.payload).map_err(|source| {
                    StoreError::Corrupt {
                        stream: stream.clone(),
                        version: record.version,
                        source,
                    }
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SagaState::fold(&events).map(|mut state| {
            state.correlation_id = records
                .first()
                .and_then(|started| started.correlation_id.clone())
                .unwrap_or_else(|| id.to_owned());
            state
        }))
    }

    /// Writes the first event of saga `id`, the `Started` of `input`, for the request
    /// `correlation_id`. Fails with a conflict if the saga was started before.
    pub(crate) async fn start(
        &self,
        id: &str,
        input: K::Input,
        subject: &str,
        steps: &[Step],
        correlation_id: &str,
    ) -> Result<SagaState<K::Input>, StoreError> {
        let started = SagaEvent::Started {
            input,
            subject: subject.to_owned(),
        };
        let mut state = SagaState::fold([&started]).expect("the first event is Started");
        state.correlation_id = correlation_id.to_owned();
        self.write(id, 0, started, state, steps, false).await
    }

    /// Writes `event` after `state`, with the saga's summary, and returns the state after it.
    /// Answers once durable.
    pub(crate) async fn append(
        &self,
        id: &str,
        state: &SagaState<K::Input>,
        event: SagaEvent<K::Input>,
        steps: &[Step],
    ) -> Result<SagaState<K::Input>, StoreError> {
        let mut after = state.clone();
        after.apply(&event);
        let finishes = !state.phase.is_finished() && after.phase.is_finished();
        self.write(id, state.version, event, after, steps, finishes)
            .await
    }

    /// Writes `event` with the saga's summary and its entry in the open sagas; the event that
    /// `finishes` the saga also counts it, by its final status. All in one transaction.
    async fn write(
        &self,
        id: &str,
        expected_version: u64,
        event: SagaEvent<K::Input>,
        after: SagaState<K::Input>,
        steps: &[Step],
        finishes: bool,
    ) -> Result<SagaState<K::Input>, StoreError> {
        let stream = Self::stream(id);
        let payload = codec::encode(&event).map_err(|source| StoreError::Encode {
            stream: stream.clone(),
            source,
        })?;
        let summary = summary::<K>(id, &after, steps);
        let entry = key(&[K::KIND, id]);
        let mut table_changes = vec![TableChange::Put {
            table: SAGAS_TABLE.into(),
            key: entry.clone(),
            value: codec::encode(&summary).map_err(|source| StoreError::Encode {
                stream: stream.clone(),
                source,
            })?,
        }];
        table_changes.push(if after.phase.is_finished() {
            TableChange::Delete {
                table: SAGAS_OPEN_TABLE.into(),
                key: entry,
            }
        } else {
            TableChange::Put {
                table: SAGAS_OPEN_TABLE.into(),
                key: entry,
                value: Vec::new(),
            }
        });
        if finishes {
            table_changes.push(TableChange::Add {
                table: SAGA_COUNTS_TABLE.into(),
                key: key(&[K::KIND, after.status().as_str()]),
                delta: 1,
            });
        }
        self.journal
            .append(AppendRequest {
                stream,
                expected_version,
                events: vec![NewEvent {
                    event_type: event.type_name().to_owned(),
                    schema_version: 1,
                    payload,
                }],
                rejection: None,
                command_id: None,
                fingerprint: 0,
                metadata: EventMetadata {
                    correlation_id: Some(after.correlation_id.clone()),
                    causation_id: None,
                    recorded_at_micros: None,
                },
                table_changes,
            })
            .await?;
        Ok(after)
    }

    /// The ids of this kind's sagas that have not finished.
    pub(crate) fn open(&self) -> Result<Vec<String>, StoreError> {
        let prefix = key(&[K::KIND]);
        let mut ids = Vec::new();
        let snapshot = self.store.read_models()?;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = snapshot.scan(SAGAS_OPEN_TABLE, &prefix, after.as_deref(), 1024)?;
            let Some((last, _)) = page.last() else {
                return Ok(ids);
            };
            after = Some(last.clone());
            ids.extend(page.iter().map(|(key, _)| {
                String::from_utf8_lossy(&key[prefix.len()..])
                    .trim_end_matches('/')
                    .to_owned()
            }));
        }
    }
}

fn summary<K: SagaKind>(id: &str, state: &SagaState<K::Input>, steps: &[Step]) -> SagaSummary {
    let step = match state.phase {
        Phase::Running { step } => state.stuck_at.or(Some(step)),
        Phase::Compensating { below } => state.stuck_at.or(below.checked_sub(1)),
        Phase::Completed | Phase::Compensated => None,
    };
    SagaSummary {
        kind: K::KIND.to_owned(),
        id: id.to_owned(),
        status: state.status().as_str().to_owned(),
        step: step
            .and_then(|step| steps.get(step))
            .map(|s| s.name.clone()),
        attempts: state.attempts,
        last_error: state.last_error.clone(),
        reason: state.reason.clone(),
        updated_at: crate::time::rfc3339_now(),
    }
}
