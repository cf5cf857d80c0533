//! Carrying a [`TraceContext`] across process boundaries.
//!
//! * The 24-byte packed form of ceph/blkin (`struct blkin_trace_info_packed`):
//!   trace id, span id, parent span id, each big-endian.
//! * B3 HTTP headers (<https://github.com/openzipkin/b3-propagation>): the
//!   multi-header form (`X-B3-TraceId`, ...) and the single `b3` header.
//!   128-bit trace ids are accepted; the high 64 bits are dropped.

use crate::trace::TraceContext;

/// Size of the packed form.
pub const PACKED_LEN: usize = 24;

/// Why a propagated context could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PropagationError {
    /// The packed form is not 24 bytes.
    #[error("packed trace info must be {PACKED_LEN} bytes, got {0}")]
    PackedLength(usize),
    /// A B3 id is not 16 or 32 lowercase/uppercase hex digits.
    #[error("invalid B3 id {0:?}")]
    BadId(String),
    /// A B3 header is structurally wrong.
    #[error("invalid b3 header {0:?}")]
    BadHeader(String),
}

impl TraceContext {
    /// The ceph/blkin packed form (big-endian ids). The debug flag is not carried.
    pub fn to_packed(&self) -> [u8; PACKED_LEN] {
        let mut out = [0u8; PACKED_LEN];
        out[..8].copy_from_slice(&self.trace_id.to_be_bytes());
        out[8..16].copy_from_slice(&self.span_id.to_be_bytes());
        out[16..].copy_from_slice(&self.parent_id.to_be_bytes());
        out
    }

    /// Reads the packed form.
    pub fn from_packed(bytes: &[u8]) -> Result<TraceContext, PropagationError> {
        let b: &[u8; PACKED_LEN] = bytes
            .try_into()
            .map_err(|_| PropagationError::PackedLength(bytes.len()))?;
        let id = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Ok(TraceContext {
            trace_id: id(0),
            span_id: id(8),
            parent_id: id(16),
            debug: false,
        })
    }

    /// B3 multi-header form: `(name, value)` pairs to set on a request.
    pub fn to_b3_headers(&self) -> Vec<(&'static str, String)> {
        if !self.is_sampled() {
            return vec![("X-B3-Sampled", "0".to_string())];
        }
        let mut h = vec![
            ("X-B3-TraceId", format!("{:016x}", self.trace_id)),
            ("X-B3-SpanId", format!("{:016x}", self.span_id)),
        ];
        if self.parent_id != 0 {
            h.push(("X-B3-ParentSpanId", format!("{:016x}", self.parent_id)));
        }
        if self.debug {
            h.push(("X-B3-Flags", "1".to_string()));
        } else {
            h.push(("X-B3-Sampled", "1".to_string()));
        }
        h
    }

