//! Name alignment between two dumps (`docs/alignment.md`).
//!
//! Contract, in order of precedence:
//! 1. explicit pairs of the `--map` file (`[pairs]`, name in A = name in B) pair those tensors;
//! 2. every other tensor gets a *key*: its name, rewritten by the map file's `[[rewrite]]` rules
//!    that apply to its side (each rule in file order, regex replace-all); tensors of A and B
//!    with equal keys pair up. Two tensors of one side with the same key are an error;
//! 3. everything else is unmatched and listed per side. Nothing is ever paired by position.
//!
//! Shapes: equal shapes compare as they are; shapes that differ only by leading singleton
//! dimensions (a batch of 1 that one side lacks) are reconciled and the pair says so; any other
//! difference is a shape mismatch, reported and counted as a failure.

use crate::dump::Dump;
use anyhow::{Context, Result, bail};
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    A,
    B,
    Both,
}

#[derive(Debug)]
pub struct Rewrite {
    pub side: Side,
    pub pattern: Regex,
    pub replace: String,
}

/// The longest name a map file's rewrites may make (tensor names are tens of bytes).
pub const MAX_KEY_BYTES: usize = 64 * 1024;

/// A parsed `--map` file.
#[derive(Debug, Default)]
pub struct NameMap {
    pub pairs: Vec<(String, String)>,
    pub rewrites: Vec<Rewrite>,
    /// The file it was read from (for messages); `None` when parsed from text.
    pub path: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMap {
    #[serde(default)]
    pairs: BTreeMap<String, String>,
    #[serde(default)]
    rewrite: Vec<RawRewrite>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRewrite {
    #[serde(default = "default_side")]
    side: Side,
    pattern: String,
    replace: String,
}

fn default_side() -> Side {
    Side::Both
}

impl NameMap {
    pub fn load(path: &Path) -> Result<NameMap> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!(
                "cannot read the map file {}: {}",
                path.display(),
                crate::dump::reader::io_problem(&e)
            )
        })?;
        let mut map = NameMap::parse(&text).with_context(|| {
            format!(
                "the map file {} is invalid (its format: docs/alignment.md)",
                path.display()
            )
        })?;
        map.path = Some(path.to_path_buf());
        Ok(map)
    }

    /// How messages name the map file.
    fn shown(&self) -> String {
        self.path.as_ref().map_or("the map file".into(), |p| {
            format!("the map file {}", p.display())
        })
    }

    pub fn parse(text: &str) -> Result<NameMap> {
        let raw: RawMap = toml::from_str(text).context("not a valid map file (TOML)")?;
        let rewrites = raw
            .rewrite
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                Ok(Rewrite {
                    side: r.side,
                    pattern: Regex::new(&r.pattern).with_context(|| {
                        format!("rewrite #{}: invalid regex {:?}", i + 1, r.pattern)
                    })?,
                    replace: r.replace,
                })
            })
            .collect::<Result<_>>()?;
        Ok(NameMap {
            pairs: raw.pairs.into_iter().collect(),
            rewrites,
            path: None,
        })
    }

    /// The key of `name` on `side`: the name rewritten by each rule that applies, in file order.
    /// A key longer than [`MAX_KEY_BYTES`] is an error: rules that each insert text everywhere (an
    /// empty pattern) grow a name exponentially with their number.
    fn key(&self, name: &str, side: Side) -> Result<String> {
        let mut key = name.to_string();
        for (i, r) in self.rewrites.iter().enumerate() {
            if r.side == side || r.side == Side::Both {
                key = r.pattern.replace_all(&key, r.replace.as_str()).into_owned();
                if key.len() > MAX_KEY_BYTES {
                    bail!(
                        "map file: rewrite #{} makes the name {name:?} longer than {MAX_KEY_BYTES} bytes; \
                         does its pattern {:?} match the empty string?",
                        i + 1,
                        r.pattern.as_str()
                    );
                }
            }
        }
        Ok(key)
    }
}

/// How two tensors' shapes relate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ShapeRelation {
    Equal,
    /// Equal after dropping `dropped` leading singleton dims from side `side`.
    BatchReconciled {
        side: Side,
        dropped: usize,
    },
    Mismatch,
}

