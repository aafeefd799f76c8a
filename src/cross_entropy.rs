//! Multi-class cross-entropy over a class axis, with class weights, label
//! smoothing and per-element weights.

use ndarray::{ArrayRef, Dimension};

use crate::bce::{grad_scale, reduce};
use crate::error::check_param;
use crate::kernel::softmax::{self, Classes, Faults, L, LaneSum, Softmax, with_classes};
use crate::kernel::{Domain, finite, weight_ok};
use crate::loss::{check_class_weights, non_empty, param_as, same_shape};
use crate::{Error, Float, Input, Loss, Reduction, Result};

/// Cross-entropy over the classes of axis 1 of an `(N, C, ...)` tensor.
///
/// At every position `x` (an index of every axis but axis 1),
///
/// ```text
/// y'_c = (1 - ls)·y_c + ls/C                       (label smoothing ls)
/// ℓ(x) = -Σ_c w_c·y'_c·ln p_c                      (class weights w, default 1)
/// L    = Σ_x ℓ(x) / (N·S)   (Mean)   or   Σ_x ℓ(x)   (Sum)
/// ```
///
/// with `N·S` the number of positions (elements / C). The target holds
/// one-hot or soft class probabilities, in the input's shape (see
/// [`one_hot`](crate::one_hot)). This is PyTorch's
/// `F.cross_entropy(input, target_probabilities, weight=w, label_smoothing=ls)`;
/// with class weights, `Mean` still divides by the number of positions, as
/// PyTorch does for probability targets.
///
/// * [`Input::SoftmaxLogits`] (the default): `p = softmax(z)` along axis 1,
///   evaluated as `ln p_c = z_c - logsumexp(z)` with the maximum shifted
///   out, so any finite logits give a finite loss. With `a_c = w_c·y'_c`,
///   `∂ℓ/∂z_k = p_k·Σ_c a_c - a_k`.
/// * [`Input::Probabilities`]: `p` is clipped to `[ε, 1]` before the log;
///   `∂ℓ/∂p_c = -a_c / p_c`, 0 where the clip is active.
/// * [`Input::Logits`] is an error: cross-entropy is over classes (use
///   [`BinaryCrossEntropy`](crate::BinaryCrossEntropy) for sigmoid outputs).
///
/// With per-element weights `m` ([`CrossEntropy::loss_with_weights`]), the
/// sum is `Σ_x Σ_c m(x, c)·w_c·y'_c·(-ln p_c)` and the gradient likewise.
///
/// ```
/// use ndarray::{array, Array3};
/// use segloss::{one_hot, CrossEntropy, Loss, Reduction};
///
/// // Two samples, three classes, two pixels: logits (N, C, W) and labels (N, W).
/// let logits = Array3::from_shape_vec((2, 3, 2), vec![
///     2.0, 0.0, 0.5, 1.0, -1.0, 0.0,
///     0.0, 0.0, 0.0, 3.0, 0.0, -3.0,
/// ])?;
/// let target = one_hot::<f64, _>(&array![[0_u32, 1], [2, 1]], 3)?;
/// let ce = CrossEntropy::new().class_weights(vec![0.5, 1.0, 2.0]).label_smoothing(0.1);
/// let (loss, grad) = ce.loss_and_grad(&logits, &target)?;
/// assert!(loss > 0.0);
/// // Without class weights or smoothing the gradient sums to 0 over the classes.
/// let (_, grad) = CrossEntropy::new().reduction(Reduction::Sum).loss_and_grad(&logits, &target)?;
/// assert!((grad[[0, 0, 0]] + grad[[0, 1, 0]] + grad[[0, 2, 0]]).abs() < 1e-15);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct CrossEntropy {
    input: Input,
    reduction: Reduction,
    class_weights: Option<Vec<f64>>,
    label_smoothing: f64,
    epsilon: f64,
}

impl Default for CrossEntropy {
    fn default() -> Self {
        Self {
            input: Input::SoftmaxLogits,
            reduction: Reduction::Mean,
            class_weights: None,
            label_smoothing: 0.0,
            epsilon: 1e-7,
        }
    }
}

impl CrossEntropy {
    /// Cross-entropy of softmax logits: [`Reduction::Mean`], no class
    /// weights, no label smoothing, ε = 1e-7.
    pub fn new() -> Self {
        Self::default()
    }

    /// What the input holds: [`Input::SoftmaxLogits`] (the default) or
    /// [`Input::Probabilities`]; [`Input::Logits`] is an error at the call.
    #[must_use]
    pub fn input(mut self, input: Input) -> Self {
        self.input = input;
        self
    }

