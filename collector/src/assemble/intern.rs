//! Cheap identities for the assembler's hot path: a seeded hasher for span
//! keys and interned endpoints and span names, so a new side costs no
//! allocation when its endpoint and name were seen before.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use blkkin::annotation::Annotation;

use crate::model::Endpoint;

/// Most distinct endpoints (and span names) remembered; past this the table
/// starts over (sides keep what they hold), so hostile input cannot grow it.
const MAX_INTERNED: usize = 4096;

/// `a × b` folded to 64 bits (the mixing step of wyhash/foldhash).
fn fold_mul(a: u64, b: u64) -> u64 {
    let full = u128::from(a) * u128::from(b);
    (full as u64) ^ ((full >> 64) as u64)
}

/// Hashes (trace id, span id) keys: a folded multiply with a per-assembler
/// random seed (ids are random already; the seed keeps crafted ids from
/// colliding on purpose). Several times cheaper than SipHash.
#[derive(Debug, Clone, Copy)]
pub(super) struct KeyHash(u64);

impl KeyHash {
    pub(super) fn new() -> KeyHash {
        KeyHash(RandomState::new().hash_one(0x5eed_u64) | 1)
    }
}

impl BuildHasher for KeyHash {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(self.0)
    }
}

/// The hasher of [`KeyHash`].
#[derive(Debug)]
pub(super) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = fold_mul(self.0 ^ x, 0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Where annotations were recorded, as the record says (service name, IP
/// text, port), with its v2 endpoint computed once.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Origin {
    service: Box<str>,
    ip: Option<Box<str>>,
    port: u16,
    /// The v2 local endpoint (`None` when service, IP and port are empty).
    pub(super) endpoint: Option<Endpoint>,
}

fn raw_ip(a: &Annotation) -> Option<&str> {
    a.ipv4.as_deref().or(a.ipv6.as_deref())
}

impl Origin {
    fn of(service: &str, ip: Option<&str>, port: u16) -> Origin {
        let text = ip.unwrap_or("");
        let ep = Endpoint {
            service_name: (!service.is_empty()).then(|| service.to_lowercase()),
            ipv4: text.parse::<Ipv4Addr>().ok().map(|a| a.to_string()),
            ipv6: text.parse::<Ipv6Addr>().ok().map(|a| a.to_string()),
            port: (port != 0).then_some(port),
        };
        Origin {
            service: service.into(),
            ip: ip.map(Into::into),
            port,
            endpoint: (ep != Endpoint::default()).then_some(ep),
        }
    }

    /// (service name, IP text, port) as recorded.
    pub(super) fn parts(&self) -> (&str, Option<&str>, u16) {
        (&self.service, self.ip.as_deref(), self.port)
    }

    /// Whether `a` was recorded here.
    pub(super) fn matches(&self, a: &Annotation) -> bool {
        self.port == a.port && *self.service == *a.service_name && self.ip.as_deref() == raw_ip(a)
    }
}

/// Interned origins and lower-cased span names.
#[derive(Debug)]
pub(super) struct Interner {
    hash: RandomState,
    origins: HashMap<u64, Arc<Origin>, KeyHash>,
    /// raw name hash → (raw name, lower-cased name).
    names: HashMap<u64, (Box<str>, Arc<str>), KeyHash>,
}

impl Interner {
    pub(super) fn new() -> Interner {
        Interner {
            hash: RandomState::new(),
            origins: HashMap::with_hasher(KeyHash::new()),
            names: HashMap::with_hasher(KeyHash::new()),
        }
    }

    /// The origin of `a`, shared with earlier sides recorded there.
    pub(super) fn origin(&mut self, a: &Annotation) -> Arc<Origin> {
        self.origin_of(&a.service_name, raw_ip(a), a.port)
    }

    /// The origin (service name, IP text, port), shared with earlier sides
    /// recorded there.
    pub(super) fn origin_of(&mut self, service: &str, ip: Option<&str>, port: u16) -> Arc<Origin> {
        let h = self.hash.hash_one((service, ip, port));
        if let Some(o) = self
            .origins
            .get(&h)
            .filter(|o| o.parts() == (service, ip, port))
        {
            return o.clone();
        }
        if self.origins.len() >= MAX_INTERNED {
            self.origins.clear();
        }
        let o = Arc::new(Origin::of(service, ip, port));
        self.origins.insert(h, o.clone());
        o
    }

    /// `raw` lower-cased, shared with earlier sides of the same name.
    pub(super) fn name(&mut self, raw: &str) -> Arc<str> {
        let h = self.hash.hash_one(raw);
        if let Some((r, lower)) = self.names.get(&h) {
            if **r == *raw {
                return lower.clone();
            }
        }
        if self.names.len() >= MAX_INTERNED {
            self.names.clear();
        }
        let lower: Arc<str> = raw.to_lowercase().into();
        self.names.insert(h, (raw.into(), lower.clone()));
        lower
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn key_hash_spreads_sequential_ids() {
        let b = KeyHash::new();
        let hashes: HashSet<u64> = (0..10_000u64)
            .map(|i| b.hash_one((1u64, i)) >> 50)
            .collect();
        // 14 top bits of 10 000 sequential keys: nearly all distinct buckets.
        assert!(hashes.len() > 4_000, "{}", hashes.len());
    }

    #[test]
    fn interned_names_and_origins_are_shared_and_bounded() {
        let mut i = Interner::new();
        let a = i.name("Osd_Op");
        let b = i.name("Osd_Op");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(&*a, "osd_op");
        assert_ne!(&*i.name("osd_op2"), "osd_op");
        for n in 0..MAX_INTERNED + 10 {
            i.name(&format!("n{n}"));
        }
        assert!(i.names.len() <= MAX_INTERNED);
    }
}
