//! Routing through a real embedded log: registry lookups, sticky placement,
//! ticks, and acknowledgement after the append.

use std::sync::Arc;
use std::time::Duration;

use weir_event::{Entry, Event};
use weir_log::{EmbeddedLog, Log, LogConfig, Topics};
use weir_router::murmur2::partition_for;
use weir_router::registry::{read_seed_file, Registry};
use weir_router::{start, Encoded, RouterConfig};

fn open(dir: &std::path::Path, partitions: u32) -> Arc<EmbeddedLog> {
    let topics = Topics::new("");
    let log = EmbeddedLog::open(dir, LogConfig::default()).unwrap();
    log.create_topic(&topics.events, partitions, false).unwrap();
    log.create_topic(&topics.registry, 1, false).unwrap();
    Arc::new(log)
}

fn entries(log: &EmbeddedLog, partition: u32) -> Vec<(String, Entry)> {
    log.read("weir.events", partition, 0, 1 << 20, Duration::ZERO)
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                String::from_utf8(r.key.to_vec()).unwrap(),
                Entry::decode(&r.value).unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_one_application_share_a_partition() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("registry.json");
    std::fs::write(
        &seed,
        r#"{"uids":{"10.0.0.1":"shop"},"hosts":{"shop":["10.0.0.1","10.0.0.2"]}}"#,
    )
    .unwrap();
    let log = open(&dir.path().join("log"), 4);
    let config = RouterConfig {
        registry_file: Some(seed),
        tick_interval_ms: 3_600_000,
        ..RouterConfig::default()
    };
    let (router, thread) = start(log.clone(), Topics::new(""), &config).unwrap();
    let mut events = Encoded::default();
    for host in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
        events.push(host, &Event::new(host, 1.0).to_json());
    }
    router.send_durable(events).await.unwrap();
    drop(router);
    tokio::task::spawn_blocking(move || thread.join().unwrap())
        .await
        .unwrap();

    let shop = partition_for(b"shop", 4);
    let hosts: Vec<_> = entries(&log, shop)
        .into_iter()
        .filter(|(key, _)| key == "shop")
        .map(|(_, e)| match e {
            Entry::Event(e) => e.host,
            other => unreachable!("only events within the hour: {other:?}"),
        })
        .collect();
    assert_eq!(hosts, vec!["10.0.0.1", "10.0.0.2"]);
    let own = partition_for(b"10.0.0.3", 4);
    assert!(
        entries(&log, own).iter().any(|(key, _)| key == "10.0.0.3"),
        "unknown host is its own uid"
    );
}

#[test]
fn placement_is_sticky_when_partitions_are_added() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 4);
    let mut registry = Registry::load(log.as_ref(), "weir.registry").unwrap();
    let before: Vec<_> = (0..50)
        .map(|i| registry.partition(&format!("app-{i}"), 4))
        .collect();
    log.append(
        "weir.registry",
        0,
        &weir_log::borrowed(&registry.new_placements()),
    )
    .unwrap();
    registry.placements_persisted();
    drop(registry);

    let mut registry = Registry::load(log.as_ref(), "weir.registry").unwrap();
    let after: Vec<_> = (0..50)
        .map(|i| registry.partition(&format!("app-{i}"), 8))
        .collect();
    assert_eq!(before, after);
    assert!(registry.new_placements().is_empty());
    // A new uid is placed over the new count.
    let new = registry.partition("fresh-app", 8);
    assert_eq!(new, partition_for(b"fresh-app", 8));
}

