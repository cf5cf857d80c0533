//! Scribe (Zipkin's Scribe collector): framed TBinaryProtocol
//! `Log(list<LogEntry>)`, category `zipkin`, each message the base64 of ONE
//! v1 span in TBinaryProtocol. The assembler already emits one span per
//! endpoint (a client and a server sharing an id are two spans), which is
//! what Zipkin needs: it keeps only the first v2 span of a merged v1 span
//! arriving through Scribe. A `TRY_LATER` answer makes the runner send the
//! same batch again after its backoff.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use base64::Engine;

use super::{Sink, SinkError};
use crate::model::Span;
use crate::tbinary::{self, ScribeResult};
#[cfg(test)]
use crate::v1::V1Span;

/// Largest reply accepted (a `Log` reply is a few dozen bytes).
const MAX_REPLY: usize = 64 * 1024;

/// Sends batches to a Scribe server.
pub struct ScribeSink {
    addr: String,
    category: String,
    conn: Option<TcpStream>,
    seq_id: i32,
}

impl ScribeSink {
    /// A sink for the Scribe server at `addr` (host:port), category `zipkin`.
    pub fn new(addr: &str) -> ScribeSink {
        ScribeSink {
            addr: addr.to_string(),
            category: "zipkin".into(),
            conn: None,
            seq_id: 0,
        }
    }

    fn connect(&self) -> std::io::Result<TcpStream> {
        let target = self.addr.to_socket_addrs()?.next().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "resolves to no address")
        })?;
        let s = TcpStream::connect_timeout(&target, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        s.set_write_timeout(Some(Duration::from_secs(30)))?;
        s.set_nodelay(true)?;
        Ok(s)
    }

    /// One call and its reply on the current connection.
    fn call(&mut self, request: &[u8]) -> Result<Vec<u8>, SinkError> {
        let io = |e: std::io::Error| SinkError::Retry(format!("scribe {}: {e}", self.addr));
        if self.conn.is_none() {
            self.conn = Some(self.connect().map_err(io)?);
        }
        let conn = self.conn.as_mut().expect("connected above");
        let res = (|| {
            conn.write_all(request)?;
            let mut len = [0u8; 4];
            conn.read_exact(&mut len)?;
            let len = u32::from_be_bytes(len) as usize;
            if len > MAX_REPLY {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("reply frame of {len} bytes"),
                ));
            }
            let mut body = vec![0; len];
            conn.read_exact(&mut body)?;
            Ok(body)
        })();
        res.map_err(|e| {
            self.conn = None;
            io(e)
        })
    }
}

impl Sink for ScribeSink {
    fn send(&mut self, batch: &[Span]) -> Result<(), SinkError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let (spans, bad) = super::to_v1(batch);
        let messages: Vec<String> = spans
            .iter()
            .map(|v1| b64.encode(tbinary::encode_span(v1)))
            .collect();
        if !messages.is_empty() {
            self.seq_id = self.seq_id.wrapping_add(1);
            let request = tbinary::encode_scribe_log(self.seq_id, &self.category, &messages);
            let reply = self.call(&request)?;
            match tbinary::parse_scribe_reply(&reply, self.seq_id) {
                Ok(ScribeResult::Ok) => {}
                Ok(ScribeResult::TryLater) => {
                    return Err(SinkError::Retry(format!("scribe {}: TRY_LATER", self.addr)))
                }
                Err(e) => {
                    self.conn = None;
                    return Err(SinkError::Rejected {
                        spans: batch.len(),
                        reason: format!("scribe {}: {e}", self.addr),
                    });
                }
            }
        }
        super::rejected_if_any(bad)
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use thrift::protocol::{
        TBinaryInputProtocol, TBinaryOutputProtocol, TFieldIdentifier, TInputProtocol,
        TMessageIdentifier, TMessageType, TOutputProtocol, TStructIdentifier, TType,
    };

