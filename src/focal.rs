//! The focal loss (Lin et al. 2017), element-wise (sigmoid) and over
//! classes (softmax).

use ndarray::{ArrayRef, Dimension};

use crate::bce::{grad_scale, reduce};
use crate::error::check_param;
use crate::kernel::math::Logistic;
use crate::kernel::pixel::{self, Elementwise};
use crate::kernel::softmax::{self, Classes, Faults, L, LaneSum, Softmax, with_classes};
use crate::kernel::{Domain, finite};
use crate::loss::{non_empty, param_as, same_shape};
use crate::{Float, Input, Loss, Reduction, Result};

/// The focal loss: cross-entropy scaled down where the prediction is
/// already good.
///
/// Element-wise ([`Input::Logits`], the default, or [`Input::Probabilities`]):
///
/// ```text
/// ℓ = -α_t·(1 - p_t)^γ·ln p_t
/// p_t = p where y = 1,  1 - p where y = 0
/// α_t = α where y = 1,  1 - α where y = 0     (1 without alpha)
/// ```
///
/// Over classes ([`Input::SoftmaxLogits`], `p = softmax(z)` along axis 1 of
/// `(N, C, ...)`), per element `(x, c)`:
///
/// ```text
/// ℓ = -a_c·(1 - p_c)^γ·y_c·ln p_c,   a_0 = 1 - α,  a_c = α for c ≥ 1   (1 without alpha)
/// ```
///
/// `L = Σ ℓ / (number of elements)` for [`Reduction::Mean`] (the default)
/// or `Σ ℓ` for [`Reduction::Sum`]. These are MONAI's `FocalLoss` (with
/// `use_softmax` for the second form); γ = 0 without alpha is plain BCE /
/// cross-entropy.
///
/// * With logits, soft targets follow MONAI: `1 - p_t = σ(-(2y - 1)·x)`,
///   `α_t = y·α + (1 - y)·(1 - α)` and `-ln p_t` is the BCE, evaluated in
///   the stable form, so
///   `∂ℓ/∂x = α_t·(1 - p_t)^γ·(σ(x) - y - γ·(2y - 1)·p_t·BCE)`.
/// * With probabilities, `p` is clipped to `[ε, 1 - ε]` (as in
///   [`BinaryCrossEntropy`](crate::BinaryCrossEntropy)), soft targets use
///   `1 - p_t = y·(1 - p) + (1 - y)·p`, and the gradient is 0 where the
///   clip is active.
/// * With softmax logits, `g_c = p_c·∂ℓ/∂p_c = -a_c·y_c·(1 - p_c)^γ·(1 + γ·p_c·(-ln p_c)/(1 - p_c))`
///   and `∂L/∂z_k = g_k - p_k·Σ_c g_c`, with `ln p_c` from the max-shifted
///   log-sum-exp.
///
/// ```
/// use ndarray::array;
/// use segloss::{FocalLoss, Loss, Reduction};
///
/// let logits = array![[3.0_f64, -2.0], [0.5, -0.5]];
/// let target = array![[1.0, 0.0], [0.0, 1.0]];
/// let focal = FocalLoss::new().gamma(2.0).alpha(0.25).reduction(Reduction::Sum);
/// let (loss, grad) = focal.loss_and_grad(&logits, &target)?;
/// // Confident, correct elements contribute almost nothing.
/// assert!(grad[[0, 0]].abs() < 1e-3 && grad[[1, 0]] > 0.0);
/// assert!(loss < segloss::BinaryCrossEntropy::new().reduction(Reduction::Sum).loss(&logits, &target)?);
/// # Ok::<(), segloss::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct FocalLoss {
    input: Input,
    gamma: f64,
    alpha: Option<f64>,
    reduction: Reduction,
    epsilon: f64,
}

impl Default for FocalLoss {
    fn default() -> Self {
        Self {
            input: Input::Logits,
            gamma: 2.0,
            alpha: None,
            reduction: Reduction::Mean,
            epsilon: 1e-7,
        }
    }
}

/// `v^γ` with the common exponents special-cased.
#[derive(Debug, Clone, Copy)]
enum Exponent<A> {
    Zero,
    One,
    Two,
    Other(A),
}

impl<A: Float> Exponent<A> {
    fn new(gamma: f64) -> Self {
        match gamma {
            0.0 => Exponent::Zero,
            1.0 => Exponent::One,
            2.0 => Exponent::Two,
            _ => Exponent::Other(A::from_f64(gamma)),
        }
    }

    #[inline(always)]
    fn pow(self, v: A) -> A {
        match self {
            Exponent::Zero => A::one(),
            Exponent::One => v,
            Exponent::Two => v * v,
            Exponent::Other(g) => v.powf(g),
        }
    }

