//! The U-Net shape-aware loss: cross-entropy weighted per pixel by the
//! border weight map.

use ndarray::{Array, ArrayRef, Dimension, IxDyn};

use crate::bce::{BceElement, grad_scale, reduce};
use crate::distance::UNetWeights;
use crate::kernel::pixel;
use crate::loss::{binary_input, non_empty, same_shape};
use crate::{BinaryCrossEntropy, Error, Float, Input, Loss, Reduction, Result};

/// Binary cross-entropy weighted per pixel by the U-Net weight map
/// (Ronneberger et al. 2015), which makes the thin background gaps between
/// touching objects expensive to get wrong.
///
/// ```text
/// L = Σ w(x)·ℓ(x) / N   (Mean)   or   Σ w(x)·ℓ(x)   (Sum)
/// ℓ(x) = -(y·ln p + (1 - y)·ln(1 - p))                      (plain BCE)
/// w(x) = w_c(x) + w0·exp(-(d1(x) + d2(x))² / (2σ²))         (UNetWeights)
/// ∂L/∂x = w(x)·(σ(x) - y) / N                                (logits, Mean)
/// ```
///
/// Two ways to call it:
///
/// * As a [`Loss`]: the target must be binary (0 or 1); axis 0 is the sample
///   axis, and each sample's map is computed from its own target with
///   [`UNetWeights::for_mask`] over the remaining axes.
/// * With a precomputed map, the usual training setup (maps are made once
///   per ground truth, in the data pipeline):
///   [`loss_with_weights`](ShapeAwareLoss::loss_with_weights) and
///   [`loss_grad_with_weights`](ShapeAwareLoss::loss_grad_with_weights).
///   Targets may then be soft. This is PyTorch's
///   `BCEWithLogitsLoss(weight=w)` (or `BCELoss(weight=w)` on probabilities,
///   which are clipped to `[ε, 1 - ε]` as in [`BinaryCrossEntropy`]).
///
/// ```
/// use ndarray::Array3;
/// use segloss::distance::UNetWeights;
/// use segloss::{Loss, ShapeAwareLoss};
///
/// // One 16×16 sample with two touching squares.
/// let mut target = Array3::<f64>::zeros((1, 16, 16));
/// target.slice_mut(ndarray::s![0, 2..8, 2..8]).fill(1.0);
/// target.slice_mut(ndarray::s![0, 2..8, 9..15]).fill(1.0);
/// let logits = target.mapv(|y| if y > 0.5 { 1.0 } else { -1.0 });
///
/// let loss = ShapeAwareLoss::new().weights(UNetWeights::new().w0(10.0).sigma(5.0));
/// let (value, grad) = loss.loss_and_grad(&logits, &target)?;
/// // The gap column between the squares weighs far more than open background.
/// assert!(grad[[0, 4, 8]] > 5.0 * grad[[0, 14, 1]]);
/// assert!(value > 0.0);
/// # Ok::<(), segloss::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeAwareLoss {
    input: Input,
    epsilon: f64,
    reduction: Reduction,
    weights: UNetWeights,
}

impl Default for ShapeAwareLoss {
    fn default() -> Self {
        Self {
            input: Input::Logits,
            epsilon: 1e-7,
            reduction: Reduction::Mean,
            weights: UNetWeights::default(),
        }
    }
}

impl ShapeAwareLoss {
    /// On logits, [`Reduction::Mean`], `UNetWeights::default()` (w0 10,
    /// σ 5), ε = 1e-7.
    pub fn new() -> Self {
        Self::default()
    }

    /// What the input holds. Default: [`Input::Logits`].
    #[must_use]
    pub fn input(mut self, input: Input) -> Self {
        self.input = input;
        self
    }

    /// The clip ε for probabilities, in `(0, 0.5)`. Default: 1e-7.
    #[must_use]
    pub fn epsilon(mut self, epsilon: f64) -> Self {
        self.epsilon = epsilon;
        self
    }

