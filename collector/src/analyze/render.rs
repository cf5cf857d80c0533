//! Renders an `analyze` report as a text table, JSON or CSV.

use std::fmt::Write;
use std::str::FromStr;

use super::{OperationStats, Report, SlowTrace};

/// How to print a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// Aligned text tables for a terminal.
    #[default]
    Table,
    /// One JSON object (the [`Report`] fields).
    Json,
    /// CSV: the operations table, a blank line, the slowest-traces table.
    Csv,
}

impl FromStr for OutputFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "table" => Ok(OutputFormat::Table),
            "json" => Ok(OutputFormat::Json),
            "csv" => Ok(OutputFormat::Csv),
            other => Err(format!("unknown format {other:?} (table, json, csv)")),
        }
    }
}

/// Renders `report` in `format`.
pub fn render(report: &Report, format: OutputFormat) -> String {
    match format {
        OutputFormat::Table => table(report),
        OutputFormat::Json => {
            serde_json::to_string_pretty(report)
                .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
                + "\n"
        }
        OutputFormat::Csv => csv(report),
    }
}

fn ms(us: Option<f64>) -> String {
    us.map_or_else(|| "-".to_string(), |v| format!("{:.3}", v / 1000.0))
}

const OP_HEADER: [&str; 9] = [
    "service", "span", "count", "errors", "mean_ms", "p50_ms", "p95_ms", "p99_ms", "max_ms",
];
const SLOW_HEADER: [&str; 6] = [
    "trace_id",
    "duration_ms",
    "spans",
    "root_service",
    "root_span",
    "start_us",
];

fn op_row(o: &OperationStats) -> Vec<String> {
    vec![
        o.service.clone(),
        o.name.clone(),
        o.spans.to_string(),
        o.errors.to_string(),
        ms(o.mean_us),
        ms(o.p50_us),
        ms(o.p95_us),
        ms(o.p99_us),
        ms(o.max_us.map(|v| v as f64)),
    ]
}

fn slow_row(t: &SlowTrace) -> Vec<String> {
    vec![
        t.trace_id.clone(),
        ms(Some(t.duration_us as f64)),
        t.spans.to_string(),
        t.root_service.clone().unwrap_or_default(),
        t.root_name.clone().unwrap_or_default(),
        t.start_us.map(|v| v.to_string()).unwrap_or_default(),
    ]
}

/// Which columns hold numbers (right-aligned); the others are text (left).
const OP_NUMERIC: [bool; 9] = [false, false, true, true, true, true, true, true, true];
const SLOW_NUMERIC: [bool; 6] = [false, true, true, false, false, true];

fn aligned(out: &mut String, header: &[&str], numeric: &[bool], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |out: &mut String, cells: Vec<&str>| {
        let mut s = String::new();
        for ((cell, w), num) in cells.iter().zip(&widths).zip(numeric) {
            // Text left, numbers right.
            if *num {
                let _ = write!(s, "{cell:>w$}  ");
            } else {
                let _ = write!(s, "{cell:<w$}  ");
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(out, header.to_vec());
    for row in rows {
        line(out, row.iter().map(String::as_str).collect());
    }
}

fn table(r: &Report) -> String {
    let mut out = format!(
        "{} spans from {} files ({} bytes, {} files outside the range, {} bad lines)\n\n",
        r.spans, r.files, r.bytes, r.files_pruned, r.bad_lines
    );
    let ops: Vec<Vec<String>> = r.operations.iter().map(op_row).collect();
    aligned(&mut out, &OP_HEADER, &OP_NUMERIC, &ops);
    if !r.slowest.is_empty() {
        out.push_str("\nslowest traces\n");
        let slow: Vec<Vec<String>> = r.slowest.iter().map(slow_row).collect();
        aligned(&mut out, &SLOW_HEADER, &SLOW_NUMERIC, &slow);
    }
    out
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv_lines(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    out.push_str(&header.join(","));
    out.push('\n');
    for row in rows {
        let cells: Vec<String> = row.iter().map(|c| csv_cell(c)).collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
}

fn csv(r: &Report) -> String {
    let mut out = String::new();
    let ops: Vec<Vec<String>> = r.operations.iter().map(op_row).collect();
    csv_lines(&mut out, &OP_HEADER, &ops);
    out.push('\n');
    let slow: Vec<Vec<String>> = r.slowest.iter().map(slow_row).collect();
    csv_lines(&mut out, &SLOW_HEADER, &slow);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            files: 1,
            files_pruned: 0,
            bytes: 10,
            spans: 3,
            bad_lines: 0,
            operations: vec![OperationStats {
                service: "osd, \"a\"".into(),
                name: "write".into(),
                spans: 3,
                errors: 1,
                mean_us: Some(2000.0),
                p50_us: Some(1500.0),
                p95_us: Some(2900.0),
                p99_us: Some(2980.0),
                max_us: Some(3000),
            }],
            slowest: vec![SlowTrace {
                trace_id: "00000000000000aa".into(),
                duration_us: 3000,
                start_us: Some(7),
                spans: 3,
                root_service: Some("client".into()),
                root_name: None,
            }],
        }
    }

    #[test]
    fn csv_quotes_and_has_both_tables() {
        let out = render(&report(), OutputFormat::Csv);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], OP_HEADER.join(","));
        assert_eq!(
            lines[1],
            "\"osd, \"\"a\"\"\",write,3,1,2.000,1.500,2.900,2.980,3.000"
        );
        assert_eq!(lines[2], "");
        assert_eq!(lines[4], "00000000000000aa,3.000,3,client,,7");
    }

    #[test]
    fn json_and_table() {
        let json: serde_json::Value =
            serde_json::from_str(&render(&report(), OutputFormat::Json)).unwrap();
        assert_eq!(json["operations"][0]["p95_us"], 2900.0);
        assert_eq!(json["slowest"][0]["trace_id"], "00000000000000aa");
        let table = render(&report(), OutputFormat::Table);
        assert!(table.starts_with("3 spans from 1 files"));
        assert!(table.contains("slowest traces"));
        assert!("xml".parse::<OutputFormat>().is_err());
    }

    #[test]
    fn table_columns_line_up_text_left_numbers_right() {
        let mut r = report();
        r.slowest[0].root_name = Some("a-longer-span-name".into());
        let table = render(&r, OutputFormat::Table);
        let slow: Vec<&str> = table
            .lines()
            .skip_while(|l| *l != "slowest traces")
            .skip(1)
            .collect();
        // Each header ends where its (right-aligned) number ends, or starts
        // where its (left-aligned) text starts.
        let (head, row) = (slow[0], slow[1]);
        let end = |l: &str, w: &str| l.find(w).unwrap() + w.len();
        assert_eq!(end(head, "duration_ms"), end(row, "3.000"), "{table}");
        assert_eq!(
            head.find("root_span"),
            row.find("a-longer-span-name"),
            "{table}"
        );
        assert_eq!(head.find("root_service"), row.find("client"), "{table}");
        assert_eq!(end(head, "start_us"), row.len(), "{table}");
    }
}
