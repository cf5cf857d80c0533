//! Shared by the archive tests: a deterministic span workload, reading an
//! archive back with serde (independently of `analyze`), statistics
//! computed by hand, and a file system that fails on request.

#![allow(dead_code)]

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};

use blkkin_collector::archive::{
    encode, layout, ArchiveError, ArchiveFs, FileEntry, FileSink, Renamed,
};
use blkkin_collector::model::{Endpoint, Span};
use serde_json::Value;

/// Start of the workload: 2024-02-28T22:00:00Z, so spans cross an hour, a
/// day and a leap day.
pub const T0: u64 = 1_709_157_600_000_000;

const SERVICES: [(&str, &[&str]); 3] = [
    ("client", &["read", "write"]),
    ("rbd", &["aio_read", "aio_write"]),
    ("osd", &["journal", "op_r", "op_w"]),
];

/// A small deterministic PRNG (xorshift) so tests need no crate for it.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `traces` traces of 1 root + 2..5 children, spread over `spread_us`
/// from [`T0`]; about 3 % of spans carry an `error` tag.
pub fn workload(traces: u64, spread_us: u64, seed: u64) -> Vec<Span> {
    let mut rng = Rng::new(seed);
    let mut spans = Vec::new();
    for t in 0..traces {
        let trace_id = format!("{:016x}{:016x}", seed, t + 1);
        let start = T0 + rng.below(spread_us.max(1));
        let children = 2 + rng.below(4);
        let mut root_end = start + 1;
        let mut kids = Vec::new();
        for c in 0..children {
            let (service, names) = SERVICES[1 + (c as usize % 2)];
            let name = names[rng.below(names.len() as u64) as usize];
            let ts = start + 1 + rng.below(50);
            let duration = 1 + rng.below(5000) + if rng.below(100) == 0 { 200_000 } else { 0 };
            root_end = root_end.max(ts + duration + 1);
            kids.push(span(
                &trace_id,
                c + 2,
                Some(1),
                service,
                name,
                ts,
                duration,
                &mut rng,
            ));
        }
        let (service, names) = SERVICES[0];
        let name = names[rng.below(2) as usize];
        spans.push(span(
            &trace_id,
            1,
            None,
            service,
            name,
            start,
            root_end - start,
            &mut rng,
        ));
        spans.extend(kids);
    }
    spans
}

#[allow(clippy::too_many_arguments)]
fn span(
    trace: &str,
    id: u64,
    parent: Option<u64>,
    service: &str,
    name: &str,
    ts: u64,
    duration: u64,
    rng: &mut Rng,
) -> Span {
    let mut tags = BTreeMap::new();
    tags.insert(
        "bytes".to_string(),
        (4096 * (1 + rng.below(16))).to_string(),
    );
    if rng.below(100) < 3 {
        tags.insert("error".to_string(), "EIO".to_string());
    }
    Span {
        trace_id: trace.to_string(),
        parent_id: parent.map(|p| format!("{p:016x}")),
        id: format!("{id:016x}"),
        name: Some(name.to_string()),
        timestamp: Some(ts),
        duration: Some(duration),
        local_endpoint: Some(Endpoint {
            service_name: Some(service.to_string()),
            ipv4: Some("127.0.0.1".to_string()),
            ..Endpoint::default()
        }),
        tags,
        ..Span::default()
    }
}

/// Every span in the visible data files of the archive on `fs`, parsed
/// with serde, with the path of each file.
pub fn read_back<F: ArchiveFs>(fs: &F) -> Vec<(String, Span)> {
    let mut out = Vec::new();
    for FileEntry { path, .. } in fs.list_files("").unwrap() {
        if !layout::is_visible(&path) {
            continue;
        }
        let c = layout::compression_of(&path)
            .unwrap_or_else(|| panic!("unexpected visible file {path}"));
        let text = encode::decode(c, &fs.read(&path).unwrap()).unwrap();
        out.extend(parse_ndjson(&path, &text));
    }
    out
}

