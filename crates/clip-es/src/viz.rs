//! Pictures for people: coloured overlays of label masks (with outlines and a legend), CAM heat
//! maps, and per-class IoU bar charts. Not part of the reference pipeline (its masks are 8-bit
//! label PNGs whose values 0..20 look black); docs/segment.md describes the pictures.
//!
//! The canvas and its bitmap text (the 8x8 `font8x8` font) are the pictures' shared ones,
//! `clip_es_data::canvas`, as are the VOC colours (`clip_es_data::labels`); the pictures
//! themselves are drawn here.

use clip_es_image::Rgb8Image;

pub use clip_es_data::canvas::{text_width, Canvas, Rgb, GLYPH};
pub use clip_es_data::labels::voc_colour;

/// Label value of pixels that are not confident (the one ignore label).
pub use clip_es_data::IGNORE_LABEL as UNCONFIDENT;

/// Twenty colours that people tell apart easily (Sasha Trubetskoy's list of distinct colours),
/// most distinct first.
const DISTINCT: [Rgb; 20] = [
    [230, 25, 75],
    [60, 180, 75],
    [255, 225, 25],
    [67, 99, 216],
    [245, 130, 49],
    [145, 30, 180],
    [66, 212, 244],
    [240, 50, 230],
    [191, 239, 69],
    [250, 190, 212],
    [70, 153, 144],
    [220, 190, 255],
    [154, 99, 36],
    [255, 250, 200],
    [128, 0, 0],
    [170, 255, 195],
    [128, 128, 0],
    [255, 216, 177],
    [0, 0, 117],
    [169, 169, 169],
];

/// `k` colours for free class lists: the twenty of `DISTINCT`, then hues spaced by the golden
/// angle with saturation and value alternating between two levels.
pub fn distinct_colours(k: usize) -> Vec<Rgb> {
    (0..k)
        .map(|i| {
            if let Some(c) = DISTINCT.get(i) {
                return *c;
            }
            let h = (i as f64 * 137.507_764_050_037_85 + 10.0) % 360.0;
            let (s, v) = if i % 2 == 0 {
                (0.85, 0.95)
            } else {
                (0.65, 0.75)
            };
            hsv_to_rgb(h, s, v)
        })
        .collect()
}

fn hsv_to_rgb(h: f64, s: f64, v: f64) -> Rgb {
    let c = v * s;
    let hp = h / 60.0;
    let x = c * (1.0 - ((hp % 2.0) - 1.0).abs());
    let (r, g, b) = match hp as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    let q = |u: f64| ((u + m) * 255.0).round().clamp(0.0, 255.0) as u8;
    [q(r), q(g), q(b)]
}

/// The "jet" colour map (MATLAB / OpenCV `COLORMAP_JET` shape) at `t` in [0, 1]: blue, cyan,
/// yellow, red.
pub fn jet(t: f32) -> Rgb {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let f = |x: f32| ((1.5 - (4.0 * t - x).abs()).clamp(0.0, 1.0) * 255.0).round() as u8;
    [f(3.0), f(2.0), f(1.0)]
}

/// A canvas holding a copy of `image`.
fn canvas_of(image: &Rgb8Image) -> Canvas {
    Canvas {
        width: image.width as usize,
        height: image.height as usize,
        data: image.data.clone(),
    }
}

/// One entry of a legend: a colour swatch and a name.
#[derive(Clone, Debug, PartialEq)]
pub struct LegendEntry {
    pub name: String,
    pub colour: Rgb,
}

/// Where one legend entry goes (pixels, relative to the legend's top-left corner).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacedEntry {
    /// Swatch square: top-left corner and side.
    pub swatch_x: usize,
    pub swatch_y: usize,
    pub swatch_side: usize,
    /// Text: top-left corner and the text drawn (shortened with `...` if it had to be).
    pub text_x: usize,
    pub text_y: usize,
    pub text: String,
}

/// A legend laid out in rows that fit a width.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegendLayout {
    pub width: usize,
    pub height: usize,
    pub scale: usize,
    pub entries: Vec<PlacedEntry>,
}

impl PlacedEntry {
    /// The right edge of the entry's text.
    pub fn right(&self, scale: usize) -> usize {
        self.text_x + text_width(&self.text, scale)
    }
}

/// The text scale for an image `width` pixels wide: 1 up to 399 pixels, 2 up to 1199, then 3.
pub fn text_scale(width: usize) -> usize {
    match width {
        0..400 => 1,
        400..1200 => 2,
        _ => 3,
    }
}

