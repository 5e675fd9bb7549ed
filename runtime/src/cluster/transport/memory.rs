//! An in-process network for tests: nodes in one process linked through channels, with the
//! faults a real network has, all on tokio's clock (so paused time drives it) and all drawn
//! from one seeded generator (so a seed replays a run).
//!
//! Like TCP, a link between two nodes is opened by a dial and closed when either end stops or
//! crashes (the other end hears [`LinkEvent::Down`] at once, as it would a reset). Faults are
//! silent, as on a real network: a cut direction drops what is sent that way without closing
//! the link, so only a missing answer tells; a paused node's messages wait until it resumes;
//! every message takes a random delay within bounds (which also reorders them), and may be
//! dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot, watch};

use super::{CallFailure, Channel, Inbound, LinkEvent, Transport};

/// How long a dial into a cut direction waits before it fails, as a TCP connect would.
const DIAL_TIMEOUT: Duration = Duration::from_secs(1);

/// The network. Cheap to clone; clones are the same network.
#[derive(Clone)]
pub struct MemoryNetwork {
    inner: Arc<Mutex<Net>>,
}

impl std::fmt::Debug for MemoryNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryNetwork").finish_non_exhaustive()
    }
}

struct Net {
    /// Started nodes.
    nodes: BTreeMap<String, Endpoint>,
    /// Open links, by their two ends in name order, each with a sender that closes it.
    links: BTreeMap<(String, String), watch::Sender<bool>>,
    /// Directions that drop what is sent: (from, to).
    cut: BTreeSet<(String, String)>,
    /// Paused nodes; each message to or from one waits on its channel until it resumes.
    paused: BTreeMap<String, watch::Sender<bool>>,
    /// Every message takes between these.
    delay: (Duration, Duration),
    /// The share of messages lost, 0 to 1.
    drop_rate: f64,
    random: SplitMix64,
}

struct Endpoint {
    inbound: Arc<dyn Inbound>,
    events: mpsc::UnboundedSender<LinkEvent>,
}

