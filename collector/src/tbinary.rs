//! TBinaryProtocol encoding of Zipkin v1 spans (`zipkinCore.thrift`) and of
//! Scribe's `Log(list<LogEntry>)` call (`scribe.thrift`), written by hand
//! against the `thrift` crate's protocol runtime (no code generator: the
//! four structs are small and fixed).

use std::sync::Arc;

use thrift::protocol::{
    TBinaryOutputProtocol, TFieldIdentifier, TListIdentifier, TMessageIdentifier, TMessageType,
    TOutputProtocol, TStructIdentifier, TType,
};

use crate::v1::{V1Annotation, V1BinaryAnnotation, V1Endpoint, V1Span};

type Out<'a> = dyn TOutputProtocol + 'a;

/// Begins field `id`. TBinaryProtocol writes neither field nor struct names,
/// so identifiers are built without them (no allocation per field); `_name`
/// documents the IDL.
fn field(o: &mut Out<'_>, _name: &str, ty: TType, id: i16) -> thrift::Result<()> {
    o.write_field_begin(&TFieldIdentifier {
        name: None,
        field_type: ty,
        id: Some(id),
    })
}

/// Begins a struct (its name is not on the wire).
fn struct_begin(o: &mut Out<'_>) -> thrift::Result<()> {
    o.write_struct_begin(&TStructIdentifier {
        name: String::new(),
    })
}

fn write_endpoint(o: &mut Out<'_>, e: &V1Endpoint<'_>) -> thrift::Result<()> {
    struct_begin(o)?; // Endpoint
    field(o, "ipv4", TType::I32, 1)?;
    o.write_i32(e.ipv4)?;
    field(o, "port", TType::I16, 2)?;
    o.write_i16(e.port)?;
    field(o, "service_name", TType::String, 3)?;
    o.write_string(&e.service_name)?;
    if let Some(v6) = &e.ipv6 {
        field(o, "ipv6", TType::String, 4)?;
        o.write_bytes(v6)?;
    }
    o.write_field_stop()?;
    o.write_struct_end()
}

fn write_host(o: &mut Out<'_>, id: i16, host: &Option<Arc<V1Endpoint<'_>>>) -> thrift::Result<()> {
    if let Some(h) = host {
        field(o, "host", TType::Struct, id)?;
        write_endpoint(o, h)?;
    }
    Ok(())
}

fn write_annotation(o: &mut Out<'_>, a: &V1Annotation<'_>) -> thrift::Result<()> {
    struct_begin(o)?; // Annotation
    field(o, "timestamp", TType::I64, 1)?;
    o.write_i64(a.timestamp)?;
    field(o, "value", TType::String, 2)?;
    o.write_string(&a.value)?;
    write_host(o, 3, &a.host)?;
    o.write_field_stop()?;
    o.write_struct_end()
}

fn write_binary_annotation(o: &mut Out<'_>, b: &V1BinaryAnnotation<'_>) -> thrift::Result<()> {
    struct_begin(o)?; // BinaryAnnotation
    field(o, "key", TType::String, 1)?;
    o.write_string(&b.key)?;
    field(o, "value", TType::String, 2)?;
    o.write_bytes(&b.value)?;
    field(o, "annotation_type", TType::I32, 3)?;
    o.write_i32(b.annotation_type as i32)?;
    write_host(o, 4, &b.host)?;
    o.write_field_stop()?;
    o.write_struct_end()
}

