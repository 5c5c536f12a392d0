//! The notifier: delivers notification records (results with `notify`)
//! once each — the consumer's de-duplication by id means a re-processed
//! event never notifies twice.
//!
//! Channels:
//! - `log`: a warning line with target `weir::notify`;
//! - `email` (`to=` required, `subject=` optional): SMTP via lettre, to
//!   `[notify.smtp]`: STARTTLS when the relay offers it (or required, or
//!   implicit TLS), AUTH with a username and password;
//! - `webhook` (`url=` required): HTTP POST of the result record as JSON
//!   (https through rustls); any 2xx is success.
//!
//! A failed delivery is retried `max_attempts` times with exponential
//! backoff, then recorded as failed so one dead endpoint cannot hold up
//! every later notification. Every outcome is a line of the delivery log
//! (`DIR/p{P}.ndjson`: id, channel, status, attempts, error), fsynced as
//! soon as the delivery is done; on restart the ids in it are skipped, so
//! a crash between a delivery and the consumer's commit does not deliver
//! again (the window left is between the server's acceptance and that
//! fsync).

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use weir_log::Secret;

use crate::consumer::{ResultHandler, StorageError};
use crate::metrics::{NOTIFICATIONS_FAILED, NOTIFICATIONS_SENT, NOTIFICATIONS_SUPPRESSED};

/// `[notify]` settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    /// Delivery log directory; default `DATA_DIR/notifications`.
    pub dir: Option<PathBuf>,
    /// Attempts per notification before it is recorded as failed.
    pub max_attempts: u32,
    /// Wait before the first retry; doubled on each further one.
    pub backoff_ms: u64,
    /// Timeout of one webhook request.
    pub webhook_timeout_ms: u64,
    /// PEM file of a CA to trust besides the system's, for https
    /// webhooks under a private CA.
    pub ca_file: Option<PathBuf>,
    /// Notifications about events older than this (seconds, by event
    /// time) are recorded as suppressed instead of delivered, so a replay
    /// over last month pages nobody; 0 delivers every one.
    pub max_age_secs: u64,
    /// The SMTP relay for `notify email`.
    pub smtp: SmtpConfig,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            dir: None,
            max_attempts: 5,
            backoff_ms: 500,
            webhook_timeout_ms: 10_000,
            ca_file: None,
            max_age_secs: 3600,
            smtp: SmtpConfig::default(),
        }
    }
}

/// `[notify.smtp]`: where email goes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpConfig {
    /// Relay host (also the name its certificate must carry).
    pub host: String,
    /// Relay port.
    pub port: u16,
    /// The From address.
    pub from: String,
    /// TLS to the relay.
    pub tls: SmtpTls,
    /// AUTH user name (with `password`); none: no AUTH.
    pub username: Option<String>,
    /// AUTH password; put it in a file or the environment
    /// (`password = { file = "…" }`).
    pub password: Option<Secret>,
    /// PEM file of a CA to trust besides the system's.
    pub ca_file: Option<PathBuf>,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            host: "127.0.0.1".into(),
            port: 25,
            from: "weir@localhost".into(),
            tls: SmtpTls::Opportunistic,
            username: None,
            password: None,
            ca_file: None,
        }
    }
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// STARTTLS when the relay offers it, plain otherwise.
    Opportunistic,
    /// STARTTLS or no delivery.
    Starttls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
    /// Plain text only.
    None,
}

/// The clients notifications go out through, built once from the config
/// (a bad CA file is an error at start, not at the first alert) and
/// shared by every partition's notifier.
#[derive(Clone)]
pub struct Channels {
    /// Webhooks.
    pub http: reqwest::blocking::Client,
    /// Email.
    pub smtp: SmtpTransport,
}

impl NotifyConfig {
    /// The webhook and SMTP clients this config describes.
    pub fn channels(&self) -> Result<Channels, StorageError> {
        let failed = |channel: &str| {
            let channel = channel.to_owned();
            move |detail: String| StorageError::Sink {
                sink: format!("notify {channel}"),
                detail,
            }
        };
        let timeout = Duration::from_millis(self.webhook_timeout_ms);
        let http =
            crate::tls::http_client(timeout, self.ca_file.as_deref()).map_err(failed("webhook"))?;
        let smtp = self.smtp.transport(timeout).map_err(failed("email"))?;
        Ok(Channels { http, smtp })
    }
}

