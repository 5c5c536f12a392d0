//! The fuzz smoke of `cargo test`: every target over every input of its
//! committed corpus (seeds, and inputs AFL++ found interesting or
//! crashing, kept as regressions), then over mutations of them — bit
//! flips, byte insertions and deletions, truncations and splices — drawn
//! from a fixed seed, so a failure repeats.

use std::path::PathBuf;

/// Mutations per target: a few seconds in a debug build.
const MUTATIONS: usize = 20_000;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// xorshift64: deterministic, no dependency.
struct Draw(u64);

impl Draw {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

fn mutate(input: &[u8], other: &[u8], draw: &mut Draw) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + draw.below(4) {
        let at = draw.below(out.len() + 1);
        match draw.below(6) {
            0 if !out.is_empty() => {
                let at = at.min(out.len() - 1);
                out[at] ^= 1 << draw.below(8);
            }
            1 => {
                let tokens = b"{}[]\",:\\0123456789eE.-+ \n\r\tunl";
                out.insert(at, tokens[draw.below(tokens.len())]);
            }
            2 if at < out.len() => drop(out.remove(at)),
            3 => out.truncate(at),
            4 => {
                let from = draw.below(other.len() + 1);
                let tail = &other[from..];
                out.splice(at.., tail.iter().copied());
            }
            _ => out.insert(at, draw.below(256) as u8),
        }
    }
    out
}

#[test]
fn every_target_holds_over_its_corpus_and_mutations_of_it() {
    for (name, target) in weir_fuzz::TARGETS {
        let inputs = corpus(name);
        assert!(!inputs.is_empty(), "{name}: empty corpus");
        for input in &inputs {
            target(input);
        }
        let mut draw = Draw(0x9e37_79b9_7f4a_7c15);
        for _ in 0..MUTATIONS {
            let input = &inputs[draw.below(inputs.len())];
            let other = &inputs[draw.below(inputs.len())];
            let mutant = mutate(input, other, &mut draw);
            let outcome = std::panic::catch_unwind(|| target(&mutant));
            if outcome.is_err() {
                panic!("{name} failed on {:?}", String::from_utf8_lossy(&mutant));
            }
        }
    }
}
