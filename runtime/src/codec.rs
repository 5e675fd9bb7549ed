//! The wire and storage codec: bincode 2 (serde) behind a leading format-version byte.
//!
//! This is the only module that knows the byte format. bincode is unmaintained upstream, so every
//! encoded value starts with [`FORMAT_VERSION`]: a future codec gets a new byte and old data stays
//! readable. Decoding never panics; garbage, truncation and unknown versions are [`CodecError`]s.

use serde::{Serialize, de::DeserializeOwned};

/// The version byte written in front of every value encoded today.
pub const FORMAT_VERSION: u8 = 1;

/// Largest value we agree to decode. A corrupt length prefix must not make us allocate gigabytes.
const DECODE_LIMIT_BYTES: usize = 64 * 1024 * 1024;

fn config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<DECODE_LIMIT_BYTES>,
> {
    bincode::config::standard().with_limit::<DECODE_LIMIT_BYTES>()
}

/// Why bytes could not be turned back into a value (or a value into bytes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    #[error("empty input: no format-version byte")]
    Empty,
    #[error("unknown codec format version {found} (this build reads version {FORMAT_VERSION})")]
    UnknownVersion { found: u8 },
    #[error("malformed {FORMAT_VERSION}-format payload: {reason}")]
    Malformed { reason: String },
    #[error("{trailing} trailing bytes after a complete value")]
    TrailingBytes { trailing: usize },
    #[error("value cannot be encoded: {reason}")]
    Unencodable { reason: String },
}

/// Encodes `value` as the version byte followed by its bincode form.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![FORMAT_VERSION];
    bincode::serde::encode_into_std_write(value, &mut out, config()).map_err(|e| {
        CodecError::Unencodable {
            reason: e.to_string(),
        }
    })?;
    Ok(out)
}

/// Decodes bytes written by [`encode`], checking the version byte and that nothing trails the value.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(CodecError::UnknownVersion { found: version });
    }
    let (value, read) =
        bincode::serde::decode_from_slice(body, config()).map_err(|e| CodecError::Malformed {
            reason: e.to_string(),
        })?;
    if read != body.len() {
        return Err(CodecError::TrailingBytes {
            trailing: body.len() - read,
        });
    }
    Ok(value)
}

/// Why a stored event could not be read as its aggregate's event of today (see
/// `aggregate::upcast`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventReadError {
    #[error(
        "its version {found} is newer than this build reads (up to {known}): it was written by \
         a later build, and downgrading is not supported"
    )]
    Newer { found: u16, known: u16 },
    #[error("no upcaster reads its version {from}")]
    NoStep { from: u16 },
    #[error("the upcaster from version {from} cannot read it: {source}")]
    Step { from: u16, source: CodecError },
    #[error("{0}")]
    Decode(CodecError),
}

/// Decodes one variant of an enum written by [`encode`] as its position among the enum's
/// variants and its fields, read as `T` (a struct with the variant's fields in the same order,
/// or `()` for a unit variant). For reading an event in a shape the enum no longer has.
pub fn decode_variant<T: DeserializeOwned>(bytes: &[u8]) -> Result<(u32, T), CodecError> {
    // An enum is written as its variant's index (a u32, varint) followed by its fields, which
    // is exactly how the pair (u32, fields) is written.
    decode::<(u32, T)>(bytes)
}

/// Encodes `fields` as variant `index` of an enum, as [`encode`] would write that variant.
pub fn encode_variant<T: Serialize>(index: u32, fields: &T) -> Result<Vec<u8>, CodecError> {
    encode(&(index, fields))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        name: String,
        amount: i64,
        tags: Vec<String>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Shapes {
        Empty,
        Pair { left: String, right: i64 },
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct PairFields {
        left: String,
        right: i64,
    }

    #[test]
    fn a_variant_reads_as_its_index_and_fields_and_writes_back_the_same_bytes() {
        let pair = Shapes::Pair {
            left: "l".into(),
            right: -3,
        };
        let bytes = encode(&pair).unwrap();
        let (index, fields) = decode_variant::<PairFields>(&bytes).unwrap();
        assert_eq!(index, 1);
        assert_eq!(fields.left, "l");
        assert_eq!(encode_variant(index, &fields).unwrap(), bytes);
        let empty = encode(&Shapes::Empty).unwrap();
        assert_eq!(decode_variant::<()>(&empty).unwrap(), (0, ()));
        assert_eq!(
            decode::<Shapes>(&encode_variant(0, &()).unwrap()).unwrap(),
            Shapes::Empty
        );
    }

    #[test]
    fn round_trips_and_starts_with_the_version_byte() {
        let sample = Sample {
            name: "alice".into(),
            amount: -42,
            tags: vec!["a".into()],
        };
        let bytes = encode(&sample).unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(decode::<Sample>(&bytes).unwrap(), sample);
    }

    #[test]
    fn empty_input_is_an_error() {
        assert_eq!(decode::<Sample>(&[]), Err(CodecError::Empty));
    }

    #[test]
    fn unknown_version_is_reported_with_the_byte() {
        let mut bytes = encode(&7u32).unwrap();
        bytes[0] = 9;
        assert_eq!(
            decode::<u32>(&bytes),
            Err(CodecError::UnknownVersion { found: 9 })
        );
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = encode(&7u32).unwrap();
        bytes.push(0);
        assert_eq!(
            decode::<u32>(&bytes),
            Err(CodecError::TrailingBytes { trailing: 1 })
        );
    }

    #[test]
    fn a_huge_length_prefix_is_malformed_not_an_allocation() {
        // Version byte, then a varint length of u64::MAX for the string.
        let bytes = [
            FORMAT_VERSION,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
        ];
        assert!(matches!(
            decode::<String>(&bytes),
            Err(CodecError::Malformed { .. })
        ));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode::<Sample>(&bytes);
        }
    }
}
