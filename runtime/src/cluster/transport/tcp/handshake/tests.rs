//! The link handshake between two in-memory pipes, and its parts one by one.

use super::*;

const COOKIE: &str = "a-cluster-cookie-of-some-length";
const SKEW: Duration = Duration::from_secs(30);

fn acceptor(cookie: &str) -> Acceptor {
    Acceptor::new(LinkKey::new(cookie), SKEW)
}

async fn both(
    dialler: &str,
    accepting: &str,
) -> (Result<(), HandshakeError>, Result<(), HandshakeError>) {
    let (mut near, mut far) = tokio::io::duplex(1024);
    let (dialler, accepting) = (LinkKey::new(dialler), acceptor(accepting));
    let accepted = async move {
        let result = accepting.accept(&mut far, HelloReader::new()).await;
        drop(far);
        result
    };
    tokio::join!(dial(&mut near, &dialler), accepted)
}

/// Reads a dialler's hello from `far` and answers it as an acceptor whose clock reads `now`.
async fn answer_at(far: &mut tokio::io::DuplexStream, accepting: &Acceptor, now: u64) {
    let hello = HelloReader::new().finish(far).await.unwrap();
    let answer = accepting.judge(&hello, now).unwrap();
    far.write_all(answer.bytes()).await.unwrap();
}

#[tokio::test]
async fn the_same_cookie_links_both_ways() {
    let (dialled, accepted) = both(COOKIE, COOKIE).await;
    assert_eq!(dialled, Ok(()));
    assert_eq!(accepted, Ok(()));
}

#[tokio::test]
async fn another_cookie_is_refused_by_the_accepting_end_and_seen_by_the_dialler() {
    let (dialled, accepted) = both("another-cookie-entirely-1234", COOKIE).await;
    assert_eq!(accepted, Err(HandshakeError::WrongCookie));
    let Err(HandshakeError::Closed(reason)) = dialled else {
        panic!("{dialled:?}");
    };
    assert!(reason.contains("same cluster cookie"), "{reason}");
}

#[tokio::test]
async fn the_dialler_proves_the_cookie_in_its_first_bytes_before_hearing_anything() {
    let (mut near, mut far) = tokio::io::duplex(1024);
    let dialling = tokio::spawn(async move { dial(&mut near, &LinkKey::new(COOKIE)).await });
    // The accepting end has sent nothing, and already holds a complete, provable hello.
    let hello = HelloReader::new().finish(&mut far).await.unwrap();
    let answer = acceptor(COOKIE).judge(&hello, unix_millis()).unwrap();
    assert_eq!(answer.refusal(), None);
    far.write_all(answer.bytes()).await.unwrap();
    assert_eq!(dialling.await.unwrap(), Ok(()));
}

#[tokio::test]
async fn a_wrong_first_byte_is_refused_at_once_without_waiting_for_the_rest() {
    let (mut near, mut far) = tokio::io::duplex(1024);
    // An empty ractor_cluster frame: an 8-byte length, then two bytes. Nothing more comes,
    // and the connection stays open: the verdict must not wait for more.
    near.write_all(&[0, 0, 0, 0, 0, 0, 0, 2, 0x12, 0])
        .await
        .unwrap();
    let result = HelloReader::new().finish(&mut far).await;
    assert_eq!(
        result,
        Err(HandshakeError::NotALink(
            "its first bytes are not a link hello"
        ))
    );
}

#[test]
fn a_right_start_reads_on_and_a_wrong_byte_later_is_refused() {
    let mut reader = HelloReader::new();
    reader.unfilled()[..10].copy_from_slice(b"PLAYHOUSE-");
    assert_eq!(reader.advance(10), Ok(None));
    reader.unfilled()[0] = b'X';
    assert!(matches!(
        reader.advance(1),
        Err(HandshakeError::NotALink(_))
    ));
}

#[test]
fn a_hello_of_another_protocol_version_is_named() {
    let mut reader = HelloReader::new();
    reader.unfilled()[..16].copy_from_slice(b"PLAYHOUSE-LINK/9");
    assert_eq!(
        reader.advance(16),
        Err(HandshakeError::OtherVersion("PLAYHOUSE-LINK/9".into()))
    );
}

#[tokio::test]
async fn a_dialler_reaching_an_acceptor_of_the_first_version_says_so() {
    let (mut near, mut far) = tokio::io::duplex(1024);
    // Version 1's acceptor spoke first: its magic and a nonce.
    far.write_all(b"PLAYHOUSE-LINK/1").await.unwrap();
    far.write_all(&[7; 32]).await.unwrap();
    let result = dial(&mut near, &LinkKey::new(COOKIE)).await;
    assert_eq!(
        result,
        Err(HandshakeError::OtherVersion("PLAYHOUSE-LINK/1".into()))
    );
}

