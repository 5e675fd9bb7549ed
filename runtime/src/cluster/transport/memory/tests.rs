//! The in-memory network on paused time: links, calls, and each fault.

use super::*;

/// Answers every message with itself, reversed, after `work`.
struct Echo {
    work: Duration,
}

impl Inbound for Echo {
    fn receive(&self, _: Channel, message: Vec<u8>) -> BoxFuture<'static, Vec<u8>> {
        let work = self.work;
        Box::pin(async move {
            tokio::time::sleep(work).await;
            message.into_iter().rev().collect()
        })
    }
}

struct Node {
    transport: Arc<dyn Transport>,
    events: mpsc::UnboundedReceiver<LinkEvent>,
}

async fn node(network: &MemoryNetwork, name: &str) -> Node {
    let transport = network.transport(name);
    let (sender, events) = mpsc::unbounded_channel();
    transport
        .start(
            Arc::new(Echo {
                work: Duration::from_millis(1),
            }),
            sender,
        )
        .await
        .unwrap();
    Node { transport, events }
}

const SECOND: Duration = Duration::from_secs(1);

async fn linked(network: &MemoryNetwork) -> (Node, Node) {
    let (mut a, mut b) = (node(network, "a").await, node(network, "b").await);
    a.transport.dial("b", "b:1").await.unwrap();
    let up = |peer: &str| LinkEvent::Up {
        peer: peer.to_owned(),
    };
    assert_eq!(a.events.recv().await, Some(up("b")));
    assert_eq!(b.events.recv().await, Some(up("a")));
    (a, b)
}

#[tokio::test(start_paused = true)]
async fn a_call_over_a_link_is_answered_and_without_one_it_is_not_sent() {
    let network = MemoryNetwork::new(1);
    let (a, _b) = linked(&network).await;
    let answer = a
        .transport
        .call("b", Channel::Call, vec![1, 2, 3], SECOND)
        .await;
    assert_eq!(answer, Ok(vec![3, 2, 1]));
    let c = node(&network, "c").await;
    assert_eq!(
        c.transport.call("a", Channel::Call, vec![1], SECOND).await,
        Err(CallFailure::NotLinked)
    );
    let refused = c.transport.dial("nobody", "nobody:1").await.unwrap_err();
    assert!(refused.contains("refused"), "{refused}");
}

#[tokio::test(start_paused = true)]
async fn a_cut_is_silent_one_way_and_a_partition_times_out_dials() {
    let network = MemoryNetwork::new(2);
    let (a, b) = linked(&network).await;
    network.cut("a", "b");
    assert_eq!(
        a.transport.call("b", Channel::Call, vec![1], SECOND).await,
        Err(CallFailure::TimedOut(SECOND))
    );
    // The other way, the call arrives but its answer (b to a: not cut) comes back too.
    assert_eq!(
        b.transport
            .call("a", Channel::Call, vec![1, 2], SECOND)
            .await,
        Err(CallFailure::TimedOut(SECOND)),
        "the answer travels a to b, which is cut"
    );
    network.heal();
    assert_eq!(
        a.transport.call("b", Channel::Call, vec![4], SECOND).await,
        Ok(vec![4])
    );
    network.partition("a", "c");
    let c = node(&network, "c").await;
    let dialled = c.transport.dial("a", "a:1").await.unwrap_err();
    assert!(dialled.contains("timed out"), "{dialled}");
}

#[tokio::test(start_paused = true)]
async fn a_paused_node_answers_only_once_resumed() {
    let network = MemoryNetwork::new(3);
    let (a, _b) = linked(&network).await;
    network.pause("b");
    assert_eq!(
        a.transport.call("b", Channel::Call, vec![1], SECOND).await,
        Err(CallFailure::TimedOut(SECOND))
    );
    let late = a.transport.call("b", Channel::Call, vec![2], SECOND * 10);
    let resumer = {
        let network = network.clone();
        tokio::spawn(async move {
            tokio::time::sleep(SECOND * 3).await;
            network.resume("b");
        })
    };
    let started = tokio::time::Instant::now();
    assert_eq!(late.await, Ok(vec![2]));
    assert!(started.elapsed() >= SECOND * 3);
    resumer.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_node_that_stops_closes_its_links_and_calls_in_flight_end() {
    let network = MemoryNetwork::new(4);
    let (mut a, b) = linked(&network).await;
    network.set_delay(Duration::from_millis(500), Duration::from_millis(500));
    let in_flight = a.transport.call("b", Channel::Call, vec![1], SECOND * 10);
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        b.transport.stop();
    });
    assert_eq!(in_flight.await, Err(CallFailure::Closed));
    stopper.await.unwrap();
    assert_eq!(
        a.events.recv().await,
        Some(LinkEvent::Down {
            peer: "b".into(),
            reason: "the link to node b closed".into()
        })
    );
    assert_eq!(
        a.transport.call("b", Channel::Call, vec![1], SECOND).await,
        Err(CallFailure::NotLinked)
    );
}

#[tokio::test(start_paused = true)]
async fn delays_and_drops_follow_the_seed() {
    async fn run(seed: u64) -> Vec<Option<u128>> {
        let network = MemoryNetwork::new(seed);
        let (a, _b) = linked(&network).await;
        network.set_delay(Duration::from_millis(1), Duration::from_millis(50));
        network.set_drop_rate(0.3);
        let mut outcomes = Vec::new();
        for n in 0..20u8 {
            let started = tokio::time::Instant::now();
            let answer = a.transport.call("b", Channel::Call, vec![n], SECOND).await;
            outcomes.push(answer.ok().map(|_| started.elapsed().as_millis()));
        }
        outcomes
    }
    let first = run(7).await;
    assert_eq!(first, run(7).await, "same seed, same delays and drops");
    assert!(first.iter().any(Option::is_none), "some were dropped");
    assert!(first.iter().any(Option::is_some), "some arrived");
    assert_ne!(first, run(8).await);
}
