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
//!
//! The slice paths go further: [`blocked_sum`] cuts them into fixed blocks
//! of [`BLOCK`] elements whose `f64` sums are added in block order, serially
//! or (with the `rayon` feature, above `PARALLEL_MIN` elements) in
//! parallel, with the same result either way; and every block, like every
//! softmax tile, runs through [`dispatch::run`], which uses AVX2 or AVX-512
//! where the CPU has them, with results bit-identical to the baseline code
//! (but for the pixel kernel's logistic stages, which fuse their
//! multiply-adds there: see [`dispatch`]).

pub(crate) mod dispatch;
pub(crate) mod gather;
pub(crate) mod math;
pub(crate) mod pixel;
mod prefetch;
pub(crate) mod region;
pub(crate) mod softmax;
#[cfg(test)]
mod tests;

use ndarray::{ArrayRef, Dimension};

use crate::error::unravel;
use crate::{Error, Float};
use math::{Fma, select};
pub(crate) use prefetch::{prefetch_ahead, prefetch_line_ahead};

/// Elements per partial sum in the element type.
pub(crate) const CHUNK: usize = 512;
/// Elements per piece of the staged loops of [`staged_lanes`] (a divisor
/// of [`CHUNK`] and a multiple of [`LANES`]). Each stage's loop over a
/// piece touches no memory beyond L1, or only one operand; with short
/// pieces, the CPU still has the other operands' loads in flight while it
/// computes. BCE `loss_grad` at 2^24 `f32`, AVX-512: 1.62–1.68 ns per
/// element with pieces of 512, 1.34–1.37 with 128; 64 and 256 were
/// slower. In cache it costs 2–4 % (the loss alone 10 %, most of which
/// the fault flags of [`Lanes`] won back).
pub(crate) const STAGE: usize = 128;
/// Independent accumulators within a chunk (breaks the add dependency chain
/// and shortens each partial sum to `CHUNK / LANES` terms). Also the width
/// of the groups the fused loops vectorise as one: 16 `f32` fill an
/// AVX-512 register (with 8, those loops ran on 256-bit halves under
/// AVX-512; BCE `loss_grad` in cache took 8 % longer, its `loss` 22 %).
pub(crate) const LANES: usize = 16;

/// Elements per block of [`blocked_sum`] and [`blocked_sum_write`]: each
/// block's sums are formed on their own (in parallel with the `rayon`
/// feature) and added in block order, so that the result does not depend on
/// the thread count. A multiple of [`CHUNK`].
pub(crate) const BLOCK: usize = 1 << 16;

/// The fewest elements for which the blocked sums run in parallel.
#[cfg(feature = "rayon")]
pub(crate) const PARALLEL_MIN: usize = 1 << 18;

/// Forces the serial path of the blocked sums (for the test that compares
/// it with the parallel one).
#[cfg(all(test, feature = "rayon"))]
static FORCE_SERIAL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes the blocked sums serial (`true`) or parallel when large (`false`).
#[cfg(all(test, feature = "rayon"))]
pub(crate) fn force_serial(serial: bool) {
    FORCE_SERIAL.store(serial, std::sync::atomic::Ordering::SeqCst);
}

/// Whether the blocked sums over `n` elements run in parallel.
#[cfg(feature = "rayon")]
#[inline]
fn parallel(n: usize) -> bool {
    #[cfg(test)]
    if FORCE_SERIAL.load(std::sync::atomic::Ordering::SeqCst) {
        return false;
    }
    n >= PARALLEL_MIN
}

/// Adds the blocks' sums in block order.
fn combine<const K: usize>(parts: impl IntoIterator<Item = ([f64; K], bool)>) -> ([f64; K], bool) {
    let mut total = ([0.0f64; K], true);
    for part in parts {
        add_part(&mut total, part);
    }
    total
}

