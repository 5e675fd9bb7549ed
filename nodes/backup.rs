//! `playhouse backup` and `playhouse restore`: a backup file taken through a member's edge,
//! checked whole before it is kept; and a backup file proposed, partition by partition, to a
//! new cluster's leaders through one of its members' edges.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use playhouse_runtime::edge::admin_backup::batch_body;
use playhouse_runtime::node::probe::{Request, exchange};
use playhouse_runtime::replication::{BackupRecord, read_magic, read_record};

/// Each read of a backup's answer waits at most this long (a partition's snapshot is built
/// before its first byte).
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// The most entry bytes sent in one restore request: under the edge's default body limit
/// (64 KiB).
const BATCH_BYTES: usize = 48 * 1024;
/// How many times a restore batch refused as "unavailable" (no leader yet) is sent again.
const UNAVAILABLE_RETRIES: u32 = 30;

/// What a backup file holds, read through to its end record.
struct Contents {
    header: BackupRecord,
    partitions: u32,
    entries: u64,
}

/// Reads `path` through and checks it: the magic bytes, a header, every partition's entries
/// as counted, and the end record with the right totals.
fn check(path: &Path) -> anyhow::Result<Contents> {
    let mut input =
        BufReader::new(File::open(path).with_context(|| format!("opening {}", path.display()))?);
    read_magic(&mut input).with_context(|| format!("reading {}", path.display()))?;
    let header = match read_record(&mut input)? {
        Some(header @ BackupRecord::Header { .. }) => header,
        other => bail!("{}: no header record first ({other:?})", path.display()),
    };
    let (mut partitions, mut entries, mut expected) = (0u32, 0u64, 0u64);
    loop {
        match read_record(&mut input).with_context(|| format!("reading {}", path.display()))? {
            Some(BackupRecord::Partition { proposals, .. }) => {
                if entries != expected {
                    bail!(
                        "{}: a partition holds fewer entries than it says",
                        path.display()
                    );
                }
                partitions += 1;
                expected += proposals;
            }
            Some(BackupRecord::Proposal(_)) => entries += 1,
            Some(BackupRecord::End {
                partitions: total_partitions,
                proposals,
            }) => {
                if (total_partitions, proposals) != (partitions, entries) || entries != expected {
                    bail!(
                        "{}: the end record counts {total_partitions} partitions and {proposals} entries, the file holds {partitions} and {entries}",
                        path.display()
                    );
                }
                return Ok(Contents {
                    header,
                    partitions,
                    entries,
                });
            }
            Some(BackupRecord::Header { .. }) => bail!("{}: a second header", path.display()),
            Some(BackupRecord::Failed(reason)) => bail!(
                "the member taking the backup stopped after {partitions} partitions: {reason}"
            ),
            None => bail!(
                "{}: cut short after {partitions} partitions and {entries} entries (no end record): take the backup again",
                path.display()
            ),
        }
    }
}