/// Parses NDJSON text, panicking on any bad line.
pub fn parse_ndjson(path: &str, text: &[u8]) -> Vec<(String, Span)> {
    std::str::from_utf8(text)
        .unwrap()
        .lines()
        .map(|l| (path.to_string(), serde_json::from_str(l).unwrap()))
        .collect()
}

/// Asserts that `got` holds exactly the spans of `want`, each once, and
/// that each is in the partition of its timestamp.
pub fn assert_exactly_once(want: &[Span], got: &[(String, Span)]) {
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    for (path, s) in got {
        *seen.entry((s.trace_id.clone(), s.id.clone())).or_default() += 1;
        let p = layout::Partition::of_micros(s.timestamp.unwrap());
        assert!(path.starts_with(&p.dir()), "{path} holds a span of {p}");
    }
    let dups: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
    assert!(
        dups.is_empty(),
        "{} spans duplicated, e.g. {:?}",
        dups.len(),
        dups.first()
    );
    let by_key: HashMap<(String, String), &Span> = got
        .iter()
        .map(|(_, s)| ((s.trace_id.clone(), s.id.clone()), s))
        .collect();
    let mut missing = 0;
    for s in want {
        match by_key.get(&(s.trace_id.clone(), s.id.clone())) {
            Some(g) => assert_eq!(*g, s),
            None => missing += 1,
        }
    }
    assert_eq!(missing, 0, "{missing} spans missing");
    assert_eq!(got.len(), want.len());
}

/// Statistics of one (service, name), computed by hand.
#[derive(Debug, Default, Clone)]
pub struct Expected {
    pub count: u64,
    pub errors: u64,
    pub durations: Vec<f64>,
}

impl Expected {
    pub fn mean(&self) -> f64 {
        self.durations.iter().sum::<f64>() / self.durations.len() as f64
    }
    /// Linear interpolation between closest ranks (SQL percentile_cont).
    pub fn percentile(&self, p: f64) -> f64 {
        let mut v = self.durations.clone();
        v.sort_by(f64::total_cmp);
        let h = (v.len() - 1) as f64 * p;
        let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
        v[lo] + (h - lo as f64) * (v[hi] - v[lo])
    }
}

/// Per (service, name) statistics of `spans` starting in `[from, to)`.
pub fn expected_stats(
    spans: &[Span],
    from: Option<u64>,
    to: Option<u64>,
) -> BTreeMap<(String, String), Expected> {
    let mut out: BTreeMap<(String, String), Expected> = BTreeMap::new();
    for s in spans {
        let ts = s.timestamp.unwrap();
        if from.is_some_and(|f| ts < f) || to.is_some_and(|t| ts >= t) {
            continue;
        }
        let service = s
            .local_endpoint
            .as_ref()
            .and_then(|e| e.service_name.clone())
            .unwrap_or_default();
        let e = out
            .entry((service, s.name.clone().unwrap_or_default()))
            .or_default();
        e.count += 1;
        e.errors += u64::from(s.tags.contains_key("error"));
        e.durations.extend(s.duration.map(|d| d as f64));
    }
    out
}

pub fn close(got: f64, want: f64, tolerance: f64) -> bool {
    (got - want).abs() <= tolerance + 1e-5 * want.abs()
}

