//! AFL++ target: [`weir_fuzz::protocols`].

fn main() {
    afl::fuzz!(|data: &[u8]| weir_fuzz::protocols(data));
}
