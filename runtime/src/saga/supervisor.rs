//! [`Sagas`]: a saga kind's handle (start one, read one) and its supervisor actor, which runs
//! one [`Runner`] per open saga, resumes the open ones when it starts, and restarts a runner
//! that crashes (it reloads its saga from the stream).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};

use super::log::SagaLog;
use super::record::SagaState;
use super::remote::{SagaHandler, SagaOperation, call, locate, target};
use super::runner::{Runner, RunnerArgs, RunnerMsg};
use super::{SagaError, SagaKind, SagaSettings, Step};
use crate::cluster::Cluster;
use crate::metrics::{SAGA_STEP_RETRIES, SAGAS, SAGAS_RUNNING};
use crate::replication::Journal;
use crate::replication::NEW_LEADER_WAIT;
use crate::store::{EventStore, StoreError};
use crate::supervision::{ChildSpec, Current, Restart};

/// How long a crashed saga waits before its runner is started again.
const RESTART_DELAY: Duration = Duration::from_secs(1);
/// How often the supervisor looks for open sagas that are not running (one started while it
/// was restarting, say).
const RESCAN_EVERY: Duration = Duration::from_secs(5);

/// The sagas of kind `K`: start them, read them. Cheap to clone.
pub struct Sagas<K: SagaKind> {
    /// The kind's supervisor, as it runs now.
    supervisor: Current<SupervisorMsg>,
    kind: Arc<K>,
    log: SagaLog<K>,
    settings: Arc<SagaSettings>,
    /// Where other nodes' sagas are; `None` on a node alone.
    cluster: Option<Cluster>,
}

impl<K: SagaKind> Clone for Sagas<K> {
    fn clone(&self) -> Self {
        Self {
            supervisor: self.supervisor.clone(),
            kind: self.kind.clone(),
            log: self.log.clone(),
            settings: self.settings.clone(),
            cluster: self.cluster.clone(),
        }
    }
}

impl<K: SagaKind> std::fmt::Debug for Sagas<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sagas").field("kind", &K::KIND).finish()
    }
}

impl<K: SagaKind> Sagas<K> {
    /// The sagas of `kind` in `store`, under a supervisor of their own (see
    /// [`Sagas::child_spec`]).
    pub fn new(kind: K, store: EventStore, settings: SagaSettings) -> Self {
        Self {
            supervisor: Current::default(),
            kind: Arc::new(kind),
            log: SagaLog::new(store),
            settings: Arc::new(settings),
            cluster: None,
        }
    }

    /// These sagas writing their transitions through `journal`. With replication a saga runs
    /// on its partition's leader only: the open sagas of a partition are resumed when this
    /// node comes to lead it (having applied everything committed), and a runner whose node
    /// stopped leading fails its next write and is not started again here.
    pub fn with_journal(mut self, journal: Journal) -> Self {
        self.log = self.log.with_journal(journal);
        let supervisor = self.supervisor.clone();
        self.log.on_leadership(Arc::new(move |event| {
            if let crate::replication::LeadershipEvent::Gained(_) = event
                && let Some(supervisor) = supervisor.get()
            {
                let _ = supervisor.cast(SupervisorMsg::Resume);
            }
        }));
        self
    }

    /// These sagas in `cluster` (when given): each runs on the owner of its stream's partition,
    /// starting and reading one goes there, and this node serves the other members' calls for
    /// the ones it owns.
    pub fn in_cluster(mut self, cluster: Option<Cluster>) -> Self {
        if let Some(cluster) = &cluster {
            cluster.register(target::<K>(), SagaHandler::shared(self.clone()));
        }
        self.cluster = cluster;
        self
    }

    /// The supervisor's child spec: it resumes the open sagas when it starts.
    pub fn child_spec(&self) -> ChildSpec {
        let sagas = self.clone();
        ChildSpec::published(
            format!("saga-{}", K::KIND),
            Restart::Permanent,
            self.supervisor.clone(),
            move || (SagaSupervisor::<K>::new(), sagas.clone()),
        )
    }

