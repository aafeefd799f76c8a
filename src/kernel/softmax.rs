//! The softmax along axis 1 and the position-wise walk the softmax losses
//! share.
//!
//! An `(N, C, S...)` array holds, at every position `(n, s)`, a class vector
//! along axis 1. In standard layout each class plane of a sample is one
//! contiguous block of `S = Π S_i` elements. The walk visits each sample in
//! chunks of [`L`] positions and hands the loss, as a [`Chunk`], the
//! chunk's `C` class runs of every operand as per-class lanes ([`Lane`],
//! `[A; L]`): views into the planes, or for the last, short chunk of a
//! sample, zero-padded copies (whose gradient lanes are copied back). A
//! second pass that reads what the first left in the gradient, instead of
//! the input, walks with [`walk_in_place`]. A loss thus does all its
//! arithmetic for a chunk (softmax, loss terms, gradient) on fixed-size
//! arrays that stay in registers or L1, with loops of a constant trip count
//! that vectorise and unroll, and every stream of every operand advances in
//! step, which the hardware prefetchers follow. Operands in any other layout
//! are copied to standard layout first.
//!
//! Why chunks, not tiles: the previous design ran each loss step as its own
//! loop over tiles of 512 positions, with per-class scratch buffers. In
//! cache it was as fast, but at 2^24 elements the loops with little
//! arithmetic (the maximum, the validation) met each tile's first touch of
//! memory on their own. Chunks of 64 positions were slower again than
//! chunks of 16 (a prototype of cross-entropy at 2^24: 3.2–5.4 against
//! 2.7–3.0 ns per element): the shorter the step of each stream, the
//! better the prefetchers keep up. See BENCHMARKS.md for the measurements.

use std::borrow::Cow;
use std::fmt::Debug;

use ndarray::{ArrayRef, Dimension};

use super::{LANES, dispatch, prefetch_line_ahead, sum_lanes};
use crate::kernel::math::{Fma, exp_neg, select};
use crate::{Error, Float, Result};

// Every loop over a chunk's positions below (and in the losses) writes to
// a local array that is then stored whole: a loop that writes straight into
// a lane behind a reference, while reading others, is left scalar (after
// inlining LLVM cannot tell that the lanes do not overlap).

/// Positions per chunk.
pub(crate) const L: usize = 16;
const _: () = assert!(
    L.is_multiple_of(LANES),
    "LaneSum::take folds L lanes into LANES"
);

/// One class's values at the positions of a chunk.
pub(crate) type Lane<A> = [A; L];

/// The number of classes of a walk: a constant ([`Fixed`]), so that every
/// loop over the classes has a constant trip count and unrolls, with the
/// per-class lanes in arrays that stay in registers or at fixed stack
/// offsets; or a count known only at run time (`usize`), with the lanes in
/// `Vec`s. [`with_classes!`] picks one from the count.
pub(crate) trait Classes: Copy + Debug {
    /// One value per class.
    type Store<T: Copy + Debug>: AsRef<[T]> + AsMut<[T]> + Clone + Debug;

    /// The number of classes.
    fn count(self) -> usize;

    /// `value` for every class.
    fn store<T: Copy + Debug>(self, value: T) -> Self::Store<T>;
}

/// `C` classes, known at compile time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fixed<const C: usize>;

impl<const C: usize> Classes for Fixed<C> {
    type Store<T: Copy + Debug> = [T; C];

    #[inline(always)]
    fn count(self) -> usize {
        C
    }

    #[inline(always)]
    fn store<T: Copy + Debug>(self, value: T) -> [T; C] {
        [value; C]
    }
}

impl Classes for usize {
    type Store<T: Copy + Debug> = Vec<T>;

    #[inline(always)]
    fn count(self) -> usize {
        self
    }

    fn store<T: Copy + Debug>(self, value: T) -> Vec<T> {
        vec![value; self]
    }
}

