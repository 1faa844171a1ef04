//! The patch-grid error map of one pair: per-patch max|Δ| of the chosen stage as a heat image
//! (one pixel per patch, scaled up without smoothing) over the model input, and alone beside it;
//! the worst patch outlined. A checkbox (CSS only) hides the heat to show the input.

use super::svg::{self, LogScale, esc};
use crate::figures::{InputImage, PatchMap};
use crate::report::words;
use std::fmt::Write;

/// Displayed width of each panel, in CSS pixels.
const PANEL_W: f64 = 336.0;

/// The heat image (RGBA, h × w): transparent where the difference is 0 when `overlay`.
fn heat_pixels(map: &PatchMap, scale: Option<&LogScale>, overlay: bool) -> Vec<u8> {
    map.values
        .iter()
        .flat_map(|&v| {
            let zero = scale.and_then(|s| s.t(v)).is_none();
            let (r, g, b) = match scale.and_then(|s| s.t(v)) {
                Some(t) => svg::color(t),
                None => (0xe8, 0xe8, 0xe8),
            };
            [r, g, b, if overlay && zero { 0 } else { 255 }]
        })
        .collect()
}

/// (row, column, value) of the largest value, first in row-major order on ties.
fn worst(map: &PatchMap) -> Option<(usize, usize, f64)> {
    let (i, v) = map.values.iter().enumerate().fold(
        None,
        |best: Option<(usize, f64)>, (i, &v)| match best {
            Some((_, b)) if b >= v || !v.is_finite() => best,
            _ if v.is_finite() => Some((i, v)),
            _ => best,
        },
    )?;
    Some((i / map.grid.w, i % map.grid.w, v))
}

fn panel(
    map: &PatchMap,
    heat_uri: &str,
    input: Option<&InputImage>,
    pick: Option<(usize, usize, f64)>,
) -> String {
    let (gh, gw) = (map.grid.h as f64, map.grid.w as f64);
    let ph = (PANEL_W * gh / gw).round();
    let mut s = format!(
        r#"<svg class="patchmap" width="{PANEL_W}" height="{ph}" viewBox="0 0 {PANEL_W} {ph}" role="img">"#
    );
    if let Some(img) = input {
        let _ = write!(
            s,
            r#"<image class="input" href="{}" x="0" y="0" width="{PANEL_W}" height="{ph}" preserveAspectRatio="none"/>"#,
            svg::png_data_uri(&img.rgb, img.width, img.height)
        );
    }
    let _ = write!(
        s,
        r#"<image class="heat{}" href="{heat_uri}" x="0" y="0" width="{PANEL_W}" height="{ph}" preserveAspectRatio="none"/>"#,
        if input.is_some() { " over" } else { "" }
    );
    if let Some((r, c, v)) = pick {
        let (cw, ch) = (PANEL_W / gw, ph / gh);
        let _ = write!(
            s,
            r#"<rect class="worst" x="{:.1}" y="{:.1}" width="{cw:.1}" height="{ch:.1}"><title>{}</title></rect>"#,
            c as f64 * cw,
            r as f64 * ch,
            esc(&words::worst_patch(r, c, v))
        );
    }
    s.push_str("</svg>");
    s
}

/// The figure of one pair's patch map; `id` must be unique in the page.
pub fn patch_map(id: &str, map: &PatchMap, input: Option<&InputImage>) -> String {
    let scale = LogScale::tight(map.values.iter().copied());
    let (w, h) = (map.grid.w, map.grid.h);
    let pick = worst(map).filter(|p| p.2 > 0.0);
    let over = svg::png_data_uri(&heat_pixels(map, scale.as_ref(), true), w, h);
    let alone = svg::png_data_uri(&heat_pixels(map, scale.as_ref(), false), w, h);
    let mut s = format!(
        r#"<figure class="patches"><figcaption>{}</figcaption>"#,
        super::page::code_spans(&words::patch_map_caption(map.stage, map.chosen, h, w, pick))
    );
    if let Some(img) = input {
        let _ = write!(
            s,
            r#"<div class="overlay"><input type="checkbox" id="{id}" class="hide-heat"><label for="{id}">{}</label><br>{}</div>"#,
            esc(words::HIDE_HEAT),
            panel(map, &over, Some(img), pick)
        );
    }
    s.push_str(&panel(map, &alone, None, pick));
    match &scale {
        Some(sc) => s.push_str(&svg::color_bar(sc, 260.0, "log10 per-patch max|Δ|")),
        None => {
            let _ = write!(
                s,
                r#"<p class="note">{}</p>"#,
                esc(words::ALL_PATCHES_EQUAL)
            );
        }
    }
    if let Some(img) = input {
        let _ = write!(
            s,
            r#"<p class="note">{}</p>"#,
            super::page::code_spans(&words::input_scaling(img))
        );
    }
    s.push_str("</figure>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::figures::{PatchGrid, StageChoice};
    use crate::model::Stage;

    #[test]
    fn the_worst_patch_is_found_by_row_and_column() {
        let map = PatchMap {
            stage: Stage::NORM,
            chosen: StageChoice::Worst,
            grid: PatchGrid { h: 2, w: 3 },
            values: vec![0.0, 1e-6, 0.0, 0.0, 5e-3, 5e-3],
        };
        assert_eq!(worst(&map), Some((1, 1, 5e-3)));
        let px = heat_pixels(
            &map,
            LogScale::covering(map.values.iter().copied()).as_ref(),
            true,
        );
        assert_eq!(px.len(), 6 * 4);
        assert_eq!(
            px[3], 0,
            "a patch with no difference is transparent over the input"
        );
        assert_eq!(px[4 * 4 + 3], 255);
    }
}
