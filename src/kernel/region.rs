//! The region kernel: losses that are a function of a few sums per group.
//!
//! Pass 1 ([`sums`]) validates the elements and collects `K` sums per
//! group; the loss turns each group's sums into its value and into the
//! coefficients of its gradient `∂L/∂p`; pass 2 ([`write_grad`]) writes the
//! gradient, chained through the sigmoid or the softmax.
//!
//! A group is the whole tensor, each sample (axis 0), each class (axis 1)
//! or each (sample, class) pair; class 0 may be left out of every group.
//! Element-wise activations (sigmoid, identity) walk whole groups (or
//! `(sample, class)` cells) as contiguous runs; the softmax walks positions
//! in the chunks of [`super::softmax`].

use ndarray::{ArrayRef, Axis, Dimension, Zip};

use super::math::{Logistic, select};
use super::softmax::{self, Faults, L, LaneSum, Softmax};
use super::{
    CHUNK, ChunkedSum, Domain, RunSums, blocked_sum, blocked_sum_write, common_slices, finite,
    grad_matches, staged_sum, zip_sum, zip_sum_write,
};
use crate::loss::{non_empty, same_shape};
use crate::{Error, Float, Input, Result};

/// How a loss turns its input into probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activation {
    /// `p = σ(x)`, element-wise.
    Sigmoid,
    /// `p = x`.
    Identity,
    /// `p = softmax(x)` along axis 1.
    Softmax,
}

impl Activation {
    pub(crate) fn of(input: Input) -> Self {
        match input {
            Input::Probabilities => Activation::Identity,
            Input::SoftmaxLogits => Activation::Softmax,
            _ => Activation::Sigmoid,
        }
    }

    fn domain(self) -> Domain {
        Domain {
            probabilities: self == Activation::Identity,
            binary_target: false,
        }
    }
}

/// Which elements share a sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Groups {
    /// One group per index of axis 0.
    pub(crate) per_sample: bool,
    /// One group per index of axis 1.
    pub(crate) per_class: bool,
    /// Whether class 0 (index 0 of axis 1) belongs to any group.
    pub(crate) background: bool,
}

impl Groups {
    /// Whether the grouping looks at axis 1.
    fn by_class(self) -> bool {
        self.per_class || !self.background
    }
}

/// A grouping applied to one shape: which `(sample, class)` cell belongs to
/// which group.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    groups: Groups,
    activation: Activation,
    /// Classes left out at the front (1 without the background, else 0).
    skip: usize,
    /// Classes kept.
    kept: usize,
    count: usize,
}

impl Layout {
    /// Checks the shapes of `input` and `target` and lays `groups` over them.
    pub(crate) fn new<A, D: Dimension>(
        groups: Groups,
        activation: Activation,
        input: &ArrayRef<A, D>,
        target: &ArrayRef<A, D>,
    ) -> Result<Self> {
        same_shape("target", input, target)?;
        non_empty(input)?;
        let shape = input.shape();
        let needs_classes = groups.by_class() || activation == Activation::Softmax;
        if needs_classes && shape.len() < 2 {
            return Err(Error::BadShape {
                operand: "input",
                shape: shape.to_vec(),
                requirement: "per_class, include_background(false) and Input::SoftmaxLogits \
                              need a class axis: shape (N, C, ...)",
            });
        }
        if groups.per_sample && shape.is_empty() {
            return Err(Error::BadShape {
                operand: "input",
                shape: shape.to_vec(),
                requirement: "per_sample needs a sample axis (at least one axis)",
            });
        }
        let samples = shape.first().copied().unwrap_or(1);
        let classes = if needs_classes { shape[1] } else { 1 };
        let skip = usize::from(!groups.background);
        if classes <= skip {
            return Err(Error::BadShape {
                operand: "input",
                shape: shape.to_vec(),
                requirement: "include_background(false) needs at least two classes on axis 1",
            });
        }
        let kept = classes - skip;
        let count = match (groups.per_sample, groups.per_class) {
            (false, false) => 1,
            (true, false) => samples,
            (false, true) => kept,
            (true, true) => samples * kept,
        };
        Ok(Self {
            groups,
            activation,
            skip,
            kept,
            count,
        })
    }

    /// The number of classes that take part (all, or all but class 0).
    pub(crate) fn kept_classes(&self) -> usize {
        self.kept
    }

    /// The class of group `g`, counted among the kept classes (`None`
    /// unless `per_class`).
    pub(crate) fn class_of(&self, g: usize) -> Option<usize> {
        self.groups.per_class.then(|| g % self.kept)
    }

