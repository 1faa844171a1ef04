//! The reader end to end: a real `torch.save` file (tests/fixtures/checkpoint/tiny.pth, made by
//! make_tiny.py beside it) cut and corrupted at every byte, and hand-made archives.

use super::pickle::tests::P;
use super::zip::tests::stored_zip;
use super::*;
use std::io::Write;

const TINY: &[u8] = include_bytes!("../../tests/fixtures/checkpoint/tiny.pth");

fn any(_: &Shapes) -> bool {
    false
}

fn read_bytes(b: &[u8]) -> Result<Layout, String> {
    read(
        b,
        Path::new("x.pth"),
        &Selection {
            key: None,
            accept: &any,
        },
    )
}

fn file_with(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(bytes).unwrap();
    f
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn the_fixture_reads_as_torch_wrote_it() {
    let f = file_with(TINY);
    let sd = open(
        f.path(),
        &Selection {
            key: None,
            accept: &any,
        },
    )
    .unwrap();
    let names: Vec<_> = sd.tensors().map(|t| t.name).collect();
    assert_eq!(
        names,
        ["0.weight", "0.bias", "1.weight", "1.bias", "t", "row", "bf"]
    );
    let p = &sd.provenance;
    assert_eq!(
        (p.container.as_str(), p.choice, p.accepted),
        ("OrderedDict", Choice::Only, false)
    );
    assert_eq!(
        (p.byteorder.as_str(), p.format_version.as_deref()),
        ("little", Some("1"))
    );
    assert_eq!(p.dtypes.get("F32"), Some(&6));
    let w = sd.get("0.weight").unwrap();
    let w = f32s(w.bytes().unwrap());
    let t = sd.get("t").unwrap();
    assert_eq!(t.info.storage, sd.get("0.weight").unwrap().info.storage);
    assert!(t.bytes().is_none());
    assert_eq!(t.shape(), [3, 2]);
    let transposed = f32s(&t.contiguous_le_bytes());
    assert_eq!(transposed, [w[0], w[3], w[1], w[4], w[2], w[5]]);
    let row = sd.get("row").unwrap();
    assert_eq!(row.info.storage_offset, 3);
    assert_eq!(f32s(row.bytes().unwrap()), w[3..]);
    let bf = sd.get("bf").unwrap();
    let expected: Vec<u8> = (0..4)
        .flat_map(|i| half::bf16::from_f32(i as f32).to_le_bytes())
        .collect();
    assert_eq!(
        (bf.dtype(), bf.bytes().unwrap()),
        (Dtype::BF16, &expected[..])
    );
    assert_eq!(listing(&sd, true).tensors.len(), 7);
}

#[test]
fn every_truncation_is_an_error() {
    for n in 0..TINY.len() {
        let e = read_bytes(&TINY[..n]).err();
        assert!(e.is_some_and(|e| !e.is_empty()), "cut at {n} was read");
    }
}

#[test]
fn every_corrupted_byte_is_an_error_or_a_valid_read() {
    for i in 0..TINY.len() {
        for v in [0x00, 0xff, TINY[i] ^ 0x01, TINY[i].wrapping_add(1)] {
            let mut b = TINY.to_vec();
            b[i] = v;
            if let Ok(l) = read_bytes(&b) {
                for (_, t) in &l.chosen.tensors {
                    let range = l.storages[&t.storage].clone();
                    let _ = tensor::contiguous_bytes(t, &b[range], l.big_endian);
                }
            }
        }
    }
}

fn archive(pickle: &[u8], byteorder: &[u8], storage: &[u8]) -> Vec<u8> {
    stored_zip(&[
        ("ck/data.pkl", pickle),
        ("ck/byteorder", byteorder),
        ("ck/data/0", storage),
    ])
}

#[test]
fn big_endian_archives_are_swapped() {
    let pickle = P::new()
        .op(b"}")
        .s("w")
        .tensor("0", 3, 1, &[2], &[1])
        .op(b"s")
        .stop();
    let storage: Vec<u8> = [1.0f32, 2.0, 3.0]
        .iter()
        .flat_map(|x| x.to_be_bytes())
        .collect();
    let b = archive(&pickle, b"big", &storage);
    let l = read_bytes(&b).unwrap();
    assert!(l.big_endian);
    let t = &l.chosen.tensors[0].1;
    let bytes = tensor::contiguous_bytes(t, &b[l.storages["0"].clone()], true);
    assert_eq!(f32s(&bytes), [2.0, 3.0]);
    let e = read_bytes(&archive(&pickle, b"middle", &storage))
        .err()
        .unwrap();
    assert!(e.contains("byteorder entry says \"middle\""), "{e}");
}

#[test]
fn a_malicious_pickle_is_refused_by_name() {
    let pickle = P::new()
        .global("posix", "system")
        .s("touch /tmp/pwned")
        .op(b"\x85R")
        .stop();
    let e = read_bytes(&archive(&pickle, b"little", b"")).err().unwrap();
    assert!(e.starts_with("data.pkl byte 2"), "{e}");
    assert!(e.contains("`posix.system`"), "{e}");
}

#[test]
fn legacy_foreign_and_missing_files_say_what_to_do() {
    let mut legacy = b"\x80\x02".to_vec();
    legacy.extend(LEGACY_MAGIC);
    legacy.extend(b".\x80\x02M\xe9\x03.");
    let f = file_with(&legacy);
    let e = open(
        f.path(),
        &Selection {
            key: None,
            accept: &any,
        },
    )
    .err()
    .unwrap()
    .to_string();
    let shown = f.path().display().to_string();
    assert!(
        e.contains(&format!("torch.load('{shown}', weights_only=True)")),
        "{e}"
    );
    assert!(e.contains(&format!("'{shown}.zip.pth'")), "{e}");
    let mut framed = b"\x80\x04\x95\x0e\x00\x00\x00\x00\x00\x00\x00".to_vec();
    framed.extend(LEGACY_MAGIC);
    assert!(read_bytes(&framed).err().unwrap().contains("legacy format"));
    let e = read_bytes(b"{\"json\": 1}").err().unwrap();
    assert!(e.contains("not a torch.save checkpoint"), "{e}");
    let e = read_bytes(b"PK\x03\x04 and then nothing").err().unwrap();
    assert!(e.contains("truncated"), "{e}");
    let pickle = P::new()
        .op(b"}")
        .s("w")
        .tensor("1", 3, 0, &[1], &[1])
        .op(b"s")
        .stop();
    let e = read_bytes(&archive(&pickle, b"little", b"")).err().unwrap();
    assert!(
        e.contains("refers to storage `data/1`, which the archive lacks"),
        "{e}"
    );
    let sel = Selection {
        key: None,
        accept: &any,
    };
    for (path, expected) in [
        (
            Path::new("/nonexistent/x.pth"),
            "cannot read the checkpoint /nonexistent/x.pth",
        ),
        (Path::new("/tmp"), "is a directory"),
    ] {
        let e = open(path, &sel).err().unwrap().to_string();
        assert!(e.contains(expected), "{e}");
    }
    let f = file_with(b"");
    let e = open(f.path(), &sel).err().unwrap().to_string();
    assert!(e.contains("empty"), "{e}");
}
