//! The Dice loss (Sørensen–Dice, with the V-Net exponent), binary and
//! multi-class, with its Jaccard and log-cosh variants.

use ndarray::{ArrayRef, Dimension};

use crate::error::check_param;
use crate::kernel::region::{self, Activation, Evaluated, Groups, Layout};
use crate::loss::{check_class_weights, finite_result, log_cosh, same_shape};
use crate::{Error, Float, Input, Loss, Result};

/// The Dice loss, binary or multi-class.
///
/// For one group of elements (see below),
///
/// ```text
/// L_g = 1 - (2·Σ p·y + s_nr) / (Σ p^γ + Σ y^γ + s_dr)             (Dice)
/// L_g = 1 - (2·I + s_nr) / (2·(S - I) + s_dr)                      (jaccard)
///       with I = Σ p·y and S = Σ p^γ + Σ y^γ
/// L   = mean over groups g of w_g·L_g            (w_g = 1 without class weights)
/// L   = ln(cosh(L))                              (log_cosh)
/// ```
///
/// `p` is `σ(x)` for [`Input::Logits`] (the default), the input itself for
/// [`Input::Probabilities`], or the softmax of the input along axis 1 for
/// [`Input::SoftmaxLogits`]. The groups:
///
/// * default: one group, every element (MONAI's `batch=True` on one channel);
/// * [`per_sample`](DiceLoss::per_sample): one group per index of axis 0;
/// * [`per_class`](DiceLoss::per_class): one group per index of axis 1
///   (the class axis of `(N, C, ...)`), MONAI's `DiceLoss(batch=True)`;
/// * both: one group per (sample, class) pair, MONAI's `batch=False`;
/// * [`include_background(false)`](DiceLoss::include_background) leaves
///   class 0 out of every group (after the softmax, as MONAI does), and
///   [`class_weights`](DiceLoss::class_weights) (MONAI's `weight`) give
///   `w_g` by class, one per class kept.
///
/// The gradient is a small combination per group (`num`, `den`: the
/// fraction's parts), scaled by `w_g / G` and, with `log_cosh`, by `tanh(L)`:
///
/// ```text
/// ∂L_g/∂p = -2·y / den + γ·num·p^(γ-1) / den²                         (Dice)
/// ∂L_g/∂p = -2·y·(1/den + num/den²) + 2·γ·num·p^(γ-1) / den²          (jaccard)
/// ∂L/∂x   = ∂L/∂p · σ(x)·(1 - σ(x))                                   (logits)
/// ∂L/∂z_k = p_k·(∂L/∂p_k - Σ_c p_c·∂L/∂p_c)                           (softmax)
/// ```
///
/// γ = 2 (the default) is the V-Net form (Milletari et al. 2016; MONAI's
/// `DiceLoss(squared_pred=True)`), γ = 1 the plain form (Keras's `Dice`
/// with `smooth_terms(0.0, 1e-7)`). The Jaccard form is MONAI's
/// `jaccard=True`; the log-cosh Dice is from Jadon 2020, "A survey of loss
/// functions for semantic segmentation". An empty prediction against an
/// empty target gives 0 when `s_nr = s_dr > 0`.
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
///
/// // Three classes on axis 1 of (N, C, H, W), softmax inside, foreground classes only.
/// let logits = ndarray::Array4::<f32>::zeros((2, 3, 4, 4));
/// let target = segloss::one_hot::<f32, _>(&ndarray::Array3::<u32>::ones((2, 4, 4)), 3)?;
/// let dice = DiceLoss::new()
///     .input(Input::SoftmaxLogits)
///     .per_class(true)
///     .include_background(false)
///     .class_weights(vec![1.0, 2.0]);
/// let (loss, grad) = dice.loss_and_grad(&logits, &target)?;
/// assert!(loss > 0.0 && grad.iter().all(|g| g.is_finite()));
/// # Ok::<(), segloss::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct DiceLoss {
    input: Input,
    gamma: f64,
    smooth_nr: f64,
    smooth_dr: f64,
    per_sample: bool,
    per_class: bool,
    include_background: bool,
    class_weights: Option<Vec<f64>>,
    jaccard: bool,
    log_cosh: bool,
}

impl Default for DiceLoss {
    fn default() -> Self {
        Self {
            input: Input::Logits,
            gamma: 2.0,
            smooth_nr: 1e-6,
            smooth_dr: 1e-6,
            per_sample: false,
            per_class: false,
            include_background: true,
            class_weights: None,
            jaccard: false,
            log_cosh: false,
        }
    }
}

/// The exponent γ, with the common values special-cased (each gets its own
/// loop: the callers match once per call, not per element).
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
}

/// One group's gradient coefficients: `∂L/∂p = a·y + b·p^(γ-1)`.
#[derive(Debug, Clone, Copy)]
struct GroupGrad<A> {
    a: A,
    b: A,
}

impl DiceLoss {
    /// Dice on logits: γ = 2, `s_nr = s_dr = 1e-6`, one global group,
    /// background included, no class weights, neither Jaccard nor log-cosh.
    pub fn new() -> Self {
        Self::default()
    }

    /// What the input holds. Default: [`Input::Logits`]. Every kind is
    /// accepted; [`Input::SoftmaxLogits`] needs a class axis (axis 1).
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

    /// One Dice per index of axis 1 (the class axis of `(N, C, ...)`), then
    /// their mean; with [`per_sample`](DiceLoss::per_sample), one per
    /// (sample, class) pair. Default: `false` (classes pooled).
    #[must_use]
    pub fn per_class(mut self, per_class: bool) -> Self {
        self.per_class = per_class;
        self
    }

