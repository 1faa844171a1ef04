//! The model input every capture consumes: `dinodiff prep` makes it from an image, the capture
//! subcommands read it back from `input.st` (or make it the same way from `--image`).
//!
//! Contract:
//! - the input is one F32 tensor named `input`, shape [1, 3, H, W] (NCHW, RGB), normalized with
//!   ImageNet mean/std; its dump's manifest records the transform, the size, the image's identity
//!   and the sha256 of the tensor bytes (`input_sha256`);
//! - `meta`: Meta's eval transform — resize the short side to `size * 256 / 224` (256 for 224) with
//!   bicubic (Catmull-Rom, antialiased like PIL), the long side to `int(resize * long / short)` as
//!   torchvision does; center crop `size` with torchvision's rounding; /255; (x - mean) / std,
//!   all in f32 in torchvision's order of operations;
//! - `square`: center crop to a square of the short side (offsets `(w - s) / 2`, `(h - s) / 2`,
//!   rounded down), then bicubic resize to `size`; same normalization;
//! - `none`: the image as it is (sides must be multiples of 16), same normalization;
//! - resizing is not bit-exact with PIL: `docs/capture-input.md` gives the measured distance.

use crate::dump::{Dump, DumpWriter, FileIdentity, Manifest, SourceKind, TensorRecord};
use crate::model::INPUT_NAME;
use anyhow::{Context, Result, bail, ensure};
use fast_image_resize as fr;
use safetensors::Dtype;
use serde_json::json;
use std::path::{Path, PathBuf};

pub const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const STD: [f32; 3] = [0.229, 0.224, 0.225];

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transform {
    Meta,
    Square,
    None,
}

impl Transform {
    pub fn name(&self) -> &'static str {
        match self {
            Transform::Meta => "meta",
            Transform::Square => "square",
            Transform::None => "none",
        }
    }
}

/// A model input and where it came from.
#[derive(Debug, Clone)]
pub struct ModelInput {
    /// [1, 3, H, W]
    pub shape: [usize; 4],
    pub data: Vec<f32>,
    /// Goes to the manifest's `input` field.
    pub provenance: serde_json::Value,
    pub sha256: String,
}

impl ModelInput {
    pub fn bytes(&self) -> Vec<u8> {
        self.data.iter().flat_map(|v| v.to_le_bytes()).collect()
    }
}

/// Where a capture gets its input: a prepared `input.st` or an image to prepare.
#[derive(Debug, Clone)]
pub enum InputSource {
    Dump(PathBuf),
    Image {
        path: PathBuf,
        transform: Transform,
        size: usize,
    },
}

impl InputSource {
    pub fn load(&self) -> Result<ModelInput> {
        match self {
            InputSource::Dump(p) => read_input_dump(p),
            InputSource::Image {
                path,
                transform,
                size,
            } => prepare(path, *transform, *size),
        }
    }
}

/// Decodes and transforms an image into a model input.
pub fn prepare(image: &Path, transform: Transform, size: usize) -> Result<ModelInput> {
    ensure!(
        size > 0 && size.is_multiple_of(16),
        "--size {size} is not a positive multiple of the patch size 16"
    );
    // Read once: the recorded hash is that of the bytes decoded.
    let bytes = std::fs::read(image).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the image {}: {}",
            image.display(),
            crate::dump::reader::io_problem(&e)
        )
    })?;
    let identity = FileIdentity::of_bytes(image, &bytes);
    let decoded = image::ImageReader::new(std::io::Cursor::new(&bytes))
        .with_guessed_format()
        .with_context(|| format!("cannot read the image {}", image.display()))?
        .decode()
        .with_context(|| {
            format!(
                "cannot decode the image {} (dinodiff reads JPEG and PNG)",
                image.display()
            )
        })?
        .to_rgb8();
    let (w, h) = (decoded.width() as usize, decoded.height() as usize);
    ensure!(w > 0 && h > 0, "the image {} is empty", image.display());
    let src =
        fr::images::Image::from_vec_u8(w as u32, h as u32, decoded.into_raw(), fr::PixelType::U8x3)
            .context("image buffer")?;
    let mut details = serde_json::Map::new();
    let (rgb, out_w, out_h) = match transform {
        Transform::None => {
            if !w.is_multiple_of(16) || !h.is_multiple_of(16) {
                bail!(
                    "--transform none keeps the {w}x{h} pixels of {}, but ViT patches need sides \
                     that are multiples of 16; use --transform meta or square",
                    image.display()
                );
            }
            (src.into_vec(), w, h)
        }
        Transform::Meta => {
            let resize = size * 256 / 224;
            let (rw, rh) = if w <= h {
                (resize, (resize as f64 * h as f64 / w as f64) as usize)
            } else {
                ((resize as f64 * w as f64 / h as f64) as usize, resize)
            };
            let resized = resize_rgb(&src, (0, 0, w, h), rw, rh)?;
            let top = round_half_even((rh - size) as f64 / 2.0);
            let left = round_half_even((rw - size) as f64 / 2.0);
            details.insert("resize".into(), json!([rw, rh]));
            details.insert("crop_origin".into(), json!([left, top]));
            (crop_rgb(&resized, rw, left, top, size, size), size, size)
        }
        Transform::Square => {
            let s = w.min(h);
            let (left, top) = ((w - s) / 2, (h - s) / 2);
            details.insert("square_crop".into(), json!([left, top, s]));
            (resize_rgb(&src, (left, top, s, s), size, size)?, size, size)
        }
    };
    let data = normalize(&rgb, out_w, out_h);
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut provenance = json!({
        "transform": transform.name(),
        "size": size,
        "image": identity,
        "image_size": [w, h],
        "mean": MEAN,
        "std": STD,
        "resampling": "bicubic (Catmull-Rom, antialiased), fast_image_resize",
    });
    provenance.as_object_mut().expect("object").extend(details);
    Ok(ModelInput {
        shape: [1, 3, out_h, out_w],
        data,
        provenance,
        sha256: crate::dump::manifest::sha256_hex(&bytes),
    })
}

