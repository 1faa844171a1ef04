//! The VM on hand-assembled pickles: each opcode family, the allow-list, the limits, and random
//! opcode soup (never a panic).

use super::value::{Global, Value};
use super::*;
use safetensors::Dtype;

/// A pickle under construction, opcode by opcode.
#[derive(Default, Clone)]
pub(crate) struct P(pub Vec<u8>);

impl P {
    pub fn new() -> P {
        P(vec![0x80, 2])
    }
    pub fn op(mut self, b: &[u8]) -> P {
        self.0.extend_from_slice(b);
        self
    }
    pub fn s(self, s: &str) -> P {
        let mut p = self.op(b"X");
        p.0.extend((s.len() as u32).to_le_bytes());
        p.op(s.as_bytes())
    }
    pub fn int(self, i: u8) -> P {
        self.op(&[b'K', i])
    }
    pub fn global(self, module: &str, name: &str) -> P {
        self.op(format!("c{module}\n{name}\n").as_bytes())
    }
    /// `_rebuild_tensor_v2(storage(key, FloatStorage, numel), offset, size, stride, False, {})`.
    pub fn tensor(self, key: &str, numel: u8, offset: u8, size: &[u8], stride: &[u8]) -> P {
        let mut p = self
            .global("torch._utils", "_rebuild_tensor_v2")
            .op(b"((")
            .s("storage")
            .global("torch", "FloatStorage")
            .s(key)
            .s("cpu")
            .int(numel)
            .op(b"tQ")
            .int(offset)
            .op(b"(");
        for &n in size {
            p = p.int(n);
        }
        p = p.op(b"t(");
        for &n in stride {
            p = p.int(n);
        }
        p.op(b"t\x89}tR")
    }
    pub fn stop(self) -> Vec<u8> {
        self.op(b".").0
    }
}

fn storages(key: &str) -> Result<usize, String> {
    match key {
        "0" => Ok(48),
        "small" => Ok(4),
        other => Err(format!("no storage {other}")),
    }
}

fn run(p: &[u8]) -> Result<Unpickled, String> {
    unpickle(p, &storages)
}

fn dict_of(u: &Unpickled) -> Vec<(String, Value)> {
    let Value::Dict(id) = u.root else {
        panic!("root is {:?}", u.root)
    };
    u.objects
        .dict(id)
        .unwrap()
        .entries
        .iter()
        .map(|(k, v)| match k {
            Value::Str(s) => (s.to_string(), v.clone()),
            other => (format!("{other:?}"), v.clone()),
        })
        .collect()
}

#[test]
fn scalars() {
    let mut p = P::new()
        .op(b"}(")
        .s("none")
        .op(b"N")
        .s("t")
        .op(b"\x88")
        .s("f")
        .op(b"\x89");
    p = p
        .s("i4")
        .op(b"J\xfe\xff\xff\xff")
        .s("i1")
        .int(7)
        .s("i2")
        .op(b"M\x2c\x01");
    p = p
        .s("l1")
        .op(b"\x8a\x02\x00\xff")
        .s("big")
        .op(b"\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01");
    p = p
        .s("fl")
        .op(b"G\x3f\xf8\x00\x00\x00\x00\x00\x00")
        .s("b")
        .op(b"C\x02xy");
    p = p
        .s("s1")
        .op(b"\x8c\x03abc")
        .s("s8")
        .op(b"\x8d\x01\x00\x00\x00\x00\x00\x00\x00z");
    let u = run(&p.op(b"u").stop()).unwrap();
    let d = dict_of(&u);
    let get = |k: &str| d.iter().find(|(n, _)| n == k).unwrap().1.clone();
    assert!(matches!(get("none"), Value::None));
    assert!(matches!(get("t"), Value::Bool(true)));
    assert!(matches!(get("f"), Value::Bool(false)));
    assert!(matches!(get("i4"), Value::Int(-2)));
    assert!(matches!(get("i1"), Value::Int(7)));
    assert!(matches!(get("i2"), Value::Int(300)));
    assert!(matches!(get("l1"), Value::Int(-256)));
    assert!(matches!(get("big"), Value::BigInt));
    assert!(matches!(get("fl"), Value::Float(f) if f == 1.5));
    assert!(matches!(get("b"), Value::Bytes(b) if &*b == b"xy"));
    assert!(matches!(get("s1"), Value::Str(s) if &*s == "abc"));
    assert!(matches!(get("s8"), Value::Str(s) if &*s == "z"));
}

