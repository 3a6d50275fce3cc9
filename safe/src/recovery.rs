//! Start-up recovery: newest snapshot, then its journal.
//!
//! Rules (docs/file-format.md, "Recovery"):
//! - stale `*.tmp` files and generations older than the newest snapshot are removed;
//! - a snapshot must be complete and every frame must authenticate, else start-up stops;
//! - in the journal, a torn final frame (the file ends inside it, or everything after its
//!   start is zero) is a write that was never acknowledged: it is dropped and the file
//!   truncated to the last good frame;
//! - anything else that fails (bad check bytes, failed authentication, a record that does not
//!   follow from the state) refuses start-up with the file name and byte offset. Recovery never
//!   guesses, so the Safe never serves silently wrong data.

use crate::crypto::Sealer;
use crate::format::{
    self, decode_header, open_at, FileKind, FormatError, FramePos, Record, RecordKind, HEADER_LEN,
};
use crate::journal::{
    io_err, journal_name, parse_name, remove_generation, snapshot_name, sync_dir, write_snapshot,
    Journal, JournalError,
};
use crate::store::{Entry, Store, WorkloadState};
use aegis_core::Limits;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zeroize::Zeroizing;

/// Why recovery refused to start.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// A file is corrupted or inconsistent at a given offset.
    #[error("{path} is corrupted at byte offset {offset}: {reason}. The Safe refuses to start rather than serve wrong data; restore the data directory from a backup (see docs/safe.md, \"Recovery\")")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Byte offset of the bad header or frame.
        offset: u64,
        /// What is wrong.
        #[source]
        reason: FormatError,
    },
    /// Files that must exist are missing.
    #[error("data directory {dir} is inconsistent: {reason}")]
    Missing {
        /// The directory.
        dir: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// An I/O error.
    #[error(transparent)]
    Io(#[from] JournalError),
}

/// What recovery found, for the start-up log and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Generation recovered.
    pub generation: u64,
    /// Workloads loaded from the snapshot.
    pub snapshot_workloads: u64,
    /// Journal records replayed.
    pub journal_records: u64,
    /// Bytes of a torn final record that were dropped (0 if none).
    pub torn_bytes: u64,
}

/// Recovers the data directory (creating it when empty). Returns the store and the journal
/// to append to.
pub fn recover(
    dir: &Path,
    sealer: &Sealer,
    limits: Limits,
) -> Result<(Store, Journal, RecoveryReport), RecoveryError> {
    std::fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    let mut snapshots = Vec::new();
    let mut journals = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(io_err("read directory", dir))?;
    for e in entries {
        let e = e.map_err(io_err("read directory", dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".tmp") {
            // An interrupted snapshot write; the rename never happened, so it is not state.
            std::fs::remove_file(e.path()).map_err(io_err("remove", &e.path()))?;
            continue;
        }
        match parse_name(&name) {
            Some((FileKind::Snapshot, id)) => snapshots.push(id),
            Some((FileKind::Journal, id)) => journals.push(id),
            None => {
                tracing::warn!(file = %e.path().display(), "ignoring unknown file in data directory")
            }
        }
    }
    let store = Store::new(limits);
    let Some(&generation) = snapshots.iter().max() else {
        if !journals.is_empty() {
            return Err(RecoveryError::Missing {
                dir: dir.to_path_buf(),
                reason: "journal files exist but no snapshot; refusing to start with partial state"
                    .into(),
            });
        }
        // A fresh directory: an empty snapshot 0 and journal 0.
        write_snapshot(dir, sealer, &store, 0, 0)?;
        let journal = Journal::create(dir, sealer, 0, 0)?;
        return Ok((store, journal, RecoveryReport::default()));
    };
    if let Some(j) = journals.iter().find(|j| **j > generation) {
        return Err(RecoveryError::Missing {
            dir: dir.to_path_buf(),
            reason: format!(
                "{} exists but {} is missing",
                journal_name(*j),
                snapshot_name(*j)
            ),
        });
    }
    let mut report = RecoveryReport {
        generation,
        ..Default::default()
    };
    let next_seq = load_snapshot(dir, sealer, &store, generation, &mut report)?;
    let journal = if journals.contains(&generation) {
        replay_journal(dir, sealer, &store, generation, next_seq, &mut report)?
    } else {
        // Crash between writing the snapshot and creating its journal.
        Journal::create(dir, sealer, generation, next_seq)?
    };
    let stale: Vec<u64> = snapshots
        .iter()
        .chain(&journals)
        .copied()
        .filter(|id| *id < generation)
        .collect();
    for id in stale {
        remove_generation(dir, id)?;
    }
    sync_dir(dir)?;
    Ok((store, journal, report))
}

fn corrupt(path: &Path, offset: usize, reason: FormatError) -> RecoveryError {
    RecoveryError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    }
}

fn read_all(path: &Path) -> Result<Zeroizing<Vec<u8>>, RecoveryError> {
    // Zeroizing: frames are decrypted in place, so this buffer holds plaintext afterwards.
    Ok(Zeroizing::new(
        std::fs::read(path).map_err(io_err("read", path))?,
    ))
}

fn header_of(
    path: &Path,
    sealer: &Sealer,
    kind: FileKind,
    buf: &[u8],
    id: u64,
) -> Result<format::Header, RecoveryError> {
    let bytes: &[u8; HEADER_LEN] = buf[..HEADER_LEN].try_into().map_err(|_| {
        corrupt(
            path,
            0,
            FormatError::Payload("header shorter than 56 bytes"),
        )
    })?;
    let h = decode_header(sealer, kind, bytes).map_err(|e| corrupt(path, 0, e))?;
    if h.file_id != id {
        let e = FormatError::HeaderMismatch {
            field: "file id",
            found: h.file_id,
            expected: id,
        };
        return Err(corrupt(path, 0, e));
    }
    Ok(h)
}