    /// Starts the saga `id` on `input` for the request `correlation_id` and has it run.
    /// Answers once its `Started` is durable: from then on it runs to its end, across crashes.
    /// Starting it again on the same input (a retried request) answers what it is, and makes
    /// sure it runs; on other input it is [`SagaError::StartedDifferently`].
    ///
    /// With replication, a start refused because its partition is changing leader (nothing
    /// was written) is tried again until the new leader is known, for at most
    /// [`NEW_LEADER_WAIT`]: a failover costs the caller a wait, not an error.
    pub async fn start(
        &self,
        id: &str,
        input: K::Input,
        subject: &str,
        correlation_id: &str,
    ) -> Result<SagaState<K::Input>, SagaError> {
        let deadline = tokio::time::Instant::now() + NEW_LEADER_WAIT;
        loop {
            match self
                .start_once(id, input.clone(), subject, correlation_id)
                .await
            {
                Err(SagaError::Unavailable(_))
                    if self.log.is_replicated() && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                answer => return answer,
            }
        }
    }

    async fn start_once(
        &self,
        id: &str,
        input: K::Input,
        subject: &str,
        correlation_id: &str,
    ) -> Result<SagaState<K::Input>, SagaError> {
        match locate::<K>(self.cluster.as_ref(), id)? {
            None => self.local_start(id, input, subject, correlation_id).await,
            Some(owner) => {
                let operation = SagaOperation::Start {
                    id: id.to_owned(),
                    input,
                    subject: subject.to_owned(),
                    correlation_id: correlation_id.to_owned(),
                };
                call::<K, _>(self.cluster.as_ref().expect("located"), &owner, operation).await
            }
        }
    }

    pub(crate) async fn local_start(
        &self,
        id: &str,
        input: K::Input,
        subject: &str,
        correlation_id: &str,
    ) -> Result<SagaState<K::Input>, SagaError> {
        let steps = self.kind.steps(&input);
        let mut fresh = false;
        let saga = match self
            .log
            .start(id, input.clone(), subject, &steps, correlation_id)
            .await
        {
            Ok(saga) => {
                metrics::counter!(SAGAS, "kind" => K::KIND, "outcome" => "started").increment(1);
                fresh = true;
                saga
            }
            Err(StoreError::Conflict { .. }) => {
                let saga = self.get(id).await?.ok_or_else(|| {
                    SagaError::Store(format!("saga {id} conflicts but has no Started event"))
                })?;
                if saga.input != input {
                    return Err(SagaError::StartedDifferently(id.to_owned()));
                }
                saga
            }
            Err(error) => return Err(SagaError::from_start(error)),
        };
        // Started now or before: make sure it runs (a finished one stops at once).
        if let Some(supervisor) = self.supervisor.get() {
            let _ = supervisor.cast(SupervisorMsg::Run {
                id: id.to_owned(),
                fresh,
            });
        }
        Ok(saga)
    }

    /// The saga `id` as its stream says (read on the blocking pool); `None` if never started.
    pub async fn get(&self, id: &str) -> Result<Option<SagaState<K::Input>>, SagaError> {
        match locate::<K>(self.cluster.as_ref(), id)? {
            None => self.local_get(id).await,
            Some(owner) => {
                let operation = SagaOperation::Get { id: id.to_owned() };
                call::<K, _>(self.cluster.as_ref().expect("located"), &owner, operation).await
            }
        }
    }

    pub(crate) async fn local_get(
        &self,
        id: &str,
    ) -> Result<Option<SagaState<K::Input>>, SagaError> {
        // A leader that was deposed without knowing it yet must not answer from its store.
        self.log
            .read_barrier(id)
            .await
            .map_err(|error| match error {
                StoreError::NotLeader { .. } => SagaError::Unavailable(error.to_string()),
                other => SagaError::Store(other.to_string()),
            })?;
        let (log, id) = (self.log.clone(), id.to_owned());
        self.log
            .store()
            .blocking("reading a saga", move || log.load(&id))
            .await
            .map_err(|error| SagaError::Store(error.to_string()))?
            .map_err(|error| SagaError::Store(error.to_string()))
    }

    /// The steps of a saga on `input`.
    pub fn steps(&self, input: &K::Input) -> Vec<Step> {
        self.kind.steps(input)
    }
}