/// Lays out legend entries left to right, wrapping to a new row when the next one would pass
/// `width`. Each entry is a swatch (one text line high), a gap, and its name; names too long
/// for a row on their own are cut and end in `...`. Rows are `line + pad` pixels apart, with a
/// margin of `pad` around everything (`line` = 8, `pad` = 3, 3 between swatch and name, 8
/// between entries; all times `scale`).
pub fn layout_legend(names: &[&str], width: usize, scale: usize) -> LegendLayout {
    let line = GLYPH * scale;
    let pad = 3 * scale;
    let gap = 3 * scale;
    let spacing = line;
    let char_w = GLYPH * scale;
    let mut entries = Vec::with_capacity(names.len());
    let (mut x, mut y) = (pad, pad);
    // Room for text on an otherwise empty row.
    let row_text_room = width.saturating_sub(2 * pad + line + gap);
    for name in names {
        let mut text: String = name.to_string();
        if text_width(&text, scale) > row_text_room {
            let keep = (row_text_room / char_w).saturating_sub(3);
            text = text.chars().take(keep).collect::<String>() + "...";
        }
        let w = line + gap + text_width(&text, scale);
        if x > pad && x + w + pad > width {
            x = pad;
            y += line + pad;
        }
        entries.push(PlacedEntry {
            swatch_x: x,
            swatch_y: y,
            swatch_side: line,
            text_x: x + line + gap,
            text_y: y,
            text,
        });
        x += w + spacing;
    }
    let height = if names.is_empty() { 0 } else { y + line + pad };
    LegendLayout {
        width,
        height,
        scale,
        entries,
    }
}

const PANEL: Rgb = [32, 32, 32];
const WHITE: Rgb = [255, 255, 255];
const BLACK: Rgb = [0, 0, 0];

/// Draws a legend (dark panel, white text, swatches with a white border).
pub fn draw_legend(entries: &[LegendEntry], width: usize, scale: usize) -> Canvas {
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    let layout = layout_legend(&names, width, scale);
    let mut c = Canvas::new(width, layout.height, PANEL);
    for (placed, e) in layout.entries.iter().zip(entries) {
        let s = placed.swatch_side;
        c.fill_rect(placed.swatch_x, placed.swatch_y, s, s, WHITE);
        let b = scale.max(1);
        c.fill_rect(
            placed.swatch_x + b,
            placed.swatch_y + b,
            s.saturating_sub(2 * b),
            s.saturating_sub(2 * b),
            e.colour,
        );
        c.draw_text(placed.text_x, placed.text_y, &placed.text, scale, WHITE);
    }
    c
}

/// How an overlay is drawn.
#[derive(Clone, Debug)]
pub struct OverlayStyle {
    /// Weight of the class colour over the photo.
    pub alpha: f32,
    /// Draw outlines (white line with black edges) where the label changes.
    pub outlines: bool,
}

impl Default for OverlayStyle {
    fn default() -> Self {
        OverlayStyle {
            alpha: 0.5,
            outlines: true,
        }
    }
}

/// The photo with each labelled pixel tinted by `colour_of(label)` (`None`: left as it is;
/// background 0 is never tinted), not-confident pixels (255) hatched in grey, outlines around
/// every region that is not background, and the legend in a panel over the photo's bottom
/// rows. The picture has the photo's size.
pub fn overlay(
    image: &Rgb8Image,
    labels: &[u8],
    colour_of: &dyn Fn(u8) -> Option<Rgb>,
    legend: &[LegendEntry],
    style: &OverlayStyle,
) -> Canvas {
    let (w, h) = (image.width as usize, image.height as usize);
    assert_eq!(labels.len(), w * h, "label map and image differ in size");
    let mut photo = canvas_of(image);
    for y in 0..h {
        for x in 0..w {
            let l = labels[y * w + x];
            if l == UNCONFIDENT {
                if (x + y) % 6 < 2 {
                    photo.blend(x, y, [200, 200, 200], 0.6);
                }
            } else if l != 0 {
                if let Some(c) = colour_of(l) {
                    photo.blend(x, y, c, style.alpha);
                }
            }
        }
    }
    if style.outlines {
        // Edge pixels: a 4-neighbour has another label and one of the two is foreground.
        let fg = |l: u8| l != 0 && l != UNCONFIDENT;
        let mut edge = vec![false; w * h];
        for y in 0..h {
            for x in 0..w {
                let l = labels[y * w + x];
                let mut check = |xx: usize, yy: usize| {
                    let m = labels[yy * w + xx];
                    if m != l && (fg(l) || fg(m)) {
                        edge[y * w + x] = true;
                    }
                };
                if x > 0 {
                    check(x - 1, y);
                }
                if x + 1 < w {
                    check(x + 1, y);
                }
                if y > 0 {
                    check(x, y - 1);
                }
                if y + 1 < h {
                    check(x, y + 1);
                }
            }
        }
        // White on the edge, black on the pixels next to it: visible on light and dark photos.
        for y in 0..h {
            for x in 0..w {
                if edge[y * w + x] {
                    photo.set(x, y, WHITE);
                } else {
                    let near = (x > 0 && edge[y * w + x - 1])
                        || (x + 1 < w && edge[y * w + x + 1])
                        || (y > 0 && edge[(y - 1) * w + x])
                        || (y + 1 < h && edge[(y + 1) * w + x]);
                    if near {
                        photo.set(x, y, BLACK);
                    }
                }
            }
        }
    }
    if !legend.is_empty() {
        // The legend goes over the bottom of the photo (the picture keeps the photo's size),
        // on a nearly opaque dark panel; a legend taller than the photo shows its first rows.
        let panel = draw_legend(legend, w, text_scale(w));
        let top = h.saturating_sub(panel.height);
        for y in 0..panel.height.min(h) {
            for x in 0..w {
                photo.blend(x, top + y, panel.pixel(x, y), 0.85);
            }
        }
    }
    photo
}

