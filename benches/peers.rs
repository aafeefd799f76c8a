//! The segloss side of the peer comparison (`benches/peers/`): writes the
//! inputs of the distance and loss benchmarks as `.npy` files, times segloss
//! on exactly those inputs, and writes the timings and some check values to
//! `segloss.json` in the same directory. `benches/peers/peers.py` then times
//! SciPy, seung-lab `edt`, the Python U-Net recipe, PyTorch and MONAI on the
//! same files and prints one table; `benches/peers/run.sh` runs both.
//!
//! ```text
//! cargo bench --bench peers -- [DIR]
//! ```
//!
//! `DIR` defaults to `$SEGLOSS_PEERS_DIR`, then to `peers/` under Cargo's
//! temporary target directory (`target/tmp/peers`). About 320 MB is written.
//!
//! The inputs (generators shared with `benches/distance.rs` through
//! `benches/support/masks.rs`, same seeds):
//!
//! * `edt_*`: 2048² random masks of density 0.5, 0.01 and 0.0001 and 4000
//!   touching cells; 128³ random masks of density 0.5 and 0.01 and 300
//!   balls. Timed: `distance_to(mask, None)` and `label_components(mask,
//!   Connectivity::Full)`.
//! * `unet_*`: 512² images with 50, 90, 200 and 800 cells (the 90-cell one is
//!   not in `benches/distance.rs`: seed 11) and the 172×448 text scan. Timed:
//!   `UNetWeights::new().for_mask::<f32, _>` (w0 = 10, σ = 5); the map and
//!   the labels are written for the Python recipe to check against.
//! * `loss_*`: 2^24 `f32` elements of shape (16, 1, 1024, 1024), the inputs
//!   of `benches/losses.rs` (logits uniform in [-8, 8], binary targets with
//!   ~30 % foreground, pixel weights uniform in [1, 11], from the same
//!   generator and seed). Timed: `loss_grad` into a preallocated gradient
//!   of `BinaryCrossEntropy::new()`, of the weighted BCE
//!   `BinaryCrossEntropy::new().pos_weight(3.0)`, of `DiceLoss::new()`, and
//!   of the pixel-weighted BCE `ShapeAwareLoss::loss_grad_with_weights`;
//!   and, for the first three, `loss_and_grad` (which allocates the
//!   gradient, as a PyTorch backward does).
//! * Each loss case's memory floor (the kernels of `benches/common`), timed
//!   on the same inputs just before the losses: read two inputs and write
//!   one output for the BCEs; read both, then write, for Dice, whose
//!   gradient depends on sums over the whole input; read three and write
//!   one for the pixel-weighted BCE. A peer's time over the floor is the
//!   most any implementation that moves those bytes could be faster than
//!   that peer on this machine, whatever its arithmetic: the ceiling of
//!   the peer ratio here.
//!
//! Every call runs on one thread (a one-thread global rayon pool, should the
//! `rayon` feature be on). Each case is called once untimed (warm-up, and the
//! result kept for the checks), then timed until it has run at least
//! [`MIN_REPS`] times and [`BUDGET`] seconds, at most [`MAX_REPS`] times;
//! the median and the minimum wall-clock times are reported, and the mean
//! CPU time of the process per timed call (see `cpu_time`), which a busy
//! machine inflates less.
//!
//! Without `--bench` among its arguments (as under `cargo test
//! --all-targets`), it does nothing.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ndarray::{Array, Array4, ArrayRef, Dimension, Ix2};
use ndarray_npy::{WritableElement, write_npy};
use segloss::distance::{Connectivity, UNetWeights, distance_to, label_components};
use segloss::{BinaryCrossEntropy, DiceLoss, Loss, ShapeAwareLoss};
use serde_json::{Value, json};

#[path = "support/masks.rs"]
mod masks;
use masks::{Rng, balls, cells, random, text};

// For the floor kernels; its input generators go unused here, where
// `loss_inputs` draws the inputs.
#[allow(dead_code)]
mod common;
use common::{floor_read, floor_read_write, floor_read3_write, floor_write};

/// The fewest timed calls per case.
const MIN_REPS: usize = 5;
/// The least total timed seconds per case (once `MIN_REPS` are done).
const BUDGET: f64 = 1.0;
/// The most timed calls per case.
const MAX_REPS: usize = 50;

/// The shape of the 2^24-element loss inputs, as in `benches/losses.rs`.
const LOSS_SHAPE: [usize; 4] = [16, 1, 1024, 1024];

/// Times of one case, in seconds.
struct Timing {
    /// The median wall-clock time.
    median: f64,
    /// The shortest wall-clock time.
    min: f64,
    /// The process's CPU time over all timed calls, divided by their number.
    cpu_mean: Option<f64>,
    reps: usize,
}

