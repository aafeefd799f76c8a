//! The element types the crate computes in: `f32` and `f64`.

use std::fmt::{Debug, Display};
use std::iter::Sum;

pub(crate) mod sealed {
    //! The sealing supertrait of [`Float`](super::Float), which also carries
    //! the crate's vectorisable elementary functions (per type: they work
    //! on the bits of the representation). Not nameable outside the crate.

    use crate::kernel::math;

    /// Implemented for `f32` and `f64` only.
    pub trait Sealed: Copy {
        /// `ln(x)`, a few ulp from `ln`, branch-free (vectorises).
        fn fast_ln(self) -> Self;
        /// `ln(1 + x)`, a few ulp from `ln_1p`, branch-free (vectorises).
        fn fast_ln_1p(self) -> Self;
        /// `self` with the highest bit of its exponent set where `flag`.
        /// That bit is 0 in every value of magnitude below 2, so
        /// [`take_flag`](Self::take_flag) gives such a value back exactly;
        /// what it holds in between is bits, not a number to compute with.
        fn with_flag(self, flag: bool) -> Self;
        /// Whether [`with_flag`](Self::with_flag) set the bit, as 1 or 0,
        /// and `self` with it cleared. (Arithmetic on the bits: a `bool`
        /// made into 1 or 0 by a select became a table lookup, gathered.)
        fn take_flag(self) -> (Self, Self);
        /// Whether `self` is +0 (not -0): one integer compare of the bits.
        fn is_positive_zero(self) -> bool;
    }

    impl Sealed for f32 {
        #[inline(always)]
        fn fast_ln(self) -> Self {
            math::ln_f32(self)
        }
        #[inline(always)]
        fn fast_ln_1p(self) -> Self {
            math::ln_1p_f32(self)
        }
        #[inline(always)]
        fn with_flag(self, flag: bool) -> Self {
            f32::from_bits(self.to_bits() | (u32::from(flag) << 30))
        }
        #[inline(always)]
        fn take_flag(self) -> (Self, Self) {
            let (bits, flag) = (self.to_bits(), 1 << 30);
            let one = ((bits >> 30) & 1) * 1.0f32.to_bits();
            (f32::from_bits(one), f32::from_bits(bits & !flag))
        }
        #[inline(always)]
        fn is_positive_zero(self) -> bool {
            self.to_bits() == 0
        }
    }

    impl Sealed for f64 {
        #[inline(always)]
        fn fast_ln(self) -> Self {
            math::ln_f64(self)
        }
        #[inline(always)]
        fn fast_ln_1p(self) -> Self {
            math::ln_1p_f64(self)
        }
        #[inline(always)]
        fn with_flag(self, flag: bool) -> Self {
            f64::from_bits(self.to_bits() | (u64::from(flag) << 62))
        }
        #[inline(always)]
        fn take_flag(self) -> (Self, Self) {
            let (bits, flag) = (self.to_bits(), 1 << 62);
            let one = ((bits >> 62) & 1) * 1.0f64.to_bits();
            (f64::from_bits(one), f64::from_bits(bits & !flag))
        }
        #[inline(always)]
        fn is_positive_zero(self) -> bool {
            self.to_bits() == 0
        }
    }
}

/// The crate's float bound: implemented for `f32` and `f64` only.
///
/// Losses and weight maps are generic over it; parameters are stored as
/// `f64` and converted once per call with [`Float::from_f64`].
///
/// ```
/// use ndarray::Array1;
/// use segloss::{Float, Loss, DiceLoss};
///
/// // Code generic over the element type, as the crate's own.
/// fn dice_of<A: Float>(logits: &Array1<A>, target: &Array1<A>) -> segloss::Result<A> {
///     DiceLoss::new().loss(logits, target)
/// }
/// let y = Array1::from(vec![1.0, 0.0, 1.0]);
/// let x = Array1::from(vec![3.0, -2.0, 1.0]);
/// let l64 = dice_of::<f64>(&x, &y)?;
/// let l32 = dice_of::<f32>(&x.mapv(|v| v as f32), &y.mapv(|v| v as f32))?;
/// assert!((f64::from(l32) - l64).abs() < 1e-6);
/// assert_eq!(<f32 as Float>::from_f64(0.5), 0.5_f32);
/// # Ok::<(), segloss::Error>(())
/// ```
pub trait Float:
    num_traits::Float
    + num_traits::FloatConst
    + num_traits::NumAssign
    + Sum
    + Debug
    + Display
    + Default
    + Send
    + Sync
    + 'static
    + sealed::Sealed
{
    /// The value as an `f64` (exact).
    fn as_f64(self) -> f64;
    /// An `f64` rounded to the nearest value of this type (may overflow to ±∞).
    fn from_f64(value: f64) -> Self;
}

impl Float for f32 {
    #[inline(always)]
    fn as_f64(self) -> f64 {
        f64::from(self)
    }
    #[inline(always)]
    fn from_f64(value: f64) -> Self {
        value as f32
    }
}

impl Float for f64 {
    #[inline(always)]
    fn as_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn from_f64(value: f64) -> Self {
        value
    }
}
