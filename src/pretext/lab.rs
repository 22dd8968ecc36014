//! CIE L*a*b* for the colour pretext tasks: sRGB ⇄ linear RGB ⇄ XYZ (D65) ⇄ CIELAB (CIE 1976).
//!
//! What it is for: colorization (Zhang et al. 2016) feeds the network `L` and asks it for `ab`;
//! both come from here, for every image that streams through, so the 8-bit path is built for
//! speed (a compile-time 256-entry LUT for the sRGB decoding, a vectorisable cube root).
//!
//! What it guarantees:
//! - **The real sRGB transfer function** (IEC 61966-2-1:1999, the piecewise curve with the linear
//!   toe below 0.04045), not a 2.2 power law, and the **exact CIE ε/κ** piecewise cube root.
//! - **Bit-identical results on every machine**: the forward and inverse paths use only IEEE-754
//!   `+ - * /` (correctly rounded everywhere) — no libm `powf`/`cbrt`, whose last bit differs
//!   between platforms. The roots are computed by Newton/Halley iterations written out here, and
//!   the sRGB LUT is evaluated by the compiler (`const`), so it costs nothing at run time.
//! - **Accuracy**: the f32 round trip sRGB → Lab → sRGB is within ~1e-5 of the input on [0, 1]
//!   (tests check 1e-3 on a grid of 8-bit colours); pure red/green/blue/white/black match the
//!   published Lab values (Lindbloom's calculator) within 0.05.
//! - Lab → sRGB clamps to [0, 1] (Lab values outside the sRGB gamut have no sRGB colour).
//!
//! Layouts: single pixels are `[f32; 3]`; images are HWC `u8` in and planar (CHW) `f32` out:
//! `L` is one `n`-long plane, `ab` is the `a` plane followed by the `b` plane (`2n` values).
//!
//! Also here: [`L_HALF`], the one constant that scales colorization's network input, and
//! [`prelude`], the ONNX nodes that compute that input from RGB in an exported encoder; [`exp`],
//! an IEEE-only exponential for the pretext tasks' Gaussian weights and
//! log-uniform draws, so those tensors are bit-identical across machines too (like `rng::ln`).

pub mod prelude;

/// Colorization's network sees L ∈ [0, 100] as `(L − L_HALF) / L_HALF` ∈ [−1, 1] (the paper's
/// zero-centred input, scaled): the task's samples carry `L − L_HALF`, its batch feed divides by
/// `L_HALF`, and the exported encoder's [`prelude`] computes the same from RGB. It is the middle of
/// L's range and that range's half-width.
pub const L_HALF: f32 = 50.0;

// --- Constants, with their sources ---------------------------------------------------------------

/// sRGB → CIE XYZ (D65), linear RGB in [0, 1]. Source: Bruce Lindbloom, "RGB/XYZ Matrices"
/// (brucelindbloom.com), sRGB with D65 reference white — the matrix the IEC 61966-2-1 primaries
/// (R 0.64/0.33, G 0.30/0.60, B 0.15/0.06) give for the ASTM E308 D65 white. The standard prints it
/// rounded to 4 digits; these 7-digit values are the ones the usual Lab references (Lindbloom's
/// calculator, scikit-image, colour-science) are computed with, so our Lab matches theirs.
pub const SRGB_TO_XYZ: [[f64; 3]; 3] = [
    [0.412_456_4, 0.357_576_1, 0.180_437_5],
    [0.212_672_9, 0.715_152_2, 0.072_175_0],
    [0.019_333_9, 0.119_192_0, 0.950_304_1],
];

/// The D65 reference white (X, Y, Z) = the XYZ of sRGB white (1, 1, 1): the row sums of
/// [`SRGB_TO_XYZ`], equal to ASTM E308's D65 (0.95047, 1.00000, 1.08883) to 7 digits. Taking the
/// row sums (rather than the rounded published white) makes sRGB white exactly L=100, a=b=0.
pub const D65_WHITE: [f64; 3] = [
    SRGB_TO_XYZ[0][0] + SRGB_TO_XYZ[0][1] + SRGB_TO_XYZ[0][2],
    SRGB_TO_XYZ[1][0] + SRGB_TO_XYZ[1][1] + SRGB_TO_XYZ[1][2],
    SRGB_TO_XYZ[2][0] + SRGB_TO_XYZ[2][1] + SRGB_TO_XYZ[2][2],
];

