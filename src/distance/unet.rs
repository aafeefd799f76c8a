//! The U-Net border weight map (Ronneberger et al. 2015).

use ndarray::{Array, ArrayRef, Dimension};

use super::nearest::{
    Near, Need, Pair, UnitCut, two_nearest_pairs, two_nearest_rows, two_nearest_unit,
};
use super::{Connectivity, check_spacing, label_components, row_major};
use crate::error::check_param;
use crate::kernel::math::{Fma, exp_f64};
use crate::{Error, Float, Result};

/// The class-balancing term `w_c(x)` of the U-Net weight map.
///
/// ```text
/// Uniform   w_c = 1
/// Balanced  w_c = n / (2·n_c)      n elements, n_c of them in x's class
/// Fixed     w_c = background where the label is 0, foreground elsewhere
/// ```
///
/// `Balanced` is scikit-learn's `class_weight="balanced"` over the two
/// classes background (label 0) and foreground (label > 0).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum ClassWeights {
    /// Every element weighs 1 (the default).
    #[default]
    Uniform,
    /// Each class weighs `n / (2·n_c)`: both classes carry half the total.
    Balanced,
    /// Given weights, each finite and `>= 0`.
    Fixed {
        /// The weight of background elements (label 0).
        background: f64,
        /// The weight of foreground elements (label > 0).
        foreground: f64,
    },
}

/// The U-Net weight map: class balance plus a term that peaks in the narrow
/// gaps between touching instances.
///
/// ```text
/// w(x) = w_c(x) + w0·exp(-(d1(x) + d2(x))² / (2σ²))
/// ```
///
/// `d1`, `d2` are the distances to the nearest and second-nearest instance
/// ([`two_nearest`](super::two_nearest)), in the units of `spacing`; `w_c` is
/// given by [`ClassWeights`]. The border term applies to background elements
/// (label 0) only, unless [`border_everywhere`](Self::border_everywhere); with
/// fewer than two instances it is 0. The term is cut where it falls below
/// `1e-6·w0`, that is where `d2 > σ·√(2·ln 10⁶)`: the map equals the
/// definition to `1e-6·w0` absolute.
///
/// Defaults (Ronneberger et al. 2015): `w0 = 10`, `sigma = 5`,
/// [`ClassWeights::Uniform`], border term on the background only,
/// [`Connectivity::Full`] for [`for_mask`](Self::for_mask), unit spacing.
///
/// # Complexity
///
/// `O(N·d)` time for `N` elements in `d` dimensions, independent of the
/// number of instances (one separable sweep, whose windows per line are
/// bounded by the cut-off radius), and `O(N)` memory. In 2-D on the unit
/// grid with a cut-off `R = σ·√(2·ln 10⁶)` of at most 128 steps (`σ` up
/// to about 24), the row
/// pass searches each element's window of at most `2R + 1` columns
/// directly, sixteen elements at once, from the centre out until no
/// farther column matters; the weights are those of the general sweep to
/// the last bit.
///
/// # Example
///
/// ```
/// use ndarray::array;
/// use segloss::distance::{ClassWeights, UNetWeights};
///
/// // Two cells separated by a one-pixel gap.
/// let labels = array![[1_u32, 1, 0, 2, 2]];
/// let w = UNetWeights::new()
///     .w0(10.0)
///     .sigma(5.0)
///     .class_weights(ClassWeights::Uniform)
///     .for_labels::<f64, _>(&labels)?;
/// // In the gap d1 = d2 = 1: w = 1 + 10·exp(-4/50).
/// assert!((w[[0, 2]] - (1.0 + 10.0 * (-4.0_f64 / 50.0).exp())).abs() < 1e-12);
/// // Inside the cells only w_c.
/// assert_eq!(w[[0, 0]], 1.0);
/// # Ok::<(), segloss::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct UNetWeights {
    w0: f64,
    sigma: f64,
    class_weights: ClassWeights,
    border_everywhere: bool,
    connectivity: Connectivity,
    spacing: Option<Vec<f64>>,
}

