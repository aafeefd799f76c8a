//! Paired floor ratios at 2^24 `f32` elements: each loss call and its floor
//! kernel (see `losses.rs`) are timed one after the other, round after
//! round, and each round gives the ratio of the two times. The table shows
//! per call the median, lowest and highest of those ratios.
//!
//! Why a second harness next to criterion's: on a shared host the memory
//! bandwidth drifts by 10–25 % within minutes, and criterion measures a
//! group's floor minutes before its last loss, so one run's ratio can be a
//! fifth off the next run's. A drift that moves both halves of a pair
//! alike cancels, and the median over the rounds drops the rounds a
//! neighbour disturbed. It is no cure: on the host of BENCHMARKS.md the
//! softmax losses' paired medians still moved by a fifth between runs
//! minutes apart (the single-pass losses by about a tenth).
//!
//! Dice on logits also has a row against `read + write`, the floor of any
//! two-pass loss: both inputs read before any of the gradient can be
//! written, then the gradient written.
//!
//! Run with `cargo bench --bench ratios` (21 rounds, about half a minute);
//! `cargo bench --bench ratios -- --rounds 31` for more rounds (odd counts
//! give a true median).

use std::hint::black_box;
use std::time::Instant;

use ndarray::Array4;
use segloss::{BinaryCrossEntropy, CrossEntropy, DiceLoss, Input, Loss, ShapeAwareLoss};

mod common;
use common::{
    Data, class_data, floor_read, floor_read_write, floor_read3, floor_read3_write, floor_write,
};

/// The shapes of 2^24 elements: one channel, and four classes.
const SHAPE: [usize; 4] = [16, 1, 1024, 1024];
const CLASS_SHAPE: [usize; 4] = [4, 4, 1024, 1024];
const ELEMENTS: f64 = (1u64 << 24) as f64;

/// The seconds one call of `f` takes.
fn time<R>(mut f: impl FnMut() -> R) -> f64 {
    let start = Instant::now();
    black_box(f());
    start.elapsed().as_secs_f64()
}

/// One table row: a call timed against its floor.
struct Case<'a> {
    loss: &'a str,
    call: &'a str,
    floor: &'a str,
    run: Box<dyn FnMut() -> f32 + 'a>,
    run_floor: Box<dyn FnMut() -> f32 + 'a>,
}

/// The median of `v` (sorted in place).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn rounds() -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(21)
}

fn main() {
    let rounds = rounds();
    let Data {
        logits,
        probabilities,
        target,
        weights,
        grad,
    } = Data::<f32>::new(SHAPE);
    let (class_logits, class_target) = class_data::<f32>(CLASS_SHAPE);
    fn slice(a: &Array4<f32>) -> &[f32] {
        a.as_slice().expect("standard layout")
    }
    let (x, y, w) = (slice(&logits), slice(&target), slice(&weights));
    // The floors write to their own buffers; each loss writes to its own
    // gradient, as it would in a training step.
    let (floor_out, _) = segloss::alloc::zeros::<f32, _>(x.len()).into_raw_vec_and_offset();
    let floor_out = std::cell::RefCell::new(floor_out);
    let grad = std::cell::RefCell::new(grad);
    let class_grad = std::cell::RefCell::new(segloss::alloc::zeros::<f32, _>(CLASS_SHAPE));

    let read = || floor_read(x, y);
    let read_write = || floor_read_write(x, y, &mut floor_out.borrow_mut());
    let read3 = || floor_read3(x, y, w);
    let read3_write = || floor_read3_write(x, y, w, &mut floor_out.borrow_mut());

    let bce = BinaryCrossEntropy::new();
    let wbce = BinaryCrossEntropy::new().pos_weight(3.0);
    let dice = DiceLoss::new();
    let dice_prob = DiceLoss::new().input(Input::Probabilities);
    let shape_aware = ShapeAwareLoss::new();
    let ce = CrossEntropy::new();
    let mdice = DiceLoss::new().input(Input::SoftmaxLogits).per_class(true);

    let mut cases: Vec<Case<'_>> = Vec::new();
    macro_rules! pair {
        ($loss:expr, $name:expr, $input:expr, $target:expr, $grad:expr) => {{
            cases.push(Case {
                loss: $name,
                call: "loss",
                floor: "read",
                run: Box::new(|| $loss.loss($input, $target).unwrap()),
                run_floor: Box::new(read),
            });
            cases.push(Case {
                loss: $name,
                call: "loss_grad",
                floor: "read_write",
                run: Box::new(|| {
                    $loss
                        .loss_grad($input, $target, &mut *$grad.borrow_mut())
                        .unwrap()
                }),
                run_floor: Box::new(read_write),
            });
        }};
    }
    pair!(bce, "BCE", &logits, &target, grad);
    pair!(wbce, "weighted BCE (β = 3)", &logits, &target, grad);
    pair!(dice, "Dice (logits)", &logits, &target, grad);
    pair!(
        dice_prob,
        "Dice (probabilities)",
        &probabilities,
        &target,
        grad
    );
    pair!(
        ce,
        "cross-entropy (4 classes)",
        &class_logits,
        &class_target,
        class_grad
    );
    pair!(
        mdice,
        "multi-class Dice (4 classes, per class)",
        &class_logits,
        &class_target,
        class_grad
    );
    // The lower bound of a two-pass loss: both inputs read before any of
    // the gradient can be written, then the gradient written.
    cases.push(Case {
        loss: "Dice (logits)",
        call: "loss_grad",
        floor: "read + write",
        run: Box::new(|| {
            dice.loss_grad(&logits, &target, &mut *grad.borrow_mut())
                .unwrap()
        }),
        run_floor: Box::new(|| floor_read(x, y) + floor_write(&mut floor_out.borrow_mut())),
    });
    cases.push(Case {
        loss: "shape-aware (given weights)",
        call: "loss_with_weights",
        floor: "read3",
        run: Box::new(|| {
            shape_aware
                .loss_with_weights(&logits, &target, &weights)
                .unwrap()
        }),
        run_floor: Box::new(read3),
    });
    cases.push(Case {
        loss: "shape-aware (given weights)",
        call: "loss_grad_with_weights",
        floor: "read3_write",
        run: Box::new(|| {
            shape_aware
                .loss_grad_with_weights(&logits, &target, &weights, &mut grad.borrow_mut())
                .unwrap()
        }),
        run_floor: Box::new(read3_write),
    });

    println!("Paired floor ratios, f32, 2^24 elements, {rounds} rounds of one call each:\n");
    println!(
        "| loss | call | floor | ns / element (median) | × floor (median) | lowest | highest |"
    );
    println!("|---|---|---|---:|---:|---:|---:|");
    for case in &mut cases {
        // One call each to warm the caches, the page tables and the
        // dispatch.
        time(&mut case.run_floor);
        time(&mut case.run);
        let mut ratios = Vec::with_capacity(rounds);
        let mut times = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let floor = time(&mut case.run_floor);
            let call = time(&mut case.run);
            ratios.push(call / floor);
            times.push(call);
        }
        let ns = median(&mut times) * 1e9 / ELEMENTS;
        let ratio = median(&mut ratios);
        println!(
            "| {} | `{}` | {} | {ns:.2} | {ratio:.2} | {:.2} | {:.2} |",
            case.loss,
            case.call,
            case.floor,
            ratios[0],
            ratios[rounds - 1],
        );
    }
}
