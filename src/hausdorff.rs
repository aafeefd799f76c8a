//! The Hausdorff-distance loss of Karimi & Salcudean (2019), with distance
//! transforms.

use ndarray::{Array, ArrayRef, Axis, Dimension, Zip};

use crate::error::check_param;
use crate::kernel::Domain;
use crate::kernel::math::Logistic;
use crate::kernel::pixel::{self, Elementwise};
use crate::loss::{binary_input, finite_result, non_empty, same_shape};
use crate::signed_distance::boundary_distance;
use crate::{Error, Float, Input, Loss, Result};

/// The Hausdorff-distance loss with distance transforms ("HD-DT"), which
/// weighs the squared error by how far each element lies from the
/// predicted and the true boundaries.
///
/// ```text
/// L = mean_x (p(x) - g(x))²·(d_p(x)^α + d_g(x)^α)
/// ∂L/∂p = 2·(p - g)·(d_p^α + d_g^α) / M,   ∂L/∂x = ∂L/∂p·σ(x)·(1 - σ(x))   (M: element count)
/// ```
///
/// `p = σ(x)` for [`Input::Logits`] (the default) or the input for
/// [`Input::Probabilities`]; [`Input::SoftmaxLogits`] is an error. `d_g` is
/// the distance of `x` to the boundary of the target mask `g > 0.5`,
/// `distance_to(g) + distance_to(!g)`, and `d_p` the same for the mask
/// `p > 0.5`; each is 0 everywhere when its mask is empty or full. Both are
/// computed for every (sample, channel), i.e. for each index of axes 0 and
/// 1 over the remaining axes (with unit spacing), and are constants for the
/// gradient. This is MONAI's `HausdorffDTLoss` (Karimi & Salcudean 2019,
/// "Reducing the Hausdorff distance in medical image segmentation with
/// convolutional neural networks"); α defaults to 2. Targets may be soft
/// in the squared error.
///
/// ```
/// use ndarray::Array4;
/// use segloss::{HausdorffDtLoss, Loss};
///
/// let target = Array4::from_shape_fn((1, 1, 8, 8), |(_, _, i, j)| f64::from(i < 4 && j < 4));
/// let good = target.mapv(|g| if g > 0.5 { 4.0 } else { -4.0 });
/// let bad = target.mapv(|g| if g > 0.5 { -4.0 } else { 4.0 });
/// let hd = HausdorffDtLoss::new().alpha(2.0);
/// assert!(hd.loss(&good, &target)? < hd.loss(&bad, &target)?);
/// # Ok::<(), segloss::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct HausdorffDtLoss {
    input: Input,
    alpha: f64,
}

impl Default for HausdorffDtLoss {
    fn default() -> Self {
        Self {
            input: Input::Logits,
            alpha: 2.0,
        }
    }
}

impl HausdorffDtLoss {
    /// HD-DT on logits with α = 2.
    pub fn new() -> Self {
        Self::default()
    }

    /// What the input holds: [`Input::Logits`] (the default) or
    /// [`Input::Probabilities`].
    #[must_use]
    pub fn input(mut self, input: Input) -> Self {
        self.input = input;
        self
    }

    /// The exponent α ≥ 0 of the distances. Default: 2.
    #[must_use]
    pub fn alpha(mut self, alpha: f64) -> Self {
        self.alpha = alpha;
        self
    }

    /// The element function and the weights `d_p^α + d_g^α`.
    fn prepare<A: Float, D: Dimension>(
        &self,
        input: &ArrayRef<A, D>,
        target: &ArrayRef<A, D>,
    ) -> Result<(SquaredError, Array<A, D>)> {
        binary_input(self.input, "HausdorffDtLoss")?;
        check_param("alpha", self.alpha, self.alpha >= 0.0, "must be >= 0")?;
        same_shape("target", input, target)?;
        non_empty(input)?;
        if input.ndim() < 2 {
            return Err(Error::BadShape {
                operand: "input",
                shape: input.shape().to_vec(),
                requirement: "the distance maps are per (sample, channel): shape (N, C, ...)",
            });
        }
        let logits = self.input != Input::Probabilities;
        let half = A::from_f64(0.5);
        let mut weights = crate::alloc::zeros(input.raw_dim());
        let mut finite = true;
        // (1, 1, ...) chunks keep the dimension type; unit axes do not
        // change any distance.
        for ((xn, yn), mut wn) in input
            .axis_chunks_iter(Axis(0), 1)
            .zip(target.axis_chunks_iter(Axis(0), 1))
            .zip(weights.axis_chunks_iter_mut(Axis(0), 1))
        {
            for ((x, y), mut w) in xn
                .axis_chunks_iter(Axis(1), 1)
                .zip(yn.axis_chunks_iter(Axis(1), 1))
                .zip(wn.axis_chunks_iter_mut(Axis(1), 1))
            {
                let predicted = x.mapv(|v| if logits { v > A::zero() } else { v > half });
                let d_p = boundary_distance(&predicted, None)?;
                let d_g = boundary_distance(&y.mapv(|v| v > half), None)?;
                Zip::from(&mut w)
                    .and(&d_p)
                    .and(&d_g)
                    .for_each(|w, &dp, &dg| {
                        *w = A::from_f64(dp.powf(self.alpha) + dg.powf(self.alpha));
                        finite &= w.is_finite();
                    });
            }
        }
        if !finite {
            return Err(Error::NonFiniteResult {
                what: "a distance weight d_p^alpha + d_g^alpha (alpha too large for the element type)",
                value: f64::INFINITY,
            });
        }
        Ok((SquaredError { logits }, weights))
    }
}

/// `(p - g)²` with its derivative.
#[derive(Debug, Clone, Copy)]
struct SquaredError {
    logits: bool,
}

impl<A: Float> Elementwise<A> for SquaredError {
    fn domain(&self) -> Domain {
        Domain {
            probabilities: !self.logits,
            binary_target: false,
        }
    }

    #[inline(always)]
    fn value(&self, x: A, y: A) -> A {
        let p = if self.logits { Logistic::sigmoid(x) } else { x };
        (p - y) * (p - y)
    }

    #[inline(always)]
    fn value_grad(&self, x: A, y: A) -> (A, A) {
        if self.logits {
            let l = Logistic::of(x);
            let e = l.sigma - y;
            (e * e, (e + e) * l.sigma * l.sigma_c)
        } else {
            let e = x - y;
            (e * e, e + e)
        }
    }
}

impl<A: Float> Loss<A> for HausdorffDtLoss {
    fn loss<D: Dimension>(&self, input: &ArrayRef<A, D>, target: &ArrayRef<A, D>) -> Result<A> {
        let (e, weights) = self.prepare(input, target)?;
        let total = pixel::loss(&e, input, target, Some(&weights))?;
        finite_result("the loss", total / input.len() as f64)
    }

    fn loss_grad<D: Dimension>(
        &self,
        input: &ArrayRef<A, D>,
        target: &ArrayRef<A, D>,
        grad: &mut ArrayRef<A, D>,
    ) -> Result<A> {
        same_shape("grad", input, grad)?;
        let (e, weights) = self.prepare(input, target)?;
        let scale = A::from_f64(1.0 / input.len() as f64);
        let total = pixel::loss_grad(&e, input, target, Some(&weights), grad, scale)?;
        finite_result("the loss", total / input.len() as f64)
    }
}
