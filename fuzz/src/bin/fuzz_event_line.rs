//! AFL++ target: [`weir_fuzz::event_line`].

fn main() {
    afl::fuzz!(|data: &[u8]| weir_fuzz::event_line(data));
}
