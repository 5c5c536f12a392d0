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
//! A failed delivery waits in a retry queue (capped exponential backoff,
//! [`weir_log::backoff`]) while later notifications go on: a slow or dead
//! endpoint holds the others up by at most one timeout per retry, and
//! while it rests nothing else is sent to it. After `max_attempts` a
//! notification is recorded as failed. The queue is part of the
//! consumer's commit (the handler's resume point), so a restart retries
//! what was waiting.
//!
//! Every outcome is a line of the delivery log (`DIR/p{P}.ndjson`: id,
//! channel, status, attempts, error), fsynced as soon as the delivery is
//! done. Once a commit covers them, the consumer's watermarks skip those
//! results, so the notifier keeps in memory only the ids delivered since
//! the last commit (a `{"committed":…}` line in the log marks each), and a
//! restart reads back only the ids after the last mark: a crash between a
//! delivery and the commit does not deliver again (the window left is
//! between the server's acceptance and the fsync). A log grown past
//! 64 MiB is rotated to `p{P}.ndjson.1` on restart.

use std::collections::{HashMap, HashSet, VecDeque};
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

use weir_event::ResultRecord;
use weir_log::backoff::Backoff;
use weir_log::Secret;

use crate::consumer::{ResultHandler, StorageError};
use crate::metrics::{
    NOTIFICATIONS_FAILED, NOTIFICATIONS_SENT, NOTIFICATIONS_SUPPRESSED, NOTIFICATIONS_WAITING,
};

/// `[notify]` settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    /// Delivery log directory; default `DATA_DIR/notifications`.
    pub dir: Option<PathBuf>,
    /// Attempts per notification before it is recorded as failed.
    pub max_attempts: u32,
    /// Wait before the first retry; doubled on each further one, up to
    /// 10 minutes.
    pub backoff_ms: u64,
    /// Notifications a partition keeps waiting for a retry; beyond it the
    /// oldest is recorded as failed.
    pub max_waiting: usize,
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
            max_waiting: 10_000,
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
    /// Ids recorded since the last commit: the consumer may hand them
    /// over again until a commit covers them.
    done: HashSet<String>,
    /// Whether a flush returned since the last `committed` mark.
    flushed: bool,
    /// Notifications waiting for a retry, oldest first.
    waiting: VecDeque<Waiting>,
    /// Destinations that failed: the time (Unix seconds) before which
    /// nothing is sent to them, and the failure.
    resting: HashMap<String, (f64, String)>,
    backoff: Backoff,
    smtp: SmtpTransport,
    http: reqwest::blocking::Client,
}

/// A notification waiting for its next attempt; part of the resume point.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Waiting {
    /// The result record, as JSON text.
    record: String,
    /// Attempts made.
    attempts: u32,
    /// Not before this (Unix seconds).
    next: f64,
    /// The last attempt's error.
    error: Option<String>,
}

/// The notifier's resume point in the consumer's commit.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Resume {
    #[serde(default)]
    waiting: VecDeque<Waiting>,
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

impl Notification {
    fn channel(&self) -> &str {
        self.notify
            .as_ref()
            .and_then(|n| n["channel"].as_str())
            .unwrap_or("")
    }