pub(crate) enum SupervisorMsg {
    /// Run saga `id` unless it is running. `fresh`: its `Started` event was written just now
    /// by this start, so no step of it can have been sent yet.
    Run { id: String, fresh: bool },
    /// Run every open saga.
    Resume,
}

impl ractor::Message for SupervisorMsg {}

pub(crate) struct SagaSupervisor<K>(std::marker::PhantomData<fn() -> K>);

impl<K> SagaSupervisor<K> {
    fn new() -> Self {
        Self(std::marker::PhantomData)
    }
}

pub(crate) struct SupervisorState<K: SagaKind> {
    sagas: Sagas<K>,
    running: HashMap<String, ActorRef<RunnerMsg>>,
    ids: HashMap<ActorId, String>,
}

impl<K: SagaKind> Actor for SagaSupervisor<K> {
    type Msg = SupervisorMsg;
    type State = SupervisorState<K>;
    type Arguments = Sagas<K>;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        sagas: Sagas<K>,
    ) -> Result<SupervisorState<K>, ActorProcessingErr> {
        // Exported from the start, at zero, so that a dashboard sees "no retries" as 0.
        metrics::counter!(SAGA_STEP_RETRIES, "kind" => K::KIND).increment(0);
        myself.cast(SupervisorMsg::Resume)?;
        myself.send_interval(RESCAN_EVERY, || SupervisorMsg::Resume);
        Ok(SupervisorState {
            sagas,
            running: HashMap::new(),
            ids: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        message: SupervisorMsg,
        state: &mut SupervisorState<K>,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Run { id, fresh } => run(&myself, state, id, fresh).await,
            SupervisorMsg::Resume => {
                let log = state.sagas.log.clone();
                let store = log.store().clone();
                let mut open = store
                    .blocking("listing open sagas", move || log.open())
                    .await??;
                open.retain(|id| state.sagas.log.runs_here(id));
                if !open.is_empty() {
                    tracing::info!(kind = K::KIND, sagas = open.len(), "resuming open sagas");
                }
                for id in open {
                    run(&myself, state, id, false).await;
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState<K>,
    ) -> Result<(), ActorProcessingErr> {
        let (actor, failure) = match event {
            SupervisionEvent::ActorFailed(cell, error) => (cell.get_id(), Some(error)),
            SupervisionEvent::ActorTerminated(cell, _, _) => (cell.get_id(), None),
            _ => return Ok(()),
        };
        let Some(id) = state.ids.remove(&actor) else {
            return Ok(());
        };
        state.running.remove(&id);
        report_running::<K>(state);
        if let Some(error) = failure {
            // A store that failed, a bug: the saga is still open in its stream; run it again
            // after a pause, from what the stream says.
            tracing::warn!(kind = K::KIND, saga = %id, %error, "saga runner failed; restarting it");
            myself.send_after(RESTART_DELAY, move || SupervisorMsg::Run {
                id,
                fresh: false,
            });
        }
        Ok(())
    }
}

async fn run<K: SagaKind>(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState<K>,
    id: String,
    fresh: bool,
) {
    if state.running.contains_key(&id) || !state.sagas.log.runs_here(&id) {
        return;
    }
    let args = RunnerArgs {
        fresh,
        id: id.clone(),
        kind: state.sagas.kind.clone(),
        log: state.sagas.log.clone(),
        settings: state.sagas.settings.clone(),
    };
    match Actor::spawn_linked(None, Runner::<K>::new(), args, myself.get_cell()).await {
        Ok((runner, _)) => {
            state.ids.insert(runner.get_id(), id.clone());
            state.running.insert(id, runner);
            report_running::<K>(state);
        }
        Err(error) => {
            tracing::error!(kind = K::KIND, saga = %id, %error, "saga runner did not start; retrying");
            myself.send_after(RESTART_DELAY, move || SupervisorMsg::Run {
                id,
                fresh: false,
            });
        }
    }
}

fn report_running<K: SagaKind>(state: &SupervisorState<K>) {
    metrics::gauge!(SAGAS_RUNNING, "kind" => K::KIND).set(state.running.len() as f64);
}
