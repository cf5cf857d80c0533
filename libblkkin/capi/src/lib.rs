//! The ceph/blkin C ABI (`zipkin_c.h`) over blkkin: `libblkin.so`, `libblkin.a`.
//!
//! Same structs, functions, constants and semantics as ceph/blkin, so daemons
//! instrumented against it rebuild unchanged with `-lblkin`:
//! negative errno on bad arguments, trace id 0 means "not traced", the packed
//! form is 24 bytes big-endian, a NULL endpoint in `blkin_init_child` inherits
//! the parent's. Caller strings are only read during the call.
//!
//! Deliberate differences (upstream bugs fixed) are listed in
//! docs/C_API.md. The whole file is FFI: every function takes raw pointers
//! from C and checks them for NULL before use; beyond that the C contract
//! (valid, NUL-terminated strings) is the caller's.
#![allow(non_camel_case_types)]
#![allow(clippy::missing_safety_doc)] // the C header documents the contract

use std::ffi::{c_char, c_int, CStr};

use blkkin::recorder::{self, RecordError};
use blkkin::ring::{Kind, RecordIn, Value, WriteError};

/// `struct blkin_endpoint`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct blkin_endpoint {
    /// IP address as text.
    pub ip: *const c_char,
    /// Port (signed, as upstream; stored as its 16-bit pattern).
    pub port: i16,
    /// Service name.
    pub name: *const c_char,
}

/// `struct blkin_trace_info`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct blkin_trace_info {
    /// Trace id; 0 = not traced.
    pub trace_id: i64,
    /// Span id.
    pub span_id: i64,
    /// Parent span id; 0 for roots.
    pub parent_span_id: i64,
}

/// `struct blkin_trace_info_packed`: the ids big-endian, 24 bytes, no padding.
#[repr(C, packed)]
#[derive(Debug, Clone, Copy, Default)]
pub struct blkin_trace_info_packed {
    /// Big-endian trace id.
    pub trace_id: u64,
    /// Big-endian span id.
    pub span_id: u64,
    /// Big-endian parent span id.
    pub parent_span_id: u64,
}

/// `struct blkin_trace`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct blkin_trace {
    /// Span name.
    pub name: *const c_char,
    /// Ids.
    pub info: blkin_trace_info,
    /// Default endpoint of its annotations.
    pub endpoint: *const blkin_endpoint,
}

/// `ANNOT_STRING`.
pub const ANNOT_STRING: c_int = 0;
/// `ANNOT_INTEGER`.
pub const ANNOT_INTEGER: c_int = 1;
/// `ANNOT_TIMESTAMP`.
pub const ANNOT_TIMESTAMP: c_int = 2;

/// The anonymous union of `struct blkin_annotation`.
#[repr(C)]
#[derive(Clone, Copy)]
pub union blkin_annotation_value {
    /// String value (or the event of a timestamp annotation).
    pub val_str: *const c_char,
    /// Integer value.
    pub val_int: i64,
}

/// `struct blkin_annotation`. The type is read as a plain int so that a
/// garbage value from C is rejected instead of being undefined behaviour.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct blkin_annotation {
    /// `blkin_annotation_type`.
    pub type_: c_int,
    /// Key (NULL for timestamps).
    pub key: *const c_char,
    /// Value.
    pub value: blkin_annotation_value,
    /// Endpoint; NULL means the trace's.
    pub endpoint: *const blkin_endpoint,
}

/// A `const char *const` exported to C.
#[repr(transparent)]
pub struct ConstStr(*const c_char);
// SAFETY: points to an immutable static string literal.
unsafe impl Sync for ConstStr {}

macro_rules! core_annotations {
    ($($name:ident = $lit:literal),* $(,)?) => {$(
        #[doc = concat!("`", stringify!($name), "`: \"", $lit, "\"")]
        #[no_mangle]
        pub static $name: ConstStr = ConstStr(concat!($lit, "\0").as_ptr() as *const c_char);
    )*};
}

core_annotations! {
    CLIENT_SEND = "cs", CLIENT_RECV = "cr", SERVER_SEND = "ss", SERVER_RECV = "sr",
    WIRE_SEND = "ws", WIRE_RECV = "wr",
    CLIENT_SEND_FRAGMENT = "csf", CLIENT_RECV_FRAGMENT = "crf",
    SERVER_SEND_FRAGMENT = "ssf", SERVER_RECV_FRAGMENT = "srf",
}