/// Evaluates `$body` with `$k` bound to the class count `$classes` as a
/// [`Classes`]: a [`Fixed`] for the common small counts (two to four
/// classes: binary, and the three or four of most multi-class
/// segmentation), else the `usize` itself. The body is compiled once per
/// arm. With four classes fixed, cross-entropy's `loss_grad` took 14.9
/// instead of 18.3 instructions per element and multi-class Dice's 20.1
/// instead of 23.2 when this came in (callgrind, 2^16 `f32` elements;
/// before [`Planes`] dropped most bounds checks): the class loops run
/// to a constant bound (the short ones unroll), and the per-class lanes sit
/// at fixed offsets instead of behind a `Vec`.
macro_rules! with_classes {
    ($classes:expr, |$k:ident| $body:expr) => {
        match $classes {
            2 if $crate::kernel::softmax::fixed_counts() => {
                let $k = $crate::kernel::softmax::Fixed::<2>;
                $body
            }
            3 if $crate::kernel::softmax::fixed_counts() => {
                let $k = $crate::kernel::softmax::Fixed::<3>;
                $body
            }
            4 if $crate::kernel::softmax::fixed_counts() => {
                let $k = $crate::kernel::softmax::Fixed::<4>;
                $body
            }
            classes => {
                let $k: usize = classes;
                $body
            }
        }
    };
}
pub(crate) use with_classes;

/// Makes [`with_classes!`] take the run-time count for every number of
/// classes (for the test that compares the two).
#[cfg(test)]
static DYNAMIC_ONLY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes [`with_classes!`] take the run-time count always (`true`) or pick
/// a [`Fixed`] one where it can (`false`).
#[cfg(test)]
pub(crate) fn force_dynamic(dynamic: bool) {
    DYNAMIC_ONLY.store(dynamic, std::sync::atomic::Ordering::SeqCst);
}

/// Whether [`with_classes!`] may pick a [`Fixed`] count: always, outside
/// the test that compares the two.
#[inline(always)]
pub(crate) fn fixed_counts() -> bool {
    #[cfg(test)]
    if DYNAMIC_ONLY.load(std::sync::atomic::Ordering::SeqCst) {
        return false;
    }
    true
}

/// Positions per call of [`dispatch::run`]; also how often a loss flushes
/// its element-type lane sums into `f64` ([`Chunk::last`]).
const TILE: usize = 512;

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

/// An operand's class planes in one sample: `classes` planes of `stride`
/// values each at the start of `data` (`&[A]`, or `&mut [A]` for the
/// gradient; checked once, when made), from which `lanes` makes the
/// [`Lanes`] or [`LanesMut`] of a chunk.
///
/// Bounds are checked per sample and per chunk, not at every
/// [`Lanes::get`]: a loss reads each lane several times a chunk, and a
/// slice's bounds checks at every read cost cross-entropy's and
/// multi-class Dice's `loss_grad` about a sixth of their instructions
/// (callgrind, 2^16 `f32` elements, 4 classes; see BENCHMARKS.md).
#[derive(Debug, Clone, Copy)]
struct Planes<S, K> {
    data: S,
    stride: usize,
    classes: K,
}

/// Panics unless a lane of [`L`] values at `at` fits in a plane of
/// `stride`.
#[inline(always)]
fn assert_lane_fits(stride: usize, at: usize) {
    assert!(
        stride.checked_sub(L).is_some_and(|last| at <= last),
        "lanes out of bounds"
    );
}

impl<A, S: std::ops::Deref<Target = [A]>, K: Classes> Planes<S, K> {
    /// Panics unless the planes fit in `data`.
    #[inline(always)]
    fn new(data: S, stride: usize, classes: K) -> Self {
        assert!(
            classes
                .count()
                .checked_mul(stride)
                .is_some_and(|n| n <= data.len()),
            "planes out of bounds"
        );
        Self {
            data,
            stride,
            classes,
        }
    }

    /// Asks for the cache line of each class plane some way past position
    /// `at` ([`prefetch_line_ahead`]).
    #[inline(always)]
    fn prefetch(&self, at: usize) {
        for plane in self
            .data
            .chunks_exact(self.stride)
            .take(self.classes.count())
        {
            prefetch_line_ahead(plane, at);
        }
    }
}

impl<'a, A, K: Classes> Planes<&'a [A], K> {
    /// The lanes at position `at`. Panics unless `at + L ≤ stride`.
    #[inline(always)]
    fn lanes(self, at: usize) -> Lanes<'a, A, K> {
        assert_lane_fits(self.stride, at);
        Lanes {
            data: self.data,
            stride: self.stride,
            at,
            classes: self.classes,
        }
    }
}

