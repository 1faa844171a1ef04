//! What a Meta-format DINOv3 checkpoint must hold, independent of any tensor library: the
//! architecture read off its key names and shapes, the exact key set that architecture needs, and
//! the strict check between the two.
//!
//! Contract:
//! - [`Architecture::infer`] reads the architecture from shapes alone: D from `cls_token`, the
//!   head dim from `rope_embed.periods` (hd / 4 entries), depth from the `blocks.<i>.` prefixes, the
//!   feed-forward kind and width from `mlp.fc1` (Mlp) or `mlp.w1` (SwiGLU), qkv bias and its K
//!   mask from `attn.qkv.{bias,bias_mask}` (each from the first block that has it, so a key
//!   missing from one block is reported missing), untied norms from
//!   `cls_norm.*` / `local_cls_norm.*`;
//! - [`Architecture::expected_keys`] is the complete key set of Meta's `DinoVisionTransformer`
//!   with that architecture (what `load_state_dict(strict=True)` demands);
//! - [`check`] lists every missing, unexpected and mis-shaped key in one error;
//! - `local_cls_norm` (training-only, present in the ViT-7B and satellite ViT-L files) is accepted
//!   by [`check`] whether or not the architecture has it, and does not change the hub variant
//!   ([`Variant::of`](super::Variant::of)).

use super::architecture::{Architecture, Ffn};
#[cfg(test)]
use super::variant::{VARIANTS, Variant};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Key name -> shape.
pub type Shapes = BTreeMap<String, Vec<usize>>;

