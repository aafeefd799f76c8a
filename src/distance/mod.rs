//! Distance transforms, connected components and the U-Net weight map.
//!
//! The module is one pipeline whose every step is public:
//!
//! ```text
//! mask ─ label_components ─▶ labels ─ two_nearest ─▶ (d1, d2) ─ UNetWeights ─▶ weight map
//!   └── distance_to / squared_distance_to: exact Euclidean distance transform
//! ```
//!
//! All functions take any number of dimensions, accept arrays in any memory
//! layout, and accept empty arrays (returning empty ones). Distances are in
//! the units of `spacing`, the physical step along each axis (1 by default).
//!
//! # Example
//!
//! ```
//! use ndarray::array;
//! use segloss::distance::{distance_to, label_components, Connectivity};
//!
//! let mask = array![[true, false, false], [false, false, true]];
//! let d = distance_to(&mask, Some(&[2.0, 1.0]))?;
//! assert_eq!(d, array![[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]]);
//!
//! let (labels, n) = label_components(&mask, Connectivity::Full);
//! assert_eq!((labels, n), (array![[1_u32, 0, 0], [0, 0, 2]], 2));
//! # Ok::<(), segloss::Error>(())
//! ```

mod edt;
mod label;
mod nearest;
mod unet;

use std::borrow::Cow;

use ndarray::{Array, ArrayRef, Dimension};

use crate::{Error, Result};

pub use crate::signed_distance::signed_distance;
pub use unet::{ClassWeights, UNetWeights};

/// Which elements count as neighbours when grouping a mask into instances.
///
/// | | 2-D | 3-D | d-D |
/// |---|---|---|---|
/// | `Face` | 4 | 6 | `2·d` (elements sharing a face) |
/// | `Full` | 8 | 26 | `3^d - 1` (sharing a face, an edge or a corner) |
///
/// `Face` is SciPy's default structuring element for `ndimage.label` and
/// scikit-image's `connectivity=1`; `Full` is scikit-image's default
/// (`connectivity=ndim`) and the default of [`UNetWeights`].
///
/// ```
/// use ndarray::array;
/// use segloss::distance::{Connectivity, label_components};
///
/// // Two pixels touching at a corner.
/// let mask = array![[true, false], [false, true]];
/// assert_eq!(label_components(&mask, Connectivity::Face).1, 2);
/// assert_eq!(label_components(&mask, Connectivity::Full).1, 1);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Connectivity {
    /// Neighbours differ by one step along exactly one axis.
    Face,
    /// Neighbours differ by at most one step along every axis.
    Full,
}

/// Checks `spacing` against an array with `ndim` axes and returns the steps
/// (all 1 when `None`).
pub(crate) fn check_spacing(spacing: Option<&[f64]>, ndim: usize) -> Result<Vec<f64>> {
    match spacing {
        None => Ok(vec![1.0; ndim]),
        Some(steps) => {
            if steps.len() != ndim {
                return Err(Error::InvalidLength {
                    name: "spacing",
                    expected: ndim,
                    found: steps.len(),
                });
            }
            for &h in steps {
                crate::error::check_param(
                    "spacing",
                    h,
                    h > 0.0,
                    "every step must be finite and > 0",
                )?;
            }
            Ok(steps.to_vec())
        }
    }
}

/// The squared Euclidean distance from every element to the nearest element
/// where `mask` is true.
///
/// ```text
/// D²(x) = min over y with mask(y) of Σ_a (h_a·(x_a - y_a))²
/// ```
///
/// with `h` the `spacing` (1 along every axis when `None`). `D²` is 0 on the
/// mask and `+∞` everywhere when the mask has no true element. The values
/// are exact sums of squares: with unit spacing they are integers, exactly.
///
/// # Algorithm and complexity
///
/// Separable and exact: a two-way running count along axis 0, then the lower
/// envelope of parabolas (Felzenszwalb & Huttenlocher 2012) along each other
/// axis. `O(N·d)` time for `N` elements in `d` dimensions, `O(N)` memory (the
/// output plus one buffer of a few lines). With the `rayon` feature, from
/// 2^17 elements, in parallel over chunks of rows of axis 0 fixed by the
/// shape, with the same result whatever the thread count (and two rows of
/// axis 0 per chunk of at least four more memory).
///
/// # Errors
///
/// [`Error::InvalidLength`] when `spacing` does not have one entry per axis,
/// [`Error::InvalidParameter`] when a step is not finite and `> 0`.
///
/// # Example
///
/// ```
/// use ndarray::array;
/// use segloss::distance::squared_distance_to;
///
/// let mask = array![[false, false, false], [false, false, true]];
/// let d2 = squared_distance_to(&mask, None)?;
/// assert_eq!(d2, array![[5.0, 2.0, 1.0], [4.0, 1.0, 0.0]]);
/// # Ok::<(), segloss::Error>(())
/// ```
pub fn squared_distance_to<D: Dimension>(
    mask: &ArrayRef<bool, D>,
    spacing: Option<&[f64]>,
) -> Result<Array<f64, D>> {
    edt_array(mask, spacing, false)
}

