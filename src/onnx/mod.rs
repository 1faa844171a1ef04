//! ONNX models as dinodiff needs them: the protobuf subset it reads and rewrites ([`proto`]) and
//! the inlining of local functions ([`inline`]) that makes every value of a nested export a graph
//! value, and the recognition of canonical DINOv3 stages among those values: jax2onnx exports of
//! the Equinox model ([`stages`]) and torch.onnx exports of timm's port ([`torch_stages`]).

pub mod inline;
pub mod proto;
pub mod stages;
pub mod torch_stages;
