#![doc = include_str!("../README.md")]

pub mod alloc;
mod bce;
mod boundary;
mod combo;
mod cross_entropy;
mod dice;
mod error;
mod float;
mod focal;
mod hausdorff;
mod kernel;
mod loss;
mod one_hot;
mod shape_aware;
mod signed_distance;
#[cfg(test)]
mod test_rng;
mod tversky;

pub mod distance;

pub use bce::BinaryCrossEntropy;
pub use boundary::BoundaryLoss;
pub use combo::Combo;
pub use cross_entropy::CrossEntropy;
pub use dice::DiceLoss;
pub use error::{Error, Result};
pub use float::Float;
pub use focal::FocalLoss;
pub use hausdorff::HausdorffDtLoss;
pub use loss::{Input, Loss, Reduction};
pub use one_hot::one_hot;
pub use shape_aware::ShapeAwareLoss;
pub use tversky::TverskyLoss;