    /// The group of the cell `(sample n, class c)`, `None` for a class left out.
    #[inline]
    fn group(&self, n: usize, c: usize) -> Option<usize> {
        let k = c.checked_sub(self.skip)?;
        Some(match (self.groups.per_sample, self.groups.per_class) {
            (false, false) => 0,
            (true, false) => n,
            (false, true) => k,
            (true, true) => n * self.kept + k,
        })
    }
}

/// Sums `term(p, y)` over one group's elements, `p = finish(x, stage(x))`
/// the activation. With `STAGED`, the slice path computes, for a chunk of
/// elements at a time, `stage` (the sigmoid's `exp`), then `p` with the
/// validation, then the sums (by [`RunSums`]: fused with the rest, the sums
/// were packed across quantities into scalar code), each in a loop of its
/// own: the `exp`'s chain and the division's then overlap over many
/// elements (in-cache Dice on logits, pass 1: about a tenth faster).
#[inline(always)]
fn group_sums<A: Float, D: Dimension, const K: usize, const STAGED: bool>(
    domain: Domain,
    input: &ArrayRef<A, D>,
    target: &ArrayRef<A, D>,
    stage: &(impl Fn(A) -> A + Sync),
    finish: &(impl Fn(A, A) -> A + Sync),
    term: &(impl Fn(A, A) -> [A; K] + Sync),
) -> ([f64; K], bool) {
    let accepts = domain.thresholds::<A>();
    let p = |x: A| finish(x, stage(x));
    match common_slices([input, target]) {
        Some(slices) if STAGED => blocked_sum(
            slices,
            #[inline(always)]
            |[x, y]| {
                let mut buffer = [A::zero(); CHUNK];
                let mut run_sums = RunSums::new(CHUNK);
                let mut bad = 0u32;
                let (sums, _) = staged_sum(
                    x,
                    stage,
                    #[inline(always)]
                    |r, s| {
                        let (x, y) = (&x[r.clone()], &y[r]);
                        let p = &mut buffer[..s.len()];
                        for (((p, &s), &x), &y) in p.iter_mut().zip(s).zip(x).zip(y) {
                            *p = finish(x, s);
                            bad += u32::from(!accepts.check(x, y));
                        }
                        (run_sums.sums(p, y, term), true)
                    },
                );
                (sums, bad == 0)
            },
        ),
        Some(slices) => blocked_sum(
            slices,
            #[inline(always)]
            |[x, y]| {
                zip_sum(
                    x,
                    y,
                    #[inline(always)]
                    |x, y| (term(p(x), y), accepts.check(x, y)),
                )
            },
        ),
        None => {
            let mut acc = ChunkedSum::new();
            let mut ok = true;
            Zip::from(input).and(target).for_each(|&x, &y| {
                acc.add(term(p(x), y));
                ok &= accepts.check(x, y);
            });
            (acc.finish(), ok)
        }
    }
}

/// The sums of `term(p, y)`, `p = finish(x, stage(x))` the activation,
/// for each group of an element-wise activation, into `out`; returns
/// whether every element was acceptable. Generic over the closures, so
/// that each activation gets its own loop, with no per-element dispatch.
fn elementwise_sums<A: Float, D: Dimension, const K: usize, const STAGED: bool>(
    layout: &Layout,
    input: &ArrayRef<A, D>,
    target: &ArrayRef<A, D>,
    stage: &(impl Fn(A) -> A + Sync),
    finish: &(impl Fn(A, A) -> A + Sync),
    term: &(impl Fn(A, A) -> [A; K] + Sync),
    out: &mut [[f64; K]],
) -> bool {
    let domain = layout.activation.domain();
    let mut ok = true;
    if layout.groups.by_class() {
        for (n, (xn, yn)) in input
            .axis_chunks_iter(Axis(0), 1)
            .zip(target.axis_chunks_iter(Axis(0), 1))
            .enumerate()
        {
            for (c, (x, y)) in xn
                .axis_chunks_iter(Axis(1), 1)
                .zip(yn.axis_chunks_iter(Axis(1), 1))
                .enumerate()
            {
                let (s, good) = group_sums::<_, _, K, STAGED>(domain, &x, &y, stage, finish, term);
                ok &= good;
                if let Some(g) = layout.group(n, c) {
                    add(&mut out[g], s);
                }
            }
        }
    } else if layout.groups.per_sample {
        for (slot, (x, y)) in out.iter_mut().zip(
            input
                .axis_chunks_iter(Axis(0), 1)
                .zip(target.axis_chunks_iter(Axis(0), 1)),
        ) {
            let (s, good) = group_sums::<_, _, K, STAGED>(domain, &x, &y, stage, finish, term);
            *slot = s;
            ok &= good;
        }
    } else {
        let (s, good) = group_sums::<_, _, K, STAGED>(domain, input, target, stage, finish, term);
        out[0] = s;
        ok = good;
    }
    ok
}

