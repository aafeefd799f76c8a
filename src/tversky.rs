//! The Tversky loss and its focal form.

use ndarray::{ArrayRef, Dimension};

use crate::error::check_param;
use crate::kernel::region::{self, Activation, Evaluated, Groups, Layout};
use crate::loss::{finite_result, same_shape};
use crate::{Error, Float, Input, Loss, Result};

/// The Tversky loss (Salehi et al. 2017), with the focal exponent of
/// Abraham & Khan 2019.
///
/// For one group of elements (see [`DiceLoss`](crate::DiceLoss) for the
/// groups: global, per sample, per class, per (sample, class)),
///
/// ```text
/// TP = Σ p·g,   FP = Σ p·(1 - g),   FN = Σ (1 - p)·g
/// T  = (TP + s_nr) / (TP + α·FP + β·FN + s_dr)
/// L  = mean over groups of (1 - T)^focal
/// ```
///
/// `p` is `σ(x)` for [`Input::Logits`] (the default), the input for
/// [`Input::Probabilities`], or the softmax along axis 1 for
/// [`Input::SoftmaxLogits`]. α = β = 0.5 is the Dice loss (γ = 1); β > α
/// weighs false negatives more (better recall on small structures). This is
/// MONAI's `TverskyLoss` (`batch=True` is the default grouping or
/// `per_class`, `batch=False` adds `per_sample`); the focal exponent
/// applies to each group's `1 - T` before the mean. When `focal ≠ 1`,
/// `1 - T` is taken as 0 where it is negative (possible only when
/// `s_nr > s_dr`), and a group with `1 - T = 0` gets a zero gradient.
///
/// With `num`, `den` the fraction's parts and `D = -focal·(1 - T)^(focal-1) / G`,
///
/// ```text
/// ∂L/∂p = D·( g·(1/den - (1 - α - β)·num/den²) - α·num/den² )
/// ```
///
/// chained through the sigmoid or the softmax as for Dice.
///
/// ```
/// use ndarray::array;
/// use segloss::{Input, Loss, TverskyLoss};
///
/// let p = array![[0.9_f64, 0.4], [0.2, 0.1]];
/// let g = array![[1.0, 1.0], [0.0, 0.0]];
/// let tversky = TverskyLoss::new()
///     .input(Input::Probabilities)
///     .alpha(0.3)
///     .beta(0.7)
///     .smooth_terms(0.0, 0.0);
/// // TP = 1.3, FP = 0.3, FN = 0.7
/// let t = 1.3 / (1.3 + 0.3 * 0.3 + 0.7 * 0.7);
/// assert!((tversky.loss(&p, &g)? - (1.0 - t)).abs() < 1e-15);
/// let focal = tversky.focal(0.75);
/// assert!((focal.loss(&p, &g)? - (1.0 - t).powf(0.75)).abs() < 1e-15);
/// # Ok::<(), segloss::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TverskyLoss {
    input: Input,
    alpha: f64,
    beta: f64,
    smooth_nr: f64,
    smooth_dr: f64,
    focal: f64,
    per_sample: bool,
    per_class: bool,
    include_background: bool,
}

impl Default for TverskyLoss {
    fn default() -> Self {
        Self {
            input: Input::Logits,
            alpha: 0.5,
            beta: 0.5,
            smooth_nr: 1e-6,
            smooth_dr: 1e-6,
            focal: 1.0,
            per_sample: false,
            per_class: false,
            include_background: true,
        }
    }
}

/// One group's gradient coefficients: `∂L/∂p = a·g + b`.
#[derive(Debug, Clone, Copy)]
struct GroupGrad<A> {
    a: A,
    b: A,
}

impl TverskyLoss {
    /// Tversky on logits: α = β = 0.5, `s_nr = s_dr = 1e-6`, focal 1,
    /// one global group, background included.
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

    /// The weight α ≥ 0 of the false positives. Default: 0.5.
    #[must_use]
    pub fn alpha(mut self, alpha: f64) -> Self {
        self.alpha = alpha;
        self
    }

    /// The weight β ≥ 0 of the false negatives. Default: 0.5.
    #[must_use]
    pub fn beta(mut self, beta: f64) -> Self {
        self.beta = beta;
        self
    }