impl Default for UNetWeights {
    fn default() -> Self {
        UNetWeights {
            w0: 10.0,
            sigma: 5.0,
            class_weights: ClassWeights::Uniform,
            border_everywhere: false,
            connectivity: Connectivity::Full,
            spacing: None,
        }
    }
}

impl UNetWeights {
    /// The defaults: `w0 = 10`, `sigma = 5`, uniform class weights, border
    /// term on background only, full connectivity, unit spacing.
    pub fn new() -> Self {
        Self::default()
    }

    /// The amplitude `w0` of the border term, finite and `>= 0` (default 10).
    #[must_use]
    pub fn w0(mut self, w0: f64) -> Self {
        self.w0 = w0;
        self
    }

    /// The width `σ` of the border term in the units of `spacing`, finite
    /// and `> 0` (default 5).
    #[must_use]
    pub fn sigma(mut self, sigma: f64) -> Self {
        self.sigma = sigma;
        self
    }

    /// The class-balancing term `w_c` (default [`ClassWeights::Uniform`]).
    #[must_use]
    pub fn class_weights(mut self, class_weights: ClassWeights) -> Self {
        self.class_weights = class_weights;
        self
    }

    /// Whether the border term also applies inside instances (default
    /// `false`: background elements only, as in the U-Net paper).
    #[must_use]
    pub fn border_everywhere(mut self, everywhere: bool) -> Self {
        self.border_everywhere = everywhere;
        self
    }

    /// The connectivity [`for_mask`](Self::for_mask) labels instances with
    /// (default [`Connectivity::Full`]).
    #[must_use]
    pub fn connectivity(mut self, connectivity: Connectivity) -> Self {
        self.connectivity = connectivity;
        self
    }

    /// The physical step along each axis, one finite positive entry per axis
    /// of the labels (default: 1 along every axis).
    #[must_use]
    pub fn spacing(mut self, spacing: Vec<f64>) -> Self {
        self.spacing = Some(spacing);
        self
    }

    /// The weight map of an instance labelling (0: background, each positive
    /// value one instance, not necessarily connected or consecutive).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] for `sigma <= 0`, `w0 < 0`, a non-finite
    /// parameter or a non-positive or non-finite spacing step;
    /// [`Error::InvalidLength`] for a spacing whose length is not the number
    /// of axes; [`Error::NonFinite`] / [`Error::OutOfRange`] for a NaN,
    /// infinite or negative fixed class weight; [`Error::NonFiniteResult`]
    /// when the largest possible weight overflows `A`.
    ///
    /// # Example
    ///
    /// ```
    /// use ndarray::array;
    /// use segloss::distance::{ClassWeights, UNetWeights};
    ///
    /// let labels = array![[0_u32, 0, 1, 1]];
    /// let w = UNetWeights::new()
    ///     .class_weights(ClassWeights::Balanced)
    ///     .for_labels::<f32, _>(&labels)?;
    /// // One instance: no border term, each class weighs 4 / (2·2) = 1.
    /// assert_eq!(w, array![[1.0_f32, 1.0, 1.0, 1.0]]);
    /// # Ok::<(), segloss::Error>(())
    /// ```
    pub fn for_labels<A: Float, D: Dimension>(
        &self,
        labels: &ArrayRef<u32, D>,
    ) -> Result<Array<A, D>> {
        self.compute(labels, None)
    }

    /// The weight map of a binary mask: its connected components
    /// ([`label_components`] with [`connectivity`](Self::connectivity)) are
    /// the instances, then as [`for_labels`](Self::for_labels).
    ///
    /// # Errors
    ///
    /// As [`for_labels`](Self::for_labels).
    ///
    /// # Example
    ///
    /// ```
    /// use ndarray::array;
    /// use segloss::distance::UNetWeights;
    ///
    /// let mask = array![[true, false, true]];
    /// let w = UNetWeights::new().sigma(1.0).for_mask::<f64, _>(&mask)?;
    /// // The gap is one pixel from each of the two cells.
    /// assert!((w[[0, 1]] - (1.0 + 10.0 * (-2.0_f64).exp())).abs() < 1e-12);
    /// # Ok::<(), segloss::Error>(())
    /// ```
    pub fn for_mask<A: Float, D: Dimension>(
        &self,
        mask: &ArrayRef<bool, D>,
    ) -> Result<Array<A, D>> {
        self.check(mask.ndim())?;
        let (labels, count) = label_components(mask, self.connectivity);
        self.compute(&labels, Some(count))
    }

