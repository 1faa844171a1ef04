//! The skeleton a model file deserialises into: the constructor config of jax2onnx's Equinox
//! DINOv3, `VisionTransformer(img_size, patch_size, embed_dim, depth, num_heads,
//! num_storage_tokens)`, for a `.eqx` with or without dinodiff's sidecar (`M.eqx.json`).
//!
//! Contract ([`resolve`]):
//! - the config comes from the sidecar (tools/meta_to_eqx.py writes one), `--variant` (a hub
//!   variant by any of its names, [`Variant::lookup`]; its feed-forward must be the GELU Mlp, the
//!   only one the example model has), or `--config img_size=…,…` (keys as the constructor's; a
//!   key left out is read off the file). Given both a sidecar and a flag, they must agree;
//! - without any, it is inferred: every hub variant with an Mlp is tried against the file's leaves
//!   ([`super::leaves`]), at the image size the file records (the patch count is a leaf); exactly
//!   one must fit. None fitting is refused with what the file holds (as a `--config` to pass if
//!   it is the intended model), several with the candidates;
//! - whatever its source, the config's leaf layout ([`layout`]: the records
//!   `eqx.tree_serialise_leaves` writes for that model with equinox 0.13 and jax2onnx 0.17) must
//!   equal the file's, record for record, or the file is refused naming the first record that
//!   differs.

use super::leaves::{Leaf, read_leaves};
use crate::model::{Ffn, Variant, variant::VARIANTS};
use anyhow::{Context, Result, bail, ensure};
use std::path::{Path, PathBuf};

/// The constructor config of jax2onnx's `VisionTransformer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EqxConfig {
    pub img_size: usize,
    pub patch_size: usize,
    pub embed_dim: usize,
    pub depth: usize,
    pub num_heads: usize,
    pub num_storage_tokens: usize,
}

/// The constructor's argument names, in [`EqxConfig::text`] order.
pub const CONFIG_KEYS: [&str; 6] = [
    "img_size",
    "patch_size",
    "embed_dim",
    "depth",
    "num_heads",
    "num_storage_tokens",
];

