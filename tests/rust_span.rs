//! A Rust API span guard is one record in the rings, shown by `blkkin dump`
//! as the span's `start` and `end` events (with its tags, recorded at once).

mod common;

#[test]
fn a_span_guard_is_dumped_as_its_start_and_end_events() {
    let tmp = tempfile::tempdir().unwrap();
    let rings = tmp.path().join("rings");
    // The only test in this binary: the library reads the variable once.
    std::env::set_var("BLKIN_SHM_DIR", &rings);
    let ep = blkkin::Endpoint::new("volume", "10.0.0.2", 6800);
    let root = blkkin::Span::root_forced("write", &ep);
    let (root_id, child_id);
    {
        let child = root.child("journal");
        child.tag_int("bytes", 4096);
        child_id = child.context().span_id;
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    root_id = root.context().span_id;
    drop(root);
    let (lines, summary) = common::dump_json(&rings);
    // Three records (the tag, the child span, the root span), five
    // annotations.
    assert_eq!(summary["read"], 3, "{summary}");
    assert_eq!(lines.len(), 5);
    let of = |id: u64| -> Vec<&serde_json::Value> {
        let id = format!("{id:016x}");
        lines.iter().filter(|a| a["id"] == id.as_str()).collect()
    };
    let child = of(child_id);
    let events: Vec<(&str, &str)> = child
        .iter()
        .map(|a| {
            (
                a["kind"].as_str().unwrap(),
                a["value"].as_str().unwrap_or(""),
            )
        })
        .collect();
    // Ring order: the tag when made, then the span when it ended.
    assert_eq!(
        events,
        [("integer", ""), ("event", "start"), ("event", "end")],
        "{child:?}"
    );
    assert_eq!(child[0]["value"], 4096);
    let ts = |a: &serde_json::Value| a["timestamp"].as_u64().unwrap();
    let (start, end) = (ts(child[1]), ts(child[2]));
    assert!(end >= start + 5_000, "slept 5 ms: {start} .. {end}");
    assert!(ts(child[0]) >= start && ts(child[0]) <= end);
    for a in &child {
        assert_eq!(a["name"], "journal");
        assert_eq!(a["serviceName"], "volume");
        assert_eq!(a["parentId"], format!("{root_id:016x}").as_str());
    }
    let root: Vec<&str> = of(root_id)
        .iter()
        .map(|a| a["value"].as_str().unwrap())
        .collect();
    assert_eq!(root, ["start", "end"]);
}
