//! Jigsaw puzzles (Noroozi & Favaro 2016): the crop is cut into a `grid × grid` set of tiles, the
//! tiles are shuffled by one of a fixed set of permutations, and the network must say which
//! permutation was applied — which it can only do by recognising the parts of objects.
//!
//! Guarantees:
//! - Geometry: a crop of `grid · cell` pixels is placed in the `S × S` image (uniformly at random
//!   with `jitter`, centred without); each cell holds a `tile × tile` tile at a uniformly random
//!   offset inside the cell (centred without `jitter`), so neighbouring tiles never share an edge
//!   the network could match. Canonical: S = 255, cell 85, tile 64.
//! - Output: input `tiles` F32 `[grid², 3, tile, tile]` in *shuffled* order — position `i` holds
//!   the original tile `perm[i]` (original tiles are numbered row-major) — and target `label` I64
//!   `[1]`, the index of `perm` in the permutation set.
//! - Every tile is normalised on its own, per channel: `(x − mean) / (std + 1e-5)` with pixels in
//!   `[0, 1]` and the population std of that tile's channel (a flat tile becomes all zeros). This
//!   removes the brightness/contrast continuity between tiles, a low-level shortcut. With
//!   probability `grayscale_prob` the whole crop is first turned grey (BT.601 luma, integer
//!   arithmetic), which removes the chromatic-aberration shortcut.
//! - Randomness, in this order from the sample's [`Rng`]: crop row, crop column, greyscale coin,
//!   permutation index, then (row, column) offset of each original tile in row-major order. All
//!   draws are made whether or not `jitter` is on, so switching jitter off changes only positions.
//! - The permutation set ([`PermutationSet`]) is a pure function of `(grid², P, seed)`, or is read
//!   from `permutation_file`, so a trained model and the data fed to it agree on what label `k`
//!   means. Save the set next to the model ([`PermutationSet::save`]).
//!
//! The greedy maximal-Hamming set, grid 3 (9 tiles, all 9! = 362,880 candidates), seed 0: minimum
//! pairwise Hamming distance **6 for P = 100** and **5 for P = 1000** (out of at most 9). Generation
//! takes about 0.09 s for P = 100 and 0.7 s for P = 1000 on one core of the development machine
//! (release build; several seconds in an unoptimised debug build); sets are cached per process,
//! so building the task twice costs nothing.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};

use super::draw::{self, Canvas};
use super::training::Classification;
use super::{
    DType, PretextError, PretextSample, PretextTask, RgbView, Signature, TaskSettings, TensorData,
    TensorSpec,
};
use crate::rng::Rng;
use crate::train::InputLayout;

const TASK: &str = "jigsaw";

/// Largest grid: 16 tiles, so that one permutation packs into the 16 nibbles of a `u64`, which
/// keeps the greedy search over hundreds of thousands of candidates fast. Jigsaw papers use 3.
pub const MAX_GRID: usize = 4;
/// Largest permutation set accepted (the paper's largest).
pub const MAX_PERMUTATIONS: usize = 1000;
/// Candidate pool: every permutation when there are at most this many (9! for a 3×3 grid),
/// otherwise this many random permutations drawn from the seed (4×4 grids: 16! is far too many).
pub const MAX_CANDIDATES: usize = 362_880;
/// Added to each tile's std (pixels in `[0, 1]`) so flat tiles do not divide by zero.
pub const NORM_EPS: f64 = 1e-5;

/// TOML configuration of the jigsaw task (`[pretext] kind = "jigsaw"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JigsawConfig {
    /// Tiles per side (2..=4); the paper uses 3.
    pub grid: usize,
    /// Size P of the permutation set (2..=1000, and at most grid²!): the number of classes.
    pub permutations: usize,
    /// Cell side in pixels; default `S / grid`.
    pub cell: Option<usize>,
    /// Tile side in pixels (≤ cell); default `round(cell · 64 / 85)` as in the paper.
    pub tile: Option<usize>,
    /// Random crop position and random tile position inside each cell (else both centred).
    pub jitter: bool,
    /// Probability that a sample's crop is turned grey before cutting.
    pub grayscale_prob: f32,
    /// Seed of the permutation set (not of the samples: those come from the sample's Rng).
    pub seed: u64,
    /// Read the permutation set from this file (written by [`PermutationSet::save`]) instead of
    /// generating it; its tile count and size must match `grid` and `permutations`.
    pub permutation_file: Option<PathBuf>,
}

impl Default for JigsawConfig {
    fn default() -> Self {
        JigsawConfig {
            grid: 3,
            permutations: 100,
            cell: None,
            tile: None,
            jitter: true,
            grayscale_prob: 0.3,
            seed: 0,
            permutation_file: None,
        }
    }
}

fn invalid(message: String) -> PretextError {
    PretextError::Invalid {
        task: TASK,
        message,
    }
}

fn factorial(n: usize) -> usize {
    (1..=n).fold(1usize, |a, k| a.saturating_mul(k))
}