    /// How the weighted losses are reduced. Default: [`Reduction::Mean`]
    /// (divides by the element count, as PyTorch's `weight=` does).
    #[must_use]
    pub fn reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }

    /// The weight map's parameters, used when the loss makes the maps
    /// itself (as a [`Loss`]). Default: [`UNetWeights::default()`].
    #[must_use]
    pub fn weights(mut self, weights: UNetWeights) -> Self {
        self.weights = weights;
        self
    }

    /// The loss with a precomputed weight map of `input`'s shape.
    ///
    /// ```
    /// use ndarray::array;
    /// use segloss::ShapeAwareLoss;
    /// use segloss::distance::UNetWeights;
    ///
    /// let mask = array![[true, true, false, true, true]];
    /// let weights = UNetWeights::new().for_mask::<f64, _>(&mask)?; // once, in the data pipeline
    /// let target = mask.mapv(|m| f64::from(u8::from(m)));
    /// let logits = array![[3.0, 2.0, 1.0, 2.0, 3.0]];
    /// let loss = ShapeAwareLoss::new().loss_with_weights(&logits, &target, &weights)?;
    /// // The gap pixel is wrong and weighs 1 + 10·exp(-2²/50) ≈ 10.2.
    /// assert!(loss > 10.0 * 1.3 / 5.0);
    /// # Ok::<(), segloss::Error>(())
    /// ```
    ///
    /// # Errors
    /// On differing shapes, an empty input, a non-finite or negative weight,
    /// and the bad inputs of [`BinaryCrossEntropy`].
    pub fn loss_with_weights<A: Float, D: Dimension>(
        &self,
        input: &ArrayRef<A, D>,
        target: &ArrayRef<A, D>,
        weights: &ArrayRef<A, D>,
    ) -> Result<A> {
        let e = self.element::<A>(false)?;
        let total = pixel::loss(&e, input, target, Some(weights))?;
        reduce(self.reduction, total, input.len())
    }

    /// The loss with a precomputed weight map, and its gradient with
    /// respect to `input` written into `grad`, in one pass.
    ///
    /// # Errors
    /// As [`loss_with_weights`](ShapeAwareLoss::loss_with_weights), and when
    /// `grad`'s shape differs from `input`'s.
    pub fn loss_grad_with_weights<A: Float, D: Dimension>(
        &self,
        input: &ArrayRef<A, D>,
        target: &ArrayRef<A, D>,
        weights: &ArrayRef<A, D>,
        grad: &mut ArrayRef<A, D>,
    ) -> Result<A> {
        let e = self.element::<A>(false)?;
        let scale = grad_scale(self.reduction, input.len());
        let total = pixel::loss_grad(&e, input, target, Some(weights), grad, scale)?;
        reduce(self.reduction, total, input.len())
    }

    /// The weight maps of a batch of binary targets, one per index of axis 0.
    fn maps<A: Float>(&self, target: &ArrayRef<A, IxDyn>) -> Result<Array<A, IxDyn>> {
        if target.ndim() < 2 {
            return Err(Error::BadShape {
                operand: "target",
                shape: target.shape().to_vec(),
                requirement: "the shape-aware loss needs a sample axis and at least one spatial axis",
            });
        }
        let mut maps = crate::alloc::zeros(target.raw_dim());
        for (sample, mut map) in target.outer_iter().zip(maps.outer_iter_mut()) {
            // A non-binary target is reported by the kernel's checks, with
            // its index; here it only needs to not be mistaken for a mask.
            let mask = sample.mapv(|y| y == A::one());
            map.assign(&self.weights.for_mask::<A, _>(&mask)?);
        }
        Ok(maps)
    }

    /// Plain BCE's element function with this loss's input and clip; the
    /// target must be binary when the maps come from it.
    fn element<A: Float>(&self, binary_target: bool) -> Result<BceElement<A>> {
        binary_input(self.input, "ShapeAwareLoss")?;
        let mut e = BinaryCrossEntropy::new()
            .input(self.input)
            .epsilon(self.epsilon)
            .element::<A>()?;
        e.binary_target = binary_target;
        Ok(e)
    }

    /// Checks shared by the `Loss` entry points, made before the maps are.
    fn check<A: Float, D: Dimension>(
        &self,
        input: &ArrayRef<A, D>,
        target: &ArrayRef<A, D>,
    ) -> Result<BceElement<A>> {
        same_shape("target", input, target)?;
        non_empty(input)?;
        self.element(true)
    }
}

impl<A: Float> Loss<A> for ShapeAwareLoss {
    fn loss<D: Dimension>(&self, input: &ArrayRef<A, D>, target: &ArrayRef<A, D>) -> Result<A> {
        let e = self.check(input, target)?;
        let input = input.view().into_dyn();
        let target = target.view().into_dyn();
        let maps = self.maps(&target)?;
        let total = pixel::loss(&e, &input, &target, Some(&maps))?;
        reduce(self.reduction, total, input.len())
    }

    fn loss_grad<D: Dimension>(
        &self,
        input: &ArrayRef<A, D>,
        target: &ArrayRef<A, D>,
        grad: &mut ArrayRef<A, D>,
    ) -> Result<A> {
        same_shape("grad", input, grad)?;
        let e = self.check(input, target)?;
        let scale = grad_scale(self.reduction, input.len());
        let input = input.view().into_dyn();
        let target = target.view().into_dyn();
        let maps = self.maps(&target)?;
        let mut grad = grad.view_mut().into_dyn();
        let total = pixel::loss_grad(&e, &input, &target, Some(&maps), &mut grad, scale)?;
        reduce(self.reduction, total, input.len())
    }
}
