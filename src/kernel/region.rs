//! The region kernel: losses that are a function of a few sums per group.
//!
//! Pass 1 ([`sums`]) validates the elements and collects `K` sums per
//! group; the loss turns each group's sums into its value and into the
//! coefficients of its gradient `∂L/∂p`; pass 2 ([`write_grad`]) writes the
//! gradient, chained through the sigmoid or the softmax. In `loss_grad`,
//! pass 1 ([`sums_for_grad`]) may leave in the gradient what pass 2 needs
//! of the input ([`Stage`]), so that pass 2 ([`write_grad_after`]) neither
//! reads the input nor recomputes its `exp`s.
//!
//! A group is the whole tensor, each sample (axis 0), each class (axis 1)
//! or each (sample, class) pair; class 0 may be left out of every group.
//! Element-wise activations (sigmoid, identity) walk whole groups (or
//! `(sample, class)` cells) as contiguous runs; the softmax walks positions
//! in the chunks of [`super::softmax`].

use std::sync::atomic::{AtomicBool, Ordering};

use ndarray::{ArrayRef, Axis, Dimension};

use super::gather::{array_sum, array_sum_write};
use super::math::{Fma, Logistic, select};
use super::softmax::{
    self, Classes, Faults, L, Lane, LaneSum, Lanes, LanesMut, Softmax, with_classes,
};
use super::{
    BLOCK, CHUNK, Domain, STAGE, blocked_sum_write_at, common_slices, finite, grad_matches,
    prefetch_ahead, run_sums, run_sums_into, staged_lanes, zip_sum_write,
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

    /// The group of each contiguous run of an array of `shape` in standard
    /// layout that belongs to one group (or to none): the whole array, each
    /// sample, or each `(sample, class)` cell, in memory order.
    fn runs(&self, shape: &[usize]) -> Vec<Option<usize>> {
        let samples = shape.first().copied().unwrap_or(1);
        if self.groups.by_class() {
            let classes = self.skip + self.kept;
            (0..samples)
                .flat_map(|n| (0..classes).map(move |c| (n, c)))
                .map(|(n, c)| self.group(n, c))
                .collect()
        } else if self.groups.per_sample {
            (0..samples).map(Some).collect()
        } else {
            vec![Some(0)]
        }
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
/// the activation (in any layout: see [`array_sum`]). The loop computes,
/// for a piece of [`STAGE`] elements at a time, `stage` (the sigmoid's
/// `exp`; skipped without `STAGED`, where `p` must be `x`, and the pieces
/// are chunks), then `p` with the validation, then the sums (by
/// [`run_sums_into`] and [`run_sums`]: fused with the rest, the sums were
/// packed across quantities into scalar code), each in a loop of its own:
/// the `exp`'s chain and the division's then overlap over many elements
/// (in-cache Dice on logits, pass 1: about a tenth faster; on
/// probabilities, 1.27 against 0.74 ns per element with the sums fused).
/// In pieces of 128 rather than chunks of 512, the loads of the next piece
/// overlap the arithmetic: Dice's `loss` at 2^24 `f32` 1.09 → 0.85 ns per
/// element, its `loss_grad` 1.83 → 1.56 (AVX-512), the same in cache.
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
    if STAGED {
        array_sum(
            [input, target],
            #[inline(always)]
            |_, [x, y]| {
                let mut buffer = [A::zero(); STAGE];
                let mut bad = 0u32;
                let (sums, _) = staged_lanes(
                    x,
                    [y],
                    stage,
                    #[inline(always)]
                    |r, s, lanes| {
                        // By value: behind the captured reference, the
                        // thresholds were loaded again for every element.
                        let thresholds = accepts;
                        let (x, y) = (&x[r.clone()], &y[r]);
                        let p = &mut buffer[..s.len()];
                        for (((p, &s), &x), &y) in p.iter_mut().zip(s).zip(x).zip(y) {
                            *p = finish(x, s);
                            bad += u32::from(!thresholds.check(x, y));
                        }
                        run_sums_into(lanes, p, y, term);
                    },
                );
                (sums, bad == 0)
            },
        )
    } else {
        // No stage (`p = x`): the same pieces, without the copies.
        array_sum(
            [input, target],
            #[inline(always)]
            |_, [x, y]| {
                let mut bad = 0u32;
                let mut total = [0.0; K];
                for (x, y) in x.chunks(CHUNK).zip(y.chunks(CHUNK)) {
                    for (&x, &y) in x.iter().zip(y) {
                        bad += u32::from(!accepts.check(x, y));
                    }
                    add(&mut total, run_sums(x, y, |x, y| term(p(x), y)));
                }
                (total, bad == 0)
            },
        )
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
    if activation == Activation::Softmax {
        return softmax_sums(layout, input, target, None, term).map(|(sums, _)| sums);
    }
    let domain = activation.domain();
    let mut out = vec![[0.0; K]; layout.count];
    let ok = if activation == Activation::Sigmoid {
        let stage = |x: A| Logistic::stage(x, Fma::Off);
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

/// [`sums`] for the softmax. With `store` (which must be in standard
/// layout, else [`softmax::walk`] copies it), also leaves `p` there, signed
/// as [`Stage::Softmax`] says, and returns whether every target was 0 or 1.
fn softmax_sums<A: Float, D: Dimension, const K: usize>(
    layout: &Layout,
    input: &ArrayRef<A, D>,
    target: &ArrayRef<A, D>,
    store: Option<&mut ArrayRef<A, D>>,
    term: impl Fn(A, A) -> [A; K],
) -> Result<(Vec<[f64; K]>, bool)> {
    let (_, classes, _) = softmax::dims(input.shape())?;
    let (out, binary, ok) = with_classes!(classes, |cs| {
        softmax_sums_walk(cs, layout, input, target, store, term)
    })?;
    if ok {
        Ok((out, binary))
    } else {
        Err(sums_fault(layout.activation.domain(), input, target))
    }
}

/// The walk of [`softmax_sums`] over `classes` classes: the sums, whether
/// every target was 0 or 1, and whether every element was good.
fn softmax_sums_walk<A: Float, D: Dimension, Cs: Classes, const K: usize>(
    classes: Cs,
    layout: &Layout,
    input: &ArrayRef<A, D>,
    target: &ArrayRef<A, D>,
    store: Option<&mut ArrayRef<A, D>>,
    term: impl Fn(A, A) -> [A; K],
) -> Result<(Vec<[f64; K]>, bool, bool)> {
    let mut out = vec![[0.0; K]; layout.count];
    let mut sm = Softmax::new(classes);
    // Per class, the lane sums of the `K` terms.
    let mut lane_sums = classes.store([LaneSum::new(); K]);
    let mut faults = Faults::new();
    // Per lane, the sum of `y·(1 - y)` over the tile: 0 when every target
    // was 0 or 1 (only asked for with `store`). Every term is `≥ 0` for
    // the elements the faults accept, and a sum of them is 0 only when
    // all are (no positive `f32` or `f64` sum underflows to 0).
    let (mut spread, mut binary) = ([A::zero(); L], true);
    let ok = softmax::walk(
        classes,
        input,
        target,
        None,
        store,
        #[inline(always)]
        |mut ch| {
            let (zero, one) = (A::zero(), A::one());
            // Validated first: the targets' loads then go out with the
            // logits', not after the softmax (see `CrossEntropy`). A logit
            // must be finite and a target in [0, 1], where `t = y·(1 - y)`
            // is `≥ 0`; `t` is 0 exactly on {0, 1} (see `Accepts::check`),
            // so the same `t` says whether the targets fit the stage's
            // signs.
            let mut chunk_spread = [zero; L];
            for c in 0..classes.count() {
                let (x, y) = (ch.x.get(c), ch.y.get(c));
                let mut t = [zero; L];
                for k in 0..L {
                    t[k] = y[k] * (one - y[k]);
                }
                faults.check2(x, &t, |x, t| finite(x) & (t >= zero));
                for k in 0..L {
                    chunk_spread[k] += t[k];
                }
            }
            // Added once per chunk: `spread` lives in memory, and adding
            // every class's `t` to it directly loads and stores it each
            // time (a select into it, for a maximum, becomes a masked
            // store).
            for k in 0..L {
                spread[k] += chunk_spread[k];
            }
            sm.compute_p(ch.x);
            let mut store = ch.g.take();
            for (c, sums) in lane_sums.as_mut().iter_mut().enumerate() {
                let (p, y) = (sm.p(c), ch.y.get(c));
                if let Some(g) = store.as_mut() {
                    let mut v = [zero; L];
                    for k in 0..L {
                        v[k] = select(y[k] == one, -p[k], p[k]);
                    }
                    *g.get(c) = v;
                }
                // One lane per term, written in one loop over the
                // positions (vectorised across positions, not across the
                // `K` terms of one position), then trimmed and added.
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
                for (c, sums) in lane_sums.as_mut().iter_mut().enumerate() {
                    let s = sums.each_mut().map(|s| s.take());
                    if let Some(g) = layout.group(ch.n, c) {
                        add(&mut out[g], s);
                    }
                }
                binary &= spread.iter().all(|&s| s == zero);
                spread = [zero; L];
                faults.none()
            } else {
                true
            }
        },
    )?;
    Ok((out, binary, ok))
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

/// What a region loss's pass 1 hands its pass 2.
#[derive(Debug)]
pub(crate) struct Evaluated<A, C> {
    pub(crate) loss: A,
    pub(crate) layout: Layout,
    /// Per group, the coefficients of `∂L/∂p`.
    pub(crate) coefficients: Vec<C>,
    /// What pass 1 left in the gradient, if anything ([`sums_for_grad`]).
    pub(crate) stage: Option<Stage>,
}

/// Pass 1 of `loss_grad`: [`sums_and_stage`] into `grad` where it applies
/// (then with what it left there), else [`sums`]. `dp_reads_p` says
/// whether the loss's `∂L/∂p` (the `dp` of pass 2) depends on `p`; where
/// it does not, the sigmoid's stage can leave pass 2 less to read.
pub(crate) fn sums_for_grad<A: Float, D: Dimension, const K: usize>(
    layout: &Layout,
    input: &ArrayRef<A, D>,
    target: &ArrayRef<A, D>,
    grad: Option<&mut ArrayRef<A, D>>,
    dp_reads_p: bool,
    term: impl Fn(A, A) -> [A; K] + Sync + Copy,
) -> Result<(Vec<[f64; K]>, Option<Stage>)> {
    match grad.and_then(|g| sums_and_stage(layout, input, target, g, dp_reads_p, term)) {
        Some(staged) => staged.map(|(sums, stage)| (sums, Some(stage))),
        None => sums(layout, input, target, term).map(|sums| (sums, None)),
    }
}

/// Pass 2 after [`sums_for_grad`]: [`write_grad_from_stage`] after a
/// stage, else [`write_grad`].
pub(crate) fn write_grad_after<A: Float, D: Dimension, C: Sync>(
    stage: Option<Stage>,
    layout: &Layout,
    input: &ArrayRef<A, D>,
    target: &ArrayRef<A, D>,
    grad: &mut ArrayRef<A, D>,
    coefficients: &[C],
    dp: impl Fn(A, A, &C) -> A + Sync,
) -> Result<()> {
    match stage {
        Some(stage) => write_grad_from_stage(stage, layout, target, grad, coefficients, dp),
        None => write_grad(layout, input, target, grad, coefficients, dp),
    }
}

/// What [`sums_and_stage`] left in the gradient for
/// [`write_grad_from_stage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Per block of the blocked sums ([`super::BLOCK`] elements), what its
    /// elements hold:
    /// - `binary[b]` false: `e^-|x|` with the sign of `x`;
    /// - `binary[b]` (every target of the block is 0 or 1) and `flagged`
    ///   (`∂L/∂p` depends on `p`): the same, its target in the highest
    ///   exponent bit (`e^-|x| <= 1`, whose bit is 0: see
    ///   `Sealed::with_flag`). Pass 2 then reads neither the input nor the
    ///   target;
    /// - `binary[b]` and not `flagged`: `σ(x)·σ(-x)`, negated where the
    ///   target is 1 (`-0` for a product of 0). Pass 2 then reads neither
    ///   the input nor the target, and divides nothing: it scales each
    ///   element by its target's `∂L/∂p`.
    ///
    /// `runs` holds the group of each run ([`Layout::runs`]; `None` for a
    /// class left out, whose gradient is 0), and `binary` the blocks of
    /// each run in turn.
    Logistic {
        binary: Vec<bool>,
        flagged: bool,
        runs: Vec<Option<usize>>,
    },
    /// `p`, negated where the target is 1 (`-0` for a `p` of 0). When
    /// `binary` (every target is 0 or 1) those signs are the targets, and
    /// pass 2 does not read them: it then moves as much memory as
    /// [`write_grad`] alone, without its `exp`s.
    Softmax { binary: bool },
}

/// Pass 1 as [`sums`], which also leaves in `scratch` (the gradient, to
/// be) what pass 2 needs of the input, for [`write_grad_from_stage`]: pass
/// 2 then neither reads the input nor recomputes the `exp`s. For the
/// softmax that is `p` ([`Stage::Softmax`]), when `scratch` is in standard
/// layout; for the sigmoid, `e^-|x|` (flagged with binary targets) or,
/// where `∂L/∂p` does not read `p` (`!dp_reads_p`) and the targets are 0
/// or 1, `σ(x)·σ(-x)` ([`Stage::Logistic`]), when the three arrays have
/// one memory order and the layout one group, or they are in standard
/// layout (where each group is made of contiguous runs). `None` (and
/// `scratch` untouched) where it does not apply: the caller then takes
/// [`sums`] and [`write_grad`].
fn sums_and_stage<A: Float, D: Dimension, const K: usize>(
    layout: &Layout,
    input: &ArrayRef<A, D>,
    target: &ArrayRef<A, D>,
    scratch: &mut ArrayRef<A, D>,
    dp_reads_p: bool,
    term: impl Fn(A, A) -> [A; K] + Sync,
) -> Option<Result<(Vec<[f64; K]>, Stage)>> {
    match layout.activation {
        Activation::Softmax if scratch.is_standard_layout() => Some(
            softmax_sums(layout, input, target, Some(scratch), term)
                .map(|(sums, binary)| (sums, Stage::Softmax { binary })),
        ),
        Activation::Sigmoid => {
            sigmoid_sums_and_stage(layout, input, target, scratch, dp_reads_p, term)
        }
        _ => None,
    }
}

/// [`sums_and_stage`] for the sigmoid, with the format of
/// [`Stage::Logistic`] for each block. The runs of [`Layout::runs`] (one
/// for a single group, which may be in any memory order; each sample or
/// `(sample, class)` cell of arrays in standard layout) are staged in turn,
/// as [`elementwise_sums`] sums them, so the sums are its bits.
fn sigmoid_sums_and_stage<A: Float, D: Dimension, const K: usize>(
    layout: &Layout,
    input: &ArrayRef<A, D>,
    target: &ArrayRef<A, D>,
    scratch: &mut ArrayRef<A, D>,
    flagged: bool,
    term: impl Fn(A, A) -> [A; K] + Sync,
) -> Option<Result<(Vec<[f64; K]>, Stage)>> {
    let runs = layout.runs(input.shape());
    if !grad_matches(scratch, input) || (runs.len() > 1 && !input.is_standard_layout()) {
        return None;
    }
    let [x, y] = common_slices([input, target])?;
    let g = scratch.as_slice_memory_order_mut()?;
    let len = x.len() / runs.len();
    let domain = layout.activation.domain();
    let mut out = vec![[0.0; K]; layout.count];
    let mut binary = Vec::with_capacity(x.len().div_ceil(BLOCK) + runs.len());
    let parts = x.chunks_exact(len).zip(y.chunks_exact(len));
    for ((&group, (x, y)), g) in runs.iter().zip(parts).zip(g.chunks_exact_mut(len)) {
        let (sums, ok) = sigmoid_stage_run(domain, x, y, g, flagged, &term, &mut binary);
        if !ok {
            return Some(Err(sums_fault(domain, input, target)));
        }
        if let Some(k) = group {
            add(&mut out[k], sums);
        }
    }
    Some(Ok((
        out,
        Stage::Logistic {
            binary,
            flagged,
            runs,
        },
    )))
}

/// Pass 1 with the stage of [`Stage::Logistic`] over one run: the sums of
/// `term` and whether every element was acceptable, the format of each
/// block pushed to `binary`. A block starts in the binary format (flagged
/// where `flagged`), and at its first target other than 0 or 1 writes what
/// it had staged again in the `e^-|x|` format and keeps to that.
fn sigmoid_stage_run<A: Float, const K: usize>(
    domain: Domain,
    x: &[A],
    y: &[A],
    g: &mut [A],
    flagged: bool,
    term: &(impl Fn(A, A) -> [A; K] + Sync),
    binary: &mut Vec<bool>,
) -> ([f64; K], bool) {
    let accepts = domain.thresholds::<A>();
    let formats: Vec<AtomicBool> = (0..g.len().div_ceil(BLOCK))
        .map(|_| AtomicBool::new(false))
        .collect();
    let (sums, ok) = blocked_sum_write_at(
        [x, y],
        g,
        #[inline(always)]
        |_, b, [xb, yb], gb| {
            let mut buffer = [A::zero(); STAGE];
            let mut bad = 0u32;
            let mut binary = true;
            let (sums, _) = staged_lanes(
                xb,
                [yb],
                |x| Logistic::stage(x, Fma::Off),
                #[inline(always)]
                |r, e, lanes| {
                    // By value: behind the captured reference, the
                    // thresholds were loaded again for every element (the
                    // stores to `g` might alias them).
                    let thresholds = accepts;
                    // The gradient, which this body writes, is not among
                    // `staged_lanes`'s shared operands.
                    prefetch_ahead(gb, r.start);
                    let (x, y, g) = (&xb[r.clone()], &yb[r.clone()], &mut gb[r.clone()]);
                    let p = &mut buffer[..e.len()];
                    let (zero, one) = (A::zero(), A::one());
                    if binary {
                        // Per element only whether it is regular: its input
                        // acceptable and its target +0 or 1 (which is then
                        // acceptable too). A piece with an irregular element
                        // is checked again in full.
                        let mut irregular = 0u32;
                        let elements = p.iter_mut().zip(g).zip(e).zip(x).zip(y);
                        if flagged {
                            for ((((p, g), &e), &x), &y) in elements {
                                *p = Logistic::sigmoid_from_stage(x, e);
                                let hot = y == one;
                                *g = signed_stage(x, e).with_flag(hot);
                                let binary = hot | y.is_positive_zero();
                                irregular += u32::from(!(thresholds.input(x) & binary));
                            }
                        } else {
                            for ((((p, g), &e), &x), &y) in elements {
                                // `Logistic::sigmoid_from_stage`, and the
                                // product `σ(x)·σ(-x)` of `write_grad`.
                                let inv = one / (one + e);
                                let small = e * inv;
                                *p = select(x >= zero, inv, small);
                                let d = inv * small;
                                let hot = y == one;
                                *g = select(hot, -d, d);
                                let binary = hot | y.is_positive_zero();
                                irregular += u32::from(!(thresholds.input(x) & binary));
                            }
                        }
                        let mut soft = 0u32;
                        if irregular != 0 {
                            for (&x, &y) in x.iter().zip(y) {
                                soft += u32::from((y * (one - y) != zero) | y.is_sign_negative());
                                bad += u32::from(!thresholds.check(x, y));
                            }
                        }
                        if soft != 0 {
                            binary = false;
                            let (x, g) = (&xb[..r.end], &mut gb[..r.end]);
                            for (g, &x) in g.iter_mut().zip(x) {
                                *g = signed_stage(x, Logistic::stage(x, Fma::Off));
                            }
                        }
                    } else {
                        for ((((p, g), &e), &x), &y) in p.iter_mut().zip(g).zip(e).zip(x).zip(y) {
                            *p = Logistic::sigmoid_from_stage(x, e);
                            *g = signed_stage(x, e);
                            bad += u32::from(!thresholds.check(x, y));
                        }
                    }
                    run_sums_into(lanes, p, y, term);
                },
            );
            formats[b].store(binary, Ordering::Relaxed);
            (sums, bad == 0)
        },
    );
    binary.extend(formats.into_iter().map(AtomicBool::into_inner));
    (sums, ok)
}

/// Pass 2 after [`sums_and_stage`] returned its sums and `stage`:
/// overwrites what pass 1 left in `grad` with the gradient, the arithmetic
/// of [`write_grad`] bit for bit.
fn write_grad_from_stage<A: Float, D: Dimension, C: Sync>(
    stage: Stage,
    layout: &Layout,
    target: &ArrayRef<A, D>,
    grad: &mut ArrayRef<A, D>,
    coefficients: &[C],
    dp: impl Fn(A, A, &C) -> A + Sync,
) -> Result<()> {
    same_shape("grad", target, grad)?;
    check_coefficients(layout, coefficients)?;
    match stage {
        Stage::Softmax { binary } => {
            let (_, classes, _) = softmax::dims(target.shape())?;
            let ok = with_classes!(classes, |cs| {
                let mut pass = SoftmaxGrad::new(layout, cs, coefficients, dp);
                softmax::walk_in_place(
                    cs,
                    (!binary).then_some(target),
                    grad,
                    #[inline(always)]
                    move |ch| pass.grad_in_place(ch.n, ch.last, ch.g, ch.y),
                )
            })?;
            if ok == Some(true) {
                Ok(())
            } else {
                Err(grad_fault())
            }
        }
        Stage::Logistic {
            binary,
            flagged,
            runs,
        } => sigmoid_grad_from_stage(&binary, flagged, &runs, target, grad, coefficients, dp),
    }
}

/// The `e^-|x|` format of [`Stage::Logistic`]: `e` with the sign of `x`
/// (`+` for `-0`, as `Logistic::from_stages` reads it).
#[inline(always)]
fn signed_stage<A: Float>(x: A, e: A) -> A {
    select(x >= A::zero(), e, -e)
}

/// [`write_grad_from_stage`] for the sigmoid: overwrites each `grad`
/// element with `dp(σ(x), y, coefficient)·σ(x)·σ(-x)`, the coefficient of
/// its run's group (0 in a run of no group), from `±e^-|x|` (and `y` from
/// the target or, in the blocks where `binary` says so and `flagged`, from
/// the flag) or, in the binary blocks when not `flagged`, from
/// `±σ(x)·σ(-x)` (see [`Stage::Logistic`]; `dp` is then given a NaN for
/// `σ(x)`, which it does not read).
fn sigmoid_grad_from_stage<A: Float, D: Dimension, C: Sync>(
    binary: &[bool],
    flagged: bool,
    runs: &[Option<usize>],
    target: &ArrayRef<A, D>,
    grad: &mut ArrayRef<A, D>,
    coefficients: &[C],
    dp: impl Fn(A, A, &C) -> A + Sync,
) -> Result<()> {
    let fault = grad_fault();
    if !grad_matches(grad, target) || runs.len() > 1 && !target.is_standard_layout() {
        return Err(fault);
    }
    let (Some([y]), Some(g)) = (common_slices([target]), grad.as_slice_memory_order_mut()) else {
        return Err(fault);
    };
    if runs.is_empty() || !g.len().is_multiple_of(runs.len()) {
        return Err(fault);
    }
    let len = g.len() / runs.len();
    let blocks = len.div_ceil(BLOCK);
    if binary.len() != blocks * runs.len() {
        return Err(fault);
    }
    let parts = y.chunks_exact(len).zip(g.chunks_exact_mut(len));
    for ((&group, (y, g)), binary) in runs.iter().zip(parts).zip(binary.chunks_exact(blocks)) {
        let Some(k) = group else {
            g.fill(A::zero());
            continue;
        };
        let coefficient = coefficients.get(k).ok_or_else(grad_fault)?;
        if !sigmoid_grad_run(binary, flagged, y, g, coefficient, &dp) {
            return Err(fault);
        }
    }
    Ok(())
}

/// [`sigmoid_grad_from_stage`] over one run, of one coefficient; whether
/// every element of the gradient is finite.
fn sigmoid_grad_run<A: Float, C: Sync>(
    binary: &[bool],
    flagged: bool,
    y: &[A],
    g: &mut [A],
    coefficient: &C,
    dp: &(impl Fn(A, A, &C) -> A + Sync),
) -> bool {
    let (zero, one) = (A::zero(), A::one());
    let ([], ok) = blocked_sum_write_at(
        [y],
        g,
        #[inline(always)]
        |_, b, [y], g| {
            let mut bad = 0u32;
            // The coefficient per target, once for the block (used where
            // the block is binary and not flagged).
            let (d0, d1) = (
                dp(A::nan(), zero, coefficient),
                dp(A::nan(), one, coefficient),
            );
            // In pieces, each asking for its lines a little ahead (see
            // `prefetch`): at 2^24 `f32` on that module's Xeon, Dice's
            // `loss_grad` 1.31–1.36 → 1.11–1.17 ns per element (AVX2 path
            // 2.12–2.14 → 1.35–1.36), 3–5 % slower in cache.
            let mut at = 0;
            while at < g.len() {
                let end = (at + STAGE).min(g.len());
                prefetch_ahead(g, at);
                let piece = &mut g[at..end];
                match (binary[b], flagged) {
                    (true, false) => {
                        for g in piece {
                            let d = select(g.is_sign_negative(), d1, d0) * g.abs();
                            *g = d;
                            bad += u32::from(!finite(d));
                        }
                    }
                    (true, true) => {
                        for g in piece {
                            let (y, stage) = g.take_flag();
                            let d = grad_from_exp(stage, y, coefficient, dp);
                            *g = d;
                            bad += u32::from(!finite(d));
                        }
                    }
                    (false, _) => {
                        prefetch_ahead(y, at);
                        for (g, &y) in piece.iter_mut().zip(&y[at..end]) {
                            let d = grad_from_exp(*g, y, coefficient, dp);
                            *g = d;
                            bad += u32::from(!finite(d));
                        }
                    }
                }
                at = end;
            }
            ([], bad == 0)
        },
    );
    ok
}

/// `dp(σ(x), y, coefficient)·σ(x)·σ(-x)` from the `e^-|x|` format of
/// [`Stage::Logistic`], as `Logistic::from_stages` (the sign of `x` from
/// the stage's).
#[inline(always)]
fn grad_from_exp<A: Float, C>(stage: A, y: A, coefficient: &C, dp: &impl Fn(A, A, &C) -> A) -> A {
    let one = A::one();
    let e = stage.abs();
    let inv = one / (one + e);
    let small = e * inv;
    let negative = stage.is_sign_negative();
    let (sigma, sigma_c) = (select(negative, small, inv), select(negative, inv, small));
    dp(sigma, y, coefficient) * (sigma * sigma_c)
}

/// Writes one group's gradient `grad = f(x, y)`.
#[inline(always)]
fn group_grad<A: Float, D: Dimension>(
    input: &ArrayRef<A, D>,
    target: &ArrayRef<A, D>,
    grad: &mut ArrayRef<A, D>,
    f: &(impl Fn(A, A) -> A + Sync),
) -> bool {
    let ([], ok) = array_sum_write(
        [input, target],
        grad,
        #[inline(always)]
        |_, [x, y], g| {
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
    check_coefficients(layout, coefficients)?;
    let activation = layout.activation;
    let ok = if activation == Activation::Softmax {
        let (_, classes, _) = softmax::dims(input.shape())?;
        with_classes!(classes, |cs| {
            let mut pass = SoftmaxGrad::new(layout, cs, coefficients, dp);
            softmax::walk(
                cs,
                input,
                target,
                None,
                Some(grad),
                #[inline(always)]
                move |ch| match ch.g {
                    Some(g) => pass.grad_from_input(ch.n, ch.last, ch.x, ch.y, g),
                    None => false,
                },
            )
        })?
    } else if activation == Activation::Sigmoid {
        let chained = |x: A, y: A, c: &C| {
            let l = Logistic::of(x);
            dp(l.sigma, y, c) * (l.sigma * l.sigma_c)
        };
        elementwise_grad(layout, input, target, grad, coefficients, &chained)
    } else {
        elementwise_grad(layout, input, target, grad, coefficients, &dp)
    };
    if ok { Ok(()) } else { Err(grad_fault()) }
}

/// The error of a gradient pass that wrote a non-finite element.
fn grad_fault() -> Error {
    Error::NonFiniteResult {
        what: "an element of the gradient",
        value: f64::INFINITY,
    }
}

fn check_coefficients<C>(layout: &Layout, coefficients: &[C]) -> Result<()> {
    if coefficients.len() == layout.count {
        Ok(())
    } else {
        Err(Error::InvalidLength {
            name: "coefficients",
            expected: layout.count,
            found: coefficients.len(),
        })
    }
}

/// Pass 2 of the softmax, one chunk at a time: from `p` and the targets,
/// the gradient `∂L/∂z_c = p_c·(v_c - Σ_j p_j·v_j)`, `v_c = ∂L/∂p_c`, of
/// every class lane, in two loops over the classes (a loop over the
/// classes costs some ten instructions a class in indexing alone).
struct SoftmaxGrad<'a, A: Float, Cs: Classes, C, F> {
    layout: &'a Layout,
    coefficients: &'a [C],
    dp: F,
    sm: Softmax<A, Cs>,
    /// The chunk's targets ([`SoftmaxGrad::grad_from_input`]) or its `p`
    /// ([`SoftmaxGrad::grad_in_place`]).
    lanes: Cs::Store<Lane<A>>,
    faults: Faults<A>,
}

impl<'a, A: Float, Cs: Classes, C, F: Fn(A, A, &C) -> A> SoftmaxGrad<'a, A, Cs, C, F> {
    fn new(layout: &'a Layout, classes: Cs, coefficients: &'a [C], dp: F) -> Self {
        Self {
            layout,
            coefficients,
            dp,
            sm: Softmax::new(classes),
            lanes: classes.store([A::zero(); L]),
            faults: Faults::new(),
        }
    }

    /// Writes the gradient of the chunk of sample `n` into `g` from the
    /// logits `x` and the targets `y`; returns `false` on a non-finite
    /// element at the end of a tile (`last`).
    #[inline(always)]
    fn grad_from_input(
        &mut self,
        n: usize,
        last: bool,
        x: Lanes<'_, A, Cs>,
        y: Lanes<'_, A, Cs>,
        g: LanesMut<'_, A, Cs>,
    ) -> bool {
        // The targets copied first, so that their loads go out with the
        // logits' (see `CrossEntropy`).
        for (c, lane) in self.lanes.as_mut().iter_mut().enumerate() {
            *lane = *y.get(c);
        }
        self.sm.compute_p(x);
        self.write::<false>(n, last, g, None)
    }

    /// As [`SoftmaxGrad::grad_from_input`], from what [`softmax_sums`] stored in
    /// `g`: `p`, and the targets in its signs where `y` is not given
    /// ([`Stage::Softmax`]). The padding of a short chunk reads as `p = 0`
    /// and `y = 0`, where every `dp` of the region losses is finite (Dice's
    /// `γ ≥ 1`), so it adds no fault.
    #[inline(always)]
    fn grad_in_place(
        &mut self,
        n: usize,
        last: bool,
        g: LanesMut<'_, A, Cs>,
        y: Option<Lanes<'_, A, Cs>>,
    ) -> bool {
        self.write::<true>(n, last, g, y)
    }

    #[inline(always)]
    fn write<const IN_PLACE: bool>(
        &mut self,
        n: usize,
        last: bool,
        mut g: LanesMut<'_, A, Cs>,
        y: Option<Lanes<'_, A, Cs>>,
    ) -> bool {
        let (zero, one) = (A::zero(), A::one());
        let classes = self.lanes.as_ref().len();
        // A local copy, stored back once (see `CrossEntropy`).
        let mut faults = self.faults;
        let mut dot = [zero; L];
        for c in 0..classes {
            let gc = g.get(c);
            let (p, t) = if IN_PLACE {
                let stored = *gc;
                let (mut p, mut t) = ([zero; L], [zero; L]);
                for k in 0..L {
                    p[k] = stored[k].abs();
                    t[k] = select(stored[k].is_sign_negative(), one, zero);
                }
                self.lanes.as_mut()[c] = p;
                (p, y.map_or(t, |y| *y.get(c)))
            } else {
                (*self.sm.p(c), self.lanes.as_ref()[c])
            };
            let mut v = [zero; L];
            if let Some(k) = self.layout.group(n, c).map(|g| &self.coefficients[g]) {
                for j in 0..L {
                    v[j] = (self.dp)(p[j], t[j], k);
                }
            }
            for j in 0..L {
                dot[j] += v[j] * p[j];
            }
            *gc = v;
        }
        for c in 0..classes {
            let p = if IN_PLACE {
                &self.lanes.as_ref()[c]
            } else {
                self.sm.p(c)
            };
            let gc = g.get(c);
            let mut v = *gc;
            for k in 0..L {
                v[k] = p[k] * (v[k] - dot[k]);
            }
            faults.check(&v, finite);
            *gc = v;
        }
        self.faults = faults;
        !last || self.faults.none()
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