const EINVAL: c_int = -libc::EINVAL;
static DEFAULT_IP: &CStr = c"0.0.0.0";

/// Initialises the library: reads the environment and creates this
/// process's rings. 0 on success, a negative errno if the rings cannot be
/// created (tracing is then off and every record is counted as dropped).
#[no_mangle]
pub extern "C" fn blkin_init() -> c_int {
    match recorder::init() {
        Ok(_) | Err(blkkin::InitError::InProgress) => 0,
        Err(blkkin::InitError::Io { source, .. }) => -source.raw_os_error().unwrap_or(libc::EIO),
        Err(blkkin::InitError::Failed) => -libc::EIO,
    }
}

fn new_root_info(forced: bool) -> blkin_trace_info {
    let ctx = if forced {
        blkkin::TraceContext::new_root_forced()
    } else {
        blkkin::TraceContext::new_root()
    };
    blkin_trace_info {
        trace_id: ctx.trace_id as i64,
        span_id: ctx.span_id as i64,
        parent_span_id: 0,
    }
}

/// Starts a new root trace (subject to sampling: an unsampled trace gets
/// trace id 0 and records nothing).
#[no_mangle]
pub unsafe extern "C" fn blkin_init_new_trace(
    new_trace: *mut blkin_trace,
    name: *const c_char,
    endpoint: *const blkin_endpoint,
) -> c_int {
    // SAFETY: forwarding the caller's pointers, checked there.
    unsafe { init_root(new_trace, name, endpoint, false) }
}

/// Like `blkin_init_new_trace`, but always sampled (bypasses `BLKIN_RATE` etc.).
#[no_mangle]
pub unsafe extern "C" fn blkin_init_new_trace_forced(
    new_trace: *mut blkin_trace,
    name: *const c_char,
    endpoint: *const blkin_endpoint,
) -> c_int {
    // SAFETY: forwarding the caller's pointers, checked there.
    unsafe { init_root(new_trace, name, endpoint, true) }
}

unsafe fn init_root(
    new_trace: *mut blkin_trace,
    name: *const c_char,
    endpoint: *const blkin_endpoint,
    forced: bool,
) -> c_int {
    // SAFETY: NULL checked; otherwise a caller-provided struct.
    let Some(t) = (unsafe { new_trace.as_mut() }) else {
        return EINVAL;
    };
    t.name = name;
    t.info = new_root_info(forced);
    t.endpoint = endpoint;
    0
}

/// Fills ids for a new root span (subject to sampling). NULL is ignored.
#[no_mangle]
pub unsafe extern "C" fn blkin_init_trace_info(trace_info: *mut blkin_trace_info) {
    // SAFETY: NULL checked; otherwise a caller-provided struct.
    if let Some(i) = unsafe { trace_info.as_mut() } {
        *i = new_root_info(false);
    }
}

fn child_info(parent: &blkin_trace_info) -> blkin_trace_info {
    if parent.trace_id == 0 {
        return blkin_trace_info::default(); // children of unsampled traces stay unsampled
    }
    blkin_trace_info {
        trace_id: parent.trace_id,
        span_id: blkkin::id::new_id() as i64,
        parent_span_id: parent.span_id,
    }
}

/// Initialises `child` as a child span of `parent_info`.
#[no_mangle]
pub unsafe extern "C" fn blkin_init_child_info(
    child: *mut blkin_trace,
    parent_info: *const blkin_trace_info,
    endpoint: *const blkin_endpoint,
    child_name: *const c_char,
) -> c_int {
    // SAFETY: NULL checked; otherwise caller-provided structs.
    let (Some(c), Some(p)) = (unsafe { child.as_mut() }, unsafe { parent_info.as_ref() }) else {
        return EINVAL;
    };
    if endpoint.is_null() {
        return EINVAL;
    }
    c.info = child_info(p);
    c.name = child_name;
    c.endpoint = endpoint;
    0
}

