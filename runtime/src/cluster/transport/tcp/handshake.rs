//! The link handshake: before a connection is handed to ractor_cluster, each end proves it
//! holds the cluster cookie, in a few fixed-size messages that playhouse reads itself.
//!
//! Why a handshake of our own before ractor_cluster's: ractor_cluster reads length-prefixed
//! frames of up to `max_frame_bytes` from anyone who connects, keeps a session of three actors
//! for them, and logs every message it cannot use, all before the cookie is shown. Here a
//! stranger can send at most [`CLIENT_HELLO_LEN`] bytes, is closed on the first byte that is not
//! what the protocol expects, and never reaches ractor_cluster. A connection that passes has
//! proved the cookie; ractor_cluster's own handshake then runs on it as before.
//!
//! The exchange (HMAC-SHA256 keyed by the cookie; nonces fresh per connection, so no proof can
//! be replayed):
//!
//! ```text
//! accepting end -> dialling end:  MAGIC | nonce_a                       (48 bytes)
//! dialling end  -> accepting end: MAGIC | nonce_d | hmac("dial", ...)  (80 bytes)
//! accepting end -> dialling end:  hmac("accept", ...)                  (32 bytes)
//! ```
//!
//! The accepting end speaks first, so a dialler learns at once whether it reached a playhouse
//! node; both proofs cover both nonces, and each end checks the other's.

use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// What both hellos start with: the protocol and its version, readable in a packet capture.
pub(crate) const MAGIC: &[u8; 16] = b"PLAYHOUSE-LINK/1";
const NONCE_LEN: usize = 32;
const PROOF_LEN: usize = 32;
/// The accepting end's hello.
pub(crate) const SERVER_HELLO_LEN: usize = MAGIC.len() + NONCE_LEN;
/// The most a stranger can make an accepting node read before it is closed.
pub(crate) const CLIENT_HELLO_LEN: usize = MAGIC.len() + NONCE_LEN + PROOF_LEN;

/// The cookie as a MAC key. Cheap to clone; never printed.
#[derive(Clone)]
pub(crate) struct LinkKey(hmac::Key);

impl std::fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkKey(..)")
    }
}

impl LinkKey {
    pub(crate) fn new(cookie: &str) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, cookie.as_bytes()))
    }

    fn proof(&self, role: &[u8], accepting: &[u8], dialling: &[u8]) -> hmac::Tag {
        let mut context = hmac::Context::with_key(&self.0);
        context.update(MAGIC);
        context.update(role);
        context.update(accepting);
        context.update(dialling);
        context.sign()
    }

    fn verify(&self, role: &[u8], accepting: &[u8], dialling: &[u8], proof: &[u8]) -> bool {
        let mut message = Vec::with_capacity(MAGIC.len() + role.len() + 2 * NONCE_LEN);
        message.extend_from_slice(MAGIC);
        message.extend_from_slice(role);
        message.extend_from_slice(accepting);
        message.extend_from_slice(dialling);
        // Constant time: a wrong proof says nothing of how close it was.
        hmac::verify(&self.0, &message, proof).is_ok()
    }
}

const DIALLING_ROLE: &[u8] = b"dial";
const ACCEPTING_ROLE: &[u8] = b"accept";

/// Why a link handshake failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum HandshakeError {
    /// The other end sent what this protocol never sends: not a playhouse node, or an attack.
    #[error("not a playhouse cluster link: {0}")]
    NotALink(&'static str),
    /// Its proof does not check out: it has another cookie.
    #[error(
        "its proof of the cluster cookie is wrong: do both nodes have the same cluster cookie?"
    )]
    WrongCookie,
    /// It closed the connection, or the connection failed, before the handshake ended.
    #[error("{0}")]
    Closed(String),
}

impl HandshakeError {
    fn closed(during: &str, error: &std::io::Error) -> Self {
        Self::Closed(format!("connection lost during {during}: {error}"))
    }
}

fn nonce() -> [u8; NONCE_LEN] {
    let mut nonce = [0; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .expect("the system's random source failed");
    nonce
}

/// Runs the accepting end of the handshake on `stream`. `on_progress` is called once the
/// dialler's first byte turned out right (a connection that has sent nothing useful is the
/// first to be closed when room is needed).
pub(crate) async fn accept<S>(
    stream: &mut S,
    key: &LinkKey,
    on_progress: impl FnOnce(),
) -> Result<(), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let accepting = nonce();
    let mut hello = [0; SERVER_HELLO_LEN];
    hello[..MAGIC.len()].copy_from_slice(MAGIC);
    hello[MAGIC.len()..].copy_from_slice(&accepting);
    write(stream, &hello, "the link handshake").await?;

    // Read the magic a chunk at a time and judge every byte as it comes, so that a stranger
    // is closed on its first wrong byte rather than at the deadline.
    let mut answer = [0; CLIENT_HELLO_LEN];
    let mut received = 0;
    let mut on_progress = Some(on_progress);
    while received < MAGIC.len() {
        let read = stream
            .read(&mut answer[received..MAGIC.len()])
            .await
            .map_err(|e| HandshakeError::closed("the link handshake", &e))?;
        if read == 0 {
            return Err(HandshakeError::Closed(
                "closed during the link handshake".into(),
            ));
        }
        if answer[received..received + read] != MAGIC[received..received + read] {
            return Err(HandshakeError::NotALink(
                "its first bytes are not a link hello",
            ));
        }
        received += read;
        if let Some(progress) = on_progress.take() {
            progress();
        }
    }
    stream
        .read_exact(&mut answer[MAGIC.len()..])
        .await
        .map_err(|e| HandshakeError::closed("the link handshake", &e))?;
    let dialling = &answer[MAGIC.len()..MAGIC.len() + NONCE_LEN];
    let proof = &answer[MAGIC.len() + NONCE_LEN..];
    if !key.verify(DIALLING_ROLE, &accepting, dialling, proof) {
        return Err(HandshakeError::WrongCookie);
    }
    let ours = key.proof(ACCEPTING_ROLE, &accepting, dialling);
    write(stream, ours.as_ref(), "the link handshake").await
}