/// CIE XYZ (D65) → linear sRGB: the exact inverse of [`SRGB_TO_XYZ`], computed by the compiler
/// (the rounded inverse printed in references would cost the round trip ~1e-7 for nothing).
pub const XYZ_TO_SRGB: [[f64; 3]; 3] = invert3(SRGB_TO_XYZ);

/// CIE ε = (6/29)³ = 216/24389: below this relative luminance the Lab curve is linear.
/// Source: CIE 15:2004, in the exact rational form (CIE's rounded 0.008856 leaves a tiny
/// discontinuity; the rational form makes the two pieces meet).
pub const EPSILON: f64 = 216.0 / 24389.0;
/// CIE κ = (29/3)³ = 24389/27: slope of the linear piece, `L = κ·Y` for `Y ≤ ε`. Source as ε.
pub const KAPPA: f64 = 24389.0 / 27.0;

// sRGB transfer function parameters, IEC 61966-2-1:1999 §5.2 (encoding) and §5.3 (decoding).
const SRGB_DECODE_KNEE: f64 = 0.040_45;
const SRGB_ENCODE_KNEE: f64 = 0.003_130_8;
const SRGB_SLOPE: f64 = 12.92;
const SRGB_OFFSET: f64 = 0.055;

// f32 copies for the hot path, with the white folded into the matrix rows (X/Xn, Y/Yn, Z/Zn).
const M_NORM: [[f32; 3]; 3] = normalise_rows(SRGB_TO_XYZ, D65_WHITE);
const EPSILON_F32: f32 = EPSILON as f32;
const KAPPA_F32: f32 = KAPPA as f32;
const KAPPA_EPSILON_F32: f32 = (KAPPA * EPSILON) as f32; // = 8: L at the knee

/// sRGB-encoded 8-bit value → linear light in [0, 1]: the decoding step of the 8-bit fast path.
/// Evaluated at compile time from [`srgb_to_linear_f64`], so it is exact to f32 rounding.
pub static SRGB8_TO_LINEAR: [f32; 256] = srgb8_lut();

// --- Transfer function ---------------------------------------------------------------------------

/// sRGB-encoded value → linear light (IEC 61966-2-1). Input is clamped to [0, 1]; NaN gives 0.
pub const fn srgb_to_linear_f64(c: f64) -> f64 {
    if c.is_nan() || c <= 0.0 {
        return 0.0;
    }
    let c = if c > 1.0 { 1.0 } else { c };
    if c <= SRGB_DECODE_KNEE {
        c / SRGB_SLOPE
    } else {
        // ((c + 0.055) / 1.055)^2.4 = (y^(1/5))^12; y in (0.0416, 1].
        let y = (c + SRGB_OFFSET) / (1.0 + SRGB_OFFSET);
        let r = root_from_above(y, 5);
        let r2 = r * r;
        let r4 = r2 * r2;
        r4 * r4 * r4
    }
}

/// Linear light → sRGB-encoded value (IEC 61966-2-1). Input is clamped to [0, 1]; NaN gives 0.
pub const fn linear_to_srgb_f64(l: f64) -> f64 {
    if l.is_nan() || l <= 0.0 {
        return 0.0;
    }
    let l = if l > 1.0 { 1.0 } else { l };
    if l <= SRGB_ENCODE_KNEE {
        l * SRGB_SLOPE
    } else {
        // 1.055 · l^(1/2.4) − 0.055, with l^(1/2.4) = (l^(1/12))^5; l in (0.0031, 1].
        let r = root_from_above(l, 12);
        let r2 = r * r;
        (1.0 + SRGB_OFFSET) * (r2 * r2 * r) - SRGB_OFFSET
    }
}

/// [`srgb_to_linear_f64`] in f32.
pub fn srgb_to_linear(c: f32) -> f32 {
    srgb_to_linear_f64(c as f64) as f32
}

/// [`linear_to_srgb_f64`] in f32.
pub fn linear_to_srgb(l: f32) -> f32 {
    linear_to_srgb_f64(l as f64) as f32
}

// --- Single pixels -------------------------------------------------------------------------------

