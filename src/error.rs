//! The crate's error type.

use std::fmt;

/// Everything that can go wrong in `segloss`.
///
/// Every variant names what is at fault: the operand, the shape, the index
/// (row-major, one entry per axis), the value or the parameter. The crate
/// never panics on user input; it returns one of these instead.
///
/// ```
/// use ndarray::array;
/// use segloss::{BinaryCrossEntropy, Error, Loss};
///
/// let logits = array![0.5_f64, -1.0];
/// let target = array![1.0_f64, 2.0];
/// let err = BinaryCrossEntropy::new().loss(&logits, &target).unwrap_err();
/// assert!(matches!(err, Error::OutOfRange { .. }));
/// assert_eq!(err.to_string(), "target[1] = 2 is outside [0, 1]");
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// Two operands that must have the same shape do not.
    ShapeMismatch {
        /// The operand whose shape is wrong (`"target"`, `"grad"`, `"weights"`, …).
        operand: &'static str,
        /// The shape it must have (the shape of `input`, usually).
        expected: Vec<usize>,
        /// The shape it has.
        found: Vec<usize>,
    },
    /// An operand has a shape that the operation cannot use (too few axes,
    /// an empty array given to a loss, …).
    BadShape {
        /// The operand at fault.
        operand: &'static str,
        /// Its shape.
        shape: Vec<usize>,
        /// What the operation needs.
        requirement: &'static str,
    },
    /// An element is NaN or infinite where a finite number is required.
    NonFinite {
        /// The operand at fault.
        operand: &'static str,
        /// The element's index, one entry per axis.
        index: Vec<usize>,
        /// The offending value.
        value: f64,
    },
    /// An element lies outside its allowed range.
    OutOfRange {
        /// The operand at fault.
        operand: &'static str,
        /// The element's index, one entry per axis.
        index: Vec<usize>,
        /// The offending value.
        value: f64,
        /// The allowed range, written as in the docs (`"[0, 1]"`, `"{0, 1}"`, `">= 0"`).
        allowed: &'static str,
    },
    /// A configuration parameter is invalid (`pos_weight <= 0`, `sigma <= 0`, …).
    InvalidParameter {
        /// The parameter's name as the setter spells it.
        name: &'static str,
        /// The offending value.
        value: f64,
        /// What the parameter must satisfy.
        requirement: &'static str,
    },
    /// A list parameter (`spacing`, class weights) has the wrong length.
    InvalidLength {
        /// The parameter's name.
        name: &'static str,
        /// The length it must have.
        expected: usize,
        /// The length it has.
        found: usize,
    },
    /// An option that this loss does not support, or not in combination
    /// with its other options (`Input::SoftmaxLogits` on a binary loss,
    /// `Input::Logits` on cross-entropy, class weights without `per_class`).
    Unsupported {
        /// The loss (`"BinaryCrossEntropy"`, …).
        loss: &'static str,
        /// The option as its setter spells it (`"input"`, `"class_weights"`).
        option: &'static str,
        /// Why, and what to use instead.
        reason: &'static str,
    },
    /// The result is not finite in the element type (an `f32` loss that
    /// overflows under extreme but finite parameters, a Dice with a zero
    /// denominator, …).
    NonFiniteResult {
        /// What was being computed.
        what: &'static str,
        /// The value it came out as.
        value: f64,
    },
}

/// `std::result::Result` with the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Formats an index as `[i, j, k]` (`[]` for a 0-d array).
fn write_index(f: &mut fmt::Formatter<'_>, index: &[usize]) -> fmt::Result {
    f.write_str("[")?;
    for (k, i) in index.iter().enumerate() {
        if k > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{i}")?;
    }
    f.write_str("]")
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ShapeMismatch {
                operand,
                expected,
                found,
            } => write!(
                f,
                "{operand} has shape {found:?}, expected the input's shape {expected:?}"
            ),
            Error::BadShape {
                operand,
                shape,
                requirement,
            } => write!(f, "{operand} has shape {shape:?}, but {requirement}"),
            Error::NonFinite {
                operand,
                index,
                value,
            } => {
                f.write_str(operand)?;
                write_index(f, index)?;
                write!(f, " = {value} is not finite")
            }
            Error::OutOfRange {
                operand,
                index,
                value,
                allowed,
            } => {
                f.write_str(operand)?;
                write_index(f, index)?;
                write!(f, " = {value} is outside {allowed}")
            }
            Error::InvalidParameter {
                name,
                value,
                requirement,
            } => write!(f, "parameter `{name}` = {value} is invalid: {requirement}"),
            Error::InvalidLength {
                name,
                expected,
                found,
            } => write!(
                f,
                "parameter `{name}` has {found} entries, expected {expected}"
            ),
            Error::Unsupported {
                loss,
                option,
                reason,
            } => write!(
                f,
                "{loss}: option `{option}` is not supported here: {reason}"
            ),
            Error::NonFiniteResult { what, value } => write!(
                f,
                "{what} is {value}, not finite in the element type (check the parameters and the input's scale)"
            ),
        }
    }
}

impl std::error::Error for Error {}

/// Checks a scalar parameter: finite and satisfying `ok`, else
/// [`Error::InvalidParameter`] with `requirement` as the message.
pub(crate) fn check_param(
    name: &'static str,
    value: f64,
    ok: bool,
    requirement: &'static str,
) -> Result<()> {
    if value.is_finite() && ok {
        Ok(())
    } else {
        Err(Error::InvalidParameter {
            name,
            value,
            requirement,
        })
    }
}

/// Unravels a row-major flat index into one index per axis of `shape`.
pub(crate) fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for (slot, &len) in index.iter_mut().zip(shape).rev() {
        if len > 0 {
            *slot = flat % len;
            flat /= len;
        }
    }
    index
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unravel_is_row_major() {
        assert_eq!(unravel(0, &[2, 3, 4]), vec![0, 0, 0]);
        assert_eq!(unravel(5, &[2, 3, 4]), vec![0, 1, 1]);
        assert_eq!(unravel(23, &[2, 3, 4]), vec![1, 2, 3]);
        assert_eq!(unravel(0, &[]), Vec::<usize>::new());
    }

    #[test]
    fn messages_name_the_fault() {
        let e = Error::NonFinite {
            operand: "input",
            index: vec![1, 2],
            value: f64::NAN,
        };
        assert_eq!(e.to_string(), "input[1, 2] = NaN is not finite");
        let e = Error::InvalidParameter {
            name: "sigma",
            value: 0.0,
            requirement: "must be > 0",
        };
        assert_eq!(
            e.to_string(),
            "parameter `sigma` = 0 is invalid: must be > 0"
        );
    }
}