/// Initialises `child` as a child span of `parent`; a NULL endpoint inherits the parent's.
#[no_mangle]
pub unsafe extern "C" fn blkin_init_child(
    child: *mut blkin_trace,
    parent: *const blkin_trace,
    endpoint: *const blkin_endpoint,
    child_name: *const c_char,
) -> c_int {
    // SAFETY: NULL checked; otherwise a caller-provided struct.
    let Some(p) = (unsafe { parent.as_ref() }) else {
        return EINVAL;
    };
    let endpoint = if endpoint.is_null() {
        p.endpoint
    } else {
        endpoint
    };
    let info = p.info;
    // SAFETY: forwarding the caller's pointers; `info` is a local copy.
    unsafe { blkin_init_child_info(child, &info, endpoint, child_name) }
}

/// Fills an endpoint. A NULL ip becomes "0.0.0.0".
#[no_mangle]
pub unsafe extern "C" fn blkin_init_endpoint(
    endpoint: *mut blkin_endpoint,
    ip: *const c_char,
    port: i16,
    name: *const c_char,
) -> c_int {
    // SAFETY: NULL checked; otherwise a caller-provided struct.
    let Some(e) = (unsafe { endpoint.as_mut() }) else {
        return EINVAL;
    };
    e.ip = if ip.is_null() {
        DEFAULT_IP.as_ptr()
    } else {
        ip
    };
    e.port = port;
    e.name = name;
    0
}

/// Fills a key/string annotation.
#[no_mangle]
pub unsafe extern "C" fn blkin_init_string_annotation(
    annotation: *mut blkin_annotation,
    key: *const c_char,
    val: *const c_char,
    endpoint: *const blkin_endpoint,
) -> c_int {
    // SAFETY: NULL checked; otherwise a caller-provided struct.
    let Some(a) = (unsafe { annotation.as_mut() }) else {
        return EINVAL;
    };
    if key.is_null() || val.is_null() {
        return EINVAL;
    }
    *a = blkin_annotation {
        type_: ANNOT_STRING,
        key,
        value: blkin_annotation_value { val_str: val },
        endpoint,
    };
    0
}

/// Fills a key/integer annotation.
#[no_mangle]
pub unsafe extern "C" fn blkin_init_integer_annotation(
    annotation: *mut blkin_annotation,
    key: *const c_char,
    val: i64,
    endpoint: *const blkin_endpoint,
) -> c_int {
    // SAFETY: NULL checked; otherwise a caller-provided struct.
    let Some(a) = (unsafe { annotation.as_mut() }) else {
        return EINVAL;
    };
    if key.is_null() {
        return EINVAL;
    }
    *a = blkin_annotation {
        type_: ANNOT_INTEGER,
        key,
        value: blkin_annotation_value { val_int: val },
        endpoint,
    };
    0
}

/// Fills a timestamp annotation.
#[no_mangle]
pub unsafe extern "C" fn blkin_init_timestamp_annotation(
    annotation: *mut blkin_annotation,
    event: *const c_char,
    endpoint: *const blkin_endpoint,
) -> c_int {
    // SAFETY: NULL checked; otherwise a caller-provided struct.
    let Some(a) = (unsafe { annotation.as_mut() }) else {
        return EINVAL;
    };
    if event.is_null() {
        return EINVAL;
    }
    *a = blkin_annotation {
        type_: ANNOT_TIMESTAMP,
        key: std::ptr::null(),
        value: blkin_annotation_value { val_str: event },
        endpoint,
    };
    0
}

/// Bytes of a C string.
///
/// # Safety
/// `p` is non-NULL and NUL-terminated.
#[inline(always)]
unsafe fn bytes<'a>(p: *const c_char) -> &'a [u8] {
    // SAFETY: per the contract.
    unsafe { CStr::from_ptr(p) }.to_bytes()
}

