//! Corruption and crash artefacts in the data directory: the Safe either recovers exactly
//! (a torn tail) or refuses to start naming the file and offset. It never serves wrong data.

use aegis_core::{Limits, SecretValue, Workload};
use aegis_safe::commit::{Committer, Mutation};
use aegis_safe::crypto::{RootKey, Sealer};
use aegis_safe::format::{read_frame, FileKind, FramePos, FrameRead, HEADER_LEN};
use aegis_safe::metrics::Metrics;
use aegis_safe::recovery::{recover, RecoveryError};
use aegis_safe::store::Store;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// (workload, key) → (value, version), plus revisions: everything a client can observe.
type Model = (
    BTreeMap<(String, String), (String, u64)>,
    BTreeMap<String, u64>,
);

fn model(store: &Store) -> Model {
    let mut values = BTreeMap::new();
    let mut revisions = BTreeMap::new();
    for (w, s) in store.all() {
        revisions.insert(w.to_string(), s.revision);
        for (k, e) in &s.secrets {
            values.insert(
                (w.to_string(), k.clone()),
                (e.value.expose().to_string(), e.version),
            );
        }
    }
    (values, revisions)
}

fn sealer(key: u8) -> Sealer {
    Sealer::new(&RootKey::from_bytes(&[key; 32]).unwrap())
}

fn ops() -> Vec<Mutation> {
    let w = |ns: &str, sa: &str| Workload::new(ns, sa).unwrap();
    let put = |ns, sa, k: &str, v: &str| Mutation::Put {
        workload: w(ns, sa),
        key: k.into(),
        value: SecretValue::new(v.into()),
    };
    vec![
        put("demo", "app", "A", "alpha"),
        put("demo", "app", "B", "bravo"),
        put("demo", "web", "A", "charlie"),
        put("demo", "app", "A", "alpha-2"),
        Mutation::Delete {
            workload: w("demo", "app"),
            key: "B".into(),
        },
        put("prod", "api", "TOKEN", "delta"),
    ]
}

