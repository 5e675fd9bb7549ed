//! JWT bearer authentication (HS256): verifying tokens into a [`Principal`], issuing tokens for
//! the CLI, and role checks.
//!
//! A token must carry `sub`, `exp`, `iss` and `aud`; the issuer and audience must be the
//! configured ones; `exp` and `nbf` get a small leeway for clock skew. Only HS256 is accepted,
//! so `alg: none` and algorithm-confusion tokens are refused.

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

/// The claims playhouse issues and checks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub iss: String,
    pub aud: String,
    pub exp: u64,
    pub iat: u64,
    /// Role names; unknown names are ignored.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    /// The highest role the token grants, if any.
    pub role: Option<Role>,
}

impl Principal {
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

/// Tokens verified before, so that a client sending the same token on every request pays for
/// the signature check once. Bounded: emptied when full.
const VERIFIED_CACHE_ENTRIES: usize = 10_000;

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

role_extractor!(Reader, Role::Reader);
role_extractor!(Writer, Role::Writer);

/// Verifies and issues tokens with the configured key.
#[derive(Clone)]
pub struct JwtAuth {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    /// Token -> (who, `exp`). Only successful verifications are kept; `exp` is checked on use.
    verified: std::sync::Arc<dashmap::DashMap<String, (Principal, u64)>>,
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
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <token>`"))?;
        let now = unix_now();
        if let Some(entry) = self.verified.get(token) {
            let (principal, exp) = entry.value();
            if now <= exp.saturating_add(self.validation.leeway) {
                return Ok(principal.clone());
            }
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
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
        let role = data
            .claims
            .roles
            .iter()
            .filter_map(|name| Role::parse(name))
            .max();
        let principal = Principal {
            subject: data.claims.sub,
            role,
        };
        if self.verified.len() >= VERIFIED_CACHE_ENTRIES {
            self.verified.clear();
        }
        self.verified
            .insert(token.to_owned(), (principal.clone(), data.claims.exp));
        Ok(principal)
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
            assert_eq!(principal.subject, "alice");
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
            "stale.token.value".into(),
            (principal.clone(), unix_now() - 3600),
        );
        let refused = auth
            .verify_header(Some("Bearer stale.token.value"))
            .unwrap_err();
        assert_eq!(refused.status, 401);
        // While still within its exp, the same entry is trusted: that is what the cache is for.
        auth.verified.insert(
            "fresh.token.value".into(),
            (principal.clone(), unix_now() + 3600),
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
}
