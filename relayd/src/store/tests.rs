use super::*;
use crate::testutil::{record_at, records};
use std::fs::OpenOptions;

fn key(cpu: u32) -> StreamKey {
    StreamKey {
        node: "node/1 é".into(),
        pid: 42,
        start_time: 777,
        cpu,
    }
}

fn cal() -> Calibration {
    Calibration {
        raw0: 1,
        ns0: 2,
        raw1: 3,
        ns1: 4,
    }
}

fn cfg(dir: &Path) -> StoreConfig {
    StoreConfig::new(dir)
}

fn read_all(s: &Stream, from: u64) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = from;
    loop {
        let batch = s.read(at, 1000).unwrap();
        let Some(last) = batch.last() else { break };
        at = last.0 + 1;
        out.extend(batch);
    }
    out
}

fn expect(from: u64, to: u64) -> Vec<(u64, Vec<u8>)> {
    (from..to).map(|p| (p, record_at(p))).collect()
}

#[test]
fn crc32_matches_the_reference() {
    assert_eq!(crc32(0, b"123456789"), 0xCBF4_3926);
    assert_eq!(crc32(crc32(0, b"1234"), b"56789"), 0xCBF4_3926);
}

#[test]
fn write_read_back_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(cfg(dir.path())).unwrap();
    let s = store.open_stream(&key(0), cal()).unwrap();
    let a = s.append(0, &records(0, 10)).unwrap();
    assert_eq!((a.written, a.next, a.duplicates, a.gap), (10, 10, 0, 0));
    let a = s.append(10, &records(10, 25)).unwrap();
    assert_eq!(a.next, 25);
    assert_eq!(read_all(&s, 0), expect(0, 25));
    assert_eq!(s.summary().first, 0);
    drop((s, store));

    let store = Store::open(cfg(dir.path())).unwrap();
    let s = store.get(&key(0)).expect("recovered");
    assert_eq!(s.next(), 25);
    assert_eq!(s.meta().calibration, cal());
    assert_eq!(read_all(&s, 0), expect(0, 25));
    // Appending after a reopen continues the stream.
    s.append(25, &records(25, 30)).unwrap();
    assert_eq!(read_all(&s, 20), expect(20, 30));
}

#[test]
fn duplicates_are_skipped_and_gaps_counted() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(cfg(dir.path())).unwrap();
    let s = store.open_stream(&key(0), cal()).unwrap();
    s.append(0, &records(0, 10)).unwrap();
    let a = s.append(5, &records(5, 15)).unwrap();
    assert_eq!((a.written, a.duplicates, a.next), (5, 5, 15));
    let a = s.append(0, &records(0, 3)).unwrap();
    assert_eq!((a.written, a.duplicates, a.next), (0, 3, 15));
    let a = s.append(20, &records(20, 22)).unwrap();
    assert_eq!((a.written, a.gap, a.next), (2, 5, 22));
    assert_eq!(s.meta().lost_gap, 5);
    let mut want = expect(0, 15);
    want.extend(expect(20, 22));
    assert_eq!(read_all(&s, 0), want);
    assert_eq!(read_all(&s, 16), expect(20, 22));
    drop((s, store));
    let store = Store::open(cfg(dir.path())).unwrap();
    let s = store.get(&key(0)).unwrap();
    assert_eq!((s.next(), s.meta().lost_gap), (22, 5));
    assert_eq!(read_all(&s, 0), want);
}

