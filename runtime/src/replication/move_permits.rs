//! The cluster-wide bound on moves: a leader moves a partition's replicas (`reconcile`) only
//! under a permit from the member leading the metadata group, which grants at most
//! `cluster.max_moves` at once across the cluster, so however many members lead groups, the
//! data in flight (learners catching up, snapshots sent) stays bounded and serving goes on.
//!
//! Permits live in the granting member's memory and lapse unless renewed: a mover renews its
//! permit every [`RENEW_EVERY`] while it moves, and gives it back when done; a mover that
//! crashed lets it lapse after [`HELD_FOR`], and one that cannot renew stops moving after
//! [`LAPSES_AFTER`]. A member that has just become the metadata leader knows nothing of the
//! permits its predecessor granted: it asks every member which permits it holds or is asking
//! for, and grants anew once all have answered (or, when one has not, once [`HELD_FOR`] has
//! passed, by which time any permit it was not told of has lapsed); meanwhile it records the
//! renewals of moves under way. A place reported counts until it is renewed or lapses, but
//! one its member then asks for afresh was only being asked for: it is weighed as a new ask
//! (counted as granted, an ask the former leader refused would move past the bound). Only a
//! permit a former leader grants after the survey asked its mover (the former leader not yet
//! aware it lost the lead) can take the count past the bound, until that mover's first
//! renewal reaches the new leader.
//!
//! A permit is the partition's, not its mover's: the lead of a moving group may pass to
//! another member (handed over by a leader moved off, a leader crashed or cut off), which goes
//! on with the move under the same place, so one partition never counts twice. So a mover
//! that stops leading mid-move does not give its permit back (the next leader takes it over,
//! or it lapses), and goes on reporting that place to a survey until it would have lapsed; it
//! gives a permit back only once the move is done or it has nothing left to move.
//!
//! A move already under way (its learner added, its voters joint) whose permit lapsed (its
//! mover cut off from the metadata leader for [`HELD_FOR`]) asks as a renewal, granted
//! whatever the count: stopped, it would stay half done. That and the former leader's late
//! grant above are the only ways past the bound. A lapsed permit stops only a move's wait for
//! its learners, never a change of voters once begun (`reconcile`).
//!
//! A metadata leader of an earlier build, which has no permits to grant (it answers "no
//! handler"), is taken as granting: each node then bounds only its own moves, as that build
//! did, until the metadata leader is upgraded.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use openraft::rt::WatchReceiver;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::groups::Groups;
use super::metadata::METADATA_GROUP;
use super::types::PartitionId;
use crate::cluster::wire::CallError;
use crate::cluster::{Cluster, Handler};
use crate::codec;

/// The cluster handler that grants and takes back move permits, on the metadata leader.
pub(crate) const TARGET: &str = "move-permit";
/// How long a permit lasts unless renewed; also how long a new metadata leader that could not
/// ask every member grants none.
const HELD_FOR: Duration = Duration::from_secs(6);
/// How often a mover renews its permit.
const RENEW_EVERY: Duration = Duration::from_secs(1);
/// How long after sending its last renewal answered a mover stops waiting for its learners:
/// the leader's clock for it started no earlier than that send, so this is [`HELD_FOR`] less
/// half, and the mover stops before its place could be granted to another.
const LAPSES_AFTER: Duration = Duration::from_secs(3);
/// How long one ask of the metadata leader may take (a renewal must not wait a whole call
/// timeout: [`LAPSES_AFTER`] would pass meanwhile).
const ASK_PATIENCE: Duration = Duration::from_millis(800);

/// What a member asks the metadata leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Ask {
    /// A permit to move `partition` (a new move), or to go on moving it (`renewal`).
    Take {
        node: String,
        partition: PartitionId,
        renewal: bool,
    },
    /// The move of `partition` is over.
    GiveBack {
        node: String,
        partition: PartitionId,
    },
    /// Which permits the member asked holds or is asking for (a new leader's survey).
    Report,
}

/// What the metadata leader answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Answer {
    Granted,
    /// The bound is reached: these moves hold permits.
    Busy {
        moving: Vec<(String, PartitionId)>,
    },
    /// This member has led the metadata group for less than [`HELD_FOR`].
    Starting,
    /// This member does not lead the metadata group.
    NotLeading,
    GivenBack,
    /// The partitions this member holds or asks permits for.
    Moving(Vec<PartitionId>),
}

