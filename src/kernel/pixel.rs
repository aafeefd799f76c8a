//! The pixel-wise kernel: `Σ_x w(x)·ℓ(input(x), target(x))` and its
//! gradient `w(x)·∂ℓ/∂input(x)·scale`, in one pass that also validates.
//!
//! The element closures handed to the fused loops are `move`: they hold
//! the thresholds, the scale and `&E` by value, in registers. Captured by
//! reference, they were loaded again for every vector, since LLVM could
//! not tell that the gradient's stores do not alias them (BCE `loss_grad`:
//! 15.6 → 14.4 instructions per element).
//!
//! Operands in any layout run through the same loops: those without one
//! common memory order are copied to buffers in logical order a block at a
//! time ([`gather`](super::gather)), so every path vectorises and fuses
//! its multiply-adds as the slices do, with their results bit for bit.

use ndarray::{ArrayRef, Dimension};

use super::gather::{array_sum, array_sum_write};
use super::math::Fma;
use super::{
    Accepts, Domain, finite, staged_lanes, staged2_lanes, weight_ok, zip_sum, zip_sum_write,
    zip3_sum, zip3_sum_into, zip3_sum_write, zip4_sum_into, zip4_sum_write_into,
};
use crate::loss::{non_empty, same_shape};
use crate::{Error, Float, Result};

/// A loss that is a sum of a per-element function of (input, target).
pub(crate) trait Elementwise<A: Float>: Sync {
    /// What the input and target may hold.
    fn domain(&self) -> Domain;
    /// `ℓ(x, y)`.
    fn value(&self, x: A, y: A) -> A;
    /// `(ℓ(x, y), ∂ℓ/∂x)`.
    fn value_grad(&self, x: A, y: A) -> (A, A);

    /// How many specialised forms the element function has (for BCE, one
    /// per input kind). The kernel compiles one loop per form and picks it
    /// once per call, so that no per-element branch on a parameter keeps
    /// the loop from vectorising.
    const FORMS: usize = 1;

    /// Which form (`< FORMS`) this element function takes.
    fn form(&self) -> usize {
        0
    }

    /// `ℓ(x, y)` in form `F` (only called with `F == self.form()`).
    #[inline(always)]
    fn value_in<const F: usize>(&self, x: A, y: A) -> A {
        self.value(x, y)
    }

    /// `(ℓ(x, y), ∂ℓ/∂x)` in form `F` (only called with `F == self.form()`).
    #[inline(always)]
    fn value_grad_in<const F: usize>(&self, x: A, y: A) -> (A, A) {
        self.value_grad(x, y)
    }

    /// Whether form `F` splits off two first stages that depend on the
    /// input alone: `s = stage_in(x)` (the `exp` of the logistic losses)
    /// and `t = stage2_in(s)` (their logarithm). The kernel then computes
    /// each stage for a piece of [`STAGE`](super::STAGE) elements in a loop
    /// of its own and the rest in a last one, which shortens the dependency
    /// chain per element that the CPU has to overlap (in-cache BCE on
    /// logits: about a quarter faster with the first stage, a fifth more
    /// with the second). The loss without the gradient stages the first
    /// only: its last loop has no division to overlap, and five operands
    /// kept it from vectorising. So does the weighted `loss_grad`: with
    /// three operands and the gradient in memory, a loop with no memory
    /// access between the two others left the loads idle too long (the
    /// pixel-weighted BCE at 2^24 `f32`, AVX-512: 1.52–1.56 ns per element
    /// with both stages, 1.44–1.46 with the first alone; 4 % slower in
    /// cache).
    #[inline(always)]
    fn staged<const F: usize>(&self) -> bool {
        false
    }

    /// Whether in form `F` every acceptable (input, target) pair has a
    /// finite `∂ℓ/∂x` that stays finite when scaled by at most 1 in
    /// magnitude (the reductions' `1/N` or 1): the unweighted kernel then
    /// does not check the gradient it writes.
    #[inline(always)]
    fn bounded_grad<const F: usize>(&self) -> bool {
        false
    }

