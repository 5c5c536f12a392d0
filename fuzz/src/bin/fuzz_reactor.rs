//! AFL++ target: [`weir_fuzz::reactor`].

fn main() {
    afl::fuzz!(|data: &[u8]| weir_fuzz::reactor(data));
}
