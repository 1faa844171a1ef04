//! The allow-list: the only globals a checkpoint's pickle may name, and what calling each of them
//! means here (data, never code). Modelled on torch's own `weights_only=True` unpickler.
//!
//! Contract:
//! - [`resolve`] maps `module.name` to a [`Global`] or a dtype; any other name is an error naming
//!   it (`posix.system`, `builtins.eval`, …). Nothing is ever imported or executed;
//! - [`call`] (REDUCE, NEWOBJ) gives the value of an allow-listed call:
//!   `collections.OrderedDict()` → a new dict; `torch._utils._rebuild_tensor_v2(storage, offset,
//!   size, stride, requires_grad, hooks[, metadata])` and `_rebuild_tensor_v3(…, dtype[,
//!   metadata])` → a checked [`TensorRef`]; `_rebuild_parameter(_with_state)(tensor, …)` → the
//!   tensor; `builtins.set(list)` → the list; `_codecs.encode(str, "latin1")` → bytes;
//!   `torch.Size(tuple)` → the tuple; `torch.device(…)` → its name;
//! - [`build`] (BUILD) accepts state on a dict (`OrderedDict._metadata`) or a tensor, and drops it;
//! - [`persistent_load`] turns `('storage', <storage type>, key, location, numel)` into a
//!   [`StorageRef`] whose size the archive confirms.

use super::super::tensor::{TensorRef, element_size};
use super::value::{Global, Obj, Objects, StorageRef, Value};
use safetensors::Dtype;
use std::rc::Rc;

/// What a `module.name` global is.
pub enum Resolved {
    Global(Global),
    Dtype(Dtype),
}

const STORAGES: &[(&str, Dtype)] = &[
    ("DoubleStorage", Dtype::F64),
    ("FloatStorage", Dtype::F32),
    ("HalfStorage", Dtype::F16),
    ("BFloat16Storage", Dtype::BF16),
    ("LongStorage", Dtype::I64),
    ("IntStorage", Dtype::I32),
    ("ShortStorage", Dtype::I16),
    ("CharStorage", Dtype::I8),
    ("ByteStorage", Dtype::U8),
    ("BoolStorage", Dtype::BOOL),
    ("ComplexFloatStorage", Dtype::C64),
];

const DTYPES: &[(&str, Dtype)] = &[
    ("float64", Dtype::F64),
    ("double", Dtype::F64),
    ("float32", Dtype::F32),
    ("float", Dtype::F32),
    ("float16", Dtype::F16),
    ("half", Dtype::F16),
    ("bfloat16", Dtype::BF16),
    ("int64", Dtype::I64),
    ("long", Dtype::I64),
    ("int32", Dtype::I32),
    ("int", Dtype::I32),
    ("int16", Dtype::I16),
    ("short", Dtype::I16),
    ("int8", Dtype::I8),
    ("uint8", Dtype::U8),
    ("uint16", Dtype::U16),
    ("uint32", Dtype::U32),
    ("uint64", Dtype::U64),
    ("bool", Dtype::BOOL),
    ("complex64", Dtype::C64),
    ("cfloat", Dtype::C64),
    ("float8_e4m3fn", Dtype::F8_E4M3),
    ("float8_e5m2", Dtype::F8_E5M2),
    ("float8_e4m3fnuz", Dtype::F8_E4M3FNUZ),
    ("float8_e5m2fnuz", Dtype::F8_E5M2FNUZ),
    ("float8_e8m0fnu", Dtype::F8_E8M0),
];

/// The allow-list. The error names the global and says that nothing ran.
pub fn resolve(module: &str, name: &str) -> Result<Resolved, String> {
    use Global::*;
    let g = match (module, name) {
        ("collections", "OrderedDict") => OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2") => RebuildTensorV2,
        ("torch._utils", "_rebuild_tensor_v3") => RebuildTensorV3,
        ("torch._utils", "_rebuild_parameter") => RebuildParameter,
        ("torch._utils", "_rebuild_parameter_with_state") => RebuildParameterWithState,
        ("torch.storage" | "torch", "UntypedStorage") => Storage(None),
        ("builtins" | "__builtin__", "set" | "frozenset") => Set,
        ("_codecs", "encode") => CodecsEncode,
        ("torch", "Size") => Size,
        ("torch", "device") => Device,
        ("torch", _) => {
            if let Some((_, d)) = STORAGES.iter().find(|(n, _)| *n == name) {
                Storage(Some(*d))
            } else if let Some((_, d)) = DTYPES.iter().find(|(n, _)| *n == name) {
                return Ok(Resolved::Dtype(*d));
            } else if name.ends_with("Storage") {
                return Err(format!(
                    "the storage type `torch.{name}` has no safetensors dtype, so dinodiff cannot \
                     read its tensors"
                ));
            } else {
                return Err(refused(module, name));
            }
        }
        _ => return Err(refused(module, name)),
    };
    Ok(Resolved::Global(g))
}

fn refused(module: &str, name: &str) -> String {
    format!(
        "the pickle names the global `{module}.{name}`, which is not on the allow-list of \
         checkpoint data (tensors, storages, dtypes, dicts, lists, OrderedDict); refusing the \
         file: nothing was executed. A checkpoint that needs it is code, not data: load it in \
         Python only if you trust it, and save its state dict alone with torch.save"
    )
}

fn int(v: &Value, what: &str) -> Result<usize, String> {
    match v {
        Value::Int(i) => usize::try_from(*i).map_err(|_| format!("{what} is negative ({i})")),
        other => Err(format!("{what} is a {}, expected an int", other.kind())),
    }
}

