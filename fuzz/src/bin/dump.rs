//! AFL++ harness of the `dump` target ([`dinodiff_fuzz::targets::dump`]).

fn main() {
    afl::fuzz!(|data: &[u8]| {
        dinodiff_fuzz::targets::dump(data);
    });
}