/// A place taken: `partition` moves, led by `node` as last heard.
#[derive(Debug)]
struct Held {
    node: String,
    partition: PartitionId,
    until: Instant,
    /// Granted or renewed by this leader; `false` when only a survey reported it (its mover
    /// may have been asking, not holding).
    granted: bool,
}

/// The permits this member granted while it leads the metadata group, and those it holds or
/// asks for as a mover.
#[derive(Debug)]
pub(crate) struct Grants {
    limit: usize,
    state: Mutex<GrantState>,
    /// The partitions this member holds or asks permits for (`None`), or whose permit it left
    /// to the group's next leader, until that place lapses (`Some`): a survey counts them all.
    mine: Mutex<std::collections::BTreeMap<PartitionId, Option<Instant>>>,
}

#[derive(Debug, Default)]
struct GrantState {
    /// The term in which this member leads the metadata group, and since when, as its
    /// answers saw.
    leading: Option<(u64, Instant)>,
    /// Whether every member has said which permits it holds, this term.
    surveyed: bool,
    /// Whether a survey is under way.
    surveying: bool,
    held: Vec<Held>,
}

impl Grants {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            state: Mutex::default(),
            mine: Mutex::default(),
        }
    }

    fn mine(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<PartitionId, Option<Instant>>> {
        self.mine.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What this member answers a survey at `now`: the places it holds, asks for, or left to
    /// another member and which have not lapsed yet.
    fn reported(&self, now: Instant) -> Vec<PartitionId> {
        let mut mine = self.mine();
        mine.retain(|_, handed_on| handed_on.is_none_or(|until| until > now));
        mine.keys().copied().collect()
    }

    /// This member no longer holds nor asks for `partition`'s permit (a place it left to
    /// another member stays reported until it lapses).
    fn forget(&self, partition: PartitionId) {
        let mut mine = self.mine();
        if mine.get(&partition).is_some_and(Option::is_none) {
            mine.remove(&partition);
        }
    }

    /// Whether a survey should start now (this member leads in `term`, has not surveyed, and
    /// none runs); marks one as running.
    fn survey_due(&self, term: u64) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let due = state.leading.is_some_and(|(seen, _)| seen == term)
            && !state.surveyed
            && !state.surveying;
        if due {
            state.surveying = true;
        }
        due
    }

    /// What every member said it holds, in `term` (`None`: not every member answered).
    fn surveyed(&self, term: u64, answers: Option<Vec<(String, PartitionId)>>, now: Instant) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.leading.is_none_or(|(seen, _)| seen != term) {
            return;
        }
        state.surveying = false;
        let Some(answers) = answers else {
            return;
        };
        for (node, partition) in answers {
            if !state.held.iter().any(|held| held.partition == partition) {
                state.held.push(Held {
                    node,
                    partition,
                    until: now + HELD_FOR,
                    granted: false,
                });
            }
        }
        state.surveyed = true;
    }

    /// The answer to `ask` at `now`, by a member that leads the metadata group in term
    /// `leading` (`None`: it does not lead it). Leading in another term than last seen, it
    /// starts afresh: another member may have led in between and granted permits.
    fn answer(&self, ask: Ask, leading: Option<u64>, now: Instant) -> Answer {
        if ask == Ask::Report {
            return Answer::Moving(self.reported(now));
        }
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(term) = leading else {
            *state = GrantState::default();
            return Answer::NotLeading;
        };
        if state.leading.is_none_or(|(seen, _)| seen != term) {
            *state = GrantState {
                leading: Some((term, now)),
                ..GrantState::default()
            };
        }
        let since = state.leading.map_or(now, |(_, since)| since);
        state.held.retain(|held| held.until > now);
        match ask {
            Ask::GiveBack { node, partition } => {
                // Only by its holder: a former leader of the group, late, must not free the
                // place its successor moves under.
                state
                    .held
                    .retain(|held| !(held.node == node && held.partition == partition));
                Answer::GivenBack
            }
            Ask::Report => Answer::Moving(self.reported(now)),
            Ask::Take {
                node,
                partition,
                renewal,
            } => {
                let until = now + HELD_FOR;
                // The partition's place already: asked again, or by the group's next leader,
                // which takes it over. A place a survey reported and that is asked for
                // afresh was only being asked for: it is granted below as any other, or not.
                if let Some(at) = state
                    .held
                    .iter()
                    .position(|held| held.partition == partition)
                {
                    if state.held[at].granted || renewal {
                        let held = &mut state.held[at];
                        held.node = node;
                        held.until = until;
                        held.granted = true;
                        return Answer::Granted;
                    }
                    state.held.remove(at);
                }
                if !renewal {
                    if !state.surveyed && now.duration_since(since) < HELD_FOR {
                        return Answer::Starting;
                    }
                    if state.held.len() >= self.limit {
                        return Answer::Busy {
                            moving: state
                                .held
                                .iter()
                                .map(|held| (held.node.clone(), held.partition))
                                .collect(),
                        };
                    }
                }
                state.held.push(Held {
                    node,
                    partition,
                    until,
                    granted: true,
                });
                Answer::Granted
            }
        }
    }
}