/// The bytes of four C strings (a record's service, span name, IP and key).
///
/// The four are measured together, without a call, when all are shorter
/// than 16 bytes (trace names are): each is loaded as one unaligned 16-byte
/// block and compared with zero (SSE2), in one assembly block, with one
/// branch before (may a block cross a page?) and one after (a string
/// without NUL in its block?); either sends all four to glibc's `strlen`.
///
/// # Safety
/// Each pointer is non-NULL and NUL-terminated.
#[inline(always)]
unsafe fn strings<'a>(p: [*const c_char; 4]) -> [&'a [u8]; 4] {
    #[cfg(target_arch = "x86_64")]
    {
        // Bit 12 of `s ^ (s + 15)` is set when the 16 bytes at `s` cross
        // into another page: then the general path measures all four.
        let crossing = p.iter().fold(0, |acc, &s| {
            acc | (s as usize ^ (s as usize).wrapping_add(15))
        });
        if crossing & 4096 == 0 {
            let m: [u32; 4];
            // SAFETY: the 16 bytes at each pointer lie in the page of its
            // first byte (checked above), so the reads cannot fault even
            // where they pass a string's end, as glibc's own `strlen` reads.
            // Only registers are written.
            unsafe {
                let (m0, m1, m2, m3): (u32, u32, u32, u32);
                core::arch::asm!(
                    "pxor {z}, {z}",
                    "movdqu {x0}, xmmword ptr [{p0}]",
                    "movdqu {x1}, xmmword ptr [{p1}]",
                    "movdqu {x2}, xmmword ptr [{p2}]",
                    "movdqu {x3}, xmmword ptr [{p3}]",
                    "pcmpeqb {x0}, {z}",
                    "pcmpeqb {x1}, {z}",
                    "pcmpeqb {x2}, {z}",
                    "pcmpeqb {x3}, {z}",
                    "pmovmskb {m0:e}, {x0}",
                    "pmovmskb {m1:e}, {x1}",
                    "pmovmskb {m2:e}, {x2}",
                    "pmovmskb {m3:e}, {x3}",
                    p0 = in(reg) p[0],
                    p1 = in(reg) p[1],
                    p2 = in(reg) p[2],
                    p3 = in(reg) p[3],
                    z = out(xmm_reg) _,
                    x0 = out(xmm_reg) _,
                    x1 = out(xmm_reg) _,
                    x2 = out(xmm_reg) _,
                    x3 = out(xmm_reg) _,
                    m0 = lateout(reg) m0,
                    m1 = lateout(reg) m1,
                    m2 = lateout(reg) m2,
                    m3 = lateout(reg) m3,
                    options(readonly, nostack, pure, preserves_flags),
                );
                m = [m0, m1, m2, m3];
            }
            // 32 without a NUL.
            let [l0, l1, l2, l3] = m.map(|m| m.trailing_zeros() as usize);
            if (l0 | l1 | l2 | l3) < 16 {
                // SAFETY: each has a NUL at its length (found above).
                let s = |p: *const c_char, len| unsafe {
                    std::slice::from_raw_parts(p as *const u8, len)
                };
                return [s(p[0], l0), s(p[1], l1), s(p[2], l2), s(p[3], l3)];
            }
        }
    }
    // SAFETY: per the contract.
    p.map(|s| unsafe { CStr::from_ptr(s) }.to_bytes())
}

/// Records an annotation of `trace`. The annotation's own endpoint wins over
/// the trace's. Returns 0 when recorded or when the trace is not sampled,
/// -EINVAL on bad arguments, -ENOBUFS when the ring was full, -EMSGSIZE when
/// the record exceeds the maximum record size, -EIO when the ring is corrupt,
/// -ENODEV when this process has no rings (drops of all kinds are counted).
#[no_mangle]
pub unsafe extern "C" fn blkin_record(
    trace: *const blkin_trace,
    annotation: *const blkin_annotation,
) -> c_int {
    // SAFETY: NULL checked; otherwise a caller-provided struct.
    let Some(a) = (unsafe { annotation.as_ref() }) else {
        return EINVAL;
    };
    // SAFETY: reading the union member the type says is active.
    let (kind, key, value) = unsafe {
        match a.type_ {
            ANNOT_STRING => (Kind::String, a.key, RawValue::Str(a.value.val_str)),
            ANNOT_INTEGER => (Kind::Integer, a.key, RawValue::Int(a.value.val_int)),
            ANNOT_TIMESTAMP => (Kind::Event, a.value.val_str, RawValue::None),
            _ => return EINVAL,
        }
    };
    // SAFETY: forwarding the caller's pointers, checked there.
    unsafe { record_raw(trace, a.endpoint, kind, key, value) }
}

