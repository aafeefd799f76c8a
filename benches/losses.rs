//! Loss benchmarks: `loss` and `loss_grad` of BCE, weighted BCE, Dice (on
//! logits and on probabilities), the shape-aware loss with given weights,
//! and the softmax losses (cross-entropy and per-class Dice over 4 classes,
//! shape `(4, 4, 1024, 1024)` at 2^24), in `f32` and `f64`, at 2^16, 2^20
//! and 2^24 elements, each group with memory-bound **floor** kernels to
//! compare against:
//!
//! * `floor/read`: reads the two inputs and reduces (what a loss-only call
//!   must at least move);
//! * `floor/read_write`: reads the two inputs, writes one output and reduces
//!   (what any fused loss-and-gradient must at least move);
//! * `floor/read3`, `floor/read3_write`: the same with a third input, the
//!   floors of the pixel-weighted (shape-aware) loss with a given weight map;
//! * `floor/write`: writes one output and reads nothing. A region loss (Dice)
//!   must read both inputs before it can write any of its gradient, so
//!   `floor/read` plus `floor/write` bounds its `loss_grad` from below.
//!
//! The group `layouts/f32/2^20` times configurations that take other
//! paths than the groups above, at shape `(16, 1, 256, 256)`: Dice per
//! sample (`dice_logits_per_sample`), and BCE and Dice `loss_grad` into a
//! gradient in Fortran order (`*/loss_grad_fortran`), which neither shares
//! the inputs' memory order nor can hold Dice's stage.
//!
//! With the `rayon` feature, the group `parallel/f32/2^24` times BCE and
//! Dice `loss_grad` on thread pools of 1 and 2 threads
//! (`cargo bench --bench losses --features rayon -- parallel`).
//!
//! Run with `cargo bench --bench losses`; criterion reports the throughput in
//! elements per second. The inputs are deterministic (a xorshift generator):
//! logits uniform in [-8, 8], binary targets with ~30 % foreground,
//! probabilities uniform in [0, 1], weights uniform in [1, 11].

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput, measurement::WallTime};
use ndarray::{Array4, ShapeBuilder};
use segloss::{BinaryCrossEntropy, CrossEntropy, DiceLoss, Float, Input, Loss, ShapeAwareLoss};

mod common;
use common::{
    Data, class_data, floor_read, floor_read_write, floor_read3, floor_read3_write, floor_write,
};

/// The benchmarked sizes: (log2 of the element count, shape, the shape of
/// the same element count with 4 classes on axis 1 for the softmax losses).
const SIZES: [(u32, [usize; 4], [usize; 4]); 3] = [
    (16, [1, 1, 256, 256], [1, 4, 128, 128]),
    (20, [1, 1, 1024, 1024], [1, 4, 512, 512]),
    (24, [16, 1, 1024, 1024], [4, 4, 1024, 1024]),
];

/// `loss` and `loss_grad` of one loss, as `name/loss` and `name/loss_grad`.
fn bench_loss<A: Float, L: Loss<A>>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    loss: &L,
    input: &Array4<A>,
    target: &Array4<A>,
    grad: &mut Array4<A>,
) {
    group.bench_function(format!("{name}/loss"), |b| {
        b.iter(|| loss.loss(black_box(input), black_box(target)).unwrap())
    });
    group.bench_function(format!("{name}/loss_grad"), |b| {
        b.iter(|| {
            loss.loss_grad(black_box(input), black_box(target), black_box(&mut *grad))
                .unwrap()
        })
    });
}