    /// Validates every parameter for an array with `ndim` axes.
    fn check(&self, ndim: usize) -> Result<Vec<f64>> {
        check_param("w0", self.w0, self.w0 >= 0.0, "must be finite and >= 0")?;
        check_param(
            "sigma",
            self.sigma,
            self.sigma > 0.0,
            "must be finite and > 0",
        )?;
        if let ClassWeights::Fixed {
            background,
            foreground,
        } = self.class_weights
        {
            for (index, value) in [background, foreground].into_iter().enumerate() {
                if !value.is_finite() {
                    return Err(Error::NonFinite {
                        operand: "class_weights",
                        index: vec![index],
                        value,
                    });
                }
                if value < 0.0 {
                    return Err(Error::OutOfRange {
                        operand: "class_weights",
                        index: vec![index],
                        value,
                        allowed: ">= 0",
                    });
                }
            }
        }
        check_spacing(self.spacing.as_deref(), ndim)
    }

    /// The map; `count` is the number of instances when known (`for_mask`).
    fn compute<A: Float, D: Dimension>(
        &self,
        labels: &ArrayRef<u32, D>,
        count: Option<usize>,
    ) -> Result<Array<A, D>> {
        let spacing = self.check(labels.ndim())?;
        let n = labels.len();
        let flat = row_major(labels);
        let flat: &[u32] = &flat;
        // Class sizes and whether two distinct instances exist, in one pass
        // unless the count is known and the weights need no sizes.
        let (mut foreground, mut two) = (0usize, count.map(|c| c >= 2));
        if two.is_none() || self.class_weights == ClassWeights::Balanced {
            let mut first = 0u32;
            let mut distinct = false;
            for &l in flat {
                if l != 0 {
                    foreground += 1;
                    if first == 0 {
                        first = l;
                    } else if l != first {
                        distinct = true;
                    }
                }
            }
            two.get_or_insert(distinct);
        }
        let (wc_bg, wc_fg) = match self.class_weights {
            ClassWeights::Uniform => (1.0, 1.0),
            ClassWeights::Fixed {
                background,
                foreground,
            } => (background, foreground),
            ClassWeights::Balanced => {
                let half = n as f64 / 2.0;
                let background = n - foreground;
                (
                    if background > 0 {
                        half / background as f64
                    } else {
                        0.0
                    },
                    if foreground > 0 {
                        half / foreground as f64
                    } else {
                        0.0
                    },
                )
            }
        };
        let largest = wc_bg.max(wc_fg) + if two == Some(true) { self.w0 } else { 0.0 };
        if !A::from_f64(largest).is_finite() {
            return Err(Error::NonFiniteResult {
                what: "the largest weight of the map",
                value: largest,
            });
        }
        let (bg, fg) = (A::from_f64(wc_bg), A::from_f64(wc_fg));
        if two != Some(true) || self.w0 == 0.0 {
            return Ok(labels.map(|&l| if l == 0 { bg } else { fg }));
        }

        // The term is below 1e-6·w0 once d1 + d2 > σ·√(2·ln 10⁶), which
        // d2 > R implies.
        let reach = self.sigma * (2.0 * 1e6_f64.ln()).sqrt();
        let need = Need::Border {
            everywhere: self.border_everywhere,
        };
        let terms = Terms {
            class: [wc_bg, wc_fg],
            w0: self.w0,
            scale: -1.0 / (2.0 * self.sigma * self.sigma),
        };
        let everywhere = self.border_everywhere;
        let fill = |w: &mut [A], l: &[u32], p: &[Pair]| {
            fill_weights(w, l, p, terms, everywhere);
        };
        // Each is row-major like `flat`.
        let shape = labels.shape();
        let data = match (shape, &spacing[..], UnitCut::new(reach)) {
            // 2-D on the unit grid: whole squared distances, only the
            // elements that keep a term come back, first row first.
            (&[n0, n1], &[1.0, 1.0], Some(cut)) if n1 > 1 => {
                let mut data = crate::alloc::with_capacity(n);
                let roots = (0..=cut.cut())
                    .map(|d| f64::from(d).sqrt())
                    .collect::<Vec<_>>();
                two_nearest_unit(flat, [n0, n1], cut, everywhere, |r, near| {
                    let at = r * n1;
                    let row = &flat[at..at + n1];
                    push_row(&mut data, row, near, &roots, terms);
                });
                data
            }
            // 2-D (with rows to sweep): a row at a time, its weights while
            // its pairs are in cache. Its column counts are `u32`.
            (&[n0, n1], &[h0, h1], _) if n1 > 1 && n0 < u32::MAX as usize => {
                let mut data = crate::alloc::filled(bg, n);
                two_nearest_rows(flat, [n0, n1], [h0, h1], reach, everywhere, |r, p| {
                    let at = r * n1;
                    fill(&mut data[at..at + n1], &flat[at..at + n1], p);
                });
                data
            }
            _ => {
                let mut data = crate::alloc::filled(bg, n);
                fill(
                    &mut data,
                    flat,
                    &two_nearest_pairs(flat, shape, &spacing, reach, need),
                );
                data
            }
        };
        Array::from_shape_vec(labels.raw_dim(), data).map_err(|_| Error::BadShape {
            operand: "labels",
            shape: labels.shape().to_vec(),
            requirement: "a shape whose element count fits in memory",
        })
    }
}