fn add<const K: usize>(total: &mut [f64; K], part: [f64; K]) {
    for (t, p) in total.iter_mut().zip(part) {
        *t += p;
    }
}

/// Pass 1: validates the elements and returns the `K` sums of
/// `term(p, y)` for each group of `layout`, in `f64`.
pub(crate) fn sums<A: Float, D: Dimension, const K: usize>(
    layout: &Layout,
    input: &ArrayRef<A, D>,
    target: &ArrayRef<A, D>,
    term: impl Fn(A, A) -> [A; K] + Sync,
) -> Result<Vec<[f64; K]>> {
    let activation = layout.activation;
    let domain = activation.domain();
    let mut out = vec![[0.0; K]; layout.count];
    let ok = if activation == Activation::Softmax {
        let (_, classes, _) = softmax::dims(input.shape())?;
        let mut sm = Softmax::new(classes);
        // Per class, the lane sums of the `K` terms.
        let mut lane_sums = vec![[LaneSum::new(); K]; classes];
        let mut faults = Faults::new();
        softmax::walk(
            input,
            target,
            None,
            None,
            #[inline(always)]
            |ch| {
                // Validated first: the targets' loads then go out with the
                // logits', not after the softmax (see `CrossEntropy`).
                for c in 0..classes {
                    faults.check2(ch.x.get(c), ch.y.get(c), |x, y| domain.accepts(x, y));
                }
                sm.compute_p(ch.x);
                for (c, sums) in lane_sums.iter_mut().enumerate() {
                    let (p, y) = (sm.p(c), ch.y.get(c));
                    // One lane per term, written in one loop over the
                    // positions (vectorised across positions, not across
                    // the `K` terms of one position), then trimmed and added.
                    let mut terms = [[A::zero(); L]; K];
                    for k in 0..L {
                        for (t, v) in terms.iter_mut().zip(term(p[k], y[k])) {
                            t[k] = v;
                        }
                    }
                    for (s, t) in sums.iter_mut().zip(&mut terms) {
                        ch.trim(t);
                        s.add(t);
                    }
                }
                if ch.last {
                    for (c, sums) in lane_sums.iter_mut().enumerate() {
                        let s = sums.each_mut().map(|s| s.take());
                        if let Some(g) = layout.group(ch.n, c) {
                            add(&mut out[g], s);
                        }
                    }
                    faults.none()
                } else {
                    true
                }
            },
        )?
    } else if activation == Activation::Sigmoid {
        let stage = |x: A| Logistic::stage(x);
        let finish = |x: A, e: A| Logistic::sigmoid_from_stage(x, e);
        elementwise_sums::<_, _, K, true>(layout, input, target, &stage, &finish, &term, &mut out)
    } else {
        let finish = |x: A, _: A| x;
        elementwise_sums::<_, _, K, false>(layout, input, target, &|x| x, &finish, &term, &mut out)
    };
    if ok {
        Ok(out)
    } else {
        Err(sums_fault(domain, input, target))
    }
}

/// The error of a sums pass that saw a fault: the first bad element, or a
/// non-finite sum when every element was acceptable.
fn sums_fault<A: Float, D: Dimension>(
    domain: Domain,
    input: &ArrayRef<A, D>,
    target: &ArrayRef<A, D>,
) -> Error {
    domain.fault(input, target, None, "a region sum", f64::NAN)
}

