//! The softmax along axis 1 and the position-wise walk the softmax losses
//! share.
//!
//! An `(N, C, S...)` array holds, at every position `(n, s)`, a class vector
//! along axis 1. In standard layout each class plane of a sample is one
//! contiguous block of `S = Π S_i` elements, so the walk visits each sample
//! in tiles of up to [`TILE`] positions: for every class `c` the tile's
//! values are one contiguous run of the plane `c`. A loss gets a [`Block`]
//! (the tiles of input, target, weights and gradient at the same positions)
//! and does its arithmetic on whole class runs, which keeps the inner loops
//! branch-free and contiguous. Operands in any other layout are copied to
//! standard layout first.

use std::borrow::Cow;

use ndarray::{ArrayRef, Dimension};

use super::{all_finite, dispatch};
use crate::{Error, Float, Result};

/// The most positions per tile: long enough class runs (2 KiB of `f32`)
/// for the prefetchers to follow the `C` planes of each operand at once
/// (with 128 positions, cross-entropy at 2^24 elements ran half as fast).
pub(crate) const TILE: usize = 512;

/// Positions per tile for `classes` classes: [`TILE`], fewer when the
/// classes are many, so that a tile's per-class buffers (`C·tile` values
/// each) stay within about 32 KiB of `f32`.
pub(crate) fn tile(classes: usize) -> usize {
    (8192 / classes.max(1)).clamp(16, TILE) / 16 * 16
}

/// The `(N, C, S)` sizes of an `(N, C, ...)` shape: samples, classes and
/// positions per sample.
pub(crate) fn dims(shape: &[usize]) -> Result<(usize, usize, usize)> {
    match shape {
        [n, c, rest @ ..] => Ok((*n, *c, rest.iter().product())),
        _ => Err(Error::BadShape {
            operand: "input",
            shape: shape.to_vec(),
            requirement: "a softmax over classes needs a class axis: shape (N, C, ...)",
        }),
    }
}

/// One tile of one operand: for class `c`, the values at the tile's
/// positions are [`Planes::class`]`(c)`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Planes<'a, T> {
    data: &'a [T],
    stride: usize,
    start: usize,
    len: usize,
}

impl<'a, T> Planes<'a, T> {
    /// The tile's run of class `c` (`len` positions).
    #[inline(always)]
    pub(crate) fn class(&self, c: usize) -> &'a [T] {
        &self.data[c * self.stride + self.start..][..self.len]
    }
}

/// The gradient's tile, written class by class.
#[derive(Debug)]
pub(crate) struct PlanesMut<'a, T> {
    data: &'a mut [T],
    stride: usize,
    start: usize,
    len: usize,
}

impl<T> PlanesMut<'_, T> {
    /// The tile's run of class `c` (`len` positions).
    #[inline(always)]
    pub(crate) fn class(&mut self, c: usize) -> &mut [T] {
        &mut self.data[c * self.stride + self.start..][..self.len]
    }
}

/// The operands' tiles at the same positions of sample `n`.
#[derive(Debug)]
pub(crate) struct Block<'a, A> {
    /// The sample (index of axis 0).
    pub(crate) n: usize,
    /// The number of classes `C`.
    pub(crate) classes: usize,
    /// The number of positions in the tile (`1..=TILE`).
    pub(crate) len: usize,
    pub(crate) x: Planes<'a, A>,
    pub(crate) y: Planes<'a, A>,
    pub(crate) w: Option<Planes<'a, A>>,
    pub(crate) g: Option<PlanesMut<'a, A>>,
}

/// The operand's elements in standard (row-major) order, borrowed when the
/// array already is in standard layout.
fn standard<A: Float, D: Dimension>(a: &ArrayRef<A, D>) -> Cow<'_, [A]> {
    match a.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(a.iter().copied().collect()),
    }
}

