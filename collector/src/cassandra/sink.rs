//! The Cassandra sink: one driver session (token-aware default policy),
//! prepared statements, a semaphore bounding statements in flight, and the
//! dependency-link store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::ExecutionError;
use scylla::serialize::row::SerializeRow;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency};
use scylla::value::{CqlDate, CqlTimeuuid, CqlValue, MaybeUnset, Row};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::links::{self, DayLinks, LinkCounts, TraceBuffer};
use super::rows::{self, SpanRow, TraceByServiceRemoteService, TraceByServiceSpan};
use super::{schema, warnings, CassandraConfig, CassandraError};
use crate::model::Span;

/// The `span` insert's columns, in the bind order of `SpanRow::values`.
const SPAN_COLUMNS: &str = "trace_id,trace_id_high,ts_uuid,parent_id,id,kind,span,ts,duration,\
l_ep,r_ep,annotations,tags,debug,shared,l_service,annotation_query";

/// How long a `(service, span)`-style entry is not rewritten after a
/// successful write, and how many are remembered (Zipkin's autocomplete
/// TTL and cardinality defaults).
const ENTRY_TTL: Duration = Duration::from_secs(3600);
const ENTRY_CARDINALITY: usize = 20_000;

/// Compare-and-set attempts for one dependency edge before giving up until
/// the next flush.
const LINK_CAS_ATTEMPTS: usize = 16;

/// The small two-column index tables, deduplicated client side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum EntryTable {
    ServiceSpan,
    ServiceRemoteService,
    AutocompleteTags,
}

struct Statements {
    span: PreparedStatement,
    by_span: PreparedStatement,
    by_remote: PreparedStatement,
    service_span: PreparedStatement,
    service_remote: PreparedStatement,
    autocomplete: PreparedStatement,
    link_select: PreparedStatement,
    link_insert: PreparedStatement,
    link_update: PreparedStatement,
}

impl Statements {
    async fn prepare(session: &Session, ks: &str) -> Result<Statements, CassandraError> {
        let prepare =
            |cql: String, idempotent: bool| async move {
                let mut p = session.prepare(cql.as_str()).await.map_err(|source| {
                    CassandraError::Prepare {
                        statement: cql.clone(),
                        source: Box::new(source),
                    }
                })?;
                p.set_is_idempotent(idempotent);
                Ok::<_, CassandraError>(p)
            };
        // Without search the last two columns are bound but unset; they
        // exist anyway, as `schema::ensure` requires the whole schema.
        let marks = vec!["?"; 17].join(",");
        let mut link_select = prepare(
            format!("SELECT calls, errors FROM {ks}.dependency WHERE day = ? AND parent = ? AND child = ?"),
            true,
        )
        .await?;
        link_select.set_consistency(Consistency::LocalSerial);
        Ok(Statements {
            span: prepare(
                format!("INSERT INTO {ks}.span ({SPAN_COLUMNS}) VALUES ({marks})"),
                true,
            )
            .await?,
            by_span: prepare(
                format!("INSERT INTO {ks}.trace_by_service_span (service,span,bucket,ts,trace_id,duration) VALUES (?,?,?,?,?,?)"),
                true,
            )
            .await?,
            by_remote: prepare(
                format!("INSERT INTO {ks}.trace_by_service_remote_service (service,remote_service,bucket,ts,trace_id) VALUES (?,?,?,?,?)"),
                true,
            )
            .await?,
            service_span: prepare(
                format!("INSERT INTO {ks}.span_by_service (service,span) VALUES (?,?)"),
                true,
            )
            .await?,
            service_remote: prepare(
                format!("INSERT INTO {ks}.remote_service_by_service (service,remote_service) VALUES (?,?)"),
                true,
            )
            .await?,
            autocomplete: prepare(
                format!("INSERT INTO {ks}.autocomplete_tags (key,value) VALUES (?,?)"),
                true,
            )
            .await?,
            link_select,
            // Lightweight transactions: not idempotent, never retried blindly.
            link_insert: prepare(
                format!("INSERT INTO {ks}.dependency (day,parent,child,calls,errors) VALUES (?,?,?,?,?) IF NOT EXISTS"),
                false,
            )
            .await?,
            link_update: prepare(
                format!("UPDATE {ks}.dependency SET calls = ?, errors = ? WHERE day = ? AND parent = ? AND child = ? IF calls = ? AND errors = ?"),
                false,
            )
            .await?,
        })
    }
}