impl Timing {
    fn json(&self) -> Value {
        json!({
            "median_s": self.median, "min_s": self.min, "cpu_mean_s": self.cpu_mean,
            "reps": self.reps,
        })
    }
}

/// The CPU time (user + system) of this process so far, from
/// `/proc/self/stat` (Linux; `None` elsewhere), in seconds. Its unit is
/// `USER_HZ`, 100 per second on Linux whatever the kernel's tick: a 10 ms
/// resolution, fine over the [`BUDGET`] of a case. On a shared machine it
/// leaves out the time the process waits for a core, which wall-clock
/// times include.
fn cpu_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields 14 and 15 (utime, stime), counted after the parenthesised name.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// Calls `f` once untimed, then times it (see the module doc); returns the
/// warm-up call's result.
fn measure<T>(mut f: impl FnMut() -> T) -> (T, Timing) {
    let first = f();
    let mut times = Vec::new();
    let cpu_start = cpu_time();
    let start = Instant::now();
    while times.len() < MAX_REPS
        && (times.len() < MIN_REPS || start.elapsed().as_secs_f64() < BUDGET)
    {
        let t = Instant::now();
        black_box(f());
        times.push(t.elapsed().as_secs_f64());
    }
    let n = times.len();
    let cpu_mean = cpu_start.zip(cpu_time()).map(|(a, b)| (b - a) / n as f64);
    times.sort_by(f64::total_cmp);
    let median = if n % 2 == 1 {
        times[n / 2]
    } else {
        0.5 * (times[n / 2 - 1] + times[n / 2])
    };
    let timing = Timing {
        median,
        min: times[0],
        cpu_mean,
        reps: n,
    };
    (first, timing)
}

/// Writes `array` as `dir/name.npy` and returns the file name.
/// Writes `array` to `dir/name.npy` and waits until it is on disk: left
/// to the kernel's writeback, the 320 MB of inputs were flushed while the
/// losses were timed, and a round's first loss case took up to 1.8× as
/// long as in the next round.
fn save<A: WritableElement, D: Dimension>(dir: &Path, name: &str, array: &Array<A, D>) -> String {
    let file = format!("{name}.npy");
    let path = dir.join(&file);
    write_npy(&path, array).unwrap_or_else(|e| panic!("writing {file}: {e}"));
    std::fs::File::open(&path)
        .and_then(|f| f.sync_all())
        .unwrap_or_else(|e| panic!("syncing {file}: {e}"));
    file
}

/// `Σ x` and `Σ |x|` in `f64`, over the finite elements.
fn sums<A: Copy + Into<f64>, D: Dimension>(x: &ArrayRef<A, D>) -> (f64, f64) {
    x.iter()
        .map(|&v| v.into())
        .filter(|v: &f64| v.is_finite())
        .fold((0.0, 0.0), |(s, a), v| (s + v, a + v.abs()))
}

/// Exact checksums of a unit-spacing distance map, whose squares are
/// integers: `Σ k` and `Σ k·(i mod 9973 + 1)` over the flat row-major index
/// `i`, with `k = round(d²)` (the second one notices a value in the wrong
/// place).
fn squared_checksums<D: Dimension>(distance: &Array<f64, D>) -> (u64, u64) {
    distance.iter().enumerate().fold((0, 0), |(s, w), (i, &d)| {
        let k = (d * d).round() as u64;
        (s + k, w + k * (i as u64 % 9973 + 1))
    })
}

/// One distance case: the mask and its labels written, `distance_to` and
/// `label_components` timed.
fn distance_case<D: Dimension>(dir: &Path, name: &str, mask: &Array<bool, D>) -> Vec<Value> {
    let mask_file = save(dir, &format!("edt_{name}_mask"), mask);
    let (distance, edt_time) = measure(|| distance_to(black_box(mask), None).unwrap());
    let ((labels, count), label_time) =
        measure(|| label_components(black_box(mask), Connectivity::Full));
    let labels_file = save(dir, &format!("edt_{name}_labels"), &labels);
    let (sum, _) = sums(&distance);
    let max = distance.iter().copied().fold(0.0_f64, f64::max);
    let (d2_sum, d2_weighted) = squared_checksums(&distance);
    let shape = mask.shape();
    let foreground = mask.iter().filter(|&&m| m).count();
    println!(
        "edt   {name:<24} {:>9.2} ms   label {:>8.2} ms   ({count} components)",
        1e3 * edt_time.median,
        1e3 * label_time.median
    );
    vec![
        json!({
            "case": format!("edt/{name}"), "kind": "edt", "shape": shape,
            "elements": mask.len(), "mask": mask_file, "segloss": edt_time.json(),
            "check": {
                "distance_sum": sum, "distance_max": max, "foreground": foreground,
                "squared_sum": d2_sum, "squared_weighted_sum": d2_weighted,
            },
        }),
        json!({
            "case": format!("label/{name}"), "kind": "label", "shape": shape,
            "elements": mask.len(), "mask": mask_file, "labels": labels_file,
            "segloss": label_time.json(), "check": { "components": count },
        }),
    ]
}

