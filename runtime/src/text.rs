//! Plain text: what may be shown back to people (in lists, logs, notifications) as it was
//! given, with nothing in it that moves the cursor, ends a line or turns the text around.

/// Whether `text` is free of control characters (newlines, escapes, NUL) and of the bidi
/// overrides and isolates that make text read differently from what it holds.
pub fn is_plain(text: &str) -> bool {
    !text
        .chars()
        .any(|c| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'))
}

#[cfg(test)]
mod tests {
    use super::is_plain;

    #[test]
    fn controls_and_direction_overrides_are_not_plain() {
        assert!(is_plain("Ada Lovelace, café ☕"));
        for bad in [
            "a\nb",
            "a\u{0}",
            "\u{1b}[31m",
            "a\u{202e}b",
            "\u{2067}x",
            "\u{85}",
        ] {
            assert!(!is_plain(bad), "{bad:?}");
        }
    }
}