/// The term in which this member leads the metadata group, if it does.
fn metadata_term_led(groups: &Groups) -> Option<u64> {
    if !groups.leads(METADATA_GROUP) {
        return None;
    }
    let raft = groups.get(METADATA_GROUP)?;
    let term = raft.metrics().borrow_watched().current_term;
    Some(term)
}

/// Asks the metadata leader (here, or by a call).
async fn ask(groups: &Groups, cluster: &Cluster, ask: Ask) -> Result<Answer, String> {
    if let Some(term) = metadata_term_led(groups) {
        return Ok(answer_here(groups, cluster, ask, Some(term)));
    }
    let leader = groups
        .leader_of(METADATA_GROUP)
        .ok_or("the metadata group has no leader known here")?;
    let bytes = codec::encode(&ask).map_err(|e| e.to_string())?;
    let answer = match cluster
        .call_uncounted(&leader, TARGET, bytes, ASK_PATIENCE)
        .await
    {
        Ok(answer) => answer,
        // An earlier build leads the metadata group: it grants no permits (see the module).
        Err(CallError::NoHandler { .. }) => return Ok(Answer::Granted),
        Err(error) => return Err(format!("asking {leader}, the metadata leader: {error}")),
    };
    codec::decode(&answer).map_err(|e| e.to_string())
}

/// This member's answer to `ask`, leading the metadata group in term `leading`; a survey of
/// the members starts when a new term's first permit is refused for want of one.
fn answer_here(groups: &Groups, cluster: &Cluster, ask: Ask, leading: Option<u64>) -> Answer {
    let answer = groups.move_grants().answer(ask, leading, Instant::now());
    if let (Answer::Starting, Some(term)) = (&answer, leading)
        && groups.move_grants().survey_due(term)
    {
        tokio::spawn(survey(groups.clone(), cluster.clone(), term));
    }
    answer
}

/// Asks every member which permits it holds or asks for; records them all, or none when a
/// member did not answer (the new leader then waits [`HELD_FOR`] out).
async fn survey(groups: Groups, cluster: Cluster, term: u64) {
    let asks = cluster.member_names().into_iter().map(|member| {
        let cluster = &cluster;
        async move {
            if member == cluster.node() {
                return Ok((member, Vec::new()));
            }
            let bytes = codec::encode(&Ask::Report).map_err(|e| e.to_string())?;
            let answer = cluster
                .call_uncounted(&member, TARGET, bytes, ASK_PATIENCE)
                .await
                .map_err(|error| error.to_string())?;
            match codec::decode::<Answer>(&answer).map_err(|e| e.to_string())? {
                Answer::Moving(partitions) => Ok((member, partitions)),
                other => Err(format!("{member} answered {other:?}")),
            }
        }
    });
    let answers: Result<Vec<(String, Vec<PartitionId>)>, String> =
        futures::future::join_all(asks).await.into_iter().collect();
    let mine = groups.move_grants().reported(Instant::now());
    let held = match answers {
        Ok(answers) => Some(
            answers
                .into_iter()
                .chain([(groups.node().to_owned(), mine)])
                .flat_map(|(member, partitions)| {
                    partitions.into_iter().map(move |p| (member.clone(), p))
                })
                .collect(),
        ),
        Err(reason) => {
            tracing::debug!(%reason, "not every member said which move permits it holds");
            None
        }
    };
    groups.move_grants().surveyed(term, held, Instant::now());
}

/// A permit held by this node to move one partition, renewed in the background until given
/// back (or dropped, when it lapses).
pub(crate) struct Permit {
    partition: PartitionId,
    groups: Groups,
    renewing: tokio::task::JoinHandle<()>,
    lapsed: tokio::sync::watch::Receiver<bool>,
}