/// Checks the output of `blkkin analyze --format json` against statistics
/// of `spans` computed by hand, and (over the whole archive) its `slowest`
/// traces; each duration in the archive may differ from the one in `spans`
/// by up to `tol_us` (0: the same spans).
pub fn check_analyze_json(
    json: &str,
    spans: &[Span],
    from: Option<u64>,
    to: Option<u64>,
    slowest: usize,
    tol_us: f64,
) {
    let v: Value = serde_json::from_str(json).unwrap();
    let want = expected_stats(spans, from, to);
    let total: u64 = want.values().map(|e| e.count).sum();
    assert!(total > 0);
    assert_eq!(v["spans"], total);
    assert_eq!(v["bad_lines"], 0);
    let ops = v["operations"].as_array().unwrap();
    assert_eq!(ops.len(), want.len());
    for op in ops {
        let key = (
            op["service"].as_str().unwrap().to_string(),
            op["name"].as_str().unwrap().to_string(),
        );
        let e = &want[&key];
        assert_eq!(op["spans"], e.count, "{key:?}");
        assert_eq!(op["errors"], e.errors, "{key:?}");
        let f = |k: &str| op[k].as_f64().unwrap();
        assert!(close(f("mean_us"), e.mean(), tol_us), "{key:?} mean {op}");
        // DataFusion quantises the interpolation weight to 1e-6: allow a
        // few millionths of the spread of the values.
        let max = e.durations.iter().copied().fold(0.0, f64::max);
        let spread = 3e-6 * max + tol_us;
        for (k, p) in [("p50_us", 0.5), ("p95_us", 0.95), ("p99_us", 0.99)] {
            let want = e.percentile(p);
            assert!(close(f(k), want, spread), "{key:?} {k}: want {want}, {op}");
        }
        assert!(close(f("max_us"), max, tol_us), "{key:?} max {op}");
    }
    if from.is_none() && to.is_none() {
        let got: Vec<(String, i64)> = v["slowest"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["trace_id"].as_str().unwrap().to_string(),
                    t["duration_us"].as_i64().unwrap(),
                )
            })
            .collect();
        if tol_us == 0.0 {
            assert_eq!(got, expected_slowest(spans, slowest));
        } else {
            // Near-equal traces may swap: each listed trace has its
            // duration, and is at least as slow as the n-th slowest.
            let all: BTreeMap<String, i64> =
                expected_slowest(spans, usize::MAX).into_iter().collect();
            let want = expected_slowest(spans, slowest);
            assert_eq!(got.len(), want.len());
            let nth = want.last().unwrap().1 as f64;
            for (trace, d) in &got {
                assert!(close(*d as f64, all[trace] as f64, tol_us), "{trace}: {d}");
                assert!(*d as f64 >= nth - 2.0 * tol_us, "{trace}: {d} < {nth}");
            }
        }
    }
}

/// The `n` slowest traces (trace id, duration of its longest root span),
/// slowest first. (A span shared by a client and a server is two root
/// spans with the same id.)
pub fn expected_slowest(spans: &[Span], n: usize) -> Vec<(String, i64)> {
    let mut by_trace: BTreeMap<&str, i64> = BTreeMap::new();
    for s in spans.iter().filter(|s| s.parent_id.is_none()) {
        let d = by_trace.entry(&s.trace_id).or_insert(i64::MIN);
        *d = (*d).max(s.duration.unwrap() as i64);
    }
    let mut roots: Vec<(String, i64)> = by_trace
        .into_iter()
        .map(|(t, d)| (t.to_string(), d))
        .collect();
    roots.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    roots.truncate(n);
    roots
}

/// Checks an `analyze` report against statistics computed by hand.
pub fn assert_report_matches(
    report: &blkkin_collector::analyze::Report,
    spans: &[Span],
    from: Option<u64>,
    to: Option<u64>,
) {
    let want = expected_stats(spans, from, to);
    let total: u64 = want.values().map(|e| e.count).sum();
    assert_eq!(report.spans, total);
    assert_eq!(report.bad_lines, 0);
    assert_eq!(report.operations.len(), want.len());
    // DataFusion quantises the interpolation weight to 1e-6, so a
    // percentile between two far-apart values may be off by a few 1e-6 of
    // their gap.
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * b.abs().max(1.0);
    for op in &report.operations {
        let e = &want[&(op.service.clone(), op.name.clone())];
        assert_eq!(op.spans, e.count, "{}/{}", op.service, op.name);
        assert_eq!(op.errors, e.errors, "{}/{}", op.service, op.name);
        assert!(close(op.mean_us.unwrap(), e.mean()), "mean {op:?}");
        assert!(close(op.p50_us.unwrap(), e.percentile(0.5)), "p50 {op:?}");
        assert!(close(op.p95_us.unwrap(), e.percentile(0.95)), "p95 {op:?}");
        assert!(close(op.p99_us.unwrap(), e.percentile(0.99)), "p99 {op:?}");
    }
    if from.is_none() && to.is_none() {
        let slow: Vec<(String, i64)> = report
            .slowest
            .iter()
            .map(|t| (t.trace_id.clone(), t.duration_us))
            .collect();
        assert_eq!(slow, expected_slowest(spans, report.slowest.len()));
    }
}