impl Architecture {
    /// Reads the architecture off the checkpoint's shapes; the error says what is missing.
    pub fn infer(shapes: &Shapes) -> Result<Architecture, String> {
        let get = |key: &str, rank: usize| -> Result<&[usize], String> {
            match shapes.get(key) {
                None => Err(format!("it has no `{key}`")),
                Some(s) if s.len() != rank => Err(format!(
                    "`{key}` has shape {s:?}, expected {rank} dimensions"
                )),
                Some(s) => Ok(s.as_slice()),
            }
        };
        let embed_dim = get("cls_token", 3)?[2];
        if embed_dim == 0 {
            return Err("`cls_token` has width 0".into());
        }
        let proj = get("patch_embed.proj.weight", 4)?;
        let (in_chans, patch_size) = (proj[1], proj[2]);
        let quarter_head_dim = get("rope_embed.periods", 1)?[0];
        let head_dim = 4 * quarter_head_dim;
        if head_dim == 0 || embed_dim % head_dim != 0 {
            return Err(format!(
                "`rope_embed.periods` has {quarter_head_dim} entries (head dim {head_dim}), \
                 which does not divide D = {embed_dim} into heads"
            ));
        }
        let depth = shapes
            .keys()
            .filter_map(|k| {
                k.strip_prefix("blocks.")?
                    .split('.')
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .max()
            .map_or(0, |i| i + 1);
        if depth == 0 {
            return Err("it has no `blocks.<i>.*` keys".into());
        }
        // Per-block facts come from the first block that shows them, so that a key missing from
        // block 0 is reported as missing rather than changing the architecture.
        let in_any_block = |suffix: &str| {
            (0..depth).find_map(|b| {
                shapes
                    .get(&format!("blocks.{b}.{suffix}"))
                    .filter(|s| s.len() == 2)
            })
        };
        let (ffn, ffn_hidden) = if let Some(s) = in_any_block("mlp.fc1.weight") {
            (Ffn::Mlp, s[0])
        } else if let Some(s) = in_any_block("mlp.w1.weight") {
            (Ffn::SwiGlu, s[0])
        } else {
            return Err(
                "it has neither `blocks.<i>.mlp.fc1.weight` (Mlp) nor `blocks.<i>.mlp.w1.weight` (SwiGLU)"
                    .into(),
            );
        };
        let in_any_block_1d =
            |suffix: &str| (0..depth).any(|b| shapes.contains_key(&format!("blocks.{b}.{suffix}")));
        let storage_tokens = match shapes.get("storage_tokens") {
            Some(s) if s.len() == 3 => s[1],
            _ => 0,
        };
        Ok(Architecture {
            embed_dim,
            depth,
            heads: embed_dim / head_dim,
            ffn,
            ffn_hidden,
            qkv_bias: in_any_block_1d("attn.qkv.bias"),
            qkv_bias_mask: in_any_block_1d("attn.qkv.bias_mask"),
            storage_tokens,
            patch_size,
            in_chans,
            cls_norm: shapes.contains_key("cls_norm.weight"),
            local_cls_norm: shapes.contains_key("local_cls_norm.weight"),
        })
    }

    /// Every key of Meta's model with this architecture, with its shape.
    pub fn expected_keys(&self) -> Shapes {
        let d = self.embed_dim;
        let f = self.ffn_hidden;
        let mut keys = Shapes::new();
        let mut put = |k: String, s: &[usize]| {
            keys.insert(k, s.to_vec());
        };
        put("cls_token".into(), &[1, 1, d]);
        if self.storage_tokens > 0 {
            put("storage_tokens".into(), &[1, self.storage_tokens, d]);
        }
        put("mask_token".into(), &[1, d]);
        let p = self.patch_size;
        put("patch_embed.proj.weight".into(), &[d, self.in_chans, p, p]);
        put("patch_embed.proj.bias".into(), &[d]);
        put("rope_embed.periods".into(), &[self.head_dim() / 4]);
        let norm = |put: &mut dyn FnMut(String, &[usize]), prefix: &str| {
            put(format!("{prefix}.weight"), &[d]);
            put(format!("{prefix}.bias"), &[d]);
        };
        let linear = |put: &mut dyn FnMut(String, &[usize]), prefix: &str, o, i, bias| {
            put(format!("{prefix}.weight"), &[o, i]);
            if bias {
                put(format!("{prefix}.bias"), &[o]);
            }
        };
        for b in 0..self.depth {
            norm(&mut put, &format!("blocks.{b}.norm1"));
            linear(
                &mut put,
                &format!("blocks.{b}.attn.qkv"),
                3 * d,
                d,
                self.qkv_bias,
            );
            if self.qkv_bias && self.qkv_bias_mask {
                put(format!("blocks.{b}.attn.qkv.bias_mask"), &[3 * d]);
            }
            linear(&mut put, &format!("blocks.{b}.attn.proj"), d, d, true);
            put(format!("blocks.{b}.ls1.gamma"), &[d]);
            norm(&mut put, &format!("blocks.{b}.norm2"));
            match self.ffn {
                Ffn::Mlp => {
                    linear(&mut put, &format!("blocks.{b}.mlp.fc1"), f, d, true);
                    linear(&mut put, &format!("blocks.{b}.mlp.fc2"), d, f, true);
                }
                Ffn::SwiGlu => {
                    linear(&mut put, &format!("blocks.{b}.mlp.w1"), f, d, true);
                    linear(&mut put, &format!("blocks.{b}.mlp.w2"), f, d, true);
                    linear(&mut put, &format!("blocks.{b}.mlp.w3"), d, f, true);
                }
            }
            put(format!("blocks.{b}.ls2.gamma"), &[d]);
        }
        norm(&mut put, "norm");
        if self.cls_norm {
            norm(&mut put, "cls_norm");
        }
        if self.local_cls_norm {
            norm(&mut put, "local_cls_norm");
        }
        keys
    }
}

/// Keys that keep a checkpoint from loading strictly.
#[derive(Debug, Default, PartialEq)]
pub struct KeyProblems {
    pub missing: Vec<String>,
    pub unexpected: Vec<String>,
    /// (key, found, expected)
    pub misshaped: Vec<(String, Vec<usize>, Vec<usize>)>,
}

impl KeyProblems {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.misshaped.is_empty()
    }
}

impl fmt::Display for KeyProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 8;
        fn list(items: &[String]) -> String {
            let mut s = items
                .iter()
                .take(SHOWN)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            if items.len() > SHOWN {
                s.push_str(&format!(", ... and {} more", items.len() - SHOWN));
            }
            s
        }
        let plural = |n: usize, what: &str| {
            if n == 1 {
                format!("1 {what}")
            } else {
                format!("{n} {what}s")
            }
        };
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            parts.push(format!(
                "{} ({})",
                plural(self.missing.len(), "missing key"),
                list(&self.missing)
            ));
        }
        if !self.unexpected.is_empty() {
            parts.push(format!(
                "{} ({})",
                plural(self.unexpected.len(), "unexpected key"),
                list(&self.unexpected)
            ));
        }
        if !self.misshaped.is_empty() {
            let shown: Vec<String> = self
                .misshaped
                .iter()
                .map(|(k, found, want)| format!("{k} is {found:?}, expected {want:?}"))
                .collect();
            parts.push(format!(
                "{} ({})",
                plural(self.misshaped.len(), "mis-shaped key"),
                list(&shown)
            ));
        }
        f.write_str(&parts.join("; "))
    }
}

