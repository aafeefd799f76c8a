//! Signed distance maps and boundary distances, on top of the exact EDT.

use ndarray::{Array, ArrayRef, Dimension, Zip};

use crate::Result;
use crate::distance::{check_spacing, distance_to};

/// Whether `mask` has both a true and a false element.
fn mixed<D: Dimension>(mask: &ArrayRef<bool, D>) -> bool {
    mask.iter().any(|&m| m) && mask.iter().any(|&m| !m)
}

/// The signed distance map of `mask`: outside the mask, the distance to the
/// nearest mask element; inside, minus the distance to the nearest element
/// outside the mask.
///
/// ```text
/// φ(x) = distance_to(mask)(x) - distance_to(!mask)(x)
/// ```
///
/// so `φ > 0` outside and `φ < 0` inside (with unit spacing, the mask's own
/// boundary elements are at -1 and their outside neighbours at +1).
/// A mask that is empty or full gives 0 everywhere; an array with no
/// element gives an empty map. `spacing` is the physical step along each
/// axis, as for [`distance_to`](crate::distance::distance_to). Equals
/// SciPy's `edt(~mask, sampling) - edt(mask, sampling)`. This is the level
/// set `φ_G` of the boundary loss (Kervadec et al. 2019,
/// [`BoundaryLoss`](crate::BoundaryLoss)).
///
/// # Errors
///
/// As [`distance_to`](crate::distance::distance_to): a `spacing` of the
/// wrong length or with a step that is not finite and `> 0`.
///
/// # Example
///
/// ```
/// use ndarray::array;
/// use segloss::distance::signed_distance;
///
/// let mask = array![false, true, true, true, false, false];
/// let phi = signed_distance(&mask, None)?;
/// assert_eq!(phi, array![1.0, -1.0, -2.0, -1.0, 1.0, 2.0]);
/// assert!(signed_distance(&array![true, true], None)?.iter().all(|&d| d == 0.0));
/// # Ok::<(), segloss::Error>(())
/// ```
pub fn signed_distance<D: Dimension>(
    mask: &ArrayRef<bool, D>,
    spacing: Option<&[f64]>,
) -> Result<Array<f64, D>> {
    outside_plus(mask, spacing, -1.0)
}

/// The distance of every element to the boundary of `mask`,
/// `distance_to(mask) + distance_to(!mask)` (MONAI's `HausdorffDTLoss`
/// distance field); 0 everywhere when the mask is empty or full.
pub(crate) fn boundary_distance<D: Dimension>(
    mask: &ArrayRef<bool, D>,
    spacing: Option<&[f64]>,
) -> Result<Array<f64, D>> {
    outside_plus(mask, spacing, 1.0)
}

/// `distance_to(mask) + sign·distance_to(!mask)`: the signed distance for
/// `sign = -1`, the distance to the boundary for `sign = 1`; 0 everywhere
/// when the mask is empty or full.
fn outside_plus<D: Dimension>(
    mask: &ArrayRef<bool, D>,
    spacing: Option<&[f64]>,
    sign: f64,
) -> Result<Array<f64, D>> {
    check_spacing(spacing, mask.ndim())?;
    if !mixed(mask) {
        return Ok(crate::alloc::zeros(mask.raw_dim()));
    }
    let mut d = distance_to(mask, spacing)?;
    let inside = distance_to(&mask.mapv(|m| !m), spacing)?;
    Zip::from(&mut d)
        .and(&inside)
        .for_each(|p, &v| *p += sign * v);
    Ok(d)
}