/// Where a resolved config came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    Sidecar(PathBuf),
    Variant(&'static str),
    Given,
    Inferred(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub config: EqxConfig,
    pub from: ConfigSource,
    /// The model has a sidecar (the recorder reads the config from it).
    pub sidecar: bool,
}

/// What one record of the layout must be.
#[derive(Debug, Clone, PartialEq)]
pub enum Expected {
    F32(Vec<usize>),
    Int(i64),
    FloatScalar,
    BoolScalar,
}

impl EqxConfig {
    fn values(&self) -> [usize; 6] {
        [
            self.img_size,
            self.patch_size,
            self.embed_dim,
            self.depth,
            self.num_heads,
            self.num_storage_tokens,
        ]
    }

    /// `img_size=224,patch_size=16,…`: what `--config` and the recorder read.
    pub fn text(&self) -> String {
        CONFIG_KEYS
            .iter()
            .zip(self.values())
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Refuses what the constructor cannot build.
    fn check(&self) -> Result<()> {
        let text = self.text();
        ensure!(
            self.values()[..5].iter().all(|&v| v > 0),
            "config {text}: every value but num_storage_tokens must be positive"
        );
        ensure!(
            self.img_size.is_multiple_of(self.patch_size),
            "config {text}: img_size is not a multiple of patch_size"
        );
        ensure!(
            self.embed_dim.is_multiple_of(4 * self.num_heads),
            "config {text}: embed_dim is not a multiple of 4 × num_heads (DinoRoPE needs it)"
        );
        Ok(())
    }

    /// The config of a hub variant at `img_size`, or why the example model cannot be it.
    fn of_variant(v: &Variant, img_size: usize) -> Result<EqxConfig> {
        ensure!(
            v.arch.ffn == Ffn::Mlp,
            "{} has a SwiGLU feed-forward; jax2onnx's Equinox DINOv3 has only the GELU Mlp, so \
             no .eqx of that model holds it",
            v.name
        );
        Ok(EqxConfig {
            img_size,
            patch_size: v.arch.patch_size,
            embed_dim: v.arch.embed_dim,
            depth: v.arch.depth,
            num_heads: v.arch.heads,
            num_storage_tokens: v.arch.storage_tokens,
        })
    }
}

/// The records `eqx.tree_serialise_leaves` writes for the model of `c`, named by pytree path.
pub fn layout(c: &EqxConfig) -> Vec<(String, Expected)> {
    use Expected::{BoolScalar, F32, FloatScalar, Int};
    let (d, hidden) = (c.embed_dim, 4 * c.embed_dim);
    let grid = c.img_size / c.patch_size.max(1);
    let mut out: Vec<(String, Expected)> = vec![
        (
            "patch_embed.proj.weight".into(),
            F32(vec![d, 3, c.patch_size, c.patch_size]),
        ),
        ("patch_embed.proj.bias".into(), F32(vec![d, 1, 1])),
        ("patch_embed.num_patches".into(), Int((grid * grid) as i64)),
        ("cls_token".into(), F32(vec![1, 1, d])),
    ];
    if c.num_storage_tokens > 0 {
        out.push((
            "storage_tokens".into(),
            F32(vec![1, c.num_storage_tokens, d]),
        ));
    }
    for i in 0..c.depth {
        let mut put = |name: &str, e: Expected| out.push((format!("blocks[{i}].{name}"), e));
        put("norm1.weight", F32(vec![d]));
        put("norm1.bias", F32(vec![d]));
        for proj in ["query", "key", "value", "output"] {
            put(
                &format!("attn.core.attn.{proj}_proj.weight"),
                F32(vec![d, d]),
            );
            put(&format!("attn.core.attn.{proj}_proj.bias"), F32(vec![d]));
        }
        put("attn.core.attn.dropout.p", FloatScalar);
        put("attn.core.attn.dropout.inference", BoolScalar);
        put("attn.core.num_heads", Int(c.num_heads as i64));
        put("attn.num_heads", Int(c.num_heads as i64));
        put("norm2.weight", F32(vec![d]));
        put("norm2.bias", F32(vec![d]));
        put("mlp.fc1.weight", F32(vec![hidden, d]));
        put("mlp.fc1.bias", F32(vec![hidden]));
        put("mlp.fc2.weight", F32(vec![d, hidden]));
        put("mlp.fc2.bias", F32(vec![d]));
        put("ls1.gamma", F32(vec![d]));
        put("ls2.gamma", F32(vec![d]));
    }
    let head_dim = d / c.num_heads.max(1);
    out.extend([
        ("norm.weight".into(), F32(vec![d])),
        ("norm.bias".into(), F32(vec![d])),
        (
            "num_storage_tokens".into(),
            Int(c.num_storage_tokens as i64),
        ),
        ("dino_rope.periods".into(), F32(vec![head_dim / 4])),
    ]);
    out
}

fn fits(expected: &Expected, leaf: &Leaf) -> bool {
    match (expected, leaf) {
        (Expected::F32(shape), Leaf::Float { bytes: 4, shape: s }) => s == shape,
        (Expected::Int(v), Leaf::Int { value: Some(w), .. }) => v == w,
        (Expected::FloatScalar, Leaf::Float { shape, .. }) => shape.is_empty(),
        (Expected::BoolScalar, Leaf::Bool { shape }) => shape.is_empty(),
        _ => false,
    }
}

impl std::fmt::Display for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expected::F32(shape) => write!(f, "f32 {shape:?}"),
            Expected::Int(v) => write!(f, "the integer {v}"),
            Expected::FloatScalar => write!(f, "a float scalar"),
            Expected::BoolScalar => write!(f, "a bool"),
        }
    }
}

/// The first difference between the layout of `c` and the file's leaves, in words.
fn mismatch(c: &EqxConfig, leaves: &[Leaf]) -> Option<String> {
    let want = layout(c);
    if let Some((i, ((name, e), leaf))) = want
        .iter()
        .zip(leaves)
        .enumerate()
        .find(|(_, ((_, e), leaf))| !fits(e, leaf))
    {
        return Some(format!("record {i} ({name}) is {leaf}, not {e}"));
    }
    (want.len() != leaves.len()).then(|| {
        format!(
            "the file has {} records, that model {}",
            leaves.len(),
            want.len()
        )
    })
}

/// What the file's leaves say of the config, as far as they say it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Found {
    pub embed_dim: Option<usize>,
    pub patch_size: Option<usize>,
    pub img_size: Option<usize>,
    pub num_storage_tokens: Option<usize>,
    pub depth: Option<usize>,
    pub num_heads: Option<usize>,
}

