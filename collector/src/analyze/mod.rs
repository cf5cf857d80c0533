//! `analyze`: latency and error statistics per service and span name, and
//! the slowest traces, over the span archive, computed by Apache DataFusion
//! with SQL that also runs on Spark (docs/ARCHIVE.md has the Spark and Hive
//! forms).
//!
//! [`run`] is blocking (it reads the archive, then runs DataFusion on a
//! runtime of its own): call it from a plain thread or `spawn_blocking`.

pub mod load;
pub mod render;

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Float64Type, Int64Type};
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use serde::Serialize;

use crate::archive::{ArchiveError, ArchiveFs, ArchiveLocation, HdfsFs, LocalFs};

pub use render::{render, OutputFormat};

/// What to analyze.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnalyzeOptions {
    /// The archive.
    pub location: ArchiveLocation,
    /// Only spans starting at or after this (epoch microseconds).
    pub from_micros: Option<u64>,
    /// Only spans starting before this (epoch microseconds).
    pub to_micros: Option<u64>,
    /// How many of the slowest traces to list.
    pub slowest: usize,
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

/// The slowest traces (`LIMIT` is appended).
pub const SLOWEST_SQL: &str = "SELECT trace_id, \
    COALESCE(MAX(CASE WHEN parent_id IS NULL THEN duration END), \
             MAX(ts + duration) - MIN(ts)) AS duration_us, \
    MIN(ts) AS start_us, COUNT(*) AS spans, \
    MAX(CASE WHEN parent_id IS NULL THEN service END) AS root_service, \
    MAX(CASE WHEN parent_id IS NULL THEN name END) AS root_name \
    FROM span_facts WHERE_RANGE \
    GROUP BY trace_id \
    HAVING COALESCE(MAX(CASE WHEN parent_id IS NULL THEN duration END), \
                    MAX(ts + duration) - MIN(ts)) IS NOT NULL \
    ORDER BY duration_us DESC, trace_id";

fn with_range(sql: &str, from: Option<u64>, to: Option<u64>) -> String {
    let mut conds = Vec::new();
    if let Some(f) = from {
        conds.push(format!("ts >= {f}"));
    }
    if let Some(t) = to {
        conds.push(format!("ts < {t}"));
    }
    let clause = if conds.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conds.join(" AND "))
    };
    sql.replace("WHERE_RANGE", &clause)
}

/// Parses a time for `--from`/`--to`: epoch microseconds, `YYYY-MM-DD`
/// or `YYYY-MM-DDTHH:MM[:SS]Z` (UTC).
pub fn parse_time_micros(s: &str) -> Result<u64, AnalyzeError> {
    let bad = || {
        AnalyzeError::Data(format!(
            "{s:?} is not a time: use epoch microseconds, YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS]Z"
        ))
    };
    if s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty() {
        return s.parse().map_err(|_| bad());
    }
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t.strip_suffix('Z').ok_or_else(bad)?)),
        None => (s, None),
    };
    let num = |x: Option<&str>| -> Result<i64, AnalyzeError> {
        x.filter(|x| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|x| x.parse().ok())
            .ok_or_else(bad)
    };
    let mut d = date.split('-');
    let (y, m, day) = (num(d.next())?, num(d.next())?, num(d.next())?);
    if d.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return Err(bad());
    }
    let mut secs = crate::archive::layout::days_from_civil(y, m as u32, day as u32) * 86_400;
    if let Some(t) = time {
        let mut parts = t.split(':');
        let (h, min) = (num(parts.next())?, num(parts.next())?);
        let sec = match parts.next() {
            Some(x) => num(Some(x))?,
            None => 0,
        };
        if parts.next().is_some() || h > 23 || min > 59 || sec > 60 {
            return Err(bad());
        }
        secs += h * 3600 + min * 60 + sec;
    }
    u64::try_from(secs)
        .map(|s| s * 1_000_000)
        .map_err(|_| bad())
}

