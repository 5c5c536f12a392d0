//! Behaviour of the embedded log: reads from any offset, tail following,
//! retention, group offsets, and recovery after torn writes and SIGKILL.

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use weir_log::{borrowed, Committed, EmbeddedLog, FsyncPolicy, Log, LogConfig};

const TOPIC: &str = "weir.events";
const NO_WAIT: Duration = Duration::ZERO;

fn config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        partitions: 2,
        segment_bytes,
        ..LogConfig::default()
    }
}

fn open(dir: &Path, config: LogConfig) -> EmbeddedLog {
    let log = EmbeddedLog::open(dir, config).unwrap();
    log.create_topic(TOPIC, 2, false).unwrap();
    log
}

fn record(i: u64) -> weir_log::OwnedProduce {
    (
        format!("k{}", i % 7).into_bytes(),
        format!("value-{i}-{}", "x".repeat((i % 50) as usize)).into_bytes(),
    )
}

fn read_all(log: &EmbeddedLog, partition: u32, from: u64) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let batch = log.read(TOPIC, partition, next, 10_000, NO_WAIT).unwrap();
        let Some(last) = batch.last() else { return out };
        next = last.offset + 1;
        out.extend(batch.into_iter().map(|r| (r.offset, r.value.to_vec())));
    }
}

fn segment_files(dir: &Path, partition: u32) -> Vec<PathBuf> {
    let mut files: Vec<_> =
        fs::read_dir(dir.join("topics").join(TOPIC).join(partition.to_string()))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
    files.sort();
    files
}

#[test]
fn reads_from_any_offset_across_segments_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), config(2_000));
    for chunk in (0..500u64).collect::<Vec<_>>().chunks(37) {
        let batch: Vec<_> = chunk.iter().map(|&i| record(i)).collect();
        log.append(TOPIC, 1, &borrowed(&batch)).unwrap();
    }
    assert!(
        segment_files(dir.path(), 1).len() > 5,
        "small segments roll"
    );
    for from in [0, 1, 36, 37, 250, 499] {
        let got = read_all(&log, 1, from);
        assert_eq!(got.len() as u64, 500 - from);
        assert_eq!(got[0], (from, record(from).1));
    }
    assert!(
        read_all(&log, 0, 0).is_empty(),
        "partitions are independent"
    );
    drop(log);

    let log = open(dir.path(), config(2_000));
    assert_eq!(log.offsets(TOPIC, 1).unwrap(), (0, 500));
    assert_eq!(
        log.append(TOPIC, 1, &borrowed(&[record(500)])).unwrap(),
        501
    );
    let got = read_all(&log, 1, 0);
    assert_eq!(got.len(), 501);
    assert!(got
        .iter()
        .enumerate()
        .all(|(i, (o, v))| *o == i as u64 && *v == record(i as u64).1));
}

#[test]
fn a_torn_tail_is_truncated_and_every_complete_record_kept() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), config(1 << 20));
    let batch: Vec<_> = (0..100).map(record).collect();
    log.append(TOPIC, 0, &borrowed(&batch)).unwrap();
    drop(log);
    let file = segment_files(dir.path(), 0).pop().unwrap();
    let full = fs::metadata(&file).unwrap().len();

    // Cut the file at every length inside the last two records plus garbage.
    for cut in (full - 120)..=full {
        let copy = tempfile::tempdir().unwrap();
        copy_tree(dir.path(), copy.path());
        let target = segment_files(copy.path(), 0).pop().unwrap();
        let f = OpenOptions::new().write(true).open(&target).unwrap();
        f.set_len(cut).unwrap();
        drop(f);
        let log = open(copy.path(), config(1 << 20));
        let got = read_all(&log, 0, 0);
        let complete = got.len() as u64;
        assert!((98..=100).contains(&complete), "cut {cut}: kept {complete}");
        assert!(got.iter().all(|(o, v)| *v == record(*o).1));
        assert_eq!(
            log.append(TOPIC, 0, &borrowed(&[record(complete)]))
                .unwrap(),
            complete + 1
        );
        assert_eq!(read_all(&log, 0, 0).len() as u64, complete + 1);
    }
}