impl Found {
    /// Reads the dimensions off the records the layout puts at known places.
    pub fn of(leaves: &[Leaf]) -> Found {
        let mut found = Found::default();
        let Some(Leaf::Float { shape: w, .. }) = leaves.first() else {
            return found;
        };
        let [d, 3, p, q] = w[..] else {
            return found;
        };
        if p != q || d == 0 || p == 0 {
            return found;
        }
        found.embed_dim = Some(d);
        found.patch_size = Some(p);
        if let Some(Leaf::Int { value: Some(n), .. }) = leaves.get(2) {
            let grid = (*n as f64).sqrt().round() as usize;
            if *n > 0 && (grid * grid) as i64 == *n {
                found.img_size = Some(grid * p);
            }
        }
        let storage = match leaves.get(4).map(Leaf::shape) {
            Some([1, r, dd]) if *dd == d => *r,
            _ => 0,
        };
        found.num_storage_tokens = Some(storage);
        let stem = if storage > 0 { 5 } else { 4 };
        let body = leaves.len().checked_sub(stem + 4);
        found.depth = body.filter(|b| b % 22 == 0).map(|b| b / 22);
        if let Some(Leaf::Float { shape, .. }) = leaves.last()
            && let [quarter] = shape[..]
            && quarter > 0
            && d % (4 * quarter) == 0
        {
            found.num_heads = Some(d / (4 * quarter));
        }
        found
    }

    /// The config when the leaves tell every key.
    pub fn config(&self) -> Option<EqxConfig> {
        Some(EqxConfig {
            img_size: self.img_size?,
            patch_size: self.patch_size?,
            embed_dim: self.embed_dim?,
            depth: self.depth?,
            num_heads: self.num_heads?,
            num_storage_tokens: self.num_storage_tokens?,
        })
    }

    fn get(&self, key: &str) -> Option<usize> {
        match key {
            "img_size" => self.img_size,
            "patch_size" => self.patch_size,
            "embed_dim" => self.embed_dim,
            "depth" => self.depth,
            "num_heads" => self.num_heads,
            "num_storage_tokens" => self.num_storage_tokens,
            _ => None,
        }
    }

    fn describe(&self) -> String {
        match self.config() {
            Some(c) => format!("its leaves are those of --config {}", c.text()),
            None => "its leaves are not those of jax2onnx's VisionTransformer as far as dinodiff \
                     can read them"
                .into(),
        }
    }
}

/// `--config img_size=…,…`: given keys as given, the others read off the file.
pub fn parse_config(text: &str, found: &Found) -> Result<EqxConfig> {
    let mut given: [Option<usize>; 6] = [None; 6];
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (key, value) = item.split_once('=').unwrap_or((item, ""));
        let Some(k) = CONFIG_KEYS.iter().position(|c| *c == key.trim()) else {
            bail!(
                "--config {text:?}: {item:?} is not KEY=VALUE with KEY one of {}",
                CONFIG_KEYS.join(", ")
            );
        };
        ensure!(
            given[k].is_none(),
            "--config {text:?}: {key} is given twice"
        );
        let value: usize = value.trim().parse().map_err(|_| {
            anyhow::anyhow!("--config {text:?}: {key}={value} is not a non-negative integer")
        })?;
        given[k] = Some(value);
    }
    ensure!(
        given.iter().any(Option::is_some),
        "--config {text:?} gives no KEY=VALUE (keys: {})",
        CONFIG_KEYS.join(", ")
    );
    let mut values = [0usize; 6];
    for (k, key) in CONFIG_KEYS.iter().enumerate() {
        values[k] = match given[k].or_else(|| found.get(key)) {
            Some(v) => v,
            None => bail!("--config {text:?} lacks {key}, and the file does not tell it: give it"),
        };
    }
    let [
        img_size,
        patch_size,
        embed_dim,
        depth,
        num_heads,
        num_storage_tokens,
    ] = values;
    let config = EqxConfig {
        img_size,
        patch_size,
        embed_dim,
        depth,
        num_heads,
        num_storage_tokens,
    };
    config.check()?;
    Ok(config)
}