    /// Whether form `F` lets a pass screen the input, the weights and the
    /// gradient by its sum: every finite input is acceptable, one that is
    /// not gives a `ℓ` that is not finite whatever the target, and
    /// `|∂ℓ/∂x| ≤ ℓ`. A weight that is not finite then makes `w·ℓ` so too
    /// (`0·∞` is NaN), and the gradient `scale·w·∂ℓ/∂x` (`|scale| ≤ 1`) is
    /// finite wherever `w·ℓ` is. The kernel tests per element only the
    /// target and the sign of the weight, and a sum that is not finite
    /// sends the call to the full checks (see [`Checks`]).
    #[inline(always)]
    fn screens<const F: usize>(&self) -> bool {
        false
    }

    /// The first stage of form `F` (only called when `staged::<F>()`),
    /// its multiply-adds fused as `fma` says.
    #[inline(always)]
    fn stage_in<const F: usize>(&self, x: A, fma: Fma) -> A {
        let _ = fma;
        x
    }

    /// The second stage of form `F`, from `s = stage_in(x)` (only called
    /// when `staged::<F>()`).
    #[inline(always)]
    fn stage2_in<const F: usize>(&self, s: A, fma: Fma) -> A {
        let _ = fma;
        s
    }

    /// `(ℓ(x, y), ∂ℓ/∂x)` in form `F` from `s = stage_in(x)` and
    /// `t = stage2_in(s)` (only called when `staged::<F>()`), fusing as
    /// the stages did. The unstaged forms never fuse: on the wide paths
    /// they differ from this in the last bits.
    #[inline(always)]
    fn value_grad_staged_in<const F: usize>(&self, x: A, y: A, s: A, t: A, fma: Fma) -> (A, A) {
        let _ = (s, t, fma);
        self.value_grad_in::<F>(x, y)
    }
}

/// Runs `$body` with the const `$f` bound to `$e.form()` (at most two forms).
macro_rules! with_form {
    ($e:ident, $f:ident => $body:expr) => {
        if E::FORMS > 1 && $e.form() == 1 {
            const $f: usize = 1;
            $body
        } else {
            const $f: usize = 0;
            $body
        }
    };
}

/// Runs a pass (`$pass`, an expression of `$checks`, which it binds to
/// the screened [`Checks`] of `$domain`) where `$e` screens and the targets
/// may be soft, and again with every check (`$checks` the full ones) where
/// it does not, or where the screened pass saw a fault or a sum that is
/// not finite: the sum, or `None` for a fault.
macro_rules! screened_or_checked {
    ($e:ident, $domain:ident, $checks:ident => $pass:expr) => {{
        let screened = if !$domain.binary_target && with_form!($e, F => $e.screens::<F>()) {
            let $checks = Checks::<A, true>::new($domain);
            let ([total], ok) = $pass;
            (ok && total.is_finite()).then_some(total)
        } else {
            None
        };
        match screened {
            Some(total) => Some(total),
            None => {
                let $checks = Checks::<A, false>::new($domain);
                let ([total], ok) = $pass;
                ok.then_some(total)
            }
        }
    }};
}

/// Shape and emptiness checks shared by both entry points.
fn check<A: Float, D: Dimension>(
    input: &ArrayRef<A, D>,
    target: &ArrayRef<A, D>,
    weights: Option<&ArrayRef<A, D>>,
) -> Result<()> {
    same_shape("target", input, target)?;
    if let Some(w) = weights {
        same_shape("weights", input, w)?;
    }
    non_empty(input)
}

/// The per-element tests of a pass. `SCREEN` (for an element function
/// that [`screens`](Elementwise::screens), on soft targets) leaves out
/// those that the sum makes: the input's finiteness, the weight's and the
/// gradient's. A screened pass that saw a fault, or whose sum is not
/// finite, is run again with every test, which then names the element at
/// fault, or finds none (a sum that overflowed) and gives the same sum
/// ([`screened_or_checked!`]).
///
/// The tests were a fifth of the pixel-weighted BCE's loop (AVX2 path, in
/// cache, 1.44–1.51 ns per element with them, 1.11–1.14 with none);
/// screened, 1.45 → 1.30 (BCE `loss_grad` 1.20 → 1.08; at 2^24 `f32` the
/// pixel-weighted 1.85–2.11 → 1.62–1.69), 3–5 % on the AVX-512 path.
#[derive(Clone, Copy)]
struct Checks<A, const SCREEN: bool> {
    accepts: Accepts<A>,
}

impl<A: Float, const SCREEN: bool> Checks<A, SCREEN> {
    fn new(domain: Domain) -> Self {
        Self {
            accepts: domain.thresholds(),
        }
    }

