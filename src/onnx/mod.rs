//! ONNX models as dinodiff needs them: the protobuf subset it reads and rewrites ([`proto`]) and
//! the inlining of local functions ([`inline`]) that makes every value of a nested export a graph
//! value.

pub mod inline;
pub mod proto;
