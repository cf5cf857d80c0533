//! A decoded annotation with everything a person or a downstream tool needs:
//! the JSON shape of `blkkin dump --json` (and of the live readers built on
//! it), plus a one-line text form.

use std::fmt;

use crate::ring::header::{Calibration, RingInfo};
use crate::ring::layout::Kind;
use crate::ring::record::Record;
use crate::ring::writer::Value;

/// An annotation's value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(untagged))]
pub enum AnnotationValue {
    /// Event name or string value.
    Text(String),
    /// Integer value.
    Integer(i64),
}

/// One annotation, owned, in dump/JSON form.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "camelCase"))]
pub struct Annotation {
    /// Trace id, 16 lowercase hex digits.
    pub trace_id: String,
    /// Span id, 16 lowercase hex digits.
    pub id: String,
    /// Parent span id; absent for root spans.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub parent_id: Option<String>,
    /// Span name.
    pub name: String,
    /// Endpoint service name.
    pub service_name: String,
    /// Endpoint IPv4 address (or the address text if it is neither v4 nor v6).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub ipv4: Option<String>,
    /// Endpoint IPv6 address.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub ipv6: Option<String>,
    /// Endpoint port.
    pub port: u16,
    /// Epoch microseconds (absent if the ring's clock calibration is unusable).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub timestamp: Option<u64>,
    /// `event`, `string` or `integer`.
    pub kind: Kind,
    /// The event (for `event`) or the value.
    pub value: AnnotationValue,
    /// The key (key/value kinds only).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub key: Option<String>,
    /// Force-sampled trace.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "std::ops::Not::not"))]
    pub debug: bool,
    /// Writer process id.
    pub pid: u32,
    /// Ring (CPU) the record came from.
    pub cpu: u32,
}

/// 16 lowercase hex digits.
pub fn hex_id(id: u64) -> String {
    format!("{id:016x}")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Annotation {
    /// Decodes a ring record using its ring's identity and clock
    /// calibration: one annotation, or two for a span record (its
    /// [`START`](crate::trace::START) and [`END`](crate::trace::END) events).
    pub fn from_record(
        r: &Record<'_>,
        ring: &RingInfo,
        calibration: Option<&Calibration>,
    ) -> impl Iterator<Item = Annotation> {
        let to_us = |raw| {
            calibration
                .and_then(|c| c.to_unix_ns(raw))
                .map(|ns| ns / 1000)
        };
        let first = Annotation::decode(r, ring, to_us(r.timestamp_raw));
        let end = (r.kind == Kind::Span).then(|| Annotation {
            timestamp: to_us(r.end_raw),
            value: AnnotationValue::Text(crate::trace::END.into()),
            ..first.clone()
        });
        std::iter::once(first).chain(end)
    }

    /// The annotation of a record, at `timestamp` (epoch µs); for a span
    /// record, its start event.
    fn decode(r: &Record<'_>, ring: &RingInfo, timestamp: Option<u64>) -> Annotation {
        let ip = text(r.ip);
        let is_v6 = ip.parse::<std::net::Ipv6Addr>().is_ok();
        let (kind, value, key) = match (r.kind, r.value) {
            (Kind::Span, _) => (
                Kind::Event,
                AnnotationValue::Text(crate::trace::START.into()),
                None,
            ),
            (_, Value::None) => (r.kind, AnnotationValue::Text(text(r.key)), None),
            (_, Value::Str(v)) => (r.kind, AnnotationValue::Text(text(v)), Some(text(r.key))),
            (_, Value::Int(i)) => (r.kind, AnnotationValue::Integer(i), Some(text(r.key))),
        };
        Annotation {
            trace_id: hex_id(r.trace_id),
            id: hex_id(r.span_id),
            parent_id: (r.parent_id != 0).then(|| hex_id(r.parent_id)),
            name: text(r.name),
            service_name: text(r.service),
            ipv4: (!is_v6).then(|| ip.clone()),
            ipv6: is_v6.then_some(ip),
            port: r.port,
            timestamp,
            kind,
            value,
            key,
            debug: r.debug(),
            pid: ring.pid,
            cpu: ring.cpu,
        }
    }
}

impl fmt::Display for Annotation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.timestamp {
            Some(us) => write!(f, "{}.{:06}", us / 1_000_000, us % 1_000_000)?,
            None => f.write_str("?")?,
        }
        let ip = self.ipv4.as_deref().or(self.ipv6.as_deref()).unwrap_or("");
        write!(
            f,
            " pid={} cpu={} trace={} span={} parent={} {}@{}:{} [{}] ",
            self.pid,
            self.cpu,
            self.trace_id,
            self.id,
            self.parent_id.as_deref().unwrap_or("-"),
            self.service_name,
            ip,
            self.port,
            self.name
        )?;
        let v = match &self.value {
            AnnotationValue::Text(t) => format!("{t:?}"),
            AnnotationValue::Integer(i) => i.to_string(),
        };
        match &self.key {
            None => write!(f, "event {v}"),
            Some(k) => write!(f, "{k:?}={v}"),
        }?;
        if self.debug {
            f.write_str(" debug")?;
        }
        Ok(())
    }
}
