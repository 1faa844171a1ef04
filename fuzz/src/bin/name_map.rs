//! AFL++ harness of the `name_map` target ([`dinodiff_fuzz::targets::name_map`]).

fn main() {
    afl::fuzz!(|data: &[u8]| {
        dinodiff_fuzz::targets::name_map(data);
    });
}