impl SmtpConfig {
    fn transport(&self, timeout: Duration) -> Result<SmtpTransport, String> {
        let mut tls = TlsParameters::builder(self.host.clone());
        if let Some(path) = &self.ca_file {
            let pem =
                std::fs::read(path).map_err(|e| format!("CA file {}: {e}", path.display()))?;
            let certificate = Certificate::from_pem(&pem)
                .map_err(|e| format!("CA file {}: {e}", path.display()))?;
            tls = tls.add_root_certificate(certificate);
        }
        let tls = tls.build_rustls().map_err(|e| format!("TLS: {e}"))?;
        let mut builder = SmtpTransport::builder_dangerous(&self.host)
            .port(self.port)
            .timeout(Some(timeout))
            .tls(match self.tls {
                SmtpTls::Opportunistic => Tls::Opportunistic(tls),
                SmtpTls::Starttls => Tls::Required(tls),
                SmtpTls::Tls => Tls::Wrapper(tls),
                SmtpTls::None => Tls::None,
            });
        match (&self.username, &self.password) {
            (Some(user), Some(password)) => {
                builder = builder.credentials(Credentials::new(user.clone(), password.0.clone()));
            }
            (None, None) => {}
            _ => return Err("username and password go together".into()),
        }
        Ok(builder.build())
    }
}

/// Delivers notifications of one results partition.
pub struct Notifier {
    config: NotifyConfig,
    log_path: PathBuf,
    deliveries: Option<File>,
    /// Ids in the delivery log: never delivered again.
    done: HashSet<String>,
    smtp: SmtpTransport,
    http: reqwest::blocking::Client,
}

/// The fields of a result record a notification needs.
#[derive(Deserialize)]
struct Notification {
    id: String,
    reactor: String,
    notify: Option<Value>,
    host: String,
    service: Option<String>,
    state: Option<String>,
    metric: Option<f64>,
    time: f64,
}

#[derive(Serialize)]
struct Delivery<'a> {
    id: &'a str,
    channel: &'a str,
    status: &'static str,
    attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    at: f64,
}

impl Notifier {
    /// A notifier for `partition`, logging deliveries under `dir`,
    /// delivering through `channels` ([`NotifyConfig::channels`]).
    pub fn new(config: &NotifyConfig, dir: &Path, partition: u32, channels: Channels) -> Notifier {
        Notifier {
            smtp: channels.smtp,
            http: channels.http,
            config: config.clone(),
            log_path: dir.join(format!("p{partition}.ndjson")),
            deliveries: None,
            done: HashSet::new(),
        }
    }

    fn deliver(
        &self,
        channel: &str,
        n: &Notification,
        options: &Value,
        record: &[u8],
    ) -> Result<(), String> {
        match channel {
            "log" => {
                tracing::warn!(target: "weir::notify", id = %n.id, host = %n.host,
                    service = n.service.as_deref().unwrap_or(""), state = n.state.as_deref().unwrap_or(""),
                    metric = ?n.metric, time = n.time, "notification");
                Ok(())
            }
            "email" => {
                let to = options["to"].as_str().ok_or("notify email has no to=")?;
                let subject = options["subject"].as_str().map_or_else(
                    || {
                        format!(
                            "[weir] {}: {} {} is {}",
                            n.reactor,
                            n.host,
                            n.service.as_deref().unwrap_or(""),
                            n.state.as_deref().unwrap_or("notified")
                        )
                    },
                    str::to_owned,
                );
                let body = serde_json::from_slice::<Value>(record)
                    .and_then(|v| serde_json::to_string_pretty(&v))
                    .unwrap_or_default();
                let message = Message::builder()
                    .from(
                        self.config
                            .smtp
                            .from
                            .parse()
                            .map_err(|e| format!("from address: {e}"))?,
                    )
                    .to(to.parse().map_err(|e| format!("to address {to:?}: {e}"))?)
                    .subject(subject)
                    .header(ContentType::TEXT_PLAIN)
                    .body(body)
                    .map_err(|e| e.to_string())?;
                self.smtp
                    .send(&message)
                    .map(drop)
                    .map_err(|e| crate::tls::with_causes(&e))
            }
            "webhook" => {
                let url = options["url"]
                    .as_str()
                    .ok_or("notify webhook has no url=")?;
                let response = self
                    .http
                    .post(url)
                    .header("content-type", "application/json")
                    .body(record.to_vec())
                    .send()
                    .map_err(|e| crate::tls::with_causes(&e))?;
                if response.status().is_success() {
                    Ok(())
                } else {
                    Err(format!("{url} answered {}", response.status()))
                }
            }
            other => Err(format!("unknown channel {other:?}")),
        }
    }