/// Linear RGB → XYZ (D65), Y of white = 1.
pub fn linear_rgb_to_xyz(rgb: [f32; 3]) -> [f32; 3] {
    let m = &SRGB_TO_XYZ;
    let [r, g, b] = rgb.map(f64::from);
    [0, 1, 2].map(|i| (m[i][0] * r + m[i][1] * g + m[i][2] * b) as f32)
}

/// XYZ (D65) → linear RGB, not clamped (out-of-gamut colours give values outside [0, 1]).
pub fn xyz_to_linear_rgb(xyz: [f32; 3]) -> [f32; 3] {
    let m = &XYZ_TO_SRGB;
    let [x, y, z] = xyz.map(f64::from);
    [0, 1, 2].map(|i| (m[i][0] * x + m[i][1] * y + m[i][2] * z) as f32)
}

/// XYZ (D65) → CIELAB (CIE 1976): L in [0, 100] for colours no brighter than white.
pub fn xyz_to_lab(xyz: [f32; 3]) -> [f32; 3] {
    let w = D65_WHITE;
    let fx = lab_f(xyz[0] / w[0] as f32);
    let fy = lab_f(xyz[1] / w[1] as f32);
    let fz = lab_f(xyz[2] / w[2] as f32);
    [116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)]
}

/// CIELAB → XYZ (D65), the exact inverse of [`xyz_to_lab`].
pub fn lab_to_xyz(lab: [f32; 3]) -> [f32; 3] {
    let [l, a, b] = lab;
    let fy = (l + 16.0) / 116.0;
    let fx = fy + a / 500.0;
    let fz = fy - b / 200.0;
    let finv = |f: f32| {
        let f3 = f * f * f;
        if f3 > EPSILON_F32 {
            f3
        } else {
            (116.0 * f - 16.0) / KAPPA_F32
        }
    };
    // The Y piece is chosen on L itself (CIE: L > κε ⇔ Y > ε), which is exact at the knee.
    let yr = if l > KAPPA_EPSILON_F32 {
        fy * fy * fy
    } else {
        l / KAPPA_F32
    };
    let w = D65_WHITE;
    [
        finv(fx) * w[0] as f32,
        yr * w[1] as f32,
        finv(fz) * w[2] as f32,
    ]
}

/// sRGB in [0, 1] (clamped) → Lab.
pub fn rgb_to_lab(rgb: [f32; 3]) -> [f32; 3] {
    xyz_to_lab(linear_rgb_to_xyz(rgb.map(srgb_to_linear)))
}

/// Lab → sRGB in [0, 1], clamped (colours outside the sRGB gamut land on its surface).
pub fn lab_to_rgb(lab: [f32; 3]) -> [f32; 3] {
    xyz_to_linear_rgb(lab_to_xyz(lab)).map(linear_to_srgb)
}

/// 8-bit sRGB → Lab through the LUT: the per-pixel step of [`rgb8_to_lab`].
#[inline]
pub fn rgb8_to_lab_pixel(rgb: [u8; 3]) -> [f32; 3] {
    let r = SRGB8_TO_LINEAR[rgb[0] as usize];
    let g = SRGB8_TO_LINEAR[rgb[1] as usize];
    let b = SRGB8_TO_LINEAR[rgb[2] as usize];
    let m = &M_NORM;
    let fx = lab_f(m[0][0] * r + m[0][1] * g + m[0][2] * b);
    let fy = lab_f(m[1][0] * r + m[1][1] * g + m[1][2] * b);
    let fz = lab_f(m[2][0] * r + m[2][1] * g + m[2][2] * b);
    [116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)]
}

/// Lab → 8-bit sRGB (rounded, clamped).
pub fn lab_to_rgb8_pixel(lab: [f32; 3]) -> [u8; 3] {
    lab_to_rgb(lab).map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8)
}

// --- Whole images --------------------------------------------------------------------------------

/// RGB8 HWC (`3n` bytes) → (`L` plane of `n`, `ab` planes of `2n`: all `a`, then all `b`).
pub fn rgb8_to_lab(pixels: &[u8]) -> (Vec<f32>, Vec<f32>) {
    let n = pixels.len() / 3;
    let mut l = vec![0.0; n];
    let mut ab = vec![0.0; 2 * n];
    rgb8_to_lab_into(pixels, &mut l, &mut ab);
    (l, ab)
}