    /// Whether the pair passes: screened, whether the target lies in
    /// `[0, 1]` (screened passes are for soft targets only).
    #[inline(always)]
    fn pair(self, x: A, y: A) -> bool {
        if SCREEN {
            y * (A::one() - y) >= A::zero()
        } else {
            self.accepts.check(x, y)
        }
    }

    /// Whether the pair and a weight pass: screened, whether the weight is
    /// not negative.
    #[inline(always)]
    fn weighted(self, x: A, y: A, w: A) -> bool {
        let weight = if SCREEN { w >= A::zero() } else { weight_ok(w) };
        self.pair(x, y) & weight
    }

    /// Whether a gradient element passes: screened, it is finite where the
    /// sum is (see [`Elementwise::screens`]).
    #[inline(always)]
    fn grad(self, d: A) -> bool {
        SCREEN || finite(d)
    }
}

/// The error for a pass that saw a fault: the first bad element, or a
/// non-finite gradient when every element was acceptable.
fn fault<A: Float, D: Dimension>(
    domain: Domain,
    input: &ArrayRef<A, D>,
    target: &ArrayRef<A, D>,
    weights: Option<&ArrayRef<A, D>>,
) -> Error {
    domain.fault(
        input,
        target,
        weights,
        "an element of the gradient",
        f64::INFINITY,
    )
}

/// `Σ w·ℓ` in `f64` (weights default to 1).
pub(crate) fn loss<A: Float, D: Dimension, E: Elementwise<A>>(
    e: &E,
    input: &ArrayRef<A, D>,
    target: &ArrayRef<A, D>,
    weights: Option<&ArrayRef<A, D>>,
) -> Result<f64> {
    check(input, target, weights)?;
    let domain = e.domain();
    screened_or_checked!(e, domain, checks => loss_pass(e, input, target, weights, checks))
        .ok_or_else(|| fault(domain, input, target, weights))
}

/// One pass of [`loss`] with the given checks: `Σ w·ℓ` and whether every
/// element passed.
fn loss_pass<A: Float, D: Dimension, E: Elementwise<A>, const SCREEN: bool>(
    e: &E,
    input: &ArrayRef<A, D>,
    target: &ArrayRef<A, D>,
    weights: Option<&ArrayRef<A, D>>,
    checks: Checks<A, SCREEN>,
) -> ([f64; 1], bool) {
    match weights {
        None => with_form!(e, F => if e.staged::<F>() {
            array_sum(
                [input, target],
                #[inline(always)]
                |fma, [x, y]| staged_lanes(
                    x,
                    [y],
                    #[inline(always)]
                    |x| e.stage_in::<F>(x, fma),
                    #[inline(always)]
                    |r, s, lanes| zip3_sum_into(
                        lanes,
                        &x[r.clone()],
                        &y[r],
                        s,
                        #[inline(always)]
                        move |x, y, s| (
                            [e.value_grad_staged_in::<F>(x, y, s, e.stage2_in::<F>(s, fma), fma).0],
                            checks.pair(x, y)
                        )
                    )
                )
            )
        } else {
            array_sum(
                [input, target],
                #[inline(always)]
                |_, [x, y]| zip_sum(
                    x,
                    y,
                    #[inline(always)]
                    move |x, y| ([e.value_in::<F>(x, y)], checks.pair(x, y))
                )
            )
        }),
        Some(weights) => with_form!(e, F => if e.staged::<F>() {
            array_sum(
                [input, target, weights],
                #[inline(always)]
                |fma, [x, y, w]| staged_lanes(
                    x,
                    [y, w],
                    #[inline(always)]
                    |x| e.stage_in::<F>(x, fma),
                    #[inline(always)]
                    |r, s, lanes| zip4_sum_into(
                        lanes,
                        &x[r.clone()],
                        &y[r.clone()],
                        &w[r],
                        s,
                        #[inline(always)]
                        move |x, y, w, s| (
                            [w * e.value_grad_staged_in::<F>(x, y, s, e.stage2_in::<F>(s, fma), fma).0],
                            checks.weighted(x, y, w)
                        )
                    )
                )
            )
        } else {
            array_sum(
                [input, target, weights],
                #[inline(always)]
                |_, [x, y, w]| zip3_sum(
                    x,
                    y,
                    w,
                    #[inline(always)]
                    move |x, y, w| ([w * e.value_in::<F>(x, y)], checks.weighted(x, y, w))
                )
            )
        }),
    }
}

