//! The canonical DINOv3 stage vocabulary (`docs/stages.md`): one typed name for every tensor a
//! capture backend recognizes, shared by every backend, by `diff`'s stage table and (through
//! `dinodiff stages --format json`) by the Python tools.
//!
//! Contract:
//! - a [`Stage`] is a stem stage, `blocks.<i>.<s>` ([`BlockStage`], `i` a decimal block index,
//!   0-based in Meta's numbering, no leading zeros) or a head stage; [`Stage`]'s `FromStr` accepts
//!   exactly the names its `Display` writes, nothing else;
//! - the derived `Ord` is execution order (stem, block 0 … block n-1, head);
//! - [`Stage::dims`] is the one definition of each stage's shape, as symbols ([`Dim`]);
//!   [`Stage::shape`] evaluates it for an [`Architecture`] and patch [`Grid`], at batch 1;
//! - [`Stage::row`] and [`Stage::column`] place a stage in the stage table; [`Stage::headline`]
//!   names the stages whose agreement is the headline verdict (CLS and pooled features).

use super::architecture::{Architecture, Grid};
use std::fmt;
use std::str::FromStr;

/// The name of the model input tensor, the one stage every dump has.
pub const INPUT_NAME: &str = StemStage::Input.name();

/// Declares a fieldless enum of stage names: `ALL` in execution order, `name()`, and the parse.
macro_rules! stage_names {
    ($(#[$doc:meta])* $ty:ident { $($(#[$vdoc:meta])* $variant:ident = $name:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $ty {
            $($(#[$vdoc])* $variant),+
        }

        impl $ty {
            /// Every value, in execution order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The canonical (short) name.
            pub const fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }

            fn from_name(name: &str) -> Option<$ty> {
                $ty::ALL.iter().copied().find(|s| s.name() == name)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

stage_names!(
    /// Stages before the first block.
    StemStage {
        Input = "input",
        PatchEmbed = "patch_embed",
        Tokens = "tokens",
        RopeSin = "rope.sin",
        RopeCos = "rope.cos",
    }
);

stage_names!(
    /// Stages inside each block.
    BlockStage {
        Norm1 = "norm1",
        AttnQkv = "attn.qkv",
        AttnQ = "attn.q",
        AttnK = "attn.k",
        AttnV = "attn.v",
        AttnSdpa = "attn.sdpa",
        Attn = "attn",
        Ls1 = "ls1",
        Residual1 = "residual1",
        Norm2 = "norm2",
        MlpHidden = "mlp.hidden",
        Mlp = "mlp",
        Ls2 = "ls2",
        Output = "output",
    }
);

stage_names!(
    /// Stages after the last block.
    HeadStage {
        Norm = "norm",
        Cls = "cls",
        Storage = "storage",
        Patches = "patches",
        Pooled = "pooled",
    }
);

/// A canonical stage. `Ord` is execution order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    Stem(StemStage),
    Block(usize, BlockStage),
    Head(HeadStage),
}

/// The stage table's rows: the stem, one per block, the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Row {
    Stem,
    Block(usize),
    Head,
}

/// The headline features: their agreement is what a port promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Headline {
    Cls,
    Pooled,
}

impl Headline {
    pub const ALL: [Headline; 2] = [Headline::Cls, Headline::Pooled];

    pub const fn stage(self) -> Stage {
        match self {
            Headline::Cls => Stage::Head(HeadStage::Cls),
            Headline::Pooled => Stage::Head(HeadStage::Pooled),
        }
    }
}

/// One symbolic dimension of a stage's shape (`docs/stages.md` names them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    /// Batch (1 in every capture).
    Batch,
    /// Image channels (3).
    Channels,
    /// Image height and width in pixels.
    Height,
    Width,
    /// Patches: h · w.
    Patches,
    /// Tokens: 1 + R + h · w.
    Tokens,
    /// Storage (register) tokens R.
    Storage,
    /// Embedding width D.
    Embed,
    /// 3 · D (the fused qkv projection).
    Qkv,
    /// Heads H.
    Heads,
    /// Head dimension hd = D / H.
    HeadDim,
    /// Feed-forward hidden width F.
    Hidden,
}

impl Dim {
    /// Every symbol, in the order `docs/stages.md` introduces them.
    pub const ALL: [Dim; 12] = [
        Dim::Batch,
        Dim::Channels,
        Dim::Height,
        Dim::Width,
        Dim::Patches,
        Dim::Tokens,
        Dim::Storage,
        Dim::Embed,
        Dim::Qkv,
        Dim::Heads,
        Dim::HeadDim,
        Dim::Hidden,
    ];

    /// The symbol `docs/stages.md` and `dinodiff stages` use.
    pub const fn symbol(self) -> &'static str {
        match self {
            Dim::Batch => "B",
            Dim::Channels => "C",
            Dim::Height => "H",
            Dim::Width => "W",
            Dim::Patches => "hw",
            Dim::Tokens => "N",
            Dim::Storage => "R",
            Dim::Embed => "D",
            Dim::Qkv => "3D",
            Dim::Heads => "heads",
            Dim::HeadDim => "hd",
            Dim::Hidden => "F",
        }
    }

    /// The size at batch 1.
    pub fn size(self, arch: &Architecture, grid: Grid) -> usize {
        match self {
            Dim::Batch => 1,
            Dim::Channels => arch.in_chans,
            Dim::Height => grid.h * arch.patch_size,
            Dim::Width => grid.w * arch.patch_size,
            Dim::Patches => grid.patches(),
            Dim::Tokens => 1 + arch.storage_tokens + grid.patches(),
            Dim::Storage => arch.storage_tokens,
            Dim::Embed => arch.embed_dim,
            Dim::Qkv => 3 * arch.embed_dim,
            Dim::Heads => arch.heads,
            Dim::HeadDim => arch.head_dim(),
            Dim::Hidden => arch.ffn_hidden,
        }
    }
}

