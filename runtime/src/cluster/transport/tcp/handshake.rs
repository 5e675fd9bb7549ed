//! The link handshake: before a connection is handed to ractor_cluster, the dialling end
//! proves it holds the cluster cookie in its very first bytes, and the accepting end answers
//! with a proof of its own. playhouse reads both itself, as fixed-size messages.
//!
//! Why a handshake of our own before ractor_cluster's: ractor_cluster reads length-prefixed
//! frames of up to `max_frame_bytes` from anyone who connects, keeps a session of three actors
//! for them, and logs every message it cannot use, all before the cookie is shown. Here a
//! stranger can send at most [`HELLO_LEN`] bytes, is closed on the first byte that is not what
//! the protocol expects, is sent nothing, and never reaches ractor_cluster.
//!
//! Why the dialler speaks first, with a timestamp rather than an answer to a challenge: a
//! member's proof is then in the first packet of its connection, so the accepting end knows it
//! for a member the moment it reads it, before strangers flooding the port can take its place
//! (a challenge would leave a member indistinguishable from them for a round trip, which a
//! flood of a few hundred connections a second fills). Freshness comes from the timestamp
//! (within `cluster.max_clock_skew_ms` of the acceptor's clock) and the nonce, which the
//! accepting end remembers for as long as the timestamp is acceptable ([`Replays`]).
//!
//! ```text
//! dialling end  -> accepting end: MAGIC | sent_at | nonce | mac("dial", sent_at, nonce)       (88 bytes)
//! accepting end -> dialling end:  verdict | its clock | mac("accept", verdict, clock, sent_at, nonce)   (41 bytes)
//! ```
//!
//! MACs are HMAC-SHA256 keyed by the cookie; times are Unix milliseconds, big-endian. The
//! answer is authenticated too, and covers the dialler's fresh nonce, so the dialler knows the
//! accepting end holds the cookie and that the verdict (linked, clocks apart, replayed) is
//! its own.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// What a hello starts with: the protocol and its version, readable in a packet capture.
pub(crate) const MAGIC: &[u8; 16] = b"PLAYHOUSE-LINK/2";
/// The part of [`MAGIC`] every version shares: an answer starting with it is another version.
const FAMILY: &[u8] = b"PLAYHOUSE-LINK/";
const NONCE_LEN: usize = 32;
const MAC_LEN: usize = 32;
const TIME_LEN: usize = 8;
/// The dialler's hello: the most a stranger can make an accepting node read.
pub(crate) const HELLO_LEN: usize = MAGIC.len() + TIME_LEN + NONCE_LEN + MAC_LEN;
/// The accepting end's answer.
pub(crate) const ANSWER_LEN: usize = 1 + TIME_LEN + MAC_LEN;

const DIALLING_ROLE: &[u8] = b"dial";
const ACCEPTING_ROLE: &[u8] = b"accept";

/// Nonces remembered at most; past it the oldest are forgotten first. Only hellos with a right
/// proof are remembered, so only a cookie holder dialling thousands of times a second fills it.
const MAX_REMEMBERED_NONCES: usize = 65_536;

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

    fn mac(&self, parts: &[&[u8]]) -> hmac::Tag {
        let mut context = hmac::Context::with_key(&self.0);
        context.update(MAGIC);
        for part in parts {
            context.update(part);
        }
        context.sign()
    }

    /// Constant time: a wrong MAC says nothing of how close it was.
    fn verify(&self, parts: &[&[u8]], mac: &[u8]) -> bool {
        let message: Vec<u8> = std::iter::once(MAGIC.as_slice())
            .chain(parts.iter().copied())
            .flatten()
            .copied()
            .collect();
        hmac::verify(&self.0, &message, mac).is_ok()
    }
}