/// [`rgb8_to_lab`] into caller-owned buffers (no allocation). With `n = pixels.len() / 3`,
/// `l` must hold `n` values and `ab` `2n`; a trailing partial pixel is ignored.
///
/// # Panics
/// If the buffer lengths do not match `n` (a programming error, never a data error).
pub fn rgb8_to_lab_into(pixels: &[u8], l: &mut [f32], ab: &mut [f32]) {
    let n = pixels.len() / 3;
    assert!(
        l.len() == n && ab.len() == 2 * n,
        "rgb8_to_lab_into: {n} pixels need L of {n} and ab of {}, got {} and {}",
        2 * n,
        l.len(),
        ab.len()
    );
    // Three passes over planes instead of one per pixel: the first (table look-ups, matrix) is
    // scalar, the other two are branch-free arithmetic on contiguous f32 that the compiler
    // vectorises — together 2–3× faster than the per-pixel loop, with bit-identical results
    // (same operations on the same values; `rgb8_to_lab_pixel` is the reference).
    let (a_plane, b_plane) = ab.split_at_mut(n);
    let m = &M_NORM;
    // Pass 1: X/Xn → a plane, Y/Yn → L plane, Z/Zn → b plane.
    for (((px, y), x), z) in pixels
        .chunks_exact(3)
        .zip(l.iter_mut())
        .zip(a_plane.iter_mut())
        .zip(b_plane.iter_mut())
    {
        let r = SRGB8_TO_LINEAR[px[0] as usize];
        let g = SRGB8_TO_LINEAR[px[1] as usize];
        let b = SRGB8_TO_LINEAR[px[2] as usize];
        *x = m[0][0] * r + m[0][1] * g + m[0][2] * b;
        *y = m[1][0] * r + m[1][1] * g + m[1][2] * b;
        *z = m[2][0] * r + m[2][1] * g + m[2][2] * b;
    }
    // Pass 2: the companding function, plane by plane (a chained iterator would not vectorise).
    compand(l);
    compand(a_plane);
    compand(b_plane);
    // Pass 3: L, a, b from f(X), f(Y), f(Z).
    for ((y, x), z) in l.iter_mut().zip(a_plane.iter_mut()).zip(b_plane.iter_mut()) {
        let fy = *y;
        *x = 500.0 * (*x - fy);
        *z = 200.0 * (fy - *z);
        *y = 116.0 * fy - 16.0;
    }
}

/// [`lab_f`] over a plane, computed on both branches and selected, so the loop is branch-free
/// and vectorises; the values are those of [`lab_f`] exactly.
fn compand(plane: &mut [f32]) {
    for v in plane.iter_mut() {
        let t = *v;
        let root = cbrt_pos(t.max(EPSILON_F32));
        let linear = (KAPPA_F32 * t + 16.0) / 116.0;
        *v = if t > EPSILON_F32 { root } else { linear };
    }
}

/// `L` plane (`n`) + `ab` planes (`2n`) → RGB8 HWC (`3n` bytes). Out-of-gamut colours clamp.
/// `n` is `l.len()`; missing `ab` values (a short slice) are taken as 0 (grey).
pub fn lab_to_rgb8(l: &[f32], ab: &[f32]) -> Vec<u8> {
    let n = l.len();
    let mut out = Vec::with_capacity(3 * n);
    for (i, &ll) in l.iter().enumerate() {
        let a = ab.get(i).copied().unwrap_or(0.0);
        let b = ab.get(n + i).copied().unwrap_or(0.0);
        out.extend_from_slice(&lab_to_rgb8_pixel([ll, a, b]));
    }
    out
}

// --- Portable maths (IEEE + - * / only) ----------------------------------------------------------

/// The CIE Lab companding function: `t^(1/3)` above ε, the linear segment `(κt + 16)/116` below.
#[inline]
fn lab_f(t: f32) -> f32 {
    if t > EPSILON_F32 {
        cbrt_pos(t)
    } else {
        (KAPPA_F32 * t + 16.0) / 116.0
    }
}

