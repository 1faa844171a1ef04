//! Finding the state dict inside what `torch.save` stored, and stripping its wrapper prefix.
//!
//! Contract:
//! - a *dict of tensors* is any dict (root or nested under dict keys, at most [`MAX_NESTING`]
//!   deep) with at least one tensor under a string key; its other entries are skipped (listed);
//! - a *candidate* is a dict of tensors plus a dotted prefix P (`""`, or the first 1 to
//!   [`MAX_PREFIX_PARTS`] dotted components of one of its names, which covers `module.`,
//!   `backbone.`, `model.`, `_orig_mod.`, `teacher.backbone.`, …): its tensors whose names start
//!   with P, with P stripped. A candidate is *acceptable* when the caller's predicate accepts its
//!   name → shape map; when a dict is acceptable without a prefix, its prefixed candidates are
//!   not considered;
//! - without a key: the one acceptable candidate is chosen; two or more are an error listing the
//!   `--key` of each; none is the only dict of tensors kept as it is (`accepted: false`, the
//!   caller decides), or an error listing the dicts of tensors when there are several;
//! - with a key `a.b.c`: dict keys are followed from the root (the longest key that matches the
//!   next dotted components first; `""` is the root), and what is left of the path is a prefix of
//!   names. Among the prefixes of the rest, an acceptable one is stripped as above; if none is,
//!   the selection is kept as it is (`accepted: false`). A key that leads nowhere is an error
//!   listing the dicts of tensors.

use super::pickle::{Dict, Unpickled, Value};
use super::tensor::TensorRef;
use std::collections::{BTreeMap, BTreeSet, HashSet};

pub const MAX_NESTING: usize = 8;
pub const MAX_PREFIX_PARTS: usize = 4;

/// Name → shape, what the predicate sees.
pub type Shapes = BTreeMap<String, Vec<usize>>;

/// How the state dict was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Choice {
    /// `--key` named it.
    Explicit,
    /// It was the only candidate the predicate accepted.
    Found,
    /// Nothing was accepted; it was the only dict of tensors.
    Only,
}

/// The chosen state dict.
#[derive(Debug, Clone)]
pub struct Chosen {
    /// Dotted dict keys from the root (`""` = the root).
    pub key: String,
    /// The prefix stripped from every name (`""` = none).
    pub prefix: String,
    pub choice: Choice,
    pub accepted: bool,
    /// Whether the dict is an `OrderedDict` (what `state_dict()` returns).
    pub ordered: bool,
    /// Names (prefix stripped) and tensors, in file order.
    pub tensors: Vec<(String, TensorRef)>,
    /// Tensors of the dict outside the prefix.
    pub left_out: usize,
    /// Entries of the dict that are not tensors under string keys.
    pub skipped: Vec<String>,
}

struct TensorDict<'u> {
    key: Vec<String>,
    dict: &'u Dict,
    names: Vec<(String, TensorRef)>,
}

impl TensorDict<'_> {
    fn dotted(&self) -> String {
        self.key.join(".")
    }

    fn under(&self, prefix: &str) -> Vec<(String, TensorRef)> {
        self.names
            .iter()
            .filter_map(|(n, t)| Some((n.strip_prefix(prefix)?.to_string(), t.clone())))
            .filter(|(n, _)| !n.is_empty())
            .collect()
    }

    fn describe(&self) -> String {
        let shown = if self.key.is_empty() {
            "(the root) `--key ''`".to_string()
        } else {
            format!("`--key {}`", self.dotted())
        };
        format!("{shown}: {} tensors", self.names.len())
    }
}

fn key_text(k: &Value) -> Option<String> {
    match k {
        Value::Str(s) => Some(s.to_string()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// Every dict of tensors reachable from the root through dict values, in file order.
fn tensor_dicts(u: &Unpickled) -> Result<Vec<TensorDict<'_>>, String> {
    let Value::Dict(root) = u.root else {
        return Err(format!(
            "the pickled object is a {}, not a dict (torch.save of a state dict or of a dict \
             holding one)",
            u.root.kind()
        ));
    };
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    let mut todo = vec![(Vec::new(), root)];
    while let Some((key, id)) = todo.pop() {
        let Some(dict) = u.objects.dict(id) else {
            continue;
        };
        if !seen.insert(id) {
            continue;
        }
        let mut names = Vec::new();
        let mut nested = Vec::new();
        for (k, v) in &dict.entries {
            match (k, v) {
                (Value::Str(s), Value::Tensor(t)) => names.push((s.to_string(), (**t).clone())),
                (k, Value::Dict(child)) if key.len() < MAX_NESTING => {
                    if let Some(text) = key_text(k) {
                        let mut path = key.clone();
                        path.push(text);
                        nested.push((path, *child));
                    }
                }
                _ => {}
            }
        }
        todo.extend(nested.into_iter().rev());
        if !names.is_empty() {
            found.push(TensorDict { key, dict, names });
        }
    }
    Ok(found)
}

fn shapes(tensors: &[(String, TensorRef)]) -> Shapes {
    tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.shape.clone()))
        .collect()
}

