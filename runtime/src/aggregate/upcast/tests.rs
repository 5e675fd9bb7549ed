//! Upcaster chains on a test aggregate whose note event took three shapes: v1 held only the
//! text, v2 added the author, v3 split the text into a title and a body.

use serde::{Deserialize, Serialize};

use super::*;
use crate::aggregate::DomainError;
use crate::testkit::{StoredEvent, fold_stored, read_stored};

#[derive(Debug, Clone, Copy)]
struct Note;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct NoteState {
    title: String,
    body: String,
    author: String,
    erased: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum NoteEvent {
    /// Unchanged since version 1 (variant 0).
    Erased,
    /// Version 3 (variant 1).
    Written {
        title: String,
        body: String,
        author: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
#[error("never refused")]
struct NoteError;

impl DomainError for NoteError {
    fn refusal(&self) -> crate::aggregate::Refusal {
        crate::aggregate::Refusal::invalid_field("note")
    }
}

impl Aggregate for Note {
    const KIND: &'static str = "note";
    const SERVICE: &'static str = "notes";
    const UPCASTERS: Upcasters = Upcasters::chain(&[
        Upcaster::of::<WrittenV1ToV2>(),
        Upcaster::of::<WrittenV2ToV3>(),
    ]);
    type State = NoteState;
    type Command = ();
    type Event = NoteEvent;
    type Error = NoteError;

    fn event_type(event: &NoteEvent) -> &'static str {
        match event {
            NoteEvent::Erased => "NoteErased",
            NoteEvent::Written { .. } => "NoteWritten",
        }
    }

    fn owner(_: &NoteState) -> Option<&str> {
        None
    }

    fn decide(_: &NoteState, _: &()) -> Result<Vec<NoteEvent>, NoteError> {
        Ok(Vec::new())
    }

    fn apply(state: &mut NoteState, event: &NoteEvent) {
        match event {
            NoteEvent::Erased => {
                state.erased += 1;
                state.title.clear();
                state.body.clear();
            }
            NoteEvent::Written {
                title,
                body,
                author,
            } => {
                state.title.clone_from(title);
                state.body.clone_from(body);
                state.author.clone_from(author);
            }
        }
    }
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct WrittenV1 {
    text: String,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct WrittenV2 {
    text: String,
    author: String,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct WrittenV3 {
    title: String,
    body: String,
    author: String,
}

/// Notes written before authors were recorded were all written by the one user of v1.
struct WrittenV1ToV2;

impl Upcast for WrittenV1ToV2 {
    const EVENT_TYPE: &'static str = "NoteWritten";
    const FROM: u16 = 1;
    type Old = WrittenV1;
    type New = WrittenV2;

    fn upcast(old: WrittenV1) -> WrittenV2 {
        WrittenV2 {
            text: old.text,
            author: "the-first-user".into(),
        }
    }
}

/// The first line of the text is its title.
struct WrittenV2ToV3;

impl Upcast for WrittenV2ToV3 {
    const EVENT_TYPE: &'static str = "NoteWritten";
    const FROM: u16 = 2;
    type Old = WrittenV2;
    type New = WrittenV3;

    fn upcast(old: WrittenV2) -> WrittenV3 {
        let (title, body) = old.text.split_once('\n').unwrap_or((&old.text, ""));
        WrittenV3 {
            title: title.to_owned(),
            body: body.to_owned(),
            author: old.author,
        }
    }
}

/// Variant 1 of the event enum is `Written`.
const WRITTEN: u32 = 1;

fn v1(text: &str) -> StoredEvent {
    StoredEvent::old("NoteWritten", 1, WRITTEN, &WrittenV1 { text: text.into() })
}

fn v2(text: &str, author: &str) -> StoredEvent {
    StoredEvent::old(
        "NoteWritten",
        2,
        WRITTEN,
        &WrittenV2 {
            text: text.into(),
            author: author.into(),
        },
    )
}

#[test]
fn each_type_is_written_at_one_more_than_its_steps() {
    let written = NoteEvent::Written {
        title: "t".into(),
        body: String::new(),
        author: "a".into(),
    };
    assert_eq!(version_of::<Note>(&written), 3);
    assert_eq!(version_of::<Note>(&NoteEvent::Erased), 1);
}

#[test]
fn the_step_from_v1_adds_the_author_and_keeps_the_variant() {
    let upcast = (Upcaster::of::<WrittenV1ToV2>().step)(&v1("hello").payload).unwrap();
    assert_eq!(
        codec::decode_variant::<WrittenV2>(&upcast).unwrap(),
        (
            WRITTEN,
            WrittenV2 {
                text: "hello".into(),
                author: "the-first-user".into()
            }
        )
    );
}

#[test]
fn the_step_from_v2_splits_the_title_from_the_body() {
    let upcast =
        (Upcaster::of::<WrittenV2ToV3>().step)(&v2("Title\nline 1\nline 2", "bo").payload).unwrap();
    assert_eq!(
        codec::decode_variant::<WrittenV3>(&upcast).unwrap().1,
        WrittenV3 {
            title: "Title".into(),
            body: "line 1\nline 2".into(),
            author: "bo".into()
        }
    );
}

#[test]
fn a_v1_event_reads_through_both_steps_and_a_v3_one_directly() {
    assert_eq!(
        read_stored::<Note>(&v1("Shopping\nmilk")).unwrap(),
        NoteEvent::Written {
            title: "Shopping".into(),
            body: "milk".into(),
            author: "the-first-user".into()
        }
    );
    let current = NoteEvent::Written {
        title: "now".into(),
        body: "b".into(),
        author: "c".into(),
    };
    assert_eq!(
        read_stored::<Note>(&StoredEvent::current::<Note>(&current)).unwrap(),
        current
    );
}

#[test]
fn a_history_of_mixed_versions_folds_to_todays_state() {
    let state = fold_stored::<Note>(&[
        v1("first"),
        StoredEvent::current::<Note>(&NoteEvent::Erased),
        v2("Second\ntext", "ann"),
    ]);
    assert_eq!(
        state,
        NoteState {
            title: "Second".into(),
            body: "text".into(),
            author: "ann".into(),
            erased: 1,
        }
    );
}

#[test]
fn a_version_newer_than_the_build_is_refused_naming_both() {
    let mut from_the_future = v2("x", "y");
    from_the_future.schema_version = 4;
    let refused = read_stored::<Note>(&from_the_future).unwrap_err();
    assert_eq!(refused, ReadError::Newer { found: 4, known: 3 });
    assert!(
        refused
            .to_string()
            .contains("newer than this build reads (up to 3)")
    );
}

#[test]
fn bytes_no_step_can_read_name_the_step() {
    let damaged = StoredEvent {
        event_type: "NoteWritten".into(),
        schema_version: 1,
        payload: vec![codec::FORMAT_VERSION, 1, 0xFF],
    };
    assert!(matches!(
        read_stored::<Note>(&damaged),
        Err(ReadError::Step { from: 1, .. })
    ));
}

#[test]
#[should_panic(expected = "leave a gap")]
fn a_chain_with_a_gap_is_refused() {
    static GAP: [Upcaster; 1] = [Upcaster::of::<WrittenV2ToV3>()];
    Upcasters::chain(&GAP);
}

#[test]
#[should_panic(expected = "read the same version")]
fn two_steps_from_one_version_are_refused() {
    static TWICE: [Upcaster; 2] = [
        Upcaster::of::<WrittenV1ToV2>(),
        Upcaster::of::<WrittenV1ToV2>(),
    ];
    Upcasters::chain(&TWICE);
}
