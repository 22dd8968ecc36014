//! The training log of a pretraining run: `log.csv` (one row every `log_every` steps and one per
//! held-out evaluation) and `curve.png`, the loss curve drawn from it.
//!
//! Columns: `step, epoch, images, seconds, lr, loss, <metric>…, eval_loss, eval_<metric>…,
//! baseline_loss, images_per_s, input_wait`. Training loss and metrics are means over the steps
//! since the previous row; `eval_*` are filled on evaluation rows only; `baseline_loss` is the
//! loss of the best input-independent prediction on the same held-out images; `input_wait` is the
//! share of the interval the train step waited for data.
//!
//! Guarantees: every row is flushed when written, so the file is complete up to the last row
//! after a crash or Ctrl-C; resuming keeps the rows up to the checkpoint's step and drops later
//! ones, so the log never shows steps twice.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::PretrainError;
use crate::pretext::draw::{self, Canvas};

/// One log row.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub step: u64,
    pub epoch: u64,
    pub images: u64,
    pub seconds: f64,
    pub lr: f32,
    pub loss: Option<f64>,
    pub metrics: Vec<f64>,
    pub eval_loss: Option<f64>,
    pub eval_metrics: Vec<f64>,
    pub baseline: Option<f64>,
    pub images_per_s: Option<f64>,
    pub input_wait: Option<f64>,
}

pub struct TrainLog {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    metrics: Vec<String>,
    /// (step, loss) and (step, eval loss, baseline) for the curve.
    train_points: Vec<(u64, f64)>,
    eval_points: Vec<(u64, f64, Option<f64>)>,
}

fn io_err(path: &Path, e: std::io::Error) -> PretrainError {
    PretrainError::io(path, e)
}

fn opt(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.6}")).unwrap_or_default()
}

impl TrainLog {
    /// Creates `log.csv` in `dir`; with `resume_step`, keeps the existing rows up to that step.
    pub fn open(
        dir: &Path,
        metrics: &[String],
        resume_step: Option<u64>,
    ) -> Result<Self, PretrainError> {
        let path = dir.join("log.csv");
        let mut kept = Vec::new();
        if let Some(step) = resume_step
            && let Ok(text) = std::fs::read_to_string(&path)
        {
            for line in text.lines().skip(1) {
                let row_step = line.split(',').next().and_then(|s| s.parse::<u64>().ok());
                if row_step.is_some_and(|s| s <= step) {
                    kept.push(line.to_string());
                }
            }
        }
        let file = std::fs::File::create(&path).map_err(|e| io_err(&path, e))?;
        let mut log = TrainLog {
            path: path.clone(),
            file: std::io::BufWriter::new(file),
            metrics: metrics.to_vec(),
            train_points: Vec::new(),
            eval_points: Vec::new(),
        };
        let mut header = vec!["step", "epoch", "images", "seconds", "lr", "loss"]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
        header.extend(metrics.iter().cloned());
        header.push("eval_loss".into());
        header.extend(metrics.iter().map(|m| format!("eval_{m}")));
        header.extend(["baseline_loss", "images_per_s", "input_wait"].map(String::from));
        writeln!(log.file, "{}", header.join(",")).map_err(|e| io_err(&path, e))?;
        let n = metrics.len();
        for line in kept {
            let cells: Vec<&str> = line.split(',').collect();
            let num = |i: usize| cells.get(i).and_then(|c| c.parse::<f64>().ok());
            if let (Some(step), Some(loss)) = (num(0), num(5)) {
                log.train_points.push((step as u64, loss));
            }
            if let (Some(step), Some(eval)) = (num(0), num(6 + n)) {
                log.eval_points.push((step as u64, eval, num(7 + 2 * n)));
            }
            writeln!(log.file, "{line}").map_err(|e| io_err(&path, e))?;
        }
        log.file.flush().map_err(|e| io_err(&path, e))?;
        Ok(log)
    }