impl JigsawConfig {
    /// Validates against the working image size `size` and returns the task (generating or
    /// loading the permutation set).
    pub fn build(&self, size: usize) -> Result<Jigsaw, PretextError> {
        let g = self.grid;
        if !(2..=MAX_GRID).contains(&g) {
            return Err(invalid(format!(
                "grid must be 2, 3 or 4 tiles per side (3 in the paper), got {g}"
            )));
        }
        let n = g * g;
        let max_p = MAX_PERMUTATIONS.min(factorial(n));
        if !(2..=max_p).contains(&self.permutations) {
            return Err(invalid(format!(
                "permutations must be between 2 and {max_p} for a {g}x{g} grid, got {}",
                self.permutations
            )));
        }
        let max_cell = size / g;
        let cell = self.cell.unwrap_or(max_cell);
        if cell == 0 || cell > max_cell {
            return Err(invalid(if max_cell == 0 {
                format!(
                    "a {g}x{g} grid needs an image of at least {g} px, the working size is {size}"
                )
            } else {
                format!(
                    "cell {cell} px x grid {g} does not fit in the {size} px image; cells of 1..={max_cell} px fit"
                )
            }));
        }
        // round(cell · 64/85) in integers: the paper's 64 px tiles in 85 px cells.
        let tile = self.tile.unwrap_or((cell * 64 + 42) / 85);
        if tile == 0 || tile > cell {
            return Err(invalid(format!(
                "tile {tile} px does not fit in a {cell} px cell; tiles of 1..={cell} px fit"
            )));
        }
        if !(0.0..=1.0).contains(&self.grayscale_prob) {
            return Err(invalid(format!(
                "grayscale_prob must be a probability in [0, 1], got {}",
                self.grayscale_prob
            )));
        }
        let perms = match &self.permutation_file {
            Some(path) => {
                let set = PermutationSet::load(path)?;
                if set.n_tiles() != n || set.len() != self.permutations {
                    return Err(invalid(format!(
                        "permutation file {} holds {} permutations of {} tiles; the config asks for {} permutations of {n} tiles (grid {g})",
                        path.display(),
                        set.len(),
                        set.n_tiles(),
                        self.permutations
                    )));
                }
                Arc::new(set)
            }
            None => PermutationSet::cached(n, self.permutations, self.seed)?,
        };
        Ok(Jigsaw {
            size,
            grid: g,
            cell,
            tile,
            jitter: self.jitter,
            grayscale_prob: f64::from(self.grayscale_prob),
            perms,
        })
    }
}

/// A fixed set of permutations of `n` tiles; the label of a sample is an index into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermutationSet {
    /// The permutations; row `k` is the order of label `k`: position `i` holds tile `perms[k][i]`.
    pub perms: Vec<Vec<u8>>,
    /// The smallest Hamming distance between two rows (positions at which they differ).
    pub min_hamming: usize,
}

/// Packs a permutation of up to 16 values (each < 16) into nibbles: nibble `i` = `p[i]`.
fn pack(p: &[u8]) -> u64 {
    p.iter()
        .enumerate()
        .fold(0u64, |acc, (i, &v)| acc | (u64::from(v) << (4 * i)))
}

fn unpack(mut x: u64, n: usize) -> Vec<u8> {
    (0..n)
        .map(|_| {
            let v = (x & 0xF) as u8;
            x >>= 4;
            v
        })
        .collect()
}

/// Hamming distance of two nibble-packed permutations: the number of non-zero nibbles of `a ^ b`.
#[inline]
fn packed_distance(a: u64, b: u64) -> u8 {
    let x = a ^ b;
    let y = (x | (x >> 1) | (x >> 2) | (x >> 3)) & 0x1111_1111_1111_1111;
    y.count_ones() as u8
}

fn hamming(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x != y).count()
}

/// The smallest Hamming distance between any two rows, by exhaustive comparison
/// (`n` when there are fewer than two rows).
pub fn min_pairwise_hamming(perms: &[Vec<u8>]) -> usize {
    let mut best = perms.first().map_or(0, Vec::len);
    for (i, a) in perms.iter().enumerate() {
        for b in &perms[i + 1..] {
            best = best.min(hamming(a, b));
        }
    }
    best
}

/// Advances `p` to the next permutation in lexicographic order; false after the last one.
fn next_permutation(p: &mut [u8]) -> bool {
    let Some(i) = (1..p.len()).rev().find(|&i| p[i - 1] < p[i]) else {
        return false;
    };
    let pivot = i - 1;
    let Some(j) = (i..p.len()).rev().find(|&j| p[j] > p[pivot]) else {
        return false;
    };
    p.swap(pivot, j);
    p[i..].reverse();
    true
}

/// The candidate permutations, packed: all `n!` in lexicographic order when there are at most
/// [`MAX_CANDIDATES`], otherwise [`MAX_CANDIDATES`] random ones drawn from `seed`.
fn candidates(n: usize, seed: u64) -> Vec<u64> {
    let mut p: Vec<u8> = (0..n as u8).collect();
    if factorial(n) <= MAX_CANDIDATES {
        let mut out = Vec::with_capacity(factorial(n));
        loop {
            out.push(pack(&p));
            if !next_permutation(&mut p) {
                return out;
            }
        }
    }
    let mut rng = Rng::for_key(seed, "sslpipe/jigsaw/candidates");
    (0..MAX_CANDIDATES)
        .map(|_| {
            rng.shuffle(&mut p);
            pack(&p)
        })
        .collect()
}

/// Index of the first permutation of the greedy procedure: a random candidate, from the seed.
fn first_index(n_candidates: usize, seed: u64) -> usize {
    Rng::for_key(seed, "sslpipe/jigsaw/first").index(n_candidates)
}

type CacheKey = (usize, usize, u64);