/// The one hub variant among `candidates` whose layout is the file's.
pub fn infer(
    leaves: &[Leaf],
    found: &Found,
    candidates: &[Variant],
) -> Result<(EqxConfig, &'static str)> {
    let Some(img_size) = found.img_size else {
        bail!(
            "cannot infer the model: {}; give --config img_size=…,patch_size=…,embed_dim=…,\
             depth=…,num_heads=…,num_storage_tokens=…",
            found.describe()
        );
    };
    let fitting: Vec<(EqxConfig, &'static str)> = candidates
        .iter()
        .filter_map(|v| Some((EqxConfig::of_variant(v, img_size).ok()?, v.name)))
        .filter(|(c, _)| mismatch(c, leaves).is_none())
        .collect();
    match fitting[..] {
        [one] => Ok(one),
        [] => bail!(
            "no DINOv3 variant that jax2onnx's example model can hold ({}) fits it: {}. If that \
             is the model, pass that --config",
            names(candidates),
            found.describe()
        ),
        _ => bail!(
            "it fits several variants: {}; say which with --variant NAME",
            fitting
                .iter()
                .map(|(c, n)| format!("{n} ({})", c.text()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn names(candidates: &[Variant]) -> String {
    candidates
        .iter()
        .filter(|v| v.arch.ffn == Ffn::Mlp)
        .map(|v| v.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The sidecar's config, when the model has a sidecar.
fn sidecar_config(model: &Path) -> Result<Option<(EqxConfig, PathBuf)>> {
    let mut path = model.as_os_str().to_owned();
    path.push(".json");
    let path = PathBuf::from(path);
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the sidecar {}", path.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("the sidecar {} is not JSON", path.display()))?;
    let value = |k: &str| json["config"][k].as_u64().map(|v| v as usize);
    let values: Option<Vec<usize>> = CONFIG_KEYS.iter().map(|k| value(k)).collect();
    let Some(
        &[
            img_size,
            patch_size,
            embed_dim,
            depth,
            num_heads,
            num_storage_tokens,
        ],
    ) = values.as_deref()
    else {
        bail!(
            "the sidecar {} has no config of integers {} (it was not written by \
             tools/meta_to_eqx.py); remove it to have the config inferred from the file",
            path.display(),
            CONFIG_KEYS.join(", ")
        );
    };
    let config = EqxConfig {
        img_size,
        patch_size,
        embed_dim,
        depth,
        num_heads,
        num_storage_tokens,
    };
    Ok(Some((config, path)))
}

/// The config of the model at `model` (see the module docs).
pub fn resolve(model: &Path, variant: Option<&str>, config: Option<&str>) -> Result<Resolved> {
    let leaves = read_leaves(model)?;
    let found = Found::of(&leaves);
    let wanted = match (variant, config) {
        (Some(_), Some(_)) => bail!("give --variant or --config, not both"),
        (Some(name), None) => {
            let v = Variant::lookup(name)?;
            let img_size = found.img_size.with_context(|| {
                format!(
                    "{}: cannot tell the image size ({}); give --config instead of --variant",
                    model.display(),
                    found.describe()
                )
            })?;
            let c =
                EqxConfig::of_variant(&v, img_size).with_context(|| format!("--variant {name}"))?;
            Some((c, ConfigSource::Variant(v.name)))
        }
        (None, Some(text)) => Some((parse_config(text, &found)?, ConfigSource::Given)),
        (None, None) => None,
    };
    let sidecar = sidecar_config(model)?;
    let (config, from) = match (wanted, &sidecar) {
        (Some((c, from)), Some((s, path))) => {
            ensure!(
                c == *s,
                "{}: the config given ({}) is not the one of its sidecar {} ({})",
                model.display(),
                c.text(),
                path.display(),
                s.text()
            );
            (c, from)
        }
        (Some(wanted), None) => wanted,
        (None, Some((s, path))) => (*s, ConfigSource::Sidecar(path.clone())),
        (None, None) => {
            let (c, name) = infer(&leaves, &found, &VARIANTS)
                .with_context(|| format!("{} has no sidecar", model.display()))?;
            (c, ConfigSource::Inferred(name))
        }
    };
    if let Some(why) = mismatch(&config, &leaves) {
        bail!(
            "{} does not hold jax2onnx's Equinox DINOv3 with {} ({}): {why}; {}",
            model.display(),
            config.text(),
            source_words(&from),
            found.describe()
        );
    }
    Ok(Resolved {
        config,
        from,
        sidecar: sidecar.is_some(),
    })
}

/// Where the config came from, in words.
pub fn source_words(from: &ConfigSource) -> String {
    match from {
        ConfigSource::Sidecar(path) => format!("the config of its sidecar {}", path.display()),
        ConfigSource::Variant(name) => format!("--variant {name}"),
        ConfigSource::Given => "--config".into(),
        ConfigSource::Inferred(name) => format!("inferred from its leaves: {name}"),
    }
}

#[cfg(test)]
#[path = "skeleton_tests.rs"]
mod tests;
