//! A hand-written reader for the common shape of an event line: one flat
//! object of known fields whose strings have no escapes, `meta` empty or
//! absent, no unknown fields. It borrows every string and took
//! `decode_line` on a bench line from ~640 to ~360 ns (docs/PERFORMANCE.md).
//! Anything else, valid or not, makes it give up (`None`) and the line
//! takes the serde path, which decides; so the scanner never accepts what
//! serde would reject, and reads what both accept the same way (a
//! differential test checks this).

use std::borrow::Cow;

use super::Typed;

/// Reads `line` into `typed` (a fresh one) if it has the common shape;
/// `None` otherwise, leaving `typed` partly filled.
pub(crate) fn scan<'a>(line: &'a [u8], typed: &mut Typed<'a>) -> Option<()> {
    let text = std::str::from_utf8(line).ok()?;
    let mut scanner = Scanner { text, at: 0 };
    scanner.list(b'{', b'}', |scanner| scanner.field(typed))?;
    scanner.skip_whitespace();
    (scanner.at == text.len()).then_some(())
}

/// Reads the head of a result record as weir encodes it,
/// `{"id":"ID","reactor":"NAME"`, both strings without escapes: the id and
/// the offset just past the head. `None` for any other start.
pub(crate) fn result_head(text: &str) -> Option<(&str, usize)> {
    const ID: &str = "{\"id\":";
    const REACTOR: &str = ",\"reactor\":";
    if !text.starts_with(ID) {
        return None;
    }
    let mut scanner = Scanner { text, at: ID.len() };
    let id = scanner.string()?;
    if !text[scanner.at..].starts_with(REACTOR) {
        return None;
    }
    scanner.at += REACTOR.len();
    scanner.string()?;
    Some((id, scanner.at))
}

/// Reads the event fields that follow a result record's head (`at`, from
/// [`result_head`]) into `typed`, as [`scan`] reads a whole event line.
pub(crate) fn scan_fields<'a>(text: &'a str, at: usize, typed: &mut Typed<'a>) -> Option<()> {
    let mut scanner = Scanner { text, at };
    loop {
        if !scanner.eat(b',') {
            return None;
        }
        scanner.field(typed)?;
        if scanner.eat(b'}') {
            break;
        }
    }
    scanner.skip_whitespace();
    (scanner.at == text.len()).then_some(())
}

/// Flags (high bit) the bytes of `word` (little-endian) that end or break
/// a plain string: `"`, `\\` and control characters. Only flags above the
/// lowest may be false (a borrow out of a flagged byte), so the lowest
/// flag marks the first such byte.
fn specials(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero_bytes = |x: u64| x.wrapping_sub(ONES) & !x;
    let quote = zero_bytes(word ^ (ONES * u64::from(b'"')));
    let backslash = zero_bytes(word ^ (ONES * u64::from(b'\\')));
    let control = word.wrapping_sub(ONES * 0x20) & !word;
    (quote | backslash | control) & HIGHS
}

/// Whether `text` holds none of the bytes a JSON string must escape
/// (`"`, `\\`, control characters): then it is written as it is.
pub(crate) fn needs_no_escape(text: &[u8]) -> bool {
    let mut chunks = text.chunks_exact(8);
    let words_plain = chunks
        .by_ref()
        .all(|chunk| specials(u64::from_le_bytes(chunk.try_into().unwrap_or([b'"'; 8]))) == 0);
    words_plain
        && chunks
            .remainder()
            .iter()
            .all(|&byte| !matches!(byte, b'"' | b'\\' | 0..=0x1f))
}

/// 10^0 ..= 10^15, each exact in an `f64`.
const POWERS_OF_TEN: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// The fields the scanner reads.
#[derive(Clone, Copy)]
enum Key {
    Host,
    Service,
    State,
    Description,
    Type,
    Time,
    Metric,
    Ttl,
    Tags,
    Meta,
}

/// Each known key as it appears in a line, closing quote included (so a
/// longer key never matches a shorter one).
const KEYS: [(&[u8], Key); 10] = [
    (b"host\"", Key::Host),
    (b"time\"", Key::Time),
    (b"service\"", Key::Service),
    (b"metric\"", Key::Metric),
    (b"state\"", Key::State),
    (b"ttl\"", Key::Ttl),
    (b"tags\"", Key::Tags),
    (b"description\"", Key::Description),
    (b"type\"", Key::Type),
    (b"meta\"", Key::Meta),
];