/// A CAM (`h x w` values in [0, 1]) in the jet colour map over the photo, with `title` in a
/// dark box at the top left.
pub fn heat_map(image: &Rgb8Image, cam: &[f32], title: &str, alpha: f32) -> Canvas {
    let (w, h) = (image.width as usize, image.height as usize);
    assert_eq!(cam.len(), w * h, "CAM and image differ in size");
    let mut c = canvas_of(image);
    for y in 0..h {
        for x in 0..w {
            c.blend(x, y, jet(cam[y * w + x]), alpha);
        }
    }
    let scale = text_scale(w);
    let pad = 2 * scale;
    let tw = text_width(title, scale).min(w.saturating_sub(2 * pad));
    c.fill_rect(0, 0, tw + 2 * pad, GLYPH * scale + 2 * pad, PANEL);
    let fits: String = title.chars().take(tw / (GLYPH * scale)).collect();
    c.draw_text(pad, pad, &fits, scale, WHITE);
    c
}

/// A horizontal bar chart of per-class IoU: one row per class (name, bar in the class's colour,
/// value in percent), `title` on top. `None` IoUs (class absent) are drawn as "n/a".
pub fn iou_chart(title: &str, rows: &[(String, Option<f64>, Rgb)]) -> Canvas {
    let scale = 2;
    let line = GLYPH * scale;
    let row_h = line + 6;
    let name_w = rows
        .iter()
        .map(|(n, _, _)| text_width(n, scale))
        .max()
        .unwrap_or(0)
        .min(24 * GLYPH * scale);
    let bar_max = 400;
    let value_w = text_width("100.0", scale);
    let pad = 10;
    let width = (pad + name_w + pad + bar_max + pad + value_w + pad)
        .max(text_width(title, scale) + 2 * pad);
    let height = pad + line + pad + rows.len() * row_h + pad;
    let mut c = Canvas::new(width, height, WHITE);
    c.draw_text(pad, pad, title, scale, BLACK);
    let x_bar = pad + name_w + pad;
    let y0 = pad + line + pad;
    // Grid lines at 0, 25, 50, 75, 100 %.
    for k in 0..=4 {
        let x = x_bar + k * bar_max / 4;
        c.fill_rect(x, y0, 1, rows.len() * row_h, [210, 210, 210]);
    }
    for (i, (name, iou, colour)) in rows.iter().enumerate() {
        let y = y0 + i * row_h;
        let shown: String = name.chars().take(name_w / (GLYPH * scale)).collect();
        c.draw_text(
            pad + name_w - text_width(&shown, scale),
            y + 3,
            &shown,
            scale,
            BLACK,
        );
        match iou {
            Some(v) if v.is_finite() => {
                let len = (v.clamp(0.0, 1.0) * bar_max as f64).round() as usize;
                // A dark frame keeps light colours (and black background) visible on white.
                c.fill_rect(x_bar, y + 1, len.max(1), row_h - 2, [60, 60, 60]);
                c.fill_rect(x_bar + 1, y + 2, len.saturating_sub(2), row_h - 4, *colour);
                c.draw_text(
                    x_bar + bar_max + pad,
                    y + 3,
                    &format!("{:.1}", v * 100.0),
                    scale,
                    BLACK,
                );
            }
            _ => c.draw_text(x_bar + pad, y + 3, "n/a", scale, [120, 120, 120]),
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voc_colours_match_the_palette() {
        let pal = crate::masks::voc_palette();
        for l in 0..=255u8 {
            let i = l as usize * 3;
            assert_eq!(voc_colour(l), [pal[i], pal[i + 1], pal[i + 2]]);
        }
    }

    #[test]
    fn distinct_colours_are_far_apart() {
        let c = distinct_colours(12);
        for i in 0..c.len() {
            for j in 0..i {
                let d: i32 = (0..3)
                    .map(|k| (c[i][k] as i32 - c[j][k] as i32).abs())
                    .sum();
                assert!(
                    d > 60,
                    "colours {i} {:?} and {j} {:?} too close",
                    c[i],
                    c[j]
                );
            }
        }
    }

    #[test]
    fn jet_runs_blue_to_red() {
        assert_eq!(jet(0.0), [0, 0, 128]);
        assert_eq!(jet(1.0), [128, 0, 0]);
        assert_eq!(jet(0.5), [128, 255, 128]);
        assert_eq!(jet(f32::NAN), jet(0.0));
    }

    #[test]
    fn legend_fits_wraps_and_never_overlaps() {
        let names = [
            "cat",
            "sofa",
            "person with clothes",
            "diningtable",
            "a very very very long class name that cannot fit on one row at all",
        ];
        for (width, scale) in [(200, 1), (320, 1), (500, 2), (1500, 3)] {
            let l = layout_legend(&names, width, scale);
            assert_eq!(l.entries.len(), names.len());
            for (e, name) in l.entries.iter().zip(names) {
                assert!(e.right(scale) + 3 * scale <= width, "{e:?} passes {width}");
                assert_eq!(e.text_x, e.swatch_x + 8 * scale + 3 * scale);
                assert!(e.text_y + 8 * scale <= l.height);
                if e.text.ends_with("...") {
                    assert!(name.starts_with(e.text.trim_end_matches("...")));
                } else {
                    assert_eq!(&e.text, name);
                }
            }
            // Entries of one row do not overlap; rows go down.
            for p in l.entries.windows(2) {
                if p[0].swatch_y == p[1].swatch_y {
                    assert!(p[0].right(scale) < p[1].swatch_x);
                } else {
                    assert!(p[1].swatch_y > p[0].swatch_y && p[1].swatch_x == 3 * scale);
                }
            }
        }
        // Narrow: the third entry wraps; wide: all share the first row.
        let narrow = layout_legend(&names[..3], 120, 1);
        assert_eq!(narrow.entries[1].swatch_y, 3);
        assert_eq!(narrow.entries[2].swatch_y, 3 + 11);
        assert_eq!(narrow.entries[2].text, "person wi...");
        let wide = layout_legend(&names[..3], 1000, 1);
        assert!(wide.entries.iter().all(|e| e.swatch_y == 3));
        assert_eq!(wide.height, 3 + 8 + 3);
        assert_eq!(layout_legend(&[], 100, 1).height, 0);
    }

    #[test]
    fn text_is_drawn_from_the_font() {
        let mut c = Canvas::new(16, 8, BLACK);
        c.draw_text(0, 0, "I|", 1, WHITE);
        // '|' is a vertical bar: some column of the second cell is white in every row but one.
        let lit = |x0: usize| {
            (0..8)
                .filter(|&y| (x0..x0 + 8).any(|x| c.pixel(x, y) == WHITE))
                .count()
        };
        assert!(lit(0) >= 6 && lit(8) >= 6);
        let mut blank = Canvas::new(8, 8, BLACK);
        blank.draw_text(0, 0, " ", 1, WHITE);
        assert!(blank.data.iter().all(|&v| v == 0));
    }

    #[test]
    fn overlay_has_outlines_and_a_legend_panel() {
        let (w, h) = (40usize, 30usize);
        let image = Rgb8Image {
            width: w as u32,
            height: h as u32,
            data: vec![128; w * h * 3],
        };
        let mut labels = vec![0u8; w * h];
        for y in 10..20 {
            for x in 10..30 {
                labels[y * w + x] = 1;
            }
        }
        let legend = [LegendEntry {
            name: "cat".into(),
            colour: [255, 0, 0],
        }];
        let c = overlay(
            &image,
            &labels,
            &|l| (l == 1).then_some([255, 0, 0]),
            &legend,
            &OverlayStyle::default(),
        );
        assert_eq!((c.width, c.height), (w, h));
        // The legend panel (14 rows at scale 1) darkens the bottom rows.
        assert!(c.pixel(39, 29)[0] < 64);
        assert_eq!(c.pixel(20, 10), WHITE); // edge inside the region
        assert_eq!(c.pixel(20, 9), WHITE); // edge outside it
        assert_eq!(c.pixel(20, 11), BLACK);
        assert_eq!(c.pixel(20, 8), BLACK);
        assert_eq!(c.pixel(20, 12), [192, 64, 64]); // tinted
        assert_eq!(c.pixel(2, 2), [128, 128, 128]); // background untouched
    }
}
