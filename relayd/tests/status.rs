//! Loss counters pushed to readers, the Status report, and keep-alive.

mod common;

use std::time::Duration;

use blkkin::ring::reader::{ReaderStats, WriterCounters};
use blkkin::wire::{ConsumerStats, Frame, Role, Start};
use common::*;

fn counters_frame(handle: u32, torn: u64, lost_full: u64) -> Frame {
    Frame::Counters {
        handle,
        reader: ReaderStats {
            read: 10,
            torn,
            ..Default::default()
        },
        writer: WriterCounters {
            written: 12,
            lost_full,
            ..Default::default()
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_get_loss_counters_after_announce_and_on_change() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path()).await;
    let a = key("n1", 0);
    let mut cons = Client::hello(relay.addr, Role::Consumer).await;
    assert_eq!(cons.open(1, &a).await, 0);
    assert_eq!(cons.push(1, 0, 10).await, 10);
    cons.send(&counters_frame(1, 1, 0)).await;
    // A gap of 5 positions: lost between consumer and relay.
    assert_eq!(cons.push(1, 15, 20).await, 20);

    let mut rd = Client::hello(relay.addr, Role::Reader).await;
    rd.subscribe_all(Start::Oldest).await;
    let mut got = Received::default();
    read_until(&mut rd, &mut got, |g| {
        g.positions(&a).len() == 15 && !g.counters.is_empty()
    })
    .await;
    let h = got.handle_of(&a).unwrap();
    let (first_h, first) = got.counters[0];
    assert_eq!(first_h, h);
    assert_eq!(first.reader.torn, 1);
    assert_eq!(first.relay_gap, 5);
    assert_eq!(first.lost(), 6);

    // Unchanged counters are not sent again; changed ones are.
    cons.send(&counters_frame(1, 1, 0)).await;
    cons.send(&counters_frame(1, 1, 4)).await;
    read_until(&mut rd, &mut got, |g| g.counters.len() >= 2).await;
    let (_, now) = got.counters[1];
    assert_eq!(now.writer.lost_full, 4);
    assert_eq!(now.lost(), 10);
    assert_eq!(got.counters.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_streams_peers_and_consumer_counters() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path()).await;
    let a = key("n1", 3);
    let mut cons = Client::hello(relay.addr, Role::Consumer).await;
    assert_eq!(cons.open(1, &a).await, 0);
    assert_eq!(cons.push(1, 0, 7).await, 7);
    cons.send(&counters_frame(1, 2, 3)).await;
    let stats = ConsumerStats {
        records: 7,
        acked: 7,
        buffered_bytes: 0,
        buffer_limit: 1 << 20,
        buffer_full: 1,
        connects: 2,
        resent: 1,
        rings: 1,
    };
    cons.send(&Frame::ConsumerStats(stats)).await;
    cons.send(&Frame::Heartbeat).await;
    // The consumer's frames are handled in order: an Ack after them means
    // they were processed.
    assert_eq!(cons.push(1, 7, 8).await, 8);

    let mut rd = Client::hello(relay.addr, Role::Reader).await;
    let report = rd.status().await;
    assert_eq!(report.relay, "blkkin-relayd");
    assert_eq!(report.consumers.len(), 1);
    assert_eq!(report.consumers[0].name, "test");
    assert_eq!(report.consumers[0].consumer, Some(stats));
    assert_eq!(report.readers.len(), 1, "the asking reader");
    assert_eq!(report.readers[0].consumer, None);
    assert_eq!(report.streams.len(), 1);
    let s = &report.streams[0];
    assert_eq!(s.summary.key, a);
    assert_eq!((s.summary.first, s.summary.next), (0, 8));
    assert_eq!(s.counters.reader.torn, 2);
    assert_eq!(s.counters.writer.lost_full, 3);
    assert!(s.bytes > 0);

    // A consumer that leaves is no longer listed.
    drop(cons);
    let mut consumers = 1;
    for _ in 0..50 {
        consumers = rd.status().await.consumers.len();
        if consumers == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(consumers, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_an_idle_connection_open() {
    let dir = tempfile::tempdir().unwrap();
    let relay =
        Relay::start_with(dir.path(), |c| c.idle_timeout = Duration::from_millis(300)).await;
    let mut cons = Client::hello(relay.addr, Role::Consumer).await;
    // A reader subscribed to every stream may wait for the first in silence.
    let mut rd = Client::hello(relay.addr, Role::Reader).await;
    rd.subscribe_all(Start::Oldest).await;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        cons.send(&Frame::Heartbeat).await;
    }
    // Still open: a stream opened now is acknowledged and announced.
    let a = key("n1", 0);
    assert_eq!(cons.open(1, &a).await, 0);
    let mut got = Received::default();
    read_until(&mut rd, &mut got, |g| g.handle_of(&a).is_some()).await;
}
