//! TRANSITIONAL: the string form of the stage vocabulary, kept only until `report/` and the ONNX
//! stage rules use [`super::stage::Stage`]; it goes in the same change set.
//!
//! Contract: a canonical name is one of [`STEM`], `blocks.<i>.<s>` with `i` a decimal block index
//! (0-based, Meta's numbering, no leading zeros) and `s` one of [`BLOCK`], or one of [`HEAD`].
//! [`Stage::parse`] accepts exactly these names; [`Stage::name`] gives them back. The arrays are in
//! execution order, and [`Stage::order_key`] sorts stages into it.

/// Stages before the first block, in execution order.
pub const STEM: [&str; 5] = ["input", "patch_embed", "tokens", "rope.sin", "rope.cos"];
/// Stages inside each block, in execution order.
pub const BLOCK: [&str; 14] = [
    "norm1",
    "attn.qkv",
    "attn.q",
    "attn.k",
    "attn.v",
    "attn.sdpa",
    "attn",
    "ls1",
    "residual1",
    "norm2",
    "mlp.hidden",
    "mlp",
    "ls2",
    "output",
];
/// Stages after the last block, in execution order.
pub const HEAD: [&str; 5] = ["norm", "cls", "storage", "patches", "pooled"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Group {
    Stem,
    Block(usize),
    Head,
}

/// A parsed canonical stage name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stage {
    pub group: Group,
    /// Index into [`STEM`], [`BLOCK`] or [`HEAD`] according to `group`.
    pub index: usize,
}

impl Stage {
    pub fn parse(name: &str) -> Option<Stage> {
        if let Some(i) = STEM.iter().position(|s| *s == name) {
            return Some(Stage {
                group: Group::Stem,
                index: i,
            });
        }
        if let Some(i) = HEAD.iter().position(|s| *s == name) {
            return Some(Stage {
                group: Group::Head,
                index: i,
            });
        }
        let rest = name.strip_prefix("blocks.")?;
        let (block, stage) = rest.split_once('.')?;
        let canonical_number = !block.is_empty()
            && block.bytes().all(|b| b.is_ascii_digit())
            && (block == "0" || !block.starts_with('0'));
        if !canonical_number {
            return None;
        }
        let block: usize = block.parse().ok()?;
        let index = BLOCK.iter().position(|s| *s == stage)?;
        Some(Stage {
            group: Group::Block(block),
            index,
        })
    }

    /// The stage's column label: its name without the block prefix.
    pub fn column(&self) -> &'static str {
        match self.group {
            Group::Stem => STEM[self.index],
            Group::Block(_) => BLOCK[self.index],
            Group::Head => HEAD[self.index],
        }
    }

    pub fn name(&self) -> String {
        match self.group {
            Group::Block(i) => format!("blocks.{i}.{}", BLOCK[self.index]),
            _ => self.column().to_string(),
        }
    }

    /// Sorts stages into execution order.
    pub fn order_key(&self) -> (Group, usize) {
        (self.group, self.index)
    }
}

/// Every canonical name of a model with `depth` blocks, in execution order.
pub fn all_names(depth: usize) -> Vec<String> {
    let mut names: Vec<String> = STEM.iter().map(|s| s.to_string()).collect();
    for i in 0..depth {
        names.extend(BLOCK.iter().map(|s| format!("blocks.{i}.{s}")));
    }
    names.extend(HEAD.iter().map(|s| s.to_string()));
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_canonical_name_round_trips_in_order() {
        let names = all_names(3);
        let stages: Vec<Stage> = names.iter().map(|n| Stage::parse(n).unwrap()).collect();
        for (n, s) in names.iter().zip(&stages) {
            assert_eq!(&s.name(), n);
        }
        assert!(
            stages
                .windows(2)
                .all(|w| w[0].order_key() < w[1].order_key())
        );
    }

    #[test]
    fn rejects_near_misses() {
        for bad in [
            "blocks.01.norm1",
            "blocks..norm1",
            "blocks.1.norm3",
            "blocks.1",
            "block.1.norm1",
            "blocks.x.attn",
            "Norm",
        ] {
            assert_eq!(Stage::parse(bad), None, "{bad}");
        }
    }
}