/// Adds one part's `(sums, valid)` to the running `(totals, valid)`.
/// Called with the part already computed: loops reached through an
/// iterator adaptor's `next` may leave the dispatched function's target
/// features (`Iterator::map` there made BCE 3× slower).
#[inline(always)]
fn add_part<const K: usize>(total: &mut ([f64; K], bool), (sums, good): ([f64; K], bool)) {
    for (t, s) in total.0.iter_mut().zip(sums) {
        *t += s;
    }
    total.1 &= good;
}

/// Splits the slices (of equal lengths; a longer one is cut to the
/// shortest) into [`BLOCK`]-sized blocks, sums each with `block` (run
/// through [`dispatch::run_fma`], whose [`Fma`] it is given, in parallel
/// above [`PARALLEL_MIN`] elements with the `rayon` feature) and adds the
/// block sums in block order. `block` should be an `#[inline(always)]`
/// closure.
#[inline(always)]
pub(crate) fn blocked_sum<A: Float, const K: usize, const N: usize>(
    inputs: [&[A]; N],
    block: impl Fn(Fma, [&[A]; N]) -> ([f64; K], bool) + Sync,
) -> ([f64; K], bool) {
    let n = inputs.iter().map(|s| s.len()).min().unwrap_or(0);
    let part = |b: usize| {
        let range = b * BLOCK..((b + 1) * BLOCK).min(n);
        dispatch::run_fma(
            #[inline(always)]
            |fma| block(fma, inputs.map(|s| &s[range.clone()])),
        )
    };
    let blocks = n.div_ceil(BLOCK);
    #[cfg(feature = "rayon")]
    if parallel(n) {
        use rayon::prelude::*;
        let parts: Vec<_> = (0..blocks).into_par_iter().map(part).collect();
        return combine(parts);
    }
    combine((0..blocks).map(part))
}

/// As [`blocked_sum`], with an output slice split into the same blocks.
#[inline(always)]
pub(crate) fn blocked_sum_write<A: Float, const K: usize, const N: usize>(
    inputs: [&[A]; N],
    out: &mut [A],
    block: impl Fn(Fma, [&[A]; N], &mut [A]) -> ([f64; K], bool) + Sync,
) -> ([f64; K], bool) {
    blocked_sum_write_at(
        inputs,
        out,
        #[inline(always)]
        |fma, _, inputs, out| block(fma, inputs, out),
    )
}

/// As [`blocked_sum_write`], telling `block` the index of its block (for
/// a pass that keeps something per block).
#[inline(always)]
pub(crate) fn blocked_sum_write_at<A: Float, const K: usize, const N: usize>(
    inputs: [&[A]; N],
    out: &mut [A],
    block: impl Fn(Fma, usize, [&[A]; N], &mut [A]) -> ([f64; K], bool) + Sync,
) -> ([f64; K], bool) {
    let n = inputs
        .iter()
        .map(|s| s.len())
        .min()
        .unwrap_or(0)
        .min(out.len());
    let out = &mut out[..n];
    let part = |(b, out): (usize, &mut [A])| {
        let range = b * BLOCK..b * BLOCK + out.len();
        dispatch::run_fma(
            #[inline(always)]
            |fma| block(fma, b, inputs.map(|s| &s[range.clone()]), out),
        )
    };
    #[cfg(feature = "rayon")]
    if parallel(n) {
        use rayon::prelude::*;
        let parts: Vec<_> = out.par_chunks_mut(BLOCK).enumerate().map(part).collect();
        return combine(parts);
    }
    combine(out.chunks_mut(BLOCK).enumerate().map(part))
}