impl<'a, A, K: Classes> Planes<&'a mut [A], K> {
    /// The writable lanes at position `at`. Panics unless `at + L ≤
    /// stride`.
    #[inline(always)]
    fn lanes(&mut self, at: usize) -> LanesMut<'_, A, K> {
        Planes {
            data: &mut *self.data,
            stride: self.stride,
            classes: self.classes,
        }
        .into_lanes(at)
    }

    /// As `lanes`, for the planes' whole borrow.
    #[inline(always)]
    fn into_lanes(self, at: usize) -> LanesMut<'a, A, K> {
        assert_lane_fits(self.stride, at);
        LanesMut {
            data: self.data,
            stride: self.stride,
            at,
            classes: self.classes,
        }
    }
}

/// The lanes of one operand at a chunk of positions: lane `c` is class
/// `c`, `L` values at a stride of `stride` per class. A view straight into
/// the operand's planes (a full chunk) or into zero-padded scratch (the last,
/// shorter chunk of a sample). Made only by `Planes::lanes`, so that
/// every lane of a class below the count lies in `data`: the lane of class
/// `c` starts at `o = c·stride + at`, and `o + L ≤ (c + 1)·stride ≤
/// count·stride ≤ len`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lanes<'a, A, K> {
    data: &'a [A],
    stride: usize,
    at: usize,
    classes: K,
}

impl<'a, A: Float, K: Classes> Lanes<'a, A, K> {
    /// The lane of class `c`.
    #[inline(always)]
    #[allow(unsafe_code)]
    pub(crate) fn get(&self, c: usize) -> &'a Lane<A> {
        assert!(c < self.classes.count(), "no such class");
        let o = c * self.stride + self.at;
        // SAFETY: `c < count`, so the `L` values from `o` lie in `data`
        // (see the type's documentation). `[A; L]` has the alignment of
        // `A`, and the borrow is `data`'s.
        unsafe { &*self.data.as_ptr().add(o).cast::<Lane<A>>() }
    }

    /// The lanes of every class, in class order.
    #[inline(always)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = &'a Lane<A>> + use<'a, A, K> {
        let view = *self;
        (0..view.classes.count()).map(move |c| view.get(c))
    }
}

/// As [`Lanes`], writable: the gradient's lanes, made only by
/// `Planes::lanes` and `Planes::into_lanes` over `&mut [A]`.
#[derive(Debug)]
pub(crate) struct LanesMut<'a, A, K> {
    data: &'a mut [A],
    stride: usize,
    at: usize,
    classes: K,
}

impl<A: Float, K: Classes> LanesMut<'_, A, K> {
    /// The lane of class `c`.
    #[inline(always)]
    #[allow(unsafe_code)]
    pub(crate) fn get(&mut self, c: usize) -> &mut Lane<A> {
        assert!(c < self.classes.count(), "no such class");
        let o = c * self.stride + self.at;
        // SAFETY: as in `Lanes::get`; the borrow is unique through
        // `&mut self`.
        unsafe { &mut *self.data.as_mut_ptr().add(o).cast::<Lane<A>>() }
    }

    /// The number of classes.
    #[inline(always)]
    pub(crate) fn classes(&self) -> usize {
        self.classes.count()
    }
}

/// The operands' lanes at the same chunk of positions of sample `n`.
/// Positions past `len` (in the last chunk of a sample) hold zeros in
/// every operand, and what a loss writes there is discarded.
#[derive(Debug)]
pub(crate) struct Chunk<'a, A, K> {
    /// The sample (index of axis 0).
    pub(crate) n: usize,
    /// The number of live positions (`1..=L`).
    pub(crate) len: usize,
    /// Whether this is the last chunk of a tile: the loss should move its
    /// lane sums into `f64` now (they then never hold more than [`TILE`]
    /// positions' terms, nor span two samples).
    pub(crate) last: bool,
    pub(crate) x: Lanes<'a, A, K>,
    pub(crate) y: Lanes<'a, A, K>,
    pub(crate) w: Option<Lanes<'a, A, K>>,
    /// The gradient's lanes, which the loss must write in full.
    pub(crate) g: Option<LanesMut<'a, A, K>>,
}

impl<A: Float, K> Chunk<'_, A, K> {
    /// Sets the lanes' entries past `len` to zero, so that padding adds
    /// nothing to a sum.
    #[inline(always)]
    pub(crate) fn trim(&self, v: &mut Lane<A>) {
        if self.len < L {
            v[self.len..].fill(A::zero());
        }
    }
}

