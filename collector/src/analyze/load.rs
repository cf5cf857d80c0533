//! Reads archive files (plain, gzip or zstd NDJSON, local or on HDFS) into
//! Arrow record batches with the archive's table schema, skipping
//! partitions outside the time range and counting lines that are not
//! spans.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use super::AnalyzeError;
use crate::archive::{encode, layout, ArchiveFs, Partition};

/// The columns `analyze` reads of a Zipkin v2 span: the same schema as the
/// Hive table in docs/ARCHIVE.md. Other fields are ignored.
pub fn span_schema() -> SchemaRef {
    let endpoint = DataType::Struct(Fields::from(vec![Field::new(
        "serviceName",
        DataType::Utf8,
        true,
    )]));
    let tags = DataType::Map(
        Arc::new(Field::new(
            "entries",
            DataType::Struct(Fields::from(vec![
                Field::new("keys", DataType::Utf8, false),
                Field::new("values", DataType::Utf8, true),
            ])),
            false,
        )),
        false,
    );
    Arc::new(Schema::new(vec![
        Field::new("traceId", DataType::Utf8, true),
        Field::new("id", DataType::Utf8, true),
        Field::new("parentId", DataType::Utf8, true),
        Field::new("kind", DataType::Utf8, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("timestamp", DataType::Int64, true),
        Field::new("duration", DataType::Int64, true),
        Field::new("localEndpoint", endpoint, true),
        Field::new("tags", tags, true),
    ]))
}

/// What loading found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Record batches of spans.
    pub batches: Vec<RecordBatch>,
    /// Data files read.
    pub files: u64,
    /// Data files skipped because their partition is outside the range.
    pub files_pruned: u64,
    /// Compressed bytes read.
    pub bytes: u64,
    /// Non-empty lines that were not a span (bad JSON or wrong types).
    pub bad_lines: u64,
}

const BATCH_ROWS: usize = 64 * 1024;

/// Loads every visible data file of the archive on `fs` whose partition
/// overlaps `[from, to)` (epoch microseconds).
pub fn load<F: ArchiveFs>(
    fs: &F,
    from: Option<u64>,
    to: Option<u64>,
) -> Result<Loaded, AnalyzeError> {
    let schema = span_schema();
    let mut loaded = Loaded::default();
    for entry in fs.list_files("")? {
        if !layout::is_visible(&entry.path) {
            continue;
        }
        let Some(compression) = layout::compression_of(&entry.path) else {
            continue;
        };
        if let Some(p) = layout::partition_of(&entry.path) {
            if !overlaps(p, from, to) {
                loaded.files_pruned += 1;
                continue;
            }
        }
        let raw = fs.read(&entry.path)?;
        loaded.bytes += raw.len() as u64;
        let text = encode::decode(compression, &raw)
            .map_err(|e| AnalyzeError::Data(format!("{}: {e}", entry.path)))?;
        drop(raw);
        decode_ndjson(&schema, &text, &mut loaded)?;
        loaded.files += 1;
    }
    Ok(loaded)
}

fn overlaps(p: Partition, from: Option<u64>, to: Option<u64>) -> bool {
    let (start, end) = (p.start_micros(), p.start_micros() + 3_600_000_000);
    from.is_none_or(|f| end > f) && to.is_none_or(|t| start < t)
}

/// Decodes NDJSON text; if the fast path hits a bad line, decodes line by
/// line so that one bad line costs only itself (and is counted).
fn decode_ndjson(schema: &SchemaRef, text: &[u8], out: &mut Loaded) -> Result<(), AnalyzeError> {
    match decode_all(schema, text) {
        Ok(batches) => {
            out.batches.extend(batches);
            Ok(())
        }
        Err(_) => {
            for line in text.split(|&b| b == b'\n') {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match decode_all(schema, line) {
                    Ok(b) if b.iter().map(RecordBatch::num_rows).sum::<usize>() == 1 => {
                        out.batches.extend(b)
                    }
                    _ => out.bad_lines += 1,
                }
            }
            Ok(())
        }
    }
}

fn decode_all(
    schema: &SchemaRef,
    text: &[u8],
) -> Result<Vec<RecordBatch>, datafusion::arrow::error::ArrowError> {
    let mut decoder = arrow_json::ReaderBuilder::new(schema.clone())
        .with_batch_size(BATCH_ROWS)
        .build_decoder()?;
    let mut batches = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let n = decoder.decode(rest)?;
        if n == 0 {
            break;
        }
        rest = &rest[n..];
        if let Some(b) = decoder.flush()? {
            batches.push(b);
        }
    }
    if let Some(b) = decoder.flush()? {
        batches.push(b);
    }
    Ok(batches)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_lines_are_counted_not_fatal() {
        let schema = span_schema();
        let text = b"{\"traceId\":\"a\",\"id\":\"b\",\"duration\":5,\"tags\":{\"error\":\"x\"}}\nnot json\n{\"traceId\":\"c\",\"id\":\"d\",\"duration\":\"oops\"}\n\n{\"traceId\":\"e\",\"id\":\"f\"}\n";
        let mut out = Loaded::default();
        decode_ndjson(&schema, text, &mut out).unwrap();
        let rows: usize = out.batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows, 2);
        assert_eq!(out.bad_lines, 2);
    }

    #[test]
    fn partitions_are_pruned_by_range() {
        let p = Partition { epoch_hour: 10 };
        let h = 3_600_000_000;
        assert!(overlaps(p, None, None));
        assert!(overlaps(p, Some(10 * h + 5), None));
        assert!(!overlaps(p, Some(11 * h), None));
        assert!(!overlaps(p, None, Some(10 * h)));
        assert!(overlaps(p, None, Some(10 * h + 1)));
    }
}
