//! Binary cross-entropy and its weighted form.

use ndarray::{ArrayRef, Dimension};

use crate::error::check_param;
use crate::kernel::Domain;
use crate::kernel::math::{Fma, Logistic};
use crate::kernel::pixel::{self, Elementwise};
use crate::loss::{binary_input, finite_result, param_as};
use crate::{Float, Input, Loss, Reduction, Result};

/// Binary cross-entropy, with an optional weight β on the positive term.
///
/// ```text
/// ℓ(x) = -(β·y·ln p + (1 - y)·ln(1 - p))
/// L    = Σ ℓ / N   (Mean)   or   Σ ℓ   (Sum)
/// ```
///
/// * With [`Input::Logits`] (the default), `p = σ(x)` and the loss is
///   evaluated as `ℓ = β·y·softplus(-x) + (1 - y)·softplus(x)`, a sum of two
///   non-negative terms that is exact for any finite logit, with gradient
///   `∂ℓ/∂x = (1 - y)·σ(x) - β·y·σ(-x)`. This is PyTorch's
///   `BCEWithLogitsLoss(pos_weight=β)`.
/// * With [`Input::Probabilities`], `p` is clipped to `[ε, 1 - ε]` before the
///   logs (as Keras does), and the gradient
///   `∂ℓ/∂p = -β·y/p + (1 - y)/(1 - p)` is 0 where the clip is active.
///
/// β = 1 (the default) is plain BCE; β > 1 favours recall on sparse
/// foreground. Targets may be soft (any value in `[0, 1]`).
///
/// ```
/// use ndarray::array;
/// use segloss::{BinaryCrossEntropy, Loss, Reduction};
///
/// let logits = array![[1.5_f64, -0.5], [0.0, 3.0]];
/// let target = array![[1.0, 0.0], [1.0, 1.0]];
/// let bce = BinaryCrossEntropy::new().pos_weight(2.0).reduction(Reduction::Sum);
/// let (loss, grad) = bce.loss_and_grad(&logits, &target)?;
/// // ℓ(0, y = 1) = β·ln 2
/// assert!(loss > 2.0 * 2f64.ln());
/// assert!((grad[[1, 0]] - (-2.0 * 0.5)).abs() < 1e-15);
/// # Ok::<(), segloss::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct BinaryCrossEntropy {
    input: Input,
    pos_weight: f64,
    reduction: Reduction,
    epsilon: f64,
}

impl Default for BinaryCrossEntropy {
    fn default() -> Self {
        Self {
            input: Input::Logits,
            pos_weight: 1.0,
            reduction: Reduction::Mean,
            epsilon: 1e-7,
        }
    }
}

impl BinaryCrossEntropy {
    /// Plain BCE on logits: β = 1, [`Reduction::Mean`], ε = 1e-7.
    pub fn new() -> Self {
        Self::default()
    }

    /// What the input holds. Default: [`Input::Logits`].
    #[must_use]
    pub fn input(mut self, input: Input) -> Self {
        self.input = input;
        self
    }

    /// The weight β of the positive term, `> 0`. Default: 1.
    #[must_use]
    pub fn pos_weight(mut self, pos_weight: f64) -> Self {
        self.pos_weight = pos_weight;
        self
    }

    /// How the per-element losses are reduced. Default: [`Reduction::Mean`].
    #[must_use]
    pub fn reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }

    /// The clip ε for probabilities, in `(0, 0.5)`. Default: 1e-7 (Keras).
    /// Unused with logits.
    #[must_use]
    pub fn epsilon(mut self, epsilon: f64) -> Self {
        self.epsilon = epsilon;
        self
    }

    /// The per-element function, after checking the parameters.
    pub(crate) fn element<A: Float>(&self) -> Result<BceElement<A>> {
        binary_input(self.input, "BinaryCrossEntropy")?;
        check_param(
            "pos_weight",
            self.pos_weight,
            self.pos_weight > 0.0,
            "must be > 0",
        )?;
        check_param(
            "epsilon",
            self.epsilon,
            self.epsilon > 0.0 && self.epsilon < 0.5,
            "must be in (0, 0.5)",
        )?;
        let beta = param_as("pos_weight", self.pos_weight)?;
        let eps = A::from_f64(self.epsilon);
        Ok(BceElement {
            input: self.input,
            beta,
            eps,
            one_minus_eps: A::one() - eps,
            binary_target: false,
        })
    }
}

/// BCE's element function with its parameters in the element type.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BceElement<A> {
    input: Input,
    beta: A,
    eps: A,
    one_minus_eps: A,
    pub(crate) binary_target: bool,
}

impl<A: Float> Elementwise<A> for BceElement<A> {
    fn domain(&self) -> Domain {
        Domain {
            probabilities: self.input == Input::Probabilities,
            binary_target: self.binary_target,
        }
    }

    #[inline(always)]
    fn value(&self, x: A, y: A) -> A {
        self.value_grad(x, y).0
    }

    #[inline(always)]
    fn value_grad(&self, x: A, y: A) -> (A, A) {
        if self.form() == PROBABILITIES {
            self.value_grad_in::<PROBABILITIES>(x, y)
        } else {
            self.value_grad_in::<LOGITS>(x, y)
        }
    }