/// Compares a checkpoint's keys with what `arch` needs. `local_cls_norm` is accepted whether or
/// not `arch` has it: Meta's eval forward never uses it.
pub fn check(shapes: &Shapes, arch: &Architecture) -> KeyProblems {
    let expected = Architecture {
        local_cls_norm: shapes.contains_key("local_cls_norm.weight"),
        ..*arch
    }
    .expected_keys();
    let found: BTreeSet<&String> = shapes.keys().collect();
    let mut problems = KeyProblems::default();
    for (k, want) in &expected {
        match shapes.get(k) {
            None => problems.missing.push(k.clone()),
            Some(s) if s != want => problems
                .misshaped
                .push((k.clone(), s.clone(), want.clone())),
            Some(_) => {}
        }
    }
    for k in found {
        if !expected.contains_key(k) {
            problems.unexpected.push(k.clone());
        }
    }
    // Block keys sort as text (blocks.10 before blocks.2); list them in model order instead.
    let model_order = |k: &String| {
        let block = k
            .strip_prefix("blocks.")
            .and_then(|r| r.split('.').next()?.parse::<usize>().ok());
        (block.map_or(0, |b| b + 1), k.clone())
    };
    problems.missing.sort_by_key(model_order);
    problems.unexpected.sort_by_key(model_order);
    problems.misshaped.sort_by_key(|(k, _, _)| model_order(k));
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(name: &str) -> Architecture {
        Variant::lookup(name).unwrap().arch
    }

    #[test]
    fn every_hub_variant_is_inferred_back_from_its_own_keys() {
        for v in VARIANTS {
            let arch = v.arch;
            let keys = arch.expected_keys();
            let inferred = Architecture::infer(&keys).unwrap();
            assert_eq!(inferred, arch, "{}", v.name);
            assert_eq!(Variant::of(&inferred).unwrap().name, v.name);
            assert!(check(&keys, &arch).is_empty());
        }
    }

    #[test]
    fn vits16_has_meta_key_count() {
        // 6 stem keys + 15 per block (incl. bias_mask) + final norm: 6 + 12 * 15 + 2 = 188.
        let keys = hub("vits16").expected_keys();
        assert_eq!(keys.len(), 188);
        assert_eq!(keys["blocks.11.mlp.fc1.weight"], vec![1536, 384]);
        assert_eq!(keys["rope_embed.periods"], vec![16]);
        // ViT-7B: no qkv bias and no mask, SwiGLU hidden 8192.
        let keys = hub("vit7b16").expected_keys();
        assert!(!keys.contains_key("blocks.0.attn.qkv.bias"));
        assert!(!keys.contains_key("blocks.0.attn.qkv.bias_mask"));
        assert_eq!(keys["blocks.39.mlp.w1.weight"], vec![8192, 4096]);
        // Meta's SwiGLUFFN keeps w1, w2, w3 apart (no fused w12): w3(silu(w1 x) * w2 x).
        assert_eq!(keys["blocks.39.mlp.w2.weight"], vec![8192, 4096]);
        assert_eq!(keys["blocks.39.mlp.w3.weight"], vec![4096, 8192]);
        assert!(!keys.keys().any(|k| k.contains("w12")));
        // 6.7 B parameters (DINOv3 ViT-7B; 6,716 M with local_cls_norm aside).
        let params: usize = keys
            .iter()
            .filter(|(k, _)| !k.ends_with("bias_mask"))
            .map(|(_, shape)| shape.iter().product::<usize>())
            .sum();
        assert_eq!(params / 1_000_000, 6716);
    }

    #[test]
    fn local_cls_norm_keeps_the_variant_and_passes_the_check() {
        let arch = Architecture {
            local_cls_norm: true,
            ..hub("vitl16")
        };
        let keys = arch.expected_keys();
        let inferred = Architecture::infer(&keys).unwrap();
        assert_eq!(Variant::of(&inferred).unwrap().name, "vitl16");
        assert!(check(&keys, &hub("vitl16")).is_empty());
    }

    #[test]
    fn a_tiny_config_is_custom() {
        let arch = Architecture {
            embed_dim: 64,
            depth: 2,
            heads: 2,
            ffn_hidden: 256,
            ..hub("vits16")
        };
        let inferred = Architecture::infer(&arch.expected_keys()).unwrap();
        assert_eq!(inferred, arch);
        assert_eq!(Variant::of(&inferred), None);
        assert_eq!(
            inferred.to_string(),
            "D=64, 2 blocks, 2 heads of 32, Mlp hidden 256, qkv bias with K mask, 4 storage tokens, patch 16"
        );
    }

    #[test]
    fn problems_are_listed_in_model_order_in_one_message() {
        let arch = hub("vits16");
        let mut keys = arch.expected_keys();
        keys.remove("blocks.10.ls1.gamma");
        keys.remove("blocks.2.norm2.weight");
        keys.insert("head.weight".into(), vec![1000, 384]);
        keys.insert("norm.bias".into(), vec![383]);
        let p = check(&keys, &arch);
        assert_eq!(
            p.to_string(),
            "2 missing keys (blocks.2.norm2.weight, blocks.10.ls1.gamma); \
             1 unexpected key (head.weight); 1 mis-shaped key (norm.bias is [383], expected [384])"
        );
    }

    #[test]
    fn a_key_missing_from_block_0_does_not_change_the_architecture() {
        let arch = hub("vits16");
        let mut keys = arch.expected_keys();
        keys.remove("blocks.0.attn.qkv.bias_mask");
        keys.remove("blocks.0.mlp.fc1.weight");
        assert_eq!(Architecture::infer(&keys).unwrap(), arch);
        assert_eq!(
            check(&keys, &arch).missing,
            ["blocks.0.attn.qkv.bias_mask", "blocks.0.mlp.fc1.weight"]
        );
    }

    #[test]
    fn long_lists_are_cut() {
        let arch = hub("vits16");
        let keys: Shapes = arch
            .expected_keys()
            .into_iter()
            .filter(|(k, _)| !k.starts_with("blocks."))
            .collect();
        let p = check(&keys, &arch);
        assert_eq!(p.missing.len(), 12 * 15);
        assert!(p.to_string().ends_with(", ... and 172 more)"), "{p}");
    }

    #[test]
    fn inference_says_what_is_missing() {
        let mut keys = hub("vits16").expected_keys();
        keys.remove("rope_embed.periods");
        assert_eq!(
            Architecture::infer(&keys).unwrap_err(),
            "it has no `rope_embed.periods`"
        );
        let mut keys = hub("vits16").expected_keys();
        keys.insert("rope_embed.periods".into(), vec![7]);
        assert_eq!(
            Architecture::infer(&keys).unwrap_err(),
            "`rope_embed.periods` has 7 entries (head dim 28), which does not divide D = 384 into heads"
        );
        assert_eq!(
            Architecture::infer(&Shapes::new()).unwrap_err(),
            "it has no `cls_token`"
        );
        let mut keys = hub("vits16").expected_keys();
        keys.insert("cls_token".into(), vec![1, 1, 0]);
        assert_eq!(
            Architecture::infer(&keys).unwrap_err(),
            "`cls_token` has width 0"
        );
    }
}
