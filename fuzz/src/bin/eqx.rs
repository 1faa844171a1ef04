//! AFL++ harness of the `eqx` target ([`dinodiff_fuzz::targets::eqx`]).

fn main() {
    afl::fuzz!(|data: &[u8]| {
        dinodiff_fuzz::targets::eqx(data);
    });
}
