//! JWT bearer authentication (HS256): verifying tokens into a [`Principal`], issuing tokens for
//! the CLI, and role checks.
//!
//! A token must carry `sub`, `exp`, `iss` and `aud` (`iat` is optional, RFC 7519 4.1.6); the
//! issuer must be the configured one and `aud` must be or contain the configured audience
//! (4.1.3); `exp` and `nbf` get a small leeway for clock skew. Only HS256 is accepted, so
//! `alg: none` and algorithm-confusion tokens are refused, and so is a token that marks any
//! header extension critical (`crit`, RFC 7515 4.1.11): this server understands none. The
//! `Bearer` scheme is matched without regard to case (RFC 7235 2.1). Tokens longer than
//! [`MAX_TOKEN_BYTES`] are refused before anything is decoded.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::problem::{Problem, ProblemCode};
use crate::config::AuthConfig;

/// What a token may do. Each role includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Read resources.
    Reader,
    /// Read resources and send commands.
    Writer,
    /// Everything, including `/admin`.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Reader, Role::Writer, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
        }
    }

    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == name)
    }
}

/// The claims playhouse issues.
#[derive(Debug, Clone, Serialize)]
pub struct Claims {
    pub sub: String,
    pub iss: String,
    pub aud: String,
    pub exp: u64,
    pub iat: u64,
    /// Role names; unknown names are ignored.
    pub roles: Vec<String>,
}

/// The claims read from a verified token. `iss`, `aud` and `nbf` are checked by the validation
/// itself (which takes `aud` as a string or an array); other claims are ignored.
#[derive(Debug, Deserialize)]
struct VerifiedClaims {
    sub: String,
    exp: u64,
    /// The validation takes an array holding our issuer too; RFC 7519 makes `iss` one string
    /// (only `aud` may be an array), so its shape is checked here.
    iss: serde_json::Value,
    #[serde(default)]
    roles: Vec<String>,
}

/// Longest token subject accepted, in bytes.
pub const MAX_SUBJECT_BYTES: usize = 256;

/// Checks a token subject: 1 to 256 bytes, not blank, no control characters. A subject is
/// recorded as the owner of what its token creates, and shown back: it must be plain text.
pub fn check_subject(subject: &str) -> Result<(), String> {
    if subject.trim().is_empty()
        || subject.len() > MAX_SUBJECT_BYTES
        || !crate::text::is_plain(subject)
    {
        Err(format!(
            "the subject (sub) must be 1 to {MAX_SUBJECT_BYTES} bytes of plain text, not blank, without control or direction characters"
        ))
    } else {
        Ok(())
    }
}

/// Longest token accepted, in bytes. Ours are about 250; the cap bounds what a request can
/// make the server hash, decode and remember.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`. Shared: a principal is cloned into every request it makes.
    pub subject: std::sync::Arc<str>,
    /// The highest role the token grants, if any.
    pub role: Option<Role>,
}

impl Principal {
    /// Whether this caller may read and act on a resource that belongs to `owner` (the subject
    /// that created it): its own resources, or any for an admin.
    pub fn may_access(&self, owner: &str) -> bool {
        self.role == Some(Role::Admin) || &*self.subject == owner
    }

    /// `Ok` when the caller's role includes `needed`, a 403 problem otherwise.
    pub fn require(&self, needed: Role) -> Result<(), Problem> {
        match self.role {
            Some(role) if role >= needed => Ok(()),
            _ => Err(Problem::new(
                ProblemCode::Forbidden,
                format!(
                    "this operation needs the role `{}` (or higher); the token of `{}` has {}",
                    needed.as_str(),
                    self.subject,
                    self.role
                        .map_or("no known role".to_owned(), |r| format!("`{}`", r.as_str()))
                ),
            )),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Principal>().cloned().ok_or_else(|| {
            Problem::new(ProblemCode::Unauthorized, "this route needs a bearer token")
        })
    }
}

/// The caller, checked to have at least the reader role before the body is read.
#[derive(Debug, Clone)]
pub struct Reader(pub Principal);

/// The caller, checked to have at least the writer role before the body is read, so that a
/// caller without the role gets 403 whatever the body.
#[derive(Debug, Clone)]
pub struct Writer(pub Principal);

macro_rules! role_extractor {
    ($name:ident, $role:expr) => {
        impl<S: Send + Sync> FromRequestParts<S> for $name {
            type Rejection = Problem;

            async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
                let principal = Principal::from_request_parts(parts, state).await?;
                principal.require($role)?;
                Ok(Self(principal))
            }
        }
    };
}