/// Writes `ops()` one batch each into a fresh `dir`; returns the model after each prefix.
fn write_ops(dir: &Path, rotate_bytes: u64) -> Vec<Model> {
    let s = Arc::new(sealer(1));
    let (store, journal, _) = recover(dir, &s, Limits::default()).unwrap();
    let store = Arc::new(store);
    let mut models = vec![model(&store)];
    let c = Committer::start(
        journal,
        Arc::clone(&s),
        Arc::clone(&store),
        rotate_bytes,
        Arc::new(Metrics::new()),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for m in ops() {
        rt.block_on(c.commit(m)).unwrap();
        models.push(model(&store));
    }
    c.shutdown();
    models
}

fn only_file(dir: &Path, prefix: &str) -> PathBuf {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect();
    assert_eq!(v.len(), 1, "{v:?}");
    v.pop().unwrap()
}

/// Frame boundaries of a journal: offsets where each frame starts, then the end.
fn boundaries(path: &Path) -> Vec<usize> {
    let buf = std::fs::read(path).unwrap();
    let mut at = HEADER_LEN;
    let mut out = vec![at];
    let mut seq = 0;
    while at < buf.len() {
        let pos = FramePos {
            file: FileKind::Journal,
            file_id: 0,
            seq,
        };
        match read_frame(&buf, at, pos).unwrap() {
            FrameRead::Complete(f) => at = f.body.end,
            FrameRead::Torn => panic!("pristine journal has a torn frame"),
        }
        out.push(at);
        seq += 1;
    }
    out
}

fn expect_corrupt(
    result: Result<
        (
            Store,
            aegis_safe::journal::Journal,
            aegis_safe::recovery::RecoveryReport,
        ),
        RecoveryError,
    >,
    file: &Path,
    offset: u64,
) {
    match result {
        Err(RecoveryError::Corrupt {
            path, offset: o, ..
        }) => {
            assert_eq!(path, file);
            assert_eq!(o, offset, "offset for {}", file.display());
        }
        Err(e) => panic!(
            "expected corruption of {} at {offset}, got {e}",
            file.display()
        ),
        Ok(_) => panic!(
            "recovered despite corruption of {} at {offset}",
            file.display()
        ),
    }
}

#[test]
fn flipping_any_byte_of_the_journal_refuses_start_naming_file_and_frame_offset() {
    let dir = tempfile::tempdir().unwrap();
    write_ops(dir.path(), u64::MAX);
    let journal = only_file(dir.path(), "journal-");
    let pristine = std::fs::read(&journal).unwrap();
    let frames = boundaries(&journal);
    for i in 0..pristine.len() {
        let mut bad = pristine.clone();
        bad[i] ^= 0x01;
        std::fs::write(&journal, &bad).unwrap();
        let frame_start = if i < HEADER_LEN {
            0
        } else {
            *frames.iter().rev().find(|b| **b <= i).unwrap()
        };
        expect_corrupt(
            recover(dir.path(), &sealer(1), Limits::default()),
            &journal,
            frame_start as u64,
        );
    }
    std::fs::write(&journal, &pristine).unwrap();
    assert!(recover(dir.path(), &sealer(1), Limits::default()).is_ok());
}

#[test]
fn flipping_any_byte_of_a_snapshot_refuses_start() {
    let dir = tempfile::tempdir().unwrap();
    // Rotate after every batch, so the final snapshot holds all the state.
    let models = write_ops(dir.path(), 1);
    let snapshot = only_file(dir.path(), "snapshot-");
    let pristine = std::fs::read(&snapshot).unwrap();
    for i in 0..pristine.len() {
        let mut bad = pristine.clone();
        bad[i] ^= 0x80;
        std::fs::write(&snapshot, &bad).unwrap();
        match recover(dir.path(), &sealer(1), Limits::default()) {
            Err(RecoveryError::Corrupt { path, .. }) => assert_eq!(path, snapshot),
            Err(e) => panic!("byte {i}: unexpected error {e}"),
            Ok(_) => panic!("byte {i}: recovered from a corrupted snapshot"),
        }
    }
    std::fs::write(&snapshot, &pristine).unwrap();
    let (store, _, _) = recover(dir.path(), &sealer(1), Limits::default()).unwrap();
    assert_eq!(&model(&store), models.last().unwrap());
}

#[test]
fn truncating_the_journal_anywhere_recovers_exactly_the_complete_records() {
    let dir = tempfile::tempdir().unwrap();
    let models = write_ops(dir.path(), u64::MAX);
    let journal = only_file(dir.path(), "journal-");
    let pristine = std::fs::read(&journal).unwrap();
    let frames = boundaries(&journal);
    assert_eq!(frames.len(), models.len());
    for cut in HEADER_LEN..=pristine.len() {
        std::fs::write(&journal, &pristine[..cut]).unwrap();
        let complete = frames.iter().filter(|b| **b <= cut).count() - 1;
        let (store, _, report) = recover(dir.path(), &sealer(1), Limits::default())
            .unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert_eq!(model(&store), models[complete], "cut at {cut}");
        let boundary = frames[complete];
        assert_eq!(report.torn_bytes, (cut - boundary) as u64);
        assert_eq!(
            std::fs::metadata(&journal).unwrap().len(),
            boundary as u64,
            "torn tail truncated away"
        );
    }
}

#[test]
fn a_zero_filled_tail_is_a_torn_write_and_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let models = write_ops(dir.path(), u64::MAX);
    let journal = only_file(dir.path(), "journal-");
    let mut bytes = std::fs::read(&journal).unwrap();
    let len = bytes.len();
    bytes.extend_from_slice(&[0u8; 4096]);
    std::fs::write(&journal, &bytes).unwrap();
    let (store, _, report) = recover(dir.path(), &sealer(1), Limits::default()).unwrap();
    assert_eq!(&model(&store), models.last().unwrap());
    assert_eq!(report.torn_bytes, 4096);
    assert_eq!(std::fs::metadata(&journal).unwrap().len(), len as u64);
}

