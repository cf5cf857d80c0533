//! The embedded store's SQLite schema.
//!
//! - `spans`: one row per (trace id, span id, kind, shared, local service),
//!   the key under which Zipkin merges repeated reports of a span; the
//!   searchable fields as columns and the whole span as v2 JSON.
//! - `terms`: annotation values and tag key/values per span, indexed for
//!   `annotationQuery` pre-filtering.
//! - `traces`: newest time seen per trace, for retention.
//! - `autocomplete`: tag key/values offered by `/autocompleteValues`.

/// Bumped when the schema changes incompatibly.
pub const SCHEMA_VERSION: i64 = 1;

/// Creates the tables and indexes if absent.
pub const CREATE: &str = "
CREATE TABLE IF NOT EXISTS spans (
    pk             INTEGER PRIMARY KEY,
    trace_id       TEXT NOT NULL,
    id             TEXT NOT NULL,
    parent_id      TEXT,
    kind           TEXT NOT NULL,    -- '' when absent
    shared         INTEGER NOT NULL,
    local_service  TEXT NOT NULL,    -- lower case, '' when absent
    remote_service TEXT,             -- lower case
    name           TEXT,             -- lower case
    ts             INTEGER,          -- epoch microseconds
    duration       INTEGER,          -- microseconds
    json           TEXT NOT NULL,
    UNIQUE (trace_id, id, kind, shared, local_service)
);
CREATE INDEX IF NOT EXISTS spans_ts ON spans (ts);
CREATE INDEX IF NOT EXISTS spans_service_name ON spans (local_service, name);
CREATE INDEX IF NOT EXISTS spans_service_remote ON spans (local_service, remote_service);

CREATE TABLE IF NOT EXISTS terms (
    span_pk  INTEGER NOT NULL,
    trace_id TEXT NOT NULL,
    key      TEXT NOT NULL,          -- tag key, or annotation value
    value    TEXT NOT NULL,          -- tag value, '' for an annotation
    is_tag   INTEGER NOT NULL,
    UNIQUE (span_pk, key, value, is_tag)
);
CREATE INDEX IF NOT EXISTS terms_key_value ON terms (key, value);
CREATE INDEX IF NOT EXISTS terms_trace ON terms (trace_id);

CREATE TABLE IF NOT EXISTS traces (
    trace_id TEXT PRIMARY KEY,
    last_us  INTEGER NOT NULL        -- newest span timestamp (or arrival time)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS traces_last ON traces (last_us);

CREATE TABLE IF NOT EXISTS autocomplete (
    key     TEXT NOT NULL,
    value   TEXT NOT NULL,
    last_us INTEGER NOT NULL,
    PRIMARY KEY (key, value)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS autocomplete_last ON autocomplete (last_us);
";
