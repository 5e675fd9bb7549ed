//! Money in requests: integer minor units (cents), parsed and range-checked the same way by
//! every service.

use playhouse_runtime::prelude::Problem;
use serde::Deserialize;
use serde_json::value::RawValue;

/// Largest amount one command may carry: 10^15 minor units (ten trillion in a two-decimal
/// currency). Keeps every sum far from `i64` overflow.
pub const MAX_AMOUNT: i64 = 1_000_000_000_000_000;

/// An amount in minor units: a JSON number whose exact value is a whole number, whatever its
/// spelling (`2500`, `2500.0`, `2.5e3`: JSON Schema counts all three as integers). The text is
/// read exactly, not through a float, so `0.99999999999999999999` (which a float rounds to 1)
/// is refused as the fraction it is.
pub fn minor_units<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    use serde::de::Error;
    let raw = <&RawValue>::deserialize(deserializer)?;
    exact_integer(raw.get()).ok_or_else(|| {
        D::Error::custom(format!(
            "expected a whole number of minor units (cents) up to {MAX_AMOUNT}, got {}",
            playhouse_runtime::edge::problem::shorten(raw.get(), 40)
        ))
    })
}

/// The value of a JSON number's text when it is a whole number that fits an `i64`.
fn exact_integer(text: &str) -> Option<i64> {
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => (&text[..at], text[at + 1..].parse::<i32>().ok()?),
        None => (text, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.is_empty()
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    // All the digits, and where the decimal point falls among them once the exponent moves it.
    let digits = format!("{whole}{fraction}");
    let point = i64::try_from(whole.len()).ok()? + i64::from(exponent);
    let point = usize::try_from(point.clamp(0, i64::try_from(digits.len()).ok()? + 20)).ok()?;
    let (integral, fractional) = if point <= digits.len() {
        (digits[..point].to_owned(), &digits[point..])
    } else {
        (format!("{digits}{}", "0".repeat(point - digits.len())), "")
    };
    if fractional.bytes().any(|b| b != b'0') {
        return None;
    }
    let magnitude: i64 = if integral.is_empty() {
        0
    } else {
        integral.parse().ok()?
    };
    Some(if negative { -magnitude } else { magnitude })
}

/// A count in a request (a quantity): a JSON number whose exact value is a whole number that
/// fits `T`, however spelt, as for [`minor_units`].
pub fn whole<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i64>,
{
    use serde::de::Error;
    let raw = <&RawValue>::deserialize(deserializer)?;
    exact_integer(raw.get())
        .and_then(|value| T::try_from(value).ok())
        .ok_or_else(|| {
            D::Error::custom(format!(
                "expected a whole number in range, got {}",
                playhouse_runtime::edge::problem::shorten(raw.get(), 40)
            ))
        })
}

/// Checks a request value against the schema's range `min..=max`, naming the field.
pub fn in_range(field: &str, value: i64, min: i64, max: i64) -> Result<(), Problem> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(Problem::invalid_field(
            field,
            format!("{field} must be from {min} to {max}, got {value}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::exact_integer;

    #[test]
    fn only_whole_numbers_are_amounts_however_spelt() {
        for (text, value) in [
            ("2500", 2500),
            ("-5", -5),
            ("2500.0", 2500),
            ("2.5e3", 2500),
            ("2.5E+1", 25),
            ("1e2", 100),
            ("100e-2", 1),
            ("0.0", 0),
            ("1000000000000000", 1_000_000_000_000_000),
        ] {
            assert_eq!(exact_integer(text), Some(value), "{text}");
        }
        for text in [
            "0.99999999999999999999",
            "999999999999999.99999",
            "1.5",
            "1e-1",
            "99999999999999999999",
            "1e400",
            "",
            "x",
        ] {
            assert_eq!(exact_integer(text), None, "{text}");
        }
    }
}