#[test]
fn idle_placements_are_forgotten_durably_and_pinned_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir.path().join("log"), 4);
    let seed = dir.path().join("seed.json");
    std::fs::write(&seed, r#"{"partitions": {"pinned-app": 3}}"#).unwrap();
    let persist = |registry: &mut Registry| {
        let records = registry.new_placements();
        log.append("weir.registry", 0, &weir_log::borrowed(&records))
            .unwrap();
        registry.placements_persisted();
    };
    let mut registry = Registry::load(log.as_ref(), "weir.registry").unwrap();
    let (content, hash) = read_seed_file(&seed).unwrap();
    let records = registry.apply_source("seed", &content, hash);
    log.append("weir.registry", 0, &weir_log::borrowed(&records))
        .unwrap();
    registry
        .follow(log.as_ref(), "weir.registry", Duration::ZERO)
        .unwrap();
    assert!(
        registry.apply_source("seed", &content, hash).is_empty(),
        "applied once"
    );
    registry.forget_idle(1_000, 100);
    for i in 0..10 {
        registry.partition(&format!("app-{i}"), 4);
    }
    persist(&mut registry);
    assert_eq!(registry.placed(), 11);
    // app-0 keeps sending; the others fall silent.
    registry.forget_idle(1_050, 100);
    registry.partition("app-0", 4);
    assert_eq!(
        registry.forget_idle(1_099, 100),
        0,
        "nothing idle 100 s yet"
    );
    assert_eq!(registry.forget_idle(1_100, 100), 9);
    assert_eq!(registry.placed(), 2, "app-0 and the pinned one");
    persist(&mut registry);
    // A restart does not load what was forgotten.
    let mut restarted = Registry::load(log.as_ref(), "weir.registry").unwrap();
    assert_eq!(restarted.placed(), 2);
    assert_eq!(restarted.partition("pinned-app", 4), 3);
    // Seen again: placed anew by murmur2 over the count of the moment.
    assert_eq!(restarted.partition("app-5", 8), partition_for(b"app-5", 8));
    assert_eq!(restarted.new_placements().len(), 1);
    // Loaded placements count their idle time from the first sweep.
    assert_eq!(restarted.forget_idle(5_000, 100), 0);
    assert_eq!(restarted.forget_idle(5_100, 100), 2, "app-0 and app-5");
    assert_eq!(restarted.placed(), 1);
}

#[test]
fn a_malformed_seed_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("bad.json");
    std::fs::write(&seed, r#"{"uids": ["not", "a", "map"]}"#).unwrap();
    let error = read_seed_file(&seed).unwrap_err();
    assert!(error.to_string().contains("bad.json"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_reach_every_partition() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 3);
    let config = RouterConfig {
        tick_interval_ms: 20,
        ..RouterConfig::default()
    };
    let (router, _thread) = start(log.clone(), Topics::new(""), &config).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for p in 0..3 {
        assert!(
            entries(&log, p)
                .iter()
                .any(|(_, e)| matches!(e, Entry::Tick(_))),
            "partition {p}"
        );
    }
    drop(router);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_grown_while_routing_keeps_old_applications_and_spreads_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 4);
    let config = RouterConfig {
        tick_interval_ms: 20,
        ..RouterConfig::default()
    };
    let (router, thread) = start(log.clone(), Topics::new(""), &config).unwrap();
    let send = |prefix: &'static str| {
        let router = router.clone();
        async move {
            let mut events = Encoded::default();
            for i in 0..100 {
                let host = format!("{prefix}-{i}");
                events.push(&host, &Event::new(host.as_str(), 1.0).to_json());
            }
            router.send_durable(events).await.unwrap();
        }
    };
    send("old").await;
    log.grow_topic("weir.events", 8).unwrap();
    // The router reads the count again on its next tick.
    tokio::time::sleep(Duration::from_millis(200)).await;
    send("old").await;
    send("new").await;
    drop(router);
    tokio::task::spawn_blocking(move || thread.join().unwrap())
        .await
        .unwrap();

    let mut seen: std::collections::BTreeMap<String, Vec<u32>> = Default::default();
    for p in 0..8 {
        for (key, entry) in entries(&log, p) {
            if matches!(entry, Entry::Event(_)) {
                seen.entry(key).or_default().push(p);
            }
        }
    }
    for i in 0..100 {
        let host = format!("old-{i}");
        let expected = partition_for(host.as_bytes(), 4);
        assert_eq!(seen[&host], vec![expected, expected], "{host} moved");
    }
    let mut new_partitions: Vec<u32> = (0..100)
        .map(|i| {
            let host = format!("new-{i}");
            assert_eq!(seen[&host], vec![partition_for(host.as_bytes(), 8)]);
            seen[&host][0]
        })
        .collect();
    new_partitions.sort();
    new_partitions.dedup();
    assert_eq!(new_partitions, (0..8).collect::<Vec<_>>());
}