fn write_list<T>(
    o: &mut Out<'_>,
    items: &[T],
    each: impl Fn(&mut Out<'_>, &T) -> thrift::Result<()>,
) -> thrift::Result<()> {
    let len = i32::try_from(items.len())
        .map_err(|_| thrift::Error::from(format!("list of {} items", items.len())))?;
    o.write_list_begin(&TListIdentifier::new(TType::Struct, len))?;
    for i in items {
        each(o, i)?;
    }
    o.write_list_end()
}

/// Writes one `Span` struct.
pub fn write_span(o: &mut Out<'_>, s: &V1Span<'_>) -> thrift::Result<()> {
    struct_begin(o)?; // Span
    field(o, "trace_id", TType::I64, 1)?;
    o.write_i64(s.trace_id)?;
    field(o, "name", TType::String, 3)?;
    o.write_string(&s.name)?;
    field(o, "id", TType::I64, 4)?;
    o.write_i64(s.id)?;
    if let Some(p) = s.parent_id {
        field(o, "parent_id", TType::I64, 5)?;
        o.write_i64(p)?;
    }
    field(o, "annotations", TType::List, 6)?;
    write_list(o, &s.annotations, write_annotation)?;
    field(o, "binary_annotations", TType::List, 8)?;
    write_list(o, &s.binary_annotations, write_binary_annotation)?;
    if let Some(d) = s.debug {
        field(o, "debug", TType::Bool, 9)?;
        o.write_bool(d)?;
    }
    for (name, id, v) in [
        ("timestamp", 10, s.timestamp),
        ("duration", 11, s.duration),
        ("trace_id_high", 12, s.trace_id_high),
    ] {
        if let Some(v) = v {
            field(o, name, TType::I64, id)?;
            o.write_i64(v)?;
        }
    }
    o.write_field_stop()?;
    o.write_struct_end()
}

fn to_vec(f: impl FnOnce(&mut Out<'_>) -> thrift::Result<()>) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut o = TBinaryOutputProtocol::new(&mut buf, true);
    // Writing to a Vec cannot fail, and write_list refuses only lists longer
    // than i32::MAX, which no caller can build in memory.
    f(&mut o).expect("TBinaryProtocol into memory");
    buf
}

/// One span in TBinaryProtocol (a Scribe message before base64).
pub fn encode_span(s: &V1Span<'_>) -> Vec<u8> {
    to_vec(|o| write_span(o, s))
}

/// A `list<Span>` in TBinaryProtocol: the body of `POST /api/v1/spans`.
pub fn encode_span_list(spans: &[V1Span<'_>]) -> Vec<u8> {
    to_vec(|o| write_list(o, spans, write_span))
}

/// A framed Scribe `Log(list<LogEntry>)` call: 4-byte big-endian length,
/// then the TBinaryProtocol (strict) message.
pub fn encode_scribe_log(seq_id: i32, category: &str, messages: &[String]) -> Vec<u8> {
    let body = to_vec(|o| {
        o.write_message_begin(&TMessageIdentifier::new("Log", TMessageType::Call, seq_id))?;
        struct_begin(o)?; // Log_args
        field(o, "messages", TType::List, 1)?;
        write_list(o, messages, |o, m| {
            struct_begin(o)?; // LogEntry
            field(o, "category", TType::String, 1)?;
            o.write_string(category)?;
            field(o, "message", TType::String, 2)?;
            o.write_string(m)?;
            o.write_field_stop()?;
            o.write_struct_end()
        })?;
        o.write_field_stop()?;
        o.write_struct_end()?;
        o.write_message_end()
    });
    let mut framed = (body.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(&body);
    framed
}

/// Scribe's `ResultCode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScribeResult {
    /// Stored.
    Ok,
    /// The server is busy: send the same messages again later.
    TryLater,
}

/// Why a Scribe reply could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// Ended before it was complete.
    #[error("scribe reply is truncated")]
    Truncated,
    /// Not a reply to `Log`.
    #[error("scribe reply is malformed: {0}")]
    Malformed(String),
    /// The server raised a Thrift application exception.
    #[error("scribe server exception: {0}")]
    Exception(String),
}

/// A bounds-checked reader over an untrusted reply (the `thrift` crate's
/// input protocol allocates whatever length the peer claims).
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ReplyError> {
        if self.0.len() < n {
            return Err(ReplyError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, ReplyError> {
        Ok(self.take(1)?[0])
    }
    fn i16(&mut self) -> Result<i16, ReplyError> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn i32(&mut self) -> Result<i32, ReplyError> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn bytes(&mut self) -> Result<&'a [u8], ReplyError> {
        let n = usize::try_from(self.i32()?)
            .map_err(|_| ReplyError::Malformed("negative length".into()))?;
        self.take(n)
    }
    /// Skips a value of a scalar or string type.
    fn skip(&mut self, ty: u8) -> Result<(), ReplyError> {
        let n = match ty {
            2 | 3 => 1,
            6 => 2,
            8 => 4,
            4 | 10 => 8,
            11 => return self.bytes().map(|_| ()),
            other => {
                return Err(ReplyError::Malformed(format!(
                    "unexpected field type {other}"
                )))
            }
        };
        self.take(n).map(|_| ())
    }
}

/// Parses the body of a framed reply to `Log` (the frame length removed).
pub fn parse_scribe_reply(body: &[u8], seq_id: i32) -> Result<ScribeResult, ReplyError> {
    let mut c = Cursor(body);
    let head = c.i32()? as u32;
    if head & 0xffff_0000 != 0x8001_0000 {
        return Err(ReplyError::Malformed(format!(
            "not a strict binary message ({head:#x})"
        )));
    }
    let kind = head & 0xff;
    let name = c.bytes()?;
    if name != b"Log" {
        return Err(ReplyError::Malformed(format!(
            "reply to {:?}, expected Log",
            String::from_utf8_lossy(name)
        )));
    }
    let seq = c.i32()?;
    if seq != seq_id {
        return Err(ReplyError::Malformed(format!(
            "sequence id {seq}, expected {seq_id}"
        )));
    }
    let mut success = None;
    let mut message = String::new();
    loop {
        let ty = c.u8()?;
        if ty == 0 {
            break;
        }
        let id = c.i16()?;
        match (kind, id, ty) {
            (2, 0, 8) => success = Some(c.i32()?),
            (3, 1, 11) => message = String::from_utf8_lossy(c.bytes()?).into_owned(),
            _ => c.skip(ty)?,
        }
    }
    match (kind, success) {
        (3, _) => Err(ReplyError::Exception(message)),
        (2, Some(0)) => Ok(ScribeResult::Ok),
        (2, Some(1)) => Ok(ScribeResult::TryLater),
        (2, other) => Err(ReplyError::Malformed(format!("result code {other:?}"))),
        (k, _) => Err(ReplyError::Malformed(format!("message type {k}"))),
    }
}

/// Decoding, for round-trip tests only (trusted input).
#[cfg(test)]
pub(crate) mod decode {
    use std::sync::Arc;

    use thrift::protocol::{TInputProtocol, TType};

    use crate::v1::{AnnotationType, V1Annotation, V1BinaryAnnotation, V1Endpoint, V1Span};

    type In<'a> = dyn TInputProtocol + 'a;

    fn fields(
        i: &mut In<'_>,
        mut each: impl FnMut(&mut In<'_>, i16, TType) -> thrift::Result<bool>,
    ) -> thrift::Result<()> {
        i.read_struct_begin()?;
        loop {
            let f = i.read_field_begin()?;
            if f.field_type == TType::Stop {
                break;
            }
            if !each(i, f.id.unwrap_or(-1), f.field_type)? {
                i.skip(f.field_type)?;
            }
            i.read_field_end()?;
        }
        i.read_struct_end()
    }

    fn endpoint(i: &mut In<'_>) -> thrift::Result<V1Endpoint<'static>> {
        let mut e = V1Endpoint::default();
        fields(i, |i, id, _| {
            match id {
                1 => e.ipv4 = i.read_i32()?,
                2 => e.port = i.read_i16()?,
                3 => e.service_name = i.read_string()?.into(),
                4 => e.ipv6 = Some(i.read_bytes()?.try_into().expect("16 bytes")),
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(e)
    }

    fn list<T>(
        i: &mut In<'_>,
        each: impl Fn(&mut In<'_>) -> thrift::Result<T>,
    ) -> thrift::Result<Vec<T>> {
        let l = i.read_list_begin()?;
        let v = (0..l.size)
            .map(|_| each(i))
            .collect::<thrift::Result<_>>()?;
        i.read_list_end()?;
        Ok(v)
    }

    /// Reads one `Span` struct.
    pub fn span(i: &mut In<'_>) -> thrift::Result<V1Span<'static>> {
        let mut s = V1Span::default();
        fields(i, |i, id, _| {
            match id {
                1 => s.trace_id = i.read_i64()?,
                3 => s.name = i.read_string()?.into(),
                4 => s.id = i.read_i64()?,
                5 => s.parent_id = Some(i.read_i64()?),
                6 => {
                    s.annotations = list(i, |i| {
                        let mut a = V1Annotation {
                            timestamp: 0,
                            value: "".into(),
                            host: None,
                        };
                        fields(i, |i, id, _| {
                            match id {
                                1 => a.timestamp = i.read_i64()?,
                                2 => a.value = i.read_string()?.into(),
                                3 => a.host = Some(Arc::new(endpoint(i)?)),
                                _ => return Ok(false),
                            }
                            Ok(true)
                        })?;
                        Ok(a)
                    })?
                }
                8 => {
                    s.binary_annotations = list(i, |i| {
                        let mut b = V1BinaryAnnotation {
                            key: "".into(),
                            value: Vec::new().into(),
                            annotation_type: AnnotationType::Bytes,
                            host: None,
                        };
                        fields(i, |i, id, _| {
                            match id {
                                1 => b.key = i.read_string()?.into(),
                                2 => b.value = i.read_bytes()?.into(),
                                3 => {
                                    b.annotation_type = AnnotationType::from_i32(i.read_i32()?)
                                        .expect("known annotation type")
                                }
                                4 => b.host = Some(Arc::new(endpoint(i)?)),
                                _ => return Ok(false),
                            }
                            Ok(true)
                        })?;
                        Ok(b)
                    })?
                }
                9 => s.debug = Some(i.read_bool()?),
                10 => s.timestamp = Some(i.read_i64()?),
                11 => s.duration = Some(i.read_i64()?),
                12 => s.trace_id_high = Some(i.read_i64()?),
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(s)
    }

    /// Reads a `list<Span>`.
    pub fn span_list(i: &mut In<'_>) -> thrift::Result<Vec<V1Span<'static>>> {
        list(i, span)
    }
}

#[cfg(test)]
mod tests {
    use thrift::protocol::{TBinaryInputProtocol, TInputProtocol};

    use super::*;
    use crate::model::{Annotation, Endpoint, Span, SpanKind};

    /// V1 spans converted from two v2 spans (leaked: they live as long as
    /// the test).
    fn spans() -> Vec<V1Span<'static>> {
        let ep = Endpoint {
            service_name: Some("osd".into()),
            ipv4: Some("10.0.0.2".into()),
            ipv6: Some("fe80::1".into()),
            port: Some(6800),
        };
        let server = Span {
            trace_id: "463ac35c9f6413ad48485a3953bb6124".into(),
            parent_id: Some("0000000000000001".into()),
            id: "ffffffffffffffbb".into(),
            kind: Some(SpanKind::Server),
            name: Some("write".into()),
            timestamp: Some(1_700_000_000_000_000),
            duration: Some(250),
            local_endpoint: Some(ep.clone()),
            remote_endpoint: Some(Endpoint {
                service_name: Some("client".into()),
                ..Endpoint::default()
            }),
            annotations: vec![Annotation {
                timestamp: 1_700_000_000_000_100,
                value: "journal".into(),
            }],
            tags: [
                ("bytes".to_string(), "-1".to_string()),
                ("pool".to_string(), "rbd".to_string()),
            ]
            .into(),
            debug: Some(true),
            integer_tags: ["bytes".to_string()].into(),
            ..Span::default()
        };
        let local = Span {
            trace_id: "00000000000000aa".into(),
            id: "00000000000000ab".into(),
            timestamp: Some(1),
            local_endpoint: Some(ep),
            ..Span::default()
        };
        let v2: &'static [Span; 2] = Box::leak(Box::new([server, local]));
        v2.iter()
            .map(|s| V1Span::from_v2_with(s, crate::v1::IntegerTags::I64).unwrap())
            .collect()
    }

    #[test]
    fn span_round_trips_through_tbinaryprotocol() {
        for s in spans() {
            let bytes = encode_span(&s);
            let mut i = TBinaryInputProtocol::new(&bytes[..], true);
            assert_eq!(decode::span(&mut i).unwrap(), s);
        }
    }

    #[test]
    fn span_list_round_trips() {
        let all = spans();
        let bytes = encode_span_list(&all);
        let mut i = TBinaryInputProtocol::new(&bytes[..], true);
        assert_eq!(decode::span_list(&mut i).unwrap(), all);
    }

    #[test]
    fn span_bytes_follow_zipkin_core_field_ids() {
        let s = V1Span {
            trace_id: 1,
            name: "n".into(),
            id: 2,
            ..V1Span::default()
        };
        let b = encode_span(&s);
        #[rustfmt::skip]
        let want: &[u8] = &[
            10, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, // i64 trace_id = 1
            11, 0, 3, 0, 0, 0, 1, b'n',       // string name
            10, 0, 4, 0, 0, 0, 0, 0, 0, 0, 2, // i64 id = 2
            15, 0, 6, 12, 0, 0, 0, 0,         // list<struct> annotations, empty
            15, 0, 8, 12, 0, 0, 0, 0,         // list<struct> binary_annotations, empty
            0,                                // stop
        ];
        assert_eq!(b, want);
    }

    #[test]
    fn scribe_log_call_is_framed_and_decodable() {
        let msgs = vec!["AAA=".to_string(), "BBB=".to_string()];
        let framed = encode_scribe_log(7, "zipkin", &msgs);
        let len = u32::from_be_bytes(framed[..4].try_into().unwrap()) as usize;
        assert_eq!(len, framed.len() - 4);
        let mut i = TBinaryInputProtocol::new(&framed[4..], true);
        let m = i.read_message_begin().unwrap();
        assert_eq!(
            (m.name.as_str(), m.message_type, m.sequence_number),
            ("Log", TMessageType::Call, 7)
        );
        i.read_struct_begin().unwrap();
        let f = i.read_field_begin().unwrap();
        assert_eq!((f.id, f.field_type), (Some(1), TType::List));
        let l = i.read_list_begin().unwrap();
        assert_eq!((l.element_type, l.size), (TType::Struct, 2));
        for m in &msgs {
            i.read_struct_begin().unwrap();
            i.read_field_begin().unwrap();
            assert_eq!(i.read_string().unwrap(), "zipkin");
            i.read_field_begin().unwrap();
            assert_eq!(&i.read_string().unwrap(), m);
            assert_eq!(i.read_field_begin().unwrap().field_type, TType::Stop);
        }
    }

    fn reply(
        kind: TMessageType,
        seq: i32,
        f: impl FnOnce(&mut Out<'_>) -> thrift::Result<()>,
    ) -> Vec<u8> {
        to_vec(|o| {
            o.write_message_begin(&TMessageIdentifier::new("Log", kind, seq))?;
            struct_begin(o)?; // r
            f(o)?;
            o.write_field_stop()?;
            o.write_struct_end()?;
            o.write_message_end()
        })
    }

    #[test]
    fn scribe_replies_parse() {
        let ok = reply(TMessageType::Reply, 3, |o| {
            field(o, "success", TType::I32, 0)?;
            o.write_i32(0)
        });
        assert_eq!(parse_scribe_reply(&ok, 3), Ok(ScribeResult::Ok));
        assert!(parse_scribe_reply(&ok, 4).is_err(), "wrong sequence id");
        let later = reply(TMessageType::Reply, 3, |o| {
            field(o, "success", TType::I32, 0)?;
            o.write_i32(1)
        });
        assert_eq!(parse_scribe_reply(&later, 3), Ok(ScribeResult::TryLater));
        let exc = reply(TMessageType::Exception, 3, |o| {
            field(o, "message", TType::String, 1)?;
            o.write_string("boom")?;
            field(o, "type", TType::I32, 2)?;
            o.write_i32(6)
        });
        assert_eq!(
            parse_scribe_reply(&exc, 3),
            Err(ReplyError::Exception("boom".into()))
        );
        // Hostile or cut replies are errors, never panics or huge allocations.
        for n in 0..ok.len() {
            assert!(parse_scribe_reply(&ok[..n], 3).is_err());
        }
        let mut huge = ok.clone();
        huge[4..8].copy_from_slice(&i32::MAX.to_be_bytes());
        assert_eq!(parse_scribe_reply(&huge, 3), Err(ReplyError::Truncated));
    }
}
