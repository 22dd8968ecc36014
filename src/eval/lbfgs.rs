//! L-BFGS: minimises a smooth function given its value and gradient (Nocedal & Wright, alg. 7.5).
//!
//! Guarantees:
//! - Deterministic: the iterates depend only on the starting point and the function.
//! - Never diverges silently: every accepted step decreases the value (Armijo condition); if no
//!   step along the search direction decreases it, the search stops and says it did not converge
//!   (unless the gradient was already small). Curvature pairs with `sᵀy ≤ 0` are skipped, so the
//!   implicit Hessian approximation stays positive definite on non-convex functions too.
//! - Stops when the largest gradient component is below `gradient_tolerance`, when one iteration
//!   improves the value by less than `relative_decrease` (relative), or after `max_iterations`.

use std::collections::VecDeque;

/// Stopping rules and memory size.
#[derive(Debug, Clone, PartialEq)]
pub struct LbfgsOptions {
    /// Curvature pairs kept (the "m" of L-BFGS).
    pub memory: usize,
    pub max_iterations: usize,
    /// Stop when `max |∇f| ≤ gradient_tolerance`.
    pub gradient_tolerance: f64,
    /// Stop when `f_old − f_new ≤ relative_decrease · max(|f_old|, |f_new|, 1)`.
    pub relative_decrease: f64,
}

impl Default for LbfgsOptions {
    fn default() -> Self {
        LbfgsOptions {
            memory: 10,
            max_iterations: 500,
            gradient_tolerance: 1e-5,
            relative_decrease: 1e-10,
        }
    }
}

/// How a minimisation ended.
#[derive(Debug, Clone, PartialEq)]
pub struct LbfgsOutcome {
    pub value: f64,
    pub iterations: usize,
    /// Calls of the function (line-search trials included).
    pub evaluations: usize,
    /// `max |∇f|` at the returned point.
    pub gradient_norm: f64,
    /// A stopping rule was met (rather than the iteration limit or a failed line search).
    pub converged: bool,
}

