//! ONNX models as dinodiff needs them, independent of any model family: the protobuf subset it
//! reads and rewrites ([`proto`]) and the inlining of local functions ([`inline`]) that makes
//! every value of a nested export a graph value. Recognizing DINOv3 stages among those values is
//! the capture's business ([`crate::capture::onnx::rules`]).

pub mod inline;
pub mod proto;