/// `Σ w·ℓ` in `f64`, writing `grad = scale·w·∂ℓ/∂x`; `|scale| ≤ 1` (the
/// reductions' `1/N` or 1).
pub(crate) fn loss_grad<A: Float, D: Dimension, E: Elementwise<A>>(
    e: &E,
    input: &ArrayRef<A, D>,
    target: &ArrayRef<A, D>,
    weights: Option<&ArrayRef<A, D>>,
    grad: &mut ArrayRef<A, D>,
    scale: A,
) -> Result<f64> {
    check(input, target, weights)?;
    same_shape("grad", input, grad)?;
    let domain = e.domain();
    screened_or_checked!(e, domain, checks => {
        loss_grad_pass(e, input, target, weights, grad, scale, checks)
    })
    .ok_or_else(|| fault(domain, input, target, weights))
}

/// One pass of [`loss_grad`] with the given checks: `Σ w·ℓ` and whether
/// every element passed, `grad` written.
fn loss_grad_pass<A: Float, D: Dimension, E: Elementwise<A>, const SCREEN: bool>(
    e: &E,
    input: &ArrayRef<A, D>,
    target: &ArrayRef<A, D>,
    weights: Option<&ArrayRef<A, D>>,
    grad: &mut ArrayRef<A, D>,
    scale: A,
    checks: Checks<A, SCREEN>,
) -> ([f64; 1], bool) {
    match weights {
        None => with_form!(e, F => if e.staged::<F>() {
            array_sum_write(
                [input, target],
                grad,
                #[inline(always)]
                |fma, [x, y], g| staged2_lanes(
                    x,
                    [y],
                    #[inline(always)]
                    |x| e.stage_in::<F>(x, fma),
                    #[inline(always)]
                    |s| e.stage2_in::<F>(s, fma),
                    #[inline(always)]
                    |r, s, t, lanes| zip4_sum_write_into(
                        lanes,
                        &x[r.clone()],
                        &y[r.clone()],
                        s,
                        t,
                        &mut g[r],
                        #[inline(always)]
                        move |x, y, s, t| {
                            let (v, d) = e.value_grad_staged_in::<F>(x, y, s, t, fma);
                            let d = scale * d;
                            ([v], d, checks.pair(x, y) & (e.bounded_grad::<F>() || checks.grad(d)))
                        }
                    )
                )
            )
        } else {
            array_sum_write(
                [input, target],
                grad,
                #[inline(always)]
                |_, [x, y], g| zip_sum_write(
                    x,
                    y,
                    g,
                    #[inline(always)]
                    move |x, y| {
                        let (v, d) = e.value_grad_in::<F>(x, y);
                        let d = scale * d;
                        ([v], d, checks.pair(x, y) & (e.bounded_grad::<F>() || checks.grad(d)))
                    }
                )
            )
        }),
        Some(weights) => with_form!(e, F => if e.staged::<F>() {
            array_sum_write(
                [input, target, weights],
                grad,
                #[inline(always)]
                |fma, [x, y, w], g| staged_lanes(
                    x,
                    [y, w],
                    #[inline(always)]
                    |x| e.stage_in::<F>(x, fma),
                    #[inline(always)]
                    |r, s, lanes| zip4_sum_write_into(
                        lanes,
                        &x[r.clone()],
                        &y[r.clone()],
                        &w[r.clone()],
                        s,
                        &mut g[r],
                        #[inline(always)]
                        move |x, y, w, s| {
                            let t = e.stage2_in::<F>(s, fma);
                            let (v, d) = e.value_grad_staged_in::<F>(x, y, s, t, fma);
                            let d = scale * w * d;
                            ([w * v], d, checks.weighted(x, y, w) & checks.grad(d))
                        }
                    )
                )
            )
        } else {
            array_sum_write(
                [input, target, weights],
                grad,
                #[inline(always)]
                |_, [x, y, w], g| zip3_sum_write(
                    x,
                    y,
                    w,
                    g,
                    #[inline(always)]
                    move |x, y, w| {
                        let (v, d) = e.value_grad_in::<F>(x, y);
                        let d = scale * w * d;
                        ([w * v], d, checks.weighted(x, y, w) & checks.grad(d))
                    }
                )
            )
        }),
    }
}
