//! The leaves of an `.eqx` file, read without JAX: `eqx.tree_serialise_leaves` writes each leaf
//! of the pytree, in flattening order, as one `.npy` record after the other (arrays as they are,
//! Python ints, floats and bools as 0-d arrays), and nothing else.
//!
//! Contract: [`read_leaves`] reads every record's header with `npyz` and skips its data (a
//! scalar's value is kept); it refuses, naming the file, the record and the byte offset, a file
//! that is not a sequence of `.npy` records, a record whose data runs past the end, object
//! arrays, and more than [`MAX_LEAVES`] records. It reads no more than the headers and scalars.

use anyhow::{Context, Result, bail, ensure};
use npyz::{DType, TypeChar};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

/// More records than any model of this kind has (ViT-7B: 40 blocks × 22 + 9).
pub const MAX_LEAVES: usize = 100_000;

/// What one record holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Leaf {
    /// An array of floats: its element size in bytes and shape (a 0-d one is a Python float).
    Float { bytes: usize, shape: Vec<usize> },
    /// An integer array; a 0-d one (a Python int) with its value.
    Int {
        shape: Vec<usize>,
        value: Option<i64>,
    },
    /// A boolean array (a 0-d one is a Python bool).
    Bool { shape: Vec<usize> },
    /// Anything else (complex, strings, structured): its numpy descr.
    Other { descr: String, shape: Vec<usize> },
}

impl Leaf {
    pub fn shape(&self) -> &[usize] {
        match self {
            Leaf::Float { shape, .. }
            | Leaf::Int { shape, .. }
            | Leaf::Bool { shape }
            | Leaf::Other { shape, .. } => shape,
        }
    }
}

impl std::fmt::Display for Leaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Leaf::Float { bytes, shape } if shape.is_empty() => {
                write!(f, "a f{} scalar", bytes * 8)
            }
            Leaf::Float { bytes, shape } => write!(f, "f{} {shape:?}", bytes * 8),
            Leaf::Int { value: Some(v), .. } => write!(f, "the integer {v}"),
            Leaf::Int { shape, .. } => write!(f, "an integer array {shape:?}"),
            Leaf::Bool { shape } if shape.is_empty() => write!(f, "a bool"),
            Leaf::Bool { shape } => write!(f, "a bool array {shape:?}"),
            Leaf::Other { descr, shape } => write!(f, "{descr} {shape:?}"),
        }
    }
}

/// Every leaf of the `.eqx` file at `path`, in order.
pub fn read_leaves(path: &Path) -> Result<Vec<Leaf>> {
    let file = std::fs::File::open(path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the model {}: {}",
            path.display(),
            crate::dump::reader::io_problem(&e)
        )
    })?;
    let len = file
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    let mut reader = BufReader::new(file);
    let mut leaves = Vec::new();
    let mut offset = 0u64;
    while offset < len {
        ensure!(
            leaves.len() < MAX_LEAVES,
            "{}: more than {MAX_LEAVES} records; not an Equinox DINOv3",
            path.display()
        );
        let (leaf, end) = read_record(&mut reader, len).map_err(|e| {
            anyhow::anyhow!(
                "{}: record {} (at byte {offset}) {e}: it is not what eqx.tree_serialise_leaves \
                 writes (a sequence of .npy records), or it is cut short; pass the model file \
                 that eqx.tree_serialise_leaves wrote",
                path.display(),
                leaves.len()
            )
        })?;
        leaves.push(leaf);
        offset = end;
        reader
            .seek(SeekFrom::Start(offset))
            .with_context(|| format!("reading {}", path.display()))?;
    }
    ensure!(!leaves.is_empty(), "{} is empty", path.display());
    Ok(leaves)
}

