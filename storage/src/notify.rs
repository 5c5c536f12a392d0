//! The notifier for the `log` channel: every notification record is
//! written to the service log (target `weir::notify`, level warn) once,
//! thanks to the consumer's de-duplication by id.

use serde::Deserialize;
use serde_json::Value;

use crate::consumer::{ResultHandler, StorageError};
use crate::metrics::NOTIFICATIONS_SENT;

/// Delivers `notify log` notifications.
#[derive(Default)]
pub struct LogNotifier;

#[derive(Deserialize)]
struct Notification {
    id: String,
    notify: Option<Value>,
    host: String,
    service: Option<String>,
    state: Option<String>,
    metric: Option<f64>,
    time: f64,
}

impl ResultHandler for LogNotifier {
    fn kind(&self) -> &'static str {
        "notify"
    }

    fn restore(&mut self, _resume: Option<Value>) -> Result<(), StorageError> {
        Ok(())
    }

    fn handle(&mut self, record: &[u8]) -> Result<(), StorageError> {
        let Ok(n) = serde_json::from_slice::<Notification>(record) else {
            return Ok(());
        };
        let Some(channel) = n.notify.as_ref().and_then(|v| v["channel"].as_str()) else {
            return Ok(());
        };
        if channel == "log" {
            tracing::warn!(target: "weir::notify", id = %n.id, host = %n.host,
                service = n.service.as_deref().unwrap_or(""), state = n.state.as_deref().unwrap_or(""),
                metric = ?n.metric, time = n.time, "notification");
            NOTIFICATIONS_SENT.with_label_values(&["log"]).inc();
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<Value, StorageError> {
        Ok(Value::Null)
    }
}
