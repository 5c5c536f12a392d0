//! Properties the fuzzers (`fuzz/`) check on arbitrary input; each panics
//! when its property fails. Built with the `fuzzing` feature only.

use crate::decode::{decode_slow, decode_visited, scan, Typed};
use crate::{decode_line, DecodeOptions, Entry, TtlUnit};

/// One line through every decoder, under both TTL units and with the
/// future bound on and off: the scanner either gives up or reads what
/// serde's visitor reads; the fast path decides exactly as the exact
/// `Value` path (same event, same rejection); and what ingest stores for
/// the line decodes back to that event.
pub fn check_line(line: &[u8]) {
    let now = 1.7e9;
    let variants = [
        DecodeOptions::default(),
        DecodeOptions {
            ttl_unit: TtlUnit::Ms,
            max_future_secs: Some(300.0),
        },
    ];
    for options in variants {
        let mut scanned = Typed::default();
        if scan::scan(line, &mut scanned).is_some() {
            let mut visited = decode_visited(line)
                .unwrap_or_else(|| panic!("the scanner took a line serde refuses: {line:?}"));
            assert_eq!(
                scanned.finish(&options, now),
                visited.finish(&options, now),
                "scanner and serde read {line:?} differently"
            );
        }
        let decided = decode_line(line, &options, now);
        assert_eq!(
            decided,
            decode_slow(line, &options, now),
            "fast and exact paths disagree on {line:?}"
        );
        match (Entry::from_line(line, &options, now), decided) {
            (Ok((host, value)), Ok(event)) => {
                assert_eq!(host, event.host, "{line:?}");
                assert_eq!(
                    Entry::decode(&value),
                    Ok(Entry::Event(event)),
                    "the stored value of {line:?} reads back differently"
                );
            }
            (Err(stored), Err(decoded)) => assert_eq!(stored, decoded, "{line:?}"),
            (stored, decoded) => {
                panic!("ingest and the decoder disagree on {line:?}: {stored:?} / {decoded:?}")
            }
        }
    }
}
