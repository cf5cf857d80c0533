//! `analyze`: latency and error statistics per service and span name, and
//! the slowest traces, over the span archive, computed by Apache DataFusion
//! with SQL that also runs on Spark (docs/ARCHIVE.md has the Spark and Hive
//! forms).
//!
//! [`run`] is blocking (it reads the archive, then runs DataFusion on a
//! runtime of its own): call it from a plain thread or `spawn_blocking`.

pub mod load;
pub mod render;
pub mod time;

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Float64Type, Int64Type};
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use serde::Serialize;

use crate::archive::{ArchiveError, ArchiveFs, ArchiveLocation, HdfsFs, LocalFs};

pub use render::{render, OutputFormat};
pub use time::{parse_time_at, parse_time_micros};

/// What to analyze.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnalyzeOptions {
    /// The archive.
    pub location: ArchiveLocation,
    /// Only spans starting at or after this (epoch microseconds).
    pub from_micros: Option<u64>,
    /// Only spans starting before this (epoch microseconds).
    pub to_micros: Option<u64>,
    /// Only spans of this service (the local endpoint's service name); the
    /// slowest traces are those with at least one such span.
    pub service: Option<String>,
    /// Only spans of this name; combines with `service`.
    pub span_name: Option<String>,
    /// How many of the slowest traces to list.
    pub slowest: usize,
}

impl AnalyzeOptions {
    /// Everything in `location`, the 10 slowest traces.
    pub fn new(location: ArchiveLocation) -> Self {
        AnalyzeOptions {
            location,
            from_micros: None,
            to_micros: None,
            service: None,
            span_name: None,
            slowest: 10,
        }
    }
}

/// Statistics of one (service, span name).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OperationStats {
    /// Local endpoint's service name (empty when absent).
    pub service: String,
    /// Span name (empty when absent).
    pub name: String,
    /// Spans.
    pub spans: u64,
    /// Spans with an `error` tag.
    pub errors: u64,
    /// Mean duration in microseconds (of spans that have one).
    pub mean_us: Option<f64>,
    /// Median duration (linear interpolation, `percentile_cont`).
    pub p50_us: Option<f64>,
    /// 95th percentile duration.
    pub p95_us: Option<f64>,
    /// 99th percentile duration.
    pub p99_us: Option<f64>,
    /// Longest duration.
    pub max_us: Option<i64>,
}

/// One of the slowest traces.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlowTrace {
    /// Trace id.
    pub trace_id: String,
    /// The root span's duration, or the trace's extent when no root span
    /// has one (microseconds).
    pub duration_us: i64,
    /// Start of the trace (epoch microseconds).
    pub start_us: Option<i64>,
    /// Spans in the trace.
    pub spans: u64,
    /// The root span's service, when the root span is in the archive.
    pub root_service: Option<String>,
    /// The root span's name.
    pub root_name: Option<String>,
}

/// The result of [`run`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Data files read.
    pub files: u64,
    /// Data files skipped because their hour is outside the range.
    pub files_pruned: u64,
    /// Compressed bytes read.
    pub bytes: u64,
    /// Spans in the time range.
    pub spans: u64,
    /// Lines that were not spans (skipped, counted).
    pub bad_lines: u64,
    /// Per (service, name), sorted by service then name.
    pub operations: Vec<OperationStats>,
    /// Slowest traces, slowest first.
    pub slowest: Vec<SlowTrace>,
}

/// What can go wrong in `analyze`.
#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    /// Reading the archive failed.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// The data could not be decoded.
    #[error("archive data: {0}")]
    Data(String),
    /// The query engine failed.
    #[error("query: {0}")]
    Query(String),
    /// A `--from`/`--to` time could not be parsed.
    #[error("{0}")]
    Time(String),
}

impl From<datafusion::error::DataFusionError> for AnalyzeError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        AnalyzeError::Query(e.to_string())
    }
}

/// The view every query reads: one row per span, flat columns. The same
/// statement creates it in Spark SQL (see docs/ARCHIVE.md).
pub const FACTS_VIEW_SQL: &str = "CREATE VIEW span_facts AS SELECT \
    traceId AS trace_id, parentId AS parent_id, \
    parentId IS NULL AND COALESCE(kind, '') <> 'SERVER' AS is_root, \
    localEndpoint.serviceName AS service, name, \
    timestamp AS ts, duration, \
    tags['error'] IS NOT NULL AS is_error \
    FROM spans";

/// Statistics per service and span name.
pub const OPERATIONS_SQL: &str = "SELECT \
    COALESCE(service, '') AS service, COALESCE(name, '') AS name, \
    COUNT(*) AS spans, \
    SUM(CASE WHEN is_error THEN 1 ELSE 0 END) AS errors, \
    AVG(CAST(duration AS DOUBLE)) AS mean_us, \
    percentile_cont(0.5) WITHIN GROUP (ORDER BY CAST(duration AS DOUBLE)) AS p50_us, \
    percentile_cont(0.95) WITHIN GROUP (ORDER BY CAST(duration AS DOUBLE)) AS p95_us, \
    percentile_cont(0.99) WITHIN GROUP (ORDER BY CAST(duration AS DOUBLE)) AS p99_us, \
    MAX(duration) AS max_us \
    FROM span_facts WHERE_RANGE \
    GROUP BY COALESCE(service, ''), COALESCE(name, '') \
    ORDER BY service, name";

