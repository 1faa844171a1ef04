//! A pickle VM over data: the subset of protocols 2–5 that `torch.save` writes, producing a value
//! tree ([`Value`], with lists and dicts in an [`Objects`] arena).
//!
//! Contract:
//! - globals go through the allow-list ([`torch::resolve`]): any other is refused by name before
//!   anything else happens. Calls (REDUCE, NEWOBJ) only build data ([`torch::call`]);
//! - persistent ids become storages checked against the archive (`bytes_of`);
//! - limits: at most [`MAX_STACK`] values on the stack, [`MAX_MARKS`] open marks, [`MAX_MEMO`]
//!   memo entries and [`MAX_OBJECTS`] containers; tuples nest at most [`MAX_DEPTH`] deep;
//!   every length is checked against the bytes left, so memory stays proportional to the pickle
//!   and nothing recurses without bound;
//! - every malformed input is an `Err("byte N: …")`; the VM never panics. Opcodes of the text
//!   protocols (0, 1), extensions and out-of-band buffers are refused.

pub mod torch;
pub mod value;

#[cfg(test)]
pub(crate) mod tests;

use std::collections::HashMap;
use std::rc::Rc;
pub use value::{Dict, Obj, Objects, Value};

pub const MAX_STACK: usize = 1 << 22;
pub const MAX_MARKS: usize = 1 << 16;
pub const MAX_MEMO: usize = 1 << 22;
pub const MAX_OBJECTS: usize = 1 << 22;
pub const MAX_DEPTH: usize = 100;

/// The result of one unpickling: the root value and the containers it refers to.
#[derive(Debug)]
pub struct Unpickled {
    pub root: Value,
    pub objects: Objects,
}

struct Vm<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    objects: Objects,
    bytes_of: &'a dyn Fn(&str) -> Result<usize, String>,
}

/// Runs the pickle `data` to its STOP. `bytes_of(key)` gives the size of the archive's
/// `data/<key>` storage (an error when there is none).
pub fn unpickle(
    data: &[u8],
    bytes_of: &dyn Fn(&str) -> Result<usize, String>,
) -> Result<Unpickled, String> {
    let mut vm = Vm {
        data,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        objects: Objects::default(),
        bytes_of,
    };
    loop {
        let at = vm.pos;
        let op = vm.take(1).map_err(|e| format!("byte {at}: {e}"))?[0];
        match vm.step(op) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(format!("byte {at} (opcode 0x{op:02x}): {e}")),
        }
    }
    let root = vm.pop().map_err(|e| format!("at STOP: {e}"))?;
    Ok(Unpickled {
        root,
        objects: vm.objects,
    })
}

fn le<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[..N]);
    a
}

