//! AFL++ target: [`weir_fuzz::http_body`].

fn main() {
    afl::fuzz!(|data: &[u8]| weir_fuzz::http_body(data));
}