/// Why a link handshake failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum HandshakeError {
    /// The other end sent what this protocol never sends: not a playhouse node, or an attack.
    #[error("not a playhouse cluster link: {0}")]
    NotALink(&'static str),
    /// The other end speaks another version of the link protocol.
    #[error(
        "it speaks another version of the link protocol ({0}; this build speaks {MAGIC_TEXT}): \
         every member must run a build of the same release line"
    )]
    OtherVersion(String),
    /// Its proof does not check out: it has another cookie.
    #[error(
        "its proof of the cluster cookie is wrong: do both nodes have the same cluster cookie?"
    )]
    WrongCookie,
    /// Both ends hold the cookie, and the accepting end refused the link, saying why.
    #[error("{0}")]
    Refused(String),
    /// It closed the connection, or the connection failed, before the handshake ended.
    #[error("{0}")]
    Closed(String),
}

const MAGIC_TEXT: &str = match std::str::from_utf8(MAGIC) {
    Ok(text) => text,
    Err(_) => panic!("the magic is ASCII"),
};

/// `bytes` as text for a log line, without what a terminal would act on.
fn printable(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&byte| {
            if byte.is_ascii_graphic() {
                byte as char
            } else {
                '?'
            }
        })
        .collect()
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

/// This machine's clock, in Unix milliseconds.
pub(crate) fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// A dialler's hello, read in full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hello {
    sent_at: u64,
    nonce: [u8; NONCE_LEN],
    mac: [u8; MAC_LEN],
}

impl Hello {
    fn new(key: &LinkKey, sent_at: u64, nonce: [u8; NONCE_LEN]) -> Self {
        let mut mac = [0; MAC_LEN];
        mac.copy_from_slice(
            key.mac(&[DIALLING_ROLE, &sent_at.to_be_bytes(), &nonce])
                .as_ref(),
        );
        Self {
            sent_at,
            nonce,
            mac,
        }
    }

    fn to_bytes(&self) -> [u8; HELLO_LEN] {
        let mut bytes = [0; HELLO_LEN];
        let (magic, rest) = bytes.split_at_mut(MAGIC.len());
        let (time, rest) = rest.split_at_mut(TIME_LEN);
        let (nonce, mac) = rest.split_at_mut(NONCE_LEN);
        magic.copy_from_slice(MAGIC);
        time.copy_from_slice(&self.sent_at.to_be_bytes());
        nonce.copy_from_slice(&self.nonce);
        mac.copy_from_slice(&self.mac);
        bytes
    }

    fn from_bytes(bytes: &[u8; HELLO_LEN]) -> Self {
        let rest = &bytes[MAGIC.len()..];
        let (time, rest) = rest.split_at(TIME_LEN);
        let (nonce, mac) = rest.split_at(NONCE_LEN);
        Self {
            sent_at: u64::from_be_bytes(time.try_into().expect("8 bytes")),
            nonce: nonce.try_into().expect("32 bytes"),
            mac: mac.try_into().expect("32 bytes"),
        }
    }
}

/// A hello as it arrives, judged byte by byte: a stranger is closed on its first wrong byte
/// rather than at the deadline. The cluster port feeds it what a new connection has already
/// sent, and the connection's task the rest.
pub(crate) struct HelloReader {
    bytes: [u8; HELLO_LEN],
    received: usize,
}

impl HelloReader {
    pub(crate) fn new() -> Self {
        Self {
            bytes: [0; HELLO_LEN],
            received: 0,
        }
    }

    /// Where the next bytes go.
    /// How many bytes of the hello have come.
    pub(crate) fn received(&self) -> usize {
        self.received
    }

    pub(crate) fn unfilled(&mut self) -> &mut [u8] {
        &mut self.bytes[self.received..]
    }

    /// Takes the `read` bytes just written into [`Self::unfilled`]: the hello once complete.
    pub(crate) fn advance(&mut self, read: usize) -> Result<Option<Hello>, HandshakeError> {
        if read == 0 {
            return Err(HandshakeError::Closed(
                "closed during the link handshake".into(),
            ));
        }
        let (from, to) = (self.received, self.received + read);
        self.received = to;
        let magic_received = to.min(MAGIC.len());
        if let Some(wrong) = (from..magic_received).find(|&at| self.bytes[at] != MAGIC[at]) {
            return Err(if wrong < FAMILY.len() {
                HandshakeError::NotALink("its first bytes are not a link hello")
            } else {
                HandshakeError::OtherVersion(printable(&self.bytes[..magic_received]))
            });
        }
        Ok((to == HELLO_LEN).then(|| Hello::from_bytes(&self.bytes)))
    }