/// The caller, checked to be an admin.
#[derive(Debug, Clone)]
pub struct Admin(pub Principal);

role_extractor!(Reader, Role::Reader);
role_extractor!(Writer, Role::Writer);
role_extractor!(Admin, Role::Admin);

/// Verifies and issues tokens with the configured key.
#[derive(Clone)]
pub struct JwtAuth {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    verified: std::sync::Arc<VerifiedCache>,
}

impl std::fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuth")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl JwtAuth {
    pub fn new(config: &AuthConfig) -> Self {
        let key = config.key.expose().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = config.leeway.as_secs();
        validation.validate_nbf = true;
        Self {
            decoding: DecodingKey::from_secret(key),
            encoding: EncodingKey::from_secret(key),
            validation,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            verified: Default::default(),
        }
    }

    /// Checks an `Authorization` header value; the error says what is wrong with it.
    pub fn verify_header(&self, header: Option<&str>) -> Result<Principal, Problem> {
        let unauthorized = |detail: &str| Problem::new(ProblemCode::Unauthorized, detail);
        let header = header.ok_or_else(|| {
            unauthorized(
                "send the header `Authorization: Bearer <token>`; `playhouse token` makes one",
            )
        })?;
        let token = header
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|token| !token.is_empty())
            .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <token>`"))?;
        if token.len() > MAX_TOKEN_BYTES {
            return Err(unauthorized(&format!(
                "the token is too long: {} bytes, at most {MAX_TOKEN_BYTES} are accepted",
                token.len()
            )));
        }
        let now = unix_now();
        let digest = VerifiedCache::digest(token);
        if let Some(principal) = self.verified.get(&digest, now, self.validation.leeway) {
            return Ok(principal);
        }
        let data = jsonwebtoken::decode::<VerifiedClaims>(token, &self.decoding, &self.validation)
            .map_err(|error| {
                unauthorized(match error.kind() {
                    ErrorKind::ExpiredSignature => "the token has expired",
                    ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)",
                    ErrorKind::InvalidAudience => "the token is for another audience",
                    ErrorKind::InvalidIssuer => "the token is from another issuer",
                    ErrorKind::InvalidSignature => "the token's signature does not match",
                    ErrorKind::InvalidAlgorithm => "the token must be signed with HS256",
                    ErrorKind::MissingRequiredClaim(_) => {
                        "the token lacks a required claim (sub, exp, iss, aud)"
                    }
                    _ => "the token is malformed",
                })
            })?;
        if !data.claims.iss.is_string() {
            return Err(unauthorized(
                "the token's `iss` claim must be one string (RFC 7519, 4.1.1); only `aud` may be an array",
            ));
        }
        check_subject(&data.claims.sub).map_err(|detail| unauthorized(&detail))?;
        if data.header.crit.is_some() {
            return Err(unauthorized(
                "the token marks header extensions critical (crit); this server supports none",
            ));
        }
        let role = data
            .claims
            .roles
            .iter()
            .filter_map(|name| Role::parse(name))
            .max();
        let principal = Principal {
            subject: data.claims.sub.into(),
            role,
        };
        self.verified.insert(digest, &principal, data.claims.exp);
        Ok(principal)
    }

    /// Issues a token from words a person typed (`playhouse token`): the subject, role names
    /// and a duration like `30m`, `1h` or `7d`. The error names the argument at fault.
    pub fn issue_typed(
        &self,
        subject: &str,
        roles: &[String],
        ttl: &str,
    ) -> Result<String, String> {
        let roles = roles
            .iter()
            .map(|name| {
                Role::parse(name)
                    .ok_or_else(|| format!("--role `{name}`: expected reader, writer or admin"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let ttl = humantime::parse_duration(ttl)
            .map_err(|_| format!("--ttl `{ttl}`: expected a duration like 30m, 1h or 7d"))?;
        check_subject(subject).map_err(|problem| format!("--sub `{subject}`: {problem}"))?;
        Ok(self.issue(subject, &roles, ttl))
    }

    /// Issues a token for `subject` with `roles`, valid for `ttl`.
    pub fn issue(&self, subject: &str, roles: &[Role], ttl: Duration) -> String {
        let now = unix_now();
        let claims = Claims {
            sub: subject.to_owned(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            exp: now + ttl.as_secs(),
            iat: now,
            roles: roles.iter().map(|r| r.as_str().to_owned()).collect(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing of serializable claims cannot fail")
    }
}

/// Tokens verified before, so that a client sending the same token on every request pays for
/// the signature check and claims parsing once.
///
/// Keyed by the token's SHA-256, not the token: a key costs 32 bytes whatever the token's
/// length, and finding another token with the same key is as hard as breaking SHA-256, so a
/// forged token cannot hit a good one's entry. Bounded by entries and by bytes (subjects vary
/// in length); emptied when either bound is reached. `exp` is checked on every hit.
#[derive(Debug, Default)]
struct VerifiedCache {
    entries: dashmap::DashMap<[u8; 32], (Principal, u64)>,
    /// Approximate bytes held (key, value and subject); reset when the map is emptied.
    bytes: std::sync::atomic::AtomicUsize,
}

impl VerifiedCache {
    const MAX_ENTRIES: usize = 10_000;
    const MAX_BYTES: usize = 2 * 1024 * 1024;
    /// What an entry costs besides its subject: key, value and the map's own overhead.
    const ENTRY_OVERHEAD: usize = 128;

    fn digest(token: &str) -> [u8; 32] {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
        digest
            .as_ref()
            .try_into()
            .expect("a SHA-256 digest is 32 bytes")
    }

    fn get(&self, digest: &[u8; 32], now: u64, leeway: u64) -> Option<Principal> {
        let entry = self.entries.get(digest)?;
        let (principal, exp) = entry.value();
        (now <= exp.saturating_add(leeway)).then(|| principal.clone())
    }

    fn insert(&self, digest: [u8; 32], principal: &Principal, exp: u64) {
        use std::sync::atomic::Ordering;
        let cost = Self::ENTRY_OVERHEAD + principal.subject.len();
        let held = self.bytes.fetch_add(cost, Ordering::AcqRel) + cost;
        if self.entries.len() >= Self::MAX_ENTRIES || held > Self::MAX_BYTES {
            self.entries.clear();
            self.bytes.store(cost, Ordering::Release);
        }
        self.entries.insert(digest, (principal.clone(), exp));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn auth(leeway: u64) -> JwtAuth {
        JwtAuth::new(&AuthConfig {
            issuer: "playhouse".into(),
            audience: "playhouse-api".into(),
            key: Secret::new("unit-test-key-0123456789abcdef"),
            key_source: "test".into(),
            leeway: Duration::from_secs(leeway),
        })
    }

    #[test]
    fn an_issued_token_verifies_with_its_role() {
        let auth = auth(0);
        let token = auth.issue(
            "alice",
            &[Role::Reader, Role::Writer],
            Duration::from_secs(60),
        );
        let header = format!("Bearer {token}");
        for _ in 0..2 {
            // The second time comes from the cache and must say the same.
            let principal = auth.verify_header(Some(&header)).unwrap();
            assert_eq!(&*principal.subject, "alice");
            assert_eq!(principal.role, Some(Role::Writer));
        }
        assert!(
            auth.verify_header(Some(&header))
                .unwrap()
                .require(Role::Admin)
                .is_err()
        );
    }

    #[test]
    fn a_cache_hit_past_its_exp_is_not_trusted() {
        let auth = auth(0);
        let principal = Principal {
            subject: "ghost".into(),
            role: Some(Role::Admin),
        };
        // As if this token had verified an hour ago and expired since.
        auth.verified.insert(
            VerifiedCache::digest("stale.token.value"),
            &principal,
            unix_now() - 3600,
        );
        let refused = auth
            .verify_header(Some("Bearer stale.token.value"))
            .unwrap_err();
        assert_eq!(refused.status, 401);
        // While still within its exp, the same entry is trusted: that is what the cache is for.
        auth.verified.insert(
            VerifiedCache::digest("fresh.token.value"),
            &principal,
            unix_now() + 3600,
        );
        assert_eq!(
            auth.verify_header(Some("Bearer fresh.token.value"))
                .unwrap(),
            principal
        );
    }

    #[test]
    fn a_token_signed_with_another_key_is_refused_even_after_a_good_one() {
        let good = auth(0);
        let other = JwtAuth::new(&AuthConfig {
            issuer: "playhouse".into(),
            audience: "playhouse-api".into(),
            key: Secret::new("another-key-0123456789abcdefgh"),
            key_source: "test".into(),
            leeway: Duration::ZERO,
        });
        let forged = other.issue("mallory", &[Role::Admin], Duration::from_secs(60));
        good.verify_header(Some(&format!(
            "Bearer {}",
            good.issue("alice", &[Role::Reader], Duration::from_secs(60))
        )))
        .unwrap();
        let refused = good
            .verify_header(Some(&format!("Bearer {forged}")))
            .unwrap_err();
        assert_eq!(refused.status, 401);
    }

    #[test]
    fn the_verified_cache_is_bounded_by_bytes_and_entries() {
        let cache = VerifiedCache::default();
        // Subjects as long as a token allows: the byte bound empties the cache long before
        // the entry bound would.
        for i in 0..5_000u32 {
            let principal = Principal {
                subject: format!("{i:0>4000}").into(),
                role: Some(Role::Reader),
            };
            cache.insert(VerifiedCache::digest(&i.to_string()), &principal, u64::MAX);
            let held = cache.bytes.load(std::sync::atomic::Ordering::Acquire);
            assert!(held <= VerifiedCache::MAX_BYTES + 4_128, "{held} bytes");
        }
        assert!(cache.len() * 4_000 <= VerifiedCache::MAX_BYTES);
        for i in 0..(VerifiedCache::MAX_ENTRIES as u32 + 10) {
            let principal = Principal {
                subject: "s".into(),
                role: None,
            };
            cache.insert(
                VerifiedCache::digest(&format!("t{i}")),
                &principal,
                u64::MAX,
            );
            assert!(cache.len() <= VerifiedCache::MAX_ENTRIES);
        }
    }

    #[test]
    fn tokens_are_checked_as_the_rfcs_say() {
        use jsonwebtoken::{EncodingKey, encode};
        let auth = auth(0);
        let key = EncodingKey::from_secret(b"unit-test-key-0123456789abcdef");
        let exp = unix_now() + 60;
        // `aud` may be an array holding our audience; `iat` is optional.
        let claims = serde_json::json!({"sub": "a", "iss": "playhouse",
            "aud": ["x", "playhouse-api"], "exp": exp, "roles": ["writer"]});
        let token = encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap();
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            let principal = auth
                .verify_header(Some(&format!("{scheme} {token}")))
                .unwrap();
            assert_eq!(principal.role, Some(Role::Writer));
        }
        let elsewhere = serde_json::json!({"sub": "a", "iss": "playhouse",
            "aud": ["x", "y"], "exp": exp});
        let token = encode(&Header::new(Algorithm::HS256), &elsewhere, &key).unwrap();
        assert!(
            auth.verify_header(Some(&format!("Bearer {token}")))
                .is_err()
        );
        // `iss` as an array, even one holding our issuer.
        let listed = serde_json::json!({"sub": "a", "iss": ["playhouse"],
            "aud": "playhouse-api", "exp": exp});
        let token = encode(&Header::new(Algorithm::HS256), &listed, &key).unwrap();
        let refused = auth
            .verify_header(Some(&format!("Bearer {token}")))
            .unwrap_err();
        assert!(refused.detail.contains("`iss`"), "{}", refused.detail);
        // A critical extension we do not understand.
        let header = Header {
            crit: Some(vec!["exp".into()]),
            ..Header::new(Algorithm::HS256)
        };
        let token = encode(&header, &claims, &key).unwrap();
        let refused = auth
            .verify_header(Some(&format!("Bearer {token}")))
            .unwrap_err();
        assert!(refused.detail.contains("crit"), "{}", refused.detail);
        // Other schemes, and oversized tokens.
        assert!(
            auth.verify_header(Some("Basic YWxhZGRpbjpvcGVuc2VzYW1l"))
                .is_err()
        );
        let huge = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert!(
            auth.verify_header(Some(&huge))
                .unwrap_err()
                .detail
                .contains("too long")
        );
    }

    #[test]
    fn subjects_must_be_plain_text() {
        for bad in ["", " ", "x\r\ny", "zz\u{1b}[31mred", &"s".repeat(257)] {
            assert!(check_subject(bad).is_err(), "{bad:?}");
        }
        assert!(check_subject("alice@example.com").is_ok());
        let auth = auth(0);
        let token = auth.issue(" ", &[Role::Admin], Duration::from_secs(60));
        assert!(
            auth.verify_header(Some(&format!("Bearer {token}")))
                .is_err()
        );
    }

    #[test]
    fn admins_access_everything_others_their_own() {
        let alice = Principal {
            subject: "alice".into(),
            role: Some(Role::Writer),
        };
        assert!(alice.may_access("alice"));
        assert!(!alice.may_access("bob"));
        let admin = Principal {
            subject: "root".into(),
            role: Some(Role::Admin),
        };
        assert!(admin.may_access("bob"));
    }
}