    use super::*;
    use crate::tbinary::decode;

    /// Reads one framed Log call: (seq id, messages).
    fn read_call(s: &mut TcpStream) -> (i32, Vec<(String, String)>) {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).unwrap();
        let mut body = vec![0; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut body).unwrap();
        let mut i = TBinaryInputProtocol::new(&body[..], true);
        let m = i.read_message_begin().unwrap();
        assert_eq!(
            (m.name.as_str(), m.message_type),
            ("Log", TMessageType::Call)
        );
        i.read_struct_begin().unwrap();
        i.read_field_begin().unwrap();
        let l = i.read_list_begin().unwrap();
        let mut out = Vec::new();
        for _ in 0..l.size {
            i.read_struct_begin().unwrap();
            i.read_field_begin().unwrap();
            let c = i.read_string().unwrap();
            i.read_field_begin().unwrap();
            let msg = i.read_string().unwrap();
            i.read_field_begin().unwrap();
            out.push((c, msg));
        }
        (m.sequence_number, out)
    }

    fn reply(s: &mut TcpStream, seq: i32, code: i32) {
        let mut body = Vec::new();
        let mut o = TBinaryOutputProtocol::new(&mut body, true);
        o.write_message_begin(&TMessageIdentifier::new("Log", TMessageType::Reply, seq))
            .unwrap();
        o.write_struct_begin(&TStructIdentifier::new("r")).unwrap();
        o.write_field_begin(&TFieldIdentifier::new("success", TType::I32, 0))
            .unwrap();
        o.write_i32(code).unwrap();
        o.write_field_stop().unwrap();
        o.write_struct_end().unwrap();
        s.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
        s.write_all(&body).unwrap();
    }

    #[test]
    fn logs_one_base64_v1_span_per_entry_and_honours_try_later() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let (seq1, first) = read_call(&mut s);
            reply(&mut s, seq1, 1); // TRY_LATER
            let (seq2, second) = read_call(&mut s);
            reply(&mut s, seq2, 0);
            assert_ne!(seq1, seq2);
            assert_eq!(first, second, "the same batch again");
            second
        });
        let spans: Vec<Span> = (1..=2)
            .map(|i| Span {
                trace_id: "00000000000000aa".into(),
                id: format!("{i:016x}"),
                name: Some("op".into()),
                timestamp: Some(10),
                ..Span::default()
            })
            .collect();
        let mut sink = ScribeSink::new(&addr);
        let e = sink.send(&spans).unwrap_err();
        assert!(
            matches!(e, SinkError::Retry(ref m) if m.contains("TRY_LATER")),
            "{e}"
        );
        sink.send(&spans).unwrap();
        let got = server.join().unwrap();
        assert_eq!(got.len(), 2);
        for ((category, msg), want) in got.iter().zip(&spans) {
            assert_eq!(category, "zipkin");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(msg)
                .unwrap();
            let mut i = TBinaryInputProtocol::new(&bytes[..], true);
            assert_eq!(
                decode::span(&mut i).unwrap(),
                V1Span::from_v2(want).unwrap()
            );
        }
    }

    #[test]
    fn a_dead_server_is_transient_and_garbage_is_rejected() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let span = Span {
            trace_id: "00000000000000aa".into(),
            id: "00000000000000ab".into(),
            ..Span::default()
        };
        let mut sink = ScribeSink::new(&format!("127.0.0.1:{port}"));
        assert!(matches!(
            sink.send(std::slice::from_ref(&span)),
            Err(SinkError::Retry(_))
        ));

        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            read_call(&mut s);
            s.write_all(&[0, 0, 0, 3, 1, 2, 3]).unwrap();
        });
        let mut sink = ScribeSink::new(&addr);
        let e = sink.send(&[span]).unwrap_err();
        assert!(matches!(e, SinkError::Rejected { spans: 1, .. }), "{e}");
        server.join().unwrap();
    }
}
