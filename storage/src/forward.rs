//! The forwarder: delivers results of `forward` pipelines.
//!
//! - `forward topic="NAME"`: appends the result record to topic NAME of the
//!   log (same partition number, modulo its count), for other consumers;
//! - `forward tcp="HOST:PORT"`: writes the event (without the result's
//!   `id`, `reactor`, `notify`, `forward`) as one NDJSON line to a godot or
//!   weir NDJSON listener, over a connection kept open per endpoint.
//!
//! A failed write is retried with backoff until it succeeds: the consumer
//! does not commit past it, so an endpoint outage delays forwarding
//! without losing anything (the results log is the buffer), in order.

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;
use weir_event::{ResultRecord, RESULT_KEYS};
use weir_log::backoff::Backoff;
use weir_log::{Log, OwnedProduce};

use crate::consumer::{ResultHandler, StorageError};
use crate::metrics::FORWARDED;

/// Forwards results of one results partition.
pub struct Forwarder {
    log: Arc<dyn Log>,
    partition: u32,
    /// Records for each topic, appended at flush.
    pending: HashMap<String, Vec<OwnedProduce>>,
    connections: HashMap<String, TcpStream>,
}

#[derive(Deserialize)]
struct Target {
    forward: Option<Value>,
    host: String,
}

impl Forwarder {
    /// A forwarder for `partition` appending to topics of `log`.
    pub fn new(log: Arc<dyn Log>, partition: u32) -> Forwarder {
        Forwarder {
            log,
            partition,
            pending: HashMap::new(),
            connections: HashMap::new(),
        }
    }

    fn send_tcp(&mut self, address: &str, line: &[u8]) -> std::io::Result<()> {
        let mut backoff = Backoff::restart();
        loop {
            let result = match self.connections.get_mut(address) {
                Some(stream) => stream.write_all(line),
                None => TcpStream::connect(address).and_then(|mut stream| {
                    stream.write_all(line)?;
                    self.connections.insert(address.to_owned(), stream);
                    Ok(())
                }),
            };
            match result {
                Ok(()) => return Ok(()),
                Err(error) => {
                    self.connections.remove(address);
                    let wait = backoff.failed();
                    tracing::warn!(address, %error, retry_in = ?wait, "forwarding failed; retrying");
                    std::thread::sleep(wait);
                }
            }
        }
    }
}

impl ResultHandler for Forwarder {
    fn name(&self) -> &str {
        "forward"
    }

    fn restore(&mut self, _resume: Option<Value>) -> Result<(), StorageError> {
        self.pending.clear();
        Ok(())
    }

    fn handle(&mut self, record: &[u8]) -> Result<(), StorageError> {
        if !ResultRecord::peek(record).is_some_and(|head| head.may_forward) {
            return Ok(());
        }
        let Ok(Target {
            forward: Some(target),
            host,
        }) = serde_json::from_slice(record)
        else {
            return Ok(());
        };
        if let Some(topic) = target["topic"].as_str() {
            self.pending
                .entry(topic.to_owned())
                .or_default()
                .push((host.into_bytes(), record.to_vec()));
        } else if let Some(address) = target["tcp"].as_str() {
            // The receiver gets the event alone, as a godot producer sends it.
            let mut event: serde_json::Map<String, Value> =
                serde_json::from_slice(record).unwrap_or_default();
            for key in RESULT_KEYS {
                event.remove(*key);
            }
            let mut line = serde_json::to_vec(&event).unwrap_or_default();
            line.push(b'\n');
            self.send_tcp(address, &line)
                .map_err(|source| StorageError::Io {
                    what: "forward to",
                    path: address.into(),
                    source,
                })?;
            FORWARDED.with_label_values(&["tcp"]).inc();
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<Value, StorageError> {
        for (topic, records) in self.pending.drain() {
            let partitions = self.log.partitions(&topic)?;
            self.log.append(
                &topic,
                self.partition % partitions,
                &weir_log::borrowed(&records),
            )?;
            FORWARDED
                .with_label_values(&["topic"])
                .inc_by(records.len() as u64);
        }
        for stream in self.connections.values_mut() {
            let _ = stream.flush();
        }
        Ok(Value::Null)
    }
}