fn cache() -> &'static Mutex<HashMap<CacheKey, Arc<PermutationSet>>> {
    static CACHE: OnceLock<Mutex<HashMap<CacheKey, Arc<PermutationSet>>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The on-disk form (JSON). `min_hamming` and `seed` are informative; loading recomputes the
/// former and refuses a file whose stated value disagrees.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PermFile {
    format: String,
    version: u32,
    tiles: usize,
    count: usize,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    min_hamming: Option<usize>,
    perms: Vec<Vec<u64>>,
}

const FILE_FORMAT: &str = "sslpipe-jigsaw-permutations";

impl PermutationSet {
    /// Greedy maximal-minimum-Hamming set (Noroozi & Favaro): start from a random candidate
    /// (drawn from `seed`), then repeatedly add the candidate whose minimum Hamming distance to the
    /// chosen set is largest, ties broken by the lowest candidate index (lexicographic order).
    /// Keeps a running minimum-distance array, so the cost is `p` passes over the candidates.
    pub fn generate(n_tiles: usize, p: usize, seed: u64) -> Result<PermutationSet, PretextError> {
        if !(2..=MAX_GRID * MAX_GRID).contains(&n_tiles) {
            return Err(invalid(format!(
                "permutations of 2..=16 tiles can be generated, asked for {n_tiles}"
            )));
        }
        let cands = candidates(n_tiles, seed);
        if !(2..=cands.len()).contains(&p) {
            return Err(invalid(format!(
                "between 2 and {} permutations of {n_tiles} tiles can be chosen, asked for {p}",
                cands.len()
            )));
        }
        let mut chosen = Vec::with_capacity(p);
        let mut current = first_index(cands.len(), seed);
        // u8 distances: four times less memory traffic than usize over 362,880 candidates.
        let mut min_dist = vec![u8::MAX; cands.len()];
        let mut min_hamming = n_tiles;
        loop {
            chosen.push(current);
            if chosen.len() == p {
                break;
            }
            let c = cands[current];
            // Separate passes (update, max, first index of max) vectorise; a fused argmax would not.
            for (d, &x) in min_dist.iter_mut().zip(&cands) {
                *d = (*d).min(packed_distance(x, c));
            }
            let best = min_dist.iter().copied().max().unwrap_or(0);
            if best == 0 {
                // Only duplicates of chosen permutations are left (possible in a random pool).
                return Err(invalid(format!(
                    "only {} distinct permutations of {n_tiles} tiles were found, asked for {p}",
                    chosen.len()
                )));
            }
            min_hamming = min_hamming.min(usize::from(best));
            current = min_dist.iter().position(|&d| d == best).unwrap_or(0);
        }
        Ok(PermutationSet {
            perms: chosen.iter().map(|&i| unpack(cands[i], n_tiles)).collect(),
            min_hamming,
        })
    }

    /// [`PermutationSet::generate`], computed once per process for each `(n, p, seed)`.
    pub fn cached(
        n_tiles: usize,
        p: usize,
        seed: u64,
    ) -> Result<Arc<PermutationSet>, PretextError> {
        // The lock is held while generating so concurrent builders wait instead of duplicating
        // the work; a poisoned lock only means another builder panicked, the map is still valid.
        let mut map = cache().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = map.get(&(n_tiles, p, seed)) {
            return Ok(Arc::clone(set));
        }
        let set = Arc::new(Self::generate(n_tiles, p, seed)?);
        map.insert((n_tiles, p, seed), Arc::clone(&set));
        Ok(set)
    }

    /// Checks that every row is a bijection of `0..n` (all rows of one `n`, 2 ≤ n ≤ 255) and that
    /// no row repeats, and computes the minimum distance.
    pub fn from_rows(perms: Vec<Vec<u8>>) -> Result<PermutationSet, String> {
        let n = perms.first().map_or(0, Vec::len);
        if perms.len() < 2 {
            return Err(format!(
                "needs at least 2 permutations, found {}",
                perms.len()
            ));
        }
        if !(2..=255).contains(&n) {
            return Err(format!("permutations must have 2..=255 entries, found {n}"));
        }
        let mut seen_rows = std::collections::HashSet::new();
        for (k, row) in perms.iter().enumerate() {
            if row.len() != n {
                return Err(format!("row {k} has {} entries, row 0 has {n}", row.len()));
            }
            let mut seen = vec![false; n];
            for &v in row {
                let v = usize::from(v);
                if v >= n || seen[v] {
                    return Err(format!(
                        "row {k} {row:?} is not a permutation of 0..{n} (value {v} {})",
                        if v >= n { "out of range" } else { "repeated" }
                    ));
                }
                seen[v] = true;
            }
            if !seen_rows.insert(row.as_slice()) {
                return Err(format!(
                    "row {k} {row:?} repeats an earlier row: two labels would mean the same puzzle"
                ));
            }
        }
        let min_hamming = min_pairwise_hamming(&perms);
        Ok(PermutationSet { perms, min_hamming })
    }

    /// Number of tiles each permutation orders.
    pub fn n_tiles(&self) -> usize {
        self.perms.first().map_or(0, Vec::len)
    }

    /// Number of permutations (classes).
    pub fn len(&self) -> usize {
        self.perms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.perms.is_empty()
    }

