//! The boundary loss (Kervadec et al. 2019).

use ndarray::{Array, ArrayRef, Axis, Dimension, Zip};

use crate::error::unravel;
use crate::kernel::gather::{array_sum, array_sum_write};
use crate::kernel::math::Logistic;
use crate::kernel::{zip_sum, zip_sum_write};
use crate::loss::{binary_input, finite_result, non_empty, same_shape};
use crate::signed_distance::signed_distance;
use crate::{Error, Float, Input, Loss, Result};

/// The boundary loss: the predicted probabilities integrated against the
/// signed distance map of the target.
///
/// ```text
/// L = mean_x φ_G(x)·p(x),     φ_G = signed_distance(target > 0.5), per sample
/// ∂L/∂p = φ_G / M,   ∂L/∂x = φ_G·σ(x)·(1 - σ(x)) / M     (M: the element count)
/// ```
///
/// `p = σ(x)` for [`Input::Logits`] (the default) or the input for
/// [`Input::Probabilities`]; [`Input::SoftmaxLogits`] is an error (the loss
/// is binary: give each class its own channel and sigmoid). `φ_G` is the
/// [`signed_distance`](crate::distance::signed_distance) of each sample's
/// target mask (axis 0 is the sample axis; the map spans the remaining
/// axes, with unit spacing), negative inside the object and positive
/// outside, so the loss rewards probability mass inside the target and
/// penalises it by its distance outside. A sample whose target is empty or
/// full has `φ_G = 0`. Kervadec et al. pair it with a region loss (Dice)
/// whose weight decreases during training: see [`Combo`](crate::Combo).
///
/// Distance maps are usually made once per ground truth, in the data
/// pipeline: [`BoundaryLoss::loss_with_distance`] and
/// [`BoundaryLoss::loss_grad_with_distance`] take them precomputed (any
/// finite map, e.g. with anisotropic spacing).
///
/// ```
/// use ndarray::array;
/// use segloss::{BoundaryLoss, Input, Loss};
///
/// let target = array![[0.0_f64, 1.0, 1.0, 0.0, 0.0]];
/// let p = array![[0.1, 0.9, 0.8, 0.6, 0.0]];
/// let boundary = BoundaryLoss::new().input(Input::Probabilities);
/// // φ = [1, -1, -1, 1, 2]
/// let expected = (0.1 - 0.9 - 0.8 + 0.6 + 0.0) / 5.0;
/// assert!((boundary.loss(&p, &target)? - expected).abs() < 1e-15);
/// let phi = array![[1.0, -1.0, -1.0, 1.0, 2.0]];
/// assert_eq!(boundary.loss_with_distance(&p, &phi)?, boundary.loss(&p, &target)?);
/// # Ok::<(), segloss::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BoundaryLoss {
    input: Input,
}

impl BoundaryLoss {
    /// The boundary loss on logits.
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

    /// The loss against a precomputed distance map `phi` of the input's
    /// shape: `mean_x φ(x)·p(x)`.
    ///
    /// ```
    /// use ndarray::array;
    /// use segloss::{BoundaryLoss, Input, distance::signed_distance};
    ///
    /// let target = array![[false, true, true, false, false]];
    /// let phi = signed_distance(&target, None)?; // [1, -1, -1, 1, 2]
    /// let p = array![[0.0_f64, 1.0, 1.0, 0.0, 0.0]];
    /// let loss = BoundaryLoss::new().input(Input::Probabilities).loss_with_distance(&p, &phi)?;
    /// assert_eq!(loss, -2.0 / 5.0);
    /// # Ok::<(), segloss::Error>(())
    /// ```
    ///
    /// # Errors
    /// On differing shapes, an empty array, a non-finite input or map
    /// element, a probability outside `[0, 1]`, [`Input::SoftmaxLogits`],
    /// or a result that is not finite in `A`.
    pub fn loss_with_distance<A: Float, D: Dimension>(
        &self,
        input: &ArrayRef<A, D>,
        phi: &ArrayRef<A, D>,
    ) -> Result<A> {
        self.run(input, phi, None)
    }

    /// [`BoundaryLoss::loss_with_distance`] and its gradient with respect
    /// to the input, written into `grad`.
    ///
    /// # Errors
    /// As [`BoundaryLoss::loss_with_distance`], and when `grad`'s shape
    /// differs from the input's.
    pub fn loss_grad_with_distance<A: Float, D: Dimension>(
        &self,
        input: &ArrayRef<A, D>,
        phi: &ArrayRef<A, D>,
        grad: &mut ArrayRef<A, D>,
    ) -> Result<A> {
        self.run(input, phi, Some(grad))
    }