    /// Reads B3 multi-headers through `get` (case-insensitive lookup is the
    /// caller's; names are given in canonical case). `Ok(None)` if absent.
    pub fn from_b3_headers<'h>(
        get: impl Fn(&str) -> Option<&'h str>,
    ) -> Result<Option<TraceContext>, PropagationError> {
        let debug = get("X-B3-Flags").map(str::trim) == Some("1");
        let sampled = get("X-B3-Sampled").map(str::trim);
        if !debug && matches!(sampled, Some("0") | Some("false")) {
            return Ok(Some(TraceContext::UNSAMPLED));
        }
        let (Some(t), Some(s)) = (get("X-B3-TraceId"), get("X-B3-SpanId")) else {
            return Ok(None);
        };
        let parent = get("X-B3-ParentSpanId")
            .map(parse_id)
            .transpose()?
            .unwrap_or(0);
        Ok(Some(TraceContext {
            trace_id: parse_id(t)?,
            span_id: parse_id(s)?,
            parent_id: parent,
            debug,
        }))
    }

    /// The single `b3` header value.
    pub fn to_b3_single(&self) -> String {
        if !self.is_sampled() {
            return "0".to_string();
        }
        let flag = if self.debug { "d" } else { "1" };
        let mut v = format!("{:016x}-{:016x}-{flag}", self.trace_id, self.span_id);
        if self.parent_id != 0 {
            v.push_str(&format!("-{:016x}", self.parent_id));
        }
        v
    }

    /// Reads a single `b3` header value.
    pub fn from_b3_single(value: &str) -> Result<TraceContext, PropagationError> {
        let v = value.trim();
        let bad = || PropagationError::BadHeader(value.to_string());
        match v {
            "0" => return Ok(TraceContext::UNSAMPLED),
            "1" | "d" | "" => return Err(bad()), // a decision without ids: we cannot join it
            _ => {}
        }
        let parts: Vec<&str> = v.split('-').collect();
        if !(2..=4).contains(&parts.len()) {
            return Err(bad());
        }
        let debug = match parts.get(2) {
            None | Some(&"1") => false,
            Some(&"d") => true,
            Some(&"0") => return Ok(TraceContext::UNSAMPLED),
            Some(_) => return Err(bad()),
        };
        let parent = parts.get(3).map(|p| parse_id(p)).transpose()?.unwrap_or(0);
        Ok(TraceContext {
            trace_id: parse_id(parts[0])?,
            span_id: parse_id(parts[1])?,
            parent_id: parent,
            debug,
        })
    }
}

fn parse_id(s: &str) -> Result<u64, PropagationError> {
    let s = s.trim();
    let low = match s.len() {
        16 => s,
        32 => &s[16..],
        _ => return Err(PropagationError::BadId(s.to_string())),
    };
    if !low.bytes().all(|b| b.is_ascii_hexdigit()) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(PropagationError::BadId(s.to_string()));
    }
    let v = u64::from_str_radix(low, 16).map_err(|_| PropagationError::BadId(s.to_string()))?;
    if v == 0 {
        return Err(PropagationError::BadId(s.to_string()));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> TraceContext {
        TraceContext {
            trace_id: 0x0102030405060708,
            span_id: 0xa1b2c3d4e5f60718,
            parent_id: 0x1111,
            debug: false,
        }
    }

    #[test]
    fn packed_is_big_endian_and_round_trips() {
        let p = ctx().to_packed();
        assert_eq!(&p[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(TraceContext::from_packed(&p).unwrap(), ctx());
        assert_eq!(
            TraceContext::from_packed(&p[..23]),
            Err(PropagationError::PackedLength(23))
        );
    }

    #[test]
    fn b3_multi_round_trips() {
        let h = ctx().to_b3_headers();
        let get = |k: &str| h.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(TraceContext::from_b3_headers(get).unwrap(), Some(ctx()));
        let none: Option<&str> = None;
        assert_eq!(TraceContext::from_b3_headers(|_| none).unwrap(), None);
    }

    #[test]
    fn b3_single_round_trips_and_handles_flags() {
        let c = ctx();
        assert_eq!(
            c.to_b3_single(),
            "0102030405060708-a1b2c3d4e5f60718-1-0000000000001111"
        );
        assert_eq!(TraceContext::from_b3_single(&c.to_b3_single()).unwrap(), c);
        let d = TraceContext {
            debug: true,
            parent_id: 0,
            ..c
        };
        assert_eq!(TraceContext::from_b3_single(&d.to_b3_single()).unwrap(), d);
        assert_eq!(
            TraceContext::from_b3_single("0").unwrap(),
            TraceContext::UNSAMPLED
        );
        let wide = "463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312";
        assert_eq!(
            TraceContext::from_b3_single(wide).unwrap().trace_id,
            0x48485a3953bb6124
        );
        for bad in [
            "1",
            "zz-yy",
            "0102030405060708",
            "0102030405060708-a1b2c3d4e5f60718-x",
            "0000000000000000-0000000000000001",
        ] {
            assert!(TraceContext::from_b3_single(bad).is_err(), "{bad}");
        }
    }
}