struct Scanner<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// Skips whitespace, then consumes `byte` if it comes next.
    fn eat(&mut self, byte: u8) -> bool {
        self.skip_whitespace();
        let found = self.peek() == Some(byte);
        self.at += usize::from(found);
        found
    }

    /// Consumes `word` if it comes next (after whitespace).
    fn eat_word(&mut self, word: &str) -> bool {
        self.skip_whitespace();
        let found = self.text[self.at..].starts_with(word);
        if found {
            self.at += word.len();
        }
        found
    }

    /// One `"key": value` of the object into `typed`.
    fn field(&mut self, typed: &mut Typed<'a>) -> Option<()> {
        let key = self.key()?;
        if !self.eat(b':') {
            return None;
        }
        match key {
            Key::Host => typed.host = self.text()?,
            Key::Service => typed.service = self.text()?,
            Key::State => typed.state = self.text()?,
            Key::Description => typed.description = self.text()?,
            Key::Type => typed.kind = self.text()?,
            Key::Time => typed.time = self.nullable(Self::number)?,
            Key::Metric => typed.metric = self.nullable(Self::number)?,
            Key::Ttl => typed.ttl = self.nullable(Self::number)?,
            Key::Tags => typed.tags = self.nullable(Self::strings)?.unwrap_or_default(),
            // Only an empty `meta`: anything in it takes the serde path.
            Key::Meta => {
                if !self.eat_word("null") {
                    self.list(b'{', b'}', |_| None)?;
                }
            }
        }
        Some(())
    }

    /// A known key, matched on its bytes and closing quote; an unknown
    /// key, or one written with escapes, gives up.
    fn key(&mut self) -> Option<Key> {
        if !self.eat(b'"') {
            return None;
        }
        let rest = &self.text.as_bytes()[self.at..];
        let &(name, key) = KEYS.iter().find(|(name, _)| rest.starts_with(name))?;
        self.at += name.len();
        Some(key)
    }

    /// `open`, then items read by `item` separated by commas, then `close`.
    fn list(
        &mut self,
        open: u8,
        close: u8,
        mut item: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        if !self.eat(open) {
            return None;
        }
        if self.eat(close) {
            return Some(());
        }
        loop {
            item(self)?;
            if self.eat(close) {
                return Some(());
            }
            if !self.eat(b',') {
                return None;
            }
        }
    }

    /// A nullable string field.
    fn text(&mut self) -> Option<Option<Cow<'a, str>>> {
        self.nullable(Self::string)
            .map(|text| text.map(Cow::Borrowed))
    }

    /// `null` as `Some(None)`, else what `read` reads.
    fn nullable<T>(&mut self, read: fn(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.eat_word("null") {
            Some(None)
        } else {
            read(self).map(Some)
        }
    }

    /// A string without escapes or control characters.
    fn string(&mut self) -> Option<&'a str> {
        if !self.eat(b'"') {
            return None;
        }
        let start = self.at;
        let bytes = self.text.as_bytes();
        // Eight bytes at a time while they last, then one by one.
        while let Some(chunk) = bytes.get(self.at..self.at + 8) {
            let special = specials(u64::from_le_bytes(chunk.try_into().ok()?));
            if special != 0 {
                self.at += special.trailing_zeros() as usize / 8;
                break;
            }
            self.at += 8;
        }
        while !matches!(*bytes.get(self.at)?, b'"' | b'\\' | 0..=0x1f) {
            self.at += 1;
        }
        if bytes[self.at] != b'"' {
            return None;
        }
        self.at += 1;
        Some(&self.text[start..self.at - 1])
    }

    /// A number in JSON's grammar, finite as an `f64`.
    ///
    /// A number of at most 15 significant digits without an exponent (event
    /// times, metrics and ttls nearly always) is computed from its digits
    /// in one division, Clinger's fast path: both operands are exact in an
    /// `f64`, so the one rounding gives exactly what `str::parse` gives.
    /// Any other number is parsed from its text.
    fn number(&mut self) -> Option<f64> {
        self.skip_whitespace();
        let start = self.at;
        let negative = self.peek() == Some(b'-');
        self.at += usize::from(negative);
        let mut mantissa = 0u64;
        let mut digits = match self.peek()? {
            b'0' => {
                self.at += 1;
                0
            }
            b'1'..=b'9' => self.digits(&mut mantissa),
            _ => return None,
        };
        let mut decimals = 0;
        if self.peek() == Some(b'.') {
            self.at += 1;
            decimals = self.digits(&mut mantissa);
            if decimals == 0 {
                return None;
            }
            digits += decimals;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            if self.digits(&mut 0) == 0 {
                return None;
            }
        } else if digits <= 15 {
            // An integer needs no division (slow, and exact by 10^0 anyway).
            let magnitude = match decimals {
                0 => mantissa as f64,
                _ => mantissa as f64 / POWERS_OF_TEN[decimals],
            };
            return Some(if negative { -magnitude } else { magnitude });
        }
        let number: f64 = self.text[start..self.at].parse().ok()?;
        number.is_finite().then_some(number)
    }

    /// Consumes a run of digits, appending them to `value` (which wraps
    /// past 19 digits: callers only read it for 15 or fewer); their count.
    fn digits(&mut self, value: &mut u64) -> usize {
        let start = self.at;
        while let Some(digit @ b'0'..=b'9') = self.peek() {
            *value = value.wrapping_mul(10).wrapping_add(u64::from(digit - b'0'));
            self.at += 1;
        }
        self.at - start
    }

    /// An array of strings.
    fn strings(&mut self) -> Option<Vec<Cow<'a, str>>> {
        let mut items = Vec::new();
        self.list(b'[', b']', |scanner| {
            items.push(Cow::Borrowed(scanner.string()?));
            Some(())
        })?;
        Some(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{decode_visited, DecodeOptions, TtlUnit};

    /// What a line decodes to, with numbers compared bit for bit (`-0.0`).
    fn outcome(mut typed: Typed<'_>) -> String {
        let options = DecodeOptions {
            ttl_unit: TtlUnit::Ms,
            ..DecodeOptions::default()
        };
        match typed.finish(&options, 7.0) {
            Ok(event) => String::from_utf8(event.to_json()).unwrap(),
            Err(rejection) => format!("rejected: {rejection}"),
        }
    }

    /// The scanner either gives up or agrees with serde's visitor.
    fn agrees(line: &str) -> bool {
        let mut scanned = Typed::default();
        let accepted = scan(line.as_bytes(), &mut scanned).is_some();
        if accepted {
            let visited = decode_visited(line.as_bytes())
                .unwrap_or_else(|| panic!("the scanner took a line serde rejects: {line}"));
            assert_eq!(outcome(scanned), outcome(visited), "{line}");
        }
        accepted
    }

    #[test]
    fn reads_the_common_shapes() {
        let lines = [
            r#"{"host":"bench-17","service":"bench/load","state":"ok","time":1732280000.123,"metric":42,"ttl":60,"tags":["bench"]}"#,
            r#" { "host" : "a" , "time" : 1.5e3 , "tags" : [ ] , "meta" : { } , "metric" : null } "#,
            r#"{"host":"h\u00e9"}"#,
            "{\"host\":\"h\u{e9}\",\"description\":\"caf\u{e9} \u{1f600}\",\"type\":\"t\"}",
            r#"{"host":"a","metric":-0,"ttl":-0.0,"time":0}"#,
            r#"{"host":"a","metric":9007199254740993,"time":123456789012345678901234567890}"#,
            r#"{"host":"a","metric":1E+2,"ttl":2.5e-7,"time":1732280000500}"#,
            r#"{"host":"a","metric":1e-400,"ttl":0.1000000000000000055511151231257827021181583404541015625}"#,
            r#"{"host":"a","host":"b","tags":["x"],"tags":["y","z"]}"#,
            r#"{}"#,
            r#"{"host":""}"#,
            r#"{"service":"no host"}"#,
        ];
        let scanned: Vec<bool> = lines.iter().map(|line| agrees(line)).collect();
        assert_eq!(
            scanned,
            [true, true, false, true, true, true, true, true, true, true, true, true]
        );
    }

    #[test]
    fn gives_up_on_everything_else() {
        let lines = [
            r#"{"host":"a\"b"}"#,
            "{\"host\":\"a\tb\"}",
            r#"{"host":"a-long-hostname\"quoted"}"#,
            "{\"host\":\"a-long-hostname\ttab\"}",
            "{\"host\":\"a-long-hostname\u{1}\"}",
            r#"{"host":"a","meta":{"k":1}}"#,
            r#"{"host":"a","zone":"eu"}"#,
            r#"{"ho\u0073t":"a"}"#,
            r#"{"hosts":"a"}"#,
            r#"{"host"#,
            r#"{"host":"a","metric":01}"#,
            r#"{"host":"a","metric":1.}"#,
            r#"{"host":"a","metric":.5}"#,
            r#"{"host":"a","metric":-}"#,
            r#"{"host":"a","metric":1e}"#,
            r#"{"host":"a","metric":+1}"#,
            r#"{"host":"a","metric":1e400}"#,
            r#"{"host":"a","metric":NaN}"#,
            r#"{"host":"a","metric":"1"}"#,
            r#"{"host":7}"#,
            r#"{"host":"a","tags":[1]}"#,
            r#"{"host":"a","tags":["x",]}"#,
            r#"{"host":"a",}"#,
            r#"{"host":"a"} x"#,
            r#"{"host":"a""#,
            r#"{"host":nul}"#,
            r#"{"host":nullx}"#,
            r#"[{"host":"a"}]"#,
            "",
        ];
        for line in lines {
            assert!(!agrees(line), "{line}");
        }
        assert!(scan(b"{\"host\":\"\xff\"}", &mut Typed::default()).is_none());
    }

    #[test]
    fn specials_finds_the_first_byte_that_ends_a_plain_string() {
        let naive = |bytes: [u8; 8]| {
            bytes
                .iter()
                .position(|b| matches!(b, b'"' | b'\\' | 0..=0x1f))
        };
        let swar = |bytes: [u8; 8]| {
            let flags = specials(u64::from_le_bytes(bytes));
            (flags != 0).then(|| flags.trailing_zeros() as usize / 8)
        };
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for round in 0..200_000u32 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut bytes = seed.to_le_bytes();
            // Mostly plain text, with one chosen byte at a chosen place.
            if round % 4 != 0 {
                bytes = bytes.map(|b| b'a' + b % 26);
                bytes[(round % 8) as usize] = (round / 8 % 256) as u8;
            }
            assert_eq!(swar(bytes), naive(bytes), "{bytes:?}");
        }
    }

    /// Numbers of every length around the fast path's 15 digits, with and
    /// without sign, fraction and exponent, read bit for bit as
    /// `str::parse` reads them.
    #[test]
    fn numbers_read_like_str_parse() {
        let read = |text: &str| Scanner { text, at: 0 }.number();
        let parsed = |text: &str| text.parse::<f64>().ok().filter(|n| n.is_finite());
        let edges = [
            "0",
            "-0",
            "-0.0",
            "0.1",
            "0.000000000000001",
            "0.0000000000000001",
            "123456789012345",
            "1234567890123456",
            "9007199254740993",
            "999999999999999.9",
            "1763916000.123",
            "-1763916000123.45",
            "1e22",
            "1e400",
        ];
        for text in edges {
            assert_eq!(
                read(text).map(f64::to_bits),
                parsed(text).map(f64::to_bits),
                "{text}"
            );
        }
        let mut seed = 0x51_7cc1_b727_220a_u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let digits = |count: u64, next: &mut dyn FnMut(u64) -> u64| -> String {
            (0..count)
                .map(|_| char::from(b'0' + next(10) as u8))
                .collect()
        };
        for _ in 0..200_000 {
            let mut text = String::new();
            if next(3) == 0 {
                text.push('-');
            }
            match next(4) {
                0 => text.push('0'),
                _ => {
                    text.push(char::from(b'1' + next(9) as u8));
                    text += &digits(next(19), &mut next);
                }
            }
            if next(3) != 0 {
                text.push('.');
                text += &digits(1 + next(18), &mut next);
            }
            if next(8) == 0 {
                text.push('e');
                text += &next(30).to_string();
            }
            assert_eq!(
                read(&text).map(f64::to_bits),
                parsed(&text).map(f64::to_bits),
                "{text}"
            );
        }
    }

    /// Lines assembled at random from valid and invalid pieces: whatever
    /// the scanner accepts, serde accepts and reads the same.
    #[test]
    fn agrees_with_serde_on_generated_lines() {
        let keys = [
            "host",
            "service",
            "state",
            "description",
            "type",
            "time",
            "metric",
            "ttl",
            "tags",
            "meta",
            "other",
        ];
        let values = [
            r#""web-1""#,
            r#""""#,
            r#""a\nb""#,
            r#""ünï""#,
            "null",
            "0",
            "-0",
            "1.25",
            "-3e2",
            "1732280000.5",
            "1732280000500",
            "1e400",
            "01",
            "true",
            "[]",
            r#"["a"]"#,
            r#"["a",1]"#,
            "{}",
            r#"{"k":"v"}"#,
            r#"  "x"  "#,
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let mut accepted = 0;
        for _ in 0..20_000 {
            let fields: Vec<String> = (0..1 + next(5))
                .map(|_| {
                    format!(
                        r#""{}":{}"#,
                        keys[next(keys.len())],
                        values[next(values.len())]
                    )
                })
                .collect();
            let line = format!(
                "{{{}}}",
                fields.join(if next(4) == 0 { " , " } else { "," })
            );
            accepted += usize::from(agrees(&line));
        }
        assert!(accepted > 1000, "the scanner took only {accepted} lines");
    }
}