/// `BLKIN_TIMESTAMP` in one call (what the macro uses): same checks and
/// result as `blkin_init_timestamp_annotation` + `blkin_record`.
#[no_mangle]
pub unsafe extern "C" fn blkin_record_event(
    trace: *const blkin_trace,
    endpoint: *const blkin_endpoint,
    event: *const c_char,
) -> c_int {
    // SAFETY: forwarding the caller's pointers, checked there.
    unsafe { record_raw(trace, endpoint, Kind::Event, event, RawValue::None) }
}

/// `BLKIN_KEYVAL_STRING` in one call.
#[no_mangle]
pub unsafe extern "C" fn blkin_record_string(
    trace: *const blkin_trace,
    endpoint: *const blkin_endpoint,
    key: *const c_char,
    val: *const c_char,
) -> c_int {
    // SAFETY: forwarding the caller's pointers, checked there.
    unsafe { record_raw(trace, endpoint, Kind::String, key, RawValue::Str(val)) }
}

/// `BLKIN_KEYVAL_INTEGER` in one call.
#[no_mangle]
pub unsafe extern "C" fn blkin_record_integer(
    trace: *const blkin_trace,
    endpoint: *const blkin_endpoint,
    key: *const c_char,
    val: i64,
) -> c_int {
    // SAFETY: forwarding the caller's pointers, checked there.
    unsafe { record_raw(trace, endpoint, Kind::Integer, key, RawValue::Int(val)) }
}

/// A value as it arrives from C.
#[derive(Clone, Copy)]
enum RawValue {
    None,
    Str(*const c_char),
    Int(i64),
}

/// The shared record path of every C entry point: NULL checks, endpoint
/// choice (the annotation's wins), then one ring write.
#[inline(always)]
unsafe fn record_raw(
    trace: *const blkin_trace,
    endpoint: *const blkin_endpoint,
    kind: Kind,
    key: *const c_char,
    value: RawValue,
) -> c_int {
    // SAFETY: NULL checked; otherwise a caller-provided struct.
    let Some(t) = (unsafe { trace.as_ref() }) else {
        return EINVAL;
    };
    if t.info.trace_id == 0 {
        return 0; // not sampled: the one branch an unsampled trace costs
    }
    let ep = if endpoint.is_null() {
        t.endpoint
    } else {
        endpoint
    };
    // SAFETY: NULL checked; otherwise a caller-provided struct.
    let Some(ep) = (unsafe { ep.as_ref() }) else {
        return EINVAL;
    };
    if t.name.is_null() || ep.ip.is_null() || ep.name.is_null() || key.is_null() {
        return EINVAL;
    }
    let value = match value {
        RawValue::Str(p) if p.is_null() => return EINVAL,
        // SAFETY: non-NULL, NUL-terminated per the C contract.
        RawValue::Str(p) => Value::Str(unsafe { bytes(p) }),
        RawValue::Int(i) => Value::Int(i),
        RawValue::None => Value::None,
    };
    // SAFETY: all four NULL-checked above, NUL-terminated per the C
    // contract. Over-long strings are rejected (and counted) by the writer.
    let [service, name, ip, key] = unsafe { strings([ep.name, t.name, ep.ip, key]) };
    let r = RecordIn {
        trace_id: t.info.trace_id as u64,
        span_id: t.info.span_id as u64,
        parent_id: t.info.parent_span_id as u64,
        port: ep.port as u16,
        flags: 0,
        kind,
        service,
        name,
        ip,
        key,
        value,
    };
    match recorder::record(&r) {
        Ok(()) => 0,
        Err(RecordError::Ring(WriteError::Full)) => -libc::ENOBUFS,
        Err(RecordError::Ring(WriteError::TooBig)) => -libc::EMSGSIZE,
        Err(RecordError::Ring(WriteError::Corrupt)) => -libc::EIO,
        Err(RecordError::NoRing) => -libc::ENODEV,
    }
}

/// Copies the trace's ids into `info`.
#[no_mangle]
pub unsafe extern "C" fn blkin_get_trace_info(
    trace: *const blkin_trace,
    info: *mut blkin_trace_info,
) -> c_int {
    // SAFETY: NULL checked; otherwise caller-provided structs.
    match (unsafe { trace.as_ref() }, unsafe { info.as_mut() }) {
        (Some(t), Some(i)) => {
            *i = t.info;
            0
        }
        _ => EINVAL,
    }
}

