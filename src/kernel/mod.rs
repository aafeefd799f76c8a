//! The two kernels every loss is built on, and the numerics they share.
//!
//! * [`pixel`]: losses that are a (weighted) sum of a per-element function
//!   `ℓ(x, y)`: one fused pass that validates, accumulates and writes the
//!   gradient.
//! * [`region`]: losses that are a function of a few sums per group (the
//!   whole tensor, or each sample): one pass for the sums, one for the
//!   gradient.
//!
//! Both accumulate in chunks: `LANES` partial sums in the element type over
//! `CHUNK` elements, then the chunk total in `f64`. An `f32` loss over
//! millions of elements thus stays within a few `f32` ulps of the `f64` one,
//! where a running `f32` sum would drift by `n·ε`.

pub(crate) mod math;
pub(crate) mod pixel;
pub(crate) mod region;

use ndarray::{ArrayRef, Dimension};

use crate::error::unravel;
use crate::{Error, Float};

/// Elements per partial sum in the element type.
pub(crate) const CHUNK: usize = 512;
/// Independent accumulators within a chunk (breaks the add dependency chain
/// and shortens each partial sum to `CHUNK / LANES` terms).
pub(crate) const LANES: usize = 8;

/// Running sum of `K` quantities: per-element values go into an element-type
/// accumulator that is flushed into `f64` every [`CHUNK`] elements. Used by
/// the strided (non-contiguous) paths; the slice paths sum whole chunks.
pub(crate) struct ChunkedSum<A, const K: usize> {
    partial: [A; K],
    count: usize,
    total: [f64; K],
}

impl<A: Float, const K: usize> ChunkedSum<A, K> {
    pub(crate) fn new() -> Self {
        Self {
            partial: [A::zero(); K],
            count: 0,
            total: [0.0; K],
        }
    }

    #[inline]
    pub(crate) fn add(&mut self, values: [A; K]) {
        for (p, v) in self.partial.iter_mut().zip(values) {
            *p += v;
        }
        self.count += 1;
        if self.count == CHUNK {
            self.flush();
        }
    }

    fn flush(&mut self) {
        for (t, p) in self.total.iter_mut().zip(&mut self.partial) {
            *t += p.as_f64();
            *p = A::zero();
        }
        self.count = 0;
    }

    pub(crate) fn finish(mut self) -> [f64; K] {
        self.flush();
        self.total
    }
}

/// Sums `LANES` accumulators pairwise into an `f64`.
#[inline]
pub(crate) fn sum_lanes<A: Float>(lanes: &[A; LANES]) -> f64 {
    let mut half = [0.0f64; LANES / 2];
    for (h, pair) in half.iter_mut().zip(lanes.chunks_exact(2)) {
        *h = pair[0].as_f64() + pair[1].as_f64();
    }
    (half[0] + half[1]) + (half[2] + half[3])
}

/// The domain checks shared by the losses: what `input` and `target` may hold.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Domain {
    /// The input holds probabilities (must be in `[0, 1]`), not logits.
    pub(crate) probabilities: bool,
    /// The target must be exactly 0 or 1.
    pub(crate) binary_target: bool,
}

impl Domain {
    /// Whether an (input, target) pair is acceptable, written without
    /// branches so that it folds into the kernels' loops.
    #[inline(always)]
    pub(crate) fn accepts<A: Float>(self, x: A, y: A) -> bool {
        let zero = A::zero();
        let one = A::one();
        let x_ok = x.is_finite() & (!self.probabilities | ((x >= zero) & (x <= one)));
        let y_ok = (y >= zero) & (y <= one) & (!self.binary_target | (y == zero) | (y == one));
        x_ok & y_ok
    }

