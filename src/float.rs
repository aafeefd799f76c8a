//! The element types the crate computes in: `f32` and `f64`.

use std::fmt::{Debug, Display};
use std::iter::Sum;

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// The crate's float bound: implemented for `f32` and `f64` only.
///
/// Losses and weight maps are generic over it; parameters are stored as
/// `f64` and converted once per call with [`Float::from_f64`].
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
