//! The Dice loss (Sørensen–Dice, with the V-Net exponent).

use ndarray::{ArrayRef, Dimension};

use crate::error::check_param;
use crate::kernel::Domain;
use crate::kernel::math::Logistic;
use crate::kernel::region::{self, Groups};
use crate::loss::finite_result;
use crate::{Error, Float, Input, Loss, Result};

/// The Dice loss.
///
/// ```text
/// L = 1 - (2·Σ p·y + s_nr) / (Σ p^γ + Σ y^γ + s_dr)
/// ```
///
/// with `p = σ(x)` for [`Input::Logits`] (the default) or the input itself
/// for [`Input::Probabilities`]. The sums run over every element (global),
/// or, with [`per_sample`](DiceLoss::per_sample), over each index of axis 0,
/// and `L` is then the mean of the per-sample losses. The gradient is
///
/// ```text
/// ∂L/∂p = -2·y / den + γ·num·p^(γ-1) / den²      (num, den: the fraction's parts)
/// ∂L/∂x = ∂L/∂p · σ(x)·(1 - σ(x))                (logits)
/// ```
///
/// γ = 2 (the default) is the V-Net form (Milletari et al. 2016; MONAI's
/// `DiceLoss(squared_pred=True)`), γ = 1 the plain form (Keras's `Dice`
/// with `smooth_terms(0.0, 1e-7)`). An empty prediction against an empty
/// target gives 0 when `s_nr = s_dr > 0`.
///
/// ```
/// use ndarray::array;
/// use segloss::{DiceLoss, Input, Loss};
///
/// let p = array![[0.9_f64, 0.1], [0.8, 0.0]];
/// let y = array![[1.0, 0.0], [1.0, 0.0]];
/// let dice = DiceLoss::new().input(Input::Probabilities).gamma(1.0).smooth_terms(0.0, 0.0);
/// let loss = dice.loss(&p, &y)?;
/// // 1 - 2·1.7 / (1.8 + 2)
/// assert!((loss - (1.0 - 3.4 / 3.8)).abs() < 1e-15);
/// # Ok::<(), segloss::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct DiceLoss {
    input: Input,
    gamma: f64,
    smooth_nr: f64,
    smooth_dr: f64,
    per_sample: bool,
}

impl Default for DiceLoss {
    fn default() -> Self {
        Self {
            input: Input::Logits,
            gamma: 2.0,
            smooth_nr: 1e-6,
            smooth_dr: 1e-6,
            per_sample: false,
        }
    }
}

/// `v^γ` and `v^(γ-1)` with the common exponents special-cased.
#[derive(Debug, Clone, Copy)]
enum Power<A> {
    One,
    Two,
    Other(A),
}

impl<A: Float> Power<A> {
    fn new(gamma: f64) -> Self {
        if gamma == 1.0 {
            Power::One
        } else if gamma == 2.0 {
            Power::Two
        } else {
            Power::Other(A::from_f64(gamma))
        }
    }

    #[inline(always)]
    fn pow(self, v: A) -> A {
        match self {
            Power::One => v,
            Power::Two => v * v,
            Power::Other(g) => v.powf(g),
        }
    }

    /// `v^(γ-1)`.
    #[inline(always)]
    fn pow_minus_one(self, v: A) -> A {
        match self {
            Power::One => A::one(),
            Power::Two => v,
            Power::Other(g) => v.powf(g - A::one()),
        }
    }
}

/// One group's fraction and the gradient coefficients `∂L/∂p = a·y + b·p^(γ-1)`.
#[derive(Debug, Clone, Copy)]
struct GroupGrad<A> {
    a: A,
    b: A,
}

impl DiceLoss {
    /// Dice on logits: γ = 2, `s_nr = s_dr = 1e-6`, global.
    pub fn new() -> Self {
        Self::default()
    }

    /// What the input holds. Default: [`Input::Logits`].
    #[must_use]
    pub fn input(mut self, input: Input) -> Self {
        self.input = input;
        self
    }

    /// The exponent γ ≥ 1 of the denominator's sums. Default: 2 (V-Net).
    #[must_use]
    pub fn gamma(mut self, gamma: f64) -> Self {
        self.gamma = gamma;
        self
    }

