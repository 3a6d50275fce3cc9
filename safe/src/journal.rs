//! Files of the data directory: the append-only journal and snapshots.
//!
//! Layout: `snapshot-<id>.snap` holds the complete state as of the start of
//! `journal-<id>.log` (ids are 16 lowercase hex digits). Invariants:
//! - a journal record is acknowledged only after `write` + `fdatasync` of its batch;
//! - a snapshot appears under its final name only complete and fsynced (written to
//!   `*.tmp`, fsynced, renamed, directory fsynced), so it is never torn;
//! - rotation writes snapshot `g+1`, then creates journal `g+1`, then removes generation `g`;
//!   recovery always starts from the newest snapshot, so a crash at any step loses nothing.

use crate::crypto::Sealer;
use crate::format::{
    self, append_frame, encode_header, FileKind, FormatError, FramePos, Header, Record, RecordKind,
};
use crate::store::Store;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// I/O errors of the data directory, each naming the file.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// An operating-system call failed on a file.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Encoding failed (only for impossible sizes or an RNG failure).
    #[error("encoding a record for {path}: {source}")]
    Encode {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: FormatError,
    },
}

pub(crate) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> JournalError {
    let path = path.to_path_buf();
    move |source| JournalError::Io { op, path, source }
}

/// File name of journal `id`.
pub fn journal_name(id: u64) -> String {
    format!("journal-{id:016x}.log")
}

/// File name of snapshot `id`.
pub fn snapshot_name(id: u64) -> String {
    format!("snapshot-{id:016x}.snap")
}

/// Parses `journal-<id>.log` / `snapshot-<id>.snap`.
pub fn parse_name(name: &str) -> Option<(FileKind, u64)> {
    let (kind, hex) = if let Some(rest) = name.strip_prefix("journal-") {
        (FileKind::Journal, rest.strip_suffix(".log")?)
    } else {
        (
            FileKind::Snapshot,
            name.strip_prefix("snapshot-")?.strip_suffix(".snap")?,
        )
    };
    if hex.len() != 16
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    u64::from_str_radix(hex, 16).ok().map(|id| (kind, id))
}

/// fsyncs a directory so creations, renames and removals in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// The journal file currently appended to.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    id: u64,
    next_seq: u64,
    len: u64,
}

impl Journal {
    /// Creates journal `id` whose first record will have sequence `first_seq`, with its
    /// header fsynced and the directory entry durable.
    pub fn create(
        dir: &Path,
        sealer: &Sealer,
        id: u64,
        first_seq: u64,
    ) -> Result<Self, JournalError> {
        let path = dir.join(journal_name(id));
        let header = Header {
            kind: FileKind::Journal,
            file_id: id,
            first_seq,
        };
        let bytes = sealer
            .random_nonce()
            .map_err(FormatError::from)
            .and_then(|n| encode_header(sealer, &header, n))
            .map_err(|source| JournalError::Encode {
                path: path.clone(),
                source,
            })?;
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(io_err("create", &path))?;
        file.write_all(&bytes).map_err(io_err("write", &path))?;
        file.sync_all().map_err(io_err("fsync", &path))?;
        sync_dir(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            path,
            file,
            id,
            next_seq: first_seq,
            len: format::HEADER_LEN as u64,
        })
    }

    /// Opens an existing, already verified journal for appending at `len` bytes with
    /// `next_seq` as the next sequence number.
    pub fn open_append(dir: &Path, id: u64, next_seq: u64, len: u64) -> Result<Self, JournalError> {
        let path = dir.join(journal_name(id));
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            path,
            file,
            id,
            next_seq,
            len,
        })
    }

    /// The generation id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Sequence number the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Current size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the journal holds no records.
    pub fn is_empty(&self) -> bool {
        self.len == format::HEADER_LEN as u64
    }

    /// Seals `records` into consecutive frames, writes them in one `write`, and
    /// `fdatasync`s. Returns only when the batch is durable.
    pub fn append_batch(
        &mut self,
        sealer: &Sealer,
        records: &[Record],
    ) -> Result<(), JournalError> {
        let mut buf = Vec::with_capacity(records.len() * 160);
        let enc = |source| JournalError::Encode {
            path: self.path.clone(),
            source,
        };
        for (i, rec) in records.iter().enumerate() {
            let pos = FramePos {
                file: FileKind::Journal,
                file_id: self.id,
                seq: self.next_seq + i as u64,
            };
            let nonce = sealer.random_nonce().map_err(|e| enc(e.into()))?;
            append_frame(sealer, pos, rec.kind(), &rec.encode(), nonce, &mut buf).map_err(enc)?;
        }
        self.file
            .write_all(&buf)
            .map_err(io_err("write", &self.path))?;
        // fdatasync also persists the new file size, which is what reading the data needs.
        self.file.sync_data().map_err(io_err("fsync", &self.path))?;
        self.len += buf.len() as u64;
        self.next_seq += records.len() as u64;
        Ok(())
    }

    /// Rotation: writes snapshot `id+1` of `store` (which must equal the state after this
    /// journal's last record), creates journal `id+1`, and removes generation `id`.
    pub fn rotate(&mut self, sealer: &Sealer, store: &Store) -> Result<(), JournalError> {
        let next = self.id + 1;
        write_snapshot(&self.dir, sealer, store, next, self.next_seq)?;
        let fresh = Self::create(&self.dir, sealer, next, self.next_seq)?;
        let old = std::mem::replace(self, fresh);
        drop(old.file);
        remove_generation(&self.dir, old.id)?;
        Ok(())
    }
}