/// Cube root of a positive, finite, normal `x` (the Lab path only calls it for `x > ε`).
/// A bit-level first guess (≈3 % off) and two Halley steps in f32 (cubic convergence:
/// 3e-2 → 1e-5 → f32 rounding): within 3 ulp of the true root (tested), ~5× faster than libm's
/// `cbrtf` and vectorisable. Only IEEE operations: identical on every machine.
#[inline]
pub fn cbrt_pos(x: f32) -> f32 {
    // Dividing the exponent (and mantissa bits) by 3 and re-biasing: Kahan's classic seed.
    let mut y = f32::from_bits(x.to_bits() / 3 + 0x2A51_4067);
    for _ in 0..2 {
        let y3 = y * y * y;
        y *= (y3 + 2.0 * x) / (2.0 * y3 + x);
    }
    y
}

/// `y^(1/n)` for `y` in (0, 1], by Newton's method from 1 (above the root, where Newton on the
/// convex `r^n − y` decreases monotonically); stops when an iterate no longer decreases, i.e. at
/// the root to the last bit. Only IEEE operations, usable in `const`.
const fn root_from_above(y: f64, n: u32) -> f64 {
    let nf = n as f64;
    let mut r = 1.0;
    let mut i = 0;
    while i < 200 {
        let mut rn1 = 1.0; // r^(n-1)
        let mut k = 1;
        while k < n {
            rn1 *= r;
            k += 1;
        }
        let next = ((nf - 1.0) * r + y / rn1) / nf;
        if next >= r {
            break;
        }
        r = next;
        i += 1;
    }
    r
}

/// `e^x` from IEEE arithmetic only (same bits on every machine), accurate to a few ulp.
/// Underflows to 0 below −745 and overflows to +∞ above 709.8; NaN gives NaN.
pub fn exp(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x > 709.78 {
        return f64::INFINITY;
    }
    if x < -745.2 {
        return 0.0;
    }
    // x = k·ln2 + r, |r| ≤ ln2/2, with ln2 split in two so k·LN2_HI is exact (Cody–Waite).
    // fdlibm's ln2_hi (32 significant bits, so k·LN2_HI is exact) and ln2_lo.
    const LN2_HI: f64 = f64::from_bits(0x3FE6_2E42_FEE0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3DEA_39EF_3579_3C76);
    let k = (x * std::f64::consts::LOG2_E).round();
    let r = (x - k * LN2_HI) - k * LN2_LO;
    // Taylor series to r^14 (|r| ≤ 0.347: the next term is 0.347^15/15! ≈ 1e-19), evaluated
    // in Estrin's scheme: independent pairs combined by r², r⁴, r⁸, so the dependency chain is 4
    // multiply-adds deep instead of 14 (3× faster than Horner; soft encodings call this a lot).
    const C: [f64; 15] = inverse_factorials();
    let r2 = r * r;
    let r4 = r2 * r2;
    let r8 = r4 * r4;
    let s0 = (C[0] + C[1] * r) + (C[2] + C[3] * r) * r2;
    let s1 = (C[4] + C[5] * r) + (C[6] + C[7] * r) * r2;
    let s2 = (C[8] + C[9] * r) + (C[10] + C[11] * r) * r2;
    let s3 = (C[12] + C[13] * r) + C[14] * r2;
    let sum = (s0 + s1 * r4) + (s2 + s3 * r4) * r8;
    // Multiply by 2^k in up to two steps so subnormal results are reached without overflow.
    let k = k as i64;
    let pow2 = |e: i64| f64::from_bits(((e + 1023) as u64) << 52);
    if k < -1000 {
        sum * pow2(k + 1000) * pow2(-1000)
    } else if k > 1000 {
        sum * pow2(k - 1000) * pow2(1000)
    } else {
        sum * pow2(k)
    }
}

// --- Compile-time helpers ------------------------------------------------------------------------

/// `1/k!` for k = 0..15.
const fn inverse_factorials() -> [f64; 15] {
    let mut c = [1.0f64; 15];
    let mut k = 1;
    while k < 15 {
        c[k] = c[k - 1] / k as f64;
        k += 1;
    }
    c
}

