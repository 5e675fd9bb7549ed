//! The cluster port against strangers and members, on loopback sockets in one process.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::handshake::{LinkKey, MAGIC};
use super::*;

const COOKIE: &str = "a-cluster-cookie-for-port-tests";

/// A port on a free loopback address, and the links it hands over.
struct TestPort {
    address: SocketAddr,
    links: mpsc::UnboundedReceiver<Box<dyn ClusterBidiStream>>,
    _task: tokio::task::JoinHandle<()>,
}

async fn start(max_connections: usize, max_handshakes: usize, timeout: Duration) -> TestPort {
    let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let address = listener.local_addr().unwrap();
    let (sender, links) = mpsc::unbounded_channel();
    let task = serve(
        listener,
        PortLimits {
            max_connections,
            max_handshakes,
            handshake_timeout: timeout,
        },
        None,
        Acceptor::new(LinkKey::new(COOKIE), Duration::from_secs(30)),
        Box::new(move |link| {
            let _ = sender.send(link);
        }),
    );
    TestPort {
        address,
        links,
        _task: task,
    }
}

/// A member's dial: the link handshake with the right cookie.
async fn member(address: SocketAddr) -> Result<TcpStream, HandshakeError> {
    let mut stream = TcpStream::connect(address).await.unwrap();
    handshake::dial(&mut stream, &LinkKey::new(COOKIE)).await?;
    Ok(stream)
}

/// A connection from loopback address `source` (any of 127.0.0.0/8), as if from another host.
async fn connect_from(source: [u8; 4], address: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    socket.connect(address).await.unwrap()
}

/// Waits up to `wait` for the port to close the connection (reading what it sends).
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buffer = [0u8; 256];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn silent_sockets_past_the_handshake_cap_do_not_hold_up_a_member() {
    let mut port = start(64, 4, Duration::from_secs(60)).await;
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(port.address).await.unwrap());
    }
    // Each has a minute left before its deadline: only eviction can make room.
    let linked = tokio::time::timeout(Duration::from_secs(10), member(port.address))
        .await
        .expect("a member's handshake waited behind silent sockets");
    assert!(linked.is_ok(), "{linked:?}");
    assert!(port.links.recv().await.is_some());
}

#[tokio::test]
async fn at_the_cap_the_address_holding_the_most_handshakes_loses_its_oldest() {
    let port = start(64, 3, Duration::from_secs(60)).await;
    let mut elsewhere = connect_from([127, 0, 0, 2], port.address).await;
    let mut flooding = Vec::new();
    for _ in 0..2 {
        flooding.push(connect_from([127, 0, 0, 3], port.address).await);
        // Accepted in this order, so that "oldest" means something.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // At the cap: each newcomer from the flooding address closes that address's oldest.
    for _ in 0..4 {
        flooding.push(connect_from([127, 0, 0, 3], port.address).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (index, stream) in flooding.iter_mut().enumerate().take(4) {
        assert!(
            closed_within(stream, Duration::from_secs(5)).await,
            "flooding connection {index} was kept"
        );
    }
    assert!(
        !closed_within(&mut elsewhere, Duration::from_millis(300)).await,
        "the one connection from another address was closed for the flood's sake"
    );
}

/// Opens connections that send the protocol's magic and then hold, as fast as it can, keeping
/// the last hundred open: a stranger who read the protocol, flooding the port.
async fn flood_with_magic(address: SocketAddr, stop: Arc<AtomicBool>) {
    let mut held = std::collections::VecDeque::new();
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut stream) = TcpStream::connect(address).await else {
            continue;
        };
        let _ = stream.write_all(MAGIC).await;
        held.push_back(stream);
        if held.len() > 100 {
            held.pop_front();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_links_every_time_while_strangers_flood_the_port_with_the_magic() {
    let mut port = start(128, 8, Duration::from_secs(5)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let floods: Vec<_> = (0..3)
        .map(|_| tokio::spawn(flood_with_magic(port.address, stop.clone())))
        .collect();
    // Let the flood fill every handshake slot first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut failures = Vec::new();
    for attempt in 0..30 {
        match tokio::time::timeout(Duration::from_secs(5), member(port.address)).await {
            Ok(Ok(_stream)) => {}
            Ok(Err(error)) => failures.push(format!("dial {attempt}: {error}")),
            Err(_) => failures.push(format!("dial {attempt}: no answer within 5 s")),
        }
    }
    stop.store(true, Ordering::Relaxed);
    for flood in floods {
        flood.await.unwrap();
    }
    assert!(failures.is_empty(), "{failures:#?}");
    let mut linked = 0;
    while port.links.try_recv().is_ok() {
        linked += 1;
    }
    assert_eq!(
        linked, 30,
        "every member dial, and nothing else, is handed over"
    );
}

#[tokio::test]
async fn a_wrong_first_byte_is_closed_at_once_and_silence_at_the_deadline() {
    let port = start(64, 8, Duration::from_millis(500)).await;
    let mut garbage = TcpStream::connect(port.address).await.unwrap();
    // An empty ractor_cluster inter-node message: 8-byte length, then two bytes.
    garbage
        .write_all(&[0, 0, 0, 0, 0, 0, 0, 2, 0x12, 0])
        .await
        .unwrap();
    let sent = Instant::now();
    assert!(closed_within(&mut garbage, Duration::from_secs(5)).await);
    assert!(
        sent.elapsed() < Duration::from_millis(400),
        "closed only at the deadline"
    );

    let mut silent = TcpStream::connect(port.address).await.unwrap();
    let opened = Instant::now();
    assert!(closed_within(&mut silent, Duration::from_secs(5)).await);
    assert!(opened.elapsed() >= Duration::from_millis(500));
}

#[tokio::test]
async fn a_wrong_cookie_is_closed_and_never_handed_over() {
    let mut port = start(64, 8, Duration::from_secs(60)).await;
    let mut stream = TcpStream::connect(port.address).await.unwrap();
    let refused =
        handshake::dial(&mut stream, &LinkKey::new("another-cookie-of-some-length")).await;
    assert!(
        matches!(refused, Err(HandshakeError::Closed(_))),
        "{refused:?}"
    );
    assert!(port.links.try_recv().is_err());
}

#[tokio::test]
async fn when_linked_members_hold_every_slot_a_newcomer_is_refused_until_one_goes() {
    let mut port = start(2, 1, Duration::from_secs(60)).await;
    let _first = member(port.address).await.unwrap();
    let _second = member(port.address).await.unwrap();
    let first_link = port.links.recv().await.unwrap();
    let _second_link = port.links.recv().await.unwrap();

    // Refused: closed at once, with nothing sent.
    let mut refused = TcpStream::connect(port.address).await.unwrap();
    let mut nothing = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), refused.read(&mut nothing))
        .await
        .expect("a refused connection was left open");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    // A link that goes frees its slot.
    drop(first_link);
    let again = tokio::time::timeout(Duration::from_secs(5), member(port.address))
        .await
        .expect("the freed slot was not given out");
    assert!(again.is_ok(), "{again:?}");
}