#[test]
fn a_corrupt_frame_ends_the_recovered_log_at_the_record_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), config(1 << 20));
    log.append(
        TOPIC,
        0,
        &borrowed(&(0..10).map(record).collect::<Vec<_>>()),
    )
    .unwrap();
    drop(log);
    let file = segment_files(dir.path(), 0).pop().unwrap();
    let mut bytes = fs::read(&file).unwrap();
    let len = bytes.len();
    bytes[len - 3] ^= 0xff; // flip a byte inside the last record's value
    bytes.extend_from_slice(b"garbage after the tear");
    fs::write(&file, bytes).unwrap();
    let log = open(dir.path(), config(1 << 20));
    assert_eq!(read_all(&log, 0, 0).len(), 9);
}

#[test]
fn readers_follow_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let log = std::sync::Arc::new(open(dir.path(), config(1 << 20)));
    let reader = {
        let log = log.clone();
        std::thread::spawn(move || {
            log.read(TOPIC, 0, 0, 1000, Duration::from_secs(10))
                .unwrap()
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    log.append(TOPIC, 0, &borrowed(&[record(0)])).unwrap();
    let got = reader.join().unwrap();
    assert_eq!(got.len(), 1);
    assert!(log
        .read(TOPIC, 0, 1, 1000, Duration::from_millis(20))
        .unwrap()
        .is_empty());
}

#[test]
fn retention_by_size_drops_the_oldest_segments() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_bytes: 10_000,
        ..config(2_000)
    };
    let log = open(dir.path(), config);
    for i in 0..1000 {
        log.append(TOPIC, 0, &borrowed(&[record(i)])).unwrap();
    }
    let (start, end) = log.offsets(TOPIC, 0).unwrap();
    assert_eq!(end, 1000);
    assert!(start > 500, "old segments deleted, start = {start}");
    let total: u64 = segment_files(dir.path(), 0)
        .iter()
        .map(|f| fs::metadata(f).unwrap().len())
        .sum();
    assert!(total <= 10_000 + 2_100, "total {total}");
    let got = read_all(&log, 0, 0);
    assert_eq!(
        got[0].0, start,
        "a read below the start begins at the start"
    );
}

#[test]
fn retention_by_age_drops_expired_segments() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_secs: 0,
        ..config(500)
    };
    let log = open(dir.path(), config);
    for i in 0..40 {
        log.append(TOPIC, 0, &borrowed(&[record(i)])).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let (start, end) = log.offsets(TOPIC, 0).unwrap();
    assert_eq!(end, 40);
    assert_eq!(segment_files(dir.path(), 0).len(), 1);
    assert!(start > 30);
}

#[test]
fn a_compacted_topic_is_never_cut_by_retention_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_bytes: 1_000,
        retention_secs: 0,
        ..config(500)
    };
    let log = EmbeddedLog::open(dir.path(), config.clone()).unwrap();
    log.create_topic("weir.registry", 1, true).unwrap();
    let placements: Vec<_> = (0..200).map(record).collect();
    for placement in &placements {
        log.append(
            "weir.registry",
            0,
            &borrowed(std::slice::from_ref(placement)),
        )
        .unwrap();
    }
    drop(log);
    let log = EmbeddedLog::open(dir.path(), config).unwrap();
    // Opened again without the flag: the topic remembers it is compacted.
    log.create_topic("weir.registry", 1, false).unwrap();
    log.append("weir.registry", 0, &borrowed(&[record(200)]))
        .unwrap();
    assert_eq!(log.offsets("weir.registry", 0).unwrap(), (0, 201));
}

