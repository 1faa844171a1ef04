//! The map file (`--map`, `align -o`): explicit pairs, rewrite rules, pairs read through a layout
//! (`docs/alignment.md`, "Map file").
//!
//! Contract:
//! - `[pairs]` (`"a" = "b"`) and `[[pair]]` (`a`, `b`, optional `layout`) are explicit pairs;
//!   `[[rewrite]]` rules make keys. Unknown fields are errors; an A name paired twice is an error;
//!   a layout that does not parse is an error naming the line and the pair;
//! - [`write`] gives a map that parses back to the same pairs and rules: the seed's `[pairs]` and
//!   `[[rewrite]]`, then one `[[pair]]` per given pair, in the given order, each with its comment
//!   line. Strings are TOML-quoted, so any name round-trips.

use super::layout::Layout;
use anyhow::{Context, Result, bail};
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
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

/// An explicit pair of the map file.
#[derive(Debug, Clone, PartialEq)]
pub struct MapPair {
    pub a: String,
    pub b: String,
    /// How B is read in A's layout (`[[pair]]` only); `None`: as is.
    pub layout: Option<Layout>,
    /// The line of a `[[pair]]` (1-based), for messages; `None` for `[pairs]`.
    pub line: Option<usize>,
}

impl MapPair {
    /// How messages name the pair: `[[pair]] at line 12 ("a" ⇔ "b")` or `[pairs] "a" = "b"`.
    pub fn shown(&self) -> String {
        match self.line {
            Some(line) => format!("[[pair]] at line {line} ({:?} ⇔ {:?})", self.a, self.b),
            None => format!("[pairs] {:?} = {:?}", self.a, self.b),
        }
    }
}

/// The longest name a map file's rewrites may make (tensor names are tens of bytes).
pub const MAX_KEY_BYTES: usize = 64 * 1024;

/// A parsed `--map` file.
#[derive(Debug, Default)]
pub struct NameMap {
    /// `[pairs]` (sorted by A name, as TOML tables have no order), then `[[pair]]` in file order.
    pub pairs: Vec<MapPair>,
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
    pair: Vec<toml::Spanned<RawPair>>,
    #[serde(default)]
    rewrite: Vec<RawRewrite>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPair {
    a: String,
    b: String,
    layout: Option<String>,
}

#[derive(Deserialize, Serialize)]
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

/// The 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
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
    pub fn shown(&self) -> String {
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
        let mut pairs: Vec<MapPair> = raw
            .pairs
            .into_iter()
            .map(|(a, b)| MapPair {
                a,
                b,
                layout: None,
                line: None,
            })
            .collect();
        for spanned in raw.pair {
            let line = line_of(text, spanned.span().start);
            let p = spanned.into_inner();
            let layout = p
                .layout
                .map(|l| {
                    l.parse::<Layout>().map_err(|e| {
                        anyhow::anyhow!(
                            "[[pair]] at line {line} ({:?} ⇔ {:?}): layout {l:?}: {e}",
                            p.a,
                            p.b
                        )
                    })
                })
                .transpose()?;
            pairs.push(MapPair {
                a: p.a,
                b: p.b,
                layout,
                line: Some(line),
            });
        }
        let mut seen = HashSet::new();
        if let Some(twice) = pairs.iter().find(|p| !seen.insert(p.a.clone())) {
            bail!(
                "{} pairs {:?} of A a second time; keep one pair per tensor",
                twice.shown(),
                twice.a
            );
        }
        Ok(NameMap {
            pairs,
            rewrites,
            path: None,
        })
    }

    /// The key of `name` on `side`: the name rewritten by each rule that applies, in file order.
    /// A key longer than [`MAX_KEY_BYTES`] is an error: rules that each insert text everywhere (an
    /// empty pattern) grow a name exponentially with their number.
    pub fn key(&self, name: &str, side: Side) -> Result<String> {
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

/// A pair to write as `[[pair]]`, with the comment a reviewer reads.
#[derive(Debug, Clone)]
pub struct WrittenPair {
    pub a: String,
    pub b: String,
    pub layout: Option<Layout>,
    /// One line, without the leading `# `.
    pub comment: String,
}

fn quoted(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The map text (module contract): `header` lines (each becomes a comment), the seed's `[pairs]`
/// (but those of A tensors `pairs` names) and `[[rewrite]]`, then `pairs` as `[[pair]]`.
pub fn write(header: &[String], seed: &NameMap, pairs: &[WrittenPair]) -> String {
    let mut out = String::new();
    for line in header {
        out.push_str(&format!("# {line}\n"));
    }
    let rewritten: HashSet<&str> = pairs.iter().map(|p| p.a.as_str()).collect();
    let plain: Vec<&MapPair> = seed
        .pairs
        .iter()
        .filter(|p| p.line.is_none() && !rewritten.contains(p.a.as_str()))
        .collect();
    if !plain.is_empty() {
        out.push_str("\n[pairs]\n");
        for p in plain {
            out.push_str(&format!("{} = {}\n", quoted(&p.a), quoted(&p.b)));
        }
    }
    for r in &seed.rewrites {
        let side = match r.side {
            Side::A => "a",
            Side::B => "b",
            Side::Both => "both",
        };
        out.push_str(&format!(
            "\n[[rewrite]]\nside = \"{side}\"\npattern = {}\nreplace = {}\n",
            quoted(r.pattern.as_str()),
            quoted(&r.replace)
        ));
    }
    for p in pairs {
        out.push_str(&format!(
            "\n[[pair]]\na = {}\nb = {}\n",
            quoted(&p.a),
            quoted(&p.b)
        ));
        if let Some(l) = &p.layout {
            out.push_str(&format!("layout = {}\n", quoted(&l.to_string())));
        }
        out.push_str(&format!("# {}\n", p.comment.replace('\n', " ")));
    }
    out
}

#[cfg(test)]
mod tests;