const fn invert3(m: [[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let c00 = m[1][1] * m[2][2] - m[1][2] * m[2][1];
    let c01 = m[1][2] * m[2][0] - m[1][0] * m[2][2];
    let c02 = m[1][0] * m[2][1] - m[1][1] * m[2][0];
    let det = m[0][0] * c00 + m[0][1] * c01 + m[0][2] * c02;
    [
        [
            c00 / det,
            (m[0][2] * m[2][1] - m[0][1] * m[2][2]) / det,
            (m[0][1] * m[1][2] - m[0][2] * m[1][1]) / det,
        ],
        [
            c01 / det,
            (m[0][0] * m[2][2] - m[0][2] * m[2][0]) / det,
            (m[0][2] * m[1][0] - m[0][0] * m[1][2]) / det,
        ],
        [
            c02 / det,
            (m[0][1] * m[2][0] - m[0][0] * m[2][1]) / det,
            (m[0][0] * m[1][1] - m[0][1] * m[1][0]) / det,
        ],
    ]
}

const fn normalise_rows(m: [[f64; 3]; 3], white: [f64; 3]) -> [[f32; 3]; 3] {
    let mut out = [[0.0f32; 3]; 3];
    let mut i = 0;
    while i < 3 {
        let mut j = 0;
        while j < 3 {
            out[i][j] = (m[i][j] / white[i]) as f32;
            j += 1;
        }
        i += 1;
    }
    out
}

const fn srgb8_lut() -> [f32; 256] {
    let mut lut = [0.0f32; 256];
    let mut i = 0;
    while i < 256 {
        lut[i] = srgb_to_linear_f64(i as f64 / 255.0) as f32;
        i += 1;
    }
    lut
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close3(got: [f32; 3], want: [f32; 3], tol: f32) -> bool {
        got.iter().zip(want).all(|(g, w)| (g - w).abs() <= tol)
    }

    #[test]
    fn known_lab_values_of_primaries_white_black() {
        // Lindbloom's CIE colour calculator, sRGB, D65, 2°.
        let cases: [([u8; 3], [f32; 3]); 5] = [
            ([255, 0, 0], [53.2408, 80.0925, 67.2032]),
            ([0, 255, 0], [87.7347, -86.1827, 83.1793]),
            ([0, 0, 255], [32.2970, 79.1875, -107.8602]),
            ([255, 255, 255], [100.0, 0.0, 0.0]),
            ([0, 0, 0], [0.0, 0.0, 0.0]),
        ];
        for (rgb, want) in cases {
            let fast = rgb8_to_lab_pixel(rgb);
            let exact = rgb_to_lab(rgb.map(|v| v as f32 / 255.0));
            assert!(
                close3(fast, want, 0.05),
                "{rgb:?}: fast {fast:?} vs {want:?}"
            );
            assert!(
                close3(exact, want, 0.05),
                "{rgb:?}: f32 {exact:?} vs {want:?}"
            );
        }
    }

    #[test]
    fn transfer_function_is_the_iec_curve() {
        // Spot values of the IEC 61966-2-1 decoding, and the knee continuity.
        assert_eq!(SRGB8_TO_LINEAR[0], 0.0);
        assert_eq!(SRGB8_TO_LINEAR[255], 1.0);
        let mid = f64::from(SRGB8_TO_LINEAR[128]);
        let want = ((128.0 / 255.0 + 0.055) / 1.055f64).powf(2.4);
        assert!((mid - want).abs() < 1e-7, "{mid} vs {want}");
        for (i, &lin) in SRGB8_TO_LINEAR.iter().enumerate() {
            let c = i as f64 / 255.0;
            let want = if c <= 0.04045 {
                c / 12.92
            } else {
                ((c + 0.055) / 1.055).powf(2.4)
            };
            assert!((f64::from(lin) - want).abs() < 1e-7, "{i}");
            assert!((linear_to_srgb_f64(srgb_to_linear_f64(c)) - c).abs() < 1e-12);
        }
        // Not gamma 2.2: at 0.5 the two differ by 0.0035 (and by much more near black).
        assert!((srgb_to_linear(0.5) - 0.5f32.powf(2.2)).abs() > 0.003);
        assert!((srgb_to_linear(0.04045) - 0.04045 / 12.92).abs() < 1e-9);
    }

    #[test]
    fn round_trip_on_8bit_grid_within_1e3() {
        let mut worst = 0.0f32;
        for r in (0..=255).step_by(5) {
            for g in (0..=255).step_by(5) {
                for b in (0..=255).step_by(5) {
                    let rgb = [r, g, b].map(|v: i32| v as f32 / 255.0);
                    let back = lab_to_rgb(rgb_to_lab(rgb));
                    let fast = lab_to_rgb(rgb8_to_lab_pixel([r as u8, g as u8, b as u8]));
                    for c in 0..3 {
                        worst = worst.max((back[c] - rgb[c]).abs());
                        worst = worst.max((fast[c] - rgb[c]).abs());
                    }
                }
            }
        }
        assert!(worst < 1e-3, "worst round-trip error {worst}");
    }

    #[test]
    fn lab_ranges_are_plausible() {
        let (mut lmin, mut lmax) = (f32::MAX, f32::MIN);
        let (mut amin, mut amax, mut bmin, mut bmax) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
        for r in (0..=255).step_by(15) {
            for g in (0..=255).step_by(15) {
                for b in (0..=255).step_by(15) {
                    let [l, a, bb] = rgb8_to_lab_pixel([r as u8, g as u8, b as u8]);
                    (lmin, lmax) = (lmin.min(l), lmax.max(l));
                    (amin, amax) = (amin.min(a), amax.max(a));
                    (bmin, bmax) = (bmin.min(bb), bmax.max(bb));
                }
            }
        }
        assert!(lmin >= 0.0 && lmax <= 100.0 + 1e-4, "L {lmin}..{lmax}");
        // sRGB's gamut: a ≈ −86..98, b ≈ −108..95.
        assert!((-90.0..-80.0).contains(&amin) && (95.0..100.0).contains(&amax));
        assert!((-110.0..-105.0).contains(&bmin) && (90.0..96.0).contains(&bmax));
    }

    #[test]
    fn image_api_matches_pixel_api_and_round_trips() {
        let pixels: Vec<u8> = (0..3 * 50).map(|i| (i * 37 % 256) as u8).collect();
        let (l, ab) = rgb8_to_lab(&pixels);
        assert_eq!((l.len(), ab.len()), (50, 100));
        for i in 0..50 {
            let p = rgb8_to_lab_pixel([pixels[3 * i], pixels[3 * i + 1], pixels[3 * i + 2]]);
            assert_eq!([l[i], ab[i], ab[50 + i]], p);
        }
        assert_eq!(lab_to_rgb8(&l, &ab), pixels);
    }

    #[test]
    fn portable_maths_match_libm() {
        for i in 0..2000 {
            let x = 0.0089 + i as f32 * 0.0006;
            // Within 3 ulp of the true root (f64 libm as the reference).
            let (got, want) = (f64::from(cbrt_pos(x)), f64::from(x).cbrt());
            let tol = 3.0 * f64::from(f32::EPSILON) * want;
            assert!((got - want).abs() <= tol, "cbrt({x}) = {got}, true {want}");
        }
        for &x in &[
            -745.0, -700.0, -50.5, -1.0, -1e-3, 0.0, 1e-9, 0.3, 1.0, 2.5, 88.0, 709.0,
        ] {
            let (got, want) = (exp(x), f64::exp(x));
            assert!(
                (got - want).abs() <= 4.0 * f64::EPSILON * want || got == want,
                "exp({x}) = {got}, libm {want}"
            );
        }
        assert_eq!(exp(-800.0), 0.0);
        assert_eq!(exp(800.0), f64::INFINITY);
        // Subnormal range.
        let (got, want) = (exp(-740.0), f64::exp(-740.0));
        assert!((got - want).abs() <= 1e-10 * want, "{got} {want}");
    }

    #[test]
    fn white_is_exactly_neutral() {
        let w = rgb8_to_lab_pixel([255, 255, 255]);
        assert!((w[0] - 100.0).abs() < 1e-4 && w[1].abs() < 1e-4 && w[2].abs() < 1e-4);
        // Greys are neutral too: a = b = 0 up to rounding.
        for v in 0..=255u8 {
            let [_, a, b] = rgb8_to_lab_pixel([v, v, v]);
            assert!(a.abs() < 1e-3 && b.abs() < 1e-3, "{v}: {a} {b}");
        }
    }
}
