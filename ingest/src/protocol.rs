//! One shape for every wire protocol weir takes over sockets: a
//! [`Protocol`] says how frames are cut from a byte stream, how a frame
//! (or a datagram) decodes into events, each bad item rejected on its own,
//! and what a frame is answered once its events are in the log, if the
//! protocol answers. Everything else is shared here: idle timeouts, the
//! frame size limit, backpressure (a connection is not read while the
//! router is full), the metrics (`weir_ingest_accepted_total{protocol}`
//! once appended, `weir_ingest_rejected_total{protocol,reason}`) and the
//! end of a connection.

use std::ops::Range;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UdpSocket;
use weir_event::{Reason, Rejection};
use weir_router::{Encoded, RouteError, RouterHandle};

use crate::metrics::{reject, ACCEPTED, IDLE_CLOSED};
use crate::now_secs;

/// What the front of a stream's buffer holds.
pub enum Framing {
    /// A whole frame of `len` bytes, whose payload is `payload`.
    Frame {
        /// Bytes the frame takes, framing included.
        len: usize,
        /// Where its payload is.
        payload: Range<usize>,
    },
    /// Not a whole frame yet.
    Incomplete,
}

/// How a stream carries on after a frame longer than the limit.
pub enum Resync {
    /// Drop this many bytes: the next frame starts there.
    After(usize),
    /// Drop everything so far; keep looking in what comes next.
    NotYet,
    /// The stream cannot be picked up again: close the connection.
    Never,
}

/// A frame's outcome, for the protocol's answer.
pub struct Outcome<'a> {
    /// Events appended, or why the log refused them.
    pub appended: Result<usize, &'a RouteError>,
    /// The frame's items rejected on their own.
    pub rejected: &'a [Rejection],
}

/// A wire protocol; line-framed unless it says otherwise.
pub trait Protocol: Send + Sync + 'static {
    /// Its `protocol` label in metrics and logs.
    fn name(&self) -> &'static str;

    /// The frame at the start of `buffer`; by default a line.
    fn frame(&self, buffer: &[u8]) -> Framing {
        line_frame(buffer)
    }

    /// Where to pick the stream up after an over-long frame; by default
    /// after the next newline.
    fn resync(&self, buffer: &[u8]) -> Resync {
        line_resync(buffer)
    }

    /// A frame left when the stream ends, if the protocol takes one; by
    /// default a last line without its newline.
    fn last_frame(&self, buffer: &[u8]) -> Option<Range<usize>> {
        last_line(buffer)
    }

    /// Decodes a frame's items: valid events into `events`, each bad item
    /// into `rejected` with its reason.
    fn decode(&self, payload: &[u8], now: f64, events: &mut Encoded, rejected: &mut Vec<Rejection>);

    /// Decodes a datagram: by default, every frame in it.
    fn decode_datagram(
        &self,
        datagram: &[u8],
        now: f64,
        events: &mut Encoded,
        rejected: &mut Vec<Rejection>,
    ) {
        let mut rest = datagram;
        while let Framing::Frame { len, payload } = self.frame(rest) {
            self.decode(&rest[payload], now, events, rejected);
            rest = &rest[len..];
        }
        if let Some(payload) = self.last_frame(rest) {
            self.decode(&rest[payload], now, events, rejected);
        }
    }

    /// Whether each frame is answered once its events are in the log;
    /// otherwise frames are batched per read.
    fn answers(&self) -> bool {
        false
    }

    /// The answer to a frame once its events are in the log (or were
    /// refused), when the protocol [answers](Protocol::answers).
    fn answer(&self, outcome: &Outcome) -> Vec<u8> {
        let _ = outcome;
        Vec::new()
    }
}

/// A text protocol of one item per line (Graphite, InfluxDB, StatsD):
/// lines framed, checked to be UTF-8, trimmed, blank ones skipped.
pub trait LineProtocol: Send + Sync + 'static {
    /// Its `protocol` label in metrics and logs.
    fn name(&self) -> &'static str;

    /// Decodes one trimmed, non-blank line.
    fn decode_line(
        &self,
        line: &str,
        now: f64,
        events: &mut Encoded,
        rejected: &mut Vec<Rejection>,
    );
}

impl<T: LineProtocol> Protocol for T {
    fn name(&self) -> &'static str {
        LineProtocol::name(self)
    }

    fn decode(&self, line: &[u8], now: f64, events: &mut Encoded, rejected: &mut Vec<Rejection>) {
        let Ok(line) = std::str::from_utf8(line) else {
            return rejected.push(Rejection::new(Reason::Malformed, "line is not UTF-8"));
        };
        let line = line.trim();
        if !line.is_empty() {
            self.decode_line(line, now, events, rejected);
        }
    }
}

/// Line framing (NDJSON and every [`LineProtocol`]): a frame is a line and its
/// newline; a trailing `\r` is left to the decoder.
fn line_frame(buffer: &[u8]) -> Framing {
    match memchr::memchr(b'\n', buffer) {
        Some(end) => Framing::Frame {
            len: end + 1,
            payload: 0..end,
        },
        None => Framing::Incomplete,
    }
}

/// Line resynchronisation: after the next newline.
fn line_resync(buffer: &[u8]) -> Resync {
    match memchr::memchr(b'\n', buffer) {
        Some(end) => Resync::After(end + 1),
        None => Resync::NotYet,
    }
}

/// A last line without its newline.
fn last_line(buffer: &[u8]) -> Option<Range<usize>> {
    (!buffer.is_empty()).then_some(0..buffer.len())
}