/// Runs the dialling end of the handshake on `stream`.
pub(crate) async fn dial<S>(stream: &mut S, key: &LinkKey) -> Result<(), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut hello = [0; SERVER_HELLO_LEN];
    stream.read_exact(&mut hello).await.map_err(|e| {
        HandshakeError::closed("the link handshake (is this a playhouse cluster port?)", &e)
    })?;
    if &hello[..MAGIC.len()] != MAGIC {
        return Err(HandshakeError::NotALink(
            "it does not greet as a playhouse cluster port (another program, or another version?)",
        ));
    }
    let accepting = &hello[MAGIC.len()..];
    let dialling = nonce();
    let mut answer = [0; CLIENT_HELLO_LEN];
    answer[..MAGIC.len()].copy_from_slice(MAGIC);
    answer[MAGIC.len()..MAGIC.len() + NONCE_LEN].copy_from_slice(&dialling);
    answer[MAGIC.len() + NONCE_LEN..]
        .copy_from_slice(key.proof(DIALLING_ROLE, accepting, &dialling).as_ref());
    write(stream, &answer, "the link handshake").await?;
    let mut proof = [0; PROOF_LEN];
    stream.read_exact(&mut proof).await.map_err(|_| {
        HandshakeError::Closed(
            "it closed the link handshake after our proof: do both nodes have the same cluster cookie?"
                .into(),
        )
    })?;
    if !key.verify(ACCEPTING_ROLE, accepting, &dialling, &proof) {
        return Err(HandshakeError::WrongCookie);
    }
    Ok(())
}

async fn write<S: AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
    during: &str,
) -> Result<(), HandshakeError> {
    stream
        .write_all(bytes)
        .await
        .map_err(|e| HandshakeError::closed(during, &e))?;
    stream
        .flush()
        .await
        .map_err(|e| HandshakeError::closed(during, &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOKIE: &str = "a-cluster-cookie-of-some-length";

    async fn both(
        dialler: &str,
        acceptor: &str,
    ) -> (Result<(), HandshakeError>, Result<(), HandshakeError>) {
        let (mut near, mut far) = tokio::io::duplex(1024);
        let (dialler, acceptor) = (LinkKey::new(dialler), LinkKey::new(acceptor));
        let accepting = async move {
            let result = accept(&mut far, &acceptor, || {}).await;
            drop(far);
            result
        };
        tokio::join!(dial(&mut near, &dialler), accepting)
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
    async fn a_wrong_first_byte_is_refused_at_once_without_waiting_for_the_rest() {
        let (mut near, mut far) = tokio::io::duplex(1024);
        let key = LinkKey::new(COOKIE);
        let mut progressed = false;
        let accepting = accept(&mut far, &key, || progressed = true);
        // An empty ractor_cluster frame: an 8-byte length, then two bytes. Nothing more comes,
        // and the connection stays open: the verdict must not wait for more.
        near.write_all(&[0, 0, 0, 0, 0, 0, 0, 2, 0x12, 0])
            .await
            .unwrap();
        assert_eq!(
            accepting.await,
            Err(HandshakeError::NotALink(
                "its first bytes are not a link hello"
            ))
        );
        assert!(!progressed);
    }

    #[tokio::test]
    async fn a_right_start_counts_as_progress_and_a_wrong_byte_later_is_refused() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let (mut near, mut far) = tokio::io::duplex(1024);
        let progressed = Arc::new(AtomicBool::new(false));
        let accepting = tokio::spawn({
            let progressed = progressed.clone();
            async move {
                let key = LinkKey::new(COOKIE);
                accept(&mut far, &key, || progressed.store(true, Ordering::Relaxed)).await
            }
        });
        near.write_all(b"PLAYHOUSE-").await.unwrap();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while !progressed.load(Ordering::Relaxed) {
            assert!(tokio::time::Instant::now() < deadline, "no progress seen");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        near.write_all(b"X").await.unwrap();
        assert!(matches!(
            accepting.await.unwrap(),
            Err(HandshakeError::NotALink(_))
        ));
    }

    #[tokio::test]
    async fn a_dialler_reaching_another_program_says_so() {
        let (mut near, mut far) = tokio::io::duplex(1024);
        far.write_all(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\nand more bytes, past a hello's length")
            .await
            .unwrap();
        let result = dial(&mut near, &LinkKey::new(COOKIE)).await;
        assert!(
            matches!(result, Err(HandshakeError::NotALink(_))),
            "{result:?}"
        );
    }

    #[test]
    fn a_proof_binds_its_role_and_both_nonces() {
        let key = LinkKey::new(COOKIE);
        let (a, d) = ([1u8; NONCE_LEN], [2u8; NONCE_LEN]);
        let proof = key.proof(DIALLING_ROLE, &a, &d);
        assert!(key.verify(DIALLING_ROLE, &a, &d, proof.as_ref()));
        assert!(!key.verify(ACCEPTING_ROLE, &a, &d, proof.as_ref()));
        assert!(!key.verify(DIALLING_ROLE, &d, &a, proof.as_ref()));
        assert!(!LinkKey::new("another-cookie-entirely-1234").verify(
            DIALLING_ROLE,
            &a,
            &d,
            proof.as_ref()
        ));
    }
}
