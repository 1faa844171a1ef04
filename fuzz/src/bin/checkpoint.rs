//! AFL++ harness of the `checkpoint` target ([`dinodiff_fuzz::targets::checkpoint`]).

fn main() {
    afl::fuzz!(|data: &[u8]| {
        dinodiff_fuzz::targets::checkpoint(data);
    });
}
