//! Distance benchmarks: the exact Euclidean distance transform, connected
//! component labelling, the two-nearest-instance sweep and the U-Net weight
//! map, single-threaded, on deterministic synthetic masks.
//!
//! * `edt_2d`: `distance_to` on 2048² masks: random with density 0.5, 0.01
//!   and 0.0001, and 4000 touching cells (ellipses); unit and anisotropic
//!   spacing.
//! * `edt_3d`: `distance_to` on 128³ volumes: random with density 0.5 and
//!   0.01, and 300 balls.
//! * `label`: `label_components` (full connectivity) of the same masks.
//! * `two_nearest`: labelled cells on 512² (200 and 800 cells), with the
//!   U-Net cut-off `R = 5·√(2·ln 10⁶)` and with `R = ∞`.
//! * `unet`: `UNetWeights::for_mask::<f32>` with the defaults on 512² with
//!   50 / 200 / 800 cells, on 2048² with 1000 / 4000 cells, and on a
//!   172×448 "text scan" with about 200 letters.
//!
//! Run with `cargo bench --bench distance`; criterion reports the throughput
//! in elements (pixels or voxels) per second. Cells are ellipses with random
//! centres, radii `(0.3..0.45)·√(area / cells)` and aspect ratios
//! `0.75..1.25`; each pixel belongs to the ellipse it lies deepest in, and
//! pixels next to another cell are cleared, so touching cells stay separate
//! components with one-pixel gaps (512² with 800 cells: radii 6 to 8).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput, measurement::WallTime};
use ndarray::{Array, Array2, Array3, Dimension};
use segloss::distance::{Connectivity, UNetWeights, distance_to, label_components, two_nearest};

/// A xorshift64* generator: deterministic inputs without extra crates.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A uniform value in `[0, 1)`.
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A uniform value in `[lo, hi)`.
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }
}

/// A random mask of the given shape: each element true with probability `p`.
fn random<Sh: ndarray::ShapeBuilder>(shape: Sh, p: f64, seed: u64) -> Array<bool, Sh::Dim> {
    let mut rng = Rng(seed);
    Array::from_shape_simple_fn(shape, || rng.uniform() < p)
}

/// `count` touching elliptic cells on a `rows × cols` image (see the module
/// doc).
fn cells(rows: usize, cols: usize, count: usize, seed: u64) -> Array2<bool> {
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
fn balls(n: usize, count: usize, seed: u64) -> Array3<bool> {
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
fn text(rows: usize, cols: usize, seed: u64) -> Array2<bool> {
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
            if rng.next_u64() % 4 == 0 {
                left += 8;
            }
        }
        top += 21;
    }
    mask
}

/// A group that takes few samples of long iterations.
fn group<'a>(c: &'a mut Criterion, name: &str, secs: u64) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(secs));
    group
}

fn edt_2d(c: &mut Criterion) {
    let n = 2048;
    let mut group = group(c, "edt_2d", 2);
    group.throughput(Throughput::Elements((n * n) as u64));
    for (name, mask) in [
        ("random_0.5", random((n, n), 0.5, 1)),
        ("random_0.01", random((n, n), 0.01, 2)),
        ("random_0.0001", random((n, n), 0.0001, 3)),
        ("cells_4000", cells(n, n, 4000, 4)),
    ] {
        group.bench_function(format!("{name}/unit"), |b| {
            b.iter(|| distance_to(black_box(&mask), None).unwrap())
        });
        group.bench_function(format!("{name}/spacing_1x0.7"), |b| {
            b.iter(|| distance_to(black_box(&mask), Some(&[1.0, 0.7])).unwrap())
        });
    }
    group.finish();
}

fn edt_3d(c: &mut Criterion) {
    let n = 128;
    let mut group = group(c, "edt_3d", 2);
    group.throughput(Throughput::Elements((n * n * n) as u64));
    for (name, mask) in [
        ("random_0.5", random((n, n, n), 0.5, 5)),
        ("random_0.01", random((n, n, n), 0.01, 6)),
        ("balls_300", balls(n, 300, 7)),
    ] {
        group.bench_function(format!("{name}/unit"), |b| {
            b.iter(|| distance_to(black_box(&mask), None).unwrap())
        });
        group.bench_function(format!("{name}/spacing_2x0.7x0.7"), |b| {
            b.iter(|| distance_to(black_box(&mask), Some(&[2.0, 0.7, 0.7])).unwrap())
        });
    }
    group.finish();
}

fn bench_label<D: Dimension>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    mask: &Array<bool, D>,
) {
    group.throughput(Throughput::Elements(mask.len() as u64));
    group.bench_function(name, |b| {
        b.iter(|| label_components(black_box(mask), Connectivity::Full))
    });
}

fn label(c: &mut Criterion) {
    let mut group = group(c, "label", 2);
    let n = 2048;
    bench_label(&mut group, "2d_random_0.5", &random((n, n), 0.5, 1));
    bench_label(&mut group, "2d_random_0.01", &random((n, n), 0.01, 2));
    bench_label(&mut group, "2d_cells_4000", &cells(n, n, 4000, 4));
    let n = 128;
    bench_label(&mut group, "3d_random_0.5", &random((n, n, n), 0.5, 5));
    bench_label(&mut group, "3d_random_0.01", &random((n, n, n), 0.01, 6));
    bench_label(&mut group, "3d_balls_300", &balls(n, 300, 7));
    group.finish();
}

fn nearest(c: &mut Criterion) {
    let cutoff = 5.0 * (2.0 * 1e6_f64.ln()).sqrt();
    let mut group = group(c, "two_nearest", 2);
    for (count, seed) in [(200, 8), (800, 9)] {
        let (labels, _) = label_components(&cells(512, 512, count, seed), Connectivity::Full);
        group.throughput(Throughput::Elements(labels.len() as u64));
        for (name, max_distance) in [("R", cutoff), ("inf", f64::INFINITY)] {
            group.bench_function(format!("512_cells_{count}/{name}"), |b| {
                b.iter(|| two_nearest(black_box(&labels), None, max_distance).unwrap())
            });
        }
    }
    group.finish();
}

fn unet(c: &mut Criterion) {
    let weights = UNetWeights::new();
    let mut group = group(c, "unet", 2);
    let cases = [
        ("512_cells_50", cells(512, 512, 50, 10)),
        ("512_cells_200", cells(512, 512, 200, 12)),
        ("512_cells_800", cells(512, 512, 800, 13)),
        ("2048_cells_1000", cells(2048, 2048, 1000, 14)),
        ("2048_cells_4000", cells(2048, 2048, 4000, 15)),
        ("text_172x448", text(172, 448, 16)),
    ];
    for (name, mask) in &cases {
        group.throughput(Throughput::Elements(mask.len() as u64));
        group.bench_function(*name, |b| {
            b.iter(|| weights.for_mask::<f32, _>(black_box(mask)).unwrap())
        });
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    edt_2d(&mut c);
    edt_3d(&mut c);
    label(&mut c);
    nearest(&mut c);
    unet(&mut c);
    c.final_summary();
}
