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
}

/// How per-element losses are reduced to one number.
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
        let mut grad = Array::zeros(input.raw_dim());
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