/// Pass 1 of a sigmoid loss with one group (the whole tensor), as
/// [`sums`], which also leaves in `scratch` each element's `e^-|x|` with
/// the sign of `x`, for [`write_grad_from_stage`]: pass 2 then neither
/// reads the input nor recomputes the `exp`. `None` (and `scratch`
/// untouched) unless the layout has one group and the three arrays one
/// memory order: the caller then takes [`sums`] and [`write_grad`].
pub(crate) fn sums_and_stage<A: Float, D: Dimension, const K: usize>(
    layout: &Layout,
    input: &ArrayRef<A, D>,
    target: &ArrayRef<A, D>,
    scratch: &mut ArrayRef<A, D>,
    term: impl Fn(A, A) -> [A; K] + Sync,
) -> Option<Result<Vec<[f64; K]>>> {
    if layout.activation != Activation::Sigmoid
        || layout.groups.by_class()
        || layout.groups.per_sample
        || !grad_matches(scratch, input)
    {
        return None;
    }
    let slices = common_slices([input, target])?;
    let g = scratch.as_slice_memory_order_mut()?;
    let domain = layout.activation.domain();
    let accepts = domain.thresholds::<A>();
    let (sums, ok) = blocked_sum_write(
        slices,
        g,
        #[inline(always)]
        |[x, y], g| {
            let mut buffer = [A::zero(); CHUNK];
            let mut run_sums = RunSums::new(CHUNK);
            let mut bad = 0u32;
            let (sums, _) = staged_sum(
                x,
                Logistic::stage,
                #[inline(always)]
                |r, e| {
                    let (x, y, g) = (&x[r.clone()], &y[r.clone()], &mut g[r]);
                    let p = &mut buffer[..e.len()];
                    for ((((p, g), &e), &x), &y) in p.iter_mut().zip(g).zip(e).zip(x).zip(y) {
                        *p = Logistic::sigmoid_from_stage(x, e);
                        *g = select(x >= A::zero(), e, -e);
                        bad += u32::from(!accepts.check(x, y));
                    }
                    (run_sums.sums(p, y, &term), true)
                },
            );
            (sums, bad == 0)
        },
    );
    Some(if ok {
        Ok(vec![sums])
    } else {
        Err(sums_fault(domain, input, target))
    })
}

/// Pass 2 after [`sums_and_stage`] returned its sums: overwrites each
/// `grad` element `±e^-|x|` with `dp(σ(x), y, coefficient)·σ(x)·σ(-x)`,
/// the arithmetic of [`write_grad`] for a sigmoid, bit for bit.
pub(crate) fn write_grad_from_stage<A: Float, D: Dimension, C: Sync>(
    target: &ArrayRef<A, D>,
    grad: &mut ArrayRef<A, D>,
    coefficient: &C,
    dp: impl Fn(A, A, &C) -> A + Sync,
) -> Result<()> {
    let fault = Error::NonFiniteResult {
        what: "an element of the gradient",
        value: f64::INFINITY,
    };
    if !grad_matches(grad, target) {
        return Err(fault);
    }
    let (Some([y]), Some(g)) = (common_slices([target]), grad.as_slice_memory_order_mut()) else {
        return Err(fault);
    };
    let ([], ok) = blocked_sum_write(
        [y],
        g,
        #[inline(always)]
        |[y], g| {
            let one = A::one();
            let mut bad = 0u32;
            for (g, &y) in g.iter_mut().zip(y) {
                // As `Logistic::from_stage`, the sign of `x` from the stage's.
                let e = g.abs();
                let inv = one / (one + e);
                let small = e * inv;
                let negative = g.is_sign_negative();
                let (sigma, sigma_c) = (select(negative, small, inv), select(negative, inv, small));
                let d = dp(sigma, y, coefficient) * (sigma * sigma_c);
                *g = d;
                bad += u32::from(!finite(d));
            }
            ([], bad == 0)
        },
    );
    if ok { Ok(()) } else { Err(fault) }
}

/// Writes one group's gradient `grad = f(x, y)`.
#[inline(always)]
fn group_grad<A: Float, D: Dimension>(
    input: &ArrayRef<A, D>,
    target: &ArrayRef<A, D>,
    grad: &mut ArrayRef<A, D>,
    f: &(impl Fn(A, A) -> A + Sync),
) -> bool {
    let fast = grad_matches(grad, input);
    let g_fast = if fast {
        grad.as_slice_memory_order_mut()
    } else {
        None
    };
    let mut ok = true;
    match (common_slices([input, target]), g_fast) {
        (Some(slices), Some(g)) => {
            let ([], good) = blocked_sum_write(
                slices,
                g,
                #[inline(always)]
                |[x, y], g| {
                    zip_sum_write(
                        x,
                        y,
                        g,
                        #[inline(always)]
                        |x, y| {
                            let d = f(x, y);
                            ([], d, finite(d))
                        },
                    )
                },
            );
            ok = good;
        }
        _ => Zip::from(grad)
            .and(input)
            .and(target)
            .for_each(|g, &x, &y| {
                *g = f(x, y);
                ok &= finite(*g);
            }),
    }
    ok
}

