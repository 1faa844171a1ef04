//! Drawing helpers shared by the HTML report's pictures: escaping, the colour map, log scales,
//! axes, and images embedded as `data:` URIs (PNG, base64) so that the page needs no network.

use std::fmt::Write;

/// Escapes text for HTML/SVG content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Viridis, sampled at nine evenly spaced points (dark purple = small, yellow = large).
const VIRIDIS: [(u8, u8, u8); 9] = [
    (0x44, 0x01, 0x54),
    (0x47, 0x2d, 0x7b),
    (0x3b, 0x52, 0x8b),
    (0x2c, 0x72, 0x8e),
    (0x21, 0x91, 0x8c),
    (0x28, 0xae, 0x80),
    (0x5e, 0xc9, 0x62),
    (0xad, 0xdc, 0x30),
    (0xfd, 0xe7, 0x25),
];

/// The colour of `t` in 0..=1 (clamped), linearly interpolated between the map's samples.
pub fn color(t: f64) -> (u8, u8, u8) {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let x = t * (VIRIDIS.len() - 1) as f64;
    let i = (x.floor() as usize).min(VIRIDIS.len() - 2);
    let f = x - i as f64;
    let mix = |p: u8, q: u8| (f64::from(p) + (f64::from(q) - f64::from(p)) * f).round() as u8;
    let (p, q) = (VIRIDIS[i], VIRIDIS[i + 1]);
    (mix(p.0, q.0), mix(p.1, q.1), mix(p.2, q.2))
}

pub fn hex((r, g, b): (u8, u8, u8)) -> String {
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// The fill of a value that is exactly 0 (bit-identical), and of a missing number.
pub const ZERO_FILL: &str = "#e8e8e8";
pub const MISSING_FILL: &str = "#9a9a9a";

/// A log10 scale over positive values: `lo` and `hi` are decades (log10 of the values).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogScale {
    pub lo: f64,
    pub hi: f64,
}

/// log10 of the smallest and the largest positive finite value; `None` when there is none.
fn log10_range(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values
        .into_iter()
        .filter(|v| v.is_finite() && *v > 0.0)
        .map(f64::log10)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    lo.is_finite().then_some((lo, hi))
}

impl LogScale {
    /// The whole decades around the positive finite values (at least one decade); `None` when
    /// there is no positive value.
    pub fn covering(values: impl IntoIterator<Item = f64>) -> Option<LogScale> {
        let (lo, hi) = log10_range(values)?;
        let (lo, hi) = (lo.floor(), hi.ceil());
        Some(LogScale {
            lo,
            hi: if hi > lo { hi } else { lo + 1.0 },
        })
    }

    /// From the smallest to the largest positive finite value exactly (a patch map's spread is
    /// often well inside one decade); a tenth of a decade when they are all equal.
    pub fn tight(values: impl IntoIterator<Item = f64>) -> Option<LogScale> {
        let (lo, hi) = log10_range(values)?;
        Some(LogScale {
            lo: if hi - lo < 0.1 { hi - 0.1 } else { lo },
            hi,
        })
    }

    /// Where `v` falls, 0..=1 (clamped); `None` for 0, negatives and non-finite values.
    pub fn t(&self, v: f64) -> Option<f64> {
        (v.is_finite() && v > 0.0)
            .then(|| ((v.log10() - self.lo) / (self.hi - self.lo)).clamp(0.0, 1.0))
    }

    /// The fill of a value: the colour map, or [`ZERO_FILL`] for 0, [`MISSING_FILL`] otherwise.
    pub fn fill(&self, v: Option<f64>) -> String {
        match v {
            Some(0.0) => ZERO_FILL.into(),
            Some(v) => self.t(v).map_or(MISSING_FILL.into(), |t| hex(color(t))),
            None => MISSING_FILL.into(),
        }
    }

    /// The decades from `lo` to `hi`, as exponents.
    pub fn decades(&self) -> impl Iterator<Item = i32> {
        (self.lo.ceil() as i32)..=(self.hi.floor() as i32)
    }
}

/// `10^e` as a tick label: `1e-4`, `1`, `10`.
pub fn decade_label(e: i32) -> String {
    match e {
        0 => "1".into(),
        1 => "10".into(),
        e => format!("1e{e}"),
    }
}