impl Stage {
    /// The model input (the one stage every dump has).
    pub const INPUT: Stage = Stage::Stem(StemStage::Input);
    /// The final LayerNorm over all tokens, from which the head views are sliced.
    pub const NORM: Stage = Stage::Head(HeadStage::Norm);

    /// Every stage of a model with `depth` blocks, in execution order.
    pub fn all(depth: usize) -> Vec<Stage> {
        let stem = StemStage::ALL.iter().map(|&s| Stage::Stem(s));
        let blocks =
            (0..depth).flat_map(|i| BlockStage::ALL.iter().map(move |&s| Stage::Block(i, s)));
        let head = HeadStage::ALL.iter().map(|&s| Stage::Head(s));
        stem.chain(blocks).chain(head).collect()
    }

    /// The name without the block prefix: the stage table's column label.
    pub const fn column(self) -> &'static str {
        match self {
            Stage::Stem(s) => s.name(),
            Stage::Block(_, s) => s.name(),
            Stage::Head(s) => s.name(),
        }
    }

    pub const fn row(self) -> Row {
        match self {
            Stage::Stem(_) => Row::Stem,
            Stage::Block(i, _) => Row::Block(i),
            Stage::Head(_) => Row::Head,
        }
    }

    pub const fn headline(self) -> Option<Headline> {
        match self {
            Stage::Head(HeadStage::Cls) => Some(Headline::Cls),
            Stage::Head(HeadStage::Pooled) => Some(Headline::Pooled),
            _ => None,
        }
    }

    /// The shape as symbols, batch first where the stage has a batch dimension.
    pub const fn dims(self) -> &'static [Dim] {
        use Dim::*;
        match self {
            Stage::Stem(StemStage::Input) => &[Batch, Channels, Height, Width],
            Stage::Stem(StemStage::PatchEmbed) => &[Batch, Patches, Embed],
            Stage::Stem(StemStage::RopeSin | StemStage::RopeCos) => &[Patches, HeadDim],
            Stage::Stem(StemStage::Tokens) => &[Batch, Tokens, Embed],
            Stage::Block(_, s) => match s {
                BlockStage::AttnQkv => &[Batch, Tokens, Qkv],
                BlockStage::AttnQ | BlockStage::AttnK | BlockStage::AttnV => {
                    &[Batch, Heads, Tokens, HeadDim]
                }
                BlockStage::MlpHidden => &[Batch, Tokens, Hidden],
                BlockStage::Norm1
                | BlockStage::AttnSdpa
                | BlockStage::Attn
                | BlockStage::Ls1
                | BlockStage::Residual1
                | BlockStage::Norm2
                | BlockStage::Mlp
                | BlockStage::Ls2
                | BlockStage::Output => &[Batch, Tokens, Embed],
            },
            Stage::Head(s) => match s {
                HeadStage::Norm => &[Batch, Tokens, Embed],
                HeadStage::Cls | HeadStage::Pooled => &[Batch, Embed],
                HeadStage::Storage => &[Batch, Storage, Embed],
                HeadStage::Patches => &[Batch, Patches, Embed],
            },
        }
    }

    /// The shape at batch 1 for this architecture and patch grid.
    pub fn shape(self, arch: &Architecture, grid: Grid) -> Vec<usize> {
        self.dims().iter().map(|d| d.size(arch, grid)).collect()
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stage::Block(i, s) => write!(f, "blocks.{i}.{s}"),
            _ => f.write_str(self.column()),
        }
    }
}