#[test]
fn placements_beyond_the_topic_are_a_clear_error_naming_both_counts() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 2);
    log.append("weir.registry", 0, &[(b"shop", br#"{"partition":5}"#)])
        .unwrap();
    let error = match start(log, Topics::new(""), &RouterConfig::default()) {
        Ok(_) => panic!("a registry beyond the topic was accepted"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("\"shop\" on partition 5"), "{error}");
    assert!(error.contains("only 2 partitions"), "{error}");
}

/// The moves' records as the registry applies them: a move holds the
/// application's events, only its own completion ends it, and a stale
/// completion (of a move no longer under way) changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_holds_events_until_its_completion_and_then_routes_to_the_new_partition() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 4);
    let config = RouterConfig {
        tick_interval_ms: 50,
        move_grace_ms: 0,
        ..RouterConfig::default()
    };
    let (router, _thread) = start(log.clone(), Topics::new(""), &config).unwrap();
    let send = |host: &str, time: f64| {
        let mut events = Encoded::default();
        events.push(host, &Event::new(host, time).to_json());
        let router = router.clone();
        tokio::spawn(async move { router.send_durable(events).await })
    };
    send("shop", 1.0).await.unwrap().unwrap();
    let from = partition_for(b"shop", 4);
    let to = (from + 1) % 4;
    let request = weir_router::RegistryRequest::Move {
        uid: "shop".into(),
        partition: 9,
    };
    let refused = router.registry(request).await.unwrap_err().to_string();
    assert!(refused.contains("partition 9 does not exist"), "{refused}");
    let request = weir_router::RegistryRequest::Move {
        uid: "shop".into(),
        partition: to,
    };
    router.registry(request.clone()).await.unwrap();
    let again = router.registry(request).await.unwrap_err().to_string();
    assert!(again.contains("already moving"), "{again}");

    // Held: answered only after the move completes; the rest of a mixed
    // batch goes on meanwhile.
    let mut mixed = Encoded::default();
    for host in ["cart", "shop"] {
        mixed.push(host, &Event::new(host, 2.0).to_json());
    }
    let held = {
        let router = router.clone();
        tokio::spawn(async move { router.send_durable(mixed).await })
    };
    let cart = partition_for(b"cart", 4);
    let carts = || {
        entries(&log, cart)
            .into_iter()
            .filter(|(_, e)| matches!(e, Entry::Event(e) if e.host == "cart"))
            .count()
    };
    let other = send("cart", 2.0);
    other.await.unwrap().unwrap();
    for _ in 0..100 {
        if carts() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(carts(), 2, "the mixed batch's other event waited");
    let handoff = loop {
        let found = entries(&log, from).into_iter().find_map(|(_, e)| match e {
            Entry::Handoff(h) => Some(h),
            _ => None,
        });
        if let Some(handoff) = found {
            break handoff;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!((handoff.uid.as_str(), handoff.to), ("shop", to));
    assert!(handoff.hosts.contains(&"shop".to_owned()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !held.is_finished(),
        "the moving application's event was not held"
    );

    // A completion of another move is not this one's.
    let stale = weir_event::Handoff {
        id: format!("{}-stale", handoff.id),
        ..handoff.clone()
    };
    let (key, value) = stale.completion();
    log.append("weir.registry", 0, &[(&key[..], &value[..])])
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    if held.is_finished() {
        panic!("a stale completion released the events: {:?}", held.await);
    }

    let (key, value) = handoff.completion();
    log.append("weir.registry", 0, &[(&key[..], &value[..])])
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), held)
        .await
        .expect("released after the completion")
        .unwrap()
        .unwrap();
    let shop_on = |p: u32| {
        entries(&log, p)
            .into_iter()
            .filter(|(_, e)| matches!(e, Entry::Event(e) if e.host == "shop"))
            .count()
    };
    assert_eq!((shop_on(from), shop_on(to)), (1, 1));
    let view = match router
        .registry(weir_router::RegistryRequest::View)
        .await
        .unwrap()
    {
        weir_router::RegistryAnswer::View(view) => view,
        other => panic!("{other:?}"),
    };
    assert_eq!(view.partitions["shop"], to);
    assert!(view.moving.is_empty());
}