#[test]
fn torn_tail_is_truncated_to_the_valid_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(cfg(dir.path())).unwrap();
    let s = store.open_stream(&key(0), cal()).unwrap();
    s.append(0, &records(0, 40)).unwrap();
    let seg = s.lock().segments[0].path.clone();
    // Valid bytes (a direct write leaves zero padding after them, which
    // the next open cuts).
    let valid = s.lock().segments[0].len;
    drop((s, store));
    let store = Store::open(cfg(dir.path())).unwrap();
    assert_eq!(
        fs::metadata(&seg).unwrap().len(),
        valid,
        "padding cut on open"
    );
    assert_eq!(read_all(&store.get(&key(0)).unwrap(), 0), expect(0, 40));
    drop(store);

    // Cases: garbage, a header promising more than is there, a half entry
    // with a bad checksum.
    let mut half = Vec::new();
    let rec = record_at(40);
    half.extend_from_slice(&(rec.len() as u32).to_le_bytes());
    half.extend_from_slice(&0xdead_beefu32.to_le_bytes());
    half.extend_from_slice(&40u64.to_le_bytes());
    half.extend_from_slice(&rec);
    let tails: Vec<Vec<u8>> = vec![
        vec![0xA5; 37],
        half[..20].to_vec(),
        half.clone(),
        vec![1, 2, 3],
    ];
    for tail in tails {
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&tail).unwrap();
        drop(f);
        let store = Store::open(cfg(dir.path())).unwrap();
        let s = store.get(&key(0)).unwrap();
        assert_eq!(fs::metadata(&seg).unwrap().len(), valid);
        assert_eq!(s.next(), 40);
        assert_eq!(read_all(&s, 0), expect(0, 40));
    }
    // A corrupted byte inside an entry costs that entry only: quarantined,
    // counted as corrupt, the entries after it kept.
    let mut bytes = fs::read(&seg).unwrap();
    let entry = ENTRY_HEADER + record_at(0).len();
    bytes[10 * entry + ENTRY_HEADER + 20] ^= 0xff;
    fs::write(&seg, &bytes).unwrap();
    let store = Store::open(cfg(dir.path())).unwrap();
    let s = store.get(&key(0)).unwrap();
    assert_eq!(s.next(), 40);
    let mut want = expect(0, 10);
    want.extend(expect(11, 40));
    assert_eq!(read_all(&s, 0), want);
    assert_eq!(s.meta().lost_corrupt, 1);
    let q = seg.with_extension(format!("seg.damaged-{}", 10 * entry));
    assert_eq!(
        fs::read(&q).unwrap().len(),
        entry,
        "the damaged entry is kept aside"
    );
    drop((s, store));
    // Counted once: a second restart finds a clean segment.
    let store = Store::open(cfg(dir.path())).unwrap();
    let s = store.get(&key(0)).unwrap();
    assert_eq!(s.meta().lost_corrupt, 1);
    // And the stream carries on.
    s.append(40, &records(40, 42)).unwrap();
    want.extend(expect(40, 42));
    assert_eq!(read_all(&s, 0), want);
}

#[test]
fn damage_in_sealed_segments_costs_only_the_damaged_entries() {
    let dir = tempfile::tempdir().unwrap();
    let entry = ENTRY_HEADER + record_at(0).len();
    let mut c = cfg(dir.path());
    c.segment_size = (10 * entry) as u64; // ten entries per segment
    let store = Store::open(c.clone()).unwrap();
    let s = store.open_stream(&key(0), cal()).unwrap();
    s.append(0, &records(0, 30)).unwrap();
    let segs: Vec<PathBuf> = s.lock().segments.iter().map(|x| x.path.clone()).collect();
    assert_eq!(segs.len(), 3);
    drop((s, store));
    // The first segment: its last two entries damaged (its end); the
    // second: the header of its fourth entry.
    let mut b = fs::read(&segs[0]).unwrap();
    b.truncate(10 * entry); // direct-write padding off
    for x in &mut b[8 * entry + 3..] {
        *x ^= 0x5a;
    }
    fs::write(&segs[0], &b).unwrap();
    let mut b = fs::read(&segs[1]).unwrap();
    b[3 * entry + 9] ^= 0x01;
    fs::write(&segs[1], &b).unwrap();
    let store = Store::open(c).unwrap();
    let s = store.get(&key(0)).unwrap();
    let got: Vec<u64> = read_all(&s, 0).iter().map(|e| e.0).collect();
    let want: Vec<u64> = (0..30).filter(|p| ![8, 9, 13].contains(p)).collect();
    assert_eq!(got, want);
    assert_eq!(s.meta().lost_corrupt, 3, "exactly the damaged entries");
    assert_eq!(s.next(), 30);
}

#[test]
fn damage_met_while_reading_is_skipped_and_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(cfg(dir.path())).unwrap();
    let s = store.open_stream(&key(0), cal()).unwrap();
    s.append(0, &records(0, 20)).unwrap();
    let seg = s.lock().segments[0].path.clone();
    let entry = ENTRY_HEADER + record_at(0).len();
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0xee], (5 * entry + ENTRY_HEADER + 30) as u64)
        .unwrap();
    drop(f);
    for _ in 0..2 {
        let got: Vec<u64> = read_all(&s, 0).iter().map(|e| e.0).collect();
        assert_eq!(got, (0..20).filter(|p| *p != 5).collect::<Vec<_>>());
    }
    assert_eq!(s.meta().lost_corrupt, 1);
}