    /// Reads from `stream` until the hello is complete.
    pub(crate) async fn finish<S: AsyncRead + Unpin>(
        mut self,
        stream: &mut S,
    ) -> Result<Hello, HandshakeError> {
        loop {
            let read = stream
                .read(self.unfilled())
                .await
                .map_err(|e| HandshakeError::closed("the link handshake", &e))?;
            if let Some(hello) = self.advance(read)? {
                return Ok(hello);
            }
        }
    }
}

/// What the accepting end says to a hello with a right proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Verdict {
    Linked = 0,
    /// Its timestamp is further from the acceptor's clock than the skew allowed.
    ClocksApart = 1,
    /// Its nonce was seen before: a recorded hello sent again.
    Replayed = 2,
}

impl Verdict {
    fn from_byte(byte: u8) -> Option<Self> {
        [Self::Linked, Self::ClocksApart, Self::Replayed]
            .into_iter()
            .find(|verdict| *verdict as u8 == byte)
    }
}

/// The accepting end's answer to a hello with a right proof, ready to send.
#[derive(Debug)]
pub(crate) struct Answer {
    bytes: [u8; ANSWER_LEN],
    /// Why the link was refused, for the acceptor's log; `None` when it was accepted.
    refusal: Option<String>,
}

impl Answer {
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Why the link was refused, or `None` when the dialler is linked.
    pub(crate) fn refusal(&self) -> Option<&str> {
        self.refusal.as_deref()
    }
}

/// The accepting end: the key, the clock skew it tolerates, and the nonces it has seen.
pub(crate) struct Acceptor {
    key: LinkKey,
    max_skew: Duration,
    replays: std::sync::Mutex<Replays>,
}

impl Acceptor {
    pub(crate) fn new(key: LinkKey, max_skew: Duration) -> Self {
        Self {
            key,
            max_skew,
            // A nonce must be remembered while its timestamp is acceptable: up to twice the
            // skew after it was first seen.
            replays: std::sync::Mutex::new(Replays::new(max_skew * 2)),
        }
    }

    /// Judges a complete hello at acceptor time `now` (Unix ms): a wrong proof is an error (the
    /// stranger gets no answer at all); a right one gets an answer, linking or saying why not.
    pub(crate) fn judge(&self, hello: &Hello, now: u64) -> Result<Answer, HandshakeError> {
        let sent_at = hello.sent_at.to_be_bytes();
        if !self
            .key
            .verify(&[DIALLING_ROLE, &sent_at, &hello.nonce], &hello.mac)
        {
            return Err(HandshakeError::WrongCookie);
        }
        let apart = now.abs_diff(hello.sent_at);
        let (verdict, refusal) = if apart > self.max_skew.as_millis() as u64 {
            (
                Verdict::ClocksApart,
                Some(format!(
                    "its clock is {apart} ms from ours, more than cluster.max_clock_skew_ms \
                     ({} ms): synchronise the members' clocks (NTP)",
                    self.max_skew.as_millis()
                )),
            )
        } else if !self
            .replays
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .first_use(hello.nonce, Instant::now())
        {
            (
                Verdict::Replayed,
                Some("it sent a hello seen before: a recorded connection played back".into()),
            )
        } else {
            (Verdict::Linked, None)
        };
        let clock = now.to_be_bytes();
        let mac = self.key.mac(&[
            ACCEPTING_ROLE,
            &[verdict as u8],
            &clock,
            &sent_at,
            &hello.nonce,
        ]);
        let mut bytes = [0; ANSWER_LEN];
        bytes[0] = verdict as u8;
        bytes[1..1 + TIME_LEN].copy_from_slice(&clock);
        bytes[1 + TIME_LEN..].copy_from_slice(mac.as_ref());
        Ok(Answer { bytes, refusal })
    }

