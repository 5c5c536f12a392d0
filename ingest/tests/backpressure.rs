//! A log that stops accepting appends makes ingest stop reading sockets:
//! the producer's writes block instead of weir buffering without bound.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use weir_ingest::{IngestConfig, Listener};
use weir_log::hooked::HookedLog;
use weir_log::{EmbeddedLog, Log, LogConfig, Topics};

/// A gate the log's appends wait at while it is closed.
struct Gate {
    closed: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn wait(&self) {
        let mut closed = self.closed.lock().unwrap();
        while *closed {
            closed = self.opened.wait(closed).unwrap();
        }
    }

    fn open(&self) {
        *self.closed.lock().unwrap() = false;
        self.opened.notify_all();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_log_stops_socket_reads_and_everything_arrives_after() {
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("");
    let inner = EmbeddedLog::open(
        dir.path(),
        LogConfig {
            fsync: weir_log::FsyncPolicy::Never,
            ..LogConfig::default()
        },
    )
    .unwrap();
    inner.create_topic(&topics.events, 2, false).unwrap();
    inner.create_topic(&topics.registry, 1, false).unwrap();
    let gate = Arc::new(Gate {
        closed: Mutex::new(true),
        opened: Condvar::new(),
    });
    let hook_gate = gate.clone();
    let hook = Box::new(move |_: &str, _: u32| {
        hook_gate.wait();
        Ok(())
    });
    let log = Arc::new(HookedLog::new(inner, hook));
    let router_config = weir_router::RouterConfig {
        queue_batches: 4,
        tick_interval_ms: 3_600_000,
        ..Default::default()
    };
    let (router, _thread) =
        weir_router::start(log.clone(), topics.clone(), &router_config).unwrap();
    let config = IngestConfig {
        tcp: Some(Listener {
            listen: "127.0.0.1:0".into(),
            ttl_unit: Default::default(),
            tls: None,
        }),
        udp: None,
        http: None,
        ..IngestConfig::default()
    };
    let bound = weir_ingest::listeners::start(&config, router)
        .await
        .unwrap();

    let line = b"{\"host\":\"flood\",\"service\":\"x\",\"time\":1,\"metric\":1}\n";
    let total_events = 2_000_000u64; // about 100 MiB
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (written, addr) = (written.clone(), bound.tcp.unwrap());
        std::thread::spawn(move || {
            let mut stream = TcpStream::connect(addr).unwrap();
            let chunk: Vec<u8> = line
                .iter()
                .copied()
                .cycle()
                .take(line.len() * 1000)
                .collect();
            for _ in 0..total_events / 1000 {
                stream.write_all(&chunk).unwrap();
                written.fetch_add(1000, Ordering::Relaxed);
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stalled_at = written.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        written.load(Ordering::Relaxed),
        stalled_at,
        "the producer is blocked"
    );
    assert!(
        stalled_at < total_events / 4,
        "only bounded buffers fill: {stalled_at} events written"
    );

    gate.open();
    tokio::task::spawn_blocking(move || writer.join().unwrap())
        .await
        .unwrap();
    let appended = || {
        (0..2)
            .map(|p| log.offsets(&topics.events, p).unwrap().1)
            .sum::<u64>()
    };
    for _ in 0..600 {
        if appended() == total_events {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(appended(), total_events);
}