    /// Writes the set as JSON, one permutation per line, atomically (a `.tmp` file renamed into
    /// place), so a reader never sees half a set.
    pub fn save(&self, path: &Path) -> Result<(), PretextError> {
        let mut s = String::new();
        let _ = write!(
            s,
            "{{\"format\": \"{FILE_FORMAT}\", \"version\": 1, \"tiles\": {}, \"count\": {}, \"min_hamming\": {},\n \"perms\": [\n",
            self.n_tiles(),
            self.len(),
            self.min_hamming
        );
        for (k, row) in self.perms.iter().enumerate() {
            let items: Vec<String> = row.iter().map(u8::to_string).collect();
            let sep = if k + 1 == self.perms.len() { "" } else { "," };
            let _ = writeln!(s, "  [{}]{sep}", items.join(", "));
        }
        s.push_str(" ]}\n");
        Ok(crate::atomic::write(path, s.as_bytes())?)
    }

    /// Reads a set written by [`PermutationSet::save`], refusing anything that is not exactly a
    /// set of distinct bijections whose stated sizes match its rows.
    pub fn load(path: &Path) -> Result<PermutationSet, PretextError> {
        let bad = |what: String| {
            invalid(format!(
                "permutation file {} is not usable: {what}",
                path.display()
            ))
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read it ({e})")))?;
        let file: PermFile = serde_json::from_str(&text)
            .map_err(|e| bad(format!("not valid JSON of the expected shape ({e})")))?;
        if file.format != FILE_FORMAT || file.version != 1 {
            return Err(bad(format!(
                "format \"{}\" version {}, expected \"{FILE_FORMAT}\" version 1",
                file.format, file.version
            )));
        }
        if file.count != file.perms.len() {
            return Err(bad(format!(
                "it says count {} but holds {} rows",
                file.count,
                file.perms.len()
            )));
        }
        let mut rows = Vec::with_capacity(file.perms.len());
        for (k, row) in file.perms.iter().enumerate() {
            if row.len() != file.tiles {
                return Err(bad(format!(
                    "it says tiles {} but row {k} has {} entries",
                    file.tiles,
                    row.len()
                )));
            }
            let row: Option<Vec<u8>> = row.iter().map(|&v| u8::try_from(v).ok()).collect();
            rows.push(row.ok_or_else(|| bad(format!("row {k} has a value above 255")))?);
        }
        let set = PermutationSet::from_rows(rows).map_err(bad)?;
        if let Some(stated) = file.min_hamming
            && stated != set.min_hamming
        {
            return Err(bad(format!(
                "it says min_hamming {stated}, its rows have {}",
                set.min_hamming
            )));
        }
        let _ = file.seed;
        Ok(set)
    }
}

/// The jigsaw task, built by [`JigsawConfig::build`].
#[derive(Debug, Clone)]
pub struct Jigsaw {
    size: usize,
    grid: usize,
    cell: usize,
    tile: usize,
    jitter: bool,
    grayscale_prob: f64,
    perms: Arc<PermutationSet>,
}

/// The random choices of one sample (see the module doc for their order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JigsawDraw {
    /// Top-left corner (row, column) of the `grid · cell` crop in the image.
    pub origin: (usize, usize),
    /// Whether the crop is turned grey.
    pub grey: bool,
    /// Index into the permutation set.
    pub label: usize,
    /// Offset (row, column) of each original tile inside its cell, row-major.
    pub offsets: Vec<(usize, usize)>,
}

impl Jigsaw {
    pub fn size(&self) -> usize {
        self.size
    }
    pub fn grid(&self) -> usize {
        self.grid
    }
    pub fn cell(&self) -> usize {
        self.cell
    }
    pub fn tile(&self) -> usize {
        self.tile
    }
    /// The permutation set; save it next to a trained model.
    pub fn permutations(&self) -> &PermutationSet {
        &self.perms
    }

    /// Draws one sample's random choices from `rng`.
    pub fn draw(&self, rng: &mut Rng) -> JigsawDraw {
        let span = self.size - self.grid * self.cell;
        let free = self.cell - self.tile;
        let pick = |n: usize, rng: &mut Rng| {
            let r = rng.index(n + 1);
            if self.jitter { r } else { n / 2 }
        };
        let origin = (pick(span, rng), pick(span, rng));
        let grey = rng.bernoulli(self.grayscale_prob);
        let label = rng.index(self.perms.len());
        let offsets = (0..self.grid * self.grid)
            .map(|_| (pick(free, rng), pick(free, rng)))
            .collect();
        JigsawDraw {
            origin,
            grey,
            label,
            offsets,
        }
    }

    /// Cuts the tiles of `d` from `image` without normalising: `[grid², 3, tile, tile]` U8 in
    /// shuffled order (position `i` holds original tile `perm[i]`), grey applied. [`make`] is
    /// exactly this followed by the per-tile normalisation.
    ///
    /// [`make`]: PretextTask::make
    pub fn cut_tiles(&self, image: RgbView<'_>, d: &JigsawDraw) -> Vec<u8> {
        let (s, t, c, g) = (self.size, self.tile, self.cell, self.grid);
        draw::check_image(TASK, &image, s);
        let plane = t * t;
        let n = g * g;
        let mut out = vec![0u8; n * 3 * plane];
        let perm = &self.perms.perms[d.label.min(self.perms.len() - 1)];
        for (i, chunk) in out.chunks_exact_mut(3 * plane).enumerate() {
            let j = usize::from(perm[i]);
            let (dy, dx) = d.offsets.get(j).copied().unwrap_or((0, 0));
            let y0 = d.origin.0 + (j / g) * c + dy;
            let x0 = d.origin.1 + (j % g) * c + dx;
            let (r, rest) = chunk.split_at_mut(plane);
            let (gr, b) = rest.split_at_mut(plane);
            for yy in 0..t {
                let src = &image.pixels[((y0 + yy) * s + x0) * 3..((y0 + yy) * s + x0 + t) * 3];
                let row = yy * t..(yy + 1) * t;
                let (r, gr, b) = (&mut r[row.clone()], &mut gr[row.clone()], &mut b[row]);
                for (k, px) in src.chunks_exact(3).enumerate() {
                    if d.grey {
                        let y = grey(px);
                        (r[k], gr[k], b[k]) = (y, y, y);
                    } else {
                        (r[k], gr[k], b[k]) = (px[0], px[1], px[2]);
                    }
                }
            }
        }
        out
    }
}