impl<'a> Vm<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let Some(end) = end else {
            return Err(format!(
                "the pickle ends early: {n} more bytes needed, {} left (truncated file?)",
                self.data.len() - self.pos
            ));
        };
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn take_len(&mut self, width: usize) -> Result<usize, String> {
        let b = self.take(width)?;
        let n = match width {
            1 => u64::from(b[0]),
            4 => u64::from(u32::from_le_bytes(le(b))),
            _ => u64::from_le_bytes(le(b)),
        };
        usize::try_from(n).map_err(|_| format!("a length of {n} bytes"))
    }

    fn line(&mut self) -> Result<&'a str, String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&c| c == b'\n')
            .ok_or("a GLOBAL name has no end of line (truncated file?)")?;
        let s = std::str::from_utf8(&rest[..n]).map_err(|_| "a GLOBAL name is not UTF-8")?;
        self.pos += n + 1;
        Ok(s)
    }

    fn push(&mut self, v: Value) -> Result<(), String> {
        if self.stack.len() >= MAX_STACK {
            return Err(format!("more than {MAX_STACK} values on the pickle stack"));
        }
        if v.depth() > MAX_DEPTH {
            return Err(format!("tuples nested more than {MAX_DEPTH} deep"));
        }
        self.stack.push(v);
        Ok(())
    }

    fn pop(&mut self) -> Result<Value, String> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err("the pickle stack is empty".into());
        }
        self.stack
            .pop()
            .ok_or_else(|| "the pickle stack is empty".into())
    }

    fn top(&mut self) -> Result<&mut Value, String> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err("the pickle stack is empty".into());
        }
        self.stack
            .last_mut()
            .ok_or_else(|| "the pickle stack is empty".into())
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let mark = self.marks.pop().ok_or("no MARK before this opcode")?;
        Ok(self.stack.split_off(mark))
    }

    fn new_obj(&mut self, o: Obj) -> Result<usize, String> {
        if self.objects.0.len() >= MAX_OBJECTS {
            return Err(format!("more than {MAX_OBJECTS} lists and dicts"));
        }
        self.objects.0.push(o);
        Ok(self.objects.0.len() - 1)
    }

    fn memo_put(&mut self, index: u32) -> Result<(), String> {
        let v = self.top()?.clone();
        if self.memo.len() >= MAX_MEMO && !self.memo.contains_key(&index) {
            return Err(format!("more than {MAX_MEMO} memo entries"));
        }
        self.memo.insert(index, v);
        Ok(())
    }

    fn memo_get(&mut self, index: u32) -> Result<(), String> {
        let v = self
            .memo
            .get(&index)
            .ok_or_else(|| format!("memo entry {index} was never stored"))?
            .clone();
        self.push(v)
    }

    fn str_of(&mut self, width: usize) -> Result<(), String> {
        let n = self.take_len(width)?;
        let b = self.take(n)?;
        let s = std::str::from_utf8(b).map_err(|_| "a string is not valid UTF-8")?;
        self.push(Value::Str(Rc::from(s)))
    }

    fn bytes_of_len(&mut self, width: usize) -> Result<(), String> {
        let n = self.take_len(width)?;
        let b = self.take(n)?;
        self.push(Value::Bytes(Rc::from(b)))
    }

    fn long(&mut self, width: usize) -> Result<(), String> {
        let n = self.take_len(width)?;
        let b = self.take(n)?;
        let v = if n <= 8 {
            let fill = if b.last().is_some_and(|&x| x & 0x80 != 0) {
                0xff
            } else {
                0
            };
            let mut a = [fill; 8];
            a[..n].copy_from_slice(b);
            Value::Int(i64::from_le_bytes(a))
        } else {
            Value::BigInt
        };
        self.push(v)
    }

    fn global(&mut self, module: &str, name: &str) -> Result<(), String> {
        self.push(match torch::resolve(module, name)? {
            torch::Resolved::Global(g) => Value::Global(g),
            torch::Resolved::Dtype(d) => Value::Dtype(d),
        })
    }

    fn stack_global(&mut self) -> Result<(), String> {
        let name = self.pop()?;
        let module = self.pop()?;
        match (&module, &name) {
            (Value::Str(m), Value::Str(n)) => self.global(&m.clone(), &n.clone()),
            _ => Err("STACK_GLOBAL of non-strings".into()),
        }
    }

    fn set_items(&mut self, items: Vec<Value>) -> Result<(), String> {
        if !items.len().is_multiple_of(2) {
            return Err("SETITEMS with an odd number of items".into());
        }
        let Value::Dict(id) = self.top()?.clone() else {
            return Err("SETITEM(S) on something that is not a dict".into());
        };
        let Some(Obj::Dict(d)) = self.objects.0.get_mut(id) else {
            return Err("SETITEM(S) on a dict that does not exist".into());
        };
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            d.insert(k, v)?;
        }
        Ok(())
    }

    fn append_items(&mut self, items: Vec<Value>) -> Result<(), String> {
        let Value::List(id) = self.top()?.clone() else {
            return Err("APPEND(S)/ADDITEMS on something that is not a list or set".into());
        };
        let Some(Obj::List(l)) = self.objects.0.get_mut(id) else {
            return Err("APPEND(S) on a list that does not exist".into());
        };
        l.extend(items);
        Ok(())
    }

    fn tuple_of(&mut self, n: usize) -> Result<(), String> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() < floor + n {
            return Err(format!("TUPLE{n} needs {n} values on the stack"));
        }
        let items = self.stack.split_off(self.stack.len() - n);
        self.push(Value::tuple(items))
    }

    /// Runs one opcode; `Ok(false)` at STOP.
    fn step(&mut self, op: u8) -> Result<bool, String> {
        match op {
            0x80 => {
                let v = self.take(1)?[0];
                if !(2..=5).contains(&v) {
                    return Err(format!("pickle protocol {v}; torch.save writes 2 to 5"));
                }
            }
            0x95 => {
                let n = self.take_len(8)?;
                if n > self.data.len() - self.pos {
                    return Err(format!(
                        "a FRAME of {n} bytes runs past the end (truncated?)"
                    ));
                }
            }
            b'.' => return Ok(false),
            b'(' => {
                if self.marks.len() >= MAX_MARKS {
                    return Err(format!("more than {MAX_MARKS} nested MARKs"));
                }
                self.marks.push(self.stack.len());
            }
            b'0' => drop(self.pop()?),
            b'1' => drop(self.pop_mark()?),
            b'2' => {
                let v = self.top()?.clone();
                self.push(v)?;
            }
            _ => return self.data_op(op).map(|()| true),
        }
        Ok(true)
    }

    fn data_op(&mut self, op: u8) -> Result<(), String> {
        match op {
            b'N' => self.push(Value::None),
            0x88 => self.push(Value::Bool(true)),
            0x89 => self.push(Value::Bool(false)),
            b'J' => {
                let v = i32::from_le_bytes(le(self.take(4)?));
                self.push(Value::Int(v.into()))
            }
            b'K' => {
                let v = self.take(1)?[0];
                self.push(Value::Int(v.into()))
            }
            b'M' => {
                let v = u16::from_le_bytes(le(self.take(2)?));
                self.push(Value::Int(v.into()))
            }
            0x8a => self.long(1),
            0x8b => self.long(4),
            b'G' => {
                let v = f64::from_be_bytes(le(self.take(8)?));
                self.push(Value::Float(v))
            }
            b'X' => self.str_of(4),
            0x8c => self.str_of(1),
            0x8d => self.str_of(8),
            b'B' => self.bytes_of_len(4),
            b'C' => self.bytes_of_len(1),
            0x8e | 0x96 => self.bytes_of_len(8),
            b'}' => {
                let id = self.new_obj(Obj::Dict(Dict::default()))?;
                self.push(Value::Dict(id))
            }
            b']' | 0x8f => {
                let id = self.new_obj(Obj::List(Vec::new()))?;
                self.push(Value::List(id))
            }
            b')' => self.push(Value::tuple(Vec::new())),
            _ => self.container_op(op),
        }
    }

    fn container_op(&mut self, op: u8) -> Result<(), String> {
        match op {
            0x85 => self.tuple_of(1),
            0x86 => self.tuple_of(2),
            0x87 => self.tuple_of(3),
            b't' | 0x91 => {
                let items = self.pop_mark()?;
                self.push(Value::tuple(items))
            }
            b'l' => {
                let items = self.pop_mark()?;
                let id = self.new_obj(Obj::List(items))?;
                self.push(Value::List(id))
            }
            b'd' => {
                let items = self.pop_mark()?;
                let id = self.new_obj(Obj::Dict(Dict::default()))?;
                self.push(Value::Dict(id))?;
                self.set_items(items)
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                self.set_items(vec![k, v])
            }
            b'u' => {
                let items = self.pop_mark()?;
                self.set_items(items)
            }
            b'a' => {
                let v = self.pop()?;
                self.append_items(vec![v])
            }
            b'e' | 0x90 => {
                let items = self.pop_mark()?;
                self.append_items(items)
            }
            _ => self.memo_op(op),
        }
    }

    fn memo_op(&mut self, op: u8) -> Result<(), String> {
        match op {
            b'q' => {
                let i = self.take(1)?[0];
                self.memo_put(i.into())
            }
            b'r' => {
                let i = u32::from_le_bytes(le(self.take(4)?));
                self.memo_put(i)
            }
            0x94 => {
                let i = u32::try_from(self.memo.len()).map_err(|_| "memo overflow")?;
                self.memo_put(i)
            }
            b'h' => {
                let i = self.take(1)?[0];
                self.memo_get(i.into())
            }
            b'j' => {
                let i = u32::from_le_bytes(le(self.take(4)?));
                self.memo_get(i)
            }
            _ => self.object_op(op),
        }
    }

    fn object_op(&mut self, op: u8) -> Result<(), String> {
        match op {
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                self.global(module, name)
            }
            0x93 => self.stack_global(),
            b'R' | 0x81 => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let v = torch::call(&callable, &args, &mut self.objects)?;
                self.push(v)
            }
            0x92 => {
                let kwargs = self.pop()?;
                let args = self.pop()?;
                let cls = self.pop()?;
                let empty = matches!(&kwargs, Value::Dict(id)
                    if self.objects.dict(*id).is_some_and(|d| d.entries.is_empty()));
                if !empty {
                    return Err("NEWOBJ_EX with keyword arguments".into());
                }
                let v = torch::call(&cls, &args, &mut self.objects)?;
                self.push(v)
            }
            b'b' => {
                let _state = self.pop()?;
                torch::build(self.top()?)
            }
            b'Q' => {
                let pid = self.pop()?;
                let v = torch::persistent_load(&pid, self.bytes_of)?;
                self.push(v)
            }
            b'I' | b'L' | b'S' | b'V' | b'F' | b'p' | b'g' | b'P' | b'i' | b'o' | b'T' | b'U' => {
                Err(format!(
                    "opcode {:?} of the text pickle protocols; torch.save writes protocol 2 or \
                     later",
                    op as char
                ))
            }
            0x82..=0x84 => Err("a pickle extension-registry opcode (EXT1/2/4)".into()),
            0x97 | 0x98 => Err("an out-of-band buffer opcode (protocol 5 buffers)".into()),
            _ => Err(format!("unknown pickle opcode 0x{op:02x}")),
        }
    }
}
