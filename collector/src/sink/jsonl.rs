//! JSON lines: one v2 span per line, to a file (appended) or stdout.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::{Sink, SinkError};
use crate::model::Span;

/// Writes spans as JSON lines.
pub struct JsonLinesSink {
    out: BufWriter<Box<dyn Write + Send>>,
}

impl JsonLinesSink {
    /// Appends to `path`, or writes to stdout when `path` is `-`.
    pub fn open(path: &Path) -> std::io::Result<JsonLinesSink> {
        let out: Box<dyn Write + Send> = if path == Path::new("-") {
            Box::new(std::io::stdout())
        } else {
            Box::new(OpenOptions::new().create(true).append(true).open(path)?)
        };
        Ok(JsonLinesSink {
            out: BufWriter::new(out),
        })
    }
}

impl Sink for JsonLinesSink {
    fn send(&mut self, batch: &[Span]) -> Result<(), SinkError> {
        let mut line = Vec::with_capacity(512);
        for s in batch {
            line.clear();
            // The model only holds strings, numbers and string-keyed maps.
            serde_json::to_writer(&mut line, s).expect("spans serialise");
            line.push(b'\n');
            self.out
                .write_all(&line)
                .map_err(|e| SinkError::Retry(format!("writing JSON lines: {e}")))?;
        }
        self.out
            .flush()
            .map_err(|e| SinkError::Retry(format!("writing JSON lines: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_one_span_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spans.jsonl");
        let s = Span {
            trace_id: "00000000000000aa".into(),
            id: "00000000000000bb".into(),
            ..Span::default()
        };
        for _ in 0..2 {
            let mut sink = JsonLinesSink::open(&path).unwrap();
            sink.send(&[s.clone(), s.clone()]).unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        for l in lines {
            assert_eq!(serde_json::from_str::<Span>(l).unwrap(), s);
        }
    }
}