/// Sums `LANES` accumulators pairwise into an `f64`.
#[inline]
pub(crate) fn sum_lanes<A: Float>(lanes: &[A; LANES]) -> f64 {
    let mut level = [0.0f64; LANES];
    for (l, &v) in level.iter_mut().zip(lanes) {
        *l = v.as_f64();
    }
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            level[i] = level[2 * i] + level[2 * i + 1];
        }
    }
    level[0]
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
    /// The error of a pass that saw a fault: the first bad element
    /// ([`Domain::diagnose`]), or, when every element is acceptable, the
    /// non-finite result `what` the pass produced.
    pub(crate) fn fault<A: Float, D: Dimension>(
        self,
        input: &ArrayRef<A, D>,
        target: &ArrayRef<A, D>,
        weights: Option<&ArrayRef<A, D>>,
        what: &'static str,
        value: f64,
    ) -> Error {
        self.diagnose(input, target, weights)
            .unwrap_or(Error::NonFiniteResult { what, value })
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

/// What an (input, target) pair may hold, as thresholds of the element
/// type made once per call ([`Domain::thresholds`]), so that every test in
/// a kernel's loop is a compare in the lanes of the arithmetic: a `bool`
/// parameter combined with a lane mask would be packed to bytes on every
/// group of the vectorised loop. `x ∈ [-MAX, MAX]` is finiteness.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Accepts<A> {
    x_lo: A,
    x_hi: A,
    spread: A,
}

impl Domain {
    /// The thresholds of the domain's checks, for the kernels' hot loops.
    pub(crate) fn thresholds<A: Float>(self) -> Accepts<A> {
        let (x_lo, x_hi) = if self.probabilities {
            (A::zero(), A::one())
        } else {
            (-A::max_value(), A::max_value())
        };
        let spread = if self.binary_target {
            A::zero()
        } else {
            A::infinity()
        };
        Accepts { x_lo, x_hi, spread }
    }
}

impl<A: Float> Accepts<A> {
    /// Whether an (input, target) pair is acceptable, branch-free. On the
    /// target, `t = y·(1 - y)` is `≥ 0` exactly
    /// on `[0, 1]` (a negative `y`, one above 1, ±∞ and NaN all give a
    /// negative `t` or NaN) and 0 exactly on `{0, 1}` (in `(0, 1)` one
    /// factor is at least 1/2 and the other positive, and below 2^-25 the
    /// other is `y` itself, `1 - y` rounding to 1: `t` never underflows to
    /// 0). `1 - y` is shared with the losses that compute it.
    #[inline(always)]
    pub(crate) fn check(self, x: A, y: A) -> bool {
        self.input(x) & self.target(y)
    }

    /// Whether an input is acceptable.
    #[inline(always)]
    pub(crate) fn input(self, x: A) -> bool {
        (x >= self.x_lo) & (x <= self.x_hi)
    }

    /// Whether a target is acceptable.
    #[inline(always)]
    pub(crate) fn target(self, y: A) -> bool {
        let t = y * (A::one() - y);
        (t >= A::zero()) & (t <= self.spread)
    }
}

/// A weight is acceptable when finite and non-negative (branch-free).
#[inline(always)]
pub(crate) fn weight_ok<A: Float>(w: A) -> bool {
    (w >= A::zero()) & (w <= A::max_value())
}

/// Whether `v` is finite, as one float compare in the lanes of the
/// arithmetic (the standard `is_finite` tests the bits as integers, which
/// costs several more vector instructions per group in the hot loops).
#[inline(always)]
pub(crate) fn finite<A: Float>(v: A) -> bool {
    v.abs() <= A::max_value()
}

/// The sum of a short run in `f64`: folded into [`LANES`] element-type
/// lanes, which vectorises, then [`sum_lanes`]. (The order [`run_sums`]
/// keeps; only its test calls this.)
#[cfg(test)]
pub(crate) fn lanes_sum<A: Float>(values: &[A]) -> f64 {
    let mut lanes = [A::zero(); LANES];
    let groups = values.chunks_exact(LANES);
    for (l, &v) in lanes.iter_mut().zip(groups.remainder()) {
        *l = v;
    }
    for group in groups {
        for (l, &v) in lanes.iter_mut().zip(group) {
            *l += v;
        }
    }
    sum_lanes(&lanes)
}