#[test]
fn containers_and_memo_share_mutations() {
    // d = {}; memo[0] = d; l = []; memo[5] = l; l += [1, 2, 3]; d["a"] = l; pop d;
    // root = (memo[0], (1,), (1, 2) memoized and fetched again)
    let p = P::new()
        .op(b"}q\x00")
        .s("a")
        .op(b"]r\x05\x00\x00\x00")
        .int(1)
        .op(b"a(")
        .int(2)
        .int(3)
        .op(b"es0h\x00")
        .int(1)
        .op(b"\x85")
        .int(1)
        .int(2)
        .op(b"\x86\x94j\x02\x00\x00\x000\x87")
        .stop();
    let u = run(&p).unwrap();
    let Value::Tuple(t) = &u.root else {
        panic!("{:?}", u.root)
    };
    assert_eq!(t.items.len(), 3);
    let Value::Dict(id) = t.items[0] else {
        panic!()
    };
    let d = u.objects.dict(id).unwrap();
    let Some(Value::List(l)) = d.get_str("a") else {
        panic!()
    };
    assert_eq!(u.objects.list(*l).unwrap().len(), 3);
    let e = run(&P::new().int(1).int(2).op(b"\x93").stop()).unwrap_err();
    assert!(e.contains("STACK_GLOBAL"), "{e}");
}

#[test]
fn dict_list_tuple_set_opcodes() {
    let p = P::new()
        .op(b"((")
        .s("k")
        .int(1)
        .op(b"d(")
        .int(1)
        .int(2)
        .op(b"l(")
        .int(3)
        .op(b"t\x8f(")
        .int(4)
        .op(b"\x90(")
        .int(5)
        .op(b"\x91)")
        .op(b"(\x8c\x01x\x8c\x01y1")
        .op(b"t")
        .stop();
    let u = run(&p).unwrap();
    let Value::Tuple(t) = &u.root else {
        panic!("{:?}", u.root)
    };
    assert_eq!(t.items.len(), 6);
    assert!(matches!(t.items[0], Value::Dict(_)));
    assert!(matches!(t.items[1], Value::List(_)));
    assert!(matches!(&t.items[2], Value::Tuple(x) if x.items.len() == 1));
    assert!(matches!(t.items[3], Value::List(_)));
    assert!(matches!(&t.items[4], Value::Tuple(x) if x.items.len() == 1));
    assert!(matches!(&t.items[5], Value::Tuple(x) if x.items.is_empty()));
}

#[test]
fn ordered_dict_with_metadata_and_tensors() {
    let p = P::new()
        .global("collections", "OrderedDict")
        .op(b")R(")
        .s("w")
        .tensor("0", 12, 0, &[3, 4], &[4, 1])
        .s("t")
        .tensor("0", 12, 1, &[4, 2], &[1, 4])
        .op(b"u}")
        .s("_metadata")
        .global("collections", "OrderedDict")
        .op(b")Rsb")
        .stop();
    let u = run(&p).unwrap();
    let d = dict_of(&u);
    let Value::Dict(id) = u.root else { panic!() };
    assert!(u.objects.dict(id).unwrap().ordered);
    let names: Vec<_> = d.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["w", "t"]);
    let Value::Tensor(t) = &d[1].1 else { panic!() };
    assert_eq!(
        (t.shape.clone(), t.strides.clone()),
        (vec![4, 2], vec![1, 4])
    );
    assert_eq!(
        (t.storage_offset, t.dtype, t.storage.as_str()),
        (1, Dtype::F32, "0")
    );
    assert!(!t.is_contiguous());
}

#[test]
fn v3_untyped_storages_parameters_and_protocol_4() {
    let p = P(vec![0x80, 4, 0x95, 0, 0, 0, 0, 0, 0, 0, 0])
        .op(b"\x8c\x0ctorch._utils\x8c\x12_rebuild_parameter\x93")
        .op(b"\x8c\x0ctorch._utils\x8c\x12_rebuild_tensor_v3\x93")
        .op(b"((")
        .s("storage")
        .op(b"\x8c\x0dtorch.storage\x8c\x0eUntypedStorage\x93")
        .s("small")
        .s("cpu")
        .int(4)
        .op(b"tQ")
        .int(1)
        .int(2)
        .op(b"\x85")
        .int(1)
        .op(b"\x85\x89}")
        .global("torch", "float8_e5m2")
        .op(b"tR\x88}\x87R")
        .stop();
    let u = run(&p).unwrap();
    let Value::Tensor(t) = &u.root else {
        panic!("{:?}", u.root)
    };
    assert_eq!(
        (t.dtype, t.shape.as_slice(), t.storage_offset),
        (Dtype::F8_E5M2, &[2][..], 1)
    );
}