/// The slowest traces (`LIMIT` is appended). A trace's duration is its
/// longest root span's (else first start to last end); its root service
/// and name are the caller's: a root span shared by a client and a server
/// is two parentless spans, and the SERVER half is the callee.
pub const SLOWEST_SQL: &str = "SELECT trace_id, \
    COALESCE(MAX(CASE WHEN parent_id IS NULL THEN duration END), \
             MAX(ts + duration) - MIN(ts)) AS duration_us, \
    MIN(ts) AS start_us, COUNT(*) AS spans, \
    COALESCE(MAX(CASE WHEN is_root THEN service END), \
             MAX(CASE WHEN parent_id IS NULL THEN service END)) AS root_service, \
    COALESCE(MAX(CASE WHEN is_root THEN name END), \
             MAX(CASE WHEN parent_id IS NULL THEN name END)) AS root_name \
    FROM span_facts WHERE_RANGE \
    GROUP BY trace_id \
    HAVING COALESCE(MAX(CASE WHEN parent_id IS NULL THEN duration END), \
                    MAX(ts + duration) - MIN(ts)) IS NOT NULL \
    ORDER BY duration_us DESC, trace_id";

/// Which spans a query looks at: the time range and the service/span
/// name filter, turned into the `WHERE` clause that replaces `WHERE_RANGE`.
#[derive(Debug, Clone, Copy, Default)]
struct Selection<'a> {
    from: Option<u64>,
    to: Option<u64>,
    service: Option<&'a str>,
    span_name: Option<&'a str>,
}

/// A SQL string literal; `'` doubled is the only escape in standard SQL
/// and in DataFusion's dialect (a test checks quotes and backslashes).
fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl<'a> Selection<'a> {
    fn of(opts: &'a AnalyzeOptions) -> Self {
        Selection {
            from: opts.from_micros,
            to: opts.to_micros,
            service: opts.service.as_deref(),
            span_name: opts.span_name.as_deref(),
        }
    }

    fn range(&self) -> Vec<String> {
        let mut conds = Vec::new();
        if let Some(f) = self.from {
            conds.push(format!("ts >= {f}"));
        }
        if let Some(t) = self.to {
            conds.push(format!("ts < {t}"));
        }
        conds
    }

    fn names(&self) -> Vec<String> {
        let mut conds = Vec::new();
        if let Some(s) = self.service {
            conds.push(format!("service = {}", sql_string(s)));
        }
        if let Some(n) = self.span_name {
            conds.push(format!("name = {}", sql_string(n)));
        }
        conds
    }

    /// Spans in the range that match the filter.
    fn spans(&self, sql: &str) -> String {
        let mut conds = self.range();
        conds.extend(self.names());
        replace_where(sql, &conds)
    }

    /// Spans in the range of traces with at least one matching span.
    fn traces(&self, sql: &str) -> String {
        let mut conds = self.range();
        let names = self.names();
        if !names.is_empty() {
            let mut inner = self.range();
            inner.extend(names);
            conds.push(format!(
                "trace_id IN (SELECT trace_id FROM span_facts WHERE {})",
                inner.join(" AND ")
            ));
        }
        replace_where(sql, &conds)
    }
}

fn replace_where(sql: &str, conds: &[String]) -> String {
    let clause = if conds.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conds.join(" AND "))
    };
    sql.replace("WHERE_RANGE", &clause)
}

/// Reads the archive and computes the report.
pub fn run(opts: &AnalyzeOptions) -> Result<Report, AnalyzeError> {
    match &opts.location {
        ArchiveLocation::Local(dir) => {
            if !dir.exists() {
                return Err(AnalyzeError::Archive(ArchiveError::Config(format!(
                    "{} does not exist",
                    dir.display()
                ))));
            }
            if !dir.is_dir() {
                return Err(AnalyzeError::Archive(ArchiveError::Config(format!(
                    "{} is not a directory",
                    dir.display()
                ))));
            }
            run_on(&LocalFs::new(dir)?, opts)
        }
        ArchiveLocation::Hdfs(config) => run_on(&HdfsFs::open_existing(config.clone())?, opts),
    }
}

/// [`run`] over an archive file system already opened.
pub fn run_on<F: ArchiveFs>(fs: &F, opts: &AnalyzeOptions) -> Result<Report, AnalyzeError> {
    let loaded = load::load(fs, opts.from_micros, opts.to_micros)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| AnalyzeError::Query(format!("cannot start a runtime: {e}")))?;
    let (spans, operations, slowest) =
        runtime.block_on(query(loaded.batches, Selection::of(opts), opts.slowest))?;
    Ok(Report {
        files: loaded.files,
        files_pruned: loaded.files_pruned,
        bytes: loaded.bytes,
        spans,
        bad_lines: loaded.bad_lines,
        operations,
        slowest,
    })
}