/// Removes journal and snapshot `id` (missing files are fine) and syncs the directory.
pub fn remove_generation(dir: &Path, id: u64) -> Result<(), JournalError> {
    for name in [journal_name(id), snapshot_name(id)] {
        let p = dir.join(name);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", &p)(e)),
        }
    }
    sync_dir(dir)
}

/// Writes snapshot `id` of `store`, atomically: temp file, fsync, rename, fsync directory.
/// `next_seq` is the sequence number the journal after it starts at.
pub fn write_snapshot(
    dir: &Path,
    sealer: &Sealer,
    store: &Store,
    id: u64,
    next_seq: u64,
) -> Result<(), JournalError> {
    let path = dir.join(snapshot_name(id));
    let tmp = dir.join(format!("{}.tmp", snapshot_name(id)));
    let enc = |source| JournalError::Encode {
        path: path.clone(),
        source,
    };
    let header = Header {
        kind: FileKind::Snapshot,
        file_id: id,
        first_seq: next_seq,
    };
    let nonce = sealer.random_nonce().map_err(|e| enc(e.into()))?;
    let mut buf = encode_header(sealer, &header, nonce).map_err(enc)?.to_vec();
    let mut seq = 0u64;
    let mut secrets = 0u64;
    let workloads = store.all();
    for (w, state) in &workloads {
        let payload = format::encode_snapshot_workload(
            w,
            state.revision,
            state.secrets.iter().map(|(k, e)| {
                (
                    k.as_str(),
                    e.version,
                    e.created_ms,
                    e.updated_ms,
                    e.value.expose(),
                )
            }),
        );
        secrets += state.secrets.len() as u64;
        let pos = FramePos {
            file: FileKind::Snapshot,
            file_id: id,
            seq,
        };
        let nonce = sealer.random_nonce().map_err(|e| enc(e.into()))?;
        append_frame(sealer, pos, RecordKind::Workload, &payload, nonce, &mut buf).map_err(enc)?;
        seq += 1;
    }
    let end = format::encode_snapshot_end(workloads.len() as u64, secrets);
    let pos = FramePos {
        file: FileKind::Snapshot,
        file_id: id,
        seq,
    };
    let nonce = sealer.random_nonce().map_err(|e| enc(e.into()))?;
    append_frame(sealer, pos, RecordKind::End, &end, nonce, &mut buf).map_err(enc)?;

    let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
    f.write_all(&buf).map_err(io_err("write", &tmp))?;
    f.sync_all().map_err(io_err("fsync", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(io_err("rename", &tmp))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(journal_name(10), "journal-000000000000000a.log");
        assert_eq!(
            parse_name("journal-000000000000000a.log"),
            Some((FileKind::Journal, 10))
        );
        assert_eq!(parse_name(&snapshot_name(3)), Some((FileKind::Snapshot, 3)));
        assert_eq!(parse_name("journal-00000000000000A.log"), None);
        assert_eq!(parse_name("snapshot-0000000000000003.snap.tmp"), None);
        assert_eq!(parse_name("other"), None);
    }
}
