//! The `Idempotency-Key` request header: a client-chosen key that makes a POST safe to retry.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::problem::{Problem, ProblemCode};

pub const HEADER: &str = "idempotency-key";
const MAX_LEN: usize = 255;

/// The request's `Idempotency-Key`, if it sent one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(pub Option<String>);

impl IdempotencyKey {
    /// A command id unique to this caller and key: two callers may pick the same key. The
    /// subject's length comes first, so no (subject, key) pair can read as another.
    pub fn command_id(&self, subject: &str) -> Option<String> {
        self.0
            .as_ref()
            .map(|key| format!("idem:{}:{subject}:{key}", subject.len()))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(HEADER) else {
            return Ok(Self(None));
        };
        let key = value
            .to_str()
            .ok()
            .filter(|key| !key.is_empty() && key.len() <= MAX_LEN)
            .filter(|key| key.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| {
                Problem::new(
                    ProblemCode::InvalidHeader,
                    format!("Idempotency-Key must be 1 to {MAX_LEN} visible ASCII characters"),
                )
                .with_field("Idempotency-Key")
            })?;
        Ok(Self(Some(key.to_owned())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_and_keys_with_colons_cannot_collide() {
        let a = IdempotencyKey(Some("c".into())).command_id("a:b");
        let b = IdempotencyKey(Some("b:c".into())).command_id("a");
        assert_ne!(a, b);
        assert_eq!(IdempotencyKey(None).command_id("a"), None);
    }
}