/// The arithmetic of a weight: the class weight `class[0]` (background)
/// or `class[1]`, plus `w0·exp(scale·(d1 + d2)²)` where the border term
/// applies.
#[derive(Debug, Clone, Copy)]
struct Terms {
    class: [f64; 2],
    w0: f64,
    scale: f64,
}

impl Terms {
    /// The class weight of label `l`.
    #[inline(always)]
    fn class(&self, l: u32) -> f64 {
        self.class[Terms::index(l)]
    }

    /// The class weights in the element type, background first: index
    /// them with [`Terms::index`].
    fn classes_as<A: Float>(&self) -> [A; 2] {
        self.class.map(A::from_f64)
    }

    /// The index of label `l`'s class: 0 for the background, else 1.
    #[inline(always)]
    fn index(l: u32) -> usize {
        usize::from(l != 0)
    }

    /// The exponent of the border term at the squared distances `d1` and
    /// `d2`, clamped so that the exponential never goes subnormal (slow on
    /// most CPUs; a term that small is dropped anyway).
    #[inline(always)]
    fn exponent(&self, d1: f64, d2: f64) -> f64 {
        self.exponent_of_roots(d1.sqrt(), d2.sqrt())
    }

    /// [`Terms::exponent`] from the distances (not squared).
    #[inline(always)]
    fn exponent_of_roots(&self, r1: f64, r2: f64) -> f64 {
        let s = r1 + r2;
        (self.scale * s * s).max(-700.0)
    }

    /// The weight of label `l` with the border term's exponential `e`.
    #[inline(always)]
    fn weight<A: Float>(&self, l: u32, e: f64) -> A {
        A::from_f64(self.class(l) + self.w0 * e)
    }
}

/// Elements per chunk of the exponentials, taken a chunk at a time in a
/// loop of their own, without branches, so that it vectorises.
const CHUNK: usize = 64;