#[test]
fn a_replayed_record_appended_again_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_ops(dir.path(), u64::MAX);
    let journal = only_file(dir.path(), "journal-");
    let frames = boundaries(&journal);
    let mut bytes = std::fs::read(&journal).unwrap();
    let first = bytes[frames[0]..frames[1]].to_vec();
    let end = bytes.len();
    bytes.extend_from_slice(&first);
    std::fs::write(&journal, &bytes).unwrap();
    expect_corrupt(
        recover(dir.path(), &sealer(1), Limits::default()),
        &journal,
        end as u64,
    );
}

#[test]
fn swapping_two_records_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_ops(dir.path(), u64::MAX);
    let journal = only_file(dir.path(), "journal-");
    let f = boundaries(&journal);
    let bytes = std::fs::read(&journal).unwrap();
    // Records 0 and 1 ("A"="alpha", "B"="bravo") have the same length.
    assert_eq!(f[1] - f[0], f[2] - f[1]);
    let mut swapped = bytes[..f[0]].to_vec();
    swapped.extend_from_slice(&bytes[f[1]..f[2]]);
    swapped.extend_from_slice(&bytes[f[0]..f[1]]);
    swapped.extend_from_slice(&bytes[f[2]..]);
    std::fs::write(&journal, &swapped).unwrap();
    expect_corrupt(
        recover(dir.path(), &sealer(1), Limits::default()),
        &journal,
        f[0] as u64,
    );
}

#[test]
fn a_wrong_root_key_is_refused_at_the_first_header() {
    let dir = tempfile::tempdir().unwrap();
    write_ops(dir.path(), u64::MAX);
    let snapshot = only_file(dir.path(), "snapshot-");
    match recover(dir.path(), &sealer(2), Limits::default()) {
        Err(e @ RecoveryError::Corrupt { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains(&snapshot.display().to_string()) && text.contains("offset 0"),
                "{text}"
            );
            assert!(text.contains("wrong root key"), "{text}");
        }
        other => panic!("expected refusal, got {:?}", other.err()),
    }
}

#[test]
fn a_truncated_snapshot_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_ops(dir.path(), 1);
    let snapshot = only_file(dir.path(), "snapshot-");
    let bytes = std::fs::read(&snapshot).unwrap();
    for cut in [0, 10, HEADER_LEN, HEADER_LEN + 5, bytes.len() - 1] {
        std::fs::write(&snapshot, &bytes[..cut]).unwrap();
        match recover(dir.path(), &sealer(1), Limits::default()) {
            Err(RecoveryError::Corrupt { path, .. }) => assert_eq!(path, snapshot, "cut {cut}"),
            other => panic!("cut {cut}: expected refusal, got {:?}", other.err()),
        }
    }
}

#[test]
fn a_journal_without_its_snapshot_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_ops(dir.path(), u64::MAX);
    std::fs::remove_file(only_file(dir.path(), "snapshot-")).unwrap();
    assert!(matches!(
        recover(dir.path(), &sealer(1), Limits::default()),
        Err(RecoveryError::Missing { .. })
    ));
}

#[test]
fn rotation_leaves_one_generation_and_recovers_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let models = write_ops(dir.path(), 1);
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let (store, j, report) = recover(dir.path(), &sealer(1), Limits::default()).unwrap();
    assert_eq!(&model(&store), models.last().unwrap());
    assert_eq!(report.generation, ops().len() as u64);
    assert!(j.is_empty());
}

#[test]
fn an_interrupted_snapshot_write_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let models = write_ops(dir.path(), u64::MAX);
    // A crash between writing the temp file and renaming it leaves garbage under *.tmp.
    let tmp = dir.path().join("snapshot-0000000000000001.snap.tmp");
    std::fs::write(&tmp, b"partial").unwrap();
    let (store, _, _) = recover(dir.path(), &sealer(1), Limits::default()).unwrap();
    assert_eq!(&model(&store), models.last().unwrap());
    assert!(!tmp.exists());
}
