//! Socket listeners: TCP and Unix stream sockets (a task per connection,
//! capped by a semaphore) and UDP (one task reading datagrams).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UdpSocket, UnixListener};
use tokio::sync::Semaphore;
use weir_event::DecodeOptions;
use weir_log::backoff::Backoff;
use weir_router::{Encoded, RouterHandle};

use crate::metrics::{ACCEPTED, CONNECTIONS, TLS_FAILURES};
use crate::ndjson::{decode_lines, read_stream};
use crate::tls::Acceptor;
use crate::{Bound, IngestConfig, IngestError, Listener};

/// Binds every configured socket listener and spawns its accept loop on
/// the current runtime. Returns where each one listens.
pub async fn start(config: &IngestConfig, router: RouterHandle) -> Result<Bound, IngestError> {
    let mut bound = Bound::default();
    if let Some(listener) = &config.tcp {
        let socket = TcpListener::bind(&listener.listen)
            .await
            .map_err(bind_err("tcp", listener))?;
        bound.tcp = socket.local_addr().ok();
        let (options, limits) = settings(config, listener);
        let tls = listener.acceptor("tcp")?;
        let router = router.clone();
        tokio::spawn(async move {
            accept_loop("tcp", limits, router, options, tls, || async {
                socket.accept().await.map(|(stream, _)| stream)
            })
            .await
        });
    }
    for (protocol, listener) in [("unix", &config.unix), ("udp", &config.udp)] {
        if listener.as_ref().is_some_and(|l| l.tls.is_some()) {
            return Err(IngestError::Tls {
                protocol,
                detail: "only the tcp and http listeners offer TLS".into(),
            });
        }
    }
    if let Some(listener) = &config.unix {
        // A socket file left by a previous run would make bind fail.
        let _ = std::fs::remove_file(&listener.listen);
        let socket = UnixListener::bind(&listener.listen).map_err(bind_err("unix", listener))?;
        bound.unix = Some(listener.listen.clone().into());
        let (options, limits) = settings(config, listener);
        let router = router.clone();
        tokio::spawn(async move {
            accept_loop("unix", limits, router, options, None, || async {
                socket.accept().await.map(|(stream, _)| stream)
            })
            .await
        });
    }
    if let Some(listener) = &config.udp {
        let socket = UdpSocket::bind(&listener.listen)
            .await
            .map_err(bind_err("udp", listener))?;
        bound.udp = socket.local_addr().ok();
        let (options, limits) = settings(config, listener);
        tokio::spawn(udp_loop(socket, options, limits.max_line, router));
    }
    Ok(bound)
}

#[derive(Clone, Copy)]
struct Limits {
    max_line: usize,
    max_connections: usize,
    idle: Duration,
}

fn settings(config: &IngestConfig, listener: &Listener) -> (DecodeOptions, Limits) {
    (
        DecodeOptions {
            ttl_unit: listener.ttl_unit,
            max_future_secs: config.max_future_secs,
        },
        Limits {
            max_line: config.max_line_bytes,
            max_connections: config.max_connections,
            idle: Duration::from_secs(config.idle_timeout_secs.max(1)),
        },
    )
}

fn bind_err<'a>(
    protocol: &'static str,
    listener: &'a Listener,
) -> impl FnOnce(std::io::Error) -> IngestError + 'a {
    move |source| IngestError::Bind {
        protocol,
        address: listener.listen.clone(),
        source,
    }
}

/// Accepts connections while fewer than `max_connections` are open; an
/// accept error is retried with backoff instead of ending the listener.
/// With `tls`, each connection's handshake runs in its own task.
async fn accept_loop<S, F, Fut>(
    protocol: &'static str,
    limits: Limits,
    router: RouterHandle,
    options: DecodeOptions,
    tls: Option<Acceptor>,
    accept: F,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<S>>,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let gauge = CONNECTIONS.with_label_values(&[protocol]);
    let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_secs(1));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let stream = match accept().await {
            Ok(stream) => {
                backoff.succeeded();
                stream
            }
            Err(error) => {
                tracing::warn!(protocol, %error, "accept failed; retrying");
                tokio::time::sleep(backoff.failed()).await;
                continue;
            }
        };
        let (router, gauge, tls) = (router.clone(), gauge.clone(), tls.clone());
        gauge.inc();
        tokio::spawn(async move {
            let ended = async {
                let stream: Box<dyn AsyncRead + Unpin + Send> = match tls {
                    None => Box::new(stream),
                    Some(tls) => Box::new(tls.accept(stream).await.inspect_err(|_| {
                        TLS_FAILURES.with_label_values(&[protocol]).inc();
                    })?),
                };
                let (max_line, idle) = (limits.max_line, limits.idle);
                read_stream(stream, protocol, options, max_line, idle, &router).await
            }
            .await;
            if let Err(error) = ended {
                tracing::debug!(protocol, %error, "connection ended with an error");
            }
            gauge.dec();
            drop(permit);
        });
    }
}

async fn udp_loop(
    socket: UdpSocket,
    options: DecodeOptions,
    max_line: usize,
    router: RouterHandle,
) {
    let mut datagram = vec![0u8; 65_536];
    let accepted = ACCEPTED.with_label_values(&["udp"]);
    loop {
        let len = match socket.recv(&mut datagram).await {
            Ok(len) => len,
            Err(error) => {
                tracing::warn!(%error, "udp receive failed");
                continue;
            }
        };
        let mut events = Encoded::default();
        decode_lines(&datagram[..len], "udp", &options, max_line, &mut events);
        if events.is_empty() {
            continue;
        }
        if router.send(events, accepted.clone()).await.is_err() {
            return;
        }
    }
}