/// The name is not a canonical stage (`docs/stages.md` lists them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a canonical stage name (see `dinodiff stages` or docs/stages.md)")]
pub struct NotAStage(pub String);

impl FromStr for Stage {
    type Err = NotAStage;

    fn from_str(name: &str) -> Result<Stage, NotAStage> {
        parse(name).ok_or_else(|| NotAStage(name.to_string()))
    }
}

fn parse(name: &str) -> Option<Stage> {
    if let Some(s) = StemStage::from_name(name) {
        return Some(Stage::Stem(s));
    }
    if let Some(s) = HeadStage::from_name(name) {
        return Some(Stage::Head(s));
    }
    let (block, stage) = name.strip_prefix("blocks.")?.split_once('.')?;
    let canonical_number = !block.is_empty()
        && block.bytes().all(|b| b.is_ascii_digit())
        && (block == "0" || !block.starts_with('0'));
    if !canonical_number {
        return None;
    }
    Some(Stage::Block(
        block.parse().ok()?,
        BlockStage::from_name(stage)?,
    ))
}

impl Stage {
    /// `name` parsed, or `None` when it is not canonical (a framework's native name).
    pub fn parse(name: &str) -> Option<Stage> {
        parse(name)
    }
}

impl serde::Serialize for Stage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Variant;

    #[test]
    fn every_stage_round_trips_and_sorts_in_execution_order() {
        let stages = Stage::all(12);
        assert_eq!(stages.len(), 5 + 12 * 14 + 5);
        for s in &stages {
            assert_eq!(s.to_string().parse::<Stage>(), Ok(*s));
        }
        assert!(stages.windows(2).all(|w| w[0] < w[1]));
        // Numeric block order, not text order.
        assert!(Stage::Block(2, BlockStage::Output) < Stage::Block(10, BlockStage::Norm1));
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
            "blocks.1.cls",
            "Norm",
            "",
        ] {
            assert_eq!(
                bad.parse::<Stage>(),
                Err(NotAStage(bad.to_string())),
                "{bad}"
            );
        }
    }

    #[test]
    fn shapes_of_vits16_at_224_and_a_non_square_grid() {
        let arch = Variant::lookup("vits16").unwrap().arch;
        let grid = Grid::square(224, 16);
        let shape = |name: &str| name.parse::<Stage>().unwrap().shape(&arch, grid);
        assert_eq!(shape("input"), [1, 3, 224, 224]);
        assert_eq!(shape("rope.sin"), [196, 64]);
        assert_eq!(shape("blocks.3.attn.qkv"), [1, 201, 1152]);
        assert_eq!(shape("blocks.3.attn.k"), [1, 6, 201, 64]);
        assert_eq!(shape("blocks.3.mlp.hidden"), [1, 201, 1536]);
        assert_eq!(shape("storage"), [1, 4, 384]);
        assert_eq!(shape("pooled"), [1, 384]);
        let wide = Grid { h: 2, w: 3 };
        assert_eq!(Stage::INPUT.shape(&arch, wide), [1, 3, 32, 48]);
        assert_eq!(Stage::NORM.shape(&arch, wide), [1, 11, 384]);
    }

    #[test]
    fn table_placement_and_headlines() {
        let s: Stage = "blocks.7.ls2".parse().unwrap();
        assert_eq!((s.row(), s.column()), (Row::Block(7), "ls2"));
        assert_eq!(Stage::INPUT.row(), Row::Stem);
        let headlines: Vec<Stage> = Stage::all(1)
            .into_iter()
            .filter(|s| s.headline().is_some())
            .collect();
        assert_eq!(headlines, Headline::ALL.map(Headline::stage));
    }
}
