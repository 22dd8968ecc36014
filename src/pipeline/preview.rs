//! `sslpipe preview`: a contact sheet of a pipeline's first images as its pretext task sees them —
//! each row is the task's own drawing of one sample (network input next to the pseudo-label), so a
//! person can check what the network will be asked to learn before any training starts. Samples
//! are drawn exactly as a run draws them (epoch 0, same seed), one after another on this thread.

use std::path::Path;

use super::PipelineError;
use super::workers::{PretextPrepare, prepare_first};
use crate::config::Pipeline;
use crate::pretext::RgbView;
use crate::source::Order;

/// Writes the contact sheet of the first `count` usable images to `out` (PNG); returns the keys
/// shown.
pub fn write_preview(
    plan: &Pipeline,
    count: usize,
    out: &Path,
) -> Result<Vec<String>, PipelineError> {
    let Some(task_config) = plan.pretext() else {
        return Err(PipelineError::NoPretext);
    };
    let task = crate::pretext::build(task_config, plan.decode.size as usize)?;
    let prepare = PretextPrepare {
        task: task.clone(),
        seed: plan.seed,
    };
    let samples = prepare_first(plan, prepare, Order::default(), count.max(1), |_| {})?;
    if samples.is_empty() {
        return Err(PipelineError::NothingToPreview);
    }
    let size = plan.decode.size as usize;
    let rows: Vec<(usize, usize, Vec<u8>)> = samples
        .iter()
        .map(|image| {
            let view = RgbView {
                width: size,
                height: size,
                pixels: &image.rgb,
            };
            task.preview(view, &image.prepared.item)
        })
        .collect();
    crate::pretext::draw::write_sheet(out, &rows)?;
    Ok(samples.into_iter().map(|image| image.key).collect())
}