/// An [`ArchiveFs`] that passes everything through but fails the n-th
/// rename that must not replace (counting from 1), as a crash would.
pub struct FailingFs<F> {
    pub inner: F,
    pub fail_rename_at: Cell<u64>,
    renames: Cell<u64>,
}

impl<F> FailingFs<F> {
    pub fn new(inner: F, fail_rename_at: u64) -> Self {
        FailingFs {
            inner,
            fail_rename_at: Cell::new(fail_rename_at),
            renames: Cell::new(0),
        }
    }
}

impl<F: ArchiveFs> ArchiveFs for FailingFs<F> {
    type Sink = F::Sink;
    fn create(&self, path: &str) -> Result<F::Sink, ArchiveError> {
        self.inner.create(path)
    }
    fn rename_no_replace(&self, from: &str, to: &str) -> Result<Renamed, ArchiveError> {
        self.renames.set(self.renames.get() + 1);
        if self.renames.get() == self.fail_rename_at.get() {
            return Err(ArchiveError::Io("injected crash".into()));
        }
        self.inner.rename_no_replace(from, to)
    }
    fn rename_replace(&self, from: &str, to: &str) -> Result<(), ArchiveError> {
        self.inner.rename_replace(from, to)
    }
    fn exists(&self, path: &str) -> Result<bool, ArchiveError> {
        self.inner.exists(path)
    }
    fn read(&self, path: &str) -> Result<Vec<u8>, ArchiveError> {
        self.inner.read(path)
    }
    fn list_files(&self, dir: &str) -> Result<Vec<FileEntry>, ArchiveError> {
        self.inner.list_files(dir)
    }
    fn delete(&self, path: &str) -> Result<(), ArchiveError> {
        self.inner.delete(path)
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// Keeps `FileSink` in scope for callers that write by hand.
pub fn write_file<F: ArchiveFs>(fs: &F, path: &str, bytes: &[u8]) {
    let mut s = fs.create(path).unwrap();
    s.write_all(bytes).unwrap();
    s.finish().unwrap();
}

/// Splits spans into relay batches; batch `i` has relay position `i + 1`.
pub fn batches(spans: &[Span], per_batch: usize) -> Vec<Vec<Span>> {
    spans.chunks(per_batch).map(<[Span]>::to_vec).collect()
}

/// How a feeding session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Runs to the end and commits.
    Completes,
    /// Stops after appending this many batches, without committing (the
    /// writer is then dropped, as in a crash).
    CrashAfter(usize),
    /// Commits after this many batches but "crashes" before acknowledging
    /// the relay: the returned acknowledged position stays behind.
    CrashBeforeAck(usize),
}

/// Plays the relay: appends the batches after the acknowledged position
/// `acked`, committing every `commit_every` batches and acknowledging what
/// each commit covers. Returns the acknowledged position at the end, or the
/// error that stopped the writer.
pub fn feed<F: ArchiveFs>(
    w: &mut blkkin_collector::archive::ArchiveWriter<F>,
    batches: &[Vec<Span>],
    mut acked: u64,
    commit_every: usize,
    stop: Stop,
) -> Result<u64, (u64, ArchiveError)> {
    let mut appended = 0;
    for (i, batch) in batches.iter().enumerate().skip(acked as usize) {
        w.append(i as u64 + 1, batch).map_err(|e| (acked, e))?;
        appended += 1;
        if stop == Stop::CrashAfter(appended) {
            return Ok(acked);
        }
        if appended % commit_every == 0 || stop == Stop::CrashBeforeAck(appended) {
            let token = w.commit().map_err(|e| (acked, e))?;
            if stop == Stop::CrashBeforeAck(appended) {
                return Ok(acked);
            }
            acked = token.position.unwrap_or(acked);
        }
    }
    let token = w.commit().map_err(|e| (acked, e))?;
    Ok(token.position.unwrap_or(acked))
}