/// A permit to move `partition` now, or why there is none (the bound is reached, the metadata
/// leader is new or unknown): the move waits for the next look.
/// `under_way`: the move was begun before (see the module), and is granted whatever the count.
pub(crate) async fn take(
    groups: &Groups,
    cluster: &Cluster,
    partition: PartitionId,
    under_way: bool,
) -> Result<Permit, String> {
    let node = groups.node().to_owned();
    let asked = Ask::Take {
        node: node.clone(),
        partition,
        renewal: under_way,
    };
    // Listed before it is asked for: a new leader's survey then knows of a permit granted
    // while it asked.
    groups.move_grants().mine().insert(partition, None);
    let sent = Instant::now();
    let refused = match ask(groups, cluster, asked).await {
        Ok(Answer::Granted) => None,
        Ok(Answer::Busy { moving }) => Some(format!(
            "{} partitions move already (cluster.max_moves): {moving:?}",
            moving.len()
        )),
        Ok(Answer::Starting) => Some("the metadata leader is new and grants none yet".into()),
        Ok(other) => Some(format!("the metadata leader answered {other:?}")),
        Err(reason) => Some(reason),
    };
    if let Some(reason) = refused {
        groups.move_grants().forget(partition);
        return Err(reason);
    }
    let (lapse, lapsed) = tokio::sync::watch::channel(false);
    let renewing = tokio::spawn(renew(
        groups.clone(),
        cluster.clone(),
        partition,
        sent,
        lapse,
    ));
    Ok(Permit {
        partition,
        groups: groups.clone(),
        renewing,
        lapsed,
    })
}

/// Renews `partition`'s permit every [`RENEW_EVERY`], and says it lapsed ([`LAPSES_AFTER`]
/// after the send of the last renewal granted, `renewed` at first) when renewals fail.
async fn renew(
    groups: Groups,
    cluster: Cluster,
    partition: PartitionId,
    mut renewed: Instant,
    lapse: tokio::sync::watch::Sender<bool>,
) {
    let node = groups.node().to_owned();
    loop {
        let renewing = async {
            tokio::time::sleep(RENEW_EVERY).await;
            let sent = Instant::now();
            let renewal = Ask::Take {
                node: node.clone(),
                partition,
                renewal: true,
            };
            (sent, ask(&groups, &cluster, renewal).await)
        };
        tokio::select! {
            () = tokio::time::sleep_until(renewed + LAPSES_AFTER) => {
                lapse.send_replace(true);
                return;
            }
            (sent, answer) = renewing => match answer {
                Ok(Answer::Granted) => renewed = sent,
                Ok(other) => tracing::debug!(partition, ?other, "a move permit not renewed"),
                Err(reason) => tracing::debug!(partition, %reason, "a move permit not renewed"),
            },
        }
    }
}

impl Permit {
    /// Resolves once the permit could not be renewed for [`LAPSES_AFTER`]: the move's wait for
    /// its learners must stop (its place may be granted to another soon), to go on later.
    pub(crate) async fn lapsed(&self) {
        let mut lapsed = self.lapsed.clone();
        if lapsed.wait_for(|lapsed| *lapsed).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Whether the permit has lapsed (see [`Permit::lapsed`]): it no longer holds a place.
    pub(crate) fn has_lapsed(&self) -> bool {
        *self.lapsed.borrow()
    }

    /// This node no longer leads the moving group: its permit stays with the partition for
    /// the group's next leader to take over (asking with the same partition), or lapses.
    pub(crate) fn hand_on(self) {
        // Still reported to a new metadata leader's survey until the place lapses: the
        // next leader of the group goes on under it.
        self.groups
            .move_grants()
            .mine()
            .insert(self.partition, Some(Instant::now() + HELD_FOR));
        tracing::debug!(
            partition = self.partition,
            "a move permit left to the group's next leader"
        );
    }

    /// The move is over: the permit goes back (or lapses, when the leader cannot be told).
    pub(crate) async fn give_back(self, groups: &Groups, cluster: &Cluster) {
        self.renewing.abort();
        let given = Ask::GiveBack {
            node: groups.node().to_owned(),
            partition: self.partition,
        };
        if let Err(reason) = ask(groups, cluster, given).await {
            tracing::debug!(partition = self.partition, %reason, "a move permit lapses instead");
        }
    }
}

impl Drop for Permit {
    /// Given back or not (a move cancelled, the node stopping), it is no longer held here:
    /// a new leader's survey must not count it.
    fn drop(&mut self) {
        self.renewing.abort();
        self.groups.move_grants().forget(self.partition);
    }
}

/// Answers [`TARGET`] from this member's grants.
struct GrantHandler(Groups, Cluster);

impl Handler for GrantHandler {
    fn handle(&self, operation: Vec<u8>) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        let (groups, cluster) = (self.0.clone(), self.1.clone());
        Box::pin(async move {
            let ask: Ask = codec::decode(&operation).map_err(|e| format!("a move permit: {e}"))?;
            let leading = metadata_term_led(&groups);
            let answer = answer_here(&groups, &cluster, ask, leading);
            codec::encode(&answer).map_err(|e| e.to_string())
        })
    }
}

