//! The values the pickle VM builds: plain data, the allow-listed torch objects, and an arena for
//! the mutable containers.
//!
//! Contract:
//! - every clone is O(1): strings, bytes and tuples are shared (`Rc`), lists and dicts are ids
//!   into the [`Objects`] arena (so a pickle that fetches one memoized value many times cannot
//!   multiply memory, and a list that contains itself is no leak);
//! - tuples record their nesting depth, which the VM bounds: dropping a value never recurses
//!   deeper than that bound;
//! - dicts keep insertion order (as Python's) and replace the value of an existing key; a key is
//!   hashed by content within a node budget ([`DictKey::of`]), unhashable keys are errors.

use super::super::tensor::TensorRef;
use safetensors::Dtype;
use std::collections::HashMap;
use std::rc::Rc;

/// A storage named by a persistent id: `data/<key>` of the archive, `bytes` long (checked
/// against the archive when the id is read). `dtype` is `None` for `torch.storage.UntypedStorage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageRef {
    pub key: String,
    pub dtype: Option<Dtype>,
    pub bytes: usize,
}

/// An allow-listed global (class or function); see `torch.rs` for what each means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildTensorV3,
    RebuildParameter,
    RebuildParameterWithState,
    Storage(Option<Dtype>),
    Set,
    CodecsEncode,
    Size,
    Device,
}

#[derive(Debug)]
pub struct Tuple {
    pub items: Vec<Value>,
    /// 1 + the deepest tuple inside (lists and dicts count as leaves: they live in the arena).
    pub depth: usize,
}

#[derive(Debug, Clone)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer that does not fit in 64 bits (only its size is kept).
    BigInt,
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Tuple(Rc<Tuple>),
    List(usize),
    Dict(usize),
    Global(Global),
    Dtype(Dtype),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorRef>),
}

impl Value {
    pub fn tuple(items: Vec<Value>) -> Value {
        let depth = 1 + items.iter().map(Value::depth).max().unwrap_or(0);
        Value::Tuple(Rc::new(Tuple { items, depth }))
    }

    pub fn depth(&self) -> usize {
        match self {
            Value::Tuple(t) => t.depth,
            _ => 0,
        }
    }

    /// What the value is, in Python's words, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "class or function",
            Value::Dtype(_) => "torch.dtype",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
        }
    }
}

/// A dict key, hashed by content.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DictKey {
    None,
    Int(i64),
    Float(u64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Tuple(Vec<DictKey>),
    /// Objects hashed by identity in Python (tensors, storages, classes): by address here.
    Identity(usize),
    Dtype(String),
}

const KEY_BUDGET: usize = 1024;

impl DictKey {
    /// The key of `v`; lists and dicts are unhashable, and a tuple key of more than 1024 items
    /// (nested included) is refused rather than copied.
    pub fn of(v: &Value) -> Result<DictKey, String> {
        let mut budget = KEY_BUDGET;
        Self::within(v, &mut budget)
    }

    fn within(v: &Value, budget: &mut usize) -> Result<DictKey, String> {
        *budget = budget
            .checked_sub(1)
            .ok_or("a dict key is a tuple of more than 1024 items")?;
        Ok(match v {
            Value::None => DictKey::None,
            Value::Bool(b) => DictKey::Int(i64::from(*b)),
            Value::Int(i) => DictKey::Int(*i),
            Value::BigInt => DictKey::Identity(0),
            Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => DictKey::Int(*f as i64),
            Value::Float(f) => DictKey::Float(f.to_bits()),
            Value::Str(s) => DictKey::Str(s.clone()),
            Value::Bytes(b) => DictKey::Bytes(b.clone()),
            Value::Tuple(t) => DictKey::Tuple(
                t.items
                    .iter()
                    .map(|x| Self::within(x, budget))
                    .collect::<Result<_, _>>()?,
            ),
            Value::List(_) | Value::Dict(_) => {
                return Err(format!("a {} is used as a dict key (unhashable)", v.kind()));
            }
            Value::Global(g) => DictKey::Dtype(format!("{g:?}")),
            Value::Dtype(d) => DictKey::Dtype(d.to_string()),
            Value::Storage(s) => DictKey::Identity(Rc::as_ptr(s) as usize),
            Value::Tensor(t) => DictKey::Identity(Rc::as_ptr(t) as usize),
        })
    }
}

/// An insertion-ordered dict.
#[derive(Debug, Default)]
pub struct Dict {
    /// Made by `collections.OrderedDict` (a `state_dict()`), not a `{}` literal.
    pub ordered: bool,
    pub entries: Vec<(Value, Value)>,
    index: HashMap<DictKey, usize>,
}

impl Dict {
    pub fn ordered() -> Dict {
        Dict {
            ordered: true,
            ..Dict::default()
        }
    }

    pub fn insert(&mut self, k: Value, v: Value) -> Result<(), String> {
        let key = DictKey::of(&k)?;
        match self.index.get(&key) {
            Some(&i) => self.entries[i].1 = v,
            None => {
                self.index.insert(key, self.entries.len());
                self.entries.push((k, v));
            }
        }
        Ok(())
    }

    /// The value under the string key `k`.
    pub fn get_str(&self, k: &str) -> Option<&Value> {
        let i = self.index.get(&DictKey::Str(Rc::from(k)))?;
        Some(&self.entries[*i].1)
    }
}

/// A mutable container.
#[derive(Debug)]
pub enum Obj {
    List(Vec<Value>),
    Dict(Dict),
}

/// The arena of the lists and dicts of one unpickling.
#[derive(Debug, Default)]
pub struct Objects(pub Vec<Obj>);

impl Objects {
    pub fn dict(&self, id: usize) -> Option<&Dict> {
        match self.0.get(id) {
            Some(Obj::Dict(d)) => Some(d),
            _ => None,
        }
    }

    pub fn list(&self, id: usize) -> Option<&[Value]> {
        match self.0.get(id) {
            Some(Obj::List(l)) => Some(l),
            _ => None,
        }
    }
}