/// Pass 2: writes `grad = ∂L/∂input` where `dp(p, y, &coefficients[group])`
/// is `∂L/∂p` of an element of that group (0 for a class left out), chained
/// through the activation. The elements were validated by [`sums`].
pub(crate) fn write_grad<A: Float, D: Dimension, C: Sync>(
    layout: &Layout,
    input: &ArrayRef<A, D>,
    target: &ArrayRef<A, D>,
    grad: &mut ArrayRef<A, D>,
    coefficients: &[C],
    dp: impl Fn(A, A, &C) -> A + Sync,
) -> Result<()> {
    same_shape("grad", input, grad)?;
    if coefficients.len() != layout.count {
        return Err(Error::InvalidLength {
            name: "coefficients",
            expected: layout.count,
            found: coefficients.len(),
        });
    }
    let activation = layout.activation;
    let ok = if activation == Activation::Softmax {
        let (_, classes, _) = softmax::dims(input.shape())?;
        let mut sm = Softmax::new(classes);
        let mut targets = vec![[A::zero(); L]; classes];
        let mut faults = Faults::new();
        softmax::walk(
            input,
            target,
            None,
            Some(grad),
            #[inline(always)]
            |ch| {
                // The targets copied first, so that their loads go out with
                // the logits' (see `CrossEntropy`).
                for (c, lane) in targets.iter_mut().enumerate() {
                    *lane = *ch.y.get(c);
                }
                sm.compute_p(ch.x);
                let Some(mut g) = ch.g else { return false };
                for (c, y) in targets.iter().enumerate() {
                    let gc = g.get(c);
                    match layout.group(ch.n, c).map(|g| &coefficients[g]) {
                        Some(k) => {
                            let p = sm.p(c);
                            let mut v = [A::zero(); L];
                            for j in 0..L {
                                v[j] = dp(p[j], y[j], k);
                            }
                            *gc = v;
                        }
                        None => gc.fill(A::zero()),
                    }
                }
                sm.chain(&mut g);
                for c in 0..classes {
                    faults.check(g.get(c), finite);
                }
                if ch.last { faults.none() } else { true }
            },
        )?
    } else if activation == Activation::Sigmoid {
        let chained = |x: A, y: A, c: &C| {
            let l = Logistic::of(x);
            dp(l.sigma, y, c) * (l.sigma * l.sigma_c)
        };
        elementwise_grad(layout, input, target, grad, coefficients, &chained)
    } else {
        elementwise_grad(layout, input, target, grad, coefficients, &dp)
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

/// Pass 2 for an element-wise activation: `grad = chained(x, y, &coefficients[group])`.
/// Generic over `chained`, so that each activation gets its own loops.
fn elementwise_grad<A: Float, D: Dimension, C: Sync>(
    layout: &Layout,
    input: &ArrayRef<A, D>,
    target: &ArrayRef<A, D>,
    grad: &mut ArrayRef<A, D>,
    coefficients: &[C],
    chained: &(impl Fn(A, A, &C) -> A + Sync),
) -> bool {
    if layout.groups.by_class() {
        let mut ok = true;
        for (n, ((xn, yn), mut gn)) in input
            .axis_chunks_iter(Axis(0), 1)
            .zip(target.axis_chunks_iter(Axis(0), 1))
            .zip(grad.axis_chunks_iter_mut(Axis(0), 1))
            .enumerate()
        {
            for (c, ((x, y), mut g)) in xn
                .axis_chunks_iter(Axis(1), 1)
                .zip(yn.axis_chunks_iter(Axis(1), 1))
                .zip(gn.axis_chunks_iter_mut(Axis(1), 1))
                .enumerate()
            {
                match layout.group(n, c).map(|k| &coefficients[k]) {
                    Some(k) => ok &= group_grad(&x, &y, &mut g, &|x, y| chained(x, y, k)),
                    None => g.fill(A::zero()),
                }
            }
        }
        ok
    } else if layout.groups.per_sample {
        let mut ok = true;
        for (((x, y), mut g), k) in input
            .axis_chunks_iter(Axis(0), 1)
            .zip(target.axis_chunks_iter(Axis(0), 1))
            .zip(grad.axis_chunks_iter_mut(Axis(0), 1))
            .zip(coefficients)
        {
            ok &= group_grad(&x, &y, &mut g, &|x, y| chained(x, y, k));
        }
        ok
    } else {
        let k = &coefficients[0];
        group_grad(input, target, grad, &|x, y| chained(x, y, k))
    }
}
