//! Service dependency links, the one linker of every back end (the
//! embedded store's `/api/v2/dependencies`, Cassandra's `dependency`
//! table): Zipkin's `DependencyLinker` rules. Build the span tree as
//! Zipkin's `SpanNode.Builder` does (the server half of a shared span hangs
//! under its client half; a span's parent is the shared server span of its
//! parent id at its endpoint when there is one, else the span with that
//! id), walk it breadth-first and count a call (and an error when tagged
//! `error`) per parent-service → child-service edge. Service names are
//! compared lower-cased, as Zipkin stores them.

use std::collections::{HashMap, VecDeque};

use crate::model::{Endpoint, Span, SpanKind};

/// The service of an endpoint, lower-cased; `None` when unnamed.
pub(crate) fn service_of(ep: Option<&Endpoint>) -> Option<String> {
    ep.and_then(|e| e.service_name.as_deref())
        .filter(|s| !s.is_empty())
        .map(str::to_lowercase)
}

/// Links one trace (all spans share a trace id): calls
/// `add(parent, child, is_error)` once per call it counts.
pub(crate) fn link_trace(spans: &[Span], mut add: impl FnMut(&str, &str, bool)) {
    if spans.is_empty() {
        return;
    }
    let tree = SpanTree::build(spans);
    for node in tree.breadth_first() {
        let Some(span) = tree.nodes[node].span else {
            continue;
        };
        let span = &spans[span];
        let mut kind = span.kind;
        if kind == Some(SpanKind::Client) && !tree.nodes[node].children.is_empty() {
            continue; // the server below names the link better
        }
        let service = service_of(span.local_endpoint.as_ref());
        let remote = service_of(span.remote_endpoint.as_ref());
        let kind = match kind.take() {
            Some(k) => k,
            None if service.is_some() && remote.is_some() => SpanKind::Client,
            None => continue,
        };
        let (mut parent, child) = match kind {
            SpanKind::Server | SpanKind::Consumer => {
                if node == tree.root && remote.is_none() {
                    continue; // root's client is unknown
                }
                (remote, service.clone())
            }
            SpanKind::Client | SpanKind::Producer => (service.clone(), remote),
        };
        let mut is_error = span.tags.contains_key("error");
        if matches!(kind, SpanKind::Producer | SpanKind::Consumer) {
            if let (Some(p), Some(c)) = (&parent, &child) {
                add(p, c, is_error);
            }
            continue;
        }
        if let Some(ancestor) = tree.first_remote_ancestor(spans, node).map(|i| &spans[i]) {
            if let Some(ancestor_name) = service_of(ancestor.local_endpoint.as_ref()) {
                // A client span inside a service other than its remote
                // ancestor's: backfill the missing hop (error unknown).
                if kind == SpanKind::Client {
                    if let Some(s) = service.as_deref().filter(|s| *s != ancestor_name) {
                        add(&ancestor_name, s, false);
                    }
                }
                if kind == SpanKind::Server || parent.is_none() {
                    parent = Some(ancestor_name);
                }
                // An RPC split into client and server spans: the client's
                // error counts for the link too.
                if !is_error
                    && ancestor.kind == Some(SpanKind::Client)
                    && span.parent_id.as_deref() == Some(ancestor.id.as_str())
                {
                    is_error = ancestor.tags.contains_key("error");
                }
            }
        }
        if let (Some(p), Some(c)) = (&parent, &child) {
            add(p, c, is_error);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Id(String),
    Shared(String, Option<Endpoint>),
}

fn key(id: &str, shared: bool, endpoint: Option<&Endpoint>) -> Key {
    if shared {
        Key::Shared(id.to_string(), endpoint.cloned())
    } else {
        Key::Id(id.to_string())
    }
}

#[derive(Debug, Default)]
struct Node {
    span: Option<usize>,
    parent: Option<usize>,
    children: Vec<usize>,
}

/// A trace's span tree; node `root` may be synthetic (no span) when the
/// trace has no root span.
struct SpanTree {
    nodes: Vec<Node>,
    root: usize,
}

impl SpanTree {
    fn build(spans: &[Span]) -> SpanTree {
        // span key → parent key, in insertion order (as Zipkin's LinkedHashMap).
        let mut order: Vec<Key> = Vec::new();
        let mut to_parent: HashMap<Key, Option<Key>> = HashMap::new();
        let put = |order: &mut Vec<Key>, map: &mut HashMap<Key, Option<Key>>, k: Key, p| {
            if map.insert(k.clone(), p).is_none() {
                order.push(k);
            }
        };
        for s in spans {
            let shared = s.shared == Some(true);
            if shared {
                put(
                    &mut order,
                    &mut to_parent,
                    key(&s.id, true, s.local_endpoint.as_ref()),
                    Some(Key::Id(s.id.clone())),
                );
            } else {
                put(
                    &mut order,
                    &mut to_parent,
                    Key::Id(s.id.clone()),
                    s.parent_id.clone().map(Key::Id),
                );
            }
        }
        let mut nodes: Vec<Node> = Vec::new();
        let mut key_to_node: HashMap<Key, usize> = HashMap::new();
        let mut root: Option<usize> = None;
        for (i, s) in spans.iter().enumerate() {
            let shared = s.shared == Some(true);
            let endpoint = s.local_endpoint.as_ref();
            let own = key(&s.id, shared, endpoint);
            let no_endpoint = key(&s.id, shared, None);
            let parent = if shared {
                Some(Key::Id(s.id.clone()))
            } else if let Some(pid) = &s.parent_id {
                let via_shared = key(pid, true, endpoint);
                if to_parent.contains_key(&via_shared) {
                    put(
                        &mut order,
                        &mut to_parent,
                        no_endpoint.clone(),
                        Some(via_shared.clone()),
                    );
                    Some(via_shared)
                } else {
                    Some(Key::Id(pid.clone()))
                }
            } else {
                None
            };
            nodes.push(Node {
                span: Some(i),
                ..Node::default()
            });
            let n = nodes.len() - 1;
            if parent.is_none() && root.is_none() {
                root = Some(n);
                to_parent.remove(&no_endpoint);
            } else if shared {
                key_to_node.insert(own, n);
                key_to_node.insert(no_endpoint, n);
            } else {
                key_to_node.insert(no_endpoint, n);
            }
        }
        let root = root.unwrap_or_else(|| {
            nodes.push(Node::default());
            nodes.len() - 1
        });
        for k in order {
            let Some(parent_key) = to_parent.get(&k) else {
                continue;
            };
            let Some(&child) = key_to_node.get(&k) else {
                continue;
            };
            let parent = parent_key
                .as_ref()
                .and_then(|p| key_to_node.get(p))
                .copied();
            let parent = parent.filter(|&p| p != child).unwrap_or(root);
            if child == root || nodes[child].parent.is_some() {
                continue;
            }
            nodes[child].parent = Some(parent);
            nodes[parent].children.push(child);
        }
        SpanTree { nodes, root }
    }

    fn breadth_first(&self) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.nodes.len());
        let mut queue = VecDeque::from([self.root]);
        while let Some(n) = queue.pop_front() {
            out.push(n);
            queue.extend(self.nodes[n].children.iter().copied());
        }
        out
    }

    /// The nearest ancestor with a kind (an RPC or messaging span); local
    /// spans in between are skipped. Ancestor chains of nodes reached from
    /// the root end at the root, so this terminates.
    fn first_remote_ancestor(&self, spans: &[Span], node: usize) -> Option<usize> {
        let mut at = self.nodes[node].parent;
        while let Some(a) = at {
            if let Some(s) = self.nodes[a].span.filter(|&s| spans[s].kind.is_some()) {
                return Some(s);
            }
            at = self.nodes[a].parent;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn ep(service: &str) -> Option<Endpoint> {
        Some(Endpoint {
            service_name: Some(service.into()),
            ..Endpoint::default()
        })
    }

    fn span(id: &str, parent: Option<&str>, kind: Option<SpanKind>, local: &str) -> Span {
        Span {
            trace_id: "0000000000000001".into(),
            id: id.into(),
            parent_id: parent.map(Into::into),
            kind,
            local_endpoint: ep(local),
            ..Span::default()
        }
    }

    fn links(traces: &[Vec<Span>]) -> Vec<(String, String, u64, u64)> {
        let mut counts: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
        for t in traces {
            link_trace(t, |p, c, e| {
                let n = counts.entry((p.into(), c.into())).or_default();
                n.0 += 1;
                n.1 += u64::from(e);
            });
        }
        counts
            .into_iter()
            .map(|((p, c), (n, e))| (p, c, n, e))
            .collect()
    }

    fn link(p: &str, c: &str, calls: u64, errors: u64) -> (String, String, u64, u64) {
        (p.into(), c.into(), calls, errors)
    }

    #[test]
    fn shared_rpc_and_uninstrumented_leaf() {
        let client = span("a1", None, Some(SpanKind::Client), "client");
        let mut server = span("a1", None, Some(SpanKind::Server), "volume");
        server.shared = Some(true);
        let mut db = span("a2", Some("a1"), Some(SpanKind::Client), "volume");
        db.remote_endpoint = ep("disk");
        db.tags.insert("error".into(), "EIO".into());
        let t = vec![client, server, db];
        assert_eq!(
            links(&[t.clone(), t]),
            vec![link("client", "volume", 2, 0), link("volume", "disk", 2, 2)]
        );
    }

    #[test]
    fn error_on_the_client_of_a_split_rpc_counts() {
        let mut client = span("b1", None, Some(SpanKind::Client), "client");
        client.tags.insert("error".into(), "timeout".into());
        let server = span("b2", Some("b1"), Some(SpanKind::Server), "volume");
        assert_eq!(
            links(&[vec![client, server]]),
            vec![link("client", "volume", 1, 1)]
        );
    }

    #[test]
    fn local_spans_between_server_and_client_are_skipped() {
        let mut root = span("c1", None, Some(SpanKind::Server), "mapper");
        root.remote_endpoint = ep("user");
        let local = span("c2", Some("c1"), None, "mapper");
        let mut out = span("c3", Some("c2"), Some(SpanKind::Client), "mapper");
        out.remote_endpoint = ep("blocker");
        assert_eq!(
            links(&[vec![root, local, out]]),
            vec![
                link("mapper", "blocker", 1, 0),
                link("user", "mapper", 1, 0)
            ]
        );
    }

    #[test]
    fn root_server_without_remote_is_not_a_link() {
        let root = span("d1", None, Some(SpanKind::Server), "osd");
        assert!(links(&[vec![root]]).is_empty());
    }

    #[test]
    fn messaging_links_through_the_broker() {
        let mut producer = span("e1", None, Some(SpanKind::Producer), "writer");
        producer.remote_endpoint = ep("kafka");
        let mut consumer = span("e2", Some("e1"), Some(SpanKind::Consumer), "reader");
        consumer.remote_endpoint = ep("kafka");
        assert_eq!(
            links(&[vec![producer, consumer]]),
            vec![link("kafka", "reader", 1, 0), link("writer", "kafka", 1, 0)]
        );
    }

    #[test]
    fn kindless_span_with_both_sides_is_a_client() {
        let mut s = span("f1", None, None, "a");
        s.remote_endpoint = ep("b");
        assert_eq!(links(&[vec![s]]), vec![link("a", "b", 1, 0)]);
    }

    #[test]
    fn service_names_are_compared_lower_cased() {
        let client = span("g1", None, Some(SpanKind::Client), "Client");
        let mut server = span("g1", None, Some(SpanKind::Server), "VOLUME");
        server.shared = Some(true);
        assert_eq!(
            links(&[vec![client, server]]),
            vec![link("client", "volume", 1, 0)]
        );
    }
}