/// `""` and the dotted prefixes of the names (1 to MAX_PREFIX_PARTS components), in order.
fn prefixes(names: &[(String, TensorRef)]) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut seen = BTreeSet::new();
    for (n, _) in names {
        let mut end = 0;
        for _ in 0..MAX_PREFIX_PARTS {
            let Some(dot) = n[end..].find('.') else {
                break;
            };
            end += dot + 1;
            if seen.insert(&n[..end]) {
                out.push(n[..end].to_string());
            }
        }
    }
    out
}

/// The acceptable prefixes of a dict's names (only `""` when that is acceptable).
fn acceptable(names: &[(String, TensorRef)], accept: &dyn Fn(&Shapes) -> bool) -> Vec<String> {
    if accept(&shapes(names)) {
        return vec![String::new()];
    }
    prefixes(names)
        .into_iter()
        .skip(1)
        .filter(|p| {
            let under: Vec<_> = names
                .iter()
                .filter_map(|(n, t)| Some((n.strip_prefix(p.as_str())?.to_string(), t.clone())))
                .collect();
            !under.is_empty() && accept(&shapes(&under))
        })
        .collect()
}

fn skipped(dict: &Dict) -> Vec<String> {
    dict.entries
        .iter()
        .filter(|(k, v)| !matches!((k, v), (Value::Str(_), Value::Tensor(_))))
        .map(|(k, v)| {
            let k = key_text(k).unwrap_or_else(|| format!("<{} key>", k.kind()));
            format!("{k} ({})", v.kind())
        })
        .collect()
}

fn chosen(d: &TensorDict, prefix: String, choice: Choice, accepted: bool) -> Chosen {
    let tensors = d.under(&prefix);
    Chosen {
        key: d.dotted(),
        left_out: d.names.len() - tensors.len(),
        tensors,
        prefix,
        choice,
        accepted,
        ordered: d.dict.ordered,
        skipped: skipped(d.dict),
    }
}

fn listing(dicts: &[TensorDict]) -> String {
    if dicts.is_empty() {
        return "it holds no tensors at all".into();
    }
    let list: Vec<String> = dicts.iter().map(TensorDict::describe).collect();
    format!("the dicts that hold tensors are: {}", list.join("; "))
}

/// The `--key` that selects `prefix` inside `d`.
fn key_for(d: &TensorDict, prefix: &str) -> String {
    let mut parts = d.key.clone();
    if let Some(p) = prefix.strip_suffix('.') {
        parts.push(p.to_string());
    }
    parts.join(".")
}

/// Chooses the state dict (see the module contract).
pub fn choose(
    u: &Unpickled,
    key: Option<&str>,
    accept: &dyn Fn(&Shapes) -> bool,
) -> Result<Chosen, String> {
    let dicts = tensor_dicts(u)?;
    if let Some(key) = key {
        return choose_explicit(u, &dicts, key, accept);
    }
    let mut found = Vec::new();
    for d in &dicts {
        for p in acceptable(&d.names, accept) {
            found.push((d, p));
        }
    }
    if let [(d, p)] = found.as_slice() {
        return Ok(chosen(d, p.clone(), Choice::Found, true));
    }
    match found.len() {
        0 if dicts.is_empty() => {
            Err("it holds no tensors (no dict in it has a tensor under a string key)".into())
        }
        0 if dicts.len() == 1 => Ok(chosen(&dicts[0], String::new(), Choice::Only, false)),
        0 => Err(format!(
            "none of its dicts of tensors has the key set expected, and there are several: \
             choose one with --key ({})",
            listing(&dicts)
        )),
        _ => {
            let keys: Vec<String> = found
                .iter()
                .map(|(d, p)| format!("`--key {}`", key_for(d, p)))
                .collect();
            Err(format!(
                "it holds {} state dicts that fit: {}. Choose one with --key",
                found.len(),
                keys.join(", ")
            ))
        }
    }
}