/// The weights of the elements with labels `l` and pairs `p` into `w`: the
/// class weight, plus the border term where the sweep kept a `d2` and the
/// term applies (only background elements unless `everywhere`).
fn fill_weights<A: Float>(w: &mut [A], l: &[u32], p: &[Pair], terms: Terms, everywhere: bool) {
    // Where the sweep kept no d2 the term is below 1e-6·w0 or does not
    // apply. Chunks where no element keeps a term (inside instances, far
    // background) skip the exponentials.
    let class = terms.classes_as::<A>();
    let mut arg = [0.0f64; CHUNK];
    let keep = |l: u32, p: &Pair| p.d2 < f64::INFINITY && (everywhere || l == 0);
    for ((w, l), p) in w
        .chunks_mut(CHUNK)
        .zip(l.chunks(CHUNK))
        .zip(p.chunks(CHUNK))
    {
        let mut any = false;
        for ((a, &l), p) in arg.iter_mut().zip(l).zip(p) {
            *a = terms.exponent(p.d1, p.d2);
            any |= keep(l, p);
        }
        if !any {
            for (w, &l) in w.iter_mut().zip(l) {
                *w = class[Terms::index(l)];
            }
            continue;
        }
        for a in arg.iter_mut() {
            *a = exp_f64(*a, Fma::Off);
        }
        for (((w, &l), p), &e) in w.iter_mut().zip(l).zip(p).zip(&arg) {
            *w = terms.weight(l, if keep(l, p) { e } else { 0.0 });
        }
    }
}

/// Appends to `w` the weights of one row with labels `l`: the class weight,
/// plus the border term at the elements `near` (whole squared distances),
/// with the arithmetic of [`fill_weights`]; `roots[d]` is `√d` for every
/// squared distance up to the cut-off (looked up rather than computed, the
/// same values: 512² with 800 cells, best of 6 processes 3.76 → 3.66 ms).
fn push_row<A: Float>(w: &mut Vec<A>, l: &[u32], near: &[Near], roots: &[f64], terms: Terms) {
    let start = w.len();
    let class = terms.classes_as::<A>();
    w.extend(l.iter().map(|&l| class[Terms::index(l)]));
    let w = &mut w[start..];
    let mut arg = [0.0f64; CHUNK];
    for near in near.chunks(CHUNK) {
        crate::kernel::dispatch::run(
            #[inline(always)]
            || {
                let root = |d: u32| match roots.get(d as usize) {
                    Some(&r) => r,
                    None => f64::from(d).sqrt(),
                };
                for (a, p) in arg.iter_mut().zip(near) {
                    *a = terms.exponent_of_roots(root(p.d1), root(p.d2));
                }
                for a in arg.iter_mut() {
                    *a = exp_f64(*a, Fma::Off);
                }
            },
        );
        for (p, &e) in near.iter().zip(&arg) {
            if let (Some(w), Some(&l)) = (w.get_mut(p.x), l.get(p.x)) {
                *w = terms.weight(l, e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use ndarray::Array2;

    use super::UNetWeights;
    use crate::kernel::dispatch::on_every_path;

    /// The map (and the distances under it) is the same bit for bit on
    /// every path of `kernel::dispatch`: its row passes are exact integer
    /// work, and the `exp` of the border term is the same straight-line
    /// code on every lane.
    #[test]
    fn dispatch_paths_agree() {
        let mut rng = crate::test_rng::Xorshift(0x2545_f491_4f6c_dd1d);
        let mut next = move || rng.next_u64();
        // Square cells of side 3 to 8 at random places: many touch.
        let mut mask = Array2::from_elem((97, 131), false);
        for _ in 0..60 {
            let (r, c) = ((next() % 90) as usize, (next() % 124) as usize);
            let side = 3 + (next() % 6) as usize;
            mask.slice_mut(ndarray::s![r..(r + side).min(97), c..(c + side).min(131)])
                .fill(true);
        }
        let (widest, capped) = on_every_path(|| {
            let map32 = UNetWeights::new().for_mask::<f32, _>(&mask).unwrap();
            let map64 = UNetWeights::new()
                .sigma(3.0)
                .for_mask::<f64, _>(&mask)
                .unwrap();
            let bits = map32.iter().map(|w| u64::from(w.to_bits()));
            bits.chain(map64.iter().map(|w| w.to_bits()))
                .collect::<Vec<_>>()
        });
        for (isa, capped) in capped {
            assert!(widest == capped, "{isa:?}");
        }
    }
}
