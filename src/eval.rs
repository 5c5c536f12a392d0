//! `weir eval`: runs one pipeline over recorded NDJSON events, with the
//! clock driven by the events' own times, and prints every result as NDJSON.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use weir_event::{decode_line, DecodeOptions};

/// Arguments of `weir eval`.
#[derive(Args)]
pub struct EvalArgs {
    /// The pipeline to run.
    #[arg(long)]
    pipeline: String,
    /// After the last event, move the clock to this time (epoch seconds) to flush timers.
    #[arg(long)]
    until: Option<f64>,
    /// NDJSON events; standard input when absent.
    file: Option<PathBuf>,
}

/// Runs the pipeline and prints its results.
pub fn eval(args: EvalArgs) -> anyhow::Result<()> {
    let input: Box<dyn BufRead> = match &args.file {
        Some(path) => Box::new(BufReader::new(
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    let mut events = Vec::new();
    for (number, line) in input.lines().enumerate() {
        let line = line.context("reading events")?;
        if line.trim().is_empty() {
            continue;
        }
        // Events without a time get 0 so that the output is reproducible.
        match decode_line(line.as_bytes(), &DecodeOptions::default(), 0.0) {
            Ok(event) => events.push(event),
            Err(rejection) => eprintln!("line {}: rejected: {rejection}", number + 1),
        }
    }
    let results = weir_processor::eval::eval(&args.pipeline, events, args.until)?;
    let mut out = std::io::stdout().lock();
    for result in results {
        out.write_all(&result.encode())?;
        out.write_all(b"\n")?;
    }
    Ok(())
}