/// The `K` sums of `term(a, b)` over two short runs (the longer one cut
/// to the shorter), in `f64`: each quantity [`lanes_sum`]'s sum, bit for
/// bit, from a loop of its own over the runs. Summed in one loop, LLVM's
/// SLP vectoriser packed the `K` quantities of one element into a vector
/// instead of [`LANES`] elements of one quantity: scalar code with spills
/// (it was a third of multi-class Dice's first pass). Written to `K`
/// buffers in one loop and then summed, as before, they cost a store and a
/// load per term more than recomputing `term` (a product or two) in each
/// loop, and that loop had a scalar tail: callgrind at 2^16 `f32`, in
/// instructions per element, Dice on logits `loss_grad` 13.6 → 12.0 and
/// `loss` 10.9 → 9.4, on probabilities 10.7 → 9.0 and 5.3 → 3.6.
#[inline(always)]
pub(crate) fn run_sums<A: Float, const K: usize>(
    a: &[A],
    b: &[A],
    term: impl Fn(A, A) -> [A; K],
) -> [f64; K] {
    const { assert!(K <= 4, "run_sums takes up to four quantities") };
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut out = [0.0; K];
    // One loop per quantity, its index a constant in each.
    let folds = [
        fold::<A, K, 0>,
        fold::<A, K, 1>,
        fold::<A, K, 2>,
        fold::<A, K, 3>,
    ];
    for (o, f) in out.iter_mut().zip(folds) {
        *o = f(a, b, &term);
    }
    out
}

/// [`run_sums`] for a piece of a chunk: each quantity's terms added to its
/// lanes of the chunk's `lanes` (see [`Lanes`]), group by group and then
/// the remainder, in a loop of its own. The staged region loops add their
/// pieces so and fold once per chunk; folded per piece of [`STAGE`], Dice's
/// `loss` in cache took a fifth longer.
#[inline(always)]
pub(crate) fn run_sums_into<A: Float, const K: usize>(
    lanes: &mut Lanes<A, K>,
    a: &[A],
    b: &[A],
    term: impl Fn(A, A) -> [A; K],
) {
    const { assert!(K <= 4, "run_sums_into takes up to four quantities") };
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let adds = [
        add_terms::<A, K, 0>,
        add_terms::<A, K, 1>,
        add_terms::<A, K, 2>,
        add_terms::<A, K, 3>,
    ];
    for (sums, add) in lanes.sums.iter_mut().zip(adds) {
        add(sums, a, b, &term);
    }
}

/// Quantity `Q` of [`run_sums_into`] (0 when `Q ≥ K`) added to `lanes`:
/// the groups, then the remainder.
#[inline(always)]
fn add_terms<A: Float, const K: usize, const Q: usize>(
    lanes: &mut [A; LANES],
    a: &[A],
    b: &[A],
    term: &impl Fn(A, A) -> [A; K],
) {
    let pick = |x, y| term(x, y).get(Q).copied().unwrap_or(A::zero());
    let (ga, gb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ga.remainder(), gb.remainder());
    for (xa, yb) in ga.zip(gb) {
        for i in 0..LANES {
            lanes[i] += pick(xa[i], yb[i]);
        }
    }
    for (l, (&x, &y)) in lanes.iter_mut().zip(ra.iter().zip(rb)) {
        *l += pick(x, y);
    }
}