    pub fn write(&mut self, row: &Row) -> Result<(), PretrainError> {
        let mut cells = vec![
            row.step.to_string(),
            row.epoch.to_string(),
            row.images.to_string(),
            format!("{:.3}", row.seconds),
            format!("{:.6e}", row.lr),
            opt(row.loss),
        ];
        let metric = |v: &[f64], i: usize| opt(v.get(i).copied());
        cells.extend((0..self.metrics.len()).map(|i| metric(&row.metrics, i)));
        cells.push(opt(row.eval_loss));
        cells.extend((0..self.metrics.len()).map(|i| metric(&row.eval_metrics, i)));
        cells.push(opt(row.baseline));
        cells.push(
            row.images_per_s
                .map(|v| format!("{v:.1}"))
                .unwrap_or_default(),
        );
        cells.push(
            row.input_wait
                .map(|v| format!("{v:.3}"))
                .unwrap_or_default(),
        );
        writeln!(self.file, "{}", cells.join(",")).map_err(|e| io_err(&self.path, e))?;
        self.file.flush().map_err(|e| io_err(&self.path, e))?;
        if let Some(l) = row.loss {
            self.train_points.push((row.step, l));
        }
        if let Some(l) = row.eval_loss {
            self.eval_points.push((row.step, l, row.baseline));
        }
        Ok(())
    }

    /// Draws `curve.png` beside the log: training loss (blue), held-out loss (orange, dots),
    /// baseline (grey); the y range is labelled at its ends, the x axis at the last step.
    pub fn draw_curve(&self, path: &Path) -> Result<(), PretrainError> {
        let (w, h) = (720usize, 400usize);
        let (left, right, top, bottom) = (56usize, 16usize, 16usize, 28usize);
        let mut c = Canvas::new(w, h, draw::WHITE);
        let (pw, ph) = (w - left - right, h - top - bottom);
        c.outline(left - 1, top - 1, pw + 2, ph + 2, 1, draw::GREY);
        let values = self
            .train_points
            .iter()
            .map(|p| p.1)
            .chain(
                self.eval_points
                    .iter()
                    .flat_map(|p| [Some(p.1), p.2])
                    .flatten(),
            )
            .filter(|v| v.is_finite());
        let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
        let last = self
            .train_points
            .iter()
            .map(|p| p.0)
            .chain(self.eval_points.iter().map(|p| p.0))
            .max()
            .unwrap_or(1)
            .max(1);
        if lo.is_finite() {
            let (lo, hi) = if hi > lo {
                (lo, hi)
            } else {
                (lo - 0.5, hi + 0.5)
            };
            let x_of = |s: u64| left + (s as f64 / last as f64 * (pw - 1) as f64) as usize;
            let y_of = |v: f64| top + ((hi - v) / (hi - lo) * (ph - 1) as f64) as usize;
            let line = |c: &mut Canvas, pts: &[(usize, usize)], color: [u8; 3], dot: usize| {
                for pair in pts.windows(2) {
                    let ((x0, y0), (x1, y1)) = (pair[0], pair[1]);
                    let n = x1.abs_diff(x0).max(y1.abs_diff(y0)).max(1);
                    for k in 0..=n {
                        let x = x0 as f64 + (x1 as f64 - x0 as f64) * k as f64 / n as f64;
                        let y = y0 as f64 + (y1 as f64 - y0 as f64) * k as f64 / n as f64;
                        c.fill_rect(x as usize, y as usize, 2, 2, color);
                    }
                }
                for &(x, y) in pts {
                    c.fill_rect(
                        x.saturating_sub(dot / 2),
                        y.saturating_sub(dot / 2),
                        dot,
                        dot,
                        color,
                    );
                }
            };
            let base: Vec<(usize, usize)> = self
                .eval_points
                .iter()
                .filter_map(|p| p.2.map(|b| (x_of(p.0), y_of(b))))
                .collect();
            line(&mut c, &base, [160, 160, 160], 0);
            let train: Vec<(usize, usize)> = self
                .train_points
                .iter()
                .map(|p| (x_of(p.0), y_of(p.1)))
                .collect();
            line(&mut c, &train, [40, 90, 200], 0);
            let eval: Vec<(usize, usize)> = self
                .eval_points
                .iter()
                .map(|p| (x_of(p.0), y_of(p.1)))
                .collect();
            line(&mut c, &eval, [240, 120, 20], 6);
            c.digits(4, top, &format!("{hi:.3}"), 2, draw::BLACK);
            c.digits(4, top + ph - 10, &format!("{lo:.3}"), 2, draw::BLACK);
        }
        let label = last.to_string();
        let lw = draw::digits_width(label.len(), 2);
        c.digits(left + pw - lw, h - bottom + 8, &label, 2, draw::BLACK);
        c.digits(left, h - bottom + 8, "0", 2, draw::BLACK);
        Ok(draw::write_png(path, c.width, c.height, &c.pixels)?)
    }
}
