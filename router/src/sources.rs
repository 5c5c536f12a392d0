//! Registry sources that keep the view current without a person: the
//! seed file, re-read when it changes, and an HTTP JSON source in the
//! seed's format, polled with `If-None-Match`. A thread watches them and
//! hands each new content to the router, which turns it into registry
//! records ([`crate::registry::Registry::apply_source`]). A source that is
//! down or serves garbage changes nothing: it is logged and counted
//! (`weir_registry_source_errors_total`), and the view stays as it is.

use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use crate::metrics::{SOURCE_ERRORS, SOURCE_UPDATES};
use crate::registry::{content_hash, read_seed_file, RegistryError, Seed};

/// New content of a source.
pub(crate) struct Update {
    /// The source's name: `file:PATH` or the URL.
    pub name: String,
    /// Its content.
    pub seed: Seed,
    /// [`content_hash`] of its text.
    pub hash: u64,
}

/// Where the registry comes from besides the admin API.
pub(crate) struct Sources {
    /// The seed file, and the modification time and size last read.
    pub file: Option<(PathBuf, Option<(SystemTime, u64)>)>,
    /// The HTTP source and how often it is polled.
    pub url: Option<(String, Duration)>,
}

/// How often the file's modification time is looked at.
const FILE_CHECK: Duration = Duration::from_secs(1);

/// The name of the seed file as a source.
pub(crate) fn file_source(path: &std::path::Path) -> String {
    format!("file:{}", path.display())
}

/// The file's modification time and size, if it can be read.
pub(crate) fn stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

impl Sources {
    /// Watches the sources on a thread of their own until `alive` is
    /// gone, sending new content to `updates`.
    pub(crate) fn watch(mut self, updates: Sender<Update>, alive: Weak<()>) -> std::io::Result<()> {
        let mut etag: Option<String> = None;
        let mut polled: Option<Instant> = None;
        std::thread::Builder::new()
            .name("weir-registry-sources".into())
            .spawn(move || {
                // Built here: a blocking client must not live in async code.
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build();
                let client = match client {
                    Ok(client) => client,
                    Err(error) => {
                        return tracing::error!(%error, "registry sources: no HTTP client");
                    }
                };
                while alive.upgrade().is_some() {
                    if let Some(update) = self.check_file() {
                        if updates.send(update).is_err() {
                            return;
                        }
                    }
                    if let Some((url, interval)) = &self.url {
                        if polled.is_none_or(|at| at.elapsed() >= *interval) {
                            polled = Some(Instant::now());
                            if let Some(update) = poll(&client, url, &mut etag) {
                                if updates.send(update).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    std::thread::sleep(FILE_CHECK);
                }
            })?;
        Ok(())
    }

    /// The file's content if it changed since it was last read.
    fn check_file(&mut self) -> Option<Update> {
        let (path, last) = self.file.as_mut()?;
        let now = stamp(path);
        if now.is_none() || now == *last {
            return None;
        }
        *last = now;
        let name = file_source(path);
        match read_seed_file(path) {
            Ok((seed, hash)) => {
                SOURCE_UPDATES.with_label_values(&[&name]).inc();
                tracing::info!(source = %name, "registry source changed");
                Some(Update { name, seed, hash })
            }
            Err(error) => {
                failed(&name, &error);
                None
            }
        }
    }
}

/// Polls `url`; the new content when it changed.
fn poll(
    client: &reqwest::blocking::Client,
    url: &str,
    etag: &mut Option<String>,
) -> Option<Update> {
    let mut request = client.get(url);
    if let Some(tag) = etag.as_deref() {
        request = request.header(reqwest::header::IF_NONE_MATCH, tag);
    }
    let response = match request.send() {
        Ok(response) => response,
        Err(error) => {
            failed(
                url,
                &RegistryError::Parse {
                    source_name: url.to_owned(),
                    detail: format!("unreachable: {error}"),
                },
            );
            return None;
        }
    };
    let status = response.status();
    if status == reqwest::StatusCode::NOT_MODIFIED {
        return None;
    }
    if !status.is_success() {
        failed(
            url,
            &RegistryError::Parse {
                source_name: url.to_owned(),
                detail: format!("answered {status}"),
            },
        );
        return None;
    }
    let tag = response
        .headers()
        .get(reqwest::header::ETAG)
        .and_then(|t| t.to_str().ok())
        .map(str::to_owned);
    let text = match response.bytes() {
        Ok(text) => text,
        Err(error) => {
            failed(
                url,
                &RegistryError::Parse {
                    source_name: url.to_owned(),
                    detail: format!("reading the body: {error}"),
                },
            );
            return None;
        }
    };
    match Seed::parse(url, &text) {
        Ok(seed) => {
            // Only a good content's tag: a bad one is fetched again.
            *etag = tag;
            SOURCE_UPDATES.with_label_values(&[url]).inc();
            Some(Update {
                name: url.to_owned(),
                seed,
                hash: content_hash(&text),
            })
        }
        Err(error) => {
            failed(url, &error);
            None
        }
    }
}

fn failed(name: &str, error: &RegistryError) {
    SOURCE_ERRORS.with_label_values(&[name]).inc();
    tracing::warn!(source = %name, %error, "registry source failed; the view stays as it is");
}

/// Keeps the sources thread alive while the router runs.
pub(crate) type Alive = Arc<()>;