    fn record(&mut self, delivery: &Delivery) -> Result<(), StorageError> {
        let mut line = serde_json::to_vec(delivery).unwrap_or_default();
        line.push(b'\n');
        if self.deliveries.is_none() {
            if let Some(dir) = self.log_path.parent() {
                std::fs::create_dir_all(dir).map_err(|source| StorageError::Io {
                    what: "create",
                    path: dir.to_path_buf(),
                    source,
                })?;
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log_path)
                .map_err(|source| StorageError::Io {
                    what: "open",
                    path: self.log_path.clone(),
                    source,
                })?;
            self.deliveries = Some(file);
        }
        if let Some(file) = &mut self.deliveries {
            file.write_all(&line)
                .and_then(|()| file.sync_data())
                .map_err(|source| StorageError::Io {
                    what: "write",
                    path: self.log_path.clone(),
                    source,
                })?;
        }
        self.done.insert(delivery.id.to_owned());
        Ok(())
    }
}

impl ResultHandler for Notifier {
    fn name(&self) -> &str {
        "notify"
    }

    fn restore(&mut self, _resume: Option<Value>) -> Result<(), StorageError> {
        #[derive(Deserialize)]
        struct Done {
            id: String,
        }
        self.done.clear();
        match std::fs::read_to_string(&self.log_path) {
            Ok(text) => {
                // A torn last line (crash mid-write) is simply not an id.
                let ids = text
                    .lines()
                    .filter_map(|l| serde_json::from_str::<Done>(l).ok());
                self.done.extend(ids.map(|d| d.id));
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StorageError::Io {
                what: "read",
                path: self.log_path.clone(),
                source,
            }),
        }
    }

    fn handle(&mut self, record: &[u8]) -> Result<(), StorageError> {
        let Ok(n) = serde_json::from_slice::<Notification>(record) else {
            return Ok(());
        };
        if self.done.contains(&n.id) {
            return Ok(());
        }
        let Some(options) = n.notify.clone() else {
            return Ok(());
        };
        let channel = options["channel"].as_str().unwrap_or("").to_owned();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let max_age = self.config.max_age_secs as f64;
        if max_age > 0.0 && now - n.time > max_age {
            NOTIFICATIONS_SUPPRESSED
                .with_label_values(&[&channel])
                .inc();
            return self.record(&Delivery {
                id: &n.id,
                channel: &channel,
                status: "suppressed",
                attempts: 0,
                error: Some(format!(
                    "event is {:.0}s old, older than max_age_secs = {}",
                    now - n.time,
                    self.config.max_age_secs
                )),
                at: now,
            });
        }
        let mut attempts = 0;
        let mut backoff = Duration::from_millis(self.config.backoff_ms);
        let outcome = loop {
            attempts += 1;
            match self.deliver(&channel, &n, &options, record) {
                Ok(()) => break Ok(()),
                Err(error) if attempts >= self.config.max_attempts.max(1) => break Err(error),
                Err(error) => {
                    tracing::info!(id = %n.id, channel, attempts, %error, retry_in = ?backoff, "notification delivery failed");
                    std::thread::sleep(backoff);
                    backoff *= 2;
                }
            }
        };
        let (status, error) = match outcome {
            Ok(()) => {
                NOTIFICATIONS_SENT.with_label_values(&[&channel]).inc();
                ("delivered", None)
            }
            Err(error) => {
                NOTIFICATIONS_FAILED.with_label_values(&[&channel]).inc();
                tracing::warn!(id = %n.id, channel, attempts, %error, "notification not delivered");
                ("failed", Some(error))
            }
        };
        self.record(&Delivery {
            id: &n.id,
            channel: &channel,
            status,
            attempts,
            error,
            at: now,
        })
    }

    fn flush(&mut self) -> Result<Value, StorageError> {
        // Each delivery record was fsynced when it was written.
        Ok(Value::Null)
    }
}
