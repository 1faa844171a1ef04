//! AFL++ harness of the `onnx` target ([`dinodiff_fuzz::targets::onnx`]).

fn main() {
    afl::fuzz!(|data: &[u8]| {
        dinodiff_fuzz::targets::onnx(data);
    });
}
