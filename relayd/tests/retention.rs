//! Retention by age on a running relay: readers see `first` advance.

mod common;

use std::time::{Duration, Instant};

use blkkin::wire::{Frame, Role, Start, StreamSummary};
use common::*;

async fn list(rd: &mut Client) -> StreamSummary {
    rd.list().await.pop().expect("one stream")
}

/// Lists until `done` holds (failing after 10 s).
async fn list_until(rd: &mut Client, done: impl Fn(&StreamSummary) -> bool) -> StreamSummary {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = list(rd).await;
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "never got there: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_segments_are_deleted_and_readers_see_first_advance() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start_with(dir.path(), |c| {
        c.store.segment_size = 1; // one record per segment
        c.store.retain_age = Some(Duration::from_secs(2));
    })
    .await;
    let a = key("n1", 0);
    let mut cons = Client::hello(relay.addr, Role::Consumer).await;
    assert_eq!(cons.open(1, &a).await, 0);
    assert_eq!(cons.push(1, 0, 10).await, 10);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(cons.push(1, 10, 15).await, 15);

    let mut rd = Client::hello(relay.addr, Role::Reader).await;
    assert_eq!(list(&mut rd).await.first, 0, "nothing is 2 s old yet");
    // The first ten age out a second before the last five.
    let s = list_until(&mut rd, |s| s.first > 0).await;
    assert_eq!((s.first, s.next), (10, 15));
    // Then everything; positions go on where they were.
    let s = list_until(&mut rd, |s| s.first == 15).await;
    assert_eq!(s.next, 15);
    assert_eq!(cons.push(1, 15, 18).await, 18);
    rd.subscribe_all(Start::Oldest).await;
    let mut got = Received::default();
    read_until(&mut rd, &mut got, |g| g.positions(&a).len() >= 3).await;
    assert_eq!(got.positions(&a), range(15, 18));
    got.check_contents(&a);
}

/// Retention racing a reader: records deleted before a reader got them reach
/// it as a counted `retention` loss, so received + lost covers every position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_deleted_before_a_reader_got_them_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start_with(dir.path(), |c| {
        c.store.segment_size = 1; // one record per segment
        c.store.retain_bytes = 1; // keep only the newest segment
    })
    .await;
    let a = key("n1", 0);
    let mut cons = Client::hello(relay.addr, Role::Consumer).await;
    assert_eq!(cons.open(1, &a).await, 0);
    // A reader that subscribed early but reads nothing yet (slow), and one
    // that resumes at position 0 later.
    let mut slow = Client::hello(relay.addr, Role::Reader).await;
    slow.subscribe_all(Start::At(0)).await;
    assert_eq!(cons.push(1, 0, 40).await, 40);
    let mut late = Client::hello(relay.addr, Role::Reader).await;
    late.send(&Frame::Subscribe {
        key: Some(a.clone()),
        start: Start::At(0),
    })
    .await;
    for rd in [&mut slow, &mut late] {
        let mut got = Received::default();
        let total = |g: &Received| {
            let lost = g.counters.last().map_or(0, |c| c.1.relay_retention);
            g.positions(&a).len() as u64 + lost
        };
        read_until(rd, &mut got, |g| total(g) >= 40).await;
        let lost = got.counters.last().unwrap().1;
        assert!(lost.relay_retention > 0, "retention removed records first");
        assert_eq!(
            lost.lost(),
            lost.relay_retention,
            "counted as retention only"
        );
        assert_eq!(total(&got), 40, "received + counted = every position");
        got.check_contents(&a);
    }
}