    /// `e^(-γ·s)`, i.e. `v^γ` for `v = e^(-s)` given `s = -ln v ≥ 0`.
    #[inline(always)]
    fn pow_of_log(self, v: A, s: A) -> A {
        match self {
            Exponent::Other(g) => (-g * s).exp(),
            _ => self.pow(v),
        }
    }
}

impl FocalLoss {
    /// Focal loss on logits: γ = 2, no alpha, [`Reduction::Mean`], ε = 1e-7.
    pub fn new() -> Self {
        Self::default()
    }

    /// What the input holds. Default: [`Input::Logits`]; every kind is
    /// accepted ([`Input::SoftmaxLogits`] needs a class axis, axis 1).
    #[must_use]
    pub fn input(mut self, input: Input) -> Self {
        self.input = input;
        self
    }

    /// The focusing exponent γ ≥ 0. Default: 2.
    #[must_use]
    pub fn gamma(mut self, gamma: f64) -> Self {
        self.gamma = gamma;
        self
    }

    /// The balance α in `[0, 1]` of positives against negatives (of the
    /// foreground classes against class 0, with softmax logits); `None`
    /// weighs every element 1. Default: `None`.
    #[must_use]
    pub fn alpha(mut self, alpha: impl Into<Option<f64>>) -> Self {
        self.alpha = alpha.into();
        self
    }

    /// How the per-element losses are reduced. Default: [`Reduction::Mean`]
    /// (divides by the element count).
    #[must_use]
    pub fn reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }

    /// The clip ε for probabilities, in `(0, 0.5)`. Default: 1e-7. Unused
    /// with logits.
    #[must_use]
    pub fn epsilon(mut self, epsilon: f64) -> Self {
        self.epsilon = epsilon;
        self
    }

    fn check(&self) -> Result<()> {
        check_param("gamma", self.gamma, self.gamma >= 0.0, "must be >= 0")?;
        if let Some(alpha) = self.alpha {
            check_param(
                "alpha",
                alpha,
                (0.0..=1.0).contains(&alpha),
                "must be in [0, 1]",
            )?;
        }
        check_param(
            "epsilon",
            self.epsilon,
            self.epsilon > 0.0 && self.epsilon < 0.5,
            "must be in (0, 0.5)",
        )
    }

    fn element<A: Float>(&self) -> Result<FocalElement<A>> {
        let eps = A::from_f64(self.epsilon);
        Ok(FocalElement {
            probabilities: self.input == Input::Probabilities,
            gamma: param_as("gamma", self.gamma)?,
            exponent: Exponent::new(self.gamma),
            alpha: self.alpha.map(A::from_f64),
            eps,
            one_minus_eps: A::one() - eps,
        })
    }

    /// The softmax form: one pass over positions.
    fn softmax<A: Float, D: Dimension>(
        &self,
        input: &ArrayRef<A, D>,
        target: &ArrayRef<A, D>,
        grad: Option<&mut ArrayRef<A, D>>,
    ) -> Result<A> {
        same_shape("target", input, target)?;
        if let Some(g) = &grad {
            same_shape("grad", input, g)?;
        }
        non_empty(input)?;
        let (_, classes, _) = softmax::dims(input.shape())?;
        let (ok, total) = with_classes!(classes, |k| self.softmax_pass(k, input, target, grad))?;
        if !ok {
            return Err(SOFTMAX_DOMAIN.fault(
                input,
                target,
                None,
                "an element of the gradient",
                f64::INFINITY,
            ));
        }
        reduce(self.reduction, total, input.len())
    }

    /// The walk of [`FocalLoss::softmax`] over `classes` classes: the sum
    /// of the terms, and whether every element and gradient element was
    /// good.
    fn softmax_pass<A: Float, D: Dimension, K: Classes>(
        &self,
        classes: K,
        input: &ArrayRef<A, D>,
        target: &ArrayRef<A, D>,
        grad: Option<&mut ArrayRef<A, D>>,
    ) -> Result<(bool, f64)> {
        let gamma: A = param_as("gamma", self.gamma)?;
        let exponent = Exponent::<A>::new(self.gamma);
        let weight = |c: usize| match self.alpha {
            Some(alpha) if c == 0 => A::from_f64(1.0 - alpha),
            Some(alpha) => A::from_f64(alpha),
            None => A::one(),
        };
        let accepts = SOFTMAX_DOMAIN.thresholds::<A>();
        let scale = grad_scale::<A>(self.reduction, input.len());
        let one = A::one();
        let mut sm = Softmax::new(classes);
        let mut sum = LaneSum::new();
        let mut faults = Faults::new();
        let mut total = 0.0;
        let ok = softmax::walk(
            classes,
            input,
            target,
            None,
            grad,
            #[inline(always)]
            |mut ch| {
                sm.compute(ch.x);
                let lse = sm.lse();
                let mut partial = [A::zero(); L];
                for c in 0..classes.count() {
                    let a = weight(c);
                    let (x, y, p) = (ch.x.get(c), ch.y.get(c), sm.p(c));
                    faults.check2(x, y, |x, y| accepts.check(x, y));
                    for k in 0..L {
                        let log_p = x[k] - lse[k];
                        partial[k] -= a * exponent.pow(one - p[k]) * y[k] * log_p;
                    }
                    if let Some(g) = ch.g.as_mut() {
                        // `p_c·∂ℓ/∂p_c`, chained through the softmax below.
                        let mut v = [A::zero(); L];
                        for k in 0..L {
                            let log_p = x[k] - lse[k];
                            let q = one - p[k];
                            let ratio = if q > A::zero() { -log_p / q } else { one };
                            v[k] =
                                -scale * a * y[k] * exponent.pow(q) * (one + gamma * p[k] * ratio);
                        }
                        *g.get(c) = v;
                    }
                }
                ch.trim(&mut partial);
                sum.add(&partial);
                if let Some(mut g) = ch.g {
                    sm.chain_scaled(&mut g);
                    for c in 0..classes.count() {
                        faults.check(g.get(c), finite);
                    }
                }
                if ch.last {
                    total += sum.take();
                    faults.none()
                } else {
                    true
                }
            },
        )?;
        Ok((ok, total))
    }
}