/// The elements of `array` in row-major order: borrowed when it is in
/// standard layout, copied otherwise.
pub(crate) fn row_major<T: Clone, D: Dimension>(array: &ArrayRef<T, D>) -> Cow<'_, [T]> {
    match array.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(array.iter().cloned().collect()),
    }
}

/// [`squared_distance_to`], or its square root when `sqrt`.
fn edt_array<D: Dimension>(
    mask: &ArrayRef<bool, D>,
    spacing: Option<&[f64]>,
    sqrt: bool,
) -> Result<Array<f64, D>> {
    let spacing = check_spacing(spacing, mask.ndim())?;
    let bools = row_major(mask);
    let mut out = crate::alloc::zeros(mask.raw_dim());
    let shape = out.shape().to_vec();
    // A freshly allocated array is in standard layout: the slice exists.
    if let Some(data) = out.as_slice_mut() {
        edt::edt(&bools, data, &shape, &spacing, sqrt);
    }
    Ok(out)
}

/// The Euclidean distance from every element to the nearest element where
/// `mask` is true: the square root of [`squared_distance_to`].
///
/// 0 on the mask, `+∞` everywhere when the mask has no true element; equal to
/// SciPy's `ndimage.distance_transform_edt(~mask, sampling=spacing)`
/// whenever the mask has a true element.
///
/// # Complexity
///
/// As [`squared_distance_to`]: `O(N·d)` time, `O(N)` memory.
///
/// # Errors
///
/// As [`squared_distance_to`].
///
/// # Example
///
/// ```
/// use ndarray::array;
/// use segloss::distance::distance_to;
///
/// let mask = array![[true, false], [false, false]];
/// let d = distance_to(&mask, Some(&[3.0, 4.0]))?;
/// assert_eq!(d, array![[0.0, 4.0], [3.0, 5.0]]);
///
/// let empty = distance_to(&array![false, false], None)?;
/// assert!(empty.iter().all(|d| d.is_infinite()));
/// # Ok::<(), segloss::Error>(())
/// ```
pub fn distance_to<D: Dimension>(
    mask: &ArrayRef<bool, D>,
    spacing: Option<&[f64]>,
) -> Result<Array<f64, D>> {
    edt_array(mask, spacing, true)
}

/// Labels the connected components of `mask`: 0 on the background, the
/// components numbered `1..=n` in the row-major order of their first
/// element. Returns the labels and `n`.
///
/// Two true elements are connected when a path of true elements, each a
/// neighbour of the next under `connectivity`, joins them. The numbering is
/// that of SciPy's `ndimage.label` and scikit-image's `measure.label`.
///
/// # Algorithm and complexity
///
/// One raster scan with union-find over the neighbours already visited
/// (union by smallest label, path halving), then one relabelling pass.
/// `O(N·k)` time with `k` the number of neighbours (`d` for `Face`,
/// `(3^d - 1)/2` for `Full`, counting only axes longer than 1), `O(N)` memory.
///
/// More than `u32::MAX - 1` provisional labels (over 4·10⁹ foreground
/// elements) cannot be represented; such a mask is not supported.
///
/// # Example
///
/// ```
/// use ndarray::array;
/// use segloss::distance::{label_components, Connectivity};
///
/// let mask = array![
///     [true, false, true],
///     [false, true, false],
/// ];
/// let (labels, n) = label_components(&mask, Connectivity::Face);
/// assert_eq!(n, 3);
/// assert_eq!(labels, array![[1_u32, 0, 2], [0, 3, 0]]);
///
/// let (labels, n) = label_components(&mask, Connectivity::Full);
/// assert_eq!(n, 1);
/// assert_eq!(labels, array![[1_u32, 0, 1], [0, 1, 0]]);
/// ```
pub fn label_components<D: Dimension>(
    mask: &ArrayRef<bool, D>,
    connectivity: Connectivity,
) -> (Array<u32, D>, usize) {
    let bools = row_major(mask);
    let mut out = crate::alloc::zeros(mask.raw_dim());
    let shape = out.shape().to_vec();
    let n = match out.as_slice_mut() {
        Some(data) => label::label_in_place(&bools, &shape, connectivity, data),
        None => 0,
    };
    (out, n)
}