    /// Whether class 0 takes part. With `false`, class 0 is left out of
    /// every sum (after the softmax, so its logits still receive a
    /// gradient), as MONAI's `include_background=False`. Default: `true`.
    #[must_use]
    pub fn include_background(mut self, include_background: bool) -> Self {
        self.include_background = include_background;
        self
    }

    /// Weights `w_c ≥ 0` of the per-class losses, one per class kept (`C`,
    /// or `C - 1` without the background): `L = mean over groups of
    /// w_c·L_g` (MONAI's `weight`). Needs [`per_class`](DiceLoss::per_class).
    /// `None` (the default) weighs every class 1.
    #[must_use]
    pub fn class_weights(mut self, class_weights: impl Into<Option<Vec<f64>>>) -> Self {
        self.class_weights = class_weights.into();
        self
    }

    /// The Jaccard (IoU) form `1 - (2I + s_nr) / (2(S - I) + s_dr)`,
    /// MONAI's `jaccard=True`. Default: `false`.
    #[must_use]
    pub fn jaccard(mut self, jaccard: bool) -> Self {
        self.jaccard = jaccard;
        self
    }

    /// Returns `ln(cosh(L))` of the final (averaged, weighted) loss, the
    /// log-cosh Dice of Jadon 2020. Default: `false`.
    #[must_use]
    pub fn log_cosh(mut self, log_cosh: bool) -> Self {
        self.log_cosh = log_cosh;
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
        )?;
        if self.class_weights.is_some() && !self.per_class {
            return Err(Error::Unsupported {
                loss: "DiceLoss",
                option: "class_weights",
                reason: "class weights weigh the per-class losses: set per_class(true)",
            });
        }
        Ok(())
    }

    fn groups(&self) -> Groups {
        Groups {
            per_sample: self.per_sample,
            per_class: self.per_class,
            background: self.include_background,
        }
    }

    /// Pass 1: the loss and, per group, the gradient coefficients.
    ///
    /// With `grad`, pass 1 may also leave there what pass 2 needs of the
    /// input (see [`region::sums_for_grad`]), and then says what.
    fn evaluate<A: Float, D: Dimension>(
        &self,
        input: &ArrayRef<A, D>,
        target: &ArrayRef<A, D>,
        grad: Option<&mut ArrayRef<A, D>>,
    ) -> Result<Evaluated<A, GroupGrad<A>>> {
        self.check()?;
        let layout = Layout::new(self.groups(), Activation::of(self.input), input, target)?;
        if let Some(w) = &self.class_weights {
            check_class_weights(w, layout.kept_classes())?;
        }
        // One loop per exponent: the match on γ is outside the loops.
        let l = &layout;
        let (sums, stage) = match Power::<A>::new(self.gamma) {
            // The `bool`: whether pass 2's `∂L/∂p` reads `p`.
            Power::One => {
                region::sums_for_grad(l, input, target, grad, false, |p, y| [p * y, p, y])
            }
            Power::Two => {
                region::sums_for_grad(l, input, target, grad, true, |p, y| [p * y, p * p, y * y])
            }
            Power::Other(g) => region::sums_for_grad(l, input, target, grad, true, |p, y| {
                [p * y, p.powf(g), y.powf(g)]
            }),
        }?;
        let groups = sums.len() as f64;
        let mut total = 0.0;
        let mut parts = Vec::with_capacity(sums.len());
        for (g, [intersection, p_pow, y_pow]) in sums.into_iter().enumerate() {
            let weight = match (&self.class_weights, layout.class_of(g)) {
                (Some(w), Some(c)) => w[c],
                _ => 1.0,
            };
            let num = 2.0 * intersection + self.smooth_nr;
            let den = if self.jaccard {
                2.0 * (p_pow + y_pow - intersection) + self.smooth_dr
            } else {
                p_pow + y_pow + self.smooth_dr
            };
            if den.is_nan() || den <= 0.0 {
                return Err(Error::NonFiniteResult {
                    what: "the Dice loss (empty prediction and target with smooth_dr = 0)",
                    value: f64::NAN,
                });
            }
            total += weight * (1.0 - num / den);
            let scale = weight / groups;
            let (a, b) = if self.jaccard {
                (
                    -2.0 * (1.0 / den + num / (den * den)),
                    2.0 * self.gamma * num / (den * den),
                )
            } else {
                (-2.0 / den, self.gamma * num / (den * den))
            };
            parts.push((a * scale, b * scale));
        }
        let mean = total / groups;
        let (loss, factor) = if self.log_cosh {
            log_cosh(mean)
        } else {
            (mean, 1.0)
        };
        let coefficients = parts
            .into_iter()
            .map(|(a, b)| GroupGrad {
                a: A::from_f64(a * factor),
                b: A::from_f64(b * factor),
            })
            .collect();
        Ok(Evaluated {
            loss: finite_result("the loss", loss)?,
            layout,
            coefficients,
            stage,
        })
    }
}

impl<A: Float> Loss<A> for DiceLoss {
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
        let (x, y) = (input, target);
        match Power::<A>::new(self.gamma) {
            Power::One => {
                region::write_grad_after(stage, layout, x, y, grad, k, |_, y, c| c.a * y + c.b)
            }
            Power::Two => {
                region::write_grad_after(stage, layout, x, y, grad, k, |p, y, c| c.a * y + c.b * p)
            }
            Power::Other(g) => {
                let g1 = g - A::one();
                region::write_grad_after(stage, layout, x, y, grad, k, |p, y, c| {
                    c.a * y + c.b * p.powf(g1)
                })
            }
        }?;
        Ok(e.loss)
    }
}
