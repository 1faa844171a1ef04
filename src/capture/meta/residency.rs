//! When `capture meta`'s weights are materialized (converted to the compute device and dtype),
//! and how much memory that takes.
//!
//! Contract:
//! - [`materialize`] is the one conversion of a checkpoint tensor into what the forward computes
//!   with (`rope_embed.periods` and `bias_mask` stay f32); both [`Residency`]s run it on the same
//!   tensors, so their forwards see the same values and write the same dumps, bit for bit;
//! - [`Residency::Streamed`] (the default) materializes each block's weights just before the
//!   block runs and drops them after, so memory holds one block's weights at a time (plus the
//!   stem's and the head's, which stay); [`Residency::InMemory`] materializes everything first;
//! - [`MemoryPlan`] estimates, before anything runs, what the chosen residency holds at once
//!   (weights in the compute dtype + activations) and refuses a `--max-memory` budget that even
//!   one block does not fit, saying what one block needs;
//! - [`MapHints`] tells the kernel which bytes of the checkpoint's memory map come next
//!   (readahead) and which are done (dropped from this process's resident set; the page cache
//!   keeps them, so a later read is served from memory). It only ever advises on addresses inside
//!   the map, and advice never changes what a read-only file mapping holds.

use crate::model::Architecture;
use anyhow::{Context, Result, bail};
use tch::{Device, Kind, Tensor};

/// Whether the weights are materialized one block at a time or all before the forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Residency {
    Streamed,
    InMemory,
}

impl Residency {
    pub fn name(self) -> &'static str {
        match self {
            Residency::Streamed => "streamed per block",
            Residency::InMemory => "in memory",
        }
    }
}

/// The dtype a checkpoint tensor is computed in: f32 for the RoPE periods and the K bias mask
/// (as Meta's `pos_embed_rope_dtype = "fp32"` and `bias_mask.to(bias.dtype)` later), else `kind`.
pub fn compute_kind(name: &str, kind: Kind) -> Kind {
    if name == "rope_embed.periods" || name.ends_with(".bias_mask") {
        Kind::Float
    } else {
        kind
    }
}

/// A checkpoint tensor on `device` in its compute dtype (a no-op alias when it already is).
pub fn materialize(name: &str, t: &Tensor, kind: Kind, device: Device) -> Result<Tensor> {
    let want = compute_kind(name, kind);
    t.f_to_device(device)
        .and_then(|t| t.f_to_kind(want))
        .with_context(|| format!("moving checkpoint tensor {name} to {device:?} {want:?}"))
}