fn resize_rgb(
    src: &fr::images::Image<'_>,
    (left, top, cw, ch): (usize, usize, usize, usize),
    w: usize,
    h: usize,
) -> Result<Vec<u8>> {
    let mut dst = fr::images::Image::new(w as u32, h as u32, fr::PixelType::U8x3);
    let options = fr::ResizeOptions::new()
        .resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::CatmullRom))
        .crop(left as f64, top as f64, cw as f64, ch as f64);
    fr::Resizer::new()
        .resize(src, &mut dst, &options)
        .context("resizing the image")?;
    Ok(dst.into_vec())
}

fn crop_rgb(rgb: &[u8], w: usize, left: usize, top: usize, cw: usize, ch: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(cw * ch * 3);
    for y in top..top + ch {
        let row = (y * w + left) * 3;
        out.extend_from_slice(&rgb[row..row + cw * 3]);
    }
    out
}

/// Python's `round` (half to even), as torchvision's center crop uses.
fn round_half_even(x: f64) -> usize {
    let r = x.round();
    let r = if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    };
    r as usize
}

/// HWC u8 -> CHW f32, `(v / 255 - mean) / std` in f32 like torchvision's ToTensor + Normalize.
fn normalize(rgb: &[u8], w: usize, h: usize) -> Vec<f32> {
    let mut out = vec![0f32; 3 * w * h];
    for (p, px) in rgb.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * w * h + p] = (f32::from(px[c]) / 255.0 - MEAN[c]) / STD[c];
        }
    }
    out
}

/// Writes a prepared input as a dump of its own (`dinodiff prep`).
pub fn write_input_dump(input: &ModelInput, out: &Path) -> Result<crate::dump::WrittenDump> {
    let mut manifest = Manifest::for_this_process(SourceKind::Input);
    manifest.input = Some(input.provenance.clone());
    manifest.dtype = Some("f32".into());
    let mut w = DumpWriter::create(out, manifest)?;
    w.write(
        INPUT_NAME,
        TensorRecord::of_stage(crate::model::Stage::INPUT, INPUT_NAME),
        Dtype::F32,
        &input.shape,
        &input.bytes(),
    )?;
    w.finish()
}

/// Reads the `input` tensor of a dump (normally one made by `prep`).
pub fn read_input_dump(path: &Path) -> Result<ModelInput> {
    let dump = Dump::open(path)?;
    let Some(t) = dump.get(INPUT_NAME) else {
        bail!(
            "{}: no tensor named {INPUT_NAME:?}; make one with `dinodiff prep --image IMG -o {}`",
            path.display(),
            path.display()
        );
    };
    ensure!(
        t.dtype == Dtype::F32 && t.shape.len() == 4 && t.shape[0] == 1 && t.shape[1] == 3,
        "{}: tensor {INPUT_NAME:?} is {} {:?}; a model input is F32 [1, 3, H, W]",
        path.display(),
        t.dtype,
        t.shape
    );
    let bytes = dump.data(t);
    let data = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    let provenance = dump.manifest().input.clone().unwrap_or_else(|| json!({}));
    Ok(ModelInput {
        shape: [1, 3, t.shape[2], t.shape[3]],
        data,
        provenance: json!({ "from": path.display().to_string(), "prep": provenance }),
        sha256: crate::dump::manifest::sha256_hex(bytes),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_rounding() {
        assert_eq!(round_half_even(16.0), 16);
        assert_eq!(round_half_even(0.5), 0);
        assert_eq!(round_half_even(1.5), 2);
        assert_eq!(round_half_even(2.5), 2);
        assert_eq!(round_half_even(2.6), 3);
    }

    #[test]
    fn normalization_is_channel_major() {
        let out = normalize(&[255, 0, 0, 0, 255, 0], 2, 1);
        assert_eq!(out.len(), 6);
        assert_eq!(out[0], (1.0 - 0.485) / 0.229);
        assert_eq!(out[1], (0.0 - 0.485) / 0.229);
        assert_eq!(out[3], (1.0 - 0.456) / 0.224);
    }
}