    /// The first bad element in row-major order, as an error; `None` if
    /// every element is acceptable. Only called after a kernel saw a fault,
    /// so the happy path never pays for it.
    pub(crate) fn diagnose<A: Float, D: Dimension>(
        self,
        input: &ArrayRef<A, D>,
        target: &ArrayRef<A, D>,
        weights: Option<&ArrayRef<A, D>>,
    ) -> Option<Error> {
        let shape = input.shape();
        let zero = A::zero();
        let one = A::one();
        let mut weights = weights.map(|w| w.iter());
        for (flat, (&x, &y)) in input.iter().zip(target.iter()).enumerate() {
            let index = || unravel(flat, shape);
            if !x.is_finite() {
                return Some(Error::NonFinite {
                    operand: "input",
                    index: index(),
                    value: x.as_f64(),
                });
            }
            if self.probabilities && !(x >= zero && x <= one) {
                return Some(Error::OutOfRange {
                    operand: "input",
                    index: index(),
                    value: x.as_f64(),
                    allowed: "[0, 1] (Input::Probabilities)",
                });
            }
            if !(y >= zero && y <= one) {
                return Some(Error::OutOfRange {
                    operand: "target",
                    index: index(),
                    value: y.as_f64(),
                    allowed: "[0, 1]",
                });
            }
            if self.binary_target && y != zero && y != one {
                return Some(Error::OutOfRange {
                    operand: "target",
                    index: index(),
                    value: y.as_f64(),
                    allowed: "{0, 1} (a binary mask)",
                });
            }
            if let Some(w) = weights.as_mut().and_then(Iterator::next) {
                if !w.is_finite() {
                    return Some(Error::NonFinite {
                        operand: "weights",
                        index: index(),
                        value: w.as_f64(),
                    });
                }
                if *w < zero {
                    return Some(Error::OutOfRange {
                        operand: "weights",
                        index: index(),
                        value: w.as_f64(),
                        allowed: ">= 0",
                    });
                }
            }
        }
        None
    }
}

/// A weight is acceptable when finite and non-negative (branch-free).
#[inline(always)]
pub(crate) fn weight_ok<A: Float>(w: A) -> bool {
    (w >= A::zero()) & (w < A::infinity())
}

/// The operands as slices in one common memory order, when they all have
/// one (contiguous, same strides); `None` sends the caller to the strided path.
pub(crate) fn common_slices<A, D: Dimension, const N: usize>(
    arrays: [&ArrayRef<A, D>; N],
) -> Option<[&[A]; N]> {
    let strides = arrays.first()?.strides();
    let mut out = [&[][..]; N];
    for (slot, a) in out.iter_mut().zip(arrays) {
        if a.strides() != strides && a.len() > 1 {
            return None;
        }
        *slot = a.as_slice_memory_order()?;
    }
    Some(out)
}

/// Whether `grad` is contiguous with the strides of `like` (so that a slice
/// index means the same element in both).
pub(crate) fn grad_matches<A, D: Dimension>(grad: &ArrayRef<A, D>, like: &ArrayRef<A, D>) -> bool {
    (grad.strides() == like.strides() || grad.len() <= 1) && grad.as_slice_memory_order().is_some()
}

/// Sums `K` quantities over the indices `0..len`, produced by `term(i)`
/// together with a validity flag, in [`CHUNK`]-sized blocks of [`LANES`]
/// element-type accumulators with `f64` block totals. Returns the totals
/// and whether every term was valid.
#[inline(always)]
pub(crate) fn chunked_sum<A: Float, const K: usize>(
    len: usize,
    mut term: impl FnMut(usize) -> ([A; K], bool),
) -> ([f64; K], bool) {
    let mut total = [0.0f64; K];
    let mut ok = true;
    let mut start = 0;
    while start < len {
        let end = (start + CHUNK).min(len);
        let mut lanes = [[A::zero(); LANES]; K];
        let mut i = start;
        while i + LANES <= end {
            for k in 0..LANES {
                let (values, good) = term(i + k);
                for (lane, v) in lanes.iter_mut().zip(values) {
                    lane[k] += v;
                }
                ok &= good;
            }
            i += LANES;
        }
        while i < end {
            let (values, good) = term(i);
            for (lane, v) in lanes.iter_mut().zip(values) {
                lane[0] += v;
            }
            ok &= good;
            i += 1;
        }
        for (t, lane) in total.iter_mut().zip(&lanes) {
            *t += sum_lanes(lane);
        }
        start = end;
    }
    (total, ok)
}
