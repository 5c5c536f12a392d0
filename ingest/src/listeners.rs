//! Socket listeners: stream sockets (TCP, Unix; a task per connection,
//! capped by a semaphore) and UDP (one task reading datagrams), each
//! speaking one [`Protocol`]. A protocol is registered here in one line
//! per transport it runs on.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UdpSocket, UnixListener};
use tokio::sync::Semaphore;
use weir_event::DecodeOptions;
use weir_log::backoff::Backoff;
use weir_router::RouterHandle;

use crate::graphite::Graphite;
use crate::influx::{Influx, Precision};
use crate::metrics::{CONNECTIONS, TLS_FAILURES};
use crate::ndjson::Ndjson;
use crate::protocol::{serve_datagrams, serve_stream, Protocol, StreamLimits};
use crate::riemann::Riemann;
use crate::statsd::Statsd;
use crate::tls::Acceptor;
use crate::{Bound, IngestConfig, IngestError, Listener};

/// Binds every configured socket listener and spawns its accept loop on
/// the current runtime. Returns where each one listens.
pub async fn start(config: &IngestConfig, router: RouterHandle) -> Result<Bound, IngestError> {
    for (protocol, listener) in [("unix", &config.unix), ("udp", &config.udp)] {
        if listener.as_ref().is_some_and(|l| l.tls.is_some()) {
            return Err(IngestError::Tls {
                protocol,
                detail: "only stream listeners on TCP and the http listener offer TLS".into(),
            });
        }
    }
    let ndjson = |name, listener: &Listener| Ndjson {
        name,
        options: options(config, listener),
        max_line: config.max_line_bytes,
    };
    let mut bound = Bound::default();
    if let Some(listener) = &config.tcp {
        bound.tcp = Some(tcp(config, listener, ndjson("tcp", listener), &router).await?);
    }
    if let Some(listener) = &config.unix {
        unix(config, listener, ndjson("unix", listener), &router)?;
        bound.unix = Some(listener.listen.clone().into());
    }
    if let Some(listener) = &config.udp {
        bound.udp = Some(udp(listener, ndjson("udp", listener), &router).await?);
    }
    if let Some(listener) = &config.graphite {
        let options = options(config, &listener.listener);
        let graphite = |name| Graphite::new(name, &listener.templates, options);
        let graphite = (graphite("graphite"), graphite("graphite-udp"));
        let tcp = tcp(config, &listener.listener, graphite.0?, &router).await?;
        udp(&listener.listener.at_port(tcp.port()), graphite.1?, &router).await?;
        bound.graphite = Some(tcp);
    }
    if let Some(listener) = &config.riemann {
        let riemann = |name| Riemann {
            name,
            options: options(config, listener),
        };
        let tcp = tcp(config, listener, riemann("riemann"), &router).await?;
        udp(
            &listener.at_port(tcp.port()),
            riemann("riemann-udp"),
            &router,
        )
        .await?;
        bound.riemann = Some(tcp);
    }
    if let Some(listener) = &config.influx {
        let influx = Influx {
            name: "influx-udp",
            precision: Precision::Auto,
            options: options(config, listener),
        };
        bound.influx = Some(udp(listener, influx, &router).await?);
    }
    if let Some(statsd) = &config.statsd {
        let (datagrams, stream) = Statsd::start(statsd, router.clone());
        let address = udp(&statsd.listener, datagrams, &router).await?;
        tcp(
            config,
            &statsd.listener.at_port(address.port()),
            stream,
            &router,
        )
        .await?;
        bound.statsd = Some(address);
    }
    Ok(bound)
}

fn options(config: &IngestConfig, listener: &Listener) -> DecodeOptions {
    DecodeOptions {
        ttl_unit: listener.ttl_unit,
        max_future_secs: config.max_future_secs,
    }
}

fn limits(config: &IngestConfig) -> (StreamLimits, usize) {
    let limits = StreamLimits {
        max_frame: config.max_line_bytes,
        idle: Duration::from_secs(config.idle_timeout_secs.max(1)),
    };
    (limits, config.max_connections)
}