/// Rows of one partition written together: an unlogged batch when more
/// than one (Cassandra applies a single-partition batch as one mutation, so
/// it is as idempotent as its inserts and much cheaper than separate
/// requests).
const MAX_BATCH_ROWS: usize = 16;

/// One request of a write, owning its values.
enum Write {
    /// Rows of one trace in `span` (partition key `trace_id`).
    Spans(Vec<SpanRow>),
    /// Rows of one `(service, span, bucket)` partition.
    BySpan(Vec<TraceByServiceSpan>),
    /// Rows of one `(service, remote_service, bucket)` partition.
    ByRemote(Vec<TraceByServiceRemoteService>),
    Entry(EntryTable, String, String),
}

fn by_span_values(r: &TraceByServiceSpan) -> (&str, &str, i32, CqlTimeuuid, &str, MaybeUnset<i64>) {
    let duration = match r.duration_ms {
        0 => MaybeUnset::Unset,
        d => MaybeUnset::Set(i64::try_from(d).unwrap_or(i64::MAX)),
    };
    (&r.service, &r.span, r.bucket, r.ts, &r.trace_id, duration)
}

fn by_remote_values(r: &TraceByServiceRemoteService) -> (&str, &str, i32, CqlTimeuuid, &str) {
    (&r.service, &r.remote_service, r.bucket, r.ts, &r.trace_id)
}

/// Runs `statement` once per value row: one request, batched when several.
async fn execute_rows<V: SerializeRow>(
    session: &Session,
    statement: &PreparedStatement,
    mut values: Vec<V>,
) -> Result<(), ExecutionError> {
    if values.len() == 1 {
        let v = values.pop().expect("one row");
        let result = session.execute_unpaged(statement, v).await?;
        warnings::log(&result, statement.get_statement());
        return Ok(());
    }
    let mut batch = Batch::new(BatchType::Unlogged);
    for _ in 0..values.len() {
        batch.append_statement(statement.clone());
    }
    batch.set_is_idempotent(true);
    let result = session.batch(&batch, values).await?;
    warnings::log(&result, statement.get_statement());
    Ok(())
}

impl Write {
    async fn run(&self, session: &Session, st: &Statements) -> Result<(), ExecutionError> {
        match self {
            Write::Spans(rows) => {
                execute_rows(
                    session,
                    &st.span,
                    rows.iter().map(SpanRow::values).collect(),
                )
                .await
            }
            Write::BySpan(rows) => {
                execute_rows(
                    session,
                    &st.by_span,
                    rows.iter().map(by_span_values).collect(),
                )
                .await
            }
            Write::ByRemote(rows) => {
                let values = rows.iter().map(by_remote_values).collect();
                execute_rows(session, &st.by_remote, values).await
            }
            Write::Entry(table, k, v) => {
                let p = match table {
                    EntryTable::ServiceSpan => &st.service_span,
                    EntryTable::ServiceRemoteService => &st.service_remote,
                    EntryTable::AutocompleteTags => &st.autocomplete,
                };
                let result = session.execute_unpaged(p, (k, v)).await?;
                warnings::log(&result, p.get_statement());
                Ok(())
            }
        }
    }
}

/// Groups rows by partition key (first-seen order, rows in order) and cuts
/// each group into requests of at most [`MAX_BATCH_ROWS`].
fn partition_groups<K: Eq + std::hash::Hash, R>(
    rows: impl IntoIterator<Item = R>,
    key: impl Fn(&R) -> K,
) -> Vec<Vec<R>> {
    let mut groups: Vec<Vec<R>> = Vec::new();
    let mut index: HashMap<K, usize> = HashMap::new();
    for r in rows {
        let i = *index.entry(key(&r)).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[i].push(r);
    }
    let mut out = Vec::with_capacity(groups.len());
    for mut g in groups {
        while g.len() > MAX_BATCH_ROWS {
            let rest = g.split_off(MAX_BATCH_ROWS);
            out.push(std::mem::replace(&mut g, rest));
        }
        out.push(g);
    }
    out
}