    /// The focal exponent `> 0` applied to each group's `1 - T`
    /// (Abraham & Khan 2019 use `1/γ` with γ in `[1, 3]`, e.g. 0.75).
    /// Default: 1 (plain Tversky).
    #[must_use]
    pub fn focal(mut self, focal: f64) -> Self {
        self.focal = focal;
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

    /// One Tversky index per index of axis 0, then their mean (MONAI's
    /// `batch=False`). Default: `false`.
    #[must_use]
    pub fn per_sample(mut self, per_sample: bool) -> Self {
        self.per_sample = per_sample;
        self
    }

    /// One Tversky index per index of axis 1 (the class axis), then their mean.
    /// Default: `false` (classes pooled).
    #[must_use]
    pub fn per_class(mut self, per_class: bool) -> Self {
        self.per_class = per_class;
        self
    }

    /// Whether class 0 takes part (see
    /// [`DiceLoss::include_background`](crate::DiceLoss::include_background)).
    /// Default: `true`.
    #[must_use]
    pub fn include_background(mut self, include_background: bool) -> Self {
        self.include_background = include_background;
        self
    }

    fn check(&self) -> Result<()> {
        for (name, value) in [
            ("alpha", self.alpha),
            ("beta", self.beta),
            ("smooth_nr", self.smooth_nr),
            ("smooth_dr", self.smooth_dr),
        ] {
            check_param(name, value, value >= 0.0, "must be >= 0")?;
        }
        check_param("focal", self.focal, self.focal > 0.0, "must be > 0")
    }

    /// Pass 1: the loss and, per group, the gradient coefficients. With
    /// `grad`, pass 1 may also leave there what pass 2 needs of the input
    /// (see [`region::sums_for_grad`]), and then says what.
    fn evaluate<A: Float, D: Dimension>(
        &self,
        input: &ArrayRef<A, D>,
        target: &ArrayRef<A, D>,
        grad: Option<&mut ArrayRef<A, D>>,
    ) -> Result<Evaluated<A, GroupGrad<A>>> {
        self.check()?;
        let groups = Groups {
            per_sample: self.per_sample,
            per_class: self.per_class,
            background: self.include_background,
        };
        let layout = Layout::new(groups, Activation::of(self.input), input, target)?;
        // `false`: pass 2's `∂L/∂p` does not read `p`.
        let (sums, stage) = region::sums_for_grad(&layout, input, target, grad, false, |p, g| {
            let tp = p * g;
            [tp, p - tp, g - tp]
        })?;
        let count = sums.len() as f64;
        let (alpha, beta) = (self.alpha, self.beta);
        let mut total = 0.0;
        let mut coefficients = Vec::with_capacity(sums.len());
        for [tp, fp, fn_] in sums {
            let num = tp + self.smooth_nr;
            let den = tp + alpha * fp + beta * fn_ + self.smooth_dr;
            if den.is_nan() || den <= 0.0 {
                return Err(Error::NonFiniteResult {
                    what: "the Tversky index (empty prediction and target with smooth_dr = 0)",
                    value: f64::NAN,
                });
            }
            let miss = 1.0 - num / den;
            let (value, slope) = if self.focal == 1.0 {
                (miss, -1.0)
            } else if miss > 0.0 {
                (
                    miss.powf(self.focal),
                    -self.focal * miss.powf(self.focal - 1.0),
                )
            } else {
                (0.0, 0.0)
            };
            total += value;
            let d = slope / count;
            let den2 = den * den;
            coefficients.push(GroupGrad {
                a: A::from_f64(d * (1.0 / den - (1.0 - alpha - beta) * num / den2)),
                b: A::from_f64(-d * alpha * num / den2),
            });
        }
        Ok(Evaluated {
            loss: finite_result("the loss", total / count)?,
            layout,
            coefficients,
            stage,
        })
    }
}

impl<A: Float> Loss<A> for TverskyLoss {
    fn loss<D: Dimension>(&self, input: &ArrayRef<A, D>, target: &ArrayRef<A, D>) -> Result<A> {
        self.evaluate(input, target, None).map(|e| e.loss)
    }

    fn loss_grad<D: Dimension>(
        &self,
        input: &ArrayRef<A, D>,
        target: &ArrayRef<A, D>,
        grad: &mut ArrayRef<A, D>,
    ) -> Result<A> {
        same_shape("grad", input, grad)?;
        let e = self.evaluate(input, target, Some(grad))?;
        let (stage, layout, k) = (e.stage, &e.layout, &e.coefficients);
        region::write_grad_after(stage, layout, input, target, grad, k, |_, g, c| {
            c.a * g + c.b
        })?;
        Ok(e.loss)
    }
}