/// Serves `protocol` on a TCP listener (over TLS when configured).
async fn tcp<P: Protocol>(
    config: &IngestConfig,
    listener: &Listener,
    protocol: P,
    router: &RouterHandle,
) -> Result<std::net::SocketAddr, IngestError> {
    let name = protocol.name();
    let socket = TcpListener::bind(&listener.listen)
        .await
        .map_err(bind_err(name, listener))?;
    let address = socket.local_addr().map_err(bind_err(name, listener))?;
    let tls = listener.acceptor(name)?;
    let socket = Arc::new(socket);
    spawn_accepts(config, protocol, tls, router, move || {
        let socket = socket.clone();
        async move { socket.accept().await.map(|(stream, _)| stream) }
    });
    Ok(address)
}

/// Serves `protocol` on a Unix stream socket.
fn unix<P: Protocol>(
    config: &IngestConfig,
    listener: &Listener,
    protocol: P,
    router: &RouterHandle,
) -> Result<(), IngestError> {
    // A socket file left by a previous run would make bind fail.
    let _ = std::fs::remove_file(&listener.listen);
    let socket =
        UnixListener::bind(&listener.listen).map_err(bind_err(protocol.name(), listener))?;
    let socket = Arc::new(socket);
    spawn_accepts(config, protocol, None, router, move || {
        let socket = socket.clone();
        async move { socket.accept().await.map(|(stream, _)| stream) }
    });
    Ok(())
}

/// Runs [`accept_loop`] for a stream listener on the current runtime.
fn spawn_accepts<P, S, F, Fut>(
    config: &IngestConfig,
    protocol: P,
    tls: Option<Acceptor>,
    router: &RouterHandle,
    accept: F,
) where
    P: Protocol,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = std::io::Result<S>> + Send,
{
    let (limits, max_connections) = limits(config);
    let router = router.clone();
    tokio::spawn(async move {
        let protocol = Arc::new(protocol);
        accept_loop(protocol, limits, max_connections, router, tls, accept).await
    });
}

/// Serves `protocol` on a UDP socket.
async fn udp<P: Protocol>(
    listener: &Listener,
    protocol: P,
    router: &RouterHandle,
) -> Result<std::net::SocketAddr, IngestError> {
    let socket = UdpSocket::bind(&listener.listen)
        .await
        .map_err(bind_err(protocol.name(), listener))?;
    let address = socket
        .local_addr()
        .map_err(bind_err(protocol.name(), listener))?;
    let router = router.clone();
    tokio::spawn(async move { serve_datagrams(&protocol, socket, router).await });
    Ok(address)
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

/// A stream connection, plain or TLS.
trait Connection: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Connection for T {}

/// Accepts connections while fewer than `max_connections` are open; an
/// accept error is retried with backoff instead of ending the listener.
/// With `tls`, each connection's handshake runs in its own task.
async fn accept_loop<P, S, F, Fut>(
    protocol: Arc<P>,
    limits: StreamLimits,
    max_connections: usize,
    router: RouterHandle,
    tls: Option<Acceptor>,
    accept: F,
) where
    P: Protocol,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<S>>,
{
    let name = protocol.name();
    let permits = Arc::new(Semaphore::new(max_connections));
    let gauge = CONNECTIONS.with_label_values(&[name]);
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
                tracing::warn!(protocol = name, %error, "accept failed; retrying");
                tokio::time::sleep(backoff.failed()).await;
                continue;
            }
        };
        let (router, gauge, tls, protocol) =
            (router.clone(), gauge.clone(), tls.clone(), protocol.clone());
        gauge.inc();
        tokio::spawn(async move {
            let ended = async {
                let stream: Box<dyn Connection> = match tls {
                    None => Box::new(stream),
                    Some(tls) => Box::new(tls.accept(stream).await.inspect_err(|_| {
                        TLS_FAILURES.with_label_values(&[name]).inc();
                    })?),
                };
                serve_stream(&*protocol, stream, limits, &router).await
            }
            .await;
            if let Err(error) = ended {
                tracing::debug!(protocol = name, %error, "connection ended with an error");
            }
            gauge.dec();
            drop(permit);
        });
    }
}