#[test]
fn an_unreadable_meta_json_is_rebuilt_from_the_segments() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(cfg(dir.path())).unwrap();
    store
        .open_stream(&key(3), cal())
        .unwrap()
        .append(0, &records(0, 5))
        .unwrap();
    drop(store);
    let sdir = dir.path().join("streams").join(dir_name(&key(3)));
    fs::write(sdir.join("meta.json"), b"{not json").unwrap();
    // And a directory that is no stream at all: quarantined, not skipped.
    fs::create_dir(dir.path().join("streams").join("junk")).unwrap();
    let store = Store::open(cfg(dir.path())).unwrap();
    let s = store.get(&key(3)).expect("the stream is back");
    assert_eq!(read_all(&s, 0), expect(0, 5));
    assert_eq!(store.streams().len(), 1);
    assert!(dir.path().join("quarantine").join("junk").is_dir());
    // The rebuilt meta.json reads.
    drop(store);
    assert!(Store::open(cfg(dir.path())).unwrap().get(&key(3)).is_some());
}

#[test]
fn segments_roll_and_retention_deletes_the_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let entry = (ENTRY_HEADER + record_at(0).len()) as u64;
    let mut c = cfg(dir.path());
    c.segment_size = 10 * entry; // ten entries per segment
    c.retain_bytes = 35 * entry;
    let store = Store::open(c.clone()).unwrap();
    let s = store.open_stream(&key(1), cal()).unwrap();
    for i in 0..10 {
        s.append(i * 10, &records(i * 10, i * 10 + 10)).unwrap();
    }
    // 100 records in 10 segments, only the newest 3 (≤ 35 entries) kept.
    assert_eq!(s.segment_count(), 3);
    assert!(s.size() <= c.retain_bytes);
    let sum = s.summary();
    assert_eq!((sum.first, sum.next), (70, 100));
    assert_eq!(read_all(&s, 0), expect(70, 100));
    let files = fs::read_dir(&s.dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "seg")
        })
        .count();
    assert_eq!(files, 3);
    drop((s, store));
    let store = Store::open(c).unwrap();
    let s = store.get(&key(1)).unwrap();
    assert_eq!((s.first(), s.next()), (70, 100));
}

#[test]
fn seek_by_position_across_segments_and_index_points() {
    let dir = tempfile::tempdir().unwrap();
    let entry = (ENTRY_HEADER + record_at(0).len()) as u64;
    let mut c = cfg(dir.path());
    c.segment_size = 300 * entry;
    let store = Store::open(c.clone()).unwrap();
    let s = store.open_stream(&key(2), cal()).unwrap();
    s.append(0, &records(0, 1000)).unwrap();
    assert_eq!(s.segment_count(), 4);
    for p in [0, 1, 63, 64, 65, 299, 300, 301, 640, 999] {
        let got = s.read(p, 1).unwrap();
        assert_eq!(got, expect(p, p + 1), "position {p}");
    }
    assert!(s.read(1000, 1).unwrap().is_empty());
    assert_eq!(
        s.read(250, 100 * record_at(0).len()).unwrap(),
        expect(250, 350)
    );
    drop((s, store));
    let store = Store::open(c).unwrap();
    let s = store.get(&key(2)).unwrap();
    assert_eq!(s.read(777, 1).unwrap(), expect(777, 778));
}

#[test]
fn metadata_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(cfg(dir.path())).unwrap();
    let s = store.open_stream(&key(3), cal()).unwrap();
    s.update_meta(|m| {
        m.closed = true;
        m.reader.read = 9;
        m.writer.lost_full = 4;
    })
    .unwrap();
    drop((s, store));
    let store = Store::open(cfg(dir.path())).unwrap();
    let s = store.get(&key(3)).unwrap();
    let m = s.meta();
    assert!(m.closed);
    assert_eq!((m.reader.read, m.writer.lost_full), (9, 4));
    assert_eq!(s.key(), &key(3));
}

#[test]
fn unusable_data_dir_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    fs::write(&file, b"x").unwrap();
    let err = Store::open(cfg(&file))
        .err()
        .expect("a file is no data dir");
    assert!(
        format!("{err:#}").contains("cannot create data directory"),
        "{err:#}"
    );
}