    /// How the per-position losses are reduced. Default: [`Reduction::Mean`]
    /// (divides by the number of positions, elements / C).
    #[must_use]
    pub fn reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }

    /// Weights `w_c ≥ 0`, one per class (PyTorch's `weight`). `None` (the
    /// default) weighs every class 1.
    #[must_use]
    pub fn class_weights(mut self, class_weights: impl Into<Option<Vec<f64>>>) -> Self {
        self.class_weights = class_weights.into();
        self
    }

    /// Label smoothing `ls` in `[0, 1)`: the target becomes
    /// `(1 - ls)·y + ls/C`. Default: 0.
    #[must_use]
    pub fn label_smoothing(mut self, label_smoothing: f64) -> Self {
        self.label_smoothing = label_smoothing;
        self
    }

    /// The clip ε for probabilities, in `(0, 0.5)`: `p` is clipped to
    /// `[ε, 1]` before the log. Default: 1e-7. Unused with logits.
    #[must_use]
    pub fn epsilon(mut self, epsilon: f64) -> Self {
        self.epsilon = epsilon;
        self
    }

    /// The loss with per-element weights `m ≥ 0` of the input's shape:
    /// `Σ_x Σ_c m(x, c)·w_c·y'_c·(-ln p_c)`, reduced as set.
    ///
    /// # Errors
    /// As [`Loss::loss`], and when `weights` has another shape or holds a
    /// negative or non-finite weight.
    pub fn loss_with_weights<A: Float, D: Dimension>(
        &self,
        input: &ArrayRef<A, D>,
        target: &ArrayRef<A, D>,
        weights: &ArrayRef<A, D>,
    ) -> Result<A> {
        self.run(input, target, Some(weights), None)
    }

    /// [`CrossEntropy::loss_with_weights`] and its gradient with respect to
    /// the input, written into `grad`.
    ///
    /// # Errors
    /// As [`CrossEntropy::loss_with_weights`], and when `grad`'s shape
    /// differs from the input's.
    pub fn loss_grad_with_weights<A: Float, D: Dimension>(
        &self,
        input: &ArrayRef<A, D>,
        target: &ArrayRef<A, D>,
        weights: &ArrayRef<A, D>,
        grad: &mut ArrayRef<A, D>,
    ) -> Result<A> {
        self.run(input, target, Some(weights), Some(grad))
    }

    fn check(&self) -> Result<()> {
        if self.input == Input::Logits {
            return Err(Error::Unsupported {
                loss: "CrossEntropy",
                option: "input",
                reason: "cross-entropy is over classes: use Input::SoftmaxLogits or \
                         Input::Probabilities (BinaryCrossEntropy takes sigmoid logits)",
            });
        }
        check_param(
            "label_smoothing",
            self.label_smoothing,
            (0.0..1.0).contains(&self.label_smoothing),
            "must be in [0, 1)",
        )?;
        check_param(
            "epsilon",
            self.epsilon,
            self.epsilon > 0.0 && self.epsilon < 0.5,
            "must be in (0, 0.5)",
        )
    }

    /// The one pass: validates, sums and (with `grad`) writes the gradient.
    fn run<A: Float, D: Dimension>(
        &self,
        input: &ArrayRef<A, D>,
        target: &ArrayRef<A, D>,
        weights: Option<&ArrayRef<A, D>>,
        grad: Option<&mut ArrayRef<A, D>>,
    ) -> Result<A> {
        self.check()?;
        same_shape("target", input, target)?;
        if let Some(w) = weights {
            same_shape("weights", input, w)?;
        }
        if let Some(g) = &grad {
            same_shape("grad", input, g)?;
        }
        non_empty(input)?;
        let (_, classes, _) = softmax::dims(input.shape())?;
        let class_weights: Vec<A> = match &self.class_weights {
            Some(w) => {
                check_class_weights(w, classes)?;
                w.iter()
                    .map(|&v| param_as("class_weights", v))
                    .collect::<Result<_>>()?
            }
            None => vec![A::one(); classes],
        };
        let positions = input.len() / classes;
        let (ok, total) = with_classes!(classes, |k| {
            self.pass(k, input, target, weights, grad, &class_weights)
        })?;
        let domain = self.domain();
        if !ok {
            return Err(domain.fault(
                input,
                target,
                weights,
                "an element of the gradient",
                f64::INFINITY,
            ));
        }
        // A non-finite logit shows here (see `pass`); a loss that is not
        // finite from good input is `reduce`'s error.
        if !total.is_finite()
            && let Some(fault) = domain.diagnose(input, target, weights)
        {
            return Err(fault);
        }
        reduce(self.reduction, total, positions)
    }

    /// What the input and targets may hold.
    fn domain(&self) -> Domain {
        Domain {
            probabilities: self.input == Input::Probabilities,
            binary_target: false,
        }
    }

    /// The walk of [`CrossEntropy::run`] over `classes` classes, with
    /// the class weights in the element type: the sum of the terms, and
    /// whether every element and gradient element was good.
    fn pass<A: Float, D: Dimension, K: Classes>(
        &self,
        classes: K,
        input: &ArrayRef<A, D>,
        target: &ArrayRef<A, D>,
        weights: Option<&ArrayRef<A, D>>,
        grad: Option<&mut ArrayRef<A, D>>,
        class_weights: &[A],
    ) -> Result<(bool, f64)> {
        let keep = A::from_f64(1.0 - self.label_smoothing);
        let spread = A::from_f64(self.label_smoothing / classes.count() as f64);
        let eps = A::from_f64(self.epsilon);
        let probabilities = self.input == Input::Probabilities;
        let accepts = self.domain().thresholds::<A>();
        let positions = input.len() / classes.count();
        let scale = grad_scale::<A>(self.reduction, positions);
        let mut class_weights_k = classes.store(A::zero());
        class_weights_k.as_mut().copy_from_slice(class_weights);

        let mut sm = Softmax::new(classes);
        // `a_c = w_c·y'_c·m` (m the element's weight) per class lane.
        let mut a = classes.store([A::zero(); L]);
        let mut sum = LaneSum::new();
        let mut faults_kept = Faults::new();
        let mut total = 0.0;
        let sum_out = &mut total;
        let ok = softmax::walk(
            classes,
            input,
            target,
            weights,
            grad,
            // Every loop below runs over the `L` positions of a chunk, with
            // per-position reductions over the classes: nothing folds a
            // float or a `bool` across positions until the end of a tile.
            // `move`, so that the parameters are values and the scratch is
            // the closure's own: behind references, LLVM loaded them again
            // for every class, and kept the fault lanes in memory (the
            // gradient's stores might alias them).
            #[inline(always)]
            move |ch| {
                // The targets (and weights) first: their loads then go out
                // with the logits' at the start of the chunk, instead of
                // missing cache on their own after the softmax (at 2^24
                // elements, 3.9 ns per element the other way round).
                let a = a.as_mut();
                // A local copy, stored back once per chunk (else every
                // check loads and stores the closure's lanes: the
                // gradient's stores might alias them).
                let mut faults = faults_kept;
                let mut a_sum = [A::zero(); L];
                for (c, &wc) in class_weights_k.as_ref().iter().enumerate() {
                    let y = ch.y.get(c);
                    faults.check(y, |y| accepts.target(y));
                    let mut ac = [A::zero(); L];
                    for k in 0..L {
                        ac[k] = wc * (keep * y[k] + spread);
                    }
                    if let Some(w) = ch.w {
                        let w = w.get(c);
                        faults.check(w, weight_ok);
                        for k in 0..L {
                            ac[k] *= w[k];
                        }
                    }
                    for k in 0..L {
                        a_sum[k] += ac[k];
                    }
                    a[c] = ac;
                }
                let mut partial = [A::zero(); L];
                if probabilities {
                    for (c, ac) in a.iter().enumerate() {
                        let x = ch.x.get(c);
                        faults.check(x, |x| accepts.input(x));
                        for k in 0..L {
                            partial[k] -= ac[k] * x[k].max(eps).fast_ln();
                        }
                    }
                } else {
                    // A logit that is not finite makes the loss or the
                    // gradient so, which the checks after the walk see.
                    sm.compute(ch.x);
                    let lse = *sm.lse();
                    for (c, ac) in a.iter().enumerate() {
                        let x = ch.x.get(c);
                        for k in 0..L {
                            partial[k] -= ac[k] * (x[k] - lse[k]);
                        }
                    }
                }
                ch.trim(&mut partial);
                sum.add(&partial);
                if let Some(mut g) = ch.g {
                    if !probabilities {
                        // `g_c = scale·(p_c·Σa - a_c)` with `p_c ∈ [0, 1]`
                        // and `0 ≤ a_c ≤ Σa` is finite when `Σa` is (a
                        // non-finite logit spoils the loss instead), so
                        // one check per position covers the classes.
                        faults.check(&a_sum, finite);
                    }
                    for (c, ac) in a.iter().enumerate() {
                        let x = ch.x.get(c);
                        let mut v = [A::zero(); L];
                        if probabilities {
                            for k in 0..L {
                                v[k] = if x[k] >= eps {
                                    -scale * ac[k] / x[k]
                                } else {
                                    A::zero()
                                };
                            }
                            faults.check(&v, finite);
                        } else {
                            let p = sm.p(c);
                            for k in 0..L {
                                v[k] = scale * (p[k] * a_sum[k] - ac[k]);
                            }
                        }
                        *g.get(c) = v;
                    }
                }
                faults_kept = faults;
                if ch.last {
                    *sum_out += sum.take();
                    faults_kept.none()
                } else {
                    true
                }
            },
        )?;
        Ok((ok, total))
    }
}

impl<A: Float> Loss<A> for CrossEntropy {
    fn loss<D: Dimension>(&self, input: &ArrayRef<A, D>, target: &ArrayRef<A, D>) -> Result<A> {
        self.run(input, target, None, None)
    }

    fn loss_grad<D: Dimension>(
        &self,
        input: &ArrayRef<A, D>,
        target: &ArrayRef<A, D>,
        grad: &mut ArrayRef<A, D>,
    ) -> Result<A> {
        self.run(input, target, None, Some(grad))
    }
}