fn ints(v: &Value, what: &str) -> Result<Vec<usize>, String> {
    match v {
        Value::Tuple(t) => t.items.iter().map(|x| int(x, what)).collect(),
        other => Err(format!("{what} is a {}, expected a tuple", other.kind())),
    }
}

/// `_rebuild_tensor_v2` / `_v3`.
fn rebuild_tensor(args: &[Value], v3: bool) -> Result<Value, String> {
    let arity = if v3 { 7..=8 } else { 6..=7 };
    if !arity.contains(&args.len()) {
        return Err(format!(
            "_rebuild_tensor_v{} got {} arguments",
            if v3 { 3 } else { 2 },
            args.len()
        ));
    }
    let Value::Storage(storage) = &args[0] else {
        return Err(format!(
            "a tensor's storage is a {}, not a storage",
            args[0].kind()
        ));
    };
    let dtype = if v3 {
        match &args[6] {
            Value::Dtype(d) => *d,
            other => return Err(format!("a tensor's dtype is a {}", other.kind())),
        }
    } else {
        storage.dtype.ok_or_else(|| {
            format!(
                "storage `{}` is untyped and the tensor gives no dtype",
                storage.key
            )
        })?
    };
    let t = TensorRef::new(
        dtype,
        ints(&args[2], "a tensor's size")?,
        ints(&args[3], "a tensor's stride")?,
        int(&args[1], "a tensor's storage offset")?,
        storage.key.clone(),
        storage.bytes / element_size(dtype),
    )?;
    Ok(Value::Tensor(Rc::new(t)))
}

/// The value of `callable(*args)` for an allow-listed callable.
pub fn call(callable: &Value, args: &Value, objects: &mut Objects) -> Result<Value, String> {
    let Value::Global(g) = callable else {
        return Err(format!("a {} is called", callable.kind()));
    };
    let Value::Tuple(args) = args else {
        return Err(format!("a call's arguments are a {}", args.kind()));
    };
    let args = &args.items;
    let first = args.first();
    if objects.0.len() >= super::MAX_OBJECTS {
        return Err(format!("more than {} lists and dicts", super::MAX_OBJECTS));
    }
    match (g, first) {
        (Global::OrderedDict, None) => {
            objects.0.push(Obj::Dict(super::value::Dict::ordered()));
            Ok(Value::Dict(objects.0.len() - 1))
        }
        (Global::RebuildTensorV2, _) => rebuild_tensor(args, false),
        (Global::RebuildTensorV3, _) => rebuild_tensor(args, true),
        (
            Global::RebuildParameter | Global::RebuildParameterWithState,
            Some(t @ Value::Tensor(_)),
        ) => Ok(t.clone()),
        (Global::Set, None) => {
            objects.0.push(Obj::List(Vec::new()));
            Ok(Value::List(objects.0.len() - 1))
        }
        (Global::Set, Some(l @ Value::List(_))) | (Global::Size, Some(l @ Value::Tuple(_))) => {
            Ok(l.clone())
        }
        (Global::Device, Some(s @ Value::Str(_))) => Ok(s.clone()),
        (Global::CodecsEncode, Some(Value::Str(s))) => s
            .chars()
            .map(|c| u8::try_from(u32::from(c)).ok())
            .collect::<Option<Vec<u8>>>()
            .map(|b| Value::Bytes(b.into()))
            .ok_or_else(|| "_codecs.encode of a string beyond latin-1".to_string()),
        (g, first) => Err(format!(
            "{g:?} is called with arguments ({}{}) that a checkpoint does not use",
            first.map_or("", Value::kind),
            if args.len() > 1 { ", …" } else { "" }
        )),
    }
}

/// BUILD: state set on a dict (an OrderedDict's `_metadata`) or a tensor is accepted and dropped.
pub fn build(target: &Value) -> Result<(), String> {
    match target {
        Value::Dict(_) | Value::Tensor(_) => Ok(()),
        other => Err(format!("BUILD sets state on a {}", other.kind())),
    }
}

/// BINPERSID: `('storage', <storage type>, key, location, numel)`; `bytes_of(key)` is the size of
/// the archive's `data/<key>` entry (an error if it has none).
pub fn persistent_load(
    pid: &Value,
    bytes_of: &dyn Fn(&str) -> Result<usize, String>,
) -> Result<Value, String> {
    let items = match pid {
        Value::Tuple(t) => &t.items,
        other => return Err(format!("a persistent id is a {}", other.kind())),
    };
    let (Some(Value::Str(tag)), Some(Value::Global(Global::Storage(dtype))), Some(Value::Str(key))) =
        (items.first(), items.get(1), items.get(2))
    else {
        return Err(
            "a persistent id is not ('storage', <storage type>, key, location, numel)".into(),
        );
    };
    if &**tag != "storage" || items.len() != 5 {
        return Err(format!(
            "persistent id of storage `{key}` has {} fields (tag {tag:?}); torch.save writes 5",
            items.len()
        ));
    }
    let numel = int(&items[4], "a storage's element count")?;
    let width = dtype.map_or(1, element_size);
    let bytes = bytes_of(key)?;
    let needed = numel
        .checked_mul(width)
        .ok_or("a storage's size overflows")?;
    if bytes < needed {
        return Err(format!(
            "storage `data/{key}` holds {bytes} bytes but the pickle gives it {numel} elements \
             of {width} bytes (truncated?)"
        ));
    }
    Ok(Value::Storage(Rc::new(StorageRef {
        key: key.to_string(),
        dtype: *dtype,
        bytes: needed,
    })))
}
