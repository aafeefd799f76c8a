//! The region kernel: losses that are a function of a few sums per group.
//!
//! Pass 1 ([`sums`]) validates the elements and collects `K` sums per
//! group; the loss turns each group's sums into its value and into the
//! coefficients of its gradient; pass 2 ([`write_grad`]) writes the
//! gradient group by group.

use ndarray::{ArrayRef, Axis, Dimension, Zip};

use super::{ChunkedSum, Domain, chunked_sum, common_slices, grad_matches};
use crate::loss::{non_empty, same_shape};
use crate::{Error, Float, Result};

/// Which elements share a sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Groups {
    /// One group: every element.
    Global,
    /// One group per index of axis 0.
    PerSample,
}

impl Groups {
    /// The number of groups for an array of this shape, or an error if the
    /// grouping does not apply to it.
    pub(crate) fn count(self, shape: &[usize]) -> Result<usize> {
        match self {
            Groups::Global => Ok(1),
            Groups::PerSample => shape.first().copied().ok_or(Error::BadShape {
                operand: "input",
                shape: shape.to_vec(),
                requirement: "per_sample needs a sample axis (at least one axis)",
            }),
        }
    }
}

/// Sums `term(x, y)` over one group's elements.
fn group_sums<A: Float, D: Dimension, const K: usize>(
    domain: Domain,
    input: &ArrayRef<A, D>,
    target: &ArrayRef<A, D>,
    term: &impl Fn(A, A) -> [A; K],
) -> ([f64; K], bool) {
    match common_slices([input, target]) {
        Some([x, y]) => chunked_sum(x.len(), |i| (term(x[i], y[i]), domain.accepts(x[i], y[i]))),
        None => {
            let mut acc = ChunkedSum::new();
            let mut ok = true;
            Zip::from(input).and(target).for_each(|&x, &y| {
                acc.add(term(x, y));
                ok &= domain.accepts(x, y);
            });
            (acc.finish(), ok)
        }
    }
}

/// Pass 1: checks shapes and elements and returns the `K` sums of each
/// group, in `f64`.
pub(crate) fn sums<A: Float, D: Dimension, const K: usize>(
    domain: Domain,
    groups: Groups,
    input: &ArrayRef<A, D>,
    target: &ArrayRef<A, D>,
    term: impl Fn(A, A) -> [A; K],
) -> Result<Vec<[f64; K]>> {
    same_shape("target", input, target)?;
    non_empty(input)?;
    let count = groups.count(input.shape())?;
    let mut out = Vec::with_capacity(count);
    let mut ok = true;
    match groups {
        Groups::Global => {
            let (s, good) = group_sums(domain, input, target, &term);
            out.push(s);
            ok &= good;
        }
        Groups::PerSample => {
            for (x, y) in input
                .axis_chunks_iter(Axis(0), 1)
                .zip(target.axis_chunks_iter(Axis(0), 1))
            {
                let (s, good) = group_sums(domain, &x, &y, &term);
                out.push(s);
                ok &= good;
            }
        }
    }
    if ok {
        Ok(out)
    } else {
        Err(domain
            .diagnose(input, target, None)
            .unwrap_or(Error::NonFiniteResult {
                what: "a region sum",
                value: f64::NAN,
            }))
    }
}

/// Writes one group's gradient `grad = f(x, y)`.
fn group_grad<A: Float, D: Dimension>(
    input: &ArrayRef<A, D>,
    target: &ArrayRef<A, D>,
    grad: &mut ArrayRef<A, D>,
    f: &impl Fn(A, A) -> A,
) -> bool {
    let fast = grad_matches(grad, input);
    let g_fast = if fast {
        grad.as_slice_memory_order_mut()
    } else {
        None
    };
    let mut ok = true;
    match (common_slices([input, target]), g_fast) {
        (Some([x, y]), Some(g)) => {
            for ((g, &x), &y) in g.iter_mut().zip(x).zip(y) {
                *g = f(x, y);
                ok &= g.is_finite();
            }
        }
        _ => Zip::from(grad)
            .and(input)
            .and(target)
            .for_each(|g, &x, &y| {
                *g = f(x, y);
                ok &= g.is_finite();
            }),
    }
    ok
}

/// Pass 2: writes `grad = f(x, y, &coefficients[group])` for every element.
/// The elements were validated by [`sums`].
pub(crate) fn write_grad<A: Float, D: Dimension, C>(
    groups: Groups,
    input: &ArrayRef<A, D>,
    target: &ArrayRef<A, D>,
    grad: &mut ArrayRef<A, D>,
    coefficients: &[C],
    f: impl Fn(A, A, &C) -> A,
) -> Result<()> {
    let ok = match (groups, coefficients) {
        (Groups::Global, [c]) => group_grad(input, target, grad, &|x, y| f(x, y, c)),
        (Groups::PerSample, _) => {
            let mut ok = true;
            for (((x, y), mut g), c) in input
                .axis_chunks_iter(Axis(0), 1)
                .zip(target.axis_chunks_iter(Axis(0), 1))
                .zip(grad.axis_chunks_iter_mut(Axis(0), 1))
                .zip(coefficients)
            {
                ok &= group_grad(&x, &y, &mut g, &|x, y| f(x, y, c));
            }
            ok
        }
        (Groups::Global, _) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::NonFiniteResult {
            what: "an element of the gradient",
            value: f64::INFINITY,
        })
    }
}