#[test]
fn a_topic_grows_live_and_refuses_to_shrink() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), config(1 << 20));
    log.append(TOPIC, 1, &borrowed(&[record(1)])).unwrap();
    // A config asking for more than the topic has is refused, naming both.
    let error = log.create_topic(TOPIC, 4, false).unwrap_err().to_string();
    assert!(
        error.contains("2 partitions") && error.contains("weir topics grow"),
        "{error}"
    );
    assert_eq!(log.grow_topic(TOPIC, 5).unwrap(), 2);
    assert_eq!(log.partitions(TOPIC).unwrap(), 5);
    log.append(TOPIC, 4, &borrowed(&[record(4)])).unwrap();
    assert_eq!(read_all(&log, 1, 0).len(), 1, "existing records stay");
    let error = log.grow_topic(TOPIC, 3).unwrap_err().to_string();
    assert!(error.contains("never shrinks"), "{error}");
    let error = log.grow_topic(TOPIC, 5_000_000).unwrap_err().to_string();
    assert!(error.contains("at most 4096"), "{error}");
    // A smaller config uses the grown topic as it is, also after a restart.
    drop(log);
    let log = EmbeddedLog::open(dir.path(), config(1 << 20)).unwrap();
    log.create_topic(TOPIC, 2, false).unwrap();
    assert_eq!(log.partitions(TOPIC).unwrap(), 5);
    assert_eq!(read_all(&log, 4, 0).len(), 1);
}

#[test]
fn group_offsets_persist_with_their_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), config(1 << 20));
    assert_eq!(log.committed("g", TOPIC, 1).unwrap(), None);
    let committed = Committed {
        offset: 42,
        metadata: "file=a pos=7".into(),
    };
    log.commit("g", TOPIC, 1, &committed).unwrap();
    drop(log);
    let log = open(dir.path(), config(1 << 20));
    assert_eq!(log.committed("g", TOPIC, 1).unwrap(), Some(committed));
    assert_eq!(log.committed("g", TOPIC, 0).unwrap(), None);
    assert!(log.committed("../evil", TOPIC, 0).is_err());
}

#[test]
fn interval_fsync_policy_appends_and_reads() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        fsync: FsyncPolicy::Interval,
        fsync_interval_ms: 5,
        ..config(1 << 20)
    };
    let log = open(dir.path(), config);
    log.append(TOPIC, 0, &borrowed(&[record(0), record(1)]))
        .unwrap();
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(read_all(&log, 0, 0).len(), 2);
}

