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
//!   50 / 90 / 200 / 800 cells, on 2048² with 1000 / 4000 cells, and on a
//!   172×448 "text scan" with about 200 letters.
//!
//! With the `rayon` feature, the group `edt_parallel` times `distance_to`
//! on the masks of `edt_2d` and `edt_3d` on thread pools of 1 and 2
//! threads (`cargo bench --bench distance --features rayon -- edt_parallel`).
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
use ndarray::{Array, Dimension};
use segloss::distance::{Connectivity, UNetWeights, distance_to, label_components, two_nearest};

#[path = "support/masks.rs"]
mod masks;
use masks::{balls, cells, random, text};

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

/// The `rayon` feature's speed-up: `distance_to` on the 2048² and 128³
/// masks above, unit and anisotropic spacing, on thread pools of 1 and 2
/// threads.
#[cfg(feature = "rayon")]
fn edt_parallel(c: &mut Criterion) {
    let (n, m) = (2048, 128);
    let cases = [
        (
            "2d_random_0.5",
            random((n, n), 0.5, 1).into_dyn(),
            [1.0, 0.7].as_slice(),
        ),
        (
            "2d_random_0.01",
            random((n, n), 0.01, 2).into_dyn(),
            &[1.0, 0.7],
        ),
        (
            "2d_random_0.0001",
            random((n, n), 0.0001, 3).into_dyn(),
            &[1.0, 0.7],
        ),
        (
            "2d_cells_4000",
            cells(n, n, 4000, 4).into_dyn(),
            &[1.0, 0.7],
        ),
        (
            "3d_random_0.5",
            random((m, m, m), 0.5, 5).into_dyn(),
            &[2.0, 0.7, 0.7],
        ),
        (
            "3d_random_0.01",
            random((m, m, m), 0.01, 6).into_dyn(),
            &[2.0, 0.7, 0.7],
        ),
        (
            "3d_balls_300",
            balls(m, 300, 7).into_dyn(),
            &[2.0, 0.7, 0.7],
        ),
    ];
    let pools = [1, 2].map(|threads| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a thread pool");
        (threads, pool)
    });
    let mut group = group(c, "edt_parallel", 2);
    for (name, mask, spacing) in &cases {
        group.throughput(Throughput::Elements(mask.len() as u64));
        for (label, spacing) in [("unit", None), ("spacing", Some(*spacing))] {
            // 1 and 2 threads one after the other, so that both see the
            // same load on a shared machine.
            for (threads, pool) in &pools {
                group.bench_function(format!("{name}/{label}/{threads}"), |b| {
                    b.iter(|| pool.install(|| distance_to(black_box(mask), spacing).unwrap()))
                });
            }
        }
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
        ("512_cells_90", cells(512, 512, 90, 11)),
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
    #[cfg(feature = "rayon")]
    edt_parallel(&mut c);
    c.final_summary();
}