/// Remembers recently written index entries so hot `(service, span)` pairs
/// are not rewritten with every span (Zipkin's `DelayLimiter`).
#[derive(Default)]
struct EntryCache {
    until: HashMap<(EntryTable, String, String), Instant>,
}

impl EntryCache {
    /// True when the entry should be written now (and marks it written).
    fn should_write(&mut self, key: &(EntryTable, String, String), now: Instant) -> bool {
        if self.until.get(key).is_some_and(|t| *t > now) {
            return false;
        }
        if self.until.len() >= ENTRY_CARDINALITY {
            self.until.retain(|_, t| *t > now);
        }
        if self.until.len() < ENTRY_CARDINALITY {
            self.until.insert(key.clone(), now + ENTRY_TTL);
        }
        true
    }

    fn forget(&mut self, key: &(EntryTable, String, String)) {
        self.until.remove(key);
    }
}

/// What the linker holds between writes.
struct LinkState {
    buffer: TraceBuffer,
    /// Counts not yet added to the `dependency` table.
    pending: DayLinks,
}

/// Counters of a [`CassandraSink`], for the collector's metrics.
#[derive(Debug, Default)]
pub struct CassandraStats {
    /// Spans whose rows were all written.
    pub spans_written: AtomicU64,
    /// Write calls that failed (their spans were not acknowledged).
    pub writes_failed: AtomicU64,
    /// Requests (a statement or a single-partition batch) that failed.
    pub statements_failed: AtomicU64,
    /// Traces linked before their window passed, because the link buffer was full.
    pub traces_linked_early: AtomicU64,
    /// Traces without any timestamp, which no day can hold.
    pub traces_unlinked: AtomicU64,
    /// Dependency edges added to the `dependency` table.
    pub links_stored: AtomicU64,
    /// Failed attempts to store dependency edges (they stay pending).
    pub link_store_failures: AtomicU64,
}

