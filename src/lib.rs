#![doc = include_str!("../README.md")]

mod bce;
mod dice;
mod error;
mod float;
mod kernel;
mod loss;
mod shape_aware;

pub mod distance;

pub use bce::BinaryCrossEntropy;
pub use dice::DiceLoss;
pub use error::{Error, Result};
pub use float::Float;
pub use loss::{Input, Loss, Reduction};
pub use shape_aware::ShapeAwareLoss;