#[test]
fn bytes_sets_sizes_and_devices_of_protocol_2() {
    let p = P::new()
        .global("_codecs", "encode")
        .s("x\u{e9}")
        .s("latin1")
        .op(b"\x86R")
        .global("__builtin__", "set")
        .op(b"]\x85R")
        .global("torch", "Size")
        .int(2)
        .op(b"\x85\x85R")
        .global("torch", "device")
        .s("cpu")
        .op(b"\x85R")
        .global("torch", "bfloat16")
        .op(b"(tN\x81")
        .op(b"\x87")
        .stop();
    // NEWOBJ on a dtype is refused: data only.
    let e = run(&p).unwrap_err();
    assert!(e.contains("is called") || e.contains("called with"), "{e}");
    let p = P::new()
        .global("_codecs", "encode")
        .s("x\u{e9}")
        .s("latin1")
        .op(b"\x86R")
        .global("torch", "Size")
        .int(2)
        .op(b"\x85\x85R")
        .global("torch", "device")
        .s("cpu")
        .op(b"\x85R\x87")
        .stop();
    let u = run(&p).unwrap();
    let Value::Tuple(t) = &u.root else { panic!() };
    assert!(matches!(&t.items[0], Value::Bytes(b) if &**b == b"x\xe9"));
    assert!(matches!(&t.items[1], Value::Tuple(s) if s.items.len() == 1));
    assert!(matches!(&t.items[2], Value::Str(s) if &**s == "cpu"));
}

#[test]
fn globals_off_the_allow_list_are_refused_by_name() {
    for (module, name) in [
        ("posix", "system"),
        ("os", "system"),
        ("builtins", "eval"),
        ("subprocess", "Popen"),
        ("torch", "load"),
        ("torch.nn.modules.linear", "Linear"),
    ] {
        // The refusal comes at the global: the REDUCE that would call it never runs.
        let p = P::new()
            .global(module, name)
            .s("touch /tmp/x")
            .op(b"\x85R")
            .stop();
        let e = run(&p).unwrap_err();
        assert!(e.contains(&format!("`{module}.{name}`")), "{e}");
        assert!(e.contains("nothing was executed"), "{e}");
        let p = P(vec![0x80, 4])
            .op(&[0x8c, module.len() as u8])
            .op(module.as_bytes())
            .op(&[0x8c, name.len() as u8])
            .op(name.as_bytes())
            .op(b"\x93.");
        assert!(
            run(&p.0)
                .unwrap_err()
                .contains(&format!("`{module}.{name}`"))
        );
    }
    let e = run(&P::new().global("torch", "QInt8Storage").stop()).unwrap_err();
    assert!(e.contains("has no safetensors dtype"), "{e}");
    assert!(matches!(
        run(&P::new().global("torch", "HalfStorage").stop())
            .unwrap()
            .root,
        Value::Global(Global::Storage(Some(Dtype::F16)))
    ));
}

#[test]
fn malformed_tensors_and_storages_are_errors() {
    let cases: Vec<(P, &str)> = vec![
        (
            P::new().tensor("0", 12, 0, &[4, 4], &[4, 1]),
            "reaches element 15",
        ),
        (P::new().tensor("0", 13, 0, &[1], &[1]), "holds 48 bytes"),
        (P::new().tensor("9", 1, 0, &[1], &[1]), "no storage 9"),
        (
            P::new().tensor("0", 12, 0, &[2], &[1, 1]),
            "different lengths",
        ),
        (
            P::new()
                .global("torch._utils", "_rebuild_tensor_v2")
                .op(b"(K\x01tR"),
            "got 1 arguments",
        ),
        (P::new().op(b"(").s("storage").op(b"tQ"), "persistent id"),
        (P::new().op(b"K\x01Q"), "persistent id is a int"),
        (P::new().op(b"K\x01N\x81"), "is called"),
        (P::new().op(b"K\x01Nb"), "BUILD sets state on a int"),
        (P::new().op(b"K\x00K\x01K\x02s"), "not a dict"),
        (P::new().op(b"}(K\x01u"), "odd number"),
        (P::new().op(b"}]K\x01s"), "unhashable"),
        (P::new().op(b"K\x00K\x01a"), "not a list"),
    ];
    for (p, expected) in cases {
        let e = run(&p.stop()).unwrap_err();
        assert!(e.contains(expected), "expected {expected:?} in {e}");
    }
}