/// Writes spans into Zipkin's Cassandra keyspace; see the module docs.
pub struct CassandraSink {
    session: Arc<Session>,
    statements: Arc<Statements>,
    config: CassandraConfig,
    permits: Arc<Semaphore>,
    entries: Mutex<EntryCache>,
    links: tokio::sync::Mutex<LinkState>,
    stats: CassandraStats,
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl CassandraSink {
    /// Opens a session to the contact points, creates or validates the
    /// schema (per [`CassandraConfig::ensure_schema`]) and prepares every
    /// statement. Fails with [`CassandraError::Connect`] while no contact
    /// point answers; the caller decides when to try again.
    pub async fn connect(config: CassandraConfig) -> Result<CassandraSink, CassandraError> {
        schema::check_keyspace(&config.keyspace)?;
        if config.contact_points.is_empty() {
            return Err(CassandraError::Config("no contact points".into()));
        }
        if config.max_in_flight == 0 {
            return Err(CassandraError::Config(
                "max_in_flight must be at least 1".into(),
            ));
        }
        let profile = ExecutionProfile::builder()
            .consistency(config.consistency)
            .serial_consistency(Some(SerialConsistency::LocalSerial))
            .request_timeout(Some(config.request_timeout))
            .build();
        let mut builder = SessionBuilder::new()
            .known_nodes(&config.contact_points)
            .connection_timeout(config.connect_timeout)
            .default_execution_profile_handle(profile.into_handle());
        if let Some(tls) = &config.tls {
            builder = builder.tls_context(Some(tls.context()?));
        }
        if let Some((user, password)) = &config.credentials {
            builder = builder.user(user, password);
        }
        let session = builder
            .build()
            .await
            .map_err(|source| CassandraError::Connect {
                contact_points: config.contact_points.join(","),
                source: Box::new(source),
            })?;
        schema::ensure(
            &session,
            &config.keyspace,
            &config.replication,
            config.ensure_schema,
        )
        .await?;
        let statements = Statements::prepare(&session, &config.keyspace).await?;
        Ok(CassandraSink {
            session: Arc::new(session),
            statements: Arc::new(statements),
            permits: Arc::new(Semaphore::new(config.max_in_flight)),
            entries: Mutex::new(EntryCache::default()),
            links: tokio::sync::Mutex::new(LinkState {
                buffer: TraceBuffer::new(config.link_window, config.link_buffer_spans),
                pending: DayLinks::new(),
            }),
            config,
            stats: CassandraStats::default(),
        })
    }

    /// The sink's counters.
    pub fn stats(&self) -> &CassandraStats {
        &self.stats
    }

    /// Spans held for linking and dependency edges not yet stored.
    pub async fn link_backlog(&self) -> (usize, usize) {
        let state = self.links.lock().await;
        (state.buffer.len(), state.pending.len())
    }

    /// Writes the spans' rows; `Ok` once Cassandra acknowledged every
    /// statement at the configured consistency. On `Err` some rows may be
    /// written: writing the same spans again is safe (they overwrite
    /// themselves). Spans of acknowledged writes feed the dependency links;
    /// storing those never fails a write (see [`Self::flush_links`]).
    pub async fn write(&self, spans: &[Span]) -> Result<(), CassandraError> {
        if spans.is_empty() {
            return Ok(());
        }
        let writes = self.plan(spans);
        let total = writes.len();
        let mut tasks = JoinSet::new();
        for w in writes {
            // Bounded: at most max_in_flight statements run at once, over
            // every concurrent write of this sink.
            let permit = Arc::clone(&self.permits)
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let session = Arc::clone(&self.session);
            let st = Arc::clone(&self.statements);
            tasks.spawn(async move {
                let r = w.run(&session, &st).await;
                drop(permit);
                (w, r)
            });
        }
        let mut failed = 0;
        let mut first = None;
        while let Some(joined) = tasks.join_next().await {
            let (w, r) = match joined {
                Ok(x) => x,
                Err(e) => {
                    failed += 1;
                    first.get_or_insert_with(|| e.to_string());
                    continue;
                }
            };
            if let Err(e) = r {
                failed += 1;
                first.get_or_insert_with(|| e.to_string());
                if let Write::Entry(t, k, v) = w {
                    self.entries_lock().forget(&(t, k, v));
                }
            }
        }
        if failed > 0 {
            self.stats.writes_failed.fetch_add(1, Relaxed);
            self.stats
                .statements_failed
                .fetch_add(failed as u64, Relaxed);
            return Err(CassandraError::Write {
                failed,
                total,
                first: first.unwrap_or_default(),
            });
        }
        self.stats
            .spans_written
            .fetch_add(spans.len() as u64, Relaxed);
        let mut state = self.links.lock().await;
        let mut early = 0;
        let due = state.buffer.add(spans, Instant::now(), &mut early);
        self.stats.traces_linked_early.fetch_add(early, Relaxed);
        self.link(&mut state, due);
        if !state.pending.is_empty() {
            // Failures are counted and the counts stay pending.
            let _ = self.store_links(&mut state).await;
        }
        Ok(())
    }

    /// Links the buffered traces that have been quiet for the linking window
    /// (called on a timer, so links do not wait for the next write) and
    /// stores the pending counts; `Err` leaves them pending.
    pub async fn link_due(&self) -> Result<(), CassandraError> {
        let mut state = self.links.lock().await;
        let mut early = 0;
        let due = state.buffer.add(&[], Instant::now(), &mut early);
        self.stats.traces_linked_early.fetch_add(early, Relaxed);
        self.link(&mut state, due);
        if state.pending.is_empty() {
            return Ok(());
        }
        self.store_links(&mut state).await
    }

    /// Links every buffered trace now and stores all pending dependency
    /// counts; `Err` leaves the counts pending for the next attempt.
    pub async fn flush_links(&self) -> Result<(), CassandraError> {
        let mut state = self.links.lock().await;
        let due = state.buffer.drain();
        self.link(&mut state, due);
        self.store_links(&mut state).await
    }

    fn entries_lock(&self) -> std::sync::MutexGuard<'_, EntryCache> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The statements for `spans`, in Zipkin's order: spans, then indexes.
    fn plan(&self, spans: &[Span]) -> Vec<Write> {
        let now = now_millis();
        let instant = Instant::now();
        let mut span_rows = Vec::with_capacity(spans.len());
        let mut by_span = Vec::with_capacity(spans.len() * 2);
        let mut by_remote = Vec::new();
        let mut entries = Vec::new();
        for s in spans {
            let r = rows::span_rows(
                s,
                now,
                self.config.strict_trace_id,
                self.config.search_enabled,
                &self.config.autocomplete_keys,
            );
            span_rows.extend(r.span);
            by_span.extend(r.trace_by_service_span);
            by_remote.extend(r.trace_by_service_remote_service);
            entries.extend(r.service_span.map(|(k, v)| (EntryTable::ServiceSpan, k, v)));
            entries.extend(
                r.service_remote_service
                    .map(|(k, v)| (EntryTable::ServiceRemoteService, k, v)),
            );
            entries.extend(
                r.autocomplete_tags
                    .into_iter()
                    .map(|(k, v)| (EntryTable::AutocompleteTags, k, v)),
            );
        }
        // Zipkin's order: spans, then indexes.
        let mut writes = Vec::with_capacity(spans.len());
        writes.extend(
            partition_groups(span_rows, |r| r.trace_id.clone())
                .into_iter()
                .map(Write::Spans),
        );
        writes.extend(
            partition_groups(by_span, |r| (r.service.clone(), r.span.clone(), r.bucket))
                .into_iter()
                .map(Write::BySpan),
        );
        writes.extend(
            partition_groups(by_remote, |r| {
                (r.service.clone(), r.remote_service.clone(), r.bucket)
            })
            .into_iter()
            .map(Write::ByRemote),
        );
        let mut cache = self.entries_lock();
        for e in entries {
            if cache.should_write(&e, instant) {
                writes.push(Write::Entry(e.0, e.1, e.2));
            }
        }
        writes
    }

    fn link(&self, state: &mut LinkState, traces: Vec<Vec<Span>>) {
        let mut counts = DayLinks::new();
        for t in traces {
            match links::trace_day(&t) {
                Some(day) => links::link_trace(&t, day, &mut counts),
                None => {
                    self.stats.traces_unlinked.fetch_add(1, Relaxed);
                }
            }
        }
        links::merge_links(&mut state.pending, counts);
    }

    /// Adds each pending edge's counts to its `dependency` row with a
    /// compare-and-set (lightweight transaction), so several collectors
    /// adding to the same row never lose an update.
    async fn store_links(&self, state: &mut LinkState) -> Result<(), CassandraError> {
        let mut last_error = None;
        let pending = std::mem::take(&mut state.pending);
        for ((day, parent, child), delta) in pending {
            match self.add_link(day, &parent, &child, delta).await {
                Ok(()) => {
                    self.stats.links_stored.fetch_add(1, Relaxed);
                }
                Err(e) => {
                    self.stats.link_store_failures.fetch_add(1, Relaxed);
                    last_error = Some(e);
                    let p = state.pending.entry((day, parent, child)).or_default();
                    p.calls += delta.calls;
                    p.errors += delta.errors;
                }
            }
        }
        match last_error {
            None => Ok(()),
            Some(reason) => Err(CassandraError::Dependency {
                pending: state.pending.len(),
                reason,
            }),
        }
    }

    async fn add_link(
        &self,
        day: u32,
        parent: &str,
        child: &str,
        delta: LinkCounts,
    ) -> Result<(), String> {
        let st = &self.statements;
        let date = CqlDate((1u32 << 31).wrapping_add(day));
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        for _ in 0..LINK_CAS_ATTEMPTS {
            let current = self
                .session
                .execute_unpaged(&st.link_select, (date, parent, child))
                .await
                .map_err(|e| e.to_string())?
                .into_rows_result()
                .map_err(|e| e.to_string())?
                .maybe_first_row::<(Option<i64>, Option<i64>)>()
                .map_err(|e| e.to_string())?;
            let result = match current {
                None => {
                    self.session
                        .execute_unpaged(
                            &st.link_insert,
                            (date, parent, child, count(delta.calls), count(delta.errors)),
                        )
                        .await
                }
                Some((calls, errors)) => {
                    let (calls, errors) = (calls.unwrap_or(0), errors.unwrap_or(0));
                    self.session
                        .execute_unpaged(
                            &st.link_update,
                            (
                                calls.saturating_add(count(delta.calls)),
                                errors.saturating_add(count(delta.errors)),
                                date,
                                parent,
                                child,
                                calls,
                                errors,
                            ),
                        )
                        .await
                }
            }
            .map_err(|e| e.to_string())?;
            warnings::log(&result, "dependency link upsert");
            let row = result
                .into_rows_result()
                .map_err(|e| e.to_string())?
                .maybe_first_row::<Row>()
                .map_err(|e| e.to_string())?;
            let applied = matches!(
                row.and_then(|r| r.columns.into_iter().next().flatten()),
                Some(CqlValue::Boolean(true))
            );
            if applied {
                return Ok(());
            }
        }
        Err(format!(
            "{parent} -> {child}: row kept changing under {LINK_CAS_ATTEMPTS} compare-and-set attempts"
        ))
    }
}

/// [`CassandraSink`] for synchronous callers: owns a small runtime.
pub struct BlockingCassandraSink {
    runtime: tokio::runtime::Runtime,
    sink: CassandraSink,
}

impl BlockingCassandraSink {
    /// [`CassandraSink::connect`], blocking.
    pub fn connect(config: CassandraConfig) -> Result<Self, CassandraError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(CassandraError::Runtime)?;
        let sink = runtime.block_on(CassandraSink::connect(config))?;
        Ok(BlockingCassandraSink { runtime, sink })
    }