/// One record at the reader's position: the leaf and the offset where the next one starts.
fn read_record<R: Read + Seek>(reader: &mut R, len: u64) -> Result<(Leaf, u64)> {
    let header = npyz::NpyHeader::from_reader(&mut *reader)
        .map_err(|e| anyhow::anyhow!("is no .npy: {e}"))?;
    let data_start = reader.stream_position()?;
    ensure!(
        !header.uses_pickled_array(),
        "is an object array (pickled Python objects)"
    );
    let DType::Plain(ts) = header.dtype() else {
        bail!("has a structured dtype ({})", header.dtype().descr());
    };
    let shape: Vec<usize> = header.shape().iter().map(|&d| d as usize).collect();
    let size = ts.size_field();
    let data = header
        .shape()
        .iter()
        .try_fold(size, |n, &d| n.checked_mul(d))
        .filter(|&b| data_start.checked_add(b).is_some_and(|end| end <= len));
    let Some(data) = data else {
        bail!(
            "claims shape {:?} of {size}-byte elements, more than the file holds after it",
            header.shape()
        );
    };
    let leaf = match (ts.type_char(), size) {
        (TypeChar::Float, 2 | 4 | 8) => Leaf::Float {
            bytes: size as usize,
            shape,
        },
        (TypeChar::Int | TypeChar::Uint, 1 | 2 | 4 | 8) => {
            let value = if shape.is_empty() {
                let mut raw = vec![0u8; size as usize];
                reader.read_exact(&mut raw)?;
                scalar_int(&raw, ts.type_char() == TypeChar::Int, ts.endianness())
            } else {
                None
            };
            Leaf::Int { shape, value }
        }
        (TypeChar::Bool, 1) => Leaf::Bool { shape },
        _ => Leaf::Other {
            descr: ts.to_string(),
            shape,
        },
    };
    Ok((leaf, data_start + data))
}

fn scalar_int(raw: &[u8], signed: bool, endianness: npyz::Endianness) -> Option<i64> {
    let mut bytes = raw.to_vec();
    if endianness == npyz::Endianness::Big {
        bytes.reverse();
    }
    let negative = signed && bytes.last().is_some_and(|b| b & 0x80 != 0);
    let mut wide = [if negative { 0xff } else { 0 }; 16];
    wide[..bytes.len()].copy_from_slice(&bytes);
    i64::try_from(i128::from_le_bytes(wide)).ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A `.npy` record of `descr` and `shape` (version 1.0 header) with `data`.
    pub(crate) fn npy(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
        let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
        let shape = match dims.len() {
            1 => format!("({},)", dims[0]),
            _ => format!("({})", dims.join(", ")),
        };
        let mut text =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + text.len() + 1) % 64 != 0 {
            text.push(' ');
        }
        text.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((text.len() as u16).to_le_bytes());
        out.extend(text.as_bytes());
        out.extend(data);
        out
    }

    fn read(bytes: &[u8]) -> Result<Vec<Leaf>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.eqx");
        std::fs::write(&path, bytes).unwrap();
        read_leaves(&path)
    }

    #[test]
    fn records_are_read_in_order_with_scalar_values() {
        let mut bytes = npy("<f4", &[2, 3], &[0; 24]);
        bytes.extend(npy("<i8", &[], &196i64.to_le_bytes()));
        bytes.extend(npy("<f8", &[], &0f64.to_le_bytes()));
        bytes.extend(npy("|b1", &[], &[0]));
        bytes.extend(npy(">i4", &[], &(-3i32).to_be_bytes()));
        bytes.extend(npy("<c8", &[1], &[0; 8]));
        let leaves = read(&bytes).unwrap();
        assert_eq!(
            leaves,
            [
                Leaf::Float {
                    bytes: 4,
                    shape: vec![2, 3]
                },
                Leaf::Int {
                    shape: vec![],
                    value: Some(196)
                },
                Leaf::Float {
                    bytes: 8,
                    shape: vec![]
                },
                Leaf::Bool { shape: vec![] },
                Leaf::Int {
                    shape: vec![],
                    value: Some(-3)
                },
                Leaf::Other {
                    descr: "<c8".into(),
                    shape: vec![1]
                },
            ]
        );
        assert_eq!(leaves[0].to_string(), "f32 [2, 3]");
        assert_eq!(leaves[1].to_string(), "the integer 196");
    }

    #[test]
    fn damaged_files_are_refused_by_record_and_offset() {
        let mut bytes = npy("<f4", &[4], &[0; 16]);
        let first = bytes.len();
        bytes.extend(npy("<f4", &[1000], &[0; 16]));
        let e = read(&bytes).unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "m.eqx: record 1 (at byte {first}) claims shape [1000]"
            )),
            "{e}"
        );
        assert!(
            e.ends_with(
                "(a sequence of .npy records), or it is cut short; pass the model file that \
                 eqx.tree_serialise_leaves wrote"
            ),
            "{e}"
        );

        let mut bytes = npy("<f4", &[4], &[0; 16]);
        bytes.extend(b"PK\x03\x04 not npy");
        let e = read(&bytes).unwrap_err().to_string();
        assert!(e.contains("record 1 (at byte"), "{e}");
        assert!(e.contains("is no .npy"), "{e}");

        let e = read(&npy("|O", &[1], &[0; 8])).unwrap_err().to_string();
        assert!(e.contains("record 0 (at byte 0) is an object array"), "{e}");
        assert!(read(b"").unwrap_err().to_string().ends_with("is empty"));
    }
}