fn dotf(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// Minimises `f` from `x` (updated in place). `f(x, grad)` returns the value and writes the
/// gradient into `grad`.
pub fn minimize(
    x: &mut [f64],
    mut f: impl FnMut(&[f64], &mut [f64]) -> f64,
    options: &LbfgsOptions,
) -> LbfgsOutcome {
    const ARMIJO: f64 = 1e-4;
    const MAX_BACKTRACKS: usize = 60;
    let n = x.len();
    let mut g = vec![0.0; n];
    let mut fx = f(x, &mut g);
    let mut outcome = LbfgsOutcome {
        value: fx,
        iterations: 0,
        evaluations: 1,
        gradient_norm: max_abs(&g),
        converged: false,
    };
    if !fx.is_finite() {
        return outcome;
    }
    let mut pairs: VecDeque<(Vec<f64>, Vec<f64>, f64)> = VecDeque::with_capacity(options.memory);
    let mut d = vec![0.0; n];
    let mut x_new = vec![0.0; n];
    let mut g_new = vec![0.0; n];
    let mut alphas = vec![0.0; options.memory.max(1)];
    for iteration in 0..options.max_iterations {
        outcome.iterations = iteration;
        outcome.gradient_norm = max_abs(&g);
        if outcome.gradient_norm <= options.gradient_tolerance {
            outcome.converged = true;
            return outcome;
        }
        // Two-loop recursion: d = −H·g.
        d.copy_from_slice(&g);
        for (i, (s, y, rho)) in pairs.iter().enumerate().rev() {
            let a = rho * dotf(s, &d);
            alphas[i] = a;
            d.iter_mut().zip(y).for_each(|(di, yi)| *di -= a * yi);
        }
        if let Some((s, y, _)) = pairs.back() {
            let gamma = dotf(s, y) / dotf(y, y);
            d.iter_mut().for_each(|di| *di *= gamma);
        }
        for (i, (s, y, rho)) in pairs.iter().enumerate() {
            let b = rho * dotf(y, &d);
            let a = alphas[i];
            d.iter_mut().zip(s).for_each(|(di, si)| *di += (a - b) * si);
        }
        d.iter_mut().for_each(|di| *di = -*di);
        let mut slope = dotf(&g, &d);
        if slope.is_nan() || slope >= 0.0 {
            // Not a descent direction (numerical trouble): restart from steepest descent.
            pairs.clear();
            d.iter_mut().zip(&g).for_each(|(di, gi)| *di = -gi);
            slope = -dotf(&g, &g);
        }
        let mut step = if pairs.is_empty() {
            (1.0 / dotf(&d, &d).sqrt()).min(1.0)
        } else {
            1.0
        };
        let mut accepted = None;
        for _ in 0..MAX_BACKTRACKS {
            x_new
                .iter_mut()
                .zip(x.iter().zip(&d))
                .for_each(|(xn, (xi, di))| *xn = xi + step * di);
            let f_new = f(&x_new, &mut g_new);
            outcome.evaluations += 1;
            if f_new.is_finite() && f_new <= fx + ARMIJO * step * slope {
                accepted = Some(f_new);
                break;
            }
            step *= 0.5;
        }
        let Some(f_new) = accepted else {
            return outcome; // no decrease along d: as far as this precision allows
        };
        let s: Vec<f64> = x_new.iter().zip(x.iter()).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = g_new.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dotf(&s, &y);
        if sy > 1e-12 * dotf(&y, &y).max(f64::MIN_POSITIVE) {
            if pairs.len() == options.memory {
                pairs.pop_front();
            }
            if options.memory > 0 {
                pairs.push_back((s, y, 1.0 / sy));
            }
        }
        let decrease = fx - f_new;
        x.copy_from_slice(&x_new);
        std::mem::swap(&mut g, &mut g_new);
        fx = f_new;
        outcome.value = fx;
        outcome.gradient_norm = max_abs(&g);
        if decrease <= options.relative_decrease * fx.abs().max(f_new.abs()).max(1.0) {
            outcome.iterations = iteration + 1;
            outcome.converged = true;
            return outcome;
        }
    }
    outcome.iterations = options.max_iterations;
    outcome.gradient_norm = max_abs(&g);
    outcome.converged = outcome.gradient_norm <= options.gradient_tolerance;
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reaches_the_minimum_of_a_convex_quadratic() {
        // f(x) = ½ xᵀAx − bᵀx with A symmetric positive definite (condition number ~ 100).
        let n = 6;
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = if i == j {
                    1.0 + 20.0 * i as f64
                } else {
                    0.5 / (1.0 + (i as f64 - j as f64).abs())
                };
            }
        }
        let b: Vec<f64> = (0..n).map(|i| 1.0 - i as f64 * 0.3).collect();
        let f = |x: &[f64], g: &mut [f64]| {
            let mut v = 0.0;
            for i in 0..n {
                let ax: f64 = (0..n).map(|j| a[i * n + j] * x[j]).sum();
                g[i] = ax - b[i];
                v += 0.5 * x[i] * ax - b[i] * x[i];
            }
            v
        };
        let mut x = vec![0.0; n];
        let options = LbfgsOptions {
            gradient_tolerance: 1e-10,
            relative_decrease: 0.0,
            ..Default::default()
        };
        let out = minimize(&mut x, f, &options);
        assert!(out.converged, "{out:?}");
        // The optimum satisfies Ax = b.
        for i in 0..n {
            let ax: f64 = (0..n).map(|j| a[i * n + j] * x[j]).sum();
            assert!((ax - b[i]).abs() < 1e-8, "row {i}: {ax} vs {}", b[i]);
        }
        assert!(out.iterations < 60, "{out:?}");
    }

    #[test]
    fn finds_the_rosenbrock_valley_floor() {
        let f = |x: &[f64], g: &mut [f64]| {
            let (a, b) = (1.0 - x[0], x[1] - x[0] * x[0]);
            g[0] = -2.0 * a - 400.0 * x[0] * b;
            g[1] = 200.0 * b;
            a * a + 100.0 * b * b
        };
        let mut x = vec![-1.2, 1.0];
        let options = LbfgsOptions {
            gradient_tolerance: 1e-9,
            relative_decrease: 0.0,
            ..Default::default()
        };
        let out = minimize(&mut x, f, &options);
        assert!(out.converged, "{out:?}");
        assert!(
            (x[0] - 1.0).abs() < 1e-6 && (x[1] - 1.0).abs() < 1e-6,
            "{x:?}"
        );
    }
}