/// The distances `d1` and `d2` from every element to the nearest and the
/// second-nearest *distinct* instance of `labels`.
///
/// ```text
/// D_k(x) = distance from x to the nearest element with label k   (0 inside k)
/// d1(x)  = min over k > 0 of D_k(x)
/// d2(x)  = min over k > 0, k ≠ argmin of D_k(x)
/// ```
///
/// Label 0 is the background; every positive value is one instance (not
/// necessarily connected). `d1` and `d2` are `+∞` where fewer than one or
/// two instances exist. Values of `d2` larger than `max_distance` are
/// reported as `+∞` (the cut-off that lets the sweep skip far-away work);
/// every finite value is exact, and `d1` is always exact.
/// `f64::INFINITY` asks for exact values everywhere.
///
/// # Algorithm and complexity
///
/// One separable sweep that carries, per element, the two best
/// `(squared distance, label)` pairs with distinct labels (see the module
/// `nearest.rs`): a two-way scan along axis 0, then two lower envelopes of
/// parabolas per line along each other axis, the second one restricted to a
/// window of `max_distance` around each run of equal nearest label. With a
/// finite `max_distance` R, `O(N·d·(1 + R/L))` time where `L` is the typical
/// run length, independent of the number of instances; with `R = ∞`, up to
/// `O(N·d·r)` with `r` the number of runs per line. `O(N)` memory.
///
/// # Errors
///
/// [`Error::InvalidParameter`] for a NaN or negative `max_distance` and as
/// [`squared_distance_to`] for `spacing`.
///
/// # Example
///
/// ```
/// use ndarray::array;
/// use segloss::distance::two_nearest;
///
/// let labels = array![[1_u32, 0, 0, 2, 2]];
/// let (d1, d2) = two_nearest(&labels, None, f64::INFINITY)?;
/// assert_eq!(d1, array![[0.0, 1.0, 1.0, 0.0, 0.0]]);
/// assert_eq!(d2, array![[3.0, 2.0, 2.0, 3.0, 4.0]]);
/// # Ok::<(), segloss::Error>(())
/// ```
pub fn two_nearest<D: Dimension>(
    labels: &ArrayRef<u32, D>,
    spacing: Option<&[f64]>,
    max_distance: f64,
) -> Result<(Array<f64, D>, Array<f64, D>)> {
    let spacing = check_spacing(spacing, labels.ndim())?;
    if max_distance.is_nan() || max_distance < 0.0 {
        return Err(Error::InvalidParameter {
            name: "max_distance",
            value: max_distance,
            requirement: "must be >= 0 (+inf allowed)",
        });
    }
    let flat = row_major(labels);
    let pairs = nearest::two_nearest_pairs(
        &flat,
        labels.shape(),
        &spacing,
        max_distance,
        nearest::Need::All,
    );
    let mut d1 = crate::alloc::zeros(labels.raw_dim());
    let mut d2 = crate::alloc::zeros(labels.raw_dim());
    // Fresh arrays iterate in row-major order, as `pairs` is stored.
    for ((a, b), p) in d1.iter_mut().zip(d2.iter_mut()).zip(&pairs) {
        *a = p.d1.sqrt();
        let second = p.d2.sqrt();
        *b = if second <= max_distance {
            second
        } else {
            f64::INFINITY
        };
    }
    Ok((d1, d2))
}