#[tokio::test]
async fn a_dialler_reaching_another_program_is_told_nothing_it_could_take_for_a_link() {
    let (mut near, mut far) = tokio::io::duplex(1024);
    far.write_all(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\nand more bytes, past an answer's length")
        .await
        .unwrap();
    let result = dial(&mut near, &LinkKey::new(COOKIE)).await;
    assert!(
        matches!(result, Err(HandshakeError::NotALink(reason)) if reason.contains("another program")),
        "{result:?}"
    );
}

#[test]
fn a_hello_played_back_is_refused_with_its_own_verdict() {
    let key = LinkKey::new(COOKIE);
    let accepting = acceptor(COOKIE);
    let now = unix_millis();
    let hello = Hello::new(&key, now, [9; NONCE_LEN]);
    assert_eq!(accepting.judge(&hello, now).unwrap().refusal(), None);
    let again = accepting.judge(&hello, now + 10).unwrap();
    assert_eq!(again.bytes()[0], Verdict::Replayed as u8);
    assert!(again.refusal().unwrap().contains("played back"));
}

#[tokio::test]
async fn clocks_further_apart_than_the_skew_are_refused_and_both_ends_say_by_how_much() {
    let (mut near, mut far) = tokio::io::duplex(1024);
    let dialling = tokio::spawn(async move { dial(&mut near, &LinkKey::new(COOKIE)).await });
    let ten_minutes_ahead = unix_millis() + 600_000;
    let accepting = acceptor(COOKIE);
    let hello = HelloReader::new().finish(&mut far).await.unwrap();
    let answer = accepting.judge(&hello, ten_minutes_ahead).unwrap();
    assert!(
        answer.refusal().unwrap().contains("max_clock_skew_ms"),
        "{answer:?}"
    );
    far.write_all(answer.bytes()).await.unwrap();
    let Err(HandshakeError::Refused(reason)) = dialling.await.unwrap() else {
        panic!("the dialler was not told");
    };
    assert!(reason.contains("clock is 6"), "{reason}");
    assert!(reason.contains("NTP"), "{reason}");
}

#[tokio::test]
async fn clocks_within_the_skew_link() {
    let (mut near, mut far) = tokio::io::duplex(1024);
    let dialling = tokio::spawn(async move { dial(&mut near, &LinkKey::new(COOKIE)).await });
    answer_at(&mut far, &acceptor(COOKIE), unix_millis() + 20_000).await;
    assert_eq!(dialling.await.unwrap(), Ok(()));
}

#[tokio::test]
async fn an_answer_from_an_acceptor_with_another_cookie_is_not_believed() {
    let (mut near, mut far) = tokio::io::duplex(1024);
    let dialling = tokio::spawn(async move { dial(&mut near, &LinkKey::new(COOKIE)).await });
    let hello = HelloReader::new().finish(&mut far).await.unwrap();
    // An acceptor that skips the check and answers "linked" with its own key.
    let impostor = Acceptor {
        key: LinkKey::new("another-cookie-entirely-1234"),
        max_skew: SKEW,
        replays: std::sync::Mutex::new(Replays::new(SKEW)),
    };
    let forged = Hello::new(&impostor.key, hello.sent_at, hello.nonce);
    far.write_all(impostor.judge(&forged, unix_millis()).unwrap().bytes())
        .await
        .unwrap();
    assert!(matches!(
        dialling.await.unwrap(),
        Err(HandshakeError::NotALink(_))
    ));
}

#[test]
fn a_proof_binds_its_time_and_nonce() {
    let key = LinkKey::new(COOKIE);
    let accepting = acceptor(COOKIE);
    let now = unix_millis();
    let mut hello = Hello::new(&key, now, [1; NONCE_LEN]);
    hello.sent_at += 1;
    assert_eq!(
        accepting.judge(&hello, now).unwrap_err(),
        HandshakeError::WrongCookie
    );
    let mut hello = Hello::new(&key, now, [1; NONCE_LEN]);
    hello.nonce[0] ^= 1;
    assert_eq!(
        accepting.judge(&hello, now).unwrap_err(),
        HandshakeError::WrongCookie
    );
    let hello = Hello::new(&key, now, [1; NONCE_LEN]);
    assert_eq!(Hello::from_bytes(&hello.to_bytes()), hello);
}

#[test]
fn nonces_are_forgotten_once_their_time_has_passed_and_memory_stays_bounded() {
    let start = Instant::now();
    let mut replays = Replays::new(Duration::from_secs(60));
    assert!(replays.first_use([1; NONCE_LEN], start));
    assert!(!replays.first_use([1; NONCE_LEN], start + Duration::from_secs(59)));
    assert!(replays.first_use([1; NONCE_LEN], start + Duration::from_secs(61)));
    for n in 0..MAX_REMEMBERED_NONCES + 10 {
        let mut nonce = [0; NONCE_LEN];
        nonce[..8].copy_from_slice(&(n as u64).to_be_bytes());
        nonce[31] = 2;
        replays.first_use(nonce, start + Duration::from_secs(62));
    }
    assert!(replays.order.len() <= MAX_REMEMBERED_NONCES);
    assert_eq!(replays.seen.len(), replays.order.len());
}
