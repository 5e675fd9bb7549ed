//! Text in requests: names and the like are shown back to people, in lists, logs and
//! notifications, so they must be plain text.

use serde::{Deserialize, Serialize};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

/// Longest name accepted, in characters.
pub const MAX_NAME_CHARS: usize = 200;

/// The OpenAPI pattern of [`Name`]: no control or direction characters, and not blank.
const PLAIN_TEXT_PATTERN: &str = r"^[^\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]*[^\s\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069][^\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]*$";

pub use playhouse_runtime::text::is_plain;

/// A name in a request: 1 to 200 characters of plain text, not blank. Checked as the body is
/// read, so a bad one is a 422 naming its field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Name(String);

impl Name {
    pub fn into_string(self) -> String {
        self.0
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.trim().is_empty() || text.chars().count() > MAX_NAME_CHARS || !is_plain(&text) {
            return Err(serde::de::Error::custom(format!(
                "must be 1 to {MAX_NAME_CHARS} characters of plain text, not blank"
            )));
        }
        Ok(Self(text))
    }
}

impl utoipa::PartialSchema for Name {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX_NAME_CHARS))
            .pattern(Some(PLAIN_TEXT_PATTERN))
            .into()
    }
}

impl utoipa::ToSchema for Name {
    fn name() -> std::borrow::Cow<'static, str> {
        "Name".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_direction_characters_are_not_plain() {
        assert!(is_plain("Zoë's Teapot #3"));
        for text in ["a\nb", "nul\u{0}", "esc\u{1b}[31m", "rtl\u{202e}txt"] {
            assert!(!is_plain(text), "{text:?}");
        }
    }

    #[test]
    fn names_are_checked_as_they_are_read() {
        let name = |json: &str| serde_json::from_str::<Name>(json);
        assert_eq!(name(r#""Teapot""#).unwrap().into_string(), "Teapot");
        for bad in [
            r#""""#,
            r#""  ""#,
            r#""a\nb""#,
            &format!("{:?}", "n".repeat(201)),
        ] {
            assert!(name(bad).is_err(), "{bad}");
        }
    }
}
