//! [`Store`]: spans in SQLite, queried with Zipkin's semantics.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::assemble::SpanLimits;
use crate::model::{Span, SpanKind};

use super::dependencies::{DependencyLink, DependencyLinker};
use super::query::QueryRequest;
use super::schema;
use super::span_ext::{normalize_trace_id, SpanExt};
use super::StoreError;

/// Where the database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A database file (created if absent), in WAL mode.
    File(PathBuf),
    /// A private in-memory database, gone when the [`Store`] is dropped.
    Memory,
}

/// Tunables of the embedded store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Traces whose newest span is older than this are deleted.
    pub retention: Duration,
    /// Upper bound on stored spans; the oldest traces go first beyond it.
    pub max_spans: u64,
    /// Spans written per transaction; larger inserts are split.
    pub batch_size: usize,
    /// Tag keys indexed for `/autocompleteValues`, like Zipkin's
    /// `AUTOCOMPLETE_KEYS`. `None` indexes every tag key (Zipkin indexes none
    /// by default).
    pub autocomplete_keys: Option<Vec<String>>,
    /// Read-only connections queries share (file databases only; WAL lets
    /// them read while the writer writes). Queries beyond this wait for a
    /// connection, so keep it above the query server's cap on heavy queries
    /// (see `ServerConfig::max_heavy_queries`): light queries such as
    /// `/api/v2/services` then always find one free.
    pub read_connections: usize,
    /// What one stored span may hold (the collector's caps, applied to
    /// posted spans and to the result of merging reports too).
    pub limits: SpanLimits,
}

/// The default number of read connections: one per core for heavy queries,
/// two more for light ones.
fn default_read_connections() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()) + 2
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            retention: Duration::from_secs(7 * 24 * 3600),
            max_spans: 10_000_000,
            batch_size: 1000,
            autocomplete_keys: None,
            read_connections: default_read_connections(),
            limits: SpanLimits::default(),
        }
    }
}

/// Counters of what the store did, including every span it refused or
/// deleted (nothing disappears silently).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreStats {
    /// Spans written as new rows.
    pub spans_inserted: u64,
    /// Spans merged into a row already stored under the same key.
    pub spans_merged: u64,
    /// Spans refused because they broke Zipkin's rules (ids); each is
    /// counted on its own, the valid spans of the same call are stored.
    pub spans_rejected: u64,
    /// Spans deleted by retention (age or size bound).
    pub spans_expired: u64,
    /// Traces deleted by retention.
    pub traces_expired: u64,
    /// Annotations dropped because their span held `limits.max_annotations`.
    pub annotations_dropped: u64,
    /// Tags dropped because their span held `limits.max_tags`.
    pub tags_dropped: u64,
    /// Annotation values, tag keys and values cut to `limits.max_value_bytes`.
    pub values_truncated: u64,
}

/// What one [`Store::insert`] call did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct InsertOutcome {
    /// Spans stored (inserted or merged).
    pub stored: usize,
    /// Spans refused as invalid (also counted in [`StoreStats::spans_rejected`]).
    pub rejected: usize,
    /// The first refused span: its index in the call and why.
    pub first_rejection: Option<(usize, String)>,
}

impl InsertOutcome {
    /// "span 3: invalid span: traceId ... is all zeros", naming the first
    /// refused span and how many more were refused, for logs and answers.
    pub fn rejection_text(&self) -> Option<String> {
        let (i, why) = self.first_rejection.as_ref()?;
        let more = match self.rejected {
            0 | 1 => String::new(),
            n => format!(" (and {} more invalid span(s))", n - 1),
        };
        Some(format!("span {i}: {why}{more}"))
    }
}

#[derive(Default)]
struct Counters {
    inserted: AtomicU64,
    merged: AtomicU64,
    rejected: AtomicU64,
    spans_expired: AtomicU64,
    traces_expired: AtomicU64,
    annotations_dropped: AtomicU64,
    tags_dropped: AtomicU64,
    values_truncated: AtomicU64,
}