async fn query(
    batches: Vec<RecordBatch>,
    sel: Selection<'_>,
    slowest: usize,
) -> Result<(u64, Vec<OperationStats>, Vec<SlowTrace>), AnalyzeError> {
    // Keep identifiers as written (traceId, localEndpoint.serviceName), as
    // Spark and Hive do.
    let config =
        SessionConfig::new().set_bool("datafusion.sql_parser.enable_ident_normalization", false);
    let ctx = SessionContext::new_with_config(config);
    // Two partitions so both cores aggregate.
    let half = batches.len().div_ceil(2).max(1);
    let mut partitions: Vec<Vec<RecordBatch>> = batches.chunks(half).map(<[_]>::to_vec).collect();
    if partitions.is_empty() {
        // An archive without spans (in the range) gives an empty report.
        partitions.push(Vec::new());
    }
    let table = MemTable::try_new(load::span_schema(), partitions)?;
    ctx.register_table("spans", Arc::new(table))?;
    ctx.sql(FACTS_VIEW_SQL).await?.collect().await?;

    let count_sql = sel.spans("SELECT COUNT(*) AS n FROM span_facts WHERE_RANGE");
    let counted = ctx.sql(&count_sql).await?.collect().await?;
    let spans = counted
        .first()
        .filter(|b| b.num_rows() == 1)
        .and_then(|b| b.column(0).as_primitive_opt::<Int64Type>())
        .map(|a| a.value(0) as u64)
        .unwrap_or(0);

    let ops = ctx.sql(&sel.spans(OPERATIONS_SQL)).await?.collect().await?;
    let mut operations = Vec::new();
    for b in &ops {
        let service = b.column(0).as_string::<i32>();
        let name = b.column(1).as_string::<i32>();
        let count = b.column(2).as_primitive::<Int64Type>();
        let errors = b.column(3).as_primitive::<Int64Type>();
        let f = |i: usize| b.column(i).as_primitive::<Float64Type>();
        let (mean, p50, p95, p99) = (f(4), f(5), f(6), f(7));
        let max = b.column(8).as_primitive::<Int64Type>();
        // Rounded to the nanosecond: the interpolated percentiles carry
        // float noise (3.0999980000000003) below any clock's resolution.
        let opt = |a: &datafusion::arrow::array::Float64Array, r: usize| {
            (!a.is_null(r)).then(|| (a.value(r) * 1000.0).round() / 1000.0)
        };
        for r in 0..b.num_rows() {
            operations.push(OperationStats {
                service: service.value(r).to_string(),
                name: name.value(r).to_string(),
                spans: count.value(r) as u64,
                errors: errors.value(r) as u64,
                mean_us: opt(mean, r),
                p50_us: opt(p50, r),
                p95_us: opt(p95, r),
                p99_us: opt(p99, r),
                max_us: (!max.is_null(r)).then(|| max.value(r)),
            });
        }
    }

    let slow_sql = format!("{} LIMIT {slowest}", sel.traces(SLOWEST_SQL));
    let slow = ctx.sql(&slow_sql).await?.collect().await?;
    let mut slowest_traces = Vec::new();
    for b in &slow {
        let trace = b.column(0).as_string::<i32>();
        let duration = b.column(1).as_primitive::<Int64Type>();
        let start = b.column(2).as_primitive::<Int64Type>();
        let count = b.column(3).as_primitive::<Int64Type>();
        let service = b.column(4).as_string::<i32>();
        let name = b.column(5).as_string::<i32>();
        for r in 0..b.num_rows() {
            slowest_traces.push(SlowTrace {
                trace_id: trace.value(r).to_string(),
                duration_us: duration.value(r),
                start_us: (!start.is_null(r)).then(|| start.value(r)),
                spans: count.value(r) as u64,
                root_service: (!service.is_null(r)).then(|| service.value(r).to_string()),
                root_name: (!name.is_null(r)).then(|| name.value(r).to_string()),
            });
        }
    }
    Ok((spans, operations, slowest_traces))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selections_become_where_clauses() {
        let none = Selection::default();
        assert_eq!(none.spans("x WHERE_RANGE y"), "x  y");
        let range = Selection {
            from: Some(1),
            to: Some(2),
            ..Selection::default()
        };
        assert_eq!(range.spans("x WHERE_RANGE"), "x WHERE ts >= 1 AND ts < 2");
        assert_eq!(range.traces("x WHERE_RANGE"), "x WHERE ts >= 1 AND ts < 2");
        let named = Selection {
            from: Some(1),
            service: Some("o'sd"),
            span_name: Some("w"),
            ..Selection::default()
        };
        assert_eq!(
            named.spans("x WHERE_RANGE"),
            "x WHERE ts >= 1 AND service = 'o''sd' AND name = 'w'"
        );
        assert_eq!(
            named.traces("x WHERE_RANGE"),
            "x WHERE ts >= 1 AND trace_id IN (SELECT trace_id FROM span_facts \
             WHERE ts >= 1 AND service = 'o''sd' AND name = 'w')"
        );
    }
}