/// Walks `(N, C, ...)` operands (shapes already checked equal, at least two
/// axes) tile by tile, calling `f` on every [`Block`]; returns whether every
/// call returned `true`. When `grad` is given, `f` must write every element
/// of the block's gradient tile. Each call goes through [`dispatch::run`]:
/// `f` should be an `#[inline(always)]` closure.
pub(crate) fn walk<A: Float, D: Dimension>(
    input: &ArrayRef<A, D>,
    target: &ArrayRef<A, D>,
    weights: Option<&ArrayRef<A, D>>,
    grad: Option<&mut ArrayRef<A, D>>,
    mut f: impl FnMut(Block<'_, A>) -> bool,
) -> Result<bool> {
    let (samples, classes, positions) = dims(input.shape())?;
    let x = standard(input);
    let y = standard(target);
    let w = weights.map(standard);
    let sample_len = classes * positions;
    if sample_len == 0 {
        return Ok(true);
    }
    let tile = tile(classes);
    let mut run = |g: Option<&mut [A]>| {
        let mut ok = true;
        let mut g = g;
        for n in 0..samples {
            let range = n * sample_len..(n + 1) * sample_len;
            let mut g_sample = g.as_deref_mut().map(|g| &mut g[range.clone()]);
            let mut start = 0;
            while start < positions {
                let len = tile.min(positions - start);
                let planes = |data| Planes {
                    data,
                    stride: positions,
                    start,
                    len,
                };
                let block = Block {
                    n,
                    classes,
                    len,
                    x: planes(&x[range.clone()]),
                    y: planes(&y[range.clone()]),
                    w: w.as_deref().map(|w| planes(&w[range.clone()])),
                    g: g_sample.as_deref_mut().map(|data| PlanesMut {
                        data,
                        stride: positions,
                        start,
                        len,
                    }),
                };
                ok &= dispatch::run(
                    #[inline(always)]
                    || f(block),
                );
                start += len;
            }
        }
        ok
    };
    Ok(match grad {
        None => run(None),
        Some(grad) => match grad.as_slice_mut() {
            Some(g) => run(Some(g)),
            None => {
                let mut buffer = vec![A::zero(); grad.len()];
                let ok = run(Some(&mut buffer));
                for (g, v) in grad.iter_mut().zip(buffer) {
                    *g = v;
                }
                ok
            }
        },
    })
}

/// Per-tile buffers for the softmax: `p[c·tile + j]` and, per position,
/// the log-sum-exp (so that `ln p_c = x_c - lse`).
#[derive(Debug, Clone)]
pub(crate) struct Softmax<A> {
    classes: usize,
    tile: usize,
    p: Vec<A>,
    lse: Vec<A>,
    max: Vec<A>,
    sum: Vec<A>,
}

impl<A: Float> Softmax<A> {
    pub(crate) fn new(classes: usize) -> Self {
        let tile = tile(classes);
        Self {
            classes,
            tile,
            p: vec![A::zero(); classes * tile],
            lse: vec![A::zero(); tile],
            max: vec![A::zero(); tile],
            sum: vec![A::zero(); tile],
        }
    }

    /// Computes the softmax of the tile `x` (all classes at each position)
    /// and its log-sum-exp ([`Softmax::lse`]).
    #[inline(always)]
    pub(crate) fn compute(&mut self, x: &Planes<'_, A>) {
        self.fill(x, true);
    }

    /// As [`Softmax::compute`], without the log-sum-exp (one `ln` per
    /// position less, for the losses that only use `p`).
    #[inline(always)]
    pub(crate) fn compute_p(&mut self, x: &Planes<'_, A>) {
        self.fill(x, false);
    }

    /// The softmax of the tile `x`, shifted by the per-position maximum so
    /// that every `exp` is `≤ 1`; with `lse`, also the log-sum-exp.
    #[inline(always)]
    fn fill(&mut self, x: &Planes<'_, A>, lse: bool) {
        let len = x.len;
        let max = &mut self.max[..len];
        max.copy_from_slice(x.class(0));
        for c in 1..self.classes {
            for (m, &v) in max.iter_mut().zip(x.class(c)) {
                // `max`, not a select: LLVM turns `*m = if v > *m { v }
                // else { *m }` into a masked store, which made this loop
                // a sixth of the whole softmax loss. (A NaN is caught by
                // the losses' validation either way.)
                *m = m.max(v);
            }
        }
        let sum = &mut self.sum[..len];
        sum.fill(A::zero());
        for c in 0..self.classes {
            let p = &mut self.p[c * self.tile..][..len];
            for ((p, &v), &m) in p.iter_mut().zip(x.class(c)).zip(max.iter()) {
                *p = (v - m).fast_exp();
            }
            for (s, &p) in sum.iter_mut().zip(p.iter()) {
                *s += p;
            }
        }
        if lse {
            for ((l, &s), &m) in self.lse[..len].iter_mut().zip(sum.iter()).zip(max.iter()) {
                *l = m + s.fast_ln();
            }
        }
        for s in sum.iter_mut() {
            *s = A::one() / *s;
        }
        for c in 0..self.classes {
            let p = &mut self.p[c * self.tile..][..len];
            for (p, &inv) in p.iter_mut().zip(sum.iter()) {
                *p *= inv;
            }
        }
    }

    /// `p_c` at the tile's positions.
    #[inline(always)]
    pub(crate) fn p(&self, c: usize, len: usize) -> &[A] {
        &self.p[c * self.tile..][..len]
    }

    /// The log-sum-exp at the tile's positions (after [`Softmax::compute`]).
    #[inline(always)]
    pub(crate) fn lse(&self, len: usize) -> &[A] {
        &self.lse[..len]
    }
}

/// Per-tile scratch of `C·tile` values plus one row of `tile`: the
/// per-element `∂L/∂p_c` and its per-position sum, for the chain through
/// the softmax.
#[derive(Debug, Clone)]
pub(crate) struct Chain<A> {
    classes: usize,
    tile: usize,
    dp: Vec<A>,
    dot: Vec<A>,
}

impl<A: Float> Chain<A> {
    pub(crate) fn new(classes: usize) -> Self {
        let tile = tile(classes);
        Self {
            classes,
            tile,
            dp: vec![A::zero(); classes * tile],
            dot: vec![A::zero(); tile],
        }
    }

    /// The buffer for `∂L/∂p_c` at the tile's positions.
    #[inline(always)]
    pub(crate) fn dp_mut(&mut self, c: usize, len: usize) -> &mut [A] {
        &mut self.dp[c * self.tile..][..len]
    }

    /// Writes `∂L/∂z_k = p_k·(∂L/∂p_k - Σ_c p_c·∂L/∂p_c)` (the softmax's
    /// Jacobian applied to the `dp` buffer) into `g`; returns whether every
    /// value is finite.
    #[inline(always)]
    pub(crate) fn write(
        &mut self,
        softmax: &Softmax<A>,
        len: usize,
        g: &mut PlanesMut<'_, A>,
    ) -> bool {
        let dot = &mut self.dot[..len];
        dot.fill(A::zero());
        for c in 0..self.classes {
            let dp = &self.dp[c * self.tile..][..len];
            for ((d, &v), &p) in dot.iter_mut().zip(dp).zip(softmax.p(c, len)) {
                *d += v * p;
            }
        }
        let mut ok = true;
        for c in 0..self.classes {
            let dp = &self.dp[c * self.tile..][..len];
            for (((g, &v), &p), &d) in g
                .class(c)
                .iter_mut()
                .zip(dp)
                .zip(softmax.p(c, len))
                .zip(dot.iter())
            {
                *g = p * (v - d);
            }
            ok &= all_finite(g.class(c));
        }
        ok
    }

    /// As [`Chain::write`] when the buffer holds `g_c = p_c·∂L/∂p_c`
    /// (finite even where `p_c` underflows to 0):
    /// `∂L/∂z_k = g_k - p_k·Σ_c g_c`.
    #[inline(always)]
    pub(crate) fn write_scaled(
        &mut self,
        softmax: &Softmax<A>,
        len: usize,
        g: &mut PlanesMut<'_, A>,
    ) -> bool {
        let total = &mut self.dot[..len];
        total.fill(A::zero());
        for c in 0..self.classes {
            for (t, &v) in total.iter_mut().zip(&self.dp[c * self.tile..][..len]) {
                *t += v;
            }
        }
        let mut ok = true;
        for c in 0..self.classes {
            let dp = &self.dp[c * self.tile..][..len];
            for (((g, &v), &p), &t) in g
                .class(c)
                .iter_mut()
                .zip(dp)
                .zip(softmax.p(c, len))
                .zip(total.iter())
            {
                *g = v - p * t;
            }
            ok &= all_finite(g.class(c));
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array3, ShapeBuilder};

    #[test]
    fn softmax_is_stable_and_normalised() {
        let x = Array3::from_shape_vec((1, 3, 2), vec![1e3, -1e3, 0.0, 0.0, -1e3, 1e3]).unwrap();
        let y = Array3::<f64>::zeros((1, 3, 2));
        let mut sm = Softmax::new(3);
        let ok = walk(&x, &y, None, None, |b| {
            sm.compute(&b.x);
            let p0 = sm.p(0, b.len).to_vec();
            let p2 = sm.p(2, b.len).to_vec();
            assert_eq!(p0[0], 1.0);
            assert_eq!(p2[1], 1.0);
            assert!((sm.lse(b.len)[0] - 1e3).abs() < 1e-12);
            true
        })
        .unwrap();
        assert!(ok);
    }

    #[test]
    fn walk_covers_every_element_in_any_layout() {
        let f = |(n, c, s): (usize, usize, usize)| (n * 1000 + c * 300 + s) as f64;
        let x = Array3::from_shape_fn((2, 3, 300), f);
        let t = Array3::from_shape_fn((2, 3, 300).f(), f);
        assert!(!t.is_standard_layout());
        let mut grad = Array3::<f64>::zeros((2, 3, 300).f());
        let ok = walk(&t, &t, None, Some(&mut grad), |mut b| {
            let g = b.g.as_mut().unwrap();
            for c in 0..b.classes {
                g.class(c).copy_from_slice(b.x.class(c));
            }
            true
        })
        .unwrap();
        assert!(ok);
        assert_eq!(grad, x);
    }
}
