//! Supervisor tests on paused time: strategies restart the right siblings, intensity escalates.

use std::time::Duration;

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::mpsc;

use super::*;

/// A child that reports each start and panics or stops when told.
struct Probe;

enum ProbeMsg {
    Crash,
    Finish,
}
impl ractor::Message for ProbeMsg {}

type Started = mpsc::UnboundedSender<(&'static str, ActorId)>;

impl Actor for Probe {
    type Msg = ProbeMsg;
    type State = ();
    type Arguments = (&'static str, Started);

    async fn pre_start(
        &self,
        myself: ActorRef<ProbeMsg>,
        (id, started): Self::Arguments,
    ) -> Result<(), ActorProcessingErr> {
        started.send((id, myself.get_id())).unwrap();
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ProbeMsg>,
        message: ProbeMsg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ProbeMsg::Crash => panic!("probe told to crash"),
            ProbeMsg::Finish => myself.stop(None),
        }
        Ok(())
    }
}

fn probe(id: &'static str, restart: Restart, started: &Started) -> ChildSpec {
    let started = started.clone();
    ChildSpec::actor(id, restart, move || (Probe, (id, started.clone())))
}

/// A supervisor of three probes.
fn spec(name: &str, strategy: Strategy, started: &Started) -> SupervisorSpec {
    SupervisorSpec {
        name: name.to_owned(),
        strategy,
        intensity: Intensity {
            max_restarts: 5,
            within: Duration::from_secs(60),
        },
        backoff: Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
        },
        children: vec![
            probe("a", Restart::Permanent, started),
            probe("b", Restart::Permanent, started),
            probe("c", Restart::Permanent, started),
        ],
    }
}

