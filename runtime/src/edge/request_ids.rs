//! Request and trace ids: taken from the client only when safe, made here otherwise.
//!
//! A request id is echoed, logged and stored with events as their correlation id, so a client's
//! `x-request-id` is kept only when it is short and of a safe alphabet: anything else (spaces,
//! quotes, `key=value` text a log reader could take for fields) is replaced by a fresh id. A
//! trace id comes only from a valid W3C `traceparent`.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderName};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Longest client request id kept; longer ones are replaced by a fresh id.
const MAX_REQUEST_ID_LEN: usize = 64;

/// The ids of the request being handled, for handlers to pass on (as correlation ids). Cheap
/// to clone.
#[derive(Debug, Clone)]
pub struct RequestIds {
    pub request_id: Arc<str>,
    pub trace_id: Arc<str>,
}

impl RequestIds {
    /// The request's ids: the client's request id when safe, else a fresh UUID (v7,
    /// time-ordered); the trace id of a valid `traceparent`, else a fresh one (the fresh request
    /// id's 32 hex digits, which a trace id also has).
    pub fn of(headers: &HeaderMap) -> Self {
        let from_client = client_request_id(headers);
        let traced = headers
            .get(TRACEPARENT)
            .and_then(|value| value.to_str().ok())
            .and_then(traceparent_trace_id);
        // One fresh UUID serves as the request id, the trace id, or both.
        let fresh = (from_client.is_none() || traced.is_none()).then(uuid::Uuid::now_v7);
        let mut hyphenated = uuid::Uuid::encode_buffer();
        let request_id: Arc<str> = match (from_client, &fresh) {
            (Some(id), _) => id.into(),
            (None, Some(uuid)) => (&*uuid.hyphenated().encode_lower(&mut hyphenated)).into(),
            (None, None) => unreachable!("a fresh id is made when the client sent none"),
        };
        let mut simple = uuid::Uuid::encode_buffer();
        let trace_id: Arc<str> = match (traced, fresh) {
            (Some(trace_id), _) => trace_id.into(),
            (None, Some(uuid)) => (&*uuid.simple().encode_lower(&mut simple)).into(),
            (None, None) => unreachable!("a fresh id is made when there is no trace id"),
        };
        Self {
            request_id,
            trace_id,
        }
    }
}

/// The client's `x-request-id` when it is 1 to 64 characters of `[A-Za-z0-9._:-]`.
fn client_request_id(headers: &HeaderMap) -> Option<&str> {
    let id = headers.get(REQUEST_ID)?.to_str().ok()?;
    let safe = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':');
    (!id.is_empty() && id.len() <= MAX_REQUEST_ID_LEN && id.bytes().all(safe)).then_some(id)
}

/// The trace id of a valid W3C `traceparent` header (`00-<32 hex>-<16 hex>-<2 hex>`, lowercase,
/// ids not all zeros, version not `ff`); later versions may append fields after the flags.
fn traceparent_trace_id(value: &str) -> Option<&str> {
    let lower_hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let mut parts = value.split('-');
    let (version, trace_id, parent_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let valid = lower_hex(version, 2)
        && version != "ff"
        && (version != "00" || parts.next().is_none())
        && lower_hex(trace_id, 32)
        && trace_id.bytes().any(|b| b != b'0')
        && lower_hex(parent_id, 16)
        && parent_id.bytes().any(|b| b != b'0')
        && lower_hex(flags, 2);
    valid.then_some(trace_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_valid_traceparents_give_a_trace_id() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            traceparent_trace_id(valid),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        // A later version may carry more fields.
        assert!(
            traceparent_trace_id(&format!("01-{}-00f067aa0ba902b7-01-extra", "a".repeat(32)))
                .is_some()
        );
        for invalid in [
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "junk",
        ] {
            assert_eq!(traceparent_trace_id(invalid), None, "{invalid}");
        }
    }

    #[test]
    fn only_short_safe_request_ids_are_kept() {
        let with_id = |id: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(REQUEST_ID, id.parse().unwrap());
            RequestIds::of(&headers).request_id.to_string()
        };
        assert_eq!(with_id("req-42_a.b:c"), "req-42_a.b:c");
        for hostile in [
            r#"abc status=200 msg="request ok""#,
            "a\tb",
            &"x".repeat(65),
            "",
        ] {
            let id = with_id(hostile);
            assert_ne!(id, hostile);
            assert_eq!(id.len(), 36, "a fresh UUID: {id}");
        }
    }

    #[test]
    fn a_fresh_request_id_names_the_trace_too() {
        let ids = RequestIds::of(&HeaderMap::new());
        assert_eq!(ids.request_id.len(), 36);
        assert_eq!(&*ids.trace_id, ids.request_id.replace('-', ""));
        // A client's request id is no trace id: the trace gets a fresh one of 32 hex digits.
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID, "valid-ID_1.2:3".parse().unwrap());
        let ids = RequestIds::of(&headers);
        assert_eq!(&*ids.request_id, "valid-ID_1.2:3");
        assert!(ids.trace_id.len() == 32 && ids.trace_id.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
