//! AFL++ target: [`weir_fuzz::segment`].

fn main() {
    afl::fuzz!(|data: &[u8]| weir_fuzz::segment(data));
}
