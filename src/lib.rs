#![doc = include_str!("../README.md")]

mod error;
mod float;

pub mod distance;

pub use error::{Error, Result};
pub use float::Float;
