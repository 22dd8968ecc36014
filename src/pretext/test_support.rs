//! Fixtures shared by the tasks' unit tests.

use super::RgbView;
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