impl MemoryNetwork {
    /// A network with no faults, drawing its randomness from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Net {
                nodes: BTreeMap::new(),
                links: BTreeMap::new(),
                cut: BTreeSet::new(),
                paused: BTreeMap::new(),
                delay: (Duration::ZERO, Duration::ZERO),
                drop_rate: 0.0,
                random: SplitMix64(seed),
            })),
        }
    }

    /// Node `node`'s way onto this network.
    pub fn transport(&self, node: &str) -> Arc<dyn Transport> {
        Arc::new(MemoryTransport {
            node: node.to_owned(),
            network: self.clone(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Net> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every message takes between `min` and `max`.
    pub fn set_delay(&self, min: Duration, max: Duration) {
        self.lock().delay = (min, max.max(min));
    }

    /// Loses `rate` (0 to 1) of all messages.
    pub fn set_drop_rate(&self, rate: f64) {
        self.lock().drop_rate = rate.clamp(0.0, 1.0);
    }

    /// Drops what `from` sends `to` (one way), until healed.
    pub fn cut(&self, from: &str, to: &str) {
        self.lock().cut.insert((from.to_owned(), to.to_owned()));
    }

    /// Cuts both ways between `a` and `b`.
    pub fn partition(&self, a: &str, b: &str) {
        self.cut(a, b);
        self.cut(b, a);
    }

    /// Removes every cut.
    pub fn heal(&self) {
        self.lock().cut.clear();
    }

    /// Holds every message to and from `node` until [`MemoryNetwork::resume`].
    pub fn pause(&self, node: &str) {
        self.lock()
            .paused
            .entry(node.to_owned())
            .or_insert_with(|| watch::channel(true).0);
    }

    /// Lets `node`'s held messages go.
    pub fn resume(&self, node: &str) {
        if let Some(paused) = self.lock().paused.remove(node) {
            let _ = paused.send(false);
        }
    }

    /// Takes `node` off the network, closing its links (its peers hear it at once). What is
    /// in flight to or from it is lost.
    fn leave(&self, node: &str) {
        let mut net = self.lock();
        net.nodes.remove(node);
        let closed: Vec<(String, String)> = net
            .links
            .keys()
            .filter(|(a, b)| a == node || b == node)
            .cloned()
            .collect();
        for pair in closed {
            if let Some(link) = net.links.remove(&pair) {
                let _ = link.send(true);
            }
            let peer = if pair.0 == node { &pair.1 } else { &pair.0 };
            if let Some(endpoint) = net.nodes.get(peer) {
                let _ = endpoint.events.send(LinkEvent::Down {
                    peer: node.to_owned(),
                    reason: format!("the link to node {node} closed"),
                });
            }
        }
    }

    /// Opens a link between `from` and `to`, as a dial does: it needs both directions open
    /// (a cut one makes the dial time out) and the other node on the network.
    async fn connect(&self, from: &str, to: &str) -> Result<(), String> {
        let delay = {
            let mut net = self.lock();
            let cut = net.cut.contains(&(from.to_owned(), to.to_owned()))
                || net.cut.contains(&(to.to_owned(), from.to_owned()));
            (!cut).then(|| net.random_delay())
        };
        tokio::time::sleep(delay.unwrap_or(DIAL_TIMEOUT)).await;
        if delay.is_none() {
            return Err(format!("connecting to node {to}: timed out"));
        }
        let mut net = self.lock();
        if !net.nodes.contains_key(from) {
            return Err("this node left the network".into());
        }
        if !net.nodes.contains_key(to) {
            return Err(format!("connecting to node {to}: connection refused"));
        }
        net.links
            .entry(pair(from, to))
            .or_insert_with(|| watch::channel(false).0);
        for (node, peer) in [(from, to), (to, from)] {
            let _ = net.nodes[node].events.send(LinkEvent::Up {
                peer: peer.to_owned(),
            });
        }
        Ok(())
    }

    /// How long a message from `from` to `to` takes now, `None` if it is lost; `Err` if one of
    /// them is not on the network.
    fn delay(&self, from: &str, to: &str) -> Result<Option<Duration>, String> {
        let mut net = self.lock();
        if !net.nodes.contains_key(from) {
            return Err("this node left the network".into());
        }
        let cut = net.cut.contains(&(from.to_owned(), to.to_owned()));
        let delay = net.random_delay();
        let rate = net.drop_rate;
        let dropped = net.random.chance(rate);
        Ok((!cut && !dropped).then_some(delay))
    }

    /// Waits while `node` is paused.
    async fn while_paused(&self, node: &str) {
        let paused = self.lock().paused.get(node).map(watch::Sender::subscribe);
        if let Some(mut paused) = paused {
            let _ = paused.wait_for(|paused| !paused).await;
        }
    }

    /// Carries `message` from `from` to `to` over their link and its answer back; `None` when
    /// it or its answer is lost (the caller times out).
    async fn carry(
        &self,
        from: &str,
        to: &str,
        channel: Channel,
        message: Vec<u8>,
    ) -> Option<Vec<u8>> {
        self.while_paused(from).await;
        let there = self.delay(from, to).ok()??;
        tokio::time::sleep(there).await;
        self.while_paused(to).await;
        let inbound = self.lock().nodes.get(to)?.inbound.clone();
        let answer = inbound.receive(channel, message).await;
        let back = self.delay(to, from).ok()??;
        tokio::time::sleep(back).await;
        self.while_paused(from).await;
        Some(answer)
    }
}

impl Net {
    fn random_delay(&mut self) -> Duration {
        let (min, max) = self.delay;
        let spread = u64::try_from((max - min).as_nanos()).unwrap_or(u64::MAX);
        min + Duration::from_nanos(self.random.below(spread.saturating_add(1)))
    }
}

/// One node's end of a [`MemoryNetwork`].
struct MemoryTransport {
    node: String,
    network: MemoryNetwork,
}

impl Transport for MemoryTransport {
    fn start(
        &self,
        inbound: Arc<dyn Inbound>,
        events: mpsc::UnboundedSender<LinkEvent>,
    ) -> BoxFuture<'_, Result<(), String>> {
        let mut net = self.network.lock();
        let result = match net.nodes.contains_key(&self.node) {
            true => Err(format!("node {} is on the network already", self.node)),
            false => {
                net.nodes
                    .insert(self.node.clone(), Endpoint { inbound, events });
                Ok(())
            }
        };
        Box::pin(std::future::ready(result))
    }

    fn dial(&self, peer: &str, _address: &str) -> BoxFuture<'static, Result<(), String>> {
        let (network, node, peer) = (self.network.clone(), self.node.clone(), peer.to_owned());
        Box::pin(async move { network.connect(&node, &peer).await })
    }

    fn call(
        &self,
        peer: &str,
        channel: Channel,
        message: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, CallFailure>> {
        let link = self
            .network
            .lock()
            .links
            .get(&pair(&self.node, peer))
            .map(watch::Sender::subscribe);
        let Some(mut closed) = link else {
            return Box::pin(std::future::ready(Err(CallFailure::NotLinked)));
        };
        let (network, node, peer) = (self.network.clone(), self.node.clone(), peer.to_owned());
        let (answer, answered) = oneshot::channel();
        // The message travels on its own: a caller that gives up does not take it back.
        tokio::spawn(async move {
            let closed = async move {
                let _ = closed.wait_for(|closed| *closed).await;
            };
            tokio::select! {
                // Lost on the way (`None`): the caller hears nothing and times out, or hears
                // the link close.
                Some(carried) = network.carry(&node, &peer, channel, message) => {
                    let _ = answer.send(carried);
                }
                // The link closed: the answer cannot come back on it.
                () = closed => drop(answer),
            }
        });
        Box::pin(async move {
            match tokio::time::timeout(timeout, answered).await {
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(_)) => Err(CallFailure::Closed),
                Err(_) => Err(CallFailure::TimedOut(timeout)),
            }
        })
    }

    fn stop(&self) {
        self.network.leave(&self.node);
    }
}

fn pair(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}

/// A small seeded generator (SplitMix64): the same seed, the same faults.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (0 when `bound` is 0).
    fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 { 0 } else { self.next() % bound }
    }

    fn chance(&mut self, probability: f64) -> bool {
        probability > 0.0 && ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < probability
    }
}

#[cfg(test)]
mod tests;