/// One group: the floors and every loss, for one element type and size.
fn bench_group<A: Float>(
    c: &mut Criterion,
    type_name: &str,
    log2: u32,
    shape: [usize; 4],
    class_shape: [usize; 4],
) where
    BinaryCrossEntropy: Loss<A>,
    CrossEntropy: Loss<A>,
    DiceLoss: Loss<A>,
{
    let mut data = Data::<A>::new(shape);
    let n = 1u64 << log2;
    let mut group = c.benchmark_group(format!("losses/{type_name}/2^{log2}"));
    group.throughput(Throughput::Elements(n));
    if log2 >= 24 {
        group
            .sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
    } else {
        group
            .sample_size(20)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1));
    }

    {
        let x = data.logits.as_slice().expect("standard layout");
        let y = data.target.as_slice().expect("standard layout");
        group.bench_function("floor/read", |b| {
            b.iter(|| floor_read(black_box(x), black_box(y)))
        });
        let w = data.weights.as_slice().expect("standard layout");
        let g = data.grad.as_slice_mut().expect("standard layout");
        group.bench_function("floor/read_write", |b| {
            b.iter(|| floor_read_write(black_box(x), black_box(y), black_box(&mut *g)))
        });
        group.bench_function("floor/write", |b| {
            b.iter(|| floor_write(black_box(&mut *g)))
        });
        group.bench_function("floor/read3", |b| {
            b.iter(|| floor_read3(black_box(x), black_box(y), black_box(w)))
        });
        group.bench_function("floor/read3_write", |b| {
            b.iter(|| {
                floor_read3_write(black_box(x), black_box(y), black_box(w), black_box(&mut *g))
            })
        });
    }

    let Data {
        logits,
        probabilities,
        target,
        weights,
        grad,
    } = &mut data;
    bench_loss(
        &mut group,
        "bce",
        &BinaryCrossEntropy::new(),
        logits,
        target,
        grad,
    );
    bench_loss(
        &mut group,
        "wbce_pw3",
        &BinaryCrossEntropy::new().pos_weight(3.0),
        logits,
        target,
        grad,
    );
    bench_loss(
        &mut group,
        "dice_logits",
        &DiceLoss::new(),
        logits,
        target,
        grad,
    );
    bench_loss(
        &mut group,
        "dice_prob",
        &DiceLoss::new().input(Input::Probabilities),
        probabilities,
        target,
        grad,
    );
    let shape_aware = ShapeAwareLoss::new();
    group.bench_function("shape_aware/loss_with_weights", |b| {
        b.iter(|| {
            shape_aware
                .loss_with_weights(
                    black_box(&*logits),
                    black_box(&*target),
                    black_box(&*weights),
                )
                .unwrap()
        })
    });
    group.bench_function("shape_aware/loss_grad_with_weights", |b| {
        b.iter(|| {
            shape_aware
                .loss_grad_with_weights(
                    black_box(&*logits),
                    black_box(&*target),
                    black_box(&*weights),
                    black_box(&mut *grad),
                )
                .unwrap()
        })
    });
    // The softmax losses: 4 classes on axis 1, the same element count.
    let (class_logits, class_target) = class_data::<A>(class_shape);
    let mut class_grad = segloss::alloc::zeros::<A, _>(class_shape);
    bench_loss(
        &mut group,
        "ce_4class",
        &CrossEntropy::new(),
        &class_logits,
        &class_target,
        &mut class_grad,
    );
    bench_loss(
        &mut group,
        "mdice_4class",
        &DiceLoss::new().input(Input::SoftmaxLogits).per_class(true),
        &class_logits,
        &class_target,
        &mut class_grad,
    );
    group.finish();
}

fn losses(c: &mut Criterion) {
    for (log2, shape, class_shape) in SIZES {
        bench_group::<f32>(c, "f32", log2, shape, class_shape);
        bench_group::<f64>(c, "f64", log2, shape, class_shape);
    }
}

/// Configurations off the paths of [`bench_group`]: Dice per sample, and
/// a gradient in Fortran order for inputs in standard layout.
fn layouts(c: &mut Criterion) {
    let log2 = 20;
    let shape = [16, 1, 256, 256];
    let Data {
        logits,
        target,
        mut grad,
        ..
    } = Data::<f32>::new(shape);
    let mut fortran = Array4::<f32>::zeros(shape.f());
    let mut group = c.benchmark_group(format!("layouts/f32/2^{log2}"));
    group.throughput(Throughput::Elements(1u64 << log2));
    bench_loss(
        &mut group,
        "dice_logits_per_sample",
        &DiceLoss::new().per_sample(true),
        &logits,
        &target,
        &mut grad,
    );
    let mut fortran_grad = |name: &str, loss: &dyn Fn(&mut Array4<f32>) -> f32| {
        group.bench_function(format!("{name}/loss_grad_fortran"), |b| {
            b.iter(|| loss(black_box(&mut fortran)))
        });
    };
    let (bce, dice) = (BinaryCrossEntropy::new(), DiceLoss::new());
    fortran_grad("bce", &|g| bce.loss_grad(&logits, &target, g).unwrap());
    fortran_grad("dice_logits", &|g| {
        dice.loss_grad(&logits, &target, g).unwrap()
    });
    group.finish();
}

/// The `rayon` feature's speed-up: BCE and Dice (logits) `loss_grad` at
/// 2^24 `f32` elements on thread pools of 1 and 2 threads.
#[cfg(feature = "rayon")]
fn parallel(c: &mut Criterion) {
    let (log2, shape, _) = SIZES[2];
    let Data {
        logits,
        target,
        mut grad,
        ..
    } = Data::<f32>::new(shape);
    let mut group = c.benchmark_group(format!("parallel/f32/2^{log2}"));
    group
        .throughput(Throughput::Elements(1u64 << log2))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let bce = BinaryCrossEntropy::new();
    let dice = DiceLoss::new();
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a thread pool");
        group.bench_function(format!("bce/loss_grad/{threads}"), |b| {
            b.iter(|| {
                pool.install(|| {
                    Loss::<f32>::loss_grad(
                        &bce,
                        black_box(&logits),
                        black_box(&target),
                        black_box(&mut grad),
                    )
                    .unwrap()
                })
            })
        });
        group.bench_function(format!("dice_logits/loss_grad/{threads}"), |b| {
            b.iter(|| {
                pool.install(|| {
                    Loss::<f32>::loss_grad(
                        &dice,
                        black_box(&logits),
                        black_box(&target),
                        black_box(&mut grad),
                    )
                    .unwrap()
                })
            })
        });
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    losses(&mut c);
    layouts(&mut c);
    #[cfg(feature = "rayon")]
    parallel(&mut c);
    c.final_summary();
}
