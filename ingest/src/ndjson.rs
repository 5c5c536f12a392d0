//! NDJSON, godot's wire format (TCP, UDP, Unix sockets): one JSON event
//! per line, each line decoded on its own so one bad line never takes the
//! good ones around it down.

use weir_event::{DecodeOptions, Entry, Reason, Rejection};
use weir_router::Encoded;

use crate::protocol::Protocol;

/// NDJSON over a stream or in datagrams.
pub struct Ndjson {
    /// The listener's `protocol` label: `tcp`, `udp` or `unix`.
    pub name: &'static str,
    /// How lines are validated.
    pub options: DecodeOptions,
    /// Longest line taken.
    pub max_line: usize,
}

impl Protocol for Ndjson {
    fn name(&self) -> &'static str {
        self.name
    }

    fn decode(&self, line: &[u8], now: f64, events: &mut Encoded, rejected: &mut Vec<Rejection>) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        if line.len() > self.max_line {
            let detail = format!("line of {} bytes exceeds {}", line.len(), self.max_line);
            return rejected.push(Rejection::new(Reason::LineTooLong, detail));
        }
        match Entry::from_line(line, &self.options, now) {
            Ok((host, value)) => events.push(&host, &value),
            Err(rejection) => rejected.push(rejection),
        }
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