/// One U-Net case: mask, labels and the map written, `for_mask` timed.
fn unet_case(dir: &Path, name: &str, mask: &Array<bool, Ix2>) -> Value {
    let weights = UNetWeights::new();
    let mask_file = save(dir, &format!("unet_{name}_mask"), mask);
    let (map, time) = measure(|| weights.for_mask::<f32, _>(black_box(mask)).unwrap());
    let (labels, count) = label_components(mask, Connectivity::Full);
    let labels_file = save(dir, &format!("unet_{name}_labels"), &labels);
    let map_file = save(dir, &format!("unet_{name}_weights"), &map);
    println!(
        "unet  {name:<24} {:>9.2} ms   ({count} cells)",
        1e3 * time.median
    );
    json!({
        "case": format!("unet/{name}"), "kind": "unet", "shape": mask.shape(),
        "elements": mask.len(), "mask": mask_file, "labels": labels_file,
        "weights": map_file, "w0": 10.0, "sigma": 5.0, "segloss": time.json(),
        "check": { "instances": count },
    })
}

/// The loss inputs of `benches/losses.rs`: its generator draws the logits,
/// then the probabilities (not needed here: skipped), the targets and the
/// pixel weights.
fn loss_inputs() -> [Array4<f32>; 3] {
    // On huge pages from 4 MiB, as NumPy allocates the peers' copies.
    fn draw(rng: &mut Rng, f: impl Fn(f64) -> f32) -> Array4<f32> {
        let mut a = segloss::alloc::zeros(LOSS_SHAPE);
        a.iter_mut().for_each(|v| *v = f(rng.uniform()));
        a
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let logits = draw(&mut rng, |u| (16.0 * u - 8.0) as f32);
    for _ in 0..logits.len() {
        rng.uniform();
    }
    let target = draw(&mut rng, |u| if u < 0.3 { 1.0 } else { 0.0 });
    let weights = draw(&mut rng, |u| (1.0 + 10.0 * u) as f32);
    [logits, target, weights]
}

/// A memory floor timed on the loss inputs: its name and timing.
struct Floor {
    name: &'static str,
    time: Timing,
}

impl Floor {
    fn json(&self) -> Value {
        let mut floor = self.time.json();
        if let Some(floor) = floor.as_object_mut() {
            floor.insert("name".into(), self.name.into());
        }
        floor
    }
}

/// Times the floors of the loss cases on their inputs `[x, y, w]` (see the
/// module doc): read-write, read + write, and read3-write.
fn loss_floors([x, y, w]: [&Array4<f32>; 3]) -> [Floor; 3] {
    fn slice(a: &Array4<f32>) -> &[f32] {
        a.as_slice().expect("standard layout")
    }
    let (x, y, w) = (slice(x), slice(y), slice(w));
    let (mut out, _) = segloss::alloc::zeros::<f32, _>(x.len()).into_raw_vec_and_offset();
    let mut floor = |name, f: &mut dyn FnMut(&mut [f32]) -> f32| {
        let (_, time) = measure(|| f(&mut out));
        println!("floor {name:<24} {:>9.2} ms", 1e3 * time.median);
        Floor { name, time }
    };
    [
        floor("read_write", &mut |g| floor_read_write(x, y, g)),
        floor("read + write", &mut |g| floor_read(x, y) + floor_write(g)),
        floor("read3_write", &mut |g| floor_read3_write(x, y, w, g)),
    ]
}

/// One loss case: `loss_grad` into a preallocated buffer and, where given,
/// `loss_and_grad`, timed; `files` names the inputs' files for the peers,
/// `floor` is the case's memory floor.
fn loss_case(
    name: &str,
    files: Value,
    floor: &Floor,
    logits: &Array4<f32>,
    loss_grad: impl Fn(&mut Array4<f32>) -> f32,
    loss_and_grad: Option<&dyn Fn() -> (f32, Array4<f32>)>,
) -> Vec<Value> {
    let mut grad = segloss::alloc::zeros::<f32, _>(logits.raw_dim());
    let (value, time) = measure(|| loss_grad(&mut grad));
    let (grad_sum, grad_abs_sum) = sums(&grad);
    let alloc_time = loss_and_grad.map(|f| measure(f).1);
    match &alloc_time {
        Some(t) => println!(
            "loss  {name:<24} {:>9.2} ms   loss_and_grad {:>8.2} ms",
            1e3 * time.median,
            1e3 * t.median
        ),
        None => println!("loss  {name:<24} {:>9.2} ms", 1e3 * time.median),
    }
    let check = json!({
        "loss": value, "grad_sum": grad_sum, "grad_abs_sum": grad_abs_sum,
    });
    let case = |call: &str, time: &Timing| {
        let mut case = json!({
            "case": format!("{name}/{call}"), "kind": name, "shape": LOSS_SHAPE,
            "elements": logits.len(), "segloss": time.json(), "check": check,
            "floor": floor.json(),
        });
        if let (Some(case), Some(files)) = (case.as_object_mut(), files.as_object()) {
            case.extend(files.clone());
        }
        case
    };
    let mut cases = vec![case("loss_grad", &time)];
    cases.extend(alloc_time.map(|t| case("loss_and_grad", &t)));
    cases
}

/// The output directory: the first argument that is not a flag, else
/// `$SEGLOSS_PEERS_DIR`, else `target/tmp/peers`.
fn output_dir() -> PathBuf {
    std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .or_else(|| std::env::var("SEGLOSS_PEERS_DIR").ok())
        .map_or_else(
            || Path::new(env!("CARGO_TARGET_TMPDIR")).join("peers"),
            PathBuf::from,
        )
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "peers: run with `cargo bench --bench peers -- [DIR]` (see benches/peers/README.md)"
        );
        return;
    }
    let dir = output_dir();
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    // segloss's `rayon` feature would parallelise the losses: one thread.
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global()
        .expect("a one-thread global pool");
    println!("peers: writing inputs and timings to {}", dir.display());

    let mut cases = Vec::new();
    let n = 2048;
    for (name, mask) in [
        ("2048_random_0.5", random((n, n), 0.5, 1)),
        ("2048_random_0.01", random((n, n), 0.01, 2)),
        ("2048_random_0.0001", random((n, n), 0.0001, 3)),
        ("2048_cells_4000", cells(n, n, 4000, 4)),
    ] {
        cases.extend(distance_case(&dir, name, &mask));
    }
    let n = 128;
    for (name, mask) in [
        ("128_random_0.5", random((n, n, n), 0.5, 5)),
        ("128_random_0.01", random((n, n, n), 0.01, 6)),
        ("128_balls_300", balls(n, 300, 7)),
    ] {
        cases.extend(distance_case(&dir, name, &mask));
    }
    for (name, mask) in [
        ("512_cells_50", cells(512, 512, 50, 10)),
        ("512_cells_90", cells(512, 512, 90, 11)),
        ("512_cells_200", cells(512, 512, 200, 12)),
        ("512_cells_800", cells(512, 512, 800, 13)),
        ("text_172x448", text(172, 448, 16)),
    ] {
        cases.push(unet_case(&dir, name, &mask));
    }
    let [logits, target, weights] = loss_inputs();
    let files = json!({
        "logits": save(&dir, "loss_logits", &logits),
        "target": save(&dir, "loss_target", &target),
    });
    let (x, y, w) = (&logits, &target, &weights);
    let [read_write, read_then_write, read3_write] = loss_floors([x, y, w]);
    let bce = BinaryCrossEntropy::new();
    let weighted = BinaryCrossEntropy::new().pos_weight(3.0);
    let dice = DiceLoss::new();
    let shape_aware = ShapeAwareLoss::new();
    for (name, loss) in [("bce", &bce), ("wbce", &weighted)] {
        cases.extend(loss_case(
            name,
            files.clone(),
            &read_write,
            x,
            |g| loss.loss_grad(black_box(x), black_box(y), g).unwrap(),
            Some(&|| loss.loss_and_grad(black_box(x), black_box(y)).unwrap()),
        ));
    }
    cases.extend(loss_case(
        "dice",
        files.clone(),
        &read_then_write,
        x,
        |g| dice.loss_grad(black_box(x), black_box(y), g).unwrap(),
        Some(&|| dice.loss_and_grad(black_box(x), black_box(y)).unwrap()),
    ));
    let mut weighted_files = files.clone();
    if let Some(files) = weighted_files.as_object_mut() {
        files.insert("weights".into(), save(&dir, "loss_weights", w).into());
    }
    cases.extend(loss_case(
        "pwbce",
        weighted_files,
        &read3_write,
        x,
        |g| {
            shape_aware
                .loss_grad_with_weights(black_box(x), black_box(y), black_box(w), g)
                .unwrap()
        },
        None,
    ));

    let report = json!({
        "segloss": {
            "version": env!("CARGO_PKG_VERSION"),
            "threads": 1,
            "timing": { "min_reps": MIN_REPS, "budget_s": BUDGET, "max_reps": MAX_REPS },
        },
        "cases": cases,
    });
    let path = dir.join("segloss.json");
    let text = serde_json::to_string_pretty(&report).expect("JSON");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    println!("peers: wrote {}", path.display());
}
