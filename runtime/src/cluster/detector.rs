//! The failure detector: whether each peer is up, from what the membership hears, on tokio's
//! clock. Pure: it is told what happened and when, and answers the status changes that
//! follow; it sends nothing and reads no clock, so paused time drives it in tests.
//!
//! A peer is up from its first answered heartbeat, and down when its link closes, when a
//! heartbeat fails, or when none has been answered for the timeout: a stopped or cut-off peer
//! never closes its link, so only silence shows it. A peer placed differently is refused,
//! whatever it answers, until it answers placed the same way.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::MemberStatus;

/// A change of a peer's status, with why (none when it comes up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    pub peer: String,
    pub status: MemberStatus,
    pub reason: Option<String>,
}

#[derive(Debug)]
struct Peer {
    status: MemberStatus,
    last_answer: Option<Instant>,
}

/// The detector's view of every peer.
#[derive(Debug)]
pub(crate) struct Detector {
    timeout: Duration,
    peers: BTreeMap<String, Peer>,
}

impl Detector {
    /// Every one of `peers` joining (not heard from yet); silent for `timeout` means down.
    pub(crate) fn new(peers: impl IntoIterator<Item = String>, timeout: Duration) -> Self {
        Self {
            timeout,
            peers: peers
                .into_iter()
                .map(|peer| {
                    let state = Peer {
                        status: MemberStatus::Joining,
                        last_answer: None,
                    };
                    (peer, state)
                })
                .collect(),
        }
    }

    /// Follows a change of members: a new peer is joining, a peer no longer listed is
    /// forgotten.
    pub(crate) fn track(&mut self, peers: impl IntoIterator<Item = String>) {
        let peers: std::collections::BTreeSet<String> = peers.into_iter().collect();
        self.peers.retain(|peer, _| peers.contains(peer));
        for peer in peers {
            self.peers.entry(peer).or_insert(Peer {
                status: MemberStatus::Joining,
                last_answer: None,
            });
        }
    }

    pub(crate) fn status(&self, peer: &str) -> Option<MemberStatus> {
        self.peers.get(peer).map(|state| state.status)
    }

    /// `peer` answered a heartbeat at `now`, placed as this node is: it is up.
    pub(crate) fn answered(&mut self, peer: &str, now: Instant) -> Option<Change> {
        let state = self.peers.get_mut(peer)?;
        state.last_answer = Some(now);
        self.set(peer, MemberStatus::Up, None)
    }

    /// `peer` answered placed differently: refused, never up.
    pub(crate) fn refused(&mut self, peer: &str, reason: String) -> Option<Change> {
        self.set(peer, MemberStatus::Refused, Some(reason))
    }

    /// A heartbeat to `peer` failed (no answer, or its link closed under it): down if it was
    /// up. A peer not yet up stays as it was, with the reason.
    pub(crate) fn failed(&mut self, peer: &str, reason: String) -> Option<Change> {
        match self.status(peer)? {
            MemberStatus::Up => self.set(peer, MemberStatus::Down, Some(reason)),
            _ => None,
        }
    }

    /// `peer`'s link closed: down (from joining as well: it was reached once).
    pub(crate) fn link_closed(&mut self, peer: &str, reason: String) -> Option<Change> {
        match self.status(peer)? {
            MemberStatus::Up | MemberStatus::Joining => {
                self.set(peer, MemberStatus::Down, Some(reason))
            }
            MemberStatus::Down | MemberStatus::Refused => None,
        }
    }

    /// The peers that are up but have answered nothing for the timeout, as of `now`: down.
    pub(crate) fn tick(&mut self, now: Instant) -> Vec<Change> {
        let timeout = self.timeout;
        let silent: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, state)| {
                state.status == MemberStatus::Up
                    && state
                        .last_answer
                        .is_none_or(|at| now.saturating_duration_since(at) > timeout)
            })
            .map(|(peer, _)| peer.clone())
            .collect();
        silent
            .into_iter()
            .filter_map(|peer| {
                let reason = format!("no heartbeat answer for {} ms", timeout.as_millis());
                self.set(&peer, MemberStatus::Down, Some(reason))
            })
            .collect()
    }

    fn set(&mut self, peer: &str, status: MemberStatus, reason: Option<String>) -> Option<Change> {
        let state = self.peers.get_mut(peer)?;
        if state.status == status {
            return None;
        }
        state.status = status;
        Some(Change {
            peer: peer.to_owned(),
            status,
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_millis(1500);

    fn detector() -> Detector {
        Detector::new(["b".to_owned(), "c".to_owned()], TIMEOUT)
    }

    fn became(change: Option<Change>) -> Option<MemberStatus> {
        change.map(|change| change.status)
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_is_up_from_its_first_answer_and_down_after_the_timeout_of_silence() {
        let mut detector = detector();
        assert_eq!(detector.status("b"), Some(MemberStatus::Joining));
        assert_eq!(
            became(detector.answered("b", Instant::now())),
            Some(MemberStatus::Up)
        );
        assert_eq!(detector.answered("b", Instant::now()), None, "already up");
        tokio::time::advance(TIMEOUT).await;
        assert!(
            detector.tick(Instant::now()).is_empty(),
            "not past the timeout"
        );
        detector.answered("b", Instant::now());
        tokio::time::advance(TIMEOUT + Duration::from_millis(1)).await;
        let changes = detector.tick(Instant::now());
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].peer, "b");
        assert_eq!(changes[0].status, MemberStatus::Down);
        assert!(changes[0].reason.as_deref().unwrap().contains("1500 ms"));
        assert!(detector.tick(Instant::now()).is_empty(), "said once");
        // A joining peer is never counted down for silence: it was never up.
        assert_eq!(detector.status("c"), Some(MemberStatus::Joining));
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_link_or_failed_heartbeat_is_down_at_once_and_an_answer_brings_it_back() {
        let mut detector = detector();
        detector.answered("b", Instant::now());
        assert_eq!(
            became(detector.link_closed("b", "closed".into())),
            Some(MemberStatus::Down)
        );
        assert_eq!(
            became(detector.answered("b", Instant::now())),
            Some(MemberStatus::Up)
        );
        assert_eq!(
            became(detector.failed("b", "no answer".into())),
            Some(MemberStatus::Down)
        );
        assert_eq!(detector.failed("c", "no answer".into()), None, "never up");
        assert_eq!(
            became(detector.link_closed("c", "closed".into())),
            Some(MemberStatus::Down)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_placed_differently_is_refused_until_it_answers_placed_the_same() {
        let mut detector = detector();
        assert_eq!(
            became(detector.refused("b", "placed differently".into())),
            Some(MemberStatus::Refused)
        );
        tokio::time::advance(TIMEOUT * 2).await;
        assert!(detector.tick(Instant::now()).is_empty());
        assert_eq!(detector.failed("b", "x".into()), None);
        assert_eq!(
            became(detector.answered("b", Instant::now())),
            Some(MemberStatus::Up)
        );
        assert_eq!(detector.status("unknown"), None);
        assert_eq!(detector.answered("unknown", Instant::now()), None);
    }
}
