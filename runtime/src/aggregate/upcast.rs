//! Events stored in older shapes, read in today's: a chain of upcasters per event type.
//!
//! Every stored event carries the schema version of its type. When a type's shape changes, its
//! aggregate adds one [`Upcaster`] to [`Aggregate::UPCASTERS`]: the step from version n reads
//! the fields as they were at n and writes them as they are at n + 1 (in the manner of Akka's
//! event adapters and Axon's upcaster chains). A type's current version is one more than its
//! number of steps; reading runs the steps from the stored version up, so `decide` and `apply`
//! only ever see the current shape, and events are always written at the current version.
//! Events already at the current version, nearly all of them, are decoded directly: the chain
//! costs only the old ones.
//!
//! An event enum is stored by variant position, so new variants go at the end, and a variant's
//! fields are stored in order, so a change of fields is a new version with its upcaster.

use std::borrow::Cow;
use std::fmt;

use serde::{Serialize, de::DeserializeOwned};

use super::Aggregate;
use crate::codec::{self, CodecError};

/// One step in the shape of one event type: its fields at version [`Self::FROM`], at
/// `FROM + 1`, and how the first become the second.
pub trait Upcast {
    /// The type's name, as [`Aggregate::event_type`] gives it.
    const EVENT_TYPE: &'static str;
    /// The version this step reads; it writes `FROM + 1`. The first shape is version 1.
    const FROM: u16;
    /// The variant's fields as they were stored at `FROM` (a struct with the same fields in
    /// the same order, or `()` for a variant without fields).
    type Old: DeserializeOwned;
    /// The variant's fields at `FROM + 1`.
    type New: Serialize;

    fn upcast(old: Self::Old) -> Self::New;
}

/// An [`Upcast`] step as an aggregate lists it (see [`Upcasters::chain`]).
#[derive(Clone, Copy)]
pub struct Upcaster {
    event_type: &'static str,
    from: u16,
    step: fn(&[u8]) -> Result<Vec<u8>, CodecError>,
}

impl Upcaster {
    pub const fn of<U: Upcast>() -> Self {
        Self {
            event_type: U::EVENT_TYPE,
            from: U::FROM,
            step: step::<U>,
        }
    }

    pub fn event_type(&self) -> &'static str {
        self.event_type
    }

    /// The version it reads.
    pub fn from(&self) -> u16 {
        self.from
    }
}

impl fmt::Debug for Upcaster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} v{} -> v{}",
            self.event_type,
            self.from,
            self.from + 1
        )
    }
}

/// The bytes of one event at `U::FROM`, rewritten as they are at `U::FROM + 1`.
fn step<U: Upcast>(bytes: &[u8]) -> Result<Vec<u8>, CodecError> {
    let (variant, old) = codec::decode_variant::<U::Old>(bytes)?;
    codec::encode_variant(variant, &U::upcast(old))
}

/// An aggregate's upcasters, checked when the program is compiled: per event type, the steps
/// start at version 1 and leave no gap and no version read twice.
#[derive(Debug, Clone, Copy)]
pub struct Upcasters(&'static [Upcaster]);

impl Upcasters {
    /// No event type has changed shape: every type is at version 1.
    pub const NONE: Upcasters = Upcasters(&[]);

    /// Checks `steps` (a broken chain fails the build where the constant is evaluated).
    pub const fn chain(steps: &'static [Upcaster]) -> Upcasters {
        let mut i = 0;
        while i < steps.len() {
            let step = &steps[i];
            assert!(step.from >= 1, "an upcaster reads version 1 or later");
            let mut previous_found = step.from == 1;
            let mut j = 0;
            while j < steps.len() {
                let other = &steps[j];
                if j != i && same(other.event_type, step.event_type) {
                    assert!(
                        other.from != step.from,
                        "two upcasters read the same version of one event type"
                    );
                    if other.from + 1 == step.from {
                        previous_found = true;
                    }
                }
                j += 1;
            }
            assert!(
                previous_found,
                "an event type's upcasters leave a gap: each version from 1 up needs its step"
            );
            i += 1;
        }
        Upcasters(steps)
    }

    pub fn steps(&self) -> &'static [Upcaster] {
        self.0
    }

    /// The version events of `event_type` are written at: one more than its steps.
    pub fn current_version(&self, event_type: &str) -> u16 {
        let steps = self.0.iter().filter(|u| u.event_type == event_type).count();
        1 + u16::try_from(steps).expect("fewer than 65,535 versions")
    }
}

/// `str` equality in a constant context.
const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Why a stored event could not be read (it lives with the codec, so that the store can
/// report it without knowing aggregates).
pub use crate::codec::EventReadError as ReadError;

/// Decodes an event of `A` stored at `schema_version` of type `event_type`, upcast to the
/// current shape.
pub fn read<A: Aggregate>(
    event_type: &str,
    schema_version: u16,
    payload: &[u8],
) -> Result<A::Event, ReadError> {
    let upcasters = A::UPCASTERS;
    let known = upcasters.current_version(event_type);
    if schema_version == known {
        return codec::decode(payload).map_err(ReadError::Decode);
    }
    if schema_version > known {
        return Err(ReadError::Newer {
            found: schema_version,
            known,
        });
    }
    let mut bytes = Cow::Borrowed(payload);
    for from in schema_version..known {
        let upcaster = upcasters
            .steps()
            .iter()
            .find(|u| u.event_type == event_type && u.from == from)
            .ok_or(ReadError::NoStep { from })?;
        let next = (upcaster.step)(&bytes).map_err(|source| ReadError::Step { from, source })?;
        bytes = Cow::Owned(next);
    }
    codec::decode(&bytes).map_err(ReadError::Decode)
}

/// The version `event` is written at.
pub fn version_of<A: Aggregate>(event: &A::Event) -> u16 {
    A::UPCASTERS.current_version(A::event_type(event))
}

#[cfg(test)]
mod tests;