    const FORMS: usize = 2;

    fn form(&self) -> usize {
        if self.input == Input::Probabilities {
            PROBABILITIES
        } else {
            LOGITS
        }
    }

    #[inline(always)]
    fn value_in<const F: usize>(&self, x: A, y: A) -> A {
        self.value_grad_in::<F>(x, y).0
    }

    /// On logits, the `exp` and the logarithm are stages of their own (see
    /// [`Elementwise::staged`]).
    #[inline(always)]
    fn staged<const F: usize>(&self) -> bool {
        F == LOGITS
    }

    /// On logits, `|∂ℓ/∂x| = |(1 - y)·σ(x) - β·y·σ(-x)| ≤ max(1, β)`, a
    /// difference of two terms in `[0, 1]` and `[0, β]`, with β finite.
    #[inline(always)]
    fn bounded_grad<const F: usize>(&self) -> bool {
        F == LOGITS
    }

    /// On logits, every finite input is acceptable, and one that is not
    /// gives a `ℓ` that is not: NaN gives NaN, and `±∞` gives `∞` or
    /// `0·∞`, NaN, whatever the target, since `softplus(∓x)`, the term of
    /// `1 - y` or of `β·y` (β ≥ 0), is `∞` and the other term not `-∞`.
    /// And `|∂ℓ/∂x| ≤ ℓ` term by term: `σ(x) ≤ softplus(x)` and
    /// `σ(-x) ≤ softplus(-x)`, as `u/(1 + u) ≤ ln(1 + u)` for `u ≥ 0`.
    #[inline(always)]
    fn screens<const F: usize>(&self) -> bool {
        F == LOGITS
    }

    #[inline(always)]
    fn stage_in<const F: usize>(&self, x: A, fma: Fma) -> A {
        Logistic::stage(x, fma)
    }

    #[inline(always)]
    fn stage2_in<const F: usize>(&self, s: A, fma: Fma) -> A {
        Logistic::softplus_stage(s, fma)
    }

    #[inline(always)]
    fn value_grad_staged_in<const F: usize>(&self, x: A, y: A, s: A, t: A, fma: Fma) -> (A, A) {
        let l = Logistic::from_stages(x, s, t);
        self.logits_value_grad(l, y, fma)
    }

    /// Branch-free in each form (the vectorisable `fast_*` functions and
    /// selects), so that the kernel's loops vectorise.
    #[inline(always)]
    fn value_grad_in<const F: usize>(&self, x: A, y: A) -> (A, A) {
        let one = A::one();
        let pos = self.beta * y;
        let neg = one - y;
        if F == PROBABILITIES {
            let low = x < self.eps;
            let high = x > self.one_minus_eps;
            let p = if low {
                self.eps
            } else if high {
                self.one_minus_eps
            } else {
                x
            };
            let value = -(pos * p.fast_ln() + neg * (-p).fast_ln_1p());
            let grad = neg / (one - p) - pos / p;
            (value, if low | high { A::zero() } else { grad })
        } else {
            self.logits_value_grad(Logistic::of(x), y, Fma::Off)
        }
    }
}

impl<A: Float> BceElement<A> {
    /// The logits form's `(ℓ, ∂ℓ/∂x)` from the logistic quantities of `x`.
    #[inline(always)]
    fn logits_value_grad(&self, l: Logistic<A>, y: A, fma: Fma) -> (A, A) {
        let pos = self.beta * y;
        let neg = A::one() - y;
        let value = fma.mul_add(pos, l.softplus_neg, neg * l.softplus_pos);
        let grad = fma.mul_add(neg, l.sigma, -(pos * l.sigma_c));
        (value, grad)
    }
}

/// The forms of [`BceElement`]: on logits and on probabilities.
const LOGITS: usize = 0;
const PROBABILITIES: usize = 1;

/// `Σ w·ℓ` reduced and converted, for BCE and the pixel-weighted losses.
pub(crate) fn reduce<A: Float>(reduction: Reduction, total: f64, count: usize) -> Result<A> {
    let value = match reduction {
        Reduction::Sum => total,
        _ => total / count as f64,
    };
    finite_result("the loss", value)
}

/// The gradient scale of a reduction: `1/N` for the mean, 1 for the sum.
pub(crate) fn grad_scale<A: Float>(reduction: Reduction, count: usize) -> A {
    match reduction {
        Reduction::Sum => A::one(),
        _ => A::from_f64(1.0 / count as f64),
    }
}

impl<A: Float> Loss<A> for BinaryCrossEntropy {
    fn loss<D: Dimension>(&self, input: &ArrayRef<A, D>, target: &ArrayRef<A, D>) -> Result<A> {
        let e = self.element::<A>()?;
        let total = pixel::loss(&e, input, target, None)?;
        reduce(self.reduction, total, input.len())
    }

    fn loss_grad<D: Dimension>(
        &self,
        input: &ArrayRef<A, D>,
        target: &ArrayRef<A, D>,
        grad: &mut ArrayRef<A, D>,
    ) -> Result<A> {
        let e = self.element::<A>()?;
        let scale = grad_scale(self.reduction, input.len());
        let total = pixel::loss_grad(&e, input, target, None, grad, scale)?;
        reduce(self.reduction, total, input.len())
    }
}
