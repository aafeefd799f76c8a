//! A weighted sum of two losses.

use ndarray::{ArrayRef, Dimension, Zip};

use crate::error::check_param;
use crate::loss::{finite_result, param_as, same_shape};
use crate::{Float, Loss, Result};

/// The weighted sum of two losses, `L = wa·L_a + wb·L_b`, and likewise its
/// gradient `wa·∂L_a + wb·∂L_b`.
///
/// Any two [`Loss`] values combine; nest `Combo`s for more terms. Dice plus
/// cross-entropy on softmax logits is MONAI's `DiceCELoss`
/// (`lambda_dice`, `lambda_ce` are the weights); Dice plus BCE on sigmoid
/// logits is the usual binary "combo" loss. Both weights must be finite and
/// `≥ 0`; the default is `(1, 1)`.
///
/// ```
/// use ndarray::{Array3, Array4};
/// use segloss::{one_hot, Combo, CrossEntropy, DiceLoss, Input, Loss};
///
/// let logits = Array4::<f64>::from_shape_fn((2, 3, 4, 4), |(n, c, i, j)| {
///     ((n + 2 * c + i * j) as f64).sin()
/// });
/// let labels = Array3::<u32>::from_shape_fn((2, 4, 4), |(_, i, j)| ((i + j) % 3) as u32);
/// let target = one_hot::<f64, _>(&labels, 3)?;
/// // MONAI's DiceCELoss(softmax=True, squared_pred=True, lambda_dice=0.7, lambda_ce=0.3)
/// let dice = DiceLoss::new().input(Input::SoftmaxLogits).per_class(true);
/// let dice_ce = Combo::new(dice.clone(), CrossEntropy::new()).weights(0.7, 0.3);
/// let (loss, grad) = dice_ce.loss_and_grad(&logits, &target)?;
/// let expected = 0.7 * dice.loss(&logits, &target)? + 0.3 * CrossEntropy::new().loss(&logits, &target)?;
/// assert!((loss - expected).abs() < 1e-12);
/// assert_eq!(grad.shape(), logits.shape());
/// # Ok::<(), segloss::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Combo<La, Lb> {
    a: La,
    b: Lb,
    weight_a: f64,
    weight_b: f64,
}

impl<La: Default, Lb: Default> Default for Combo<La, Lb> {
    fn default() -> Self {
        Self::new(La::default(), Lb::default())
    }
}

impl<La, Lb> Combo<La, Lb> {
    /// `a + b`: both weights 1.
    ///
    /// ```
    /// use ndarray::array;
    /// use segloss::{BinaryCrossEntropy, Combo, DiceLoss, Loss};
    ///
    /// let x = array![[2.0_f64, -1.0, 0.5]];
    /// let y = array![[1.0, 0.0, 1.0]];
    /// let combo = Combo::new(DiceLoss::new(), BinaryCrossEntropy::new()).weights(1.0, 0.5);
    /// let (loss, grad) = combo.loss_and_grad(&x, &y)?;
    /// let (dice, g_dice) = DiceLoss::new().loss_and_grad(&x, &y)?;
    /// let (bce, g_bce) = BinaryCrossEntropy::new().loss_and_grad(&x, &y)?;
    /// assert!((loss - (dice + 0.5 * bce)).abs() < 1e-15);
    /// assert!((&grad - &(g_dice + g_bce * 0.5)).iter().all(|d| d.abs() < 1e-15));
    /// # Ok::<(), segloss::Error>(())
    /// ```
    pub fn new(a: La, b: Lb) -> Self {
        Self {
            a,
            b,
            weight_a: 1.0,
            weight_b: 1.0,
        }
    }

    /// The weights `wa, wb ≥ 0` of the two losses. Default: `(1, 1)`.
    #[must_use]
    pub fn weights(mut self, weight_a: f64, weight_b: f64) -> Self {
        self.weight_a = weight_a;
        self.weight_b = weight_b;
        self
    }

    /// The first loss.
    pub fn first(&self) -> &La {
        &self.a
    }

    /// The second loss.
    pub fn second(&self) -> &Lb {
        &self.b
    }

    fn check_weights(&self) -> Result<()> {
        check_param(
            "weight_a",
            self.weight_a,
            self.weight_a >= 0.0,
            "must be >= 0",
        )?;
        check_param(
            "weight_b",
            self.weight_b,
            self.weight_b >= 0.0,
            "must be >= 0",
        )
    }
}

impl<A: Float, La: Loss<A>, Lb: Loss<A>> Loss<A> for Combo<La, Lb> {
    fn loss<D: Dimension>(&self, input: &ArrayRef<A, D>, target: &ArrayRef<A, D>) -> Result<A> {
        self.check_weights()?;
        let la = self.a.loss(input, target)?.as_f64();
        let lb = self.b.loss(input, target)?.as_f64();
        finite_result("the loss", self.weight_a * la + self.weight_b * lb)
    }

    fn loss_grad<D: Dimension>(
        &self,
        input: &ArrayRef<A, D>,
        target: &ArrayRef<A, D>,
        grad: &mut ArrayRef<A, D>,
    ) -> Result<A> {
        self.check_weights()?;
        same_shape("grad", input, grad)?;
        let wa: A = param_as("weight_a", self.weight_a)?;
        let wb: A = param_as("weight_b", self.weight_b)?;
        let la = self.a.loss_grad(input, target, grad)?.as_f64();
        let mut other = crate::alloc::zeros(input.raw_dim());
        let lb = self.b.loss_grad(input, target, &mut other)?.as_f64();
        let loss = finite_result("the loss", self.weight_a * la + self.weight_b * lb)?;
        let mut ok = true;
        Zip::from(grad).and(&other).for_each(|g, &o| {
            *g = wa * *g + wb * o;
            ok &= g.is_finite();
        });
        if ok {
            Ok(loss)
        } else {
            Err(crate::Error::NonFiniteResult {
                what: "an element of the gradient",
                value: f64::INFINITY,
            })
        }
    }
}
