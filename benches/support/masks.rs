//! The deterministic synthetic masks of the distance benchmarks, shared by
//! `benches/distance.rs` (criterion) and `benches/peers.rs` (the inputs
//! written for the Python peers): random masks, touching elliptic cells, balls
//! and a "text scan". Included with `#[path = "support/masks.rs"] mod masks;`.
//!
//! Cells are ellipses with random centres, radii
//! `(0.3..0.45)·√(area / cells)` and aspect ratios `0.75..1.25`; each pixel
//! belongs to the ellipse it lies deepest in, and pixels next to another cell
//! are cleared, so touching cells stay separate components with one-pixel
//! gaps.

use ndarray::{Array, Array2, Array3};

/// A xorshift64* generator: deterministic inputs without extra crates.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A uniform value in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A uniform value in `[lo, hi)`.
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }
}

/// A random mask of the given shape: each element true with probability `p`.
pub fn random<Sh: ndarray::ShapeBuilder>(shape: Sh, p: f64, seed: u64) -> Array<bool, Sh::Dim> {
    let mut rng = Rng(seed);
    Array::from_shape_simple_fn(shape, || rng.uniform() < p)
}

/// `count` touching elliptic cells on a `rows × cols` image (see the module
/// doc).
pub fn cells(rows: usize, cols: usize, count: usize, seed: u64) -> Array2<bool> {
    let mut rng = Rng(seed);
    let size = ((rows * cols) as f64 / count as f64).sqrt();
    let mut owner = Array2::<u32>::zeros((rows, cols));
    let mut depth = Array2::<f64>::from_elem((rows, cols), f64::INFINITY);
    for k in 1..=count {
        let (cy, cx) = (rng.range(0.0, rows as f64), rng.range(0.0, cols as f64));
        let radius = size * rng.range(0.3, 0.45);
        let aspect = rng.range(0.75, 1.25);
        let (a, b) = (radius * aspect, radius / aspect);
        let (sin, cos) = rng.range(0.0, std::f64::consts::PI).sin_cos();
        let reach = a.max(b).ceil() as isize + 1;
        let (y0, x0) = (cy as isize, cx as isize);
        for y in (y0 - reach).max(0)..(y0 + reach + 1).min(rows as isize) {
            for x in (x0 - reach).max(0)..(x0 + reach + 1).min(cols as isize) {
                let (dy, dx) = (y as f64 - cy, x as f64 - cx);
                let u = (cos * dx + sin * dy) / a;
                let v = (cos * dy - sin * dx) / b;
                let q = u * u + v * v;
                let at = [y as usize, x as usize];
                if q <= 1.0 && q < depth[at] {
                    depth[at] = q;
                    owner[at] = k as u32;
                }
            }
        }
    }
    Array2::from_shape_fn((rows, cols), |(y, x)| {
        let own = owner[[y, x]];
        own != 0
            && (y.saturating_sub(1)..(y + 2).min(rows)).all(|yy| {
                (x.saturating_sub(1)..(x + 2).min(cols)).all(|xx| {
                    let other = owner[[yy, xx]];
                    other == 0 || other == own
                })
            })
    })
}

/// `count` balls in a `n³` volume, radii `(0.3..0.45)·∛(n³ / count)`.
pub fn balls(n: usize, count: usize, seed: u64) -> Array3<bool> {
    let mut rng = Rng(seed);
    let size = ((n * n * n) as f64 / count as f64).cbrt();
    let mut mask = Array3::from_elem((n, n, n), false);
    for _ in 0..count {
        let c = [0; 3].map(|_| rng.range(0.0, n as f64));
        let radius = size * rng.range(0.3, 0.45);
        let reach = radius.ceil() as isize;
        let span = |c: f64| {
            (c as isize - reach).max(0) as usize..((c as isize + reach + 1).max(0) as usize).min(n)
        };
        for z in span(c[0]) {
            for y in span(c[1]) {
                for x in span(c[2]) {
                    let d = [z as f64 - c[0], y as f64 - c[1], x as f64 - c[2]];
                    if d[0] * d[0] + d[1] * d[1] + d[2] * d[2] <= radius * radius {
                        mask[[z, y, x]] = true;
                    }
                }
            }
        }
    }
    mask
}

/// A scanned page of text: lines of letter-sized glyphs (rings, "L"s and
/// bars, 8 to 12 pixels wide and 9 to 12 high, strokes 2 pixels thick),
/// separated by 3 to 6 pixels and now and then a word gap of 8 more.
pub fn text(rows: usize, cols: usize, seed: u64) -> Array2<bool> {
    let mut rng = Rng(seed);
    let mut mask = Array2::from_elem((rows, cols), false);
    let mut top = 4;
    while top + 14 < rows {
        let mut left = 6;
        while left + 10 < cols {
            let w = 8 + (rng.next_u64() % 5) as usize;
            let h = 9 + (rng.next_u64() % 4) as usize;
            let kind = rng.next_u64() % 3;
            for y in 0..h {
                for x in 0..w {
                    let ring = y < 2 || y + 2 >= h || x < 2 || x + 2 >= w;
                    mask[[top + y, left + x]] = match kind {
                        0 => ring,
                        1 => x < 2 || y + 2 >= h,
                        _ => x + 1 >= w / 2 && x <= w / 2,
                    };
                }
            }
            left += w + 3 + (rng.next_u64() % 4) as usize;
            if rng.next_u64().is_multiple_of(4) {
                left += 8;
            }
        }
        top += 21;
    }
    mask
}