/// BT.601 luma in integers, rounded: the same value on every machine.
#[inline]
fn grey(px: &[u8]) -> u8 {
    ((299 * u32::from(px[0]) + 587 * u32::from(px[1]) + 114 * u32::from(px[2]) + 500) / 1000) as u8
}

/// Normalises one plane of pixels to zero mean and unit std (see the module doc), into `out`.
/// The moments come from exact integer sums, so the result does not depend on summation order.
fn normalise_plane(src: &[u8], out: &mut [f32]) {
    let n = src.len() as u64;
    if n == 0 {
        return;
    }
    let (sum, sumsq) = src.iter().fold((0u64, 0u64), |(s, q), &v| {
        let v = u64::from(v);
        (s + v, q + v * v)
    });
    // Variance · n² = n · Σx² − (Σx)², exact in integers (u128: no overflow for any tile size).
    let var_n2 =
        (u128::from(n) * u128::from(sumsq)).saturating_sub(u128::from(sum) * u128::from(sum));
    let std = (var_n2 as f64).sqrt() / n as f64 / 255.0;
    let mean = sum as f64 / n as f64;
    let inv = (1.0 / (255.0 * (std + NORM_EPS))) as f32;
    let mean = mean as f32;
    for (o, &v) in out.iter_mut().zip(src) {
        *o = (f32::from(v) - mean) * inv;
    }
}

impl PretextTask for Jigsaw {
    fn name(&self) -> &'static str {
        TASK
    }

    /// `permutations.json`: the labels are indices into this set, a trainer elsewhere needs it
    /// to decode them.
    fn write_dataset_files(&self, dir: &Path) -> Result<(), PretextError> {
        self.perms.save(&dir.join("permutations.json"))
    }

    fn signature(&self) -> Signature {
        let (n, t) = (self.grid * self.grid, self.tile);
        Signature {
            inputs: vec![TensorSpec::new("tiles", DType::F32, &[n, 3, t, t])],
            targets: vec![TensorSpec::new("label", DType::I64, &[1])],
        }
    }

    fn make(&self, image: RgbView<'_>, rng: &mut Rng) -> PretextSample {
        let d = self.draw(rng);
        let raw = self.cut_tiles(image, &d);
        let plane = self.tile * self.tile;
        let mut out = vec![0f32; raw.len()];
        for (src, dst) in raw.chunks_exact(plane).zip(out.chunks_exact_mut(plane)) {
            normalise_plane(src, dst);
        }
        PretextSample {
            inputs: vec![TensorData::F32(out)],
            targets: vec![TensorData::I64(vec![d.label as i64])],
        }
    }

    /// Three panels: the original image; the tiles as the network gets them (shuffled, each
    /// outlined, its original position written in its corner); the tiles put back by the inverse
    /// permutation (the solved puzzle). Underneath: the permutation index. Normalised tiles are
    /// shown as `128 + 48 · value`.
    fn preview(&self, image: RgbView<'_>, sample: &PretextSample) -> (usize, usize, Vec<u8>) {
        let (s, t, g) = (self.size, self.tile, self.grid);
        let n = g * g;
        let gap = 4;
        let sp = 2; // between tiles
        let scale = draw::font_scale(s);
        let tiles = draw::f32s(sample.inputs.first());
        let label = draw::i64s(sample.targets.first()).first().copied();
        let perm = label
            .and_then(|k| usize::try_from(k).ok())
            .and_then(|k| self.perms.perms.get(k));
        let grid_w = g * t + (g + 1) * sp;
        let panel_h = s.max(grid_w);
        let text_h = draw::digits_height(scale) + 2 * gap;
        let mut c = Canvas::new(
            s + 2 * grid_w + 4 * gap,
            panel_h + 2 * gap + text_h,
            draw::BACKGROUND,
        );
        if image.pixels.len() >= s * s * 3 {
            c.blit_hwc(gap, gap, s, s, &image.pixels[..s * s * 3]);
        }
        let plane3 = 3 * t * t;
        let to_u8 = |v: f32| (128.0 + 48.0 * v).clamp(0.0, 255.0) as u8;
        let x_shuf = s + 2 * gap;
        let x_solved = x_shuf + grid_w + gap;
        c.fill_rect(x_shuf, gap, grid_w, grid_w, draw::GREY);
        c.fill_rect(x_solved, gap, grid_w, grid_w, draw::GREY);
        for i in 0..n {
            let Some(vals) = tiles.get(i * plane3..(i + 1) * plane3) else {
                break;
            };
            let chw: Vec<u8> = vals.iter().map(|&v| to_u8(v)).collect();
            let at = |x0: usize, pos: usize| {
                (
                    x0 + sp + (pos % g) * (t + sp),
                    gap + sp + (pos / g) * (t + sp),
                )
            };
            let (x, y) = at(x_shuf, i);
            c.blit_chw(x, y, t, t, &chw);
            c.outline(x, y, t, t, 1, draw::YELLOW);
            if let Some(p) = perm {
                let orig = usize::from(p[i]);
                if t >= 8 {
                    c.digits(x + 2, y + 2, &orig.to_string(), 1, draw::YELLOW);
                }
                let (x, y) = at(x_solved, orig);
                c.blit_chw(x, y, t, t, &chw);
            }
        }
        if let Some(k) = label {
            c.digits(
                x_shuf,
                panel_h + 3 * gap,
                &k.to_string(),
                scale,
                draw::WHITE,
            );
        }
        c.into_parts()
    }
}

