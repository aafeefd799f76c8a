//! The [`Loss`] trait and the options every loss shares.

use ndarray::{Array, ArrayRef, Dimension};

use crate::{Error, Float, Result};

/// What a loss's `input` holds.
///
/// ```
/// use segloss::{BinaryCrossEntropy, Input};
///
/// let bce = BinaryCrossEntropy::new().input(Input::Probabilities);
/// # let _ = bce;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Input {
    /// Raw scores `x`; the loss applies the sigmoid `p = σ(x) = 1 / (1 + e^-x)`
    /// itself, in a numerically stable form, and the gradient is `∂L/∂x`.
    #[default]
    Logits,
    /// Probabilities `p` in `[0, 1]`; the gradient is `∂L/∂p`.
    Probabilities,
    /// Raw class scores `z` on axis 1 of an `(N, C, ...)` array; the loss
    /// applies the softmax `p_c = e^(z_c) / Σ_k e^(z_k)` along that axis
    /// itself (shifted by the maximum, so any finite logits work), and the
    /// gradient `∂L/∂z` goes through the softmax. For the multi-class losses:
    /// [`CrossEntropy`](crate::CrossEntropy), [`DiceLoss`](crate::DiceLoss),
    /// [`TverskyLoss`](crate::TverskyLoss) and [`FocalLoss`](crate::FocalLoss);
    /// the losses that are binary by nature return [`Error::Unsupported`].
    SoftmaxLogits,
}

/// How per-element losses are reduced to one number.
///
/// ```
/// use ndarray::array;
/// use segloss::{BinaryCrossEntropy, Loss, Reduction};
///
/// let x = array![0.0_f64, 0.0, 0.0, 0.0];
/// let y = array![1.0, 0.0, 1.0, 0.0];
/// let mean = BinaryCrossEntropy::new().loss(&x, &y)?;
/// let sum = BinaryCrossEntropy::new().reduction(Reduction::Sum).loss(&x, &y)?;
/// assert!((sum - 4.0 * mean).abs() < 1e-15 && (mean - 2f64.ln()).abs() < 1e-15);
/// # Ok::<(), segloss::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Reduction {
    /// The sum divided by the number of elements (PyTorch's `reduction='mean'`).
    #[default]
    Mean,
    /// The plain sum (PyTorch's `reduction='sum'`).
    Sum,
}

/// A differentiable loss over `ndarray` tensors of `f32` or `f64`.
///
/// `input`, `target` and `grad` must have the same shape; any memory layout
/// works, and matching contiguous layouts take a fast path. Bad input
/// returns an [`Error`] (the content of `grad` is then unspecified), never a
/// panic.
///
/// ```
/// use ndarray::array;
/// use segloss::{DiceLoss, Loss};
///
/// let logits = array![[2.0_f32, -1.0], [0.5, -3.0]];
/// let target = array![[1.0_f32, 0.0], [1.0, 0.0]];
/// let (loss, grad) = DiceLoss::new().loss_and_grad(&logits, &target)?;
/// assert!(loss > 0.0 && loss < 1.0);
/// assert_eq!(grad.shape(), logits.shape());
/// # Ok::<(), segloss::Error>(())
/// ```
pub trait Loss<A: Float> {
    /// The loss of `input` (logits or probabilities) against `target`.
    ///
    /// # Errors
    /// On differing shapes, an empty array, non-finite or out-of-range
    /// elements, invalid parameters, or a result that is not finite in `A`.
    fn loss<D: Dimension>(&self, input: &ArrayRef<A, D>, target: &ArrayRef<A, D>) -> Result<A>;

    /// The loss, and `∂(loss)/∂(input)` of that same reduced scalar written
    /// into `grad`, computed together.
    ///
    /// # Errors
    /// As [`Loss::loss`], and when `grad`'s shape differs from `input`'s.
    fn loss_grad<D: Dimension>(
        &self,
        input: &ArrayRef<A, D>,
        target: &ArrayRef<A, D>,
        grad: &mut ArrayRef<A, D>,
    ) -> Result<A>;

    /// The loss and a newly allocated gradient.
    ///
    /// # Errors
    /// As [`Loss::loss_grad`].
    fn loss_and_grad<D: Dimension>(
        &self,
        input: &ArrayRef<A, D>,
        target: &ArrayRef<A, D>,
    ) -> Result<(A, Array<A, D>)> {
        let mut grad = crate::alloc::zeros(input.raw_dim());
        let loss = self.loss_grad(input, target, &mut grad)?;
        Ok((loss, grad))
    }
}

/// Checks that `other` has the shape of `input`.
pub(crate) fn same_shape<A, B, D: Dimension>(
    operand: &'static str,
    input: &ArrayRef<A, D>,
    other: &ArrayRef<B, D>,
) -> Result<()> {
    if input.shape() == other.shape() {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            operand,
            expected: input.shape().to_vec(),
            found: other.shape().to_vec(),
        })
    }
}

/// Checks that `input` has at least one element.
pub(crate) fn non_empty<A, D: Dimension>(input: &ArrayRef<A, D>) -> Result<()> {
    if input.is_empty() {
        Err(Error::BadShape {
            operand: "input",
            shape: input.shape().to_vec(),
            requirement: "a loss needs at least one element",
        })
    } else {
        Ok(())
    }
}

/// Converts a reduced `f64` loss to `A`, or an error if it is not finite there.
pub(crate) fn finite_result<A: Float>(what: &'static str, value: f64) -> Result<A> {
    let v = A::from_f64(value);
    if v.is_finite() {
        Ok(v)
    } else {
        Err(Error::NonFiniteResult { what, value })
    }
}

/// Converts a parameter to `A`, or an error if it overflows there.
pub(crate) fn param_as<A: Float>(name: &'static str, value: f64) -> Result<A> {
    let v = A::from_f64(value);
    if v.is_finite() {
        Ok(v)
    } else {
        Err(Error::InvalidParameter {
            name,
            value,
            requirement: "must be finite in the element type",
        })
    }
}

/// Rejects [`Input::SoftmaxLogits`] for a loss that is binary by nature
/// (`loss` names it in the message).
pub(crate) fn binary_input(input: Input, loss: &'static str) -> Result<()> {
    if input == Input::SoftmaxLogits {
        Err(Error::Unsupported {
            loss,
            option: "input",
            reason: "Input::SoftmaxLogits is for the multi-class losses, and this loss is \
                     binary: use Input::Logits or Input::Probabilities",
        })
    } else {
        Ok(())
    }
}

/// Checks a list of class weights: `expected` entries, each finite and `>= 0`.
pub(crate) fn check_class_weights(weights: &[f64], expected: usize) -> Result<()> {
    if weights.len() != expected {
        return Err(Error::InvalidLength {
            name: "class_weights",
            expected,
            found: weights.len(),
        });
    }
    for &w in weights {
        crate::error::check_param(
            "class_weights",
            w,
            w >= 0.0,
            "every class weight must be finite and >= 0",
        )?;
    }
    Ok(())
}

/// `ln(cosh(v))` without overflow, and its derivative `tanh(v)`.
pub(crate) fn log_cosh(v: f64) -> (f64, f64) {
    let a = v.abs();
    (
        a + (-2.0 * a).exp().ln_1p() - std::f64::consts::LN_2,
        v.tanh(),
    )
}
