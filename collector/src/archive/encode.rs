//! Compression of archive files as a stream: bytes go in, compressed bytes
//! come out as they are produced, so a file never has to be held whole.

use std::io::{self, Read, Write};

use flate2::write::GzEncoder;
use zstd::stream::write::Encoder as ZstdEncoder;

use super::{ArchiveError, Compression};

/// A streaming encoder for one file.
pub enum Encoder {
    /// Bytes as they are.
    Plain(Vec<u8>),
    /// gzip (one member).
    Gzip(GzEncoder<Vec<u8>>),
    /// One zstd frame.
    Zstd(ZstdEncoder<'static, Vec<u8>>),
}

fn enc_err(e: io::Error) -> ArchiveError {
    ArchiveError::Io(format!("compression: {e}"))
}

impl Encoder {
    /// A new encoder for `compression`.
    pub fn new(compression: Compression) -> Result<Self, ArchiveError> {
        Ok(match compression {
            Compression::None => Encoder::Plain(Vec::new()),
            Compression::Gzip => {
                Encoder::Gzip(GzEncoder::new(Vec::new(), flate2::Compression::fast()))
            }
            Compression::Zstd => Encoder::Zstd(ZstdEncoder::new(Vec::new(), 1).map_err(enc_err)?),
        })
    }

    /// Feeds uncompressed bytes.
    pub fn write(&mut self, buf: &[u8]) -> Result<(), ArchiveError> {
        match self {
            Encoder::Plain(v) => {
                v.extend_from_slice(buf);
                Ok(())
            }
            Encoder::Gzip(e) => e.write_all(buf).map_err(enc_err),
            Encoder::Zstd(e) => e.write_all(buf).map_err(enc_err),
        }
    }

    /// Compressed bytes produced so far and not yet taken.
    pub fn pending(&self) -> usize {
        match self {
            Encoder::Plain(v) => v.len(),
            Encoder::Gzip(e) => e.get_ref().len(),
            Encoder::Zstd(e) => e.get_ref().len(),
        }
    }

    /// Takes the compressed bytes produced so far.
    pub fn take(&mut self) -> Vec<u8> {
        match self {
            Encoder::Plain(v) => std::mem::take(v),
            Encoder::Gzip(e) => std::mem::take(e.get_mut()),
            Encoder::Zstd(e) => std::mem::take(e.get_mut()),
        }
    }

    /// Ends the stream and returns the remaining compressed bytes.
    pub fn finish(self) -> Result<Vec<u8>, ArchiveError> {
        match self {
            Encoder::Plain(v) => Ok(v),
            Encoder::Gzip(e) => e.finish().map_err(enc_err),
            Encoder::Zstd(e) => e.finish().map_err(enc_err),
        }
    }
}

/// Decompresses a whole archive file.
pub fn decode(compression: Compression, bytes: &[u8]) -> Result<Vec<u8>, ArchiveError> {
    let mut out = Vec::with_capacity(bytes.len() * 4);
    match compression {
        Compression::None => out.extend_from_slice(bytes),
        Compression::Gzip => {
            flate2::read::MultiGzDecoder::new(bytes)
                .read_to_end(&mut out)
                .map_err(|e| ArchiveError::Corrupt(format!("gzip: {e}")))?;
        }
        Compression::Zstd => {
            zstd::stream::read::Decoder::new(bytes)
                .and_then(|mut d| d.read_to_end(&mut out))
                .map_err(|e| ArchiveError::Corrupt(format!("zstd: {e}")))?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_output_decodes_to_the_input() {
        let line = b"{\"traceId\":\"00000000000000aa\",\"id\":\"00000000000000bb\"}\n";
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let mut e = Encoder::new(c).unwrap();
            let mut out = Vec::new();
            for i in 0..5000 {
                e.write(line).unwrap();
                if i % 777 == 0 {
                    out.extend(e.take());
                }
            }
            out.extend(e.finish().unwrap());
            let back = decode(c, &out).unwrap();
            assert_eq!(back.len(), line.len() * 5000, "{c:?}");
            assert!(back.chunks(line.len()).all(|l| l == line));
        }
    }

    #[test]
    fn corrupt_input_is_an_error() {
        assert!(decode(Compression::Gzip, b"not gzip").is_err());
        assert!(decode(Compression::Zstd, b"not zstd").is_err());
    }
}