async fn next_start(rx: &mut mpsc::UnboundedReceiver<(&'static str, ActorId)>) -> &'static str {
    tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .expect("no child started within 60 s of paused time")
        .expect("start channel closed")
        .0
}

fn ids(children: &[ChildStatus]) -> Vec<Option<ActorId>> {
    children
        .iter()
        .map(|c| c.actor.as_ref().map(ActorCell::get_id))
        .collect()
}

fn crash(child: &ChildStatus) {
    let cell = child.actor.clone().expect("child is running");
    ActorRef::<ProbeMsg>::from(cell)
        .send_message(ProbeMsg::Crash)
        .unwrap();
}

/// Starts a supervisor, crashes child b, and returns which children restarted, in order.
async fn crash_b_under(
    strategy: Strategy,
) -> (Vec<&'static str>, Vec<ChildStatus>, Vec<ChildStatus>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let supervisor = Supervisor::start(spec(&format!("crash-b-{strategy:?}"), strategy, &tx), None)
        .await
        .unwrap();
    for expected in ["a", "b", "c"] {
        assert_eq!(next_start(&mut rx).await, expected);
    }
    let before = children_of(&supervisor).await.unwrap();
    crash(&before[1]);
    let expected_restarts = match strategy {
        Strategy::OneForOne => 1,
        Strategy::OneForAll => 3,
        Strategy::RestForOne => 2,
    };
    let mut restarted = Vec::new();
    for _ in 0..expected_restarts {
        restarted.push(next_start(&mut rx).await);
    }
    let after = children_of(&supervisor).await.unwrap();
    supervisor.stop_and_wait(None, None).await.unwrap();
    assert!(rx.try_recv().is_err(), "a child restarted more than once");
    (restarted, before, after)
}

#[tokio::test(start_paused = true)]
async fn one_for_one_restarts_only_the_failed_child() {
    let (restarted, before, after) = crash_b_under(Strategy::OneForOne).await;
    assert_eq!(restarted, ["b"]);
    let (before, after_ids) = (ids(&before), ids(&after));
    assert_eq!(after_ids[0], before[0]);
    assert_ne!(after_ids[1], before[1]);
    assert_eq!(after_ids[2], before[2]);
    let restarts: Vec<u64> = after.iter().map(|c| c.restarts).collect();
    assert_eq!(restarts, [0, 1, 0]);
}

#[tokio::test(start_paused = true)]
async fn one_for_all_restarts_every_child_in_start_order() {
    let (restarted, before, after) = crash_b_under(Strategy::OneForAll).await;
    assert_eq!(restarted, ["a", "b", "c"]);
    let (before, after) = (ids(&before), ids(&after));
    for i in 0..3 {
        assert_ne!(after[i], before[i], "child {i} kept its old actor");
    }
}

#[tokio::test(start_paused = true)]
async fn rest_for_one_restarts_the_failed_child_and_those_after_it() {
    let (restarted, before, after) = crash_b_under(Strategy::RestForOne).await;
    assert_eq!(restarted, ["b", "c"]);
    let (before, after) = (ids(&before), ids(&after));
    assert_eq!(
        after[0], before[0],
        "a started before b and must not restart"
    );
    assert_ne!(after[1], before[1]);
    assert_ne!(after[2], before[2]);
}

#[tokio::test(start_paused = true)]
async fn restarts_back_off_exponentially() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let supervisor = Supervisor::start(spec("backoff", Strategy::OneForOne, &tx), None)
        .await
        .unwrap();
    for _ in 0..3 {
        next_start(&mut rx).await;
    }
    let mut waits = Vec::new();
    for _ in 0..3 {
        let children = children_of(&supervisor).await.unwrap();
        let crashed_at = tokio::time::Instant::now();
        crash(&children[0]);
        assert_eq!(next_start(&mut rx).await, "a");
        waits.push(crashed_at.elapsed());
    }
    // 100 ms, then doubled for each restart already in the window.
    let millis: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
    assert_eq!(millis, [100, 200, 400]);
    supervisor.stop_and_wait(None, None).await.unwrap();
}

/// A parent that forwards what it hears about its children.
struct Parent;

impl Actor for Parent {
    type Msg = ();
    type State = mpsc::UnboundedSender<String>;
    type Arguments = mpsc::UnboundedSender<String>;

    async fn pre_start(
        &self,
        _: ActorRef<()>,
        events: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(events)
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<()>,
        event: SupervisionEvent,
        events: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(_, error) => events.send(format!("failed: {error}"))?,
            SupervisionEvent::ActorTerminated(..) => events.send("terminated".into())?,
            _ => {}
        }
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn exceeding_the_restart_intensity_fails_the_supervisor_upward() {
    let (parent_tx, mut parent_rx) = mpsc::unbounded_channel();
    let (parent, _) = Actor::spawn(None, Parent, parent_tx).await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut spec = spec("escalates", Strategy::OneForOne, &tx);
    spec.intensity = Intensity {
        max_restarts: 2,
        within: Duration::from_secs(60),
    };
    let supervisor = Supervisor::start(spec, Some(parent.get_cell()))
        .await
        .unwrap();
    for _ in 0..3 {
        next_start(&mut rx).await;
    }
    // Two crashes are within the intensity: both restart.
    for _ in 0..2 {
        let children = children_of(&supervisor).await.unwrap();
        crash(&children[2]);
        assert_eq!(next_start(&mut rx).await, "c");
    }
    // The third within the window is one too many: the supervisor fails, and its parent hears it.
    let children = children_of(&supervisor).await.unwrap();
    crash(&children[2]);
    let heard = tokio::time::timeout(Duration::from_secs(60), parent_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        heard.starts_with("failed: ") && heard.contains("restart intensity exceeded"),
        "parent heard {heard:?}"
    );
    // The failed supervisor took its remaining children down with it.
    for child in &children[..2] {
        let cell = child.actor.clone().unwrap();
        tokio::time::timeout(Duration::from_secs(5), cell.wait(None))
            .await
            .expect("a child of the failed supervisor is still running")
            .ok();
    }
    assert!(
        rx.try_recv().is_err(),
        "a child was restarted after the escalation"
    );
    parent.stop(None);
}

#[tokio::test(start_paused = true)]
async fn a_transient_child_that_finishes_is_not_restarted_but_a_permanent_one_is() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let spec = SupervisorSpec {
        name: "restart-types".into(),
        strategy: Strategy::OneForOne,
        intensity: Intensity::default(),
        backoff: Backoff::NONE,
        children: vec![
            probe("transient", Restart::Transient, &tx),
            probe("permanent", Restart::Permanent, &tx),
        ],
    };
    let supervisor = Supervisor::start(spec, None).await.unwrap();
    next_start(&mut rx).await;
    next_start(&mut rx).await;
    let children = children_of(&supervisor).await.unwrap();
    for child in &children {
        ActorRef::<ProbeMsg>::from(child.actor.clone().unwrap())
            .send_message(ProbeMsg::Finish)
            .unwrap();
    }
    assert_eq!(next_start(&mut rx).await, "permanent");
    let after = children_of(&supervisor).await.unwrap();
    assert!(after[0].actor.is_none(), "the transient child came back");
    assert!(after[1].actor.is_some());
    assert!(rx.try_recv().is_err());
    supervisor.stop_and_wait(None, None).await.unwrap();
}