    /// Reads the rest of the hello from `stream`, judges it and sends the answer: `Ok` once the
    /// dialler is linked.
    pub(crate) async fn accept<S>(
        &self,
        stream: &mut S,
        reader: HelloReader,
    ) -> Result<(), HandshakeError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let hello = reader.finish(stream).await?;
        let answer = self.judge(&hello, unix_millis())?;
        send(stream, &answer).await
    }
}

/// Sends `answer`: `Ok` when it links the dialler, the refusal otherwise.
pub(crate) async fn send<S: AsyncWrite + Unpin>(
    stream: &mut S,
    answer: &Answer,
) -> Result<(), HandshakeError> {
    write(stream, answer.bytes(), "the link handshake").await?;
    match answer.refusal() {
        None => Ok(()),
        Some(reason) => Err(HandshakeError::Refused(reason.to_owned())),
    }
}

/// Nonces of accepted hellos, each remembered for `keep` after it was first seen.
struct Replays {
    keep: Duration,
    seen: HashSet<[u8; NONCE_LEN]>,
    /// The same nonces in the order they were seen, for forgetting them.
    order: VecDeque<(Instant, [u8; NONCE_LEN])>,
}

impl Replays {
    fn new(keep: Duration) -> Self {
        Self {
            keep,
            seen: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// Whether `nonce` is new (it is remembered from now on).
    fn first_use(&mut self, nonce: [u8; NONCE_LEN], now: Instant) -> bool {
        while let Some((seen_at, old)) = self.order.front() {
            if now.duration_since(*seen_at) < self.keep && self.order.len() < MAX_REMEMBERED_NONCES
            {
                break;
            }
            self.seen.remove(old);
            self.order.pop_front();
        }
        if !self.seen.insert(nonce) {
            return false;
        }
        self.order.push_back((now, nonce));
        true
    }
}

/// Runs the dialling end of the handshake on `stream`: the hello at once, then the answer.
pub(crate) async fn dial<S>(stream: &mut S, key: &LinkKey) -> Result<(), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let hello = Hello::new(key, unix_millis(), nonce());
    write(stream, &hello.to_bytes(), "the link handshake").await?;
    let mut answer = [0; ANSWER_LEN];
    stream.read_exact(&mut answer).await.map_err(|_| {
        HandshakeError::Closed(
            "it closed the connection without proving the cluster cookie: do both nodes have \
             the same cluster cookie? (or that is not a playhouse cluster port, or the port is \
             saturated; its log says which)"
                .into(),
        )
    })?;
    if answer.starts_with(FAMILY) {
        return Err(HandshakeError::OtherVersion(printable(
            &answer[..MAGIC.len()],
        )));
    }
    let (verdict, rest) = answer.split_at(1);
    let (clock, mac) = rest.split_at(TIME_LEN);
    let sent_at = hello.sent_at.to_be_bytes();
    if !key.verify(
        &[ACCEPTING_ROLE, verdict, clock, &sent_at, &hello.nonce],
        mac,
    ) {
        // An acceptor with another cookie would have closed without a word.
        return Err(HandshakeError::NotALink(
            "its answer does not prove our cluster cookie: another program is on that port, \
             or the connection was tampered with",
        ));
    }
    let their_clock = u64::from_be_bytes(clock.try_into().expect("8 bytes"));
    match Verdict::from_byte(verdict[0]) {
        Some(Verdict::Linked) => Ok(()),
        Some(Verdict::ClocksApart) => Err(HandshakeError::Refused(format!(
            "its clock is {} ms from ours, more than its cluster.max_clock_skew_ms allows: \
             synchronise the members' clocks (NTP)",
            their_clock.abs_diff(hello.sent_at)
        ))),
        Some(Verdict::Replayed) => Err(HandshakeError::Refused(
            "it took our fresh hello for one played back: is another node dialling with our \
             nonces?"
                .into(),
        )),
        None => Err(HandshakeError::NotALink(
            "its answer carries a verdict this build does not know",
        )),
    }
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
mod tests;