/// The child half of the SIGKILL test: appends acknowledged batches forever.
#[test]
fn sigkill_child() {
    let Ok(dir) = std::env::var("WEIR_LOG_CRASH_DIR") else {
        return;
    };
    let log = open(Path::new(&dir), config(64 << 10));
    let mut out = std::io::stdout().lock();
    loop {
        let start = log.offsets(TOPIC, 0).unwrap().1;
        let batch: Vec<_> = (start..start + 10).map(record).collect();
        let next = log.append(TOPIC, 0, &borrowed(&batch)).unwrap();
        writeln!(out, "acked {next}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn sigkill_during_appends_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    for attempt in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sigkill_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("WEIR_LOG_CRASH_DIR", dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut acked = 0u64;
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let stop_after = 200 * (attempt + 1) + 37 * attempt;
        for line in lines.by_ref() {
            if let Some(n) = line.unwrap().strip_prefix("acked ") {
                acked = n.parse().unwrap();
                if acked >= stop_after {
                    break;
                }
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let log = open(dir.path(), config(64 << 10));
        let got = read_all(&log, 0, 0);
        assert!(
            got.len() as u64 >= acked,
            "attempt {attempt}: {} < acked {acked}",
            got.len()
        );
        assert!(got
            .iter()
            .enumerate()
            .all(|(i, (o, v))| *o == i as u64 && *v == record(*o).1));
    }
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            fs::create_dir_all(&target).unwrap();
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A small deterministic generator, so a failing sequence can be replayed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

#[test]
fn random_operations_match_a_vec_model_across_restarts_and_torn_tails() {
    for seed in 1..=20u64 {
        let mut rng = XorShift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let dir = tempfile::tempdir().unwrap();
        let small = || LogConfig {
            retention_bytes: u64::MAX,
            ..config(300 + segment_size_for(seed))
        };
        let mut model: Vec<Vec<Vec<u8>>> = vec![Vec::new(), Vec::new()];
        let mut log = open(dir.path(), small());
        for step in 0..200 {
            match rng.next(10) {
                0..=5 => {
                    let partition = rng.next(2) as usize;
                    let count = 1 + rng.next(5);
                    let batch: Vec<_> = (0..count)
                        .map(|i| {
                            let len = rng.next(120) as usize;
                            (
                                Vec::new(),
                                format!("{seed}-{step}-{i}-{}", "v".repeat(len)).into_bytes(),
                            )
                        })
                        .collect();
                    let next = log
                        .append(TOPIC, partition as u32, &borrowed(&batch))
                        .unwrap();
                    model[partition].extend(batch.into_iter().map(|(_, v)| v));
                    assert_eq!(next, model[partition].len() as u64);
                }
                6 | 7 => {
                    let partition = rng.next(2) as usize;
                    let from = rng.next(model[partition].len() as u64 + 1);
                    let got = read_all(&log, partition as u32, from);
                    let expected: Vec<_> = model[partition][from as usize..]
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (from + i as u64, v.clone()))
                        .collect();
                    assert_eq!(got, expected, "seed {seed} step {step}");
                }
                8 => {
                    drop(log);
                    log = open(dir.path(), small());
                }
                _ => {
                    // A crash mid-append: garbage after the last complete frame.
                    drop(log);
                    let partition = rng.next(2) as u32;
                    if let Some(file) = segment_files(dir.path(), partition).pop() {
                        let mut f = OpenOptions::new().append(true).open(file).unwrap();
                        f.write_all(&[0, 0, 0, 40, 1, 2, 3]).unwrap();
                    }
                    log = open(dir.path(), small());
                }
            }
        }
        for partition in 0..2 {
            assert_eq!(
                read_all(&log, partition, 0).len(),
                model[partition as usize].len()
            );
        }
    }
}

/// Segment sizes vary with the seed so rolls land at different places.
fn segment_size_for(seed: u64) -> u64 {
    (seed * 37) % 400
}

#[test]
fn a_second_opener_is_refused_while_the_log_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path(), LogConfig::default());
    let refused = EmbeddedLog::open(dir.path(), LogConfig::default());
    assert!(
        matches!(refused, Err(weir_log::LogError::Locked(_))),
        "a second opener got in"
    );
    drop(first);
    open(dir.path(), LogConfig::default());
}

/// A tmpfs of `size` mounted at `dir` (the test runs as root), unmounted
/// when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> SmallDisk {
        fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "mounting a tmpfs needs root (CI runs as root)"
        );
        SmallDisk(dir.to_path_buf())
    }

    fn grow(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_refuses_appends_and_they_resume_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(&dir.path().join("disk"), "1m");
    let log = open(&disk.0, config(256 << 10));
    let mut acked = 0u64;
    let mut failures = 0;
    let value = vec![b'x'; 4000];
    // Fill the disk: appends fail once it is full, and keep failing.
    for i in 0..1000u64 {
        let key = format!("k{i}");
        match log.append(TOPIC, 0, &[(key.as_bytes(), &value[..])]) {
            Ok(next) => {
                assert_eq!(failures, 0, "an append succeeded on a full disk");
                acked = next;
            }
            Err(error) => {
                assert!(!error.to_string().contains("poisoned"), "{error}");
                failures += 1;
                if failures == 5 {
                    break;
                }
            }
        }
    }
    assert!(
        failures == 5 && acked > 100,
        "acked {acked}, failures {failures}"
    );
    // Space comes back: appends resume without reopening the log,
    // right after the last acknowledged record.
    disk.grow("8m");
    let next = log.append(TOPIC, 0, &[(b"after", &value[..])]).unwrap();
    assert_eq!(next, acked + 1);
    let offsets: Vec<u64> = read_all(&log, 0, 0).iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets, (0..=acked).collect::<Vec<_>>());
    // And a restart finds exactly the same.
    drop(log);
    let log = open(&disk.0, config(256 << 10));
    assert_eq!(log.offsets(TOPIC, 0).unwrap(), (0, acked + 1));
}
