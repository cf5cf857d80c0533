//! Demo-like spans: the traces `blkkin demo`'s storage stack produces
//! (client → volume → mapper → blocker), seven spans per request with
//! RPC kinds, shared server spans, tags and annotations, generated
//! deterministically and fast enough not to dominate the measurement.

use std::collections::BTreeMap;

use blkkin_collector::model::{Annotation, Endpoint, Span, SpanKind};

/// 2024-02-28T22:00:00Z: the first hour of the generated spans.
pub const T0: u64 = 1_709_157_600_000_000;

/// Spans per request (trace).
pub const SPANS_PER_TRACE: u64 = 7;

const HOUR_US: u64 = 3_600_000_000;

/// Produces demo-like traces in time order, `per_hour` spans per hour
/// from [`T0`].
pub struct DemoSpans {
    next_trace: u64,
    per_hour: u64,
    rng: u64,
}

fn endpoint(service: &str, ip: &str, port: u16) -> Option<Endpoint> {
    Some(Endpoint {
        service_name: Some(service.to_string()),
        ipv4: Some(ip.to_string()),
        port: Some(port),
        ..Endpoint::default()
    })
}

impl DemoSpans {
    /// Starts at the first trace.
    pub fn new(per_hour: u64) -> Self {
        DemoSpans {
            next_trace: 0,
            per_hour: per_hour.max(SPANS_PER_TRACE),
            rng: 0x9e37_79b9_7f4a_7c15,
        }
    }

    fn below(&mut self, n: u64) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng % n
    }

    /// Appends the next trace's spans to `out`.
    pub fn push_trace(&mut self, out: &mut Vec<Span>) {
        let n = self.next_trace;
        self.next_trace += 1;
        // Traces evenly spread so that each hour holds `per_hour` spans.
        let start =
            T0 + ((n * SPANS_PER_TRACE) as u128 * HOUR_US as u128 / self.per_hour as u128) as u64;
        let trace_id = format!("{:016x}{:016x}", 0xb1c0_u64, n + 1);
        let id = |k: u64| format!("{:016x}", (n + 1) * 8 + k);
        let write = n.is_multiple_of(3);
        let op = if write { "write" } else { "read" };
        let failed = n % 25 == 24;
        let slow = n % 10 == 9;
        let disk = 40 + self.below(400) + if slow { 20_000 } else { 0 };
        let block = disk + 20 + self.below(60);
        let map = block + 20 + self.below(60);
        let volume = map + 30 + self.below(100);
        let client = volume + 30 + self.below(100);
        let offset = self.below(1 << 30) & !4095;
        let bytes = 4096 * (1 + self.below(16));
        let error = |tags: &mut BTreeMap<String, String>| {
            if failed {
                tags.insert("error".into(), "Input/output error".into());
            }
        };
        let span = |span_id: u64,
                    parent: Option<u64>,
                    kind: Option<SpanKind>,
                    name: &str,
                    ts: u64,
                    duration: u64,
                    local: Option<Endpoint>,
                    tags: BTreeMap<String, String>,
                    annotations: Vec<Annotation>| Span {
            trace_id: trace_id.clone(),
            parent_id: parent.map(id),
            id: id(span_id),
            kind,
            name: Some(name.to_string()),
            timestamp: Some(ts),
            duration: Some(duration),
            local_endpoint: local,
            annotations,
            tags,
            shared: (kind == Some(SpanKind::Server)).then_some(true),
            ..Span::default()
        };
        let mut client_tags = BTreeMap::from([("request".to_string(), n.to_string())]);
        error(&mut client_tags);
        out.push(span(
            1,
            None,
            Some(SpanKind::Client),
            op,
            start,
            client,
            endpoint("client", "10.0.0.1", 0),
            client_tags,
            Vec::new(),
        ));
        let mut volume_tags = BTreeMap::from([
            ("volume".to_string(), format!("vol-{}", n % 8)),
            ("offset".to_string(), offset.to_string()),
            ("extent".to_string(), (offset >> 22).to_string()),
        ]);
        error(&mut volume_tags);
        out.push(span(
            1,
            None,
            Some(SpanKind::Server),
            op,
            start + 15,
            volume,
            endpoint("volume", "10.0.0.2", 3260),
            volume_tags,
            Vec::new(),
        ));
        let t_map = start + 25;
        out.push(span(
            2,
            Some(1),
            Some(SpanKind::Client),
            "map",
            t_map,
            map + 10,
            endpoint("volume", "10.0.0.2", 3260),
            BTreeMap::new(),
            Vec::new(),
        ));
        out.push(span(
            2,
            Some(1),
            Some(SpanKind::Server),
            "map",
            t_map + 5,
            map,
            endpoint("mapper", "10.0.0.3", 6789),
            BTreeMap::new(),
            Vec::new(),
        ));
        let t_block = t_map + 15;
        out.push(span(
            3,
            Some(2),
            Some(SpanKind::Client),
            "block_io",
            t_block,
            block + 10,
            endpoint("mapper", "10.0.0.3", 6789),
            BTreeMap::new(),
            Vec::new(),
        ));
        out.push(span(
            3,
            Some(2),
            Some(SpanKind::Server),
            "block_io",
            t_block + 5,
            block,
            endpoint("blocker", "10.0.0.4", 6800),
            BTreeMap::new(),
            Vec::new(),
        ));
        let t_disk = t_block + 12;
        let mut disk_tags = BTreeMap::from([
            ("bytes".to_string(), bytes.to_string()),
            ("op".to_string(), op.to_string()),
        ]);
        error(&mut disk_tags);
        let mut annotations = vec![Annotation {
            timestamp: t_disk,
            value: "start".into(),
        }];
        if slow {
            annotations.push(Annotation {
                timestamp: t_disk + 10,
                value: "slow_path".into(),
            });
        }
        annotations.push(Annotation {
            timestamp: t_disk + disk,
            value: "end".into(),
        });
        out.push(span(
            4,
            Some(3),
            None,
            "disk_io",
            t_disk,
            disk,
            endpoint("blocker", "10.0.0.4", 6800),
            disk_tags,
            annotations,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_look_like_the_demo_and_fill_hours_evenly() {
        let mut g = DemoSpans::new(700);
        let mut spans = Vec::new();
        for _ in 0..200 {
            g.push_trace(&mut spans);
        }
        assert_eq!(spans.len(), 1400);
        let services: std::collections::BTreeSet<_> = spans
            .iter()
            .filter_map(|s| s.local_endpoint.as_ref()?.service_name.clone())
            .collect();
        assert_eq!(services.len(), 4);
        assert!(spans.iter().any(|s| !s.annotations.is_empty()));
        assert!(spans.iter().any(|s| s.tags.contains_key("error")));
        // 700 spans per hour: trace 100 (span 700) starts the second hour.
        let first_of_hour_2 = spans
            .iter()
            .position(|s| s.timestamp.unwrap() >= T0 + HOUR_US)
            .unwrap();
        assert_eq!(first_of_hour_2, 700);
    }
}