/// Room left and right of a colour bar for its end labels.
const BAR_MARGIN: f64 = 26.0;

/// A horizontal colour bar for `scale`, `width` × 10 px, with a tick per decade (thinned to about
/// eight), inside an `<svg>` of its own.
pub fn color_bar(scale: &LogScale, width: f64, title: &str) -> String {
    let steps = 48;
    let mut s = format!(
        r#"<svg class="bar" width="{w}" height="34" viewBox="0 0 {w} 34" role="img"><title>{t}</title>"#,
        w = width + 2.0 * BAR_MARGIN,
        t = esc(title)
    );
    for k in 0..steps {
        let x = BAR_MARGIN + width * k as f64 / steps as f64;
        let _ = write!(
            s,
            r#"<rect x="{x:.1}" y="2" width="{:.1}" height="10" fill="{}"/>"#,
            width / steps as f64 + 0.5,
            hex(color((k as f64 + 0.5) / steps as f64))
        );
    }
    let decades: Vec<i32> = scale.decades().collect();
    let every = decades.len().div_ceil(8).max(1);
    let mut ticks: Vec<(f64, String)> = decades
        .iter()
        .enumerate()
        .filter(|(i, _)| i % every == 0 || i + 1 == decades.len())
        .map(|(_, &e)| (f64::from(e), decade_label(e)))
        .collect();
    // The ends, when they are not whole decades (a tight scale).
    for end in [scale.lo, scale.hi] {
        if end.fract() != 0.0 && ticks.iter().all(|(at, _)| (at - end).abs() > 0.15) {
            ticks.push((end, crate::report::words::sci(10f64.powf(end), 1)));
        }
    }
    for (at, label) in ticks {
        let x = BAR_MARGIN + width * (at - scale.lo) / (scale.hi - scale.lo);
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="12" y2="16" stroke="#333"/><text x="{x:.1}" y="27" text-anchor="middle" class="tick">{label}</text>"##
        );
    }
    s.push_str("</svg>");
    s
}

/// RFC 4648 base64 (standard alphabet, padded).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An 8-bit RGB (3 bytes a pixel) or RGBA (4) image as a `data:image/png;base64,…` URI.
pub fn png_data_uri(pixels: &[u8], width: usize, height: usize) -> String {
    use image::ImageEncoder;
    let color = if pixels.len() == width * height * 4 {
        image::ExtendedColorType::Rgba8
    } else {
        image::ExtendedColorType::Rgb8
    };
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(pixels, width as u32, height as u32, color)
        .expect("a PNG of an in-memory buffer of the right size encodes");
    format!("data:image/png;base64,{}", base64(&png))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vectors of RFC 4648, section 10.
    #[test]
    fn base64_matches_rfc_4648() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), coded);
        }
        assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn scales_cover_whole_decades() {
        let s = LogScale::covering([0.0, 3e-6, 2e-3, f64::NAN]).unwrap();
        assert_eq!((s.lo, s.hi), (-6.0, -2.0));
        assert_eq!(s.t(1e-6), Some(0.0));
        assert_eq!(s.t(1e-2), Some(1.0));
        assert_eq!(s.t(1e-4), Some(0.5));
        assert_eq!(s.t(0.0), None);
        assert_eq!(
            LogScale::covering([1e-3]).unwrap(),
            LogScale { lo: -3.0, hi: -2.0 }
        );
        assert!(LogScale::covering([0.0]).is_none());
        let t = LogScale::tight([0.0, 3e-2, 1.5e-2]).unwrap();
        assert!((t.lo - 1.5e-2f64.log10()).abs() < 1e-12 && (t.hi - 3e-2f64.log10()).abs() < 1e-12);
        assert_eq!(t.decades().count(), 0);
        assert_eq!(LogScale::tight([5.0]).unwrap().t(5.0), Some(1.0));
        assert_eq!(s.fill(Some(0.0)), ZERO_FILL);
        assert_eq!(s.fill(None), MISSING_FILL);
    }

    #[test]
    fn color_map_ends_and_escaping() {
        assert_eq!(hex(color(0.0)), "#440154");
        assert_eq!(hex(color(1.0)), "#fde725");
        assert_eq!(hex(color(2.0)), "#fde725");
        assert_eq!(
            esc(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