/// Takes a backup through the edge at `edge` into `out` (written beside it first, kept only
/// once it is checked whole).
pub fn backup(edge: &str, token: &str, out: &Path) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let partial = PathBuf::from(format!("{}.partial", out.display()));
    let status = {
        let file =
            File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
        let mut sink = BufWriter::new(file);
        let request = Request {
            method: "GET",
            path: "/admin/backup",
            token,
            content_type: "application/json",
            body: b"",
        };
        let status = exchange(edge, request, READ_TIMEOUT, &mut sink)
            .with_context(|| format!("GET /admin/backup on {edge}"))?;
        sink.flush()?;
        sink.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        status
    };
    if status != 200 {
        let said = std::fs::read_to_string(&partial).unwrap_or_default();
        let _ = std::fs::remove_file(&partial);
        eprintln!("playhouse backup: GET /admin/backup on {edge} answered {status}: {said}");
        return Ok(ExitCode::FAILURE);
    }
    let contents = match check(&partial) {
        Ok(contents) => contents,
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            return Err(error.context("the backup is not whole; nothing was kept"));
        }
    };
    std::fs::rename(&partial, out)
        .with_context(|| format!("naming the backup {}", out.display()))?;
    let bytes = std::fs::metadata(out)?.len();
    let BackupRecord::Header {
        member, cluster_id, ..
    } = &contents.header
    else {
        unreachable!("checked above");
    };
    println!(
        "backup of {} partitions ({} entries, {bytes} bytes) of cluster {cluster_id:016x}, taken on {member} in {:.1} s: {}",
        contents.partitions,
        contents.entries,
        started.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Proposes the backup at `from` to the cluster whose member's edge is `edge`, partition by
/// partition, in batches.
pub fn restore(edge: &str, token: &str, from: &Path) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let contents = check(from)?;
    let BackupRecord::Header {
        partitions,
        cluster_id,
        ..
    } = contents.header
    else {
        unreachable!("checked above");
    };
    let mut input = BufReader::new(File::open(from)?);
    read_magic(&mut input)?;
    let mut current: Option<(u32, Vec<Vec<u8>>, usize)> = None;
    let (mut applied, mut refused, mut first_refusal) = (0u64, 0u64, None::<String>);
    let mut send = |partition: u32, batch: &[Vec<u8>], last: bool| -> anyhow::Result<()> {
        let answer = send_batch(
            edge,
            token,
            (partitions, cluster_id),
            partition,
            batch,
            last,
        )?;
        applied += answer["applied"].as_u64().unwrap_or(0) + answer["held"].as_u64().unwrap_or(0);
        let batch_refused = answer["refused"].as_u64().unwrap_or(0);
        refused += batch_refused;
        if first_refusal.is_none() && batch_refused > 0 {
            first_refusal = answer["first_refusal"].as_str().map(str::to_owned);
        }
        if last {
            println!("partition {partition}: restored ({applied} entries applied so far)");
        }
        Ok(())
    };
    while let Some(record) = read_record(&mut input)? {
        match record {
            BackupRecord::Partition { partition, .. } => {
                if let Some((previous, batch, _)) = current.take() {
                    send(previous, &batch, true)?;
                }
                current = Some((partition, Vec::new(), 0));
            }
            BackupRecord::Proposal(entry) => {
                let (partition, batch, bytes) =
                    current.as_mut().context("an entry before its partition")?;
                if *bytes + entry.len() + 4 > BATCH_BYTES && !batch.is_empty() {
                    send(*partition, batch, false)?;
                    batch.clear();
                    *bytes = 0;
                }
                *bytes += entry.len() + 4;
                batch.push(entry);
            }
            BackupRecord::End { .. } => {
                if let Some((previous, batch, _)) = current.take() {
                    send(previous, &batch, true)?;
                }
            }
            BackupRecord::Header { .. } | BackupRecord::Failed(_) => {}
        }
    }
    println!(
        "restored {} partitions from {}: {applied} entries applied, {refused} refused, in {:.1} s",
        contents.partitions,
        from.display(),
        started.elapsed().as_secs_f64()
    );
    if refused > 0 {
        eprintln!(
            "playhouse restore: {refused} entries were refused (the first: {}): the cluster held something the backup does not; restore into a new cluster that has taken no writes",
            first_refusal.unwrap_or_default()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Sends one batch of `partition`'s entries; its answer.
fn send_batch(
    edge: &str,
    token: &str,
    (partitions, cluster_id): (u32, u64),
    partition: u32,
    batch: &[Vec<u8>],
    last: bool,
) -> anyhow::Result<serde_json::Value> {
    let path = format!(
        "/admin/restore/partitions/{partition}?partitions={partitions}&last={last}&cluster={cluster_id:x}"
    );
    let body = batch_body(batch);
    for attempt in 0.. {
        let mut answer = Vec::new();
        let request = Request {
            method: "POST",
            path: &path,
            token,
            content_type: "application/octet-stream",
            body: &body,
        };
        let status = exchange(edge, request, READ_TIMEOUT, &mut answer)
            .with_context(|| format!("POST {path} on {edge}"))?;
        let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_default();
        match status {
            200 => return Ok(answer),
            // No leader yet in the new cluster: nothing was proposed.
            503 if attempt < UNAVAILABLE_RETRIES => std::thread::sleep(Duration::from_secs(1)),
            _ => bail!(
                "POST {path} on {edge} answered {status}: {}",
                answer["detail"].as_str().unwrap_or("")
            ),
        }
    }
    unreachable!("the loop returns or fails")
}