    /// [`CassandraSink::write`], blocking.
    pub fn write(&self, spans: &[Span]) -> Result<(), CassandraError> {
        self.runtime.block_on(self.sink.write(spans))
    }

    /// [`CassandraSink::link_due`], blocking.
    pub fn link_due(&self) -> Result<(), CassandraError> {
        self.runtime.block_on(self.sink.link_due())
    }

    /// [`CassandraSink::flush_links`], blocking.
    pub fn flush_links(&self) -> Result<(), CassandraError> {
        self.runtime.block_on(self.sink.flush_links())
    }

    /// The sink's counters.
    pub fn stats(&self) -> &CassandraStats {
        self.sink.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_grouped_by_partition_in_order_and_cut_into_batches() {
        // (partition, row)
        let rows: Vec<(u8, usize)> = (0..40).map(|i| ((i % 3) as u8, i)).collect();
        let groups = partition_groups(rows, |r| r.0);
        let sizes: Vec<(u8, usize)> = groups.iter().map(|g| (g[0].0, g.len())).collect();
        // 14 rows of partition 0 and 13 each of 1 and 2: none over the cap.
        assert_eq!(sizes, [(0, 14), (1, 13), (2, 13)]);
        for g in &groups {
            assert!(g.iter().all(|r| r.0 == g[0].0), "one partition per batch");
            assert!(
                g.windows(2).all(|w| w[0].1 < w[1].1),
                "rows keep their order"
            );
        }
        let big = partition_groups((0..MAX_BATCH_ROWS * 2 + 3).map(|i| (7u8, i)), |r| r.0);
        let sizes: Vec<usize> = big.iter().map(Vec::len).collect();
        assert_eq!(sizes, [MAX_BATCH_ROWS, MAX_BATCH_ROWS, 3]);
        let all: Vec<usize> = big.into_iter().flatten().map(|r| r.1).collect();
        assert_eq!(all, (0..MAX_BATCH_ROWS * 2 + 3).collect::<Vec<_>>());
    }

    #[test]
    fn entry_cache_skips_recent_entries_and_forgets_failures() {
        let mut c = EntryCache::default();
        let k = (EntryTable::ServiceSpan, "a".to_string(), "b".to_string());
        let t = Instant::now();
        assert!(c.should_write(&k, t));
        assert!(!c.should_write(&k, t + Duration::from_secs(1)));
        assert!(c.should_write(&k, t + ENTRY_TTL + Duration::from_secs(1)));
        c.forget(&k);
        assert!(c.should_write(&k, t + ENTRY_TTL + Duration::from_secs(2)));
    }
}
