//! The cluster port against strangers and members, on loopback sockets in one process.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::handshake::SERVER_HELLO_LEN;
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
        LinkKey::new(COOKIE),
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

/// Reads the port's hello, then waits up to `wait` for the port to close the connection.
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
async fn at_the_cap_a_silent_handshake_goes_before_one_that_started_right() {
    let port = start(64, 2, Duration::from_secs(60)).await;
    let mut started = TcpStream::connect(port.address).await.unwrap();
    started.write_all(b"PLAYHOUSE-").await.unwrap();
    let mut silent = TcpStream::connect(port.address).await.unwrap();
    // Let both be accepted and the first's bytes judged before the cap is reached.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _newcomer = TcpStream::connect(port.address).await.unwrap();
    assert!(
        closed_within(&mut silent, Duration::from_secs(5)).await,
        "the silent handshake was kept"
    );
    assert!(
        !closed_within(&mut started, Duration::from_millis(300)).await,
        "the handshake that had started right was closed first"
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

    // Refused: closed before even the hello.
    let mut refused = TcpStream::connect(port.address).await.unwrap();
    let mut hello = [0u8; SERVER_HELLO_LEN];
    let read = tokio::time::timeout(Duration::from_secs(5), refused.read(&mut hello))
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