/// What the softmax form accepts: any logits, targets in `[0, 1]`.
const SOFTMAX_DOMAIN: Domain = Domain {
    probabilities: false,
    binary_target: false,
};

/// The element-wise focal loss with its parameters in the element type.
#[derive(Debug, Clone, Copy)]
struct FocalElement<A> {
    probabilities: bool,
    gamma: A,
    exponent: Exponent<A>,
    alpha: Option<A>,
    eps: A,
    one_minus_eps: A,
}

impl<A: Float> Elementwise<A> for FocalElement<A> {
    fn domain(&self) -> Domain {
        Domain {
            probabilities: self.probabilities,
            binary_target: false,
        }
    }

    #[inline(always)]
    fn value(&self, x: A, y: A) -> A {
        self.value_grad(x, y).0
    }

    #[inline(always)]
    fn value_grad(&self, x: A, y: A) -> (A, A) {
        let zero = A::zero();
        let one = A::one();
        let alpha_t = match self.alpha {
            Some(a) => y * a + (one - y) * (one - a),
            None => one,
        };
        let s = y + y - one;
        if self.probabilities {
            let p = x.max(self.eps).min(self.one_minus_eps);
            let bce = -(y * p.ln() + (one - y) * (-p).ln_1p());
            let q = y * (one - p) + (one - y) * p;
            let f = self.exponent.pow(q);
            let value = alpha_t * f * bce;
            let inside = (x >= self.eps) & (x <= self.one_minus_eps);
            let grad = if inside {
                let d_bce = (one - y) / (one - p) - y / p;
                alpha_t * (f * d_bce - self.gamma * (f / q) * s * bce)
            } else {
                zero
            };
            (value, grad)
        } else {
            let l = Logistic::of(x);
            let bce = y * l.softplus_neg + (one - y) * l.softplus_pos;
            // t = (2y - 1)·x: 1 - p_t = σ(-t), p_t = σ(t), -ln(1 - p_t) = softplus(t).
            let t = if y == one {
                l
            } else if y == zero {
                Logistic {
                    sigma: l.sigma_c,
                    sigma_c: l.sigma,
                    softplus_pos: l.softplus_neg,
                    softplus_neg: l.softplus_pos,
                }
            } else {
                Logistic::of(s * x)
            };
            let f = self.exponent.pow_of_log(t.sigma_c, t.softplus_pos);
            let value = alpha_t * f * bce;
            let d_bce = (one - y) * l.sigma - y * l.sigma_c;
            let grad = alpha_t * f * (d_bce - self.gamma * s * t.sigma * bce);
            (value, grad)
        }
    }
}

impl<A: Float> Loss<A> for FocalLoss {
    fn loss<D: Dimension>(&self, input: &ArrayRef<A, D>, target: &ArrayRef<A, D>) -> Result<A> {
        self.check()?;
        if self.input == Input::SoftmaxLogits {
            return self.softmax(input, target, None);
        }
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
        self.check()?;
        if self.input == Input::SoftmaxLogits {
            return self.softmax(input, target, Some(grad));
        }
        let e = self.element::<A>()?;
        let scale = grad_scale(self.reduction, input.len());
        let total = pixel::loss_grad(&e, input, target, None, grad, scale)?;
        reduce(self.reduction, total, input.len())
    }
}