/// Limits of a stream connection.
#[derive(Clone, Copy)]
pub struct StreamLimits {
    /// Longest frame, in bytes.
    pub max_frame: usize,
    /// A connection that sends nothing this long is closed.
    pub idle: Duration,
}

/// Serves one connection speaking `protocol` until it ends, is idle too
/// long, or cannot be resynchronised. Without answers, each read's
/// events go to the router together before the next read (backpressure);
/// with answers, each frame waits for its append and is then answered.
pub async fn serve_stream<P, S>(
    protocol: &P,
    mut stream: S,
    limits: StreamLimits,
    router: &RouterHandle,
) -> std::io::Result<()>
where
    P: Protocol + ?Sized,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let name = protocol.name();
    let accepted = ACCEPTED.with_label_values(&[name]);
    let mut buf = BytesMut::with_capacity(64 << 10);
    let mut events = Encoded::default();
    let mut rejected = Vec::new();
    let mut discarding = false;
    loop {
        let Ok(read) = tokio::time::timeout(limits.idle, stream.read_buf(&mut buf)).await else {
            IDLE_CLOSED.with_label_values(&[name]).inc();
            tracing::debug!(protocol = name, idle = ?limits.idle, "closing an idle connection");
            return Ok(());
        };
        let read = read?;
        let now = now_secs();
        loop {
            if discarding {
                match protocol.resync(&buf) {
                    Resync::After(skip) => {
                        buf.advance(skip);
                        discarding = false;
                    }
                    Resync::NotYet => {
                        buf.clear();
                        break;
                    }
                    Resync::Never => {
                        // Counted, answered where the protocol answers,
                        // then closed: nothing after it can be framed.
                        tracing::debug!(
                            protocol = name,
                            "closing a connection that cannot be resynchronised"
                        );
                        if protocol.answers() {
                            answer_frame(protocol, &mut stream, router, &mut events, &mut rejected)
                                .await?;
                        }
                        for rejection in rejected.drain(..) {
                            reject(name, &rejection);
                        }
                        return Ok(());
                    }
                }
            }
            let (len, payload) = match protocol.frame(&buf) {
                Framing::Frame { len, payload } => (len, payload),
                Framing::Incomplete if buf.len() > limits.max_frame => {
                    rejected.push(too_long(buf.len(), limits.max_frame));
                    discarding = true;
                    continue;
                }
                Framing::Incomplete => break,
            };
            if len > limits.max_frame {
                rejected.push(too_long(len, limits.max_frame));
            } else {
                protocol.decode(&buf[payload], now, &mut events, &mut rejected);
            }
            buf.advance(len);
            if protocol.answers() {
                answer_frame(protocol, &mut stream, router, &mut events, &mut rejected).await?;
            }
        }
        if read == 0 && !discarding {
            if let Some(payload) = protocol.last_frame(&buf) {
                protocol.decode(&buf[payload], now, &mut events, &mut rejected);
            }
        }
        for rejection in rejected.drain(..) {
            reject(name, &rejection);
        }
        if !events.is_empty() {
            match router.send(events.take(), accepted.clone()).await {
                Ok(()) => {}
                Err(RouteError::Closed) => return Ok(()),
                Err(error) => tracing::warn!(%error, "router refused a batch"),
            }
        }
        if read == 0 {
            return Ok(());
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 << 10);
        }
    }
}

/// Appends one frame's events, counts them and its rejections, and
/// writes the protocol's answer.
async fn answer_frame<P, S>(
    protocol: &P,
    stream: &mut S,
    router: &RouterHandle,
    events: &mut Encoded,
    rejected: &mut Vec<Rejection>,
) -> std::io::Result<()>
where
    P: Protocol + ?Sized,
    S: AsyncWrite + Unpin,
{
    let name = protocol.name();
    let count = events.len();
    let appended = match count {
        0 => Ok(()),
        _ => router.send_durable(events.take()).await,
    };
    if appended.is_ok() {
        ACCEPTED.with_label_values(&[name]).inc_by(count as u64);
    }
    for rejection in rejected.iter() {
        reject(name, rejection);
    }
    let outcome = Outcome {
        appended: appended.as_ref().map(|()| count),
        rejected,
    };
    stream.write_all(&protocol.answer(&outcome)).await?;
    rejected.clear();
    Ok(())
}

fn too_long(len: usize, max: usize) -> Rejection {
    Rejection::new(
        Reason::LineTooLong,
        format!("frame of {len} bytes exceeds {max}"),
    )
}

/// Reads datagrams speaking `protocol` until the router stops; each
/// datagram's events go to the router on their own.
pub async fn serve_datagrams<P: Protocol + ?Sized>(
    protocol: &P,
    socket: UdpSocket,
    router: RouterHandle,
) {
    let name = protocol.name();
    let accepted = ACCEPTED.with_label_values(&[name]);
    let mut datagram = vec![0u8; 65_536];
    let mut rejected = Vec::new();
    loop {
        let (len, peer) = match socket.recv_from(&mut datagram).await {
            Ok(received) => received,
            Err(error) => {
                tracing::warn!(protocol = name, %error, "udp receive failed");
                continue;
            }
        };
        let mut events = Encoded::default();
        protocol.decode_datagram(&datagram[..len], now_secs(), &mut events, &mut rejected);
        for rejection in rejected.drain(..) {
            reject(name, &rejection);
        }
        if events.is_empty() {
            continue;
        }
        tracing::trace!(protocol = name, %peer, events = events.len(), "datagram");
        if router.send(events, accepted.clone()).await.is_err() {
            return;
        }
    }
}
