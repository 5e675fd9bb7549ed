//! Read-your-writes tokens: where a command's write landed, as a command's answer names it
//! (`X-Playhouse-Position`), and what a read waits for (`min_position`).
//!
//! Without replication a write is a position in the global log of the node that owns its
//! aggregate: `"1234"`. With replication every replica's log orders events its own way, so a
//! write is named by its partition's Raft log instead: `"17@4021"` (partition 17, index 4021),
//! the same on every replica. A read that follows several writes passes them all, merged:
//! one index per partition, the highest (`"3@88,17@4021"`); see [`PositionToken::merge`].

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

/// Where one write landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Position {
    /// A position in the global log of the node that took the write (no replication).
    Log(u64),
    /// The index of the write's entry in its partition's Raft log.
    Raft { partition: u32, index: u64 },
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Log(position) => write!(f, "{position}"),
            Position::Raft { partition, index } => write!(f, "{partition}@{index}"),
        }
    }
}

/// What a read waits for: a log position, or for each partition named, an index of its Raft
/// log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PositionToken {
    Log(u64),
    Partitions(BTreeMap<u32, u64>),
}

impl PositionToken {
    /// The token that waits for both `self` and `other`: per partition the higher index. Two
    /// log positions merge to the higher too; a log position and partitions do not mix (they
    /// come from clusters with and without replication).
    pub fn merge(self, other: PositionToken) -> Result<PositionToken, String> {
        match (self, other) {
            (PositionToken::Log(a), PositionToken::Log(b)) => Ok(PositionToken::Log(a.max(b))),
            (PositionToken::Partitions(mut a), PositionToken::Partitions(b)) => {
                for (partition, index) in b {
                    let entry = a.entry(partition).or_insert(index);
                    *entry = (*entry).max(index);
                }
                Ok(PositionToken::Partitions(a))
            }
            _ => Err(
                "a log position and partition positions cannot be merged: they come from different clusters"
                    .into(),
            ),
        }
    }
}

impl From<Position> for PositionToken {
    fn from(position: Position) -> Self {
        match position {
            Position::Log(position) => PositionToken::Log(position),
            Position::Raft { partition, index } => {
                PositionToken::Partitions(BTreeMap::from([(partition, index)]))
            }
        }
    }
}

/// The largest position or index a token may name (they are stored as i64 elsewhere).
const MAX: u64 = i64::MAX as u64;

impl FromStr for PositionToken {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let number = |part: &str, what: &str| -> Result<u64, String> {
            match part.parse::<u64>() {
                Ok(n) if n <= MAX => Ok(n),
                Ok(_) => Err(format!("{what} `{part}` is larger than {MAX}")),
                Err(_) => Err(format!("{what} `{part}` is not a whole number")),
            }
        };
        if text.is_empty() {
            return Err("a position is a log position (`1234`) or partition@index pairs separated by commas (`3@88,17@4021`), not empty".into());
        }
        if !text.contains('@') {
            return number(text, "the log position").map(PositionToken::Log);
        }
        let mut partitions = BTreeMap::new();
        for pair in text.split(',') {
            let Some((partition, index)) = pair.split_once('@') else {
                return Err(format!("`{pair}` is not partition@index (as in `17@4021`)"));
            };
            let partition = u32::try_from(number(partition, "the partition")?)
                .map_err(|_| format!("the partition `{partition}` is larger than {}", u32::MAX))?;
            let index = number(index, "the index")?;
            let entry = partitions.entry(partition).or_insert(index);
            *entry = (*entry).max(index);
        }
        Ok(PositionToken::Partitions(partitions))
    }
}

impl fmt::Display for PositionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PositionToken::Log(position) => write!(f, "{position}"),
            PositionToken::Partitions(partitions) => {
                let pairs: Vec<String> = partitions
                    .iter()
                    .map(|(partition, index)| format!("{partition}@{index}"))
                    .collect();
                f.write_str(&pairs.join(","))
            }
        }
    }
}

impl<'de> Deserialize<'de> for PositionToken {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_reads_back_what_a_position_wrote_and_merges_by_the_highest_index() {
        let written = Position::Raft {
            partition: 17,
            index: 4021,
        };
        assert_eq!(written.to_string(), "17@4021");
        let token: PositionToken = written.to_string().parse().unwrap();
        assert_eq!(token, PositionToken::from(written));
        let other: PositionToken = "3@88,17@12".parse().unwrap();
        let merged = token.merge(other).unwrap();
        assert_eq!(merged.to_string(), "3@88,17@4021");
        assert_eq!(
            "1234".parse::<PositionToken>(),
            Ok(PositionToken::Log(1234))
        );
        assert_eq!(Position::Log(1234).to_string(), "1234");
        assert_eq!(
            PositionToken::Log(5).merge(PositionToken::Log(9)),
            Ok(PositionToken::Log(9))
        );
        assert!(PositionToken::Log(5).merge(merged).is_err());
    }

    #[test]
    fn a_malformed_token_is_refused_saying_what_is_wrong() {
        for (text, says) in [
            ("", "not empty"),
            ("12x", "not a whole number"),
            ("3@", "the index `` is not a whole number"),
            ("3@4,5", "`5` is not partition@index"),
            ("99999999999@1", "larger than"),
            ("1@9223372036854775808", "larger than"),
        ] {
            let error = text.parse::<PositionToken>().unwrap_err();
            assert!(error.contains(says), "{text}: {error}");
        }
    }
}
