//! Properties the fuzzers (`fuzz/`) check on arbitrary input; each panics
//! when its property fails. Built with the `fuzzing` feature only.

use weir_event::{DecodeOptions, Entry, Reason};

use crate::http::{decode_body, BodyRules};

/// Decodes an HTTP request body as `POST /events` does: it is refused
/// whole only as a malformed array or too many items; otherwise every item
/// is accepted or rejected on its own, and of an NDJSON body exactly the
/// lines that are valid alone are accepted, in order.
pub fn check_http_body(body: &[u8]) {
    let rules = BodyRules {
        options: DecodeOptions::default(),
        max_line: 4096,
        max_events: 256,
        max_body: 1 << 20,
    };
    let (events, errors) = match decode_body(body, &rules) {
        Ok(decoded) => decoded,
        Err(refusal) => {
            assert!(
                matches!(refusal.reason, Reason::InvalidJson | Reason::BatchTooLarge),
                "{body:?} refused whole: {refusal:?}"
            );
            return;
        }
    };
    let numbers: Vec<usize> = errors.iter().map(|e| e.line).collect();
    assert!(
        numbers.windows(2).all(|w| w[0] < w[1]),
        "errors out of order"
    );
    if body.trim_ascii_start().starts_with(b"[") {
        let items = serde_json::from_slice::<Vec<serde_json::Value>>(body.trim_ascii_start())
            .expect("an array body decoded only if it parses")
            .len();
        assert_eq!(events.len() + errors.len(), items, "an item lost");
        return;
    }
    let valid_alone: Vec<String> = crate::ndjson::lines(body)
        .map(<[u8]>::trim_ascii)
        .filter(|line| !line.is_empty() && line.len() <= rules.max_line)
        .filter_map(|line| Entry::from_line(line, &rules.options, 0.0).ok())
        .map(|(host, _)| host.into_owned())
        .collect();
    let accepted: Vec<&str> = events.iter().map(|(host, _)| host).collect();
    assert_eq!(
        accepted, valid_alone,
        "accepted lines differ from the valid ones"
    );
}

/// Every other protocol's decoder over the same bytes (Riemann,
/// remote_write, OTLP in protobuf and JSON, and the Graphite, InfluxDB and
/// StatsD lines): an error or rejections, never a panic, and an event
/// taken only with a host.
pub fn check_protocols(data: &[u8]) {
    use crate::protocol::Protocol;
    let options = DecodeOptions::default();
    let graphite =
        crate::graphite::Graphite::new("graphite", &["servers.* .host.service*".into()], options)
            .expect("a valid template");
    let influx = crate::influx::Influx {
        name: "influx",
        precision: crate::influx::Precision::Auto,
        options,
    };
    let riemann = crate::riemann::Riemann {
        name: "riemann",
        options: DecodeOptions::default(),
    };
    let statsd = crate::statsd::Statsd::raw_for_fuzzing();
    let protocols: [&dyn Protocol; 4] = [&graphite, &influx, &riemann, &statsd];
    let mut events = weir_router::Encoded::default();
    let mut rejected = Vec::new();
    for protocol in protocols {
        protocol.decode_datagram(data, 0.0, &mut events, &mut rejected);
    }
    let _ = crate::remote_write::decode(data, 1 << 20, &options, 0.0, &mut events, &mut rejected);
    for encoding in [crate::otlp::Encoding::Protobuf, crate::otlp::Encoding::Json] {
        let _ = crate::otlp::decode(data, encoding, &options, 0.0, &mut events, &mut rejected);
    }
    for (host, value) in events.iter() {
        assert!(!host.is_empty(), "an event without a host");
        assert!(
            matches!(Entry::decode(value), Ok(Entry::Event(_))),
            "an event that does not read back"
        );
    }
}
