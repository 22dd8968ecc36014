//! Rendering an [`EvalReport`]: a text summary for the terminal, and with `--out DIR` the files
//! `eval.json` (the report as JSON) and one confusion-matrix PNG per (probe, per-class count).
//!
//! Guarantees:
//! - Files are written atomically (`NAME.tmp`, then a rename): a reader never sees half a file.
//! - The PNG is a heatmap of `confusion[true][predicted]`: rows are true classes (top to bottom in
//!   class index order), columns predicted classes (left to right); a cell's colour is its count
//!   divided by its row's total (white 0 → dark blue 1). Class indices label the rows and
//!   columns and counts are written in the cells when they fit, in a built-in 3×5 digit font; the
//!   class names for the indices are in the JSON and text reports.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use image::{ImageEncoder, Rgb, RgbImage};

use super::{EvalError, EvalReport, ProbeResult};
use crate::pretext::draw;
use crate::sink::write_atomically;

/// The text report: inputs, the accuracy table, then per-class accuracy and the confusion matrix
/// of every result.
pub fn text(report: &EvalReport) -> String {
    let mut out = String::new();
    let s = &report.split;
    let _ = writeln!(
        out,
        "features: {} ({} rows, {}-d; {} labeled, {} unlabeled)",
        report.features.join(", "),
        report.feature_rows,
        report.dim,
        report.labeled,
        report.unlabeled
    );
    let _ = writeln!(
        out,
        "labels:   {} ({} classes{})",
        report.labels,
        report.classes.len(),
        if report.missing > 0 {
            format!("; {} keys without features skipped", report.missing)
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        out,
        "split:    {} — {} in the training pool, {} in the test set (seed {})",
        match s.test_fraction {
            Some(f) => format!("stratified, {:.0}% held out", f * 100.0),
            None => "from the split column".to_string(),
        },
        s.train_pool,
        s.test,
        report.seed
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<7} {:>9} {:>7} {:>7} {:>6}  {:<17} {:>8}",
        "probe", "per class", "repeats", "train", "test", "accuracy", "seconds"
    );
    for r in &report.results {
        let acc = if r.repeats > 1 {
            format!("{:.4} ± {:.4}", r.accuracy_mean, r.accuracy_std)
        } else {
            format!("{:.4}", r.accuracy_mean)
        };
        let _ = writeln!(
            out,
            "{:<7} {:>9} {:>7} {:>7} {:>6}  {:<17} {:>8.2}",
            r.probe.to_string(),
            r.per_class.to_string(),
            r.repeats,
            r.train_examples,
            r.test_examples,
            acc,
            r.seconds
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "classes:");
    let width = index_width(report.classes.len());
    for (i, c) in report.classes.iter().enumerate() {
        let _ = writeln!(
            out,
            "  {i:>width$}  {c}  (pool {}, test {})",
            s.train_pool_per_class[i], s.test_per_class[i]
        );
    }
    for r in &report.results {
        let _ = writeln!(out);
        let detail = match (&r.penalty, r.k) {
            (Some(p), _) => format!(
                "; penalty λ = {}",
                p.iter()
                    .map(|v| format!("{v:e}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            (None, Some(k)) => format!(
                "; k = {k}, temperature {}",
                r.temperature.unwrap_or_default()
            ),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "{} probe, {} per class ({} repeat(s){detail})",
            r.probe, r.per_class, r.repeats
        );
        let _ = writeln!(out, "  per-class accuracy:");
        for (i, a) in r.per_class_accuracy.iter().enumerate() {
            let total: u64 = r.confusion[i].iter().sum();
            let _ = match a {
                Some(a) => writeln!(
                    out,
                    "    {i:>width$}  {a:.4}  ({}/{total})  {}",
                    r.confusion[i][i], report.classes[i]
                ),
                None => writeln!(
                    out,
                    "    {i:>width$}  -       (no test examples)  {}",
                    report.classes[i]
                ),
            };
        }
        if report.classes.len() > 30 {
            let _ = writeln!(
                out,
                "  confusion matrix: {0}×{0}, in --json and the --out PNG",
                report.classes.len()
            );
            continue;
        }
        let cell = r
            .confusion
            .iter()
            .flatten()
            .map(|v| v.to_string().len())
            .max()
            .unwrap_or(1)
            .max(width);
        let _ = writeln!(
            out,
            "  confusion (rows: true class, columns: predicted; summed over repeats):"
        );
        let mut header = format!("    {:>width$} ", "");
        for j in 0..report.classes.len() {
            let _ = write!(header, " {j:>cell$}");
        }
        let _ = writeln!(out, "{header}");
        for (i, row) in r.confusion.iter().enumerate() {
            let mut line = format!("    {i:>width$} ");
            for v in row {
                let _ = write!(line, " {v:>cell$}");
            }
            let _ = writeln!(out, "{line}");
        }
    }
    if !report.notes.is_empty() {
        let _ = writeln!(out);
        for n in &report.notes {
            let _ = writeln!(out, "note: {n}");
        }
    }
    out
}

fn index_width(n: usize) -> usize {
    n.saturating_sub(1).to_string().len()
}

/// The PNG name of one result: `confusion-<probe>-<per class>.png`.
pub fn png_name(r: &ProbeResult) -> String {
    format!("confusion-{}-{}.png", r.probe, r.per_class)
}

/// Writes `eval.json` and the confusion PNGs into `dir` (created if needed), recording the PNG
/// names in the report first; returns the paths written.
pub fn write_outputs(report: &mut EvalReport, dir: &Path) -> Result<Vec<PathBuf>, EvalError> {
    let io = |path: &Path, e: &dyn std::fmt::Display| EvalError::Sink(crate::sink::io_err(path, e));
    std::fs::create_dir_all(dir).map_err(|e| io(dir, &e))?;
    let mut written = Vec::new();
    for r in &mut report.results {
        let name = png_name(r);
        let path = dir.join(&name);
        let img = confusion_png(&r.confusion);
        let mut bytes = Vec::new();
        image::codecs::png::PngEncoder::new(&mut bytes)
            .write_image(
                img.as_raw(),
                img.width(),
                img.height(),
                image::ExtendedColorType::Rgb8,
            )
            .map_err(|e| io(&path, &e))?;
        write_atomically(&path, &bytes)?;
        r.confusion_png = Some(name);
        written.push(path);
    }
    let path = dir.join("eval.json");
    let json = serde_json::to_string_pretty(report).map_err(|e| io(&path, &e))?;
    write_atomically(&path, format!("{json}\n").as_bytes())?;
    written.push(path);
    Ok(written)
}

/// Width in pixels of `text` (digits) at `scale` in the shared 3×5 digit font.
fn text_width(text: &str, scale: u32) -> u32 {
    draw::digits_width(text.chars().count(), scale as usize) as u32
}

/// Draws the digits of `text` with their top-left corner at (x, y), clipped to the image.
fn draw_digits(img: &mut RgbImage, text: &str, x: u32, y: u32, scale: u32, colour: Rgb<u8>) {
    let (width, height) = (img.width() as usize, img.height() as usize);
    draw::draw_digits(
        img.as_mut(),
        width,
        height,
        x as usize,
        y as usize,
        text,
        scale as usize,
        colour.0,
    );
}

/// White → dark blue.
fn heat(t: f64) -> Rgb<u8> {
    let t = t.clamp(0.0, 1.0);
    let lerp = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
    Rgb([lerp(247.0, 8.0), lerp(251.0, 48.0), lerp(255.0, 107.0)])
}

/// The heatmap image of a confusion matrix (see the module doc).
pub fn confusion_png(confusion: &[Vec<u64>]) -> RgbImage {
    let n = confusion.len().max(1) as u32;
    let cell = (720 / n).clamp(3, 48);
    let label_scale = if cell >= 14 { 2 } else { 1 };
    let max_label = (n - 1).to_string();
    let show_labels = 5 * label_scale + 2 <= cell.max(7);
    let margin = if show_labels {
        text_width(&max_label, label_scale) + 8
    } else {
        4
    };
    let (w, h) = (margin + n * cell + 4, margin + n * cell + 4);
    let mut img = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    let grid = Rgb([200, 200, 200]);
    for (i, row) in confusion.iter().enumerate() {
        let total: u64 = row.iter().sum();
        for (j, &v) in row.iter().enumerate() {
            let t = if total > 0 {
                v as f64 / total as f64
            } else {
                0.0
            };
            let colour = heat(t);
            let (x0, y0) = (margin + j as u32 * cell, margin + i as u32 * cell);
            for y in y0..y0 + cell {
                for x in x0..x0 + cell {
                    let edge = cell >= 6 && (x == x0 || y == y0);
                    img.put_pixel(x, y, if edge { grid } else { colour });
                }
            }
            // The count, centred, at the largest scale that fits.
            let label = v.to_string();
            let scale = (1..=3)
                .rev()
                .find(|&s| text_width(&label, s) + 3 <= cell && 5 * s + 3 <= cell);
            if let Some(s) = scale {
                let ink = if t > 0.5 {
                    Rgb([255, 255, 255])
                } else {
                    Rgb([30, 30, 30])
                };
                let tx = x0 + (cell - text_width(&label, s)) / 2 + 1;
                let ty = y0 + (cell - 5 * s) / 2 + 1;
                draw_digits(&mut img, &label, tx, ty, s, ink);
            }
        }
    }
    if show_labels {
        let ink = Rgb([60, 60, 60]);
        for i in 0..n {
            let label = i.to_string();
            let lw = text_width(&label, label_scale);
            // Row labels, right-aligned in the left margin.
            let ty = margin + i * cell + (cell - 5 * label_scale) / 2;
            draw_digits(&mut img, &label, margin - 4 - lw, ty, label_scale, ink);
            // Column labels above, when they fit the column.
            if lw + 2 <= cell {
                let tx = margin + i * cell + (cell - lw) / 2;
                draw_digits(
                    &mut img,
                    &label,
                    tx,
                    margin - 4 - 5 * label_scale,
                    label_scale,
                    ink,
                );
            }
        }
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heatmap_colours_cells_by_row_share() {
        let confusion = vec![vec![9, 1, 0], vec![0, 0, 0], vec![5, 0, 5]];
        let img = confusion_png(&confusion);
        let n = 3;
        let cell = (720 / n).clamp(3, 48);
        let margin = img.width() - 4 - n * cell;
        // Sample a cell pixel away from the grid line and the digits (lower-right corner).
        let px = |i: u32, j: u32| {
            *img.get_pixel(margin + j * cell + cell - 2, margin + i * cell + cell - 2)
        };
        assert_eq!(px(0, 0), heat(0.9));
        assert_eq!(px(0, 2), heat(0.0));
        assert_eq!(px(1, 1), heat(0.0), "an empty row is white");
        assert_eq!(px(2, 0), heat(0.5));
        assert_ne!(px(0, 0), px(2, 0));
    }

    #[test]
    fn digits_are_drawn() {
        let mut img = RgbImage::from_pixel(20, 10, Rgb([255, 255, 255]));
        draw_digits(&mut img, "10", 1, 1, 1, Rgb([0, 0, 0]));
        let ink = img.pixels().filter(|p| p.0 == [0, 0, 0]).count();
        // "1" has 8 lit cells, "0" has 12.
        assert_eq!(ink, 20);
        assert_eq!(text_width("10", 2), 14);
    }
}
