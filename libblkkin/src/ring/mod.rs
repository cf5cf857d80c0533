//! Per-CPU ring buffers in shared memory: layout, writer, reader, files.
//!
//! Data flows writer → [`layout`] bytes in a shared mapping ([`mem`]) →
//! [`reader`]. The writer is the record path; everything a reader does treats
//! the bytes as untrusted.

pub mod file;
pub mod header;
pub mod layout;
pub mod mem;
pub mod reader;
pub mod record;
pub mod writer;

pub use header::{Calibration, HeaderError, RingInfo};
pub use layout::Kind;
pub use reader::{
    Cursor, DrainEnd, OpenError, ReadMode, ReaderStats, RingReader, WriterCheck, WriterCounters,
};
pub use record::{parse_record, Record, RecordError};
pub use writer::{RecordIn, RingGeometry, RingWriter, Value, WriteError};

#[cfg(test)]
pub(crate) mod tests;