/// The operand's elements in standard (row-major) order, borrowed when the
/// array already is in standard layout.
fn standard<A: Float, D: Dimension>(a: &ArrayRef<A, D>) -> Cow<'_, [A]> {
    match a.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(a.iter().copied().collect()),
    }
}

/// Copies a short chunk (`len < L` positions at `at` of every class plane
/// of `planes`) into `scratch` (`C·L` values), zero-padded.
fn pad<A: Float>(scratch: &mut [A], planes: &[A], positions: usize, at: usize, len: usize) {
    for (lane, plane) in scratch
        .chunks_exact_mut(L)
        .zip(planes.chunks_exact(positions))
    {
        lane.fill(A::zero());
        lane[..len].copy_from_slice(&plane[at..at + len]);
    }
}

/// Walks `(N, C, ...)` operands (shapes already checked equal, at least two
/// axes, `C` classes as `classes` counts them) chunk by chunk, calling `f`
/// on every [`Chunk`]; returns whether
/// every call returned `true`. When `grad` is given, `f` must write every
/// lane of the chunk's gradient. Each tile of chunks runs through
/// [`dispatch::run`]: `f` should be an `#[inline(always)]` closure.
pub(crate) fn walk<A: Float, D: Dimension, K: Classes>(
    classes: K,
    input: &ArrayRef<A, D>,
    target: &ArrayRef<A, D>,
    weights: Option<&ArrayRef<A, D>>,
    grad: Option<&mut ArrayRef<A, D>>,
    mut f: impl FnMut(Chunk<'_, A, K>) -> bool,
) -> Result<bool> {
    let dims = dims(input.shape())?;
    let x = standard(input);
    let y = standard(target);
    let w = weights.map(standard);
    let mut run = |g: Option<&mut [A]>| {
        visit(
            classes,
            dims,
            [&x, &y],
            w.as_deref(),
            g,
            false,
            #[inline(always)]
            |v| {
                let [x, y] = v.reads;
                f(Chunk {
                    n: v.n,
                    len: v.len,
                    last: v.last,
                    x,
                    y,
                    w: v.w,
                    g: v.g,
                })
            },
        )
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

/// A chunk of [`walk_in_place`]: the targets' lanes and the gradient's,
/// which hold on entry what the loss's first pass left there.
#[derive(Debug)]
pub(crate) struct InPlace<'a, A, K> {
    /// The sample (index of axis 0).
    pub(crate) n: usize,
    /// Whether this is the last chunk of a tile (as [`Chunk::last`]).
    pub(crate) last: bool,
    /// The targets' lanes, when asked for.
    pub(crate) y: Option<Lanes<'a, A, K>>,
    /// The gradient's lanes: read, then written in full.
    pub(crate) g: LanesMut<'a, A, K>,
}

/// As [`walk`] for a second pass that reads what the first left in `grad`
/// (in standard layout, else `Ok(None)`) instead of the input: calls `f`
/// on every chunk of `grad` and, if given, `target`.
pub(crate) fn walk_in_place<A: Float, D: Dimension, K: Classes>(
    classes: K,
    target: Option<&ArrayRef<A, D>>,
    grad: &mut ArrayRef<A, D>,
    f: impl FnMut(InPlace<'_, A, K>) -> bool,
) -> Result<Option<bool>> {
    let dims = dims(grad.shape())?;
    let y = target.map(standard);
    let Some(g) = grad.as_slice_mut() else {
        return Ok(None);
    };
    // One loop each, with and without the targets.
    Ok(Some(match &y {
        Some(y) => visit_in_place(classes, dims, [y], g, f),
        None => visit_in_place(classes, dims, [], g, f),
    }))
}

/// [`walk_in_place`]'s chunk loop, with the targets as the one read
/// operand or none.
#[inline(always)]
fn visit_in_place<A: Float, K: Classes, const R: usize>(
    classes: K,
    dims: (usize, usize, usize),
    reads: [&[A]; R],
    g: &mut [A],
    mut f: impl FnMut(InPlace<'_, A, K>) -> bool,
) -> bool {
    visit(
        classes,
        dims,
        reads,
        None,
        Some(g),
        true,
        #[inline(always)]
        |v| match v.g {
            Some(g) => f(InPlace {
                n: v.n,
                last: v.last,
                y: v.reads.first().copied(),
                g,
            }),
            None => false,
        },
    )
}

/// What [`visit`] hands its callback: the lanes of `R` read operands, of
/// the weights and of the gradient at one chunk.
struct Visit<'a, A, K, const R: usize> {
    n: usize,
    len: usize,
    last: bool,
    reads: [Lanes<'a, A, K>; R],
    w: Option<Lanes<'a, A, K>>,
    g: Option<LanesMut<'a, A, K>>,
}

/// The chunk loop of [`walk`] and [`walk_in_place`], over operands in
/// standard layout of `dims = (N, C, S)`: `R` read operands, optional
/// weights and an optional gradient, which is copied into the scratch of
/// the short chunk too when `load_grad` (the pass reads it).
fn visit<A: Float, K: Classes, const R: usize>(
    classes: K,
    (samples, count, positions): (usize, usize, usize),
    reads: [&[A]; R],
    weights: Option<&[A]>,
    mut grad: Option<&mut [A]>,
    load_grad: bool,
    mut f: impl FnMut(Visit<'_, A, K, R>) -> bool,
) -> bool {
    if classes.count() != count {
        // The callers take `classes` from the shape: never reached.
        return false;
    }
    let sample_len = count * positions;
    if sample_len == 0 {
        return true;
    }
    // Scratch for the last, short chunk of a sample.
    let scratch = || vec![A::zero(); count * L];
    let mut rs = [(); R].map(|()| scratch());
    let (mut ws, mut gs) = (scratch(), scratch());
    let mut ok = true;
    for n in 0..samples {
        let range = n * sample_len..(n + 1) * sample_len;
        let rn = reads.map(|r| &r[range.clone()]);
        let wn = weights.map(|w| &w[range.clone()]);
        let mut gn = grad.as_deref_mut().map(|g| &mut g[range.clone()]);
        let mut start = 0;
        while start < positions {
            let end = (start + TILE).min(positions);
            ok &= dispatch::run(
                #[inline(always)]
                || {
                    let mut ok = true;
                    let mut pos = start;
                    let planes = |data| Planes::new(data, positions, classes);
                    let (rp, wp) = (rn.map(planes), wn.map(planes));
                    let mut gp = gn
                        .as_deref_mut()
                        .map(|g| Planes::new(g, positions, classes));
                    while pos + L <= end {
                        for r in &rp {
                            r.prefetch(pos);
                        }
                        if let Some(w) = &wp {
                            w.prefetch(pos);
                        }
                        if let Some(g) = &gp {
                            g.prefetch(pos);
                        }
                        ok &= f(Visit {
                            n,
                            len: L,
                            last: pos + L == end,
                            reads: rp.map(|r| r.lanes(pos)),
                            w: wp.map(|w| w.lanes(pos)),
                            g: gp.as_mut().map(|g| g.lanes(pos)),
                        });
                        pos += L;
                    }
                    if pos < end {
                        let len = end - pos;
                        for (s, r) in rs.iter_mut().zip(rn) {
                            pad(s, r, positions, pos, len);
                        }
                        if let Some(wn) = wn {
                            pad(&mut ws, wn, positions, pos, len);
                        }
                        if let (true, Some(gn)) = (load_grad, gn.as_deref()) {
                            pad(&mut gs, gn, positions, pos, len);
                        }
                        ok &= f(Visit {
                            n,
                            len,
                            last: true,
                            reads: std::array::from_fn(|i| {
                                Planes::new(&rs[i][..], L, classes).lanes(0)
                            }),
                            w: wn.map(|_| Planes::new(&ws[..], L, classes).lanes(0)),
                            g: gn
                                .as_ref()
                                .map(|_| Planes::new(&mut gs[..], L, classes).into_lanes(0)),
                        });
                        if let Some(gn) = gn.as_deref_mut() {
                            for (lane, plane) in
                                gs.chunks_exact(L).zip(gn.chunks_exact_mut(positions))
                            {
                                plane[pos..end].copy_from_slice(&lane[..len]);
                            }
                        }
                    }
                    ok
                },
            );
            start = end;
        }
    }
    ok
}

/// The softmax of a chunk: `p_c` per class lane and, per position, the
/// log-sum-exp (so that `ln p_c = x_c - lse`).
#[derive(Debug, Clone)]
pub(crate) struct Softmax<A: Float, K: Classes> {
    p: K::Store<Lane<A>>,
    lse: Lane<A>,
}

impl<A: Float, K: Classes> Softmax<A, K> {
    pub(crate) fn new(classes: K) -> Self {
        Self {
            p: classes.store([A::zero(); L]),
            lse: [A::zero(); L],
        }
    }

    /// Computes the softmax of the chunk `x` and its log-sum-exp
    /// ([`Softmax::lse`]).
    #[inline(always)]
    pub(crate) fn compute(&mut self, x: Lanes<'_, A, K>) {
        self.fill(x, true);
    }

    /// As [`Softmax::compute`], without the log-sum-exp (one `ln` per
    /// position less, for the losses that only use `p`).
    #[inline(always)]
    pub(crate) fn compute_p(&mut self, x: Lanes<'_, A, K>) {
        self.fill(x, false);
    }

    /// The softmax of `x`, shifted by the per-position maximum so that every
    /// `exp` is `≤ 1`; with `lse`, also the log-sum-exp.
    #[inline(always)]
    fn fill(&mut self, x: Lanes<'_, A, K>, lse: bool) {
        let mut max = *x.get(0);
        for xc in x.iter().skip(1) {
            // A select into a fresh array, one `vmaxps` (`f32::max` adds a
            // NaN test and a blend; a select in place, a masked store). A
            // NaN logit may be skipped here, but not by the `exp`s, whose
            // sum it then spoils: the losses' checks see it either way.
            let mut next = [A::zero(); L];
            for k in 0..L {
                next[k] = select(xc[k] > max[k], xc[k], max[k]);
            }
            max = next;
        }
        let mut sum = [A::zero(); L];
        for (p, xc) in self.p.as_mut().iter_mut().zip(x.iter()) {
            let mut e = [A::zero(); L];
            for k in 0..L {
                // `x - max ≤ 0`: the `exp` for non-positive arguments
                // (bit for bit the general one, with fewer instructions).
                e[k] = exp_neg(xc[k] - max[k], Fma::Off);
                sum[k] += e[k];
            }
            *p = e;
        }
        if lse {
            let mut l = [A::zero(); L];
            for k in 0..L {
                l[k] = max[k] + sum[k].fast_ln();
            }
            self.lse = l;
        }
        let mut inv = [A::zero(); L];
        for (i, &s) in inv.iter_mut().zip(&sum) {
            *i = A::one() / s;
        }
        for p in self.p.as_mut() {
            let mut v = *p;
            for (v, &i) in v.iter_mut().zip(&inv) {
                *v *= i;
            }
            *p = v;
        }
    }

    /// `p_c` at the chunk's positions.
    #[inline(always)]
    pub(crate) fn p(&self, c: usize) -> &Lane<A> {
        &self.p.as_ref()[c]
    }

    /// The log-sum-exp at the chunk's positions (after [`Softmax::compute`]).
    #[inline(always)]
    pub(crate) fn lse(&self) -> &Lane<A> {
        &self.lse
    }

    /// Writes `∂L/∂z_k = g_k - p_k·Σ_c g_c` from `g_c = p_c·∂L/∂p_c`, held
    /// in `g` on entry (finite even where `p_c` underflows to 0): the
    /// softmax's Jacobian applied in place.
    #[inline(always)]
    pub(crate) fn chain_scaled(&self, g: &mut LanesMut<'_, A, K>) {
        let mut total = [A::zero(); L];
        for c in 0..g.classes() {
            for (t, &v) in total.iter_mut().zip(g.get(c).iter()) {
                *t += v;
            }
        }
        for (c, p) in self.p.as_ref().iter().enumerate() {
            let gc = g.get(c);
            let mut v = *gc;
            for k in 0..L {
                v[k] -= p[k] * total[k];
            }
            *gc = v;
        }
    }
}

/// A running sum of lanes in the element type, moved into `f64` by
/// [`LaneSum::take`] (at the end of every tile: [`Chunk::last`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LaneSum<A> {
    lanes: Lane<A>,
}

impl<A: Float> LaneSum<A> {
    pub(crate) fn new() -> Self {
        Self {
            lanes: [A::zero(); L],
        }
    }

    /// Adds `v` lane by lane (trim the padding first: [`Chunk::trim`]).
    #[inline(always)]
    pub(crate) fn add(&mut self, v: &Lane<A>) {
        let mut lanes = self.lanes;
        for (s, &v) in lanes.iter_mut().zip(v) {
            *s += v;
        }
        self.lanes = lanes;
    }

    /// The sum so far in `f64` (pairwise over the lanes); resets to zero.
    #[inline(always)]
    pub(crate) fn take(&mut self) -> f64 {
        let mut folded = [A::zero(); LANES];
        for group in self.lanes.chunks_exact(LANES) {
            for (f, &v) in folded.iter_mut().zip(group) {
                *f += v;
            }
        }
        self.lanes = [A::zero(); L];
        sum_lanes(&folded)
    }
}

/// A count of faults per lane: [`Faults::check`] notes a per-position test
/// as a compare in the lanes of the arithmetic, [`Faults::none`] reads the
/// count once per tile (a loop that folds a `bool` per element does not
/// vectorise).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Faults<A> {
    lanes: Lane<A>,
}

impl<A: Float> Faults<A> {
    pub(crate) fn new() -> Self {
        Self {
            lanes: [A::zero(); L],
        }
    }

    /// Notes `good(v[k])` for every position `k`.
    #[inline(always)]
    pub(crate) fn check(&mut self, v: &Lane<A>, good: impl Fn(A) -> bool) {
        let mut lanes = self.lanes;
        for (b, &v) in lanes.iter_mut().zip(v) {
            *b += select(good(v), A::zero(), A::one());
        }
        self.lanes = lanes;
    }

    /// Notes `good(a[k], b[k])` for every position `k`.
    #[inline(always)]
    pub(crate) fn check2(&mut self, a: &Lane<A>, b: &Lane<A>, good: impl Fn(A, A) -> bool) {
        let mut lanes = self.lanes;
        for k in 0..L {
            lanes[k] += select(good(a[k], b[k]), A::zero(), A::one());
        }
        self.lanes = lanes;
    }

    /// Whether nothing was noted since the last call; resets.
    #[inline(always)]
    pub(crate) fn none(&mut self) -> bool {
        let none = self.lanes.iter().all(|&b| b == A::zero());
        self.lanes = [A::zero(); L];
        none
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
        let ok = walk(3, &x, &y, None, None, |ch| {
            assert_eq!(ch.len, 2);
            sm.compute(ch.x);
            assert_eq!(sm.p(0)[0], 1.0);
            assert_eq!(sm.p(2)[1], 1.0);
            assert_eq!(sm.p(1)[0], 0.0);
            assert!((sm.lse()[0] - 1e3).abs() < 1e-12);
            assert!((sm.lse()[1] - 1e3).abs() < 1e-12);
            true
        })
        .unwrap();
        assert!(ok);
    }

    /// Every element of every operand reaches the loss once, in full and
    /// short chunks, whatever the layout, and the gradient lanes land where
    /// they belong; `last` closes every tile, and the padding is zero.
    #[test]
    fn walk_covers_every_element_in_any_layout() {
        // 1100 positions: two full tiles and a third of 76 (4 chunks and 12).
        let (samples, classes, positions) = (2, 3, 1100);
        let f = |(n, c, s): (usize, usize, usize)| (n * 10_000 + c * 2000 + s) as f64;
        let x = Array3::from_shape_fn((samples, classes, positions), f);
        let t = Array3::from_shape_fn((samples, classes, positions).f(), f);
        assert!(!t.is_standard_layout());
        let w = t.mapv(|v| v + 0.5);
        let mut grad = Array3::<f64>::zeros((samples, classes, positions).f());
        let (mut seen, mut tiles) = (0, 0);
        let ok = walk(Fixed::<3>, &t, &t, Some(&w), Some(&mut grad), |ch| {
            let mut g = ch.g.unwrap();
            let w = ch.w.unwrap();
            for c in 0..classes {
                let (x, y, w) = (ch.x.get(c), ch.y.get(c), w.get(c));
                assert_eq!(x, y);
                for k in 0..L {
                    if k < ch.len {
                        assert_eq!(w[k], x[k] + 0.5);
                    } else {
                        assert_eq!((x[k], w[k]), (0.0, 0.0), "padding");
                    }
                }
                *g.get(c) = *x;
            }
            assert_eq!(x[[ch.n, 0, 0]] as usize / 10_000, ch.n);
            seen += ch.len * classes;
            tiles += usize::from(ch.last);
            true
        })
        .unwrap();
        assert!(ok);
        assert_eq!(seen, x.len());
        assert_eq!(tiles, samples * positions.div_ceil(TILE));
        assert_eq!(grad, x);
    }
}