    /// Sets both smoothing terms `s_nr = s_dr = smooth ≥ 0`. Default: 1e-6.
    #[must_use]
    pub fn smooth(self, smooth: f64) -> Self {
        self.smooth_terms(smooth, smooth)
    }

    /// Sets the numerator's and the denominator's smoothing terms, each
    /// `≥ 0`. Default: `(1e-6, 1e-6)`.
    #[must_use]
    pub fn smooth_terms(mut self, numerator: f64, denominator: f64) -> Self {
        self.smooth_nr = numerator;
        self.smooth_dr = denominator;
        self
    }

    /// One Dice per index of axis 0, then their mean (MONAI's
    /// `batch=False`). Default: `false` (one global Dice, `batch=True`).
    #[must_use]
    pub fn per_sample(mut self, per_sample: bool) -> Self {
        self.per_sample = per_sample;
        self
    }

    fn check(&self) -> Result<()> {
        check_param("gamma", self.gamma, self.gamma >= 1.0, "must be >= 1")?;
        check_param(
            "smooth_nr",
            self.smooth_nr,
            self.smooth_nr >= 0.0,
            "must be >= 0",
        )?;
        check_param(
            "smooth_dr",
            self.smooth_dr,
            self.smooth_dr >= 0.0,
            "must be >= 0",
        )
    }

    fn groups(&self) -> Groups {
        if self.per_sample {
            Groups::PerSample
        } else {
            Groups::Global
        }
    }

    /// Pass 1: the loss and, per group, the gradient coefficients.
    fn evaluate<A: Float, D: Dimension>(
        &self,
        input: &ArrayRef<A, D>,
        target: &ArrayRef<A, D>,
    ) -> Result<(A, Vec<GroupGrad<A>>)> {
        self.check()?;
        let power = Power::<A>::new(self.gamma);
        let logits = self.input != Input::Probabilities;
        let domain = Domain {
            probabilities: !logits,
            binary_target: false,
        };
        let sums = region::sums(domain, self.groups(), input, target, |x, y| {
            let p = if logits { Logistic::sigmoid(x) } else { x };
            [p * y, power.pow(p), power.pow(y)]
        })?;
        let groups = sums.len() as f64;
        let mut total = 0.0;
        let mut coefficients = Vec::with_capacity(sums.len());
        for [intersection, p_pow, y_pow] in sums {
            let num = 2.0 * intersection + self.smooth_nr;
            let den = p_pow + y_pow + self.smooth_dr;
            if den <= 0.0 {
                return Err(Error::NonFiniteResult {
                    what: "the Dice loss (empty prediction and target with smooth_dr = 0)",
                    value: f64::NAN,
                });
            }
            total += 1.0 - num / den;
            coefficients.push(GroupGrad {
                a: A::from_f64(-2.0 / (den * groups)),
                b: A::from_f64(self.gamma * num / (den * den * groups)),
            });
        }
        Ok((finite_result("the loss", total / groups)?, coefficients))
    }
}

impl<A: Float> Loss<A> for DiceLoss {
    fn loss<D: Dimension>(&self, input: &ArrayRef<A, D>, target: &ArrayRef<A, D>) -> Result<A> {
        self.evaluate(input, target).map(|(loss, _)| loss)
    }

    fn loss_grad<D: Dimension>(
        &self,
        input: &ArrayRef<A, D>,
        target: &ArrayRef<A, D>,
        grad: &mut ArrayRef<A, D>,
    ) -> Result<A> {
        crate::loss::same_shape("grad", input, grad)?;
        let (loss, coefficients) = self.evaluate(input, target)?;
        let power = Power::<A>::new(self.gamma);
        let logits = self.input != Input::Probabilities;
        region::write_grad(
            self.groups(),
            input,
            target,
            grad,
            &coefficients,
            |x, y, c| {
                if logits {
                    let l = Logistic::of(x);
                    (c.a * y + c.b * power.pow_minus_one(l.sigma)) * (l.sigma * l.sigma_c)
                } else {
                    c.a * y + c.b * power.pow_minus_one(x)
                }
            },
        )?;
        Ok(loss)
    }
}