    /// The signed distance map of each sample's target.
    fn distance_map<A: Float, D: Dimension>(
        &self,
        input: &ArrayRef<A, D>,
        target: &ArrayRef<A, D>,
    ) -> Result<Array<A, D>> {
        binary_input(self.input, "BoundaryLoss")?;
        same_shape("target", input, target)?;
        non_empty(input)?;
        check_target(target)?;
        if target.ndim() == 0 {
            return Err(Error::BadShape {
                operand: "target",
                shape: Vec::new(),
                requirement: "the boundary loss needs a sample axis (axis 0)",
            });
        }
        let mut phi = crate::alloc::zeros(target.raw_dim());
        // Chunks of one sample keep the dimension type; the unit axis 0
        // does not change any distance.
        for (y, mut out) in target
            .axis_chunks_iter(Axis(0), 1)
            .zip(phi.axis_chunks_iter_mut(Axis(0), 1))
        {
            let sdf = signed_distance(&y.mapv(|v| v > A::from_f64(0.5)), None)?;
            Zip::from(&mut out)
                .and(&sdf)
                .for_each(|o, &d| *o = A::from_f64(d));
        }
        Ok(phi)
    }

    fn run<A: Float, D: Dimension>(
        &self,
        input: &ArrayRef<A, D>,
        phi: &ArrayRef<A, D>,
        grad: Option<&mut ArrayRef<A, D>>,
    ) -> Result<A> {
        binary_input(self.input, "BoundaryLoss")?;
        same_shape("phi", input, phi)?;
        if let Some(g) = &grad {
            same_shape("grad", input, g)?;
        }
        non_empty(input)?;
        let probabilities = self.input == Input::Probabilities;
        let zero = A::zero();
        let one = A::one();
        let accepts = |x: A, d: A| {
            x.is_finite() & d.is_finite() & (!probabilities | ((x >= zero) & (x <= one)))
        };
        let count = input.len();
        let scale = A::from_f64(1.0 / count as f64);
        let (total, ok) = match grad {
            None => array_sum(
                [input, phi],
                #[inline(always)]
                |_, [x, d]| {
                    zip_sum(
                        x,
                        d,
                        #[inline(always)]
                        move |x, d| {
                            let p = if probabilities {
                                x
                            } else {
                                Logistic::sigmoid(x)
                            };
                            ([d * p], accepts(x, d))
                        },
                    )
                },
            ),
            Some(grad) => {
                let element = |x: A, d: A| {
                    if probabilities {
                        (d * x, scale * d)
                    } else {
                        let l = Logistic::of(x);
                        (d * l.sigma, scale * d * l.sigma * l.sigma_c)
                    }
                };
                array_sum_write(
                    [input, phi],
                    grad,
                    #[inline(always)]
                    |_, [x, d], g| {
                        zip_sum_write(
                            x,
                            d,
                            g,
                            #[inline(always)]
                            move |x, d| {
                                let (v, dv) = element(x, d);
                                ([v], dv, accepts(x, d) & dv.is_finite())
                            },
                        )
                    },
                )
            }
        };
        if !ok {
            return Err(diagnose(probabilities, input, phi));
        }
        finite_result("the loss", total[0] / count as f64)
    }
}

/// The target must lie in `[0, 1]` (it is thresholded at 0.5).
pub(crate) fn check_target<A: Float, D: Dimension>(target: &ArrayRef<A, D>) -> Result<()> {
    let ok = |y: A| y >= A::zero() && y <= A::one();
    if target.iter().all(|&y| ok(y)) {
        return Ok(());
    }
    let (flat, &y) = target
        .iter()
        .enumerate()
        .find(|&(_, &y)| !ok(y))
        .unwrap_or((0, &A::zero()));
    Err(Error::OutOfRange {
        operand: "target",
        index: unravel(flat, target.shape()),
        value: y.as_f64(),
        allowed: "[0, 1]",
    })
}

/// The first bad element of `input` or `phi`, as an error.
fn diagnose<A: Float, D: Dimension>(
    probabilities: bool,
    input: &ArrayRef<A, D>,
    phi: &ArrayRef<A, D>,
) -> Error {
    let shape = input.shape();
    for (flat, (&x, &d)) in input.iter().zip(phi.iter()).enumerate() {
        if !x.is_finite() {
            return Error::NonFinite {
                operand: "input",
                index: unravel(flat, shape),
                value: x.as_f64(),
            };
        }
        if probabilities && !(x >= A::zero() && x <= A::one()) {
            return Error::OutOfRange {
                operand: "input",
                index: unravel(flat, shape),
                value: x.as_f64(),
                allowed: "[0, 1] (Input::Probabilities)",
            };
        }
        if !d.is_finite() {
            return Error::NonFinite {
                operand: "phi",
                index: unravel(flat, shape),
                value: d.as_f64(),
            };
        }
    }
    Error::NonFiniteResult {
        what: "an element of the gradient",
        value: f64::INFINITY,
    }
}

impl<A: Float> Loss<A> for BoundaryLoss {
    fn loss<D: Dimension>(&self, input: &ArrayRef<A, D>, target: &ArrayRef<A, D>) -> Result<A> {
        let phi = self.distance_map(input, target)?;
        self.run(input, &phi, None)
    }

    fn loss_grad<D: Dimension>(
        &self,
        input: &ArrayRef<A, D>,
        target: &ArrayRef<A, D>,
        grad: &mut ArrayRef<A, D>,
    ) -> Result<A> {
        same_shape("grad", input, grad)?;
        let phi = self.distance_map(input, target)?;
        self.run(input, &phi, Some(grad))
    }
}