/// Reads the archive and computes the report.
pub fn run(opts: &AnalyzeOptions) -> Result<Report, AnalyzeError> {
    match &opts.location {
        ArchiveLocation::Local(dir) => {
            if !dir.is_dir() {
                return Err(AnalyzeError::Archive(ArchiveError::Config(format!(
                    "{} is not a directory",
                    dir.display()
                ))));
            }
            run_on(&LocalFs::new(dir)?, opts)
        }
        ArchiveLocation::Hdfs(config) => run_on(&HdfsFs::connect(config.clone())?, opts),
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
    let (spans, operations, slowest) = runtime.block_on(query(
        loaded.batches,
        opts.from_micros,
        opts.to_micros,
        opts.slowest,
    ))?;
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
    from: Option<u64>,
    to: Option<u64>,
    slowest: usize,
) -> Result<(u64, Vec<OperationStats>, Vec<SlowTrace>), AnalyzeError> {
    // Keep identifiers as written (traceId, localEndpoint.serviceName), as
    // Spark and Hive do.
    let config =
        SessionConfig::new().set_bool("datafusion.sql_parser.enable_ident_normalization", false);
    let ctx = SessionContext::new_with_config(config);
    // Two partitions so both cores aggregate.
    let half = batches.len().div_ceil(2).max(1);
    let partitions: Vec<Vec<RecordBatch>> = batches.chunks(half).map(<[_]>::to_vec).collect();
    let table = MemTable::try_new(load::span_schema(), partitions)?;
    ctx.register_table("spans", Arc::new(table))?;
    ctx.sql(FACTS_VIEW_SQL).await?.collect().await?;

    let count_sql = with_range("SELECT COUNT(*) AS n FROM span_facts WHERE_RANGE", from, to);
    let counted = ctx.sql(&count_sql).await?.collect().await?;
    let spans = counted
        .first()
        .filter(|b| b.num_rows() == 1)
        .and_then(|b| b.column(0).as_primitive_opt::<Int64Type>())
        .map(|a| a.value(0) as u64)
        .unwrap_or(0);

    let ops = ctx
        .sql(&with_range(OPERATIONS_SQL, from, to))
        .await?
        .collect()
        .await?;
    let mut operations = Vec::new();
    for b in &ops {
        let service = b.column(0).as_string::<i32>();
        let name = b.column(1).as_string::<i32>();
        let count = b.column(2).as_primitive::<Int64Type>();
        let errors = b.column(3).as_primitive::<Int64Type>();
        let f = |i: usize| b.column(i).as_primitive::<Float64Type>();
        let (mean, p50, p95, p99) = (f(4), f(5), f(6), f(7));
        let max = b.column(8).as_primitive::<Int64Type>();
        let opt = |a: &datafusion::arrow::array::Float64Array, r: usize| {
            (!a.is_null(r)).then(|| a.value(r))
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

    let slow_sql = format!("{} LIMIT {slowest}", with_range(SLOWEST_SQL, from, to));
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
    fn times_parse() {
        assert_eq!(
            parse_time_micros("1709157600000000").unwrap(),
            1_709_157_600_000_000
        );
        assert_eq!(
            parse_time_micros("2024-02-28T22:00Z").unwrap(),
            1_709_157_600_000_000
        );
        assert_eq!(
            parse_time_micros("2024-02-28T22:00:01Z").unwrap(),
            1_709_157_601_000_000
        );
        assert_eq!(parse_time_micros("1970-01-02").unwrap(), 86_400_000_000);
        for bad in [
            "",
            "yesterday",
            "2024-13-01",
            "2024-02-28T22:00",
            "2024-02-28T25:00Z",
            "-5",
        ] {
            assert!(parse_time_micros(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ranges_become_where_clauses() {
        assert_eq!(with_range("x WHERE_RANGE y", None, None), "x  y");
        assert_eq!(
            with_range("x WHERE_RANGE", Some(1), Some(2)),
            "x WHERE ts >= 1 AND ts < 2"
        );
    }
}