fn choose_explicit(
    u: &Unpickled,
    dicts: &[TensorDict],
    key: &str,
    accept: &dyn Fn(&Shapes) -> bool,
) -> Result<Chosen, String> {
    let (path, rest) = follow(u, key);
    let Some(d) = dicts.iter().find(|d| d.key == path) else {
        return Err(format!(
            "--key {key:?} does not lead to a dict of tensors: {}",
            listing(dicts)
        ));
    };
    let explicit = if rest.is_empty() {
        String::new()
    } else {
        format!("{rest}.")
    };
    let under = d.under(&explicit);
    if under.is_empty() {
        return Err(format!(
            "--key {key:?}: no tensor of `{}` starts with `{explicit}`; {}",
            if d.key.is_empty() {
                "(the root)".to_string()
            } else {
                d.dotted()
            },
            listing(dicts)
        ));
    }
    let found = acceptable(&under, accept);
    match found.as_slice() {
        [] => Ok(chosen(d, explicit, Choice::Explicit, false)),
        [p] => Ok(chosen(d, format!("{explicit}{p}"), Choice::Explicit, true)),
        _ => Err(format!(
            "--key {key:?} holds several state dicts that fit: {}. Choose one",
            found
                .iter()
                .map(|p| format!("`--key {}`", key_for(d, &format!("{explicit}{p}"))))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Follows dict keys from the root along the dotted `key`; returns the dict keys followed and the
/// rest of the path.
fn follow(u: &Unpickled, key: &str) -> (Vec<String>, String) {
    let mut path = Vec::new();
    let mut parts: Vec<&str> = if key.is_empty() {
        Vec::new()
    } else {
        key.split('.').collect()
    };
    let mut id = match u.root {
        Value::Dict(id) => id,
        _ => return (path, key.to_string()),
    };
    'descend: while !parts.is_empty() {
        let Some(dict) = u.objects.dict(id) else {
            break;
        };
        for n in (1..=parts.len()).rev() {
            let name = parts[..n].join(".");
            let child = dict.entries.iter().find_map(|(k, v)| match v {
                Value::Dict(c) if key_text(k).as_deref() == Some(name.as_str()) => Some(*c),
                _ => None,
            });
            if let Some(c) = child {
                path.push(name);
                parts.drain(..n);
                id = c;
                continue 'descend;
            }
        }
        break;
    }
    (path, parts.join("."))
}

#[cfg(test)]
mod tests {
    use super::super::pickle::{Obj, Objects};
    use super::*;
    use safetensors::Dtype;
    use std::rc::Rc;

    fn t() -> Value {
        Value::Tensor(Rc::new(TensorRef {
            dtype: Dtype::F32,
            shape: vec![1],
            strides: vec![1],
            storage_offset: 0,
            storage: "0".into(),
        }))
    }

    fn dict(objects: &mut Objects, entries: Vec<(&str, Value)>) -> Value {
        let mut d = Dict::ordered();
        for (k, v) in entries {
            d.insert(Value::Str(Rc::from(k)), v).unwrap();
        }
        objects.0.push(Obj::Dict(d));
        Value::Dict(objects.0.len() - 1)
    }

    fn model(objects: &mut Objects, prefix: &str, extra: &[&str]) -> Value {
        let mut names = vec![format!("{prefix}cls_token"), format!("{prefix}norm.weight")];
        names.extend(extra.iter().map(|e| e.to_string()));
        let entries = names.iter().map(|n| (n.as_str(), t())).collect();
        dict(objects, entries)
    }

    fn accept(s: &Shapes) -> bool {
        s.contains_key("cls_token") && s.contains_key("norm.weight")
    }

    fn choose_in(u: &Unpickled, key: Option<&str>) -> Result<Chosen, String> {
        choose(u, key, &accept)
    }

    #[test]
    fn flat_nested_and_prefixed_state_dicts_are_found() {
        let mut o = Objects::default();
        let root = model(&mut o, "", &[]);
        let u = Unpickled { root, objects: o };
        let c = choose_in(&u, None).unwrap();
        assert_eq!(
            (c.key.as_str(), c.prefix.as_str(), c.choice),
            ("", "", Choice::Found)
        );
        assert!(c.accepted && c.ordered);

        let mut o = Objects::default();
        let sd = model(&mut o, "module._orig_mod.", &[]);
        let root = dict(&mut o, vec![("model", sd), ("epoch", Value::Int(3))]);
        let u = Unpickled { root, objects: o };
        let c = choose_in(&u, None).unwrap();
        assert_eq!(
            (c.key.as_str(), c.prefix.as_str()),
            ("model", "module._orig_mod.")
        );
        let names: Vec<_> = c.tensors.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["cls_token", "norm.weight"]);
        let c = choose_in(&u, Some("model")).unwrap();
        assert_eq!(
            (c.choice, c.prefix.as_str()),
            (Choice::Explicit, "module._orig_mod.")
        );
    }

    #[test]
    fn teacher_and_student_are_ambiguous_until_a_key_is_given() {
        let mut o = Objects::default();
        let teacher = model(&mut o, "backbone.", &["dino_head.w"]);
        let student = model(&mut o, "backbone.", &["dino_head.w"]);
        let root = dict(&mut o, vec![("teacher", teacher), ("student", student)]);
        let u = Unpickled { root, objects: o };
        let e = choose_in(&u, None).unwrap_err();
        assert!(
            e.contains("`--key teacher.backbone`, `--key student.backbone`"),
            "{e}"
        );
        let c = choose_in(&u, Some("teacher")).unwrap();
        assert_eq!(
            (c.key.as_str(), c.prefix.as_str(), c.left_out),
            ("teacher", "backbone.", 1)
        );
        let c = choose_in(&u, Some("student.backbone")).unwrap();
        assert_eq!(
            (c.key.as_str(), c.prefix.as_str()),
            ("student", "backbone.")
        );
        assert!(c.accepted);
        let c = choose_in(&u, Some("student.dino_head")).unwrap();
        assert!(!c.accepted && c.tensors.len() == 1);
        let e = choose_in(&u, Some("ema")).unwrap_err();
        assert!(
            e.contains("`--key teacher`: 3 tensors; `--key student`: 3 tensors"),
            "{e}"
        );
        let e = choose_in(&u, Some("teacher.head")).unwrap_err();
        assert!(
            e.contains("no tensor of `teacher` starts with `head.`"),
            "{e}"
        );
    }

    #[test]
    fn a_flat_dict_of_two_models_is_split_by_prefix() {
        let mut o = Objects::default();
        let names = [
            "teacher.backbone.cls_token",
            "teacher.backbone.norm.weight",
            "student.backbone.cls_token",
            "student.backbone.norm.weight",
        ];
        let root = dict(&mut o, names.iter().map(|n| (*n, t())).collect());
        let u = Unpickled { root, objects: o };
        assert!(
            choose_in(&u, None)
                .unwrap_err()
                .contains("`--key teacher.backbone`")
        );
        let c = choose_in(&u, Some("student.backbone")).unwrap();
        assert_eq!(
            (c.key.as_str(), c.prefix.as_str()),
            ("", "student.backbone.")
        );
        let e = choose_in(&u, Some("")).unwrap_err();
        assert!(e.contains("several state dicts that fit"), "{e}");
    }

    #[test]
    fn nothing_acceptable_cycles_and_odd_roots() {
        let mut o = Objects::default();
        let root = dict(&mut o, vec![("w", t())]);
        let Value::Dict(id) = root else { panic!() };
        let Obj::Dict(d) = &mut o.0[id] else { panic!() };
        d.insert(Value::Str(Rc::from("self")), Value::Dict(id))
            .unwrap();
        let u = Unpickled { root, objects: o };
        let c = choose_in(&u, None).unwrap();
        assert_eq!((c.choice, c.accepted), (Choice::Only, false));
        assert_eq!(c.skipped, ["self (dict)"]);

        let mut o = Objects::default();
        let a = dict(&mut o, vec![("w", t())]);
        let b = dict(&mut o, vec![("w", t())]);
        let root = dict(&mut o, vec![("a", a), ("b", b)]);
        let u = Unpickled { root, objects: o };
        let e = choose_in(&u, None).unwrap_err();
        assert!(e.contains("choose one with --key"), "{e}");

        let u = Unpickled {
            root: t(),
            objects: Objects::default(),
        };
        assert!(
            choose_in(&u, None)
                .unwrap_err()
                .contains("is a tensor, not a dict")
        );
        let mut o = Objects::default();
        let root = dict(&mut o, vec![("epoch", Value::Int(1))]);
        let u = Unpickled { root, objects: o };
        assert!(
            choose_in(&u, None)
                .unwrap_err()
                .contains("holds no tensors")
        );
    }
}
