//! NDJSON framing: splits a byte stream into lines, enforces the line
//! limit, and decodes each line on its own so one bad line never takes
//! the good ones around it down.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use weir_event::{DecodeOptions, Entry, Reason, Rejection};
use weir_router::{Encoded, RouteError, RouterHandle};

use crate::metrics::{reject, ACCEPTED, IDLE_CLOSED};
use crate::now_secs;

/// Decodes the complete lines of `text` into `events` (each with its
/// record value), counting rejects.
pub fn decode_lines(
    text: &[u8],
    protocol: &str,
    options: &DecodeOptions,
    max_line: usize,
    events: &mut Encoded,
) {
    let now = now_secs();
    for line in lines(text) {
        decode_one(line, protocol, options, max_line, now, events);
    }
}

/// The lines of `text` as `split` at each newline gives them (the piece
/// after the last newline included), found with SIMD.
pub(crate) fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        match memchr::memchr(b'\n', current) {
            Some(end) => {
                rest = Some(&current[end + 1..]);
                Some(&current[..end])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

fn decode_one(
    line: &[u8],
    protocol: &str,
    options: &DecodeOptions,
    max_line: usize,
    now: f64,
    events: &mut Encoded,
) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    if line.len() > max_line {
        let rejection = Rejection::new(
            Reason::LineTooLong,
            format!("line of {} bytes exceeds {max_line}", line.len()),
        );
        return reject(protocol, &rejection);
    }
    match Entry::from_line(line, options, now) {
        Ok((host, value)) => events.push(&host, &value),
        Err(rejection) => reject(protocol, &rejection),
    }
}

/// Reads NDJSON from `reader` until EOF, sending each read's valid events
/// to the router before reading on (backpressure). A connection that
/// sends nothing for `idle` is closed (counted, logged at debug).
pub async fn read_stream<R: AsyncRead + Unpin>(
    mut reader: R,
    protocol: &'static str,
    options: DecodeOptions,
    max_line: usize,
    idle: std::time::Duration,
    router: &RouterHandle,
) -> std::io::Result<()> {
    let mut buf = BytesMut::with_capacity(64 << 10);
    let mut events = Encoded::default();
    // Inside a line longer than the limit: drop bytes until its newline.
    let mut discarding = false;
    let accepted = ACCEPTED.with_label_values(&[protocol]);
    loop {
        let Ok(read) = tokio::time::timeout(idle, reader.read_buf(&mut buf)).await else {
            IDLE_CLOSED.with_label_values(&[protocol]).inc();
            tracing::debug!(protocol, ?idle, "closing an idle connection");
            return Ok(());
        };
        let read = read?;
        let now = now_secs();
        if discarding {
            match memchr::memchr(b'\n', &buf) {
                Some(end) => {
                    buf.advance(end + 1);
                    discarding = false;
                }
                None => buf.clear(),
            }
        }
        if !discarding {
            if let Some(last_newline) = memchr::memrchr(b'\n', &buf) {
                let complete = buf.split_to(last_newline + 1);
                for line in lines(&complete[..last_newline]) {
                    decode_one(line, protocol, &options, max_line, now, &mut events);
                }
            }
            if buf.len() > max_line {
                let rejection = Rejection::new(
                    Reason::LineTooLong,
                    format!("line exceeds {max_line} bytes"),
                );
                reject(protocol, &rejection);
                buf.clear();
                discarding = true;
            }
        }
        if read == 0 {
            // EOF: a last line without a newline still counts.
            if !discarding {
                decode_one(&buf, protocol, &options, max_line, now, &mut events);
            }
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

#[cfg(test)]
mod tests {
    use super::lines;

    #[test]
    fn lines_split_like_slice_split() {
        let texts: [&[u8]; 8] = [
            b"",
            b"a",
            b"a\n",
            b"\n",
            b"\n\n",
            b"a\nbc",
            b"{\"host\":\"a\"}\n\n{\"host\":\"b\"}\n",
            b"no\r\nnewline\rhere\n\nlast",
        ];
        for text in texts {
            let expected: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
            assert_eq!(lines(text).collect::<Vec<_>>(), expected, "{text:?}");
        }
    }
}