    /// Where it goes: notifications to one destination rest together
    /// when it fails.
    fn destination(&self) -> String {
        let url = self.notify.as_ref().and_then(|n| n["url"].as_str());
        format!("{} {}", self.channel(), url.unwrap_or(""))
    }
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

/// A delivery log line as read back.
#[derive(Deserialize)]
#[serde(untagged)]
enum Line {
    Delivery {
        id: String,
    },
    Committed {
        #[serde(rename = "committed")]
        _at: f64,
    },
}

/// Past this size the delivery log is rotated at the next restore.
const ROTATE_BYTES: u64 = 64 << 20;

/// The longest a failing destination rests between attempts.
const MAX_REST: Duration = Duration::from_secs(600);

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
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
            flushed: false,
            waiting: VecDeque::new(),
            resting: HashMap::new(),
            backoff: Backoff::new(Duration::from_millis(config.backoff_ms), MAX_REST),
        }
    }

    fn deliver(&self, n: &Notification, record: &[u8]) -> Result<(), String> {
        let options = n.notify.as_ref().unwrap_or(&Value::Null);
        match n.channel() {
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

    /// Appends `line` to the delivery log; `sync`: fsynced before returning.
    fn write_line(&mut self, line: &[u8], sync: bool) -> Result<(), StorageError> {
        let io = |what, path: &Path| {
            let path = path.to_path_buf();
            move |source| StorageError::Io { what, path, source }
        };
        if self.deliveries.is_none() {
            if let Some(dir) = self.log_path.parent() {
                std::fs::create_dir_all(dir).map_err(io("create", dir))?;
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log_path)
                .map_err(io("open", &self.log_path))?;
            self.deliveries = Some(file);
        }
        if let Some(file) = &mut self.deliveries {
            file.write_all(line)
                .and_then(|()| if sync { file.sync_data() } else { Ok(()) })
                .map_err(io("write", &self.log_path))?;
        }
        Ok(())
    }

    fn record(&mut self, delivery: &Delivery) -> Result<(), StorageError> {
        if std::mem::take(&mut self.flushed) && !self.done.is_empty() {
            // The consumer went on after the last flush, so its commit
            // covers every id so far: they need not be kept. The mark is
            // made durable by this delivery's fsync.
            self.write_line(format!("{{\"committed\":{}}}\n", now()).as_bytes(), false)?;
            self.done.clear();
        }
        let mut line = serde_json::to_vec(delivery).unwrap_or_default();
        line.push(b'\n');
        self.write_line(&line, true)?;
        self.done.insert(delivery.id.to_owned());
        Ok(())
    }

    /// Delivers `n` now, unless its destination rests after a failure:
    /// then that failure counts as this attempt too and `n` waits for the
    /// end of the rest. So a dead endpoint costs one timeout per round of
    /// retries, not one per notification, and every notification for it
    /// ages out with the first.
    fn attempt(&mut self, n: &Notification, mut waiting: Waiting) -> Result<(), StorageError> {
        let destination = n.destination();
        let now = now();
        let resting = self
            .resting
            .get(&destination)
            .filter(|(until, _)| *until > now)
            .cloned();
        waiting.attempts += 1;
        let channel = n.channel().to_owned();
        let outcome = match &resting {
            Some((_, error)) => Err(error.clone()),
            None => self.deliver(n, waiting.record.as_bytes()),
        };
        let error = match outcome {
            Ok(()) => {
                self.resting.remove(&destination);
                NOTIFICATIONS_SENT.with_label_values(&[&channel]).inc();
                return self.record(&Delivery {
                    id: &n.id,
                    channel: &channel,
                    status: "delivered",
                    attempts: waiting.attempts,
                    error: None,
                    at: now,
                });
            }
            Err(error) => error,
        };
        let until = match resting {
            Some((until, _)) => until,
            None => {
                let rest = self.backoff.wait(waiting.attempts);
                tracing::info!(id = %n.id, %destination, attempts = waiting.attempts, %error, retry_in = ?rest, "notification delivery failed");
                // From the failure, not the start: a timeout may be longer than the rest.
                let until = self::now() + rest.as_secs_f64();
                self.resting.insert(destination, (until, error.clone()));
                until
            }
        };
        if waiting.attempts >= self.config.max_attempts.max(1) {
            self.give_up(n, waiting.attempts, error)
        } else {
            waiting.next = until;
            waiting.error = Some(error);
            self.wait(waiting)
        }
    }

    fn give_up(
        &mut self,
        n: &Notification,
        attempts: u32,
        error: String,
    ) -> Result<(), StorageError> {
        let channel = n.channel().to_owned();
        NOTIFICATIONS_FAILED.with_label_values(&[&channel]).inc();
        weir_log::drops::dropped("notify", "failed", 1, || {
            format!("{} over {channel} after {attempts} attempts: {error}", n.id)
        });
        tracing::warn!(id = %n.id, channel, attempts, %error, "notification not delivered");
        self.record(&Delivery {
            id: &n.id,
            channel: &channel,
            status: "failed",
            attempts,
            error: Some(error),
            at: now(),
        })
    }

    /// Queues `waiting`; a full queue gives up on its oldest.
    fn wait(&mut self, waiting: Waiting) -> Result<(), StorageError> {
        self.waiting.push_back(waiting);
        NOTIFICATIONS_WAITING.inc();
        while self.waiting.len() > self.config.max_waiting.max(1) {
            let Some(oldest) = self.waiting.pop_front() else {
                break;
            };
            NOTIFICATIONS_WAITING.dec();
            if let Ok(n) = serde_json::from_str::<Notification>(&oldest.record) {
                let error = format!(
                    "more than max_waiting = {} notifications wait for a retry; last error: {}",
                    self.config.max_waiting,
                    oldest.error.unwrap_or_default()
                );
                self.give_up(&n, oldest.attempts, error)?;
            }
        }
        Ok(())
    }

    /// Attempts every waiting notification whose time has come.
    fn retry_due(&mut self) -> Result<(), StorageError> {
        let now = now();
        if !self.waiting.iter().any(|w| w.next <= now) {
            return Ok(());
        }
        let waiting = std::mem::take(&mut self.waiting);
        NOTIFICATIONS_WAITING.sub(waiting.len() as i64);
        for item in waiting {
            match serde_json::from_str::<Notification>(&item.record) {
                Ok(n) if item.next <= now => self.attempt(&n, item)?,
                Ok(_) => self.wait(item)?,
                Err(_) => {}
            }
        }
        Ok(())
    }

    /// Moves a delivery log past [`ROTATE_BYTES`] to `.1`, keeping in the
    /// new one only `tail` (the lines after the last commit).
    fn rotate(&self, tail: &[&str]) -> std::io::Result<()> {
        let old = self.log_path.with_extension("ndjson.1");
        let fresh = self.log_path.with_extension("ndjson.new");
        let mut file = File::create(&fresh)?;
        for line in tail {
            writeln!(file, "{line}")?;
        }
        file.sync_all()?;
        // The live name always holds a whole log: the old one until the
        // rename, the new one after.
        let _ = std::fs::remove_file(&old);
        std::fs::hard_link(&self.log_path, &old)?;
        std::fs::rename(&fresh, &self.log_path)
    }
}

impl ResultHandler for Notifier {
    fn name(&self) -> &str {
        "notify"
    }

    fn restore(&mut self, resume: Option<Value>) -> Result<(), StorageError> {
        self.done.clear();
        self.flushed = false;
        self.deliveries = None;
        self.resting.clear();
        NOTIFICATIONS_WAITING.sub(self.waiting.len() as i64);
        let text = match std::fs::read_to_string(&self.log_path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(StorageError::Io {
                    what: "read",
                    path: self.log_path.clone(),
                    source,
                })
            }
        };
        // Only the ids after the last commit mark can come again.
        let lines: Vec<&str> = text.lines().collect();
        let since = lines
            .iter()
            .rposition(|l| matches!(serde_json::from_str(l), Ok(Line::Committed { .. })))
            .map_or(0, |mark| mark + 1);
        for line in &lines[since..] {
            // A torn last line (crash mid-write) is simply not an id.
            if let Ok(Line::Delivery { id }) = serde_json::from_str(line) {
                self.done.insert(id);
            }
        }
        if text.len() as u64 > ROTATE_BYTES {
            self.rotate(&lines[since..])
                .map_err(|source| StorageError::Io {
                    what: "rotate",
                    path: self.log_path.clone(),
                    source,
                })?;
        }
        let resume: Resume = resume
            .and_then(|r| serde_json::from_value(r).ok())
            .unwrap_or_default();
        self.waiting = resume.waiting;
        self.waiting.retain(|w| {
            serde_json::from_str::<Notification>(&w.record)
                .is_ok_and(|n| !self.done.contains(&n.id))
        });
        NOTIFICATIONS_WAITING.add(self.waiting.len() as i64);
        Ok(())
    }

    fn handle(&mut self, record: &[u8]) -> Result<(), StorageError> {
        self.retry_due()?;
        if !ResultRecord::peek(record).is_some_and(|head| head.may_notify) {
            return Ok(());
        }
        let Ok(n) = serde_json::from_slice::<Notification>(record) else {
            return Ok(());
        };
        if n.notify.is_none() || self.done.contains(&n.id) {
            return Ok(());
        }
        let now = now();
        let max_age = self.config.max_age_secs as f64;
        if max_age > 0.0 && now - n.time > max_age {
            let channel = n.channel().to_owned();
            NOTIFICATIONS_SUPPRESSED
                .with_label_values(&[&channel])
                .inc();
            weir_log::drops::dropped("notify", "too_old", 1, || {
                format!("{} over {channel}: older than max_age_secs", n.id)
            });
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
        let waiting = Waiting {
            record: String::from_utf8_lossy(record).into_owned(),
            attempts: 0,
            next: now,
            error: None,
        };
        self.attempt(&n, waiting)
    }

    fn idle(&mut self) -> Result<(), StorageError> {
        self.retry_due()
    }

    fn flush(&mut self) -> Result<Value, StorageError> {
        // Each delivery record was fsynced when it was written; what
        // waits for a retry goes into the commit.
        self.flushed = true;
        let resume = Resume {
            waiting: self.waiting.clone(),
        };
        Ok(serde_json::to_value(resume).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> Vec<u8> {
        format!(
            r#"{{"id":"{id}","reactor":"r","notify":{{"channel":"log"}},"host":"h","time":{}}}"#,
            now()
        )
        .into_bytes()
    }

    fn log_notifier(dir: &Path) -> Notifier {
        let config = NotifyConfig::default();
        Notifier::new(&config, dir, 0, config.channels().unwrap())
    }

    #[test]
    fn only_ids_after_the_last_commit_are_kept_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut notifier = log_notifier(dir.path());
        notifier.restore(None).unwrap();
        for id in ["a", "b", "c"] {
            notifier.handle(&record(id)).unwrap();
        }
        assert_eq!(notifier.done.len(), 3);
        notifier.flush().unwrap();
        // The consumer committed and went on: a, b and c are covered.
        notifier.handle(&record("d")).unwrap();
        assert_eq!(notifier.done, HashSet::from(["d".to_owned()]));
        // A restart reads back only what followed the mark.
        let mut restarted = log_notifier(dir.path());
        restarted.restore(None).unwrap();
        assert_eq!(restarted.done, HashSet::from(["d".to_owned()]));
        // d is not delivered twice; a new one is.
        restarted.handle(&record("d")).unwrap();
        restarted.handle(&record("e")).unwrap();
        let text = std::fs::read_to_string(dir.path().join("p0.ndjson")).unwrap();
        let ids: Vec<String> = text
            .lines()
            .filter_map(|l| {
                serde_json::from_str::<Value>(l).ok()?["id"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        assert_eq!(ids, ["a", "b", "c", "d", "e"]);
    }

    #[test]
    fn a_large_delivery_log_is_rotated_keeping_the_uncommitted_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p0.ndjson");
        let old_line = r#"{"id":"old","channel":"log","status":"delivered","attempts":1,"at":1}"#;
        let mut text = format!("{old_line}\n").repeat((ROTATE_BYTES as usize / old_line.len()) + 1);
        text.push_str("{\"committed\":2}\n{\"id\":\"tail\",\"channel\":\"log\",\"status\":\"delivered\",\"attempts\":1,\"at\":3}\n");
        std::fs::write(&path, &text).unwrap();
        let mut notifier = log_notifier(dir.path());
        notifier.restore(None).unwrap();
        assert_eq!(notifier.done, HashSet::from(["tail".to_owned()]));
        let rotated = std::fs::read_to_string(dir.path().join("p0.ndjson.1")).unwrap();
        assert_eq!(rotated, text, "the old log kept whole as .1");
        let fresh = std::fs::read_to_string(&path).unwrap();
        assert_eq!(fresh.lines().count(), 1);
        assert!(fresh.contains("\"tail\""));
        // Appending goes on in the new log.
        notifier.handle(&record("next")).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
    }

    #[test]
    fn waiting_notifications_survive_in_the_resume_point() {
        let dir = tempfile::tempdir().unwrap();
        let config = NotifyConfig {
            webhook_timeout_ms: 200,
            ..NotifyConfig::default()
        };
        let mut notifier = Notifier::new(&config, dir.path(), 0, config.channels().unwrap());
        notifier.restore(None).unwrap();
        // Nothing listens on port 9 of loopback: the delivery fails at once.
        let hook = format!(
            r#"{{"id":"w","reactor":"r","notify":{{"channel":"webhook","url":"http://127.0.0.1:9/"}},"host":"h","time":{}}}"#,
            now()
        );
        notifier.handle(hook.as_bytes()).unwrap();
        let resume = notifier.flush().unwrap();
        assert_eq!(resume["waiting"][0]["attempts"], 1, "{resume}");
        let mut restarted = Notifier::new(&config, dir.path(), 0, config.channels().unwrap());
        restarted.restore(Some(resume)).unwrap();
        assert_eq!(restarted.waiting.len(), 1);
        assert_eq!(restarted.waiting[0].record, hook);
    }
}
