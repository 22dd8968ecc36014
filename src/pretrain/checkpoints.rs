//! The checkpoint folder of a run: which checkpoints exist, the newest one to resume from, and
//! the rotation that keeps only the newest `keep_checkpoints`; and the data-stream position a
//! checkpoint carries so a resumed run continues the same stream.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the data stream is, saved in checkpoints so a resumed run continues the same stream.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct StreamState {
    pub epoch: u64,
    /// Training samples of `epoch` already consumed (in the pass's shuffled order).
    pub position: u64,
    pub images: u64,
    pub seconds: f64,
}

/// The file of the checkpoint after `step`.
pub fn path(dir: &Path, step: u64) -> PathBuf {
    dir.join(format!("step-{step:08}.safetensors"))
}

/// Checkpoint files in `dir`, oldest first, with their steps.
pub fn list(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?;
            let step = name
                .strip_prefix("step-")?
                .strip_suffix(".safetensors")?
                .parse()
                .ok()?;
            Some((step, p))
        })
        .collect();
    found.sort();
    found
}

/// Removes all but the newest `keep` checkpoints (best effort: a file that cannot be removed
/// only costs disk space).
pub fn rotate(dir: &Path, keep: usize) {
    let all = list(dir);
    let excess = all.len().saturating_sub(keep);
    for (_, old) in all.into_iter().take(excess) {
        let _ = std::fs::remove_file(old);
    }
}