impl TaskSettings for JigsawConfig {
    fn resolve_paths(&mut self, resolve: &dyn Fn(&Path) -> PathBuf) {
        self.permutation_file = self.permutation_file.as_deref().map(resolve);
    }
}

/// Training: the tiles go through the shared encoder, their pooled features are concatenated and
/// an MLP classifies the permutation (P-way cross-entropy).
impl Classification for Jigsaw {
    fn input_layout(&self) -> InputLayout {
        InputLayout::Tiles {
            count: self.grid * self.grid,
        }
    }

    fn classes(&self) -> usize {
        self.perms.len()
    }

    fn plane(&self) -> usize {
        self.tile * self.tile
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pretext::test_support::{check_signature_and_preview, noise_image, view};

    fn small(grid: usize, permutations: usize) -> JigsawConfig {
        JigsawConfig {
            grid,
            permutations,
            ..JigsawConfig::default()
        }
    }

    /// The greedy procedure written the slow, obvious way: every step recomputes each
    /// candidate's minimum distance to the chosen set from scratch.
    fn naive_greedy(n: usize, p: usize, seed: u64) -> Vec<Vec<u8>> {
        let mut all = Vec::new();
        let mut q: Vec<u8> = (0..n as u8).collect();
        loop {
            all.push(q.clone());
            if !next_permutation(&mut q) {
                break;
            }
        }
        let mut chosen = vec![first_index(all.len(), seed)];
        while chosen.len() < p {
            let mut best = (0, 0);
            for (i, cand) in all.iter().enumerate() {
                let d = chosen
                    .iter()
                    .map(|&c| hamming(cand, &all[c]))
                    .min()
                    .unwrap();
                if d > best.0 {
                    best = (d, i);
                }
            }
            chosen.push(best.1);
        }
        chosen.into_iter().map(|i| all[i].clone()).collect()
    }

    #[test]
    fn generated_sets_are_bijections_and_match_the_naive_greedy() {
        for (n, p) in [(3, 2), (3, 6), (4, 4), (4, 24), (5, 10), (6, 30)] {
            for seed in [0, 1, 7] {
                let set = PermutationSet::generate(n, p, seed).unwrap();
                assert_eq!(set.len(), p);
                let checked = PermutationSet::from_rows(set.perms.clone()).unwrap();
                assert_eq!(checked.min_hamming, set.min_hamming, "n {n} p {p}");
                assert_eq!(
                    set.perms,
                    naive_greedy(n, p, seed),
                    "n {n} p {p} seed {seed}"
                );
            }
        }
    }

    /// Largest achievable minimum distance among all `p`-subsets of the permutations of `n`.
    fn best_possible(n: usize, p: usize) -> usize {
        let mut all = Vec::new();
        let mut q: Vec<u8> = (0..n as u8).collect();
        loop {
            all.push(q.clone());
            if !next_permutation(&mut q) {
                break;
            }
        }
        fn rec(
            all: &[Vec<u8>],
            start: usize,
            chosen: &mut Vec<usize>,
            p: usize,
            cur: usize,
            best: &mut usize,
        ) {
            if cur <= *best {
                return; // cannot improve
            }
            if chosen.len() == p {
                *best = cur;
                return;
            }
            for i in start..all.len() {
                let d = chosen
                    .iter()
                    .map(|&c| hamming(&all[i], &all[c]))
                    .min()
                    .unwrap_or(usize::MAX);
                chosen.push(i);
                rec(all, i + 1, chosen, p, cur.min(d), best);
                chosen.pop();
            }
        }
        let mut best = 0;
        rec(&all, 0, &mut Vec::new(), p, usize::MAX, &mut best);
        best
    }

    #[test]
    fn greedy_reaches_the_optimum_on_tiny_cases() {
        // n = 3, P = 2: two permutations that differ everywhere exist (distance 3).
        assert_eq!(PermutationSet::generate(3, 2, 0).unwrap().min_hamming, 3);
        for (n, p) in [(3, 2), (3, 3), (4, 2), (4, 3), (4, 4)] {
            let greedy = PermutationSet::generate(n, p, 0).unwrap().min_hamming;
            assert_eq!(greedy, best_possible(n, p), "n {n} p {p}");
        }
    }

    #[test]
    fn default_set_has_the_documented_min_distance() {
        let set = PermutationSet::cached(9, 100, 0).unwrap();
        assert_eq!(set.len(), 100);
        assert_eq!(set.min_hamming, min_pairwise_hamming(&set.perms));
        assert_eq!(set.min_hamming, 6);
        // Deterministic from the seed; another seed starts elsewhere.
        assert_eq!(*set, PermutationSet::generate(9, 100, 0).unwrap());
        assert_ne!(
            set.perms,
            PermutationSet::generate(9, 100, 1).unwrap().perms
        );
    }

    /// `cargo test --release --lib pretext::jigsaw -- --ignored --nocapture` prints the figures
    /// quoted in the module doc.
    #[test]
    #[ignore = "timing report; run in release"]
    fn report_min_distance_and_generation_time() {
        for p in [100, 1000] {
            let t = std::time::Instant::now();
            let set = PermutationSet::generate(9, p, 0).unwrap();
            let dt = t.elapsed();
            assert_eq!(set.min_hamming, min_pairwise_hamming(&set.perms));
            println!("grid 3, P = {p}: min Hamming {} in {dt:?}", set.min_hamming);
        }
    }

    #[test]
    fn reassembling_by_the_inverse_permutation_gives_back_the_crop() {
        for (s, grid) in [(32, 2), (64, 3), (96, 4)] {
            let img = noise_image(s, s as u64 + 100);
            let cell = s / grid;
            let task = JigsawConfig {
                tile: Some(cell),
                jitter: false,
                grayscale_prob: 0.0,
                ..small(grid, 20)
            }
            .build(s)
            .unwrap();
            let d = task.draw(&mut Rng::new(5));
            assert!(!d.grey);
            let tiles = task.cut_tiles(view(s, &img), &d);
            let perm = &task.permutations().perms[d.label];
            let extent = grid * cell;
            let mut back = vec![0u8; extent * extent * 3];
            let plane = cell * cell;
            for (i, &orig) in perm.iter().enumerate() {
                let (r, col) = (usize::from(orig) / grid, usize::from(orig) % grid);
                for ch in 0..3 {
                    for y in 0..cell {
                        for x in 0..cell {
                            back[((r * cell + y) * extent + col * cell + x) * 3 + ch] =
                                tiles[(i * 3 + ch) * plane + y * cell + x];
                        }
                    }
                }
            }
            let o = (s - extent) / 2;
            let mut crop = Vec::new();
            for y in o..o + extent {
                crop.extend_from_slice(&img[(y * s + o) * 3..(y * s + o + extent) * 3]);
            }
            assert_eq!(back, crop, "size {s} grid {grid}");
        }
    }

    #[test]
    fn tiles_are_normalised_and_make_matches_cut_tiles() {
        let s = 96;
        let img = noise_image(s, s as u64 + 100);
        let task = JigsawConfig {
            grayscale_prob: 1.0,
            ..small(3, 10)
        }
        .build(s)
        .unwrap();
        let mut rng = Rng::new(9);
        let d = task.draw(&mut rng.clone());
        assert!(d.grey);
        let raw = task.cut_tiles(view(s, &img), &d);
        let out = task.make(view(s, &img), &mut rng);
        assert_eq!(out.targets, vec![TensorData::I64(vec![d.label as i64])]);
        let TensorData::F32(v) = &out.inputs[0] else {
            panic!("tiles must be F32")
        };
        let plane = task.tile() * task.tile();
        for (k, (p, r)) in v
            .chunks_exact(plane)
            .zip(raw.chunks_exact(plane))
            .enumerate()
        {
            let mean: f64 = p.iter().map(|&x| f64::from(x)).sum::<f64>() / plane as f64;
            let var: f64 = p
                .iter()
                .map(|&x| (f64::from(x) - mean).powi(2))
                .sum::<f64>()
                / plane as f64;
            assert!(mean.abs() < 1e-4, "plane {k} mean {mean}");
            assert!((var - 1.0).abs() < 1e-3, "plane {k} var {var}");
            // Order preserved: the brightest raw pixel is the largest normalised value.
            let imax = (0..plane)
                .max_by_key(|&i| (r[i], std::cmp::Reverse(i)))
                .unwrap();
            assert!(p.iter().all(|&x| x <= p[imax]));
        }
        // Greyscale: the three channels of a tile are equal.
        assert_eq!(v[..plane], v[plane..2 * plane]);
        // A flat image gives zeros, not NaN.
        let flat = vec![77u8; s * s * 3];
        let out = task.make(view(s, &flat), &mut Rng::new(1));
        let TensorData::F32(v) = &out.inputs[0] else {
            panic!()
        };
        assert!(v.iter().all(|&x| x == 0.0));
    }

    #[test]
    fn same_rng_same_sample_other_epoch_other_draw() {
        let s = 96;
        let img = noise_image(s, s as u64 + 100);
        let task = JigsawConfig::default().build(s).unwrap();
        let a = task.make(view(s, &img), &mut Rng::for_sample(3, "x.jpg", 0));
        let b = task.make(view(s, &img), &mut Rng::for_sample(3, "x.jpg", 0));
        assert_eq!(a, b);
        let c = task.make(view(s, &img), &mut Rng::for_sample(3, "x.jpg", 1));
        assert_ne!(a, c);
        assert_ne!(
            task.draw(&mut Rng::for_sample(3, "x.jpg", 0)),
            task.draw(&mut Rng::for_sample(3, "x.jpg", 1))
        );
    }

    #[test]
    fn save_load_round_trip_and_corrupt_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("perms.json");
        let set = PermutationSet::generate(9, 30, 4).unwrap();
        set.save(&path).unwrap();
        assert_eq!(PermutationSet::load(&path).unwrap(), set);
        // The config can use the file; a mismatch in size is refused with both sizes named.
        let cfg = JigsawConfig {
            permutations: 30,
            permutation_file: Some(path.clone()),
            ..JigsawConfig::default()
        };
        assert_eq!(cfg.build(96).unwrap().permutations(), &set);
        let err = JigsawConfig {
            permutations: 31,
            ..cfg.clone()
        }
        .build(96)
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("holds 30 permutations of 9 tiles") && err.contains("31"),
            "{err}"
        );
        let err = JigsawConfig {
            grid: 2,
            permutations: 20,
            ..cfg
        }
        .build(96)
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("asks for 20 permutations of 4 tiles (grid 2)"),
            "{err}"
        );

        let text = std::fs::read_to_string(&path).unwrap();
        let corrupt = |name: &str, body: String| {
            let p = dir.path().join(name);
            std::fs::write(&p, body).unwrap();
            PermutationSet::load(&p).unwrap_err().to_string()
        };
        // A repeated value in one row (the first row's first two entries made equal).
        let first_row = format!("{:?}", set.perms[0]);
        let mut bad_row = set.perms[0].clone();
        bad_row[1] = bad_row[0];
        let bad_row = format!("{bad_row:?}");
        assert!(text.contains(&first_row), "{first_row} not in file");
        let err = corrupt("dup.json", text.replacen(&first_row, &bad_row, 1));
        assert!(
            err.contains("not a permutation") && err.contains("repeated"),
            "{err}"
        );
        let err = corrupt(
            "range.json",
            text.replacen(
                &first_row,
                &format!("{:?}", [9u8, 1, 2, 3, 4, 5, 6, 7, 8]),
                1,
            ),
        );
        assert!(err.contains("out of range"), "{err}");
        let err = corrupt("trunc.json", text[..text.len() / 2].to_string());
        assert!(err.contains("not valid JSON"), "{err}");
        let err = corrupt(
            "count.json",
            text.replacen("\"count\": 30", "\"count\": 29", 1),
        );
        assert!(err.contains("count 29"), "{err}");
        let err = corrupt(
            "ham.json",
            text.replacen(
                &format!("\"min_hamming\": {}", set.min_hamming),
                &format!("\"min_hamming\": {}", set.min_hamming + 1),
                1,
            ),
        );
        assert!(
            err.contains(&format!("min_hamming {}", set.min_hamming + 1)),
            "{err}"
        );
        let second_row = format!("{:?}", set.perms[1]);
        let err = corrupt(
            "same.json",
            text.replacen(&second_row, &format!("{:?}", set.perms[0]), 1),
        );
        assert!(err.contains("repeats"), "{err}");
        assert!(
            PermutationSet::load(&dir.path().join("missing.json"))
                .unwrap_err()
                .to_string()
                .contains("cannot read")
        );
    }

    #[test]
    fn all_sizes_run_and_sizes_that_do_not_fit_are_refused() {
        for s in [32, 64, 96, 255] {
            let img = noise_image(s, s as u64 + 100);
            for grid in [2, 3, 4] {
                let task = small(grid, 20).build(s).unwrap();
                let out = task.make(view(s, &img), &mut Rng::new(s as u64));
                check_signature_and_preview(&task, view(s, &img), &out);
            }
        }
        let canonical = JigsawConfig::default().build(255).unwrap();
        assert_eq!((canonical.cell(), canonical.tile()), (85, 64));
        let err = |c: JigsawConfig, s: usize| c.build(s).unwrap_err().to_string();
        let e = err(
            JigsawConfig {
                tile: Some(40),
                ..small(3, 10)
            },
            96,
        );
        assert!(
            e.contains("tile 40 px does not fit in a 32 px cell; tiles of 1..=32 px fit"),
            "{e}"
        );
        let e = err(
            JigsawConfig {
                cell: Some(40),
                ..small(3, 10)
            },
            96,
        );
        assert!(e.contains("cells of 1..=32 px fit"), "{e}");
        let e = err(small(5, 10), 96);
        assert!(e.contains("grid must be 2, 3 or 4"), "{e}");
        let e = err(small(2, 25), 96);
        assert!(e.contains("between 2 and 24"), "{e}");
        let e = err(small(3, 1001), 96);
        assert!(e.contains("between 2 and 1000"), "{e}");
        let e = err(small(3, 10), 2);
        assert!(e.contains("at least 3 px"), "{e}");
        let e = err(
            JigsawConfig {
                grayscale_prob: 1.5,
                ..small(3, 10)
            },
            96,
        );
        assert!(e.contains("grayscale_prob"), "{e}");
        let e = err(
            JigsawConfig {
                grayscale_prob: f32::NAN,
                ..small(3, 10)
            },
            96,
        );
        assert!(e.contains("grayscale_prob"), "{e}");
    }

    #[test]
    fn config_parses_from_toml() {
        let c: JigsawConfig =
            toml::from_str("grid = 2\npermutations = 24\ntile = 30\npermutation_file = \"p.json\"")
                .unwrap();
        assert_eq!(c.grid, 2);
        assert_eq!(c.tile, Some(30));
        assert_eq!(c.permutation_file.as_deref(), Some(Path::new("p.json")));
        assert_eq!(
            toml::from_str::<JigsawConfig>("").unwrap(),
            JigsawConfig::default()
        );
        assert!(toml::from_str::<JigsawConfig>("tiles = 3").is_err());
    }
}