#[test]
fn limits_and_truncation() {
    let mut deep = P::new().op(b")");
    for _ in 0..=MAX_DEPTH {
        deep = deep.op(b"\x85");
    }
    assert!(run(&deep.stop()).unwrap_err().contains("nested more than"));
    let marks = P::new().op(&vec![b'('; MAX_MARKS + 1]).stop();
    assert!(run(&marks).unwrap_err().contains("nested MARKs"));
    // A tuple key that would be copied exponentially is refused instead.
    let mut wide = P::new().op(b"}N");
    for _ in 0..40 {
        wide = wide.op(b"q\x00h\x00\x86");
    }
    let e = run(&wide.op(b"Ns").stop()).unwrap_err();
    assert!(e.contains("more than 1024 items"), "{e}");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![0x80, 2], "ends early"),
        (vec![0x80, 6, b'N', b'.'], "protocol 6"),
        (b"\x80\x02X\xff\xff\xff\xff".to_vec(), "ends early"),
        (
            b"\x80\x02\x8d\xff\xff\xff\xff\xff\xff\xff\xff".to_vec(),
            "ends early",
        ),
        (
            b"\x80\x04\x95\xff\xff\xff\x00\x00\x00\x00\x00N.".to_vec(),
            "FRAME",
        ),
        (b"\x80\x02h\x07.".to_vec(), "memo entry 7 was never stored"),
        (b"\x80\x02j\xff\xff\xff\xff.".to_vec(), "never stored"),
        (b"\x80\x02.".to_vec(), "empty"),
        (b"\x80\x020.".to_vec(), "empty"),
        (b"\x80\x02t.".to_vec(), "no MARK"),
        (b"\x80\x02N(\x85.".to_vec(), "TUPLE1 needs 1"),
        (b"\x80\x02I1\n.".to_vec(), "text pickle protocols"),
        (b"\x80\x02\x82\x01.".to_vec(), "extension"),
        (b"\x80\x02\x97.".to_vec(), "out-of-band"),
        (b"\x80\x02\xff.".to_vec(), "unknown pickle opcode 0xff"),
        (b"\x80\x02cos\nsys".to_vec(), "no end of line"),
        (
            b"\x80\x02X\x02\x00\x00\x00\xff\xfe.".to_vec(),
            "not valid UTF-8",
        ),
    ];
    for (p, expected) in cases {
        let e = run(&p).unwrap_err();
        assert!(e.contains(expected), "expected {expected:?} in {e}");
        assert!(e.starts_with("byte ") || e.starts_with("at STOP"), "{e}");
    }
}

#[test]
fn random_opcode_soup_never_panics() {
    let ops: &[&[u8]] = &[
        b"(",
        b")",
        b"}",
        b"]",
        b"N",
        b"K\x01",
        b"K\x03",
        b"q\x00",
        b"h\x00",
        b"\x94",
        b"s",
        b"u",
        b"a",
        b"e",
        b"t",
        b"\x85",
        b"\x86",
        b"\x87",
        b"R",
        b"b",
        b"\x81",
        b"Q",
        b"0",
        b"1",
        b"2",
        b"X\x01\x00\x00\x00a",
        b"ccollections\nOrderedDict\n",
        b"ctorch\nFloatStorage\n",
        b"ctorch._utils\n_rebuild_tensor_v2\n",
        b"X\x07\x00\x00\x00storage",
        b"X\x01\x00\x00\x000",
        b"\x88",
        b"G\x00\x00\x00\x00\x00\x00\x00\x00",
        b"\x8a\x01\xff",
        b"d",
        b"l",
        b"\x90",
    ];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let mut p = vec![0x80, 2];
        for _ in 0..(next() % 40) {
            p.extend_from_slice(ops[(next() % ops.len() as u64) as usize]);
        }
        p.push(b'.');
        let _ = run(&p);
    }
}
