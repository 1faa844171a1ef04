//! AFL++ harness of the `npz` target ([`dinodiff_fuzz::targets::npz`]).

fn main() {
    afl::fuzz!(|data: &[u8]| {
        dinodiff_fuzz::targets::npz(data);
    });
}