pub fn relate_shapes(a: &[usize], b: &[usize]) -> ShapeRelation {
    if a == b {
        return ShapeRelation::Equal;
    }
    let (longer, shorter, side) = if a.len() > b.len() {
        (a, b, Side::A)
    } else {
        (b, a, Side::B)
    };
    let extra = longer.len() - shorter.len();
    if extra > 0 && longer[..extra].iter().all(|&d| d == 1) && &longer[extra..] == shorter {
        ShapeRelation::BatchReconciled {
            side,
            dropped: extra,
        }
    } else {
        ShapeRelation::Mismatch
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PairedBy {
    Name,
    MapPair,
    MapRewrite,
}

#[derive(Debug, Clone)]
pub struct Pair {
    /// The common name: the key both sides share (A's name for explicit pairs).
    pub key: String,
    pub a: String,
    pub b: String,
    pub by: PairedBy,
    pub shapes: ShapeRelation,
}

#[derive(Debug, Default)]
pub struct Alignment {
    /// In A's execution order.
    pub pairs: Vec<Pair>,
    pub unmatched_a: Vec<String>,
    pub unmatched_b: Vec<String>,
}

pub fn align(a: &Dump, b: &Dump, map: &NameMap) -> Result<Alignment> {
    let mut explicit_a: HashMap<&str, &str> = HashMap::new();
    let mut used_b: HashSet<&str> = HashSet::new();
    for (x, y) in &map.pairs {
        if a.get(x).is_none() {
            bail!(
                "{} pairs {x:?} with {y:?}, but {} has no tensor {x:?}; fix its [pairs] (`dinodiff \
                 inspect` lists a dump's tensors)",
                map.shown(),
                a.path().display()
            );
        }
        if b.get(y).is_none() {
            bail!(
                "{} pairs {x:?} with {y:?}, but {} has no tensor {y:?}; fix its [pairs] (`dinodiff \
                 inspect` lists a dump's tensors)",
                map.shown(),
                b.path().display()
            );
        }
        if !used_b.insert(y) {
            bail!(
                "{} pairs {y:?} of {} with more than one tensor of {}; keep one of its [pairs]",
                map.shown(),
                b.path().display(),
                a.path().display()
            );
        }
        explicit_a.insert(x, y);
    }
    let mut b_by_key: HashMap<String, &str> = HashMap::new();
    for t in b.tensors() {
        if used_b.contains(t.name.as_str()) {
            continue;
        }
        let key = map.key(&t.name, Side::B)?;
        if let Some(other) = b_by_key.insert(key.clone(), &t.name) {
            bail!(
                "{}: tensors {other:?} and {:?} both map to the name {key:?}; fix the [[rewrite]] \
                 rules of {}",
                b.path().display(),
                t.name,
                map.shown()
            );
        }
    }
    let mut seen_a_keys: HashMap<String, &str> = HashMap::new();
    let mut out = Alignment::default();
    for t in a.tensors() {
        let (key, b_name, by) = if let Some(&y) = explicit_a.get(t.name.as_str()) {
            (t.name.clone(), Some(y), PairedBy::MapPair)
        } else {
            let key = map.key(&t.name, Side::A)?;
            if let Some(other) = seen_a_keys.insert(key.clone(), &t.name) {
                bail!(
                    "{}: tensors {other:?} and {:?} both map to the name {key:?}; fix the [[rewrite]] \
                 rules of {}",
                    a.path().display(),
                    t.name,
                    map.shown()
                );
            }
            let by = if key == t.name {
                PairedBy::Name
            } else {
                PairedBy::MapRewrite
            };
            let found = b_by_key.remove(&key);
            let by = match found {
                Some(y) if y != key && by == PairedBy::Name => PairedBy::MapRewrite,
                _ => by,
            };
            (key, found, by)
        };
        match b_name {
            Some(y) => {
                let tb = b.get(y).expect("names come from B");
                out.pairs.push(Pair {
                    key,
                    a: t.name.clone(),
                    b: y.to_string(),
                    by,
                    shapes: relate_shapes(&t.shape, &tb.shape),
                });
            }
            None => out.unmatched_a.push(t.name.clone()),
        }
    }
    let remaining: HashSet<&str> = b_by_key.values().copied().collect();
    out.unmatched_b = b
        .tensors()
        .iter()
        .filter(|t| remaining.contains(t.name.as_str()))
        .map(|t| t.name.clone())
        .collect();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_singletons_reconcile_other_differences_do_not() {
        assert_eq!(relate_shapes(&[1, 5, 3], &[1, 5, 3]), ShapeRelation::Equal);
        assert_eq!(
            relate_shapes(&[5, 3], &[1, 5, 3]),
            ShapeRelation::BatchReconciled {
                side: Side::B,
                dropped: 1
            }
        );
        assert_eq!(
            relate_shapes(&[1, 1, 5, 3], &[5, 3]),
            ShapeRelation::BatchReconciled {
                side: Side::A,
                dropped: 2
            }
        );
        assert_eq!(relate_shapes(&[2, 5, 3], &[5, 3]), ShapeRelation::Mismatch);
        assert_eq!(relate_shapes(&[3, 5], &[5, 3]), ShapeRelation::Mismatch);
    }

    #[test]
    fn map_file_rewrites_apply_per_side_in_order() {
        let m = NameMap::parse(
            r#"
            [pairs]
            "x" = "y"
            [[rewrite]]
            side = "b"
            pattern = '^layer(\d+)/ln1$'
            replace = 'blocks.$1.norm1'
            [[rewrite]]
            pattern = '\.norm1$'
            replace = '.n1'
            "#,
        )
        .unwrap();
        assert_eq!(m.pairs, vec![("x".to_string(), "y".to_string())]);
        assert_eq!(m.key("layer3/ln1", Side::B).unwrap(), "blocks.3.n1");
        assert_eq!(m.key("layer3/ln1", Side::A).unwrap(), "layer3/ln1");
        assert_eq!(m.key("blocks.3.norm1", Side::A).unwrap(), "blocks.3.n1");
    }

    /// 30 rules that each insert text at every position of a name (an empty pattern) would make a
    /// 3^30-byte key from a 900-byte file; the rewrite that passes the bound is named instead.
    #[test]
    fn rewrites_that_grow_names_without_bound_are_refused() {
        let text = "[[rewrite]]\npattern = ''\nreplace = 'xx'\n".repeat(30);
        let m = NameMap::parse(&text).unwrap();
        let e = m.key("blocks.0.ls1", Side::A).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "map file: rewrite #8 makes the name \"blocks.0.ls1\" longer than {MAX_KEY_BYTES} bytes; \
                 does its pattern \"\" match the empty string?"
            )
        );
    }

    #[test]
    fn map_file_errors_name_the_problem() {
        let e = NameMap::parse("[[rewrite]]\npattern = '('\nreplace = ''\n").unwrap_err();
        assert!(
            format!("{e:#}").contains("rewrite #1: invalid regex"),
            "{e:#}"
        );
        let e = NameMap::parse("[pairz]\n").unwrap_err();
        assert!(format!("{e:#}").contains("unknown field `pairz`"), "{e:#}");
    }
}