/// Sets the trace's ids from `info`.
#[no_mangle]
pub unsafe extern "C" fn blkin_set_trace_info(
    trace: *mut blkin_trace,
    info: *const blkin_trace_info,
) -> c_int {
    // SAFETY: NULL checked; otherwise caller-provided structs.
    match (unsafe { trace.as_mut() }, unsafe { info.as_ref() }) {
        (Some(t), Some(i)) => {
            t.info = *i;
            0
        }
        _ => EINVAL,
    }
}

/// Sets ids, name and endpoint of a trace at once.
#[no_mangle]
pub unsafe extern "C" fn blkin_set_trace_properties(
    trace: *mut blkin_trace,
    info: *const blkin_trace_info,
    name: *const c_char,
    endpoint: *const blkin_endpoint,
) -> c_int {
    // SAFETY: NULL checked; otherwise caller-provided structs.
    let (Some(t), Some(i)) = (unsafe { trace.as_mut() }, unsafe { info.as_ref() }) else {
        return EINVAL;
    };
    if name.is_null() || endpoint.is_null() {
        return EINVAL;
    }
    t.info = *i;
    t.name = name;
    t.endpoint = endpoint;
    0
}

/// Packs ids big-endian for the wire.
#[no_mangle]
pub unsafe extern "C" fn blkin_pack_trace_info(
    info: *const blkin_trace_info,
    pinfo: *mut blkin_trace_info_packed,
) -> c_int {
    // SAFETY: NULL checked; otherwise caller-provided structs (packed: written whole).
    let (Some(i), Some(p)) = (unsafe { info.as_ref() }, unsafe { pinfo.as_mut() }) else {
        return EINVAL;
    };
    *p = blkin_trace_info_packed {
        trace_id: (i.trace_id as u64).to_be(),
        span_id: (i.span_id as u64).to_be(),
        parent_span_id: (i.parent_span_id as u64).to_be(),
    };
    0
}

/// Unpacks big-endian ids from the wire.
#[no_mangle]
pub unsafe extern "C" fn blkin_unpack_trace_info(
    pinfo: *const blkin_trace_info_packed,
    info: *mut blkin_trace_info,
) -> c_int {
    // SAFETY: NULL checked; otherwise caller-provided structs. The packed
    // struct has alignment 1, so `as_ref` is valid for any address.
    let (Some(p), Some(i)) = (unsafe { pinfo.as_ref() }, unsafe { info.as_mut() }) else {
        return EINVAL;
    };
    let p = *p;
    *i = blkin_trace_info {
        trace_id: u64::from_be(p.trace_id) as i64,
        span_id: u64::from_be(p.span_id) as i64,
        parent_span_id: u64::from_be(p.parent_span_id) as i64,
    };
    0
}

/// Records dropped in this process because it had no rings (the other drop
/// counters live in the ring headers, shown by `blkkin dump`).
#[no_mangle]
pub extern "C" fn blkin_dropped_no_ring() -> u64 {
    blkkin::stats().lost_no_ring
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_c_header() {
        assert_eq!(std::mem::size_of::<blkin_trace_info_packed>(), 24);
        assert_eq!(std::mem::size_of::<blkin_trace_info>(), 24);
        assert_eq!(std::mem::size_of::<blkin_endpoint>(), 24);
        assert_eq!(std::mem::size_of::<blkin_trace>(), 40);
        assert_eq!(std::mem::size_of::<blkin_annotation>(), 32);
    }

    #[test]
    fn pack_is_big_endian_and_round_trips() {
        let info = blkin_trace_info {
            trace_id: 0x0102030405060708,
            span_id: -2,
            parent_span_id: 3,
        };
        let mut p = blkin_trace_info_packed::default();
        let mut back = blkin_trace_info::default();
        // SAFETY: valid pointers to locals.
        unsafe {
            assert_eq!(blkin_pack_trace_info(&info, &mut p), 0);
            let raw: [u8; 24] = std::mem::transmute(p);
            assert_eq!(&raw[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
            assert_eq!(blkin_unpack_trace_info(&p, &mut back), 0);
        }
        assert_eq!(back, info);
    }
}