#[test]
fn age_retention_deletes_whole_old_segments_and_keeps_positions() {
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let entry = (ENTRY_HEADER + record_at(0).len()) as u64;
    let mut c = cfg(dir.path());
    c.segment_size = 10 * entry;
    let age = Duration::from_secs(3600);
    c.retain_age = Some(age);
    let store = Store::open(c.clone()).unwrap();
    let s = store.open_stream(&key(1), cal()).unwrap();
    s.append(0, &records(0, 30)).unwrap(); // three segments
    std::thread::sleep(Duration::from_millis(30));
    let between = SystemTime::now();
    std::thread::sleep(Duration::from_millis(30));
    s.append(30, &records(30, 45)).unwrap(); // two more
    assert_eq!(s.segment_count(), 5);

    // Nothing is old yet.
    assert_eq!(s.retain_by_age(SystemTime::now()).unwrap(), 0);
    // An hour after `between`: the segments written before it are gone.
    assert_eq!(s.retain_by_age(between + age).unwrap(), 3);
    assert_eq!((s.first(), s.next()), (30, 45));
    assert_eq!(read_all(&s, 0), expect(30, 45));

    // Much later everything is old: the stream is empty but keeps its
    // positions, also across a restart (segment times come from the files).
    drop((s, store));
    let store = Store::open(c.clone()).unwrap();
    let s = store.get(&key(1)).unwrap();
    assert_eq!((s.first(), s.next()), (30, 45));
    assert_eq!(s.retain_by_age(SystemTime::now() + 2 * age).unwrap(), 2);
    assert_eq!((s.first(), s.next(), s.segment_count()), (45, 45, 0));
    drop((s, store));
    let store = Store::open(c).unwrap();
    let s = store.get(&key(1)).unwrap();
    assert_eq!((s.first(), s.next()), (45, 45));
    // Appending continues at the next position, without a gap or duplicates.
    let a = s.append(45, &records(45, 50)).unwrap();
    assert_eq!((a.written, a.gap, a.duplicates, a.next), (5, 0, 0, 50));
    assert_eq!(read_all(&s, 0), expect(45, 50));
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn files_are_private_and_old_ones_are_tightened() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store = Store::open(cfg(&data)).unwrap();
    let s = store.open_stream(&key(0), cal()).unwrap();
    s.append(0, &records(0, 3)).unwrap();
    let sdir = data.join("streams").join(dir_name(&key(0)));
    for d in [&data, &data.join("streams"), &sdir] {
        assert_eq!(mode(d), DIR_MODE, "{}", d.display());
    }
    for f in [sdir.join("meta.json"), sdir.join(seg_name(0))] {
        assert_eq!(mode(&f), FILE_MODE, "{}", f.display());
    }
    drop((s, store));
    // Data of an older relay, world-readable: tightened when opened.
    fs::set_permissions(&sdir, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(sdir.join(seg_name(0)), fs::Permissions::from_mode(0o644)).unwrap();
    let _store = Store::open(cfg(&data)).unwrap();
    assert_eq!(mode(&sdir), DIR_MODE);
    assert_eq!(mode(&sdir.join(seg_name(0))), FILE_MODE);
}

#[test]
fn ingest_refuses_what_no_reader_could_decode_and_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(cfg(dir.path())).unwrap();
    let s = store.open_stream(&key(0), cal()).unwrap();
    let mut batch = records(0, 3);
    batch.extend(crate::testutil::poison_at(3));
    batch.extend(record_at(77)); // at position 4: the wrong sequence number
    batch.extend(records(5, 8));
    let a = s.append(0, &batch).unwrap();
    assert_eq!((a.written, a.refused, a.next), (6, 2, 8));
    assert_eq!(s.meta().lost_refused, 2);
    let got: Vec<u64> = read_all(&s, 0).iter().map(|e| e.0).collect();
    assert_eq!(got, vec![0, 1, 2, 5, 6, 7]);
    assert!(screen(&record_at(9), 9).is_ok());
    assert!(screen(&record_at(9), 9 + (1 << 32)).is_ok(), "low 32 bits");
    assert!(
        screen(&[1, 2, 3], 0).is_err(),
        "too short for a commit word"
    );
}

#[test]
fn a_jump_past_32_bits_of_positions_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(cfg(dir.path())).unwrap();
    let s = store.open_stream(&key(0), cal()).unwrap();
    s.append(0, &records(0, 2)).unwrap();
    let far = 2 + MAX_JUMP;
    let e = s.append(far, &record_at(far)).unwrap_err();
    assert!(
        matches!(e.downcast_ref::<Refused>(), Some(Refused::Jump { .. })),
        "{e:#}"
    );
    assert_eq!(s.next(), 2);
    // A gap below the limit is a loss the consumer reported: counted, stored after.
    let a = s.append(1000, &records(1000, 1001)).unwrap();
    assert_eq!((a.gap, a.next), (998, 1001));
    // No position arithmetic overflows.
    let e = s.append(u64::MAX - 1, &records(0, 3)).unwrap_err();
    assert!(e.downcast_ref::<Refused>().is_some());
}

#[test]
fn only_synced_positions_are_durable() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(cfg(dir.path())).unwrap();
    let s = store.open_stream(&key(0), cal()).unwrap();
    s.append_deferred(0, &records(0, 5)).unwrap();
    assert_eq!((s.next(), s.durable_next()), (5, 0), "not synced yet");
    s.sync_batch().unwrap();
    assert_eq!(s.durable_next(), 5);
}
