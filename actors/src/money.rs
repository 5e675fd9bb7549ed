//! Money in requests: integer minor units (cents), parsed and range-checked the same way by
//! every service.

use playhouse_runtime::prelude::Problem;
use serde::Deserialize;

/// Largest amount one command may carry: 10^15 minor units (ten trillion in a two-decimal
/// currency). Keeps every sum far from `i64` overflow.
pub const MAX_AMOUNT: i64 = 1_000_000_000_000_000;

/// An amount in minor units: any JSON integer, including integral numbers written with a
/// fraction (`2500.0`, which JSON Schema counts as an integer too). `2500.5` is refused.
pub fn minor_units<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    use serde::de::Error;
    match serde_json::Number::deserialize(deserializer)? {
        n if n.is_i64() => Ok(n.as_i64().expect("checked is_i64")),
        n => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e18 => Ok(f as i64),
            _ => Err(D::Error::custom(format!(
                "expected a whole number of minor units (cents) up to {MAX_AMOUNT}, got {n}"
            ))),
        },
    }
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