fn load_snapshot(
    dir: &Path,
    sealer: &Sealer,
    store: &Store,
    id: u64,
    report: &mut RecoveryReport,
) -> Result<u64, RecoveryError> {
    let path = dir.join(snapshot_name(id));
    let mut buf = read_all(&path)?;
    if buf.len() < HEADER_LEN {
        return Err(corrupt(&path, 0, FormatError::SnapshotIncomplete));
    }
    let header = header_of(&path, sealer, FileKind::Snapshot, &buf, id)?;
    let mut at = HEADER_LEN;
    let mut seq = 0u64;
    let mut secrets = 0u64;
    let total = buf.len();
    loop {
        if at >= total {
            return Err(corrupt(&path, at, FormatError::SnapshotIncomplete));
        }
        let pos = FramePos {
            file: FileKind::Snapshot,
            file_id: id,
            seq,
        };
        let (kind, plain, end) = open_at(sealer, &mut buf, at, pos)
            .map_err(|e| corrupt(&path, at, e))?
            .ok_or_else(|| corrupt(&path, at, FormatError::SnapshotIncomplete))?;
        match kind {
            RecordKind::Workload => {
                let (w, revision, entries) =
                    format::decode_snapshot_workload(plain).map_err(|e| corrupt(&path, at, e))?;
                let mut state = WorkloadState {
                    revision,
                    ..Default::default()
                };
                secrets += entries.len() as u64;
                for e in entries {
                    state.secrets.insert(
                        e.key,
                        Entry::new(e.value, e.version, e.created_ms, e.updated_ms),
                    );
                }
                store.replace(w, Arc::new(state));
                report.snapshot_workloads += 1;
            }
            RecordKind::End => {
                let (w, s) =
                    format::decode_snapshot_end(plain).map_err(|e| corrupt(&path, at, e))?;
                if w != seq || s != secrets {
                    let e = FormatError::Sequence(format!(
                        "end marker counts {w} workloads / {s} secrets, file holds {seq} / {secrets}"
                    ));
                    return Err(corrupt(&path, at, e));
                }
                if end != total {
                    return Err(corrupt(
                        &path,
                        end,
                        FormatError::Payload("bytes after end marker"),
                    ));
                }
                return Ok(header.first_seq);
            }
            other => return Err(corrupt(&path, at, FormatError::Kind(other as u8))),
        }
        at = end;
        seq += 1;
    }
}

fn replay_journal(
    dir: &Path,
    sealer: &Sealer,
    store: &Store,
    id: u64,
    expected_seq: u64,
    report: &mut RecoveryReport,
) -> Result<Journal, RecoveryError> {
    let path = dir.join(journal_name(id));
    let mut buf = read_all(&path)?;
    if buf.len() < HEADER_LEN {
        // Torn while being created: it never held a record. Start it again.
        report.torn_bytes = buf.len() as u64;
        return Ok(Journal::create(dir, sealer, id, expected_seq)?);
    }
    let header = header_of(&path, sealer, FileKind::Journal, &buf, id)?;
    if header.first_seq != expected_seq {
        let e = FormatError::HeaderMismatch {
            field: "first sequence number",
            found: header.first_seq,
            expected: expected_seq,
        };
        return Err(corrupt(&path, 0, e));
    }
    let mut at = HEADER_LEN;
    let mut seq = header.first_seq;
    // Workloads touched by the journal, applied to the store once at the end.
    let mut touched: HashMap<aegis_core::Workload, WorkloadState> = HashMap::new();
    let total = buf.len();
    while at < total {
        let pos = FramePos {
            file: FileKind::Journal,
            file_id: id,
            seq,
        };
        let Some((kind, plain, end)) =
            open_at(sealer, &mut buf, at, pos).map_err(|e| corrupt(&path, at, e))?
        else {
            report.torn_bytes = (total - at) as u64;
            tracing::warn!(
                file = %path.display(),
                offset = at,
                dropped_bytes = total - at,
                "dropping a torn final journal record (a write interrupted before it was acknowledged)"
            );
            truncate(&path, at as u64)?;
            break;
        };
        if !matches!(kind, RecordKind::Put | RecordKind::Delete) {
            return Err(corrupt(&path, at, FormatError::Kind(kind as u8)));
        }
        let record = Record::decode(kind, plain).map_err(|e| corrupt(&path, at, e))?;
        let workload = match &record {
            Record::Put { workload, .. } | Record::Delete { workload, .. } => workload.clone(),
        };
        let state = touched.entry(workload.clone()).or_insert_with(|| {
            store
                .get(&workload)
                .map(|s| (*s).clone())
                .unwrap_or_default()
        });
        state
            .apply(&record)
            .map_err(|m| corrupt(&path, at, FormatError::Sequence(m)))?;
        report.journal_records += 1;
        at = end;
        seq += 1;
    }
    for (w, s) in touched {
        store.replace(w, Arc::new(s));
    }
    Ok(Journal::open_append(dir, id, seq, at as u64)?)
}

fn truncate(path: &Path, len: u64) -> Result<(), JournalError> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err("open", path))?;
    f.set_len(len).map_err(io_err("truncate", path))?;
    f.sync_all().map_err(io_err("fsync", path))
}