struct Inner {
    writer: Mutex<Connection>,
    /// Connections for queries (file databases only: WAL lets them read
    /// while the writer writes). In memory, queries use the writer.
    readers: Vec<Mutex<Connection>>,
    /// Where the next query starts looking for a free reader.
    next_reader: AtomicU64,
    config: StoreConfig,
    counters: Counters,
}

/// The embedded span store. Cheap to clone; all clones share the database.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("config", &self.inner.config)
            .finish()
    }
}

/// Asks a running query to stop early (the query server sets it when the
/// query timeout expires, so a query nobody waits for frees its connection
/// and its slot). Cheap to clone; clones share the flag.
#[derive(Debug, Clone, Default)]
pub struct QueryCancel(Arc<AtomicBool>);

impl QueryCancel {
    /// Asks the query to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether [`QueryCancel::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.is_cancelled() {
            Err(StoreError::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// Epoch microseconds now.
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn kind_text(kind: Option<SpanKind>) -> &'static str {
    match kind {
        None => "",
        Some(SpanKind::Client) => "CLIENT",
        Some(SpanKind::Server) => "SERVER",
        Some(SpanKind::Producer) => "PRODUCER",
        Some(SpanKind::Consumer) => "CONSUMER",
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while holding the lock leaves SQLite consistent (transactions
    // roll back on drop), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Store {
    /// Opens (creating if needed) a store with the default configuration.
    pub fn open(location: StoreLocation) -> Result<Store, StoreError> {
        Store::open_with(location, StoreConfig::default())
    }

    /// Opens a database file with the default configuration.
    pub fn open_file(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        Store::open(StoreLocation::File(path.as_ref().to_path_buf()))
    }

    /// Opens a private in-memory store with the default configuration.
    pub fn open_in_memory() -> Result<Store, StoreError> {
        Store::open(StoreLocation::Memory)
    }

    /// Opens a store with `config`.
    pub fn open_with(location: StoreLocation, config: StoreConfig) -> Result<Store, StoreError> {
        let (writer, reader) = match &location {
            StoreLocation::Memory => (Connection::open_in_memory()?, None),
            StoreLocation::File(path) => {
                let w = Connection::open(path)?;
                // WAL: one writer and concurrent readers; NORMAL sync is
                // durable across process crashes, a power loss may lose the
                // last transactions.
                w.pragma_update(None, "journal_mode", "WAL")?;
                w.pragma_update(None, "synchronous", "NORMAL")?;
                (w, Some(path))
            }
        };
        writer.busy_timeout(Duration::from_secs(5))?;
        let version: i64 = writer.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version != 0 && version != schema::SCHEMA_VERSION {
            return Err(StoreError::SchemaVersion(version));
        }
        writer.execute_batch(schema::CREATE)?;
        writer.pragma_update(None, "user_version", schema::SCHEMA_VERSION)?;
        let mut readers = Vec::new();
        if let Some(path) = reader {
            for _ in 0..config.read_connections.max(1) {
                let r = Connection::open(path)?;
                r.busy_timeout(Duration::from_secs(5))?;
                readers.push(Mutex::new(r));
            }
        }
        Ok(Store {
            inner: Arc::new(Inner {
                writer: Mutex::new(writer),
                readers,
                next_reader: AtomicU64::new(0),
                config,
                counters: Counters::default(),
            }),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// What the store has done so far.
    pub fn stats(&self) -> StoreStats {
        let c = &self.inner.counters;
        StoreStats {
            spans_inserted: c.inserted.load(Ordering::Relaxed),
            spans_merged: c.merged.load(Ordering::Relaxed),
            spans_rejected: c.rejected.load(Ordering::Relaxed),
            spans_expired: c.spans_expired.load(Ordering::Relaxed),
            traces_expired: c.traces_expired.load(Ordering::Relaxed),
            annotations_dropped: c.annotations_dropped.load(Ordering::Relaxed),
            tags_dropped: c.tags_dropped.load(Ordering::Relaxed),
            values_truncated: c.values_truncated.load(Ordering::Relaxed),
        }
    }

    /// A free read connection (the first one not in use, from a rotating
    /// start), else waits for one; the writer for an in-memory store.
    fn read(&self) -> MutexGuard<'_, Connection> {
        let readers = &self.inner.readers;
        if readers.is_empty() {
            return lock(&self.inner.writer);
        }
        let start = self.inner.next_reader.fetch_add(1, Ordering::Relaxed) as usize;
        for i in 0..readers.len() {
            let r = &readers[(start + i) % readers.len()];
            match r.try_lock() {
                Ok(guard) => return guard,
                Err(std::sync::TryLockError::Poisoned(e)) => return e.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
        }
        lock(&readers[start % readers.len()])
    }

    /// Validates and stores spans, visible to queries when this returns.
    ///
    /// Each span is validated on its own: an invalid one (a zero or
    /// malformed id, say) is skipped and counted in
    /// [`StoreStats::spans_rejected`], and the valid spans of the call are
    /// stored anyway, so one bad span never costs its whole batch. Spans are
    /// written in transactions of at most `batch_size`. A span whose key
    /// (trace id, span id, kind, shared, local service) is already stored
    /// is merged into it, so re-sending is idempotent and late reports of a
    /// span complete it. An `Err` means the database failed (nothing of the
    /// failed transaction is stored); refused spans are in the outcome.
    pub fn insert(&self, spans: &[Span]) -> Result<InsertOutcome, StoreError> {
        let mut clean = Vec::with_capacity(spans.len());
        let mut outcome = InsertOutcome::default();
        for (i, s) in spans.iter().enumerate() {
            match s.clone().normalized() {
                Ok(mut s) => {
                    self.cap(&mut s);
                    clean.push(s);
                }
                Err(e) => {
                    outcome.rejected += 1;
                    outcome.first_rejection.get_or_insert((i, e.to_string()));
                }
            }
        }
        if outcome.rejected > 0 {
            self.inner
                .counters
                .rejected
                .fetch_add(outcome.rejected as u64, Ordering::Relaxed);
        }
        let mut conn = lock(&self.inner.writer);
        for chunk in clean.chunks(self.inner.config.batch_size.max(1)) {
            self.insert_batch(&mut conn, chunk)?;
            outcome.stored += chunk.len();
        }
        Ok(outcome)
    }

    fn insert_batch(&self, conn: &mut Connection, spans: &[Span]) -> Result<(), StoreError> {
        let arrival = now_us();
        let tx = conn.transaction()?;
        let (mut inserted, mut merged) = (0, 0);
        {
            let mut find = tx.prepare_cached(
                "SELECT pk, json FROM spans WHERE trace_id = ?1 AND id = ?2 AND kind = ?3
                 AND shared = ?4 AND local_service = ?5",
            )?;
            let mut add = tx.prepare_cached(
                "INSERT INTO spans (trace_id, id, parent_id, kind, shared, local_service,
                 remote_service, name, ts, duration, json)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?;
            let mut update = tx.prepare_cached(
                "UPDATE spans SET parent_id = ?2, remote_service = ?3, name = ?4, ts = ?5,
                 duration = ?6, json = ?7 WHERE pk = ?1",
            )?;
            let mut term = tx.prepare_cached(
                "INSERT OR IGNORE INTO terms (span_pk, trace_id, key, value, is_tag)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut trace = tx.prepare_cached(
                "INSERT INTO traces (trace_id, last_us) VALUES (?1, ?2)
                 ON CONFLICT (trace_id) DO UPDATE SET last_us = max(last_us, excluded.last_us)",
            )?;
            let mut complete = tx.prepare_cached(
                "INSERT INTO autocomplete (key, value, last_us) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key, value) DO UPDATE SET last_us = max(last_us, excluded.last_us)",
            )?;
            for span in spans {
                let kind = kind_text(span.kind);
                let shared = span.shared == Some(true);
                let local = span.local_service().unwrap_or("");
                let existing: Option<(i64, String)> = find
                    .query_row(params![span.trace_id, span.id, kind, shared, local], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .optional()?;
                let (pk, stored) = match existing {
                    Some((pk, json)) => {
                        let mut old: Span = serde_json::from_str(&json)?;
                        old.merge(span.clone());
                        self.cap(&mut old);
                        update.execute(params![
                            pk,
                            old.parent_id,
                            old.remote_service(),
                            old.name,
                            old.timestamp.map(to_i64),
                            old.duration.map(to_i64),
                            serde_json::to_string(&old)?,
                        ])?;
                        merged += 1;
                        (pk, old)
                    }
                    None => {
                        add.execute(params![
                            span.trace_id,
                            span.id,
                            span.parent_id,
                            kind,
                            shared,
                            local,
                            span.remote_service(),
                            span.name,
                            span.timestamp.map(to_i64),
                            span.duration.map(to_i64),
                            serde_json::to_string(span)?,
                        ])?;
                        inserted += 1;
                        (tx.last_insert_rowid(), span.clone())
                    }
                };
                for a in &stored.annotations {
                    term.execute(params![pk, stored.trace_id, a.value, "", false])?;
                }
                let seen = to_i64(stored.timestamp.unwrap_or(arrival));
                for (k, v) in &stored.tags {
                    term.execute(params![pk, stored.trace_id, k, v, true])?;
                    if self.autocompletes(k) {
                        complete.execute(params![k, v, seen])?;
                    }
                }
                trace.execute(params![stored.trace_id, seen])?;
            }
        }
        tx.commit()?;
        let c = &self.inner.counters;
        c.inserted.fetch_add(inserted, Ordering::Relaxed);
        c.merged.fetch_add(merged, Ordering::Relaxed);
        Ok(())
    }

    /// Holds `span` to the configured limits, counting what is cut.
    fn cap(&self, span: &mut Span) {
        let limits = &self.inner.config.limits;
        let c = &self.inner.counters;
        let count = |counter: &AtomicU64, n: usize| {
            if n > 0 {
                counter.fetch_add(n as u64, Ordering::Relaxed);
            }
        };
        // Annotations are sorted by time: the earliest are kept.
        let extra = span
            .annotations
            .len()
            .saturating_sub(limits.max_annotations);
        span.annotations.truncate(limits.max_annotations);
        count(&c.annotations_dropped, extra);
        let extra = span.tags.len().saturating_sub(limits.max_tags);
        if extra > 0 {
            // Keys in order: the first `max_tags` are kept.
            let dropped: Vec<String> = span.tags.keys().skip(limits.max_tags).cloned().collect();
            for k in dropped {
                span.tags.remove(&k);
                span.integer_tags.remove(&k);
            }
        }
        count(&c.tags_dropped, extra);
        let max = limits.max_value_bytes;
        let mut cut = 0;
        for a in &mut span.annotations {
            cut += usize::from(cut_to(&mut a.value, max));
        }
        if span
            .tags
            .iter()
            .any(|(k, v)| k.len() > max || v.len() > max)
        {
            let tags = std::mem::take(&mut span.tags);
            for (mut k, mut v) in tags {
                let key_cut = cut_to(&mut k, max);
                cut += usize::from(key_cut) + usize::from(cut_to(&mut v, max));
                if key_cut {
                    span.integer_tags.remove(&k);
                }
                span.tags.insert(k, v);
            }
        }
        count(&c.values_truncated, cut);
    }

    fn autocompletes(&self, key: &str) -> bool {
        match &self.inner.config.autocomplete_keys {
            None => true,
            Some(keys) => keys.iter().any(|k| k == key),
        }
    }

    /// Local service names, sorted.
    pub fn service_names(&self) -> Result<Vec<String>, StoreError> {
        self.strings(
            "SELECT DISTINCT local_service FROM spans WHERE local_service <> '' ORDER BY 1",
            &[],
        )
    }

    /// Span names recorded by `service` (matched lower-cased), sorted.
    pub fn span_names(&self, service: &str) -> Result<Vec<String>, StoreError> {
        if service.is_empty() {
            return Ok(Vec::new());
        }
        self.strings(
            "SELECT DISTINCT name FROM spans WHERE local_service = ?1 AND name IS NOT NULL
             ORDER BY 1",
            &[&service.to_lowercase()],
        )
    }

    /// Remote services `service` (matched lower-cased) talked to, sorted.
    pub fn remote_service_names(&self, service: &str) -> Result<Vec<String>, StoreError> {
        if service.is_empty() {
            return Ok(Vec::new());
        }
        self.strings(
            "SELECT DISTINCT remote_service FROM spans WHERE local_service = ?1
             AND remote_service IS NOT NULL ORDER BY 1",
            &[&service.to_lowercase()],
        )
    }

    /// Tag keys offered for autocompletion: the configured keys, or every
    /// indexed key when none are configured.
    pub fn autocomplete_keys(&self) -> Result<Vec<String>, StoreError> {
        match &self.inner.config.autocomplete_keys {
            Some(keys) => Ok(keys.clone()),
            None => self.strings("SELECT DISTINCT key FROM autocomplete ORDER BY 1", &[]),
        }
    }

    /// Values seen for tag `key`, sorted.
    pub fn autocomplete_values(&self, key: &str) -> Result<Vec<String>, StoreError> {
        self.strings(
            "SELECT value FROM autocomplete WHERE key = ?1 ORDER BY 1",
            &[&key],
        )
    }

    fn strings(&self, sql: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<String>, StoreError> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt.query_map(args, |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The spans of one trace (16 or 32 hex characters; empty when absent).
    pub fn trace(&self, trace_id: &str) -> Result<Vec<Span>, StoreError> {
        let id = normalize_trace_id(trace_id)?;
        let conn = self.read();
        load_trace(&conn, &id)
    }

    /// Several traces at once, in the order asked, absent ones left out.
    pub fn traces_by_id(&self, trace_ids: &[String]) -> Result<Vec<Vec<Span>>, StoreError> {
        let mut ids = Vec::new();
        for t in trace_ids {
            let id = normalize_trace_id(t)?;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        let conn = self.read();
        let mut out = Vec::new();
        for id in ids {
            let spans = load_trace(&conn, &id)?;
            if !spans.is_empty() {
                out.push(spans);
            }
        }
        Ok(out)
    }

    /// Traces matching `q` (see [`QueryRequest::test`]), newest first: the
    /// traces with a span in the window are ordered by their newest span
    /// timestamp in it (milliseconds), then trace id, as Zipkin does.
    ///
    /// Spans are walked newest first on the timestamp index and the walk
    /// stops once `limit` traces matched, so a query costs about what it
    /// returns rather than the size of the window.
    pub fn traces(&self, q: &QueryRequest) -> Result<Vec<Vec<Span>>, StoreError> {
        self.traces_with(q, &QueryCancel::default())
    }

    /// [`Store::traces`], giving up with [`StoreError::Cancelled`] soon
    /// after `cancel` is set (checked between rows and traces).
    pub fn traces_with(
        &self,
        q: &QueryRequest,
        cancel: &QueryCancel,
    ) -> Result<Vec<Vec<Span>>, StoreError> {
        // SQL narrows candidates with necessary conditions; `q.test` decides.
        // Each condition is an uncorrelated `trace_id IN (subquery)`, which
        // SQLite evaluates once (a correlated EXISTS could pick the service
        // index and rescan it per span). `@` marks the next bound value.
        let mut sql =
            String::from("SELECT s.trace_id, s.ts FROM spans s WHERE s.ts >= ?1 AND s.ts < ?2");
        let mut args: Vec<Box<dyn rusqlite::ToSql>> = vec![
            Box::new(to_i64(q.begin_us())),
            Box::new(to_i64(q.end_ts.saturating_add(1).saturating_mul(1000))),
        ];
        let mut within = |cond: &str, values: Vec<String>| {
            let mut c = cond.to_string();
            for v in values {
                args.push(Box::new(v));
                c = c.replacen('@', &format!("?{}", args.len()), 1);
            }
            sql.push_str(&format!(" AND s.trace_id IN ({c})"));
        };
        let svc = q.service_name.clone();
        let svc_cond = if svc.is_some() {
            " AND x.local_service = @"
        } else {
            ""
        };
        let with_svc = |mut v: Vec<String>| {
            v.extend(svc.clone());
            v
        };
        if let Some(s) = &q.service_name {
            within(
                "SELECT x.trace_id FROM spans x WHERE x.local_service = @",
                vec![s.clone()],
            );
        }
        if let Some(n) = &q.span_name {
            within(
                &format!("SELECT x.trace_id FROM spans x WHERE x.name = @{svc_cond}"),
                with_svc(vec![n.clone()]),
            );
        }
        if let Some(r) = &q.remote_service_name {
            within(
                &format!("SELECT x.trace_id FROM spans x WHERE x.remote_service = @{svc_cond}"),
                with_svc(vec![r.clone()]),
            );
        }
        if let Some(min) = q.min_duration {
            let max = q.max_duration.unwrap_or(u64::MAX / 2);
            within(
                &format!(
                    "SELECT x.trace_id FROM spans x WHERE x.duration BETWEEN {} AND {}{svc_cond}",
                    to_i64(min),
                    to_i64(max)
                ),
                with_svc(vec![]),
            );
        }
        for (key, value) in &q.annotation_query {
            if value.is_empty() {
                within(
                    "SELECT t.trace_id FROM terms t WHERE t.key = @",
                    vec![key.clone()],
                );
            } else {
                within(
                    "SELECT t.trace_id FROM terms t WHERE t.key = @ AND t.value = @
                     AND t.is_tag = 1",
                    vec![key.clone(), value.clone()],
                );
            }
        }
        sql.push_str(" ORDER BY s.ts DESC");

        let conn = self.read();
        let mut stmt = conn.prepare(&sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(args.iter()))?;
        let mut out = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        // Traces first seen in the current millisecond: Zipkin orders those
        // by trace id.
        let mut group: Vec<String> = Vec::new();
        let mut group_ms = None;
        loop {
            cancel.check()?;
            let row = rows.next()?;
            let (id, ms) = match row {
                Some(r) => (
                    Some(r.get::<_, String>(0)?),
                    Some(r.get::<_, i64>(1)? / 1000),
                ),
                None => (None, None),
            };
            if ms != group_ms || id.is_none() {
                group.sort();
                for trace_id in group.drain(..) {
                    let spans = load_trace(&conn, &trace_id)?;
                    if q.test(&spans) {
                        out.push(spans);
                        if out.len() >= q.limit {
                            return Ok(out);
                        }
                    }
                }
                group_ms = ms;
            }
            let Some(id) = id else { return Ok(out) };
            if seen.insert(id.clone()) {
                group.push(id);
            }
        }
    }

    /// Service dependency links from traces with a span in the window
    /// `[end_ts - lookback, end_ts]` (epoch milliseconds).
    pub fn dependencies(
        &self,
        end_ts: u64,
        lookback: u64,
    ) -> Result<Vec<DependencyLink>, StoreError> {
        self.dependencies_with(end_ts, lookback, &QueryCancel::default())
    }

    /// [`Store::dependencies`], giving up with [`StoreError::Cancelled`]
    /// soon after `cancel` is set (checked between rows and traces).
    pub fn dependencies_with(
        &self,
        end_ts: u64,
        lookback: u64,
        cancel: &QueryCancel,
    ) -> Result<Vec<DependencyLink>, StoreError> {
        if end_ts == 0 {
            return Err(StoreError::InvalidQuery("endTs <= 0".into()));
        }
        if lookback == 0 {
            return Err(StoreError::InvalidQuery("lookback <= 0".into()));
        }
        let begin = to_i64(end_ts.saturating_sub(lookback).saturating_mul(1000));
        let end = to_i64(end_ts.saturating_add(1).saturating_mul(1000));
        let conn = self.read();
        // Row by row (not DISTINCT in SQL, which sorts the whole window
        // before the first row) so a cancelled query stops promptly.
        let mut stmt =
            conn.prepare_cached("SELECT trace_id FROM spans WHERE ts >= ?1 AND ts < ?2")?;
        let mut rows = stmt.query(params![begin, end])?;
        let mut seen: HashSet<String> = HashSet::new();
        let mut linker = DependencyLinker::default();
        while let Some(row) = rows.next()? {
            cancel.check()?;
            let id: String = row.get(0)?;
            if seen.contains(&id) {
                continue;
            }
            linker.put_trace(&load_trace(&conn, &id)?);
            seen.insert(id);
        }
        Ok(linker.links())
    }

    /// Deletes traces whose newest span is older than the retention period
    /// (relative to `now_us`), then the oldest traces while more than
    /// `max_spans` spans are stored. Returns (traces, spans) deleted.
    pub fn enforce_retention(&self, now_us: u64) -> Result<(u64, u64), StoreError> {
        let retention = self.inner.config.retention.as_micros() as u64;
        let cutoff = to_i64(now_us.saturating_sub(retention));
        let (mut traces, mut spans) = (0u64, 0u64);
        // Chunks of traces, each in its own transaction and lock hold, so
        // inserts and queries interleave with a long clean-up.
        while let Some((t, s)) = self.expire_chunk(
            "SELECT trace_id FROM traces WHERE last_us < ?1 ORDER BY last_us LIMIT 500",
            cutoff,
        )? {
            traces += t;
            spans += s;
        }
        lock(&self.inner.writer).execute(
            "DELETE FROM autocomplete WHERE last_us < ?1",
            params![cutoff],
        )?;
        let max = to_i64(self.inner.config.max_spans);
        loop {
            let count: i64 =
                lock(&self.inner.writer)
                    .query_row("SELECT count(*) FROM spans", [], |r| r.get(0))?;
            if count <= max {
                break;
            }
            // Never more traces than spans in excess (a trace has at least one).
            let Some((t, s)) = self.expire_chunk(
                "SELECT trace_id FROM traces ORDER BY last_us LIMIT ?1",
                (count - max).min(500),
            )?
            else {
                break;
            };
            traces += t;
            spans += s;
        }
        let c = &self.inner.counters;
        c.traces_expired.fetch_add(traces, Ordering::Relaxed);
        c.spans_expired.fetch_add(spans, Ordering::Relaxed);
        Ok((traces, spans))
    }

    /// Deletes the traces `select` (one integer parameter) names; `None`
    /// when it names none, else (traces, spans) deleted.
    fn expire_chunk(&self, select: &str, arg: i64) -> Result<Option<(u64, u64)>, StoreError> {
        let mut conn = lock(&self.inner.writer);
        let ids: Vec<String> = {
            let mut stmt = conn.prepare_cached(select)?;
            let rows = stmt.query_map(params![arg], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        if ids.is_empty() {
            return Ok(None);
        }
        let spans = delete_traces(&mut conn, &ids)?;
        Ok(Some((ids.len() as u64, spans)))
    }

    /// Number of spans stored.
    pub fn span_count(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .read()
            .query_row("SELECT count(*) FROM spans", [], |r| r.get(0))?;
        Ok(n as u64)
    }

    /// Checks the database answers (for `/health`).
    pub fn check(&self) -> Result<(), StoreError> {
        self.read().query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }
}

/// Cuts `text` to at most `max` bytes at a character boundary; whether it
/// was cut.
fn cut_to(text: &mut String, max: usize) -> bool {
    if text.len() <= max {
        return false;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    true
}

fn load_trace(conn: &Connection, trace_id: &str) -> Result<Vec<Span>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT json FROM spans WHERE trace_id = ?1 ORDER BY ts IS NOT NULL, ts, id, pk",
    )?;
    let rows = stmt.query_map(params![trace_id], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for json in rows {
        out.push(serde_json::from_str(&json?)?);
    }
    Ok(out)
}

fn delete_traces(conn: &mut Connection, ids: &[String]) -> Result<u64, StoreError> {
    let tx = conn.transaction()?;
    let mut spans = 0;
    for id in ids {
        spans += tx.execute("DELETE FROM spans WHERE trace_id = ?1", params![id])? as u64;
        tx.execute("DELETE FROM terms WHERE trace_id = ?1", params![id])?;
        tx.execute("DELETE FROM traces WHERE trace_id = ?1", params![id])?;
    }
    tx.commit()?;
    Ok(spans)
}
