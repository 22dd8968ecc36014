//! Fixtures shared by the tasks' unit tests.

use super::{PretextSample, PretextTask, RgbView};
use crate::rng::Rng;

/// A `s × s` RGB8 image of uniform noise from `seed`: every pixel differs, so a test can tell
/// where each output pixel came from.
pub fn noise_image(s: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng::new(seed);
    (0..s * s * 3).map(|_| r.next_u32() as u8).collect()
}

pub fn view(s: usize, px: &[u8]) -> RgbView<'_> {
    RgbView {
        width: s,
        height: s,
        pixels: px,
    }
}

/// Checks what every task promises about one sample: each tensor has the dtype and length its
/// signature declares, the preview is a whole RGB image, and a malformed (empty) sample still
/// previews without panicking.
pub fn check_signature_and_preview(
    task: &dyn PretextTask,
    image: RgbView<'_>,
    sample: &PretextSample,
) {
    let sig = task.signature();
    assert_eq!(
        sig.inputs.len(),
        sample.inputs.len(),
        "{}: inputs",
        task.name()
    );
    assert_eq!(
        sig.targets.len(),
        sample.targets.len(),
        "{}: targets",
        task.name()
    );
    let specs = sig.inputs.iter().chain(&sig.targets);
    for (spec, t) in specs.zip(sample.inputs.iter().chain(&sample.targets)) {
        assert_eq!(
            (spec.dtype, spec.len()),
            (t.dtype(), t.len()),
            "{}: {}",
            task.name(),
            spec.name
        );
    }
    let (w, h, px) = task.preview(image, sample);
    assert_eq!(px.len(), w * h * 3);
    task.preview(image, &PretextSample::default());
}