/// The block a checkpoint key belongs to (`blocks.12.attn.qkv.weight` → 12), if any.
pub fn block_of(name: &str) -> Option<usize> {
    name.strip_prefix("blocks.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// Bytes of `t` once materialized in `kind`.
fn materialized_bytes(name: &str, t: &Tensor, kind: Kind) -> u64 {
    (t.numel() * compute_kind(name, kind).elt_size_in_bytes()) as u64
}

/// What one capture holds at once, estimated before it runs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemoryPlan {
    pub residency: &'static str,
    /// `--max-memory`, bytes.
    pub budget: u64,
    /// The stem's and the head's weights (held throughout), bytes in the compute dtype.
    pub resident_weights: u64,
    /// The largest block's weights in the compute dtype, bytes.
    pub block_weights: u64,
    /// Every block's weights together, bytes.
    pub all_block_weights: u64,
    /// Activations: the stages queued for the writer and the forward's working tensors.
    pub activations: u64,
    /// What the residency holds at once: the sum of the above that applies.
    pub peak: u64,
}

impl MemoryPlan {
    /// Plans `residency` for the checkpoint's `tensors` computed in `kind` on an input of
    /// `tokens` tokens, with `queued` stages waiting for the writer at most; refuses a budget
    /// that one block (streamed) or the whole model (in memory) does not fit.
    pub fn new(
        arch: &Architecture,
        tensors: &[(String, Tensor)],
        kind: Kind,
        tokens: usize,
        queued: usize,
        residency: Residency,
        budget: u64,
    ) -> Result<MemoryPlan> {
        let mut blocks = vec![0u64; arch.depth];
        let mut resident_weights = 0;
        for (name, t) in tensors {
            let bytes = materialized_bytes(name, t, kind);
            match block_of(name).and_then(|i| blocks.get_mut(i)) {
                Some(b) => *b += bytes,
                None => resident_weights += bytes,
            }
        }
        let activations = activation_bytes(arch, kind, tokens, queued);
        let block_weights = blocks.iter().copied().max().unwrap_or(0);
        let all_block_weights: u64 = blocks.iter().sum();
        let held = match residency {
            Residency::Streamed => block_weights,
            Residency::InMemory => all_block_weights,
        };
        let plan = MemoryPlan {
            residency: residency.name(),
            budget,
            resident_weights,
            block_weights,
            all_block_weights,
            activations,
            peak: resident_weights + held + activations,
        };
        plan.check(residency, kind)?;
        Ok(plan)
    }

    fn check(&self, residency: Residency, kind: Kind) -> Result<()> {
        if self.peak <= self.budget {
            return Ok(());
        }
        let size = crate::report::words::size_iec;
        let (what, hint) = match residency {
            Residency::Streamed => (
                format!(
                    "one block's weights take {} in the compute dtype",
                    size(self.block_weights)
                ),
                if kind == Kind::Float {
                    "raise --max-memory, or compute in bf16 (--dtype bf16), which halves them"
                } else {
                    "raise --max-memory"
                },
            ),
            Residency::InMemory => (
                format!(
                    "every block's weights take {} together in the compute dtype \
                     (--weights-in-memory)",
                    size(self.all_block_weights)
                ),
                "stream them one block at a time (drop --weights-in-memory) or raise --max-memory",
            ),
        };
        bail!(
            "the weights do not fit the memory budget of {} (--max-memory): {what}, the stem and \
             head {}, and the activations about {}, {} in all; {hint}",
            size(self.budget),
            size(self.resident_weights),
            size(self.activations),
            size(self.peak),
        )
    }
}

/// The activations a forward holds at once, generously: `queued` stages waiting for the writer
/// and a few working tensors, each as large as the largest stage ([N, max(3D, F)]), plus one
/// attention matrix per head in f32 (what a non-fused SDPA materializes).
fn activation_bytes(arch: &Architecture, kind: Kind, tokens: usize, queued: usize) -> u64 {
    const WORKING: usize = 8;
    let widest = (3 * arch.embed_dim).max(arch.ffn_hidden);
    let stage = (tokens * widest * kind.elt_size_in_bytes().max(4)) as u64;
    let scores = (arch.heads * tokens * tokens * 4) as u64;
    stage * (queued + WORKING) as u64 + scores
}

/// The checkpoint's memory map, for advice on the pages of tensors that point into it.
#[derive(Debug, Clone, Copy)]
pub struct MapHints {
    start: usize,
    len: usize,
}

impl MapHints {
    /// The map `bytes` (the whole mapped file).
    pub fn new(bytes: &[u8]) -> MapHints {
        MapHints {
            start: bytes.as_ptr() as usize,
            len: bytes.len(),
        }
    }

    /// Asks the kernel to read these tensors' mapped pages ahead (asynchronously).
    pub fn will_need<'a>(&self, tensors: impl IntoIterator<Item = &'a Tensor>) {
        self.advise(tensors, libc::MADV_WILLNEED);
    }

    /// Drops these tensors' mapped pages from this process's resident set: the block that read
    /// them has run. The page cache keeps them; a later read faults them back in.
    pub fn done<'a>(&self, tensors: impl IntoIterator<Item = &'a Tensor>) {
        self.advise(tensors, libc::MADV_DONTNEED);
    }

    fn advise<'a>(&self, tensors: impl IntoIterator<Item = &'a Tensor>, advice: libc::c_int) {
        // SAFETY: sysconf has no preconditions.
        let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            p if p > 0 => p as usize,
            _ => return,
        };
        let end_of_map = self.start + self.len;
        for t in tensors {
            if t.device() != Device::Cpu {
                continue;
            }
            let ptr = t.data_ptr() as usize;
            let len = t.numel() * t.kind().elt_size_in_bytes();
            // Only tensors that lie inside the map (copied tensors live elsewhere: never advise
            // DONTNEED on anonymous memory, which would zero it).
            if len == 0 || ptr < self.start || ptr + len > end_of_map {
                continue;
            }
            let from = (ptr / page * page).max(self.start / page * page);
            let to = (ptr + len).next_multiple_of(page);
            // SAFETY: [from, to) lies within the pages of the live, read-only checkpoint map
            // (the model owns it until after its last use of these hints); MADV_WILLNEED and
            // MADV_DONTNEED on a file mapping never write nor change its contents (a dropped
            // page is read again from the file). A failure is only lost advice.
            unsafe {
                libc::madvise(from as *mut libc::c_void, to - from, advice);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_belong_to_their_block() {
        assert_eq!(block_of("blocks.12.attn.qkv.weight"), Some(12));
        assert_eq!(block_of("blocks.0.ls1.gamma"), Some(0));
        assert_eq!(block_of("norm.weight"), None);
        assert_eq!(block_of("blocksx.1.a"), None);
        assert_eq!(block_of("rope_embed.periods"), None);
    }

    #[test]
    fn periods_and_masks_stay_f32() {
        assert_eq!(
            compute_kind("rope_embed.periods", Kind::BFloat16),
            Kind::Float
        );
        assert_eq!(
            compute_kind("blocks.3.attn.qkv.bias_mask", Kind::Half),
            Kind::Float
        );
        assert_eq!(
            compute_kind("blocks.3.attn.qkv.bias", Kind::Half),
            Kind::Half
        );
    }
}
