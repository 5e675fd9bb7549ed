//! [`ApiJson`]: a JSON body extractor whose rejections are problem+json naming what was wrong.
//!
//! Bodies must be JSON objects, as the OpenAPI document says: serde's derived `Deserialize`
//! would otherwise also take a struct from an array (`["alice", 777]` as `{owner,
//! initial_balance}`). Text that is not JSON at all is 400 (`malformed-body`); JSON of the wrong
//! shape or with a bad value is 422 (`invalid-field`), naming the field when there is one.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::{DeserializeOwned, IgnoredAny};

use super::problem::{Problem, ProblemCode};

/// A JSON object body, deserialized into `T`; also a JSON response type.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(request.headers()) {
            return Err(Problem::new(
                ProblemCode::UnsupportedMediaType,
                "send the body with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(body_problem)?;
        parse_object(&bytes).map(Self)
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `application/json`, or any `application/*+json`; a `charset` parameter, if any, must say
/// UTF-8 (JSON is UTF-8, RFC 8259 8.1).
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let utf8 = parts.all(|parameter| match parameter.split_once('=') {
        Some((name, charset)) if name.trim().eq_ignore_ascii_case("charset") => {
            let charset = charset.trim().trim_matches('"');
            charset.eq_ignore_ascii_case("utf-8") || charset.eq_ignore_ascii_case("utf8")
        }
        _ => true,
    });
    utf8 && (essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json")))
}

fn body_problem(rejection: BytesRejection) -> Problem {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Problem::new(
            ProblemCode::BodyTooLarge,
            "the request body exceeds the configured limit",
        )
    } else {
        Problem::new(
            ProblemCode::MalformedBody,
            format!(
                "the request body could not be read: {}",
                rejection.body_text()
            ),
        )
    }
}

/// Parses a JSON object into `T`; the problem says what was wrong.
pub fn parse_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        // Not an object: either not JSON at all (400), or JSON of the wrong kind (422).
        return Err(match serde_json::from_slice::<IgnoredAny>(bytes) {
            Err(error) => syntax_problem(&error),
            Ok(_) => Problem::new(
                ProblemCode::InvalidField,
                "the body must be a JSON object, as the API's schema says",
            ),
        });
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if inner.is_data() {
            data_problem(&path, &inner)
        } else {
            syntax_problem(&inner)
        }
    })?;
    deserializer.end().map_err(|error| syntax_problem(&error))?;
    Ok(value)
}

fn syntax_problem(error: &serde_json::Error) -> Problem {
    Problem::new(
        ProblemCode::MalformedBody,
        format!("the body is not valid JSON: {error}"),
    )
}

/// A value of the wrong type or range at `path` (`.` for the object itself, as in a missing
/// or unknown field, which serde names in backquotes).
fn data_problem(path: &str, error: &serde_json::Error) -> Problem {
    let message = error.to_string();
    let field = if path != "." {
        Some(path.to_owned())
    } else {
        ["missing field `", "unknown field `"]
            .iter()
            .find_map(|prefix| message.strip_prefix(prefix))
            .and_then(|rest| rest.split('`').next())
            .map(str::to_owned)
    };
    let detail = match &field {
        Some(field) if path != "." => format!("{field}: {message}"),
        _ => message,
    };
    let problem = Problem::new(ProblemCode::InvalidField, detail);
    match field {
        Some(field) => problem.with_field(field),
        None => problem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "only deserialized")]
    struct Open {
        owner: String,
        amount: i64,
    }

    fn problem(body: &str) -> Problem {
        parse_object::<Open>(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn only_objects_are_accepted() {
        assert!(parse_object::<Open>(br#" {"owner": "a", "amount": 1} "#).is_ok());
        let array = problem(r#"["alice", 777]"#);
        assert_eq!((array.status, array.field), (422, None));
        assert_eq!(problem("5").status, 422);
    }

    #[test]
    fn syntax_errors_are_400_and_data_errors_422_with_the_field() {
        for malformed in [
            "",
            "{",
            "[[[[",
            &"[".repeat(5000),
            r#"{"owner": "a", "amount": 1} trailing"#,
        ] {
            assert_eq!(problem(malformed).status, 400, "{malformed}");
        }
        let wrong_type = problem(r#"{"owner": "a", "amount": "ten"}"#);
        assert_eq!(
            (wrong_type.status, wrong_type.field.as_deref()),
            (422, Some("amount"))
        );
        let missing = problem(r#"{"owner": "a"}"#);
        assert_eq!(missing.field.as_deref(), Some("amount"));
        let unknown = problem(r#"{"owner": "a", "amount": 1, "admin": true}"#);
        assert_eq!(unknown.field.as_deref(), Some("admin"));
    }
}
