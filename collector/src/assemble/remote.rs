//! Remote endpoints of assembled spans (v2 `remoteEndpoint`), following
//! Zipkin's v1 conversion (`V1SpanConverter`).
//!
//! Two sources, in this order:
//! 1. *Address annotations*: a key/value annotation with key `sa` (server
//!    address, for a CLIENT side), `ca` (client address, for a SERVER side)
//!    or `ma` (message broker, for a PRODUCER/CONSUMER side) and a string
//!    value `[service@]host[:port]` (host: IPv4, IPv6, or `[IPv6]` with a
//!    port). A side without core annotations takes `sa`, else `ca`, else
//!    `ma`. An address annotation that does not parse, or that its side's
//!    kind does not use, stays a tag (nothing is dropped).
//! 2. *The other side of a shared span*: a CLIENT side's remote endpoint is
//!    the SERVER side's local endpoint (as if the client had recorded `sa`)
//!    and the other way round (`ca`).
//!
//! As Zipkin does for `ca` (Finagle's client-port addresses), a remote
//! endpoint from `ca` or from the other side loses its service name when it
//! is the local service's own, so a loopback call does not make a
//! self-link.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::model::{Endpoint, SpanKind};

/// Address annotation keys, in the order of [`Addresses`].
pub(super) const KEYS: [&str; 3] = ["sa", "ca", "ma"];

/// The address annotations of one side: (parsed, original text) per key.
pub(super) type Addresses = [Option<(Endpoint, String)>; 3];

/// The slot of an address annotation key (`sa`, `ca`, `ma`).
pub(super) fn slot(key: &str) -> Option<usize> {
    KEYS.iter().position(|k| *k == key)
}

/// Parses `[service@]host[:port]`; `None` when it is not an address.
pub(super) fn parse_address(text: &str) -> Option<Endpoint> {
    let (service, hostport) = match text.rsplit_once('@') {
        Some((s, h)) => (Some(s.trim()), h.trim()),
        None => (None, text.trim()),
    };
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse::<u16>().ok()?),
        };
        (host, port)
    } else if hostport.parse::<Ipv6Addr>().is_ok() {
        (hostport, None)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p.parse::<u16>().ok()?)),
            None => (hostport, None),
        }
    };
    let mut ep = Endpoint {
        service_name: service.filter(|s| !s.is_empty()).map(str::to_lowercase),
        port: port.filter(|p| *p != 0),
        ..Endpoint::default()
    };
    if !host.is_empty() {
        if let Ok(v4) = host.parse::<Ipv4Addr>() {
            ep.ipv4 = Some(v4.to_string());
        } else {
            ep.ipv6 = Some(host.parse::<Ipv6Addr>().ok()?.to_string());
        }
    }
    (ep != Endpoint::default()).then_some(ep)
}

/// Which address slot a side of `kind` uses (`None`: the first present).
fn slot_for(kind: Option<SpanKind>) -> Option<usize> {
    match kind {
        Some(SpanKind::Client) => Some(0),
        Some(SpanKind::Server) => Some(1),
        Some(SpanKind::Producer | SpanKind::Consumer) => Some(2),
        None => None,
    }
}

/// The remote endpoint of a side of `kind` recorded at `local`, with its
/// address annotations and the other side's endpoint (`peer`), and the
/// slot of the address annotation used (the others stay tags).
pub(super) fn remote_endpoint(
    kind: Option<SpanKind>,
    local: Option<&Endpoint>,
    addresses: &Addresses,
    peer: Option<&Endpoint>,
) -> (Option<Endpoint>, Option<usize>) {
    let used = match slot_for(kind) {
        Some(s) => addresses[s].as_ref().map(|_| s),
        None => addresses.iter().position(Option::is_some),
    };
    let (mut ep, strip) = match used {
        Some(s) => (addresses[s].as_ref().map(|(e, _)| e.clone()), s == 1),
        None => (peer.cloned(), true),
    };
    if let Some(e) = ep.as_mut() {
        let local_service = local.and_then(|l| l.service_name.as_deref());
        if strip && e.service_name.is_some() && e.service_name.as_deref() == local_service {
            e.service_name = None;
        }
    }
    (ep.filter(|e| *e != Endpoint::default()), used)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(
        service: Option<&str>,
        v4: Option<&str>,
        v6: Option<&str>,
        port: Option<u16>,
    ) -> Endpoint {
        Endpoint {
            service_name: service.map(Into::into),
            ipv4: v4.map(Into::into),
            ipv6: v6.map(Into::into),
            port,
        }
    }

    #[test]
    fn addresses_parse_with_optional_service_and_port() {
        let cases = [
            (
                "OSD@10.0.0.2:6800",
                Some(ep(Some("osd"), Some("10.0.0.2"), None, Some(6800))),
            ),
            ("10.0.0.2", Some(ep(None, Some("10.0.0.2"), None, None))),
            ("osd@", Some(ep(Some("osd"), None, None, None))),
            ("::1", Some(ep(None, None, Some("::1"), None))),
            (
                "mon@[fe80::1]:3300",
                Some(ep(Some("mon"), None, Some("fe80::1"), Some(3300))),
            ),
            ("10.0.0.2:0", Some(ep(None, Some("10.0.0.2"), None, None))),
            ("", None),
            ("@", None),
            ("osd@host.example:80", None),
            ("10.0.0.2:99999", None),
            ("[::1", None),
            ("[::1]x", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_address(text), want, "{text:?}");
        }
    }

    #[test]
    fn the_kind_picks_the_address_and_the_peer_is_the_fallback() {
        let sa = ep(Some("osd"), Some("10.0.0.2"), None, None);
        let ca = ep(Some("client"), Some("10.0.0.1"), None, None);
        let addrs: Addresses = [
            Some((sa.clone(), "osd@10.0.0.2".into())),
            Some((ca.clone(), "x".into())),
            None,
        ];
        let none: Addresses = Default::default();
        let local = ep(Some("client"), None, None, None);
        assert_eq!(
            remote_endpoint(Some(SpanKind::Client), Some(&local), &addrs, None),
            (Some(sa.clone()), Some(0))
        );
        // ca naming the local service loses the name (Zipkin's Finagle rule).
        assert_eq!(
            remote_endpoint(Some(SpanKind::Server), Some(&local), &addrs, None),
            (Some(ep(None, Some("10.0.0.1"), None, None)), Some(1))
        );
        assert_eq!(
            remote_endpoint(None, None, &addrs, None),
            (Some(sa.clone()), Some(0))
        );
        assert_eq!(
            remote_endpoint(Some(SpanKind::Producer), None, &addrs, None),
            (None, None)
        );
        // Without address annotations: the other side; a loopback peer
        // keeps only its address.
        let peer = ep(Some("osd"), Some("10.0.0.2"), None, Some(6800));
        assert_eq!(
            remote_endpoint(Some(SpanKind::Client), Some(&local), &none, Some(&peer)),
            (Some(peer.clone()), None)
        );
        let osd = ep(Some("osd"), None, None, None);
        assert_eq!(
            remote_endpoint(Some(SpanKind::Server), Some(&osd), &none, Some(&peer)),
            (Some(ep(None, Some("10.0.0.2"), None, Some(6800))), None)
        );
        assert_eq!(
            remote_endpoint(Some(SpanKind::Server), Some(&osd), &none, Some(&osd)),
            (None, None)
        );
    }
}