/// Quantity `Q` of [`run_sums`] (0 when `Q ≥ K`), summed in
/// [`lanes_sum`]'s order: the remainder first, then the groups.
#[inline(always)]
fn fold<A: Float, const K: usize, const Q: usize>(
    a: &[A],
    b: &[A],
    term: &impl Fn(A, A) -> [A; K],
) -> f64 {
    let pick = |x, y| term(x, y).get(Q).copied().unwrap_or(A::zero());
    let mut lanes = [A::zero(); LANES];
    let (ga, gb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    for (l, (&x, &y)) in lanes
        .iter_mut()
        .zip(ga.remainder().iter().zip(gb.remainder()))
    {
        *l = pick(x, y);
    }
    for (xa, yb) in ga.zip(gb) {
        for i in 0..LANES {
            lanes[i] += pick(xa[i], yb[i]);
        }
    }
    sum_lanes(&lanes)
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

/// The accumulators of one chunk of the fused sums: `K` quantities in
/// [`LANES`] element-type lanes, and a fault flag per lane in the element
/// type, 0 or 1 (a compare mask then stays in the lane width of the
/// arithmetic, where a `bool` per lane would be packed to bytes every
/// group; set by a select, one blend, where a count took three vector
/// operations: BCE `loss` in cache 7 % faster, `loss_grad` 3 %). A chunk
/// may be added in pieces (the staged loops do), as long as every piece
/// but its last is made of whole groups.
pub(crate) struct Lanes<A, const K: usize> {
    sums: [[A; LANES]; K],
    bad: [A; LANES],
}

impl<A: Float, const K: usize> Lanes<A, K> {
    #[inline(always)]
    pub(crate) fn new() -> Self {
        Self {
            sums: [[A::zero(); LANES]; K],
            bad: [A::zero(); LANES],
        }
    }

    /// The chunk's totals in `f64` and whether every term was valid.
    #[inline(always)]
    pub(crate) fn fold(&self) -> ([f64; K], bool) {
        (
            std::array::from_fn(|q| sum_lanes(&self.sums[q])),
            self.bad.iter().all(|&b| b == A::zero()),
        )
    }
}

/// The slice-based sums of the fast paths. Each walks its slices in
/// [`CHUNK`]-sized blocks (the last one may be shorter) and each block in
/// groups of [`LANES`] elements taken with `chunks_exact`, so that the inner loop has no bounds checks
/// and its `LANES` independent lanes (the accumulators, the fault flags
/// and, once inlined, the element function) vectorise. The faults are
/// flagged per lane in the element type and checked once per block. The
/// slices should have
/// equal lengths (the callers get them from arrays of one shape); the
/// elements of a longer slice beyond the shortest are ignored.
///
/// `fn name / name_into(..)` defines both forms: `name` sums whole slices,
/// `name_into` adds one piece of a chunk to the chunk's [`Lanes`] (the
/// staged loops' form); `fn name_into(..)` defines the second alone.
macro_rules! fused_sum {
    (
        $(#[$doc:meta])*
        fn $name:ident / $into:ident($($x:ident),+; $($g:ident)?) -> ($($d:ident)?)
    ) => {
        $(#[$doc])*
        #[inline(always)]
        pub(crate) fn $name<A: Float, const K: usize>(
            $($x: &[A],)+
            $($g: &mut [A],)?
            mut term: impl FnMut($(fused_sum!(@ty $x A)),+) -> ([A; K], $(fused_sum!(@ty $d A),)? bool),
        ) -> ([f64; K], bool) {
            let n = usize::MAX $(.min($x.len()))+ $(.min($g.len()))?;
            $(let $x = &$x[..n];)+
            $(let $g = &mut $g[..n];)?
            let mut total = ([0.0f64; K], true);
            let blocks = fused_sum!(@zip chunks, chunks_mut, (CHUNK); $($x),+; $($g)?);
            for fused_sum!(@pat $($x),+; $($g)?) in blocks {
                let mut lanes = Lanes::new();
                $into(&mut lanes, $($x,)+ $($g,)? &mut term);
                add_part(&mut total, lanes.fold());
            }
            total
        }

        fused_sum! {
            /// The piece of a chunk that the slices hold, added to the
            /// chunk's `lanes` (see [`Lanes`]).
            fn $into($($x),+; $($g)?) -> ($($d)?)
        }
    };
    (
        $(#[$doc:meta])*
        fn $into:ident($($x:ident),+; $($g:ident)?) -> ($($d:ident)?)
    ) => {
        $(#[$doc])*
        #[inline(always)]
        #[allow(clippy::too_many_arguments)] // the slices, one per operand
        pub(crate) fn $into<A: Float, const K: usize>(
            lanes: &mut Lanes<A, K>,
            $($x: &[A],)+
            $($g: &mut [A],)?
            mut term: impl FnMut($(fused_sum!(@ty $x A)),+) -> ([A; K], $(fused_sum!(@ty $d A),)? bool),
        ) {
            // Each operand as (whole groups of LANES, the rest).
            let len = usize::MAX $(.min($x.len()))+ $(.min($g.len()))?;
            let whole = len - len % LANES;
            $(let $x = $x[..len].split_at(whole);)+
            $(let $g = $g[..len].split_at_mut(whole);)?
            // The accumulators are copied in and out, not updated through
            // `lanes`: through the reference, LLVM kept them in memory on
            // AVX2 (16 lanes are two registers per quantity there), with a
            // load and store per group and the fault flags set by masked
            // stores. BCE `loss_grad`, Zen 3, best of 4–6 processes: in
            // cache 2.05 → 1.57 ns per element, at 2^24 2.24 → 1.75.
            let (mut sums, mut bad) = (lanes.sums, lanes.bad);
            let groups = fused_sum!(@zip chunks_exact, chunks_exact_mut, (LANES); $($x.0),+; $($g.0)?);
            for fused_sum!(@pat $($x),+; $($g)?) in groups {
                // Outputs go to a local array, stored after the lanes are
                // computed: no store may alias a later lane's loads, so
                // the lanes vectorise as one.
                $(let mut outputs = [A::zero(); LANES]; let _ = stringify!($d);)?
                for k in 0..LANES {
                    let (values, $($d,)? fine) = term($($x[k]),+);
                    bad[k] = select(fine, bad[k], A::one());
                    $(outputs[k] = $d;)?
                    for (lane, v) in sums.iter_mut().zip(values) {
                        lane[k] += v;
                    }
                }
                $($g.copy_from_slice(&outputs);)?
            }
            // The last elements of a chunk (fewer than LANES): one per lane.
            let rest = fused_sum!(@zip iter, iter_mut, (); $($x.1),+; $($g.1)?);
            for (k, fused_sum!(@pat $($x),+; $($g)?)) in rest.enumerate() {
                let (values, $($d,)? fine) = term($(*$x),+);
                $(*$g = $d;)?
                for (lane, v) in sums.iter_mut().zip(values) {
                    lane[k] += v;
                }
                bad[k] = select(fine, bad[k], A::one());
            }
            lanes.sums = sums;
            lanes.bad = bad;
        }
    };
    (@ty $x:ident $A:ident) => { $A };
    (@zip $m:ident, $mm:ident, $args:tt; $x0:expr $(, $x:expr)*; ) => {
        $x0.$m $args $(.zip($x.$m $args))*
    };
    (@zip $m:ident, $mm:ident, $args:tt; $x0:expr $(, $x:expr)*; $g:expr) => {
        $x0.$m $args $(.zip($x.$m $args))*.zip($g.$mm $args)
    };
    (@pat $x0:ident $(, $x:ident)*; ) => {
        fused_sum!(@nest ($x0) $($x)*)
    };
    (@pat $x0:ident $(, $x:ident)*; $g:ident) => {
        (fused_sum!(@nest ($x0) $($x)*), $g)
    };
    (@nest ($($acc:tt)*)) => { $($acc)* };
    (@nest ($($acc:tt)*) $x:ident $($rest:ident)*) => {
        fused_sum!(@nest (($($acc)*, $x)) $($rest)*)
    };
}

fused_sum! {
    /// Sums `K` quantities `term(x, y)` over two slices; returns the `f64`
    /// totals and whether every term was valid.
    fn zip_sum / zip_sum_into(x, y;) -> ()
}

fused_sum! {
    /// Sums `K` quantities `term(x, y, w)` over three slices.
    fn zip3_sum / zip3_sum_into(x, y, w;) -> ()
}

fused_sum! {
    /// Adds `K` quantities `term(x, y, w, v)` over a piece of a chunk of
    /// four slices to the chunk's `lanes` (the staged loops' form).
    fn zip4_sum_into(x, y, w, v;) -> ()
}

fused_sum! {
    /// Sums `K` quantities of `term(x, y) = (values, d, valid)` over two
    /// slices and writes each `d` into `g`.
    fn zip_sum_write / zip_sum_write_into(x, y; g) -> (d)
}

fused_sum! {
    /// Sums `K` quantities of `term(x, y, w) = (values, d, valid)` over
    /// three slices and writes each `d` into `g`.
    fn zip3_sum_write / zip3_sum_write_into(x, y, w; g) -> (d)
}

fused_sum! {
    /// Adds `K` quantities of `term(x, y, w, v) = (values, d, valid)` over
    /// a piece of a chunk of four slices to the chunk's `lanes`, and writes
    /// each `d` into `g`.
    fn zip4_sum_write_into(x, y, w, v; g) -> (d)
}

/// `stage(x)` of each element of `x`, into the front of `buffer`.
#[inline(always)]
fn stage_into<'b, A: Float>(buffer: &'b mut [A], x: &[A], stage: &impl Fn(A) -> A) -> &'b [A] {
    let staged = &mut buffer[..x.len()];
    for (s, &x) in staged.iter_mut().zip(x) {
        *s = stage(x);
    }
    staged
}

/// Sums `K` quantities over a block in pieces of [`STAGE`] elements, where
/// each piece `range` of the operands comes with the values `stage(x)` of
/// its part of `x`, computed first in a loop of their own:
/// `body(range, staged, lanes)` adds each piece to the accumulators of its
/// chunk, which are folded per [`CHUNK`] as the fused sums fold theirs, so
/// that the results are theirs bit for bit. Each piece starts by asking
/// for the pieces of `x` and of the operands `also` some way ahead
/// ([`prefetch_ahead`]): `also` should hold every other slice that `body`
/// reads at the piece's positions.
#[inline(always)]
pub(crate) fn staged_lanes<A: Float, const K: usize, const M: usize>(
    x: &[A],
    also: [&[A]; M],
    stage: impl Fn(A) -> A,
    mut body: impl FnMut(std::ops::Range<usize>, &[A], &mut Lanes<A, K>),
) -> ([f64; K], bool) {
    let mut buffer = [A::zero(); STAGE];
    let mut total = [0.0f64; K];
    let mut ok = true;
    let mut chunk = 0;
    while chunk < x.len() {
        let chunk_end = (chunk + CHUNK).min(x.len());
        let mut lanes = Lanes::new();
        let mut start = chunk;
        while start < chunk_end {
            let end = (start + STAGE).min(chunk_end);
            prefetch_ahead(x, start);
            let staged = stage_into(&mut buffer, &x[start..end], &stage);
            // `also` after the stage's loop: before it, the pixel-weighted
            // BCE's `loss_grad` at 2^24 `f32` took 4–6 % longer.
            for s in also {
                prefetch_ahead(s, start);
            }
            body(start..end, staged, &mut lanes);
            start = end;
        }
        // Not `add_part`: with the totals in its tuple here, BCE's loss
        // alone took 7 % longer at 2^24 (AVX-512, measured; the same bits).
        let (sums, good) = lanes.fold();
        for (t, s) in total.iter_mut().zip(sums) {
            *t += s;
        }
        ok &= good;
        chunk = chunk_end;
    }
    (total, ok)
}

/// As [`staged_lanes`] with a second stage `t = then(s)`.
#[inline(always)]
pub(crate) fn staged2_lanes<A: Float, const K: usize, const M: usize>(
    x: &[A],
    also: [&[A]; M],
    stage: impl Fn(A) -> A,
    then: impl Fn(A) -> A,
    mut body: impl FnMut(std::ops::Range<usize>, &[A], &[A], &mut Lanes<A, K>),
) -> ([f64; K], bool) {
    let mut second = [A::zero(); STAGE];
    staged_lanes(
        x,
        also,
        stage,
        #[inline(always)]
        |range, s, lanes| {
            let t = stage_into(&mut second, s, &then);
            body(range, s, t, lanes)
        },
    )
}
