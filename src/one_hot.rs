//! Class labels to one-hot class probabilities.

use ndarray::{Array, ArrayRef, Axis, Dimension};

use crate::error::unravel;
use crate::{Error, Float, Result};

/// One-hot encodes integer class labels, inserting the class axis at
/// position 1: `(N, d1, d2, ...)` → `(N, C, d1, d2, ...)`, with
/// `out[n, c, ...] = 1` where `labels[n, ...] == c` and 0 elsewhere.
///
/// The result is the `target` that [`CrossEntropy`](crate::CrossEntropy),
/// [`DiceLoss`](crate::DiceLoss) and the other multi-class losses take
/// with [`Input::SoftmaxLogits`](crate::Input::SoftmaxLogits) (PyTorch's
/// `F.one_hot(labels, C).movedim(-1, 1)`), in standard layout.
///
/// # Errors
///
/// [`Error::OutOfRange`] naming the first label `>= classes` (row-major
/// order) and its index; [`Error::InvalidParameter`] when `classes` is 0;
/// [`Error::BadShape`] for a 0-d `labels` (there is no axis 0 to put the
/// class axis after) or a result too large to allocate.
///
/// ```
/// use ndarray::array;
/// use segloss::one_hot;
///
/// let labels = array![[0_u32, 2], [1, 1]];
/// let target = one_hot::<f32, _>(&labels, 3)?;
/// assert_eq!(target.shape(), &[2, 3, 2]);
/// assert_eq!(target.index_axis(ndarray::Axis(0), 0), array![[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]);
///
/// let err = one_hot::<f32, _>(&labels, 2).unwrap_err();
/// assert_eq!(err.to_string(), "labels[0, 1] = 2 is outside [0, classes)");
/// # Ok::<(), segloss::Error>(())
/// ```
pub fn one_hot<A: Float, D: Dimension>(
    labels: &ArrayRef<u32, D>,
    classes: usize,
) -> Result<Array<A, D::Larger>> {
    if labels.ndim() == 0 {
        return Err(Error::BadShape {
            operand: "labels",
            shape: Vec::new(),
            requirement: "one_hot inserts the class axis after axis 0: labels need at least one axis",
        });
    }
    if classes == 0 {
        return Err(Error::InvalidParameter {
            name: "classes",
            value: 0.0,
            requirement: "must be >= 1",
        });
    }
    let too_large = || Error::BadShape {
        operand: "labels",
        shape: labels.shape().to_vec(),
        requirement: "the one-hot array of this many classes is too large to allocate",
    };
    let total = labels
        .len()
        .checked_mul(classes)
        .filter(|&n| {
            n.checked_mul(size_of::<A>())
                .is_some_and(|b| b <= isize::MAX as usize)
        })
        .ok_or_else(too_large)?;
    if labels.iter().any(|&l| l as usize >= classes) {
        let shape = labels.shape();
        if let Some((flat, &l)) = labels
            .iter()
            .enumerate()
            .find(|&(_, &l)| l as usize >= classes)
        {
            return Err(Error::OutOfRange {
                operand: "labels",
                index: unravel(flat, shape),
                value: f64::from(l),
                allowed: "[0, classes)",
            });
        }
    }
    let samples = labels.shape()[0];
    let positions = labels.len() / samples.max(1);
    let mut data = crate::alloc::zeros_vec(total);
    for (i, &l) in labels.iter().enumerate() {
        let (n, s) = (i / positions, i % positions);
        data[(n * classes + l as usize) * positions + s] = A::one();
    }
    let mut dim = labels.raw_dim().insert_axis(Axis(1));
    dim[1] = classes;
    Array::from_shape_vec(dim, data).map_err(|_| too_large())
}