/// Registers [`TARGET`] on `cluster`.
pub(crate) fn serve(cluster: &Cluster, groups: &Groups) {
    cluster.register(
        TARGET,
        Arc::new(GrantHandler(groups.clone(), cluster.clone())),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(node: &str, partition: PartitionId, renewal: bool) -> Ask {
        Ask::Take {
            node: node.into(),
            partition,
            renewal,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_the_limit_move_at_once_across_members_and_a_new_leader_waits_out_old_permits()
    {
        let grants = Grants::new(2);
        let start = Instant::now();
        // A member that has just begun to lead grants nothing new, but records renewals.
        assert_eq!(
            grants.answer(take("a", 1, false), Some(1), start),
            Answer::Starting
        );
        assert_eq!(
            grants.answer(take("a", 2, true), Some(1), start),
            Answer::Granted
        );
        let later = start + HELD_FOR;
        assert_eq!(
            grants.answer(take("a", 2, true), Some(1), later),
            Answer::Granted
        );
        assert_eq!(
            grants.answer(take("b", 3, false), Some(1), later),
            Answer::Granted
        );
        // Two held (a's renewed move, b's): a third is refused, naming them.
        let busy = grants.answer(take("c", 4, false), Some(1), later);
        assert_eq!(
            busy,
            Answer::Busy {
                moving: vec![("a".into(), 2), ("b".into(), 3)]
            }
        );
        // A renewal is granted whatever the count (a move under way is never stopped).
        assert_eq!(
            grants.answer(take("c", 5, true), Some(1), later),
            Answer::Granted
        );
        // Given back, a permit frees its place; one not renewed lapses.
        assert_eq!(
            grants.answer(
                Ask::GiveBack {
                    node: "b".into(),
                    partition: 3
                },
                Some(1),
                later
            ),
            Answer::GivenBack
        );
        assert!(matches!(
            grants.answer(take("c", 4, false), Some(1), later),
            Answer::Busy { .. }
        ));
        let lapsed = later + HELD_FOR + Duration::from_millis(1);
        assert_eq!(
            grants.answer(take("c", 4, false), Some(1), lapsed),
            Answer::Granted
        );
        // Asking the same again renews rather than takes a second place.
        assert_eq!(
            grants.answer(take("c", 4, false), Some(1), lapsed),
            Answer::Granted
        );
        assert_eq!(
            grants.answer(take("d", 6, false), Some(1), lapsed),
            Answer::Granted
        );
        assert!(matches!(
            grants.answer(take("e", 7, false), Some(1), lapsed),
            Answer::Busy { .. }
        ));
        // Leading in a later term (another member may have led between), it waits anew.
        assert_eq!(
            grants.answer(take("e", 7, false), Some(2), lapsed),
            Answer::Starting
        );
        assert_eq!(
            grants.answer(take("c", 4, true), Some(2), lapsed),
            Answer::Granted
        );
        // Leading no more forgets everything.
        assert_eq!(
            grants.answer(take("e", 7, false), None, lapsed),
            Answer::NotLeading
        );
        assert_eq!(
            grants.answer(take("e", 7, false), Some(2), lapsed),
            Answer::Starting
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_groups_next_leader_takes_its_permit_over_and_a_late_give_back_keeps_it() {
        let grants = Grants::new(2);
        let start = Instant::now();
        assert_eq!(
            grants.answer(take("a", 1, false), Some(1), start),
            Answer::Starting
        );
        grants.surveyed(1, Some(Vec::new()), start);
        assert_eq!(
            grants.answer(take("a", 1, false), Some(1), start),
            Answer::Granted
        );
        // a handed the lead of partition 1 over to b, which goes on with the move: the
        // same place, not a second one.
        assert_eq!(
            grants.answer(take("b", 1, true), Some(1), start),
            Answer::Granted
        );
        assert_eq!(
            grants.answer(take("c", 2, false), Some(1), start),
            Answer::Granted
        );
        assert_eq!(
            grants.answer(take("d", 3, false), Some(1), start),
            Answer::Busy {
                moving: vec![("b".into(), 1), ("c".into(), 2)]
            }
        );
        // a's give-back, late, does not free the place b moves under; b's does.
        let give_back = |node: &str| Ask::GiveBack {
            node: node.into(),
            partition: 1,
        };
        assert_eq!(
            grants.answer(give_back("a"), Some(1), start),
            Answer::GivenBack
        );
        assert!(matches!(
            grants.answer(take("d", 3, false), Some(1), start),
            Answer::Busy { .. }
        ));
        grants.answer(give_back("b"), Some(1), start);
        assert_eq!(
            grants.answer(take("d", 3, false), Some(1), start),
            Answer::Granted
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_leader_grants_at_once_when_every_member_said_what_it_holds() {
        let grants = Grants::new(2);
        let start = Instant::now();
        assert_eq!(
            grants.answer(take("a", 1, false), Some(3), start),
            Answer::Starting
        );
        assert!(grants.survey_due(3), "the first refusal starts a survey");
        assert!(!grants.survey_due(3), "one survey at a time");
        // A member did not answer: still waiting.
        grants.surveyed(3, None, start);
        assert_eq!(
            grants.answer(take("a", 1, false), Some(3), start),
            Answer::Starting
        );
        assert!(grants.survey_due(3), "asked again");
        // Every member answered: b moves partition 7 (granted by the former leader).
        grants.surveyed(3, Some(vec![("b".into(), 7)]), start);
        assert_eq!(
            grants.answer(take("a", 1, false), Some(3), start),
            Answer::Granted
        );
        assert!(
            matches!(grants.answer(take("c", 2, false), Some(3), start), Answer::Busy { moving } if moving.contains(&("b".into(), 7))),
            "b's permit counts"
        );
        // A survey of an earlier term is not taken for this one.
        grants.surveyed(2, Some(Vec::new()), start);
        assert_eq!(
            grants.answer(take("d", 4, false), Some(4), start),
            Answer::Starting
        );
        grants.surveyed(3, Some(Vec::new()), start);
        assert_eq!(
            grants.answer(take("d", 4, false), Some(4), start),
            Answer::Starting
        );
        // What a member reports is what it holds or asks for, leading or not, and a place it
        // left to a group's next leader until that place lapses.
        grants.mine().insert(9, None);
        grants.mine().insert(5, Some(start + HELD_FOR));
        assert_eq!(
            grants.answer(Ask::Report, None, start),
            Answer::Moving(vec![5, 9])
        );
        grants.forget(5);
        grants.forget(9);
        assert_eq!(
            grants.answer(Ask::Report, None, start),
            Answer::Moving(vec![5]),
            "a place left to another stays reported"
        );
        assert_eq!(
            grants.answer(Ask::Report, None, start + HELD_FOR),
            Answer::Moving(Vec::new())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_place_a_survey_reported_and_asked_for_afresh_counts_as_not_held() {
        let grants = Grants::new(1);
        let start = Instant::now();
        assert_eq!(
            grants.answer(take("a", 1, false), Some(1), start),
            Answer::Starting
        );
        // a and b each said they hold or ask for a place (the former leader may have granted
        // either).
        grants.surveyed(1, Some(vec![("a".into(), 1), ("b".into(), 2)]), start);
        // a asks afresh, so it holds none: b's place counts, and the bound is reached.
        assert_eq!(
            grants.answer(take("a", 1, false), Some(1), start),
            Answer::Busy {
                moving: vec![("b".into(), 2)]
            }
        );
        // b renews the place it holds; given back, a's is granted.
        assert_eq!(
            grants.answer(take("b", 2, true), Some(1), start),
            Answer::Granted
        );
        grants.answer(
            Ask::GiveBack {
                node: "b".into(),
                partition: 2,
            },
            Some(1),
            start,
        );
        assert_eq!(
            grants.answer(take("a", 1, false), Some(1), start),
            Answer::Granted
        );
    }
}
