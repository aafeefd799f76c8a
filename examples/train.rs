//! Train a small convolutional segmentation net on synthetic microscopy
//! images with five losses in turn, and compare how well each one separates
//! touching cells.
//!
//! ```sh
//! cargo run --release --example train
//! ```
//!
//! The data set is generated from a fixed seed: bright round and elongated
//! cells, many of them touching, under uneven illumination and noise, with
//! binary masks that keep a one-pixel background gap between touching cells
//! (as in the U-Net paper's data). The model is a small conv net, three
//! 3×3 convolutions of 12 channels (dilations 1, 2, 1; ReLU) and a 1×1
//! convolution to one logit, over three input channels (the image, a local
//! z-score against uneven illumination, a fine-scale contrast), written by
//! hand with `ndarray` (im2col + matrix products) and trained with Adam
//! from the same initial weights for every loss. The gradient that drives
//! it comes from `segloss`'s `loss_grad`:
//!
//! * BCE, weighted BCE (`pos_weight` = background / foreground pixels),
//!   Dice, Dice + BCE (the sum of both losses and of their gradients), and
//! * the U-Net shape-aware loss, with one weight map per training mask
//!   precomputed by `UNetWeights::for_mask`.
//!
//! Each epoch prints the training loss and, on a held-out image, the Dice
//! score and how many touching cells come out as their own component. The
//! run ends with a comparison table and writes PNG pictures (input, ground
//! truth, weight map, every loss's prediction, and one panel of them all)
//! under `target/examples-out/`.

#[path = "support/heat_map.rs"]
mod heat_map;

use std::f64::consts::PI;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use heat_map::heat_map;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{DynamicImage, GrayImage, Luma, Rgb, RgbImage};
use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, Array3, ArrayView1, ArrayView2, Axis, Zip};
use rayon::prelude::*;
use segloss::distance::{Connectivity, UNetWeights, distance_to, label_components, two_nearest};
use segloss::{BinaryCrossEntropy, DiceLoss, Loss, ShapeAwareLoss};

/// The seed of everything: data set, initial weights, batch order.
const SEED: u64 = 0x5E6_1055;
/// Training images, each `TRAIN_SIZE`² pixels.
const TRAIN_IMAGES: usize = 12;
const TRAIN_SIZE: usize = 128;
/// The held-out image is larger, for more touching pairs to count.
const HELD_OUT_SIZE: usize = 192;
const EPOCHS: usize = 20;
const BATCH: usize = 4;
const LEARNING_RATE: f64 = 0.01;
/// Hidden channels of the conv net.
const WIDTH: usize = 12;
/// Two cells touch when they come within this distance (the gap is 1-2 px).
const TOUCH_DISTANCE: f64 = 2.5;
/// A ground-truth cell counts as found when a predicted component overlaps
/// it with IoU above this (above 0.5 such a match is unique both ways).
const MATCH_IOU: f64 = 0.5;

fn main() {
    if let Err(message) = run() {
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let start = Instant::now();
    let mut rng = SplitMix64::new(SEED);
    let train: Vec<Sample> = (0..TRAIN_IMAGES)
        .map(|_| Sample::generate(TRAIN_SIZE, 16, &mut rng))
        .collect::<Result<_, _>>()?;
    let held_out = Sample::generate(HELD_OUT_SIZE, 38, &mut rng)?;
    let foreground: usize = train.iter().map(|s| s.pixels_in_mask()).sum();
    let total = TRAIN_IMAGES * TRAIN_SIZE * TRAIN_SIZE;
    let pos_weight = (total - foreground) as f64 / foreground as f64;
    println!(
        "data: {TRAIN_IMAGES} training images {TRAIN_SIZE}x{TRAIN_SIZE} ({:.0}% foreground), \
         1 held-out image {HELD_OUT_SIZE}x{HELD_OUT_SIZE} with {} cells, {} of them touching another",
        100.0 * foreground as f64 / total as f64,
        held_out.cells,
        held_out.touching_count(),
    );
    println!(
        "separated = a touching ground-truth cell matched by one predicted component \
         (4-connected) with IoU > {MATCH_IOU}"
    );

    let kinds = [
        LossKind::Bce,
        LossKind::WeightedBce { pos_weight },
        LossKind::Dice,
        LossKind::DiceBce,
        LossKind::ShapeAware,
    ];
    let mut outcomes = Vec::new();
    for kind in kinds {
        outcomes.push(train_with(kind, &train, &held_out)?);
    }
    print_table(&outcomes, &held_out);
    let dir = write_pictures(&held_out, &outcomes)?;
    println!(
        "pictures: {} (total time {:.1} s)",
        dir.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Random numbers

/// SplitMix64 (Steele, Lea & Flood 2014): tiny, fast, and the same on every
/// platform, which is all a reproducible demo needs.
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos()
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

// ---------------------------------------------------------------------------
// Synthetic microscopy

/// An elliptic cell: centre, semi-axes `a ≥ b`, orientation, brightness.
#[derive(Clone, Copy, Debug)]
struct Cell {
    y: f64,
    x: f64,
    a: f64,
    b: f64,
    theta: f64,
    brightness: f64,
}

impl Cell {
    /// Round (60%) or elongated, anywhere; `place_cells` moves it.
    fn random(rng: &mut SplitMix64) -> Self {
        let (a, b) = if rng.uniform() < 0.6 {
            let r = rng.range(6.0, 10.0);
            (r * rng.range(1.0, 1.25), r)
        } else {
            (rng.range(11.0, 17.0), rng.range(5.0, 7.0))
        };
        Cell {
            y: 0.0,
            x: 0.0,
            a,
            b,
            theta: rng.range(0.0, PI),
            brightness: rng.range(0.55, 1.0),
        }
    }

    /// The distance from the centre to the outline in direction `phi`
    /// (`phi` measured from the x axis towards y).
    fn radius_towards(&self, phi: f64) -> f64 {
        let psi = phi - self.theta;
        self.a * self.b / ((self.b * psi.cos()).powi(2) + (self.a * psi.sin()).powi(2)).sqrt()
    }

    /// `(u/a)² + (v/b)²` in the cell's own frame: `<= 1` inside.
    fn rho2(&self, y: f64, x: f64) -> f64 {
        let (dy, dx) = (y - self.y, x - self.x);
        let (sin, cos) = self.theta.sin_cos();
        let u = dx * cos + dy * sin;
        let v = -dx * sin + dy * cos;
        (u / self.a).powi(2) + (v / self.b).powi(2)
    }
}

/// Scatters up to `count` cells; about two in three are pushed against a
/// cell already placed, overlapping it by 1-3 px, which makes clusters.
fn place_cells(size: usize, count: usize, rng: &mut SplitMix64) -> Vec<Cell> {
    let mut cells: Vec<Cell> = Vec::with_capacity(count);
    let side = size as f64;
    for _ in 0..count * 50 {
        if cells.len() == count {
            break;
        }
        let mut cell = Cell::random(rng);
        if !cells.is_empty() && rng.uniform() < 0.65 {
            let other = cells[rng.below(cells.len())];
            let phi = rng.range(0.0, 2.0 * PI);
            let reach =
                other.radius_towards(phi) + cell.radius_towards(phi + PI) - rng.range(1.0, 3.0);
            cell.y = other.y + reach * phi.sin();
            cell.x = other.x + reach * phi.cos();
        } else {
            cell.y = rng.range(0.0, side);
            cell.x = rng.range(0.0, side);
        }
        let inside = (4.0..side - 4.0).contains(&cell.y) && (4.0..side - 4.0).contains(&cell.x);
        if inside && cells.iter().all(|o| compatible(o, &cell)) {
            cells.push(cell);
        }
    }
    cells
}

/// Two cells may touch or overlap slightly, not sit one inside the other.
fn compatible(a: &Cell, b: &Cell) -> bool {
    let phi = (b.y - a.y).atan2(b.x - a.x);
    let distance = (b.y - a.y).hypot(b.x - a.x);
    let overlap = a.radius_towards(phi) + b.radius_towards(phi + PI) - distance;
    overlap < 3.5 && a.rho2(b.y, b.x) > 1.5 && b.rho2(a.y, a.x) > 1.5
}

/// Instance labels: each pixel goes to the cell it is deepest inside, then
/// every pixel with an 8-neighbour of a lower label is cleared. That leaves a
/// background line 1 px wide (in the 8-connected sense) between touching
/// cells, so a mask labelled with `Full` connectivity still separates them.
fn render_labels(cells: &[Cell], size: usize) -> Array2<u32> {
    let owner = Array2::from_shape_fn((size, size), |(y, x)| {
        let (yf, xf) = (y as f64, x as f64);
        let mut best = (1.0, 0u32);
        for (k, cell) in cells.iter().enumerate() {
            let r = cell.rho2(yf, xf);
            if r <= best.0 {
                best = (r, k as u32 + 1);
            }
        }
        best.1
    });
    let mut labels = owner.clone();
    for ((y, x), &l) in owner.indexed_iter() {
        if l == 0 {
            continue;
        }
        let near_lower = neighbours8(y, x, size).any(|(ny, nx)| {
            let m = owner[[ny, nx]];
            m != 0 && m < l
        });
        if near_lower {
            labels[[y, x]] = 0;
        }
    }
    labels
}

fn neighbours8(y: usize, x: usize, size: usize) -> impl Iterator<Item = (usize, usize)> {
    (-1isize..=1)
        .flat_map(|dy| (-1isize..=1).map(move |dx| (dy, dx)))
        .filter(|&d| d != (0, 0))
        .filter_map(move |(dy, dx)| {
            let (ny, nx) = (y as isize + dy, x as isize + dx);
            let ok = ny >= 0 && nx >= 0 && (ny as usize) < size && (nx as usize) < size;
            ok.then_some((ny as usize, nx as usize))
        })
}

/// The microscope's view of the labels: cells brighter inside than at their
/// membrane, blurred optics, a smooth illumination field and sensor noise.
fn render_image(
    cells: &[Cell],
    labels: &Array2<u32>,
    rng: &mut SplitMix64,
) -> Result<Array2<f32>, String> {
    let size = labels.nrows();
    let mask = labels.mapv(|l| l != 0);
    // Depth inside the cell: distance to the nearest background pixel.
    let depth = distance_to(&mask.mapv(|m| !m), None).map_err(|e| e.to_string())?;
    let texture = gaussian_blur(
        &Array2::from_shape_fn((size, size), |_| rng.normal() as f32),
        2.0,
    );
    let mut image = Array2::from_shape_fn((size, size), |(y, x)| {
        let l = labels[[y, x]];
        if l == 0 {
            return 0.12;
        }
        let rim = 1.0 - (-(depth[[y, x]] - 1.0) / 2.0).exp();
        let b = cells[l as usize - 1].brightness;
        (b * (0.55 + 0.45 * rim)) as f32 + 0.25 * texture[[y, x]]
    });
    image = gaussian_blur(&image, 1.0);
    let field = illumination(size, rng);
    let noise = 0.05;
    Zip::from(&mut image).and(&field).for_each(|v, &f| {
        *v = (*v * f + noise * rng.normal() as f32).clamp(0.0, 1.0);
    });
    Ok(image)
}

/// A linear ramp plus a broad bright spot: between about 0.3 and 1.5.
fn illumination(size: usize, rng: &mut SplitMix64) -> Array2<f32> {
    let side = size as f64;
    let angle = rng.range(0.0, 2.0 * PI);
    let (sy, sx) = (rng.range(0.0, side), rng.range(0.0, side));
    Array2::from_shape_fn((size, size), |(y, x)| {
        let (yf, xf) = (y as f64 / side - 0.5, x as f64 / side - 0.5);
        let ramp = 0.8 + 0.35 * (yf * angle.sin() + xf * angle.cos()) * 2.0;
        let d2 = ((y as f64 - sy).powi(2) + (x as f64 - sx).powi(2)) / (0.35 * side).powi(2);
        (ramp + 0.25 * (-d2).exp()).max(0.3) as f32
    })
}

/// Separable Gaussian blur with edge clamping.
fn gaussian_blur(image: &Array2<f32>, sigma: f64) -> Array2<f32> {
    let radius = (3.0 * sigma).ceil() as isize;
    let mut kernel: Vec<f32> = (-radius..=radius)
        .map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp() as f32)
        .collect();
    let sum: f32 = kernel.iter().sum();
    kernel.iter_mut().for_each(|k| *k /= sum);
    let along = |src: &Array2<f32>, axis: usize| {
        let (h, w) = src.dim();
        Array2::from_shape_fn((h, w), |(y, x)| {
            let mut acc = 0.0;
            for (k, &kv) in kernel.iter().enumerate() {
                let o = k as isize - radius;
                let (sy, sx) = if axis == 0 {
                    ((y as isize + o).clamp(0, h as isize - 1) as usize, x)
                } else {
                    (y, (x as isize + o).clamp(0, w as isize - 1) as usize)
                };
                acc += kv * src[[sy, sx]];
            }
            acc
        })
    };
    along(&along(image, 0), 1)
}

/// One image of the data set with everything the training and the
/// evaluation need, computed once.
struct Sample {
    image: Array2<f32>,
    /// The net's input channels, `(channels, H·W)`.
    features: Array2<f32>,
    labels: Array2<u32>,
    cells: usize,
    /// The binary mask as 0/1 floats: the loss's target.
    target: Array2<f32>,
    /// The U-Net weight map of the mask.
    weights: Array2<f32>,
    /// Per label (index 0 unused): whether the cell touches another.
    touching: Vec<bool>,
}

impl Sample {
    fn generate(size: usize, count: usize, rng: &mut SplitMix64) -> Result<Self, String> {
        let cells = place_cells(size, count, rng);
        let labels = render_labels(&cells, size);
        let image = render_image(&cells, &labels, rng)?;
        let mask = labels.mapv(|l| l != 0);
        let weights = UNetWeights::new()
            .for_mask::<f32, _>(&mask)
            .map_err(|e| e.to_string())?;
        let touching = touching_cells(&labels, cells.len())?;
        Ok(Sample {
            features: features(&image),
            image,
            target: mask.mapv(|m| if m { 1.0 } else { 0.0 }),
            labels,
            cells: cells.len(),
            weights,
            touching,
        })
    }

    fn pixels_in_mask(&self) -> usize {
        self.target.iter().filter(|&&t| t > 0.5).count()
    }

    fn touching_count(&self) -> usize {
        self.touching.iter().filter(|&&t| t).count()
    }
}

/// A cell touches another when its second-nearest instance distance `d2`
/// (the distance to the nearest *other* cell) is within `TOUCH_DISTANCE`
/// somewhere inside it.
fn touching_cells(labels: &Array2<u32>, cells: usize) -> Result<Vec<bool>, String> {
    let (_, d2) = two_nearest(labels, None, 2.0 * TOUCH_DISTANCE).map_err(|e| e.to_string())?;
    let mut touching = vec![false; cells + 1];
    Zip::from(labels).and(&d2).for_each(|&l, &d| {
        if l != 0 && d <= TOUCH_DISTANCE {
            touching[l as usize] = true;
        }
    });
    Ok(touching)
}

/// The net's input: the image standardised, a local z-score (intensity
/// against a σ = 8 neighbourhood, which undoes the uneven illumination a
/// small net cannot divide out), and the image minus its σ = 2 blur, which
/// brings out thin dark lines.
fn features(image: &Array2<f32>) -> Array2<f32> {
    let n = image.len() as f32;
    let mean = image.sum() / n;
    let std = (image.mapv(|v| (v - mean).powi(2)).sum() / n)
        .sqrt()
        .max(1e-6);
    let broad = gaussian_blur(image, 8.0);
    let local = image - &broad;
    let spread = gaussian_blur(&local.mapv(|v| v * v), 8.0);
    let fine = image - &gaussian_blur(image, 2.0);
    let mut out = Array2::zeros((3, n as usize));
    for (i, ((&v, (&l, &s)), &f)) in image
        .iter()
        .zip(local.iter().zip(spread.iter()))
        .zip(fine.iter())
        .enumerate()
    {
        out[[0, i]] = (v - mean) / std;
        out[[1, i]] = l / (s + 1e-3).sqrt();
        out[[2, i]] = 4.0 * f / std;
    }
    out
}

// ---------------------------------------------------------------------------
// The model: a small conv net, forward and backward by hand

/// A convolution `k×k` (dilation `dilation`, zero padding, same size) as one
/// matrix product: `weights` is `(out, in·k·k + 1)`, its last column the bias.
struct Layer {
    weights: Array2<f32>,
    kernel: usize,
    dilation: usize,
}

struct Net {
    layers: Vec<Layer>,
}

/// One image's buffers for the forward and the backward pass, reused from
/// step to step: allocating them afresh (about 40 MB per image and step)
/// spent a third of the run in page faults.
struct Workspace {
    /// Each layer's unfolded input (im2col), with the row of ones.
    columns: Vec<Array2<f32>>,
    /// Each hidden layer's output after the ReLU.
    activations: Vec<Array2<f32>>,
    /// The last layer's output, `(1, h·w)`.
    logits: Array2<f32>,
    /// `∂L/∂` each layer's output (before its ReLU).
    d_out: Vec<Array2<f32>>,
    /// `∂L/∂` a layer's unfolded input; sized for the largest layer.
    d_columns: Array2<f32>,
    /// `∂L/∂` each layer's weights.
    grads: Vec<Array2<f32>>,
    h: usize,
    w: usize,
}

impl Net {
    /// 3 → 12 → 12 (dilation 2) → 12 → 1 logit, He-initialised.
    fn new(inputs: usize, rng: &mut SplitMix64) -> Self {
        let shapes = [
            (inputs, WIDTH, 3, 1),
            (WIDTH, WIDTH, 3, 2),
            (WIDTH, WIDTH, 3, 1),
            (WIDTH, 1, 1, 1),
        ];
        let layers = shapes
            .iter()
            .map(|&(fan_in, out, kernel, dilation)| {
                let n = fan_in * kernel * kernel;
                let std = (2.0 / n as f64).sqrt();
                let mut weights =
                    Array2::from_shape_fn((out, n + 1), |_| (std * rng.normal()) as f32);
                weights.column_mut(n).fill(0.0);
                Layer {
                    weights,
                    kernel,
                    dilation,
                }
            })
            .collect();
        Net { layers }
    }

    fn workspace(&self, h: usize, w: usize) -> Workspace {
        let hw = h * w;
        let hidden = &self.layers[..self.layers.len() - 1];
        let widest = self
            .layers
            .iter()
            .map(|l| l.weights.ncols())
            .max()
            .unwrap_or(0);
        Workspace {
            columns: self
                .layers
                .iter()
                .map(|l| Array2::zeros((l.weights.ncols(), hw)))
                .collect(),
            activations: hidden
                .iter()
                .map(|l| Array2::zeros((l.weights.nrows(), hw)))
                .collect(),
            logits: Array2::zeros((1, hw)),
            d_out: self
                .layers
                .iter()
                .map(|l| Array2::zeros((l.weights.nrows(), hw)))
                .collect(),
            d_columns: Array2::zeros((widest, hw)),
            grads: self
                .layers
                .iter()
                .map(|l| Array2::zeros(l.weights.raw_dim()))
                .collect(),
            h,
            w,
        }
    }

    /// The logits of `input` (`(channels, h·w)`) into `ws.logits`.
    fn forward(&self, input: &Array2<f32>, ws: &mut Workspace) {
        let (h, w) = (ws.h, ws.w);
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            let (below, rest) = ws.activations.split_at_mut(i.min(last));
            let x = if i == 0 { input } else { &below[i - 1] };
            im2col(x, h, w, layer.kernel, layer.dilation, &mut ws.columns[i]);
            let out = if i < last {
                &mut rest[0]
            } else {
                &mut ws.logits
            };
            general_mat_mul(1.0, &layer.weights, &ws.columns[i], 0.0, out);
            if i < last {
                out.mapv_inplace(|v| v.max(0.0));
            }
        }
    }

    /// Every layer's weight gradient into `ws.grads`, given `∂L/∂logits`
    /// and the workspace of the forward pass.
    fn backward(&self, d_logits: ArrayView1<f32>, ws: &mut Workspace) {
        let last = self.layers.len() - 1;
        ws.d_out[last].row_mut(0).assign(&d_logits);
        for i in (0..=last).rev() {
            general_mat_mul(1.0, &ws.d_out[i], &ws.columns[i].t(), 0.0, &mut ws.grads[i]);
            if i == 0 {
                break;
            }
            let layer = &self.layers[i];
            let mut d_col = ws
                .d_columns
                .slice_axis_mut(Axis(0), (0..layer.weights.ncols()).into());
            general_mat_mul(1.0, &layer.weights.t(), &ws.d_out[i], 0.0, &mut d_col);
            let dx = &mut ws.d_out[i - 1];
            col2im(d_col.view(), layer.kernel, layer.dilation, ws.h, ws.w, dx);
            // Through the ReLU of the layer below.
            Zip::from(dx).and(&ws.activations[i - 1]).for_each(|d, &a| {
                if a <= 0.0 {
                    *d = 0.0;
                }
            });
        }
    }
}

/// The pixel offset of kernel tap `t` (0..k) at `dilation`.
fn tap_offset(t: usize, kernel: usize, dilation: usize) -> isize {
    (t as isize - (kernel / 2) as isize) * dilation as isize
}

/// For each row `y` of an `h×w` image, the run of `x` whose neighbour at
/// `(dy, dx)` lies inside: `(y, source row, x0, x1)`.
fn shifted_rows(
    h: usize,
    w: usize,
    dy: isize,
    dx: isize,
) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    let x0 = (-dx).max(0) as usize;
    let x1 = (w as isize - dx.max(0)).max(x0 as isize) as usize;
    (0..h).filter_map(move |y| {
        let sy = y as isize + dy;
        (sy >= 0 && (sy as usize) < h).then_some((y, sy as usize, x0, x1))
    })
}

/// Unfolds `x` (`(channels, h·w)`) into `col` (`(channels·k·k + 1, h·w)`):
/// one row per channel and tap holding the shifted image (zero outside),
/// then a row of ones for the bias.
fn im2col(
    x: &Array2<f32>,
    h: usize,
    w: usize,
    kernel: usize,
    dilation: usize,
    col: &mut Array2<f32>,
) {
    let taps = kernel * kernel;
    let channels = x.nrows();
    for c in 0..channels {
        let src = x.row(c);
        let src = src.as_slice().expect("standard layout");
        for t in 0..taps {
            let dy = tap_offset(t / kernel, kernel, dilation);
            let dx = tap_offset(t % kernel, kernel, dilation);
            let mut row = col.row_mut(c * taps + t);
            let dst = row.as_slice_mut().expect("standard layout");
            if dy != 0 || dx != 0 {
                dst.fill(0.0);
            }
            for (y, sy, x0, x1) in shifted_rows(h, w, dy, dx) {
                let s0 = ((sy * w + x0) as isize + dx) as usize;
                dst[y * w + x0..y * w + x1].copy_from_slice(&src[s0..s0 + (x1 - x0)]);
            }
        }
    }
    col.row_mut(channels * taps).fill(1.0);
}

/// The adjoint of [`im2col`]: adds each tap's row of `col` back into `x` at
/// its shift (the bias row is dropped). `x` is overwritten.
fn col2im(
    col: ArrayView2<f32>,
    kernel: usize,
    dilation: usize,
    h: usize,
    w: usize,
    x: &mut Array2<f32>,
) {
    let taps = kernel * kernel;
    x.fill(0.0);
    for c in 0..x.nrows() {
        let mut out = x.row_mut(c);
        let dst = out.as_slice_mut().expect("standard layout");
        for t in 0..taps {
            let dy = tap_offset(t / kernel, kernel, dilation);
            let dx = tap_offset(t % kernel, kernel, dilation);
            let row = col.row(c * taps + t);
            let src = row.as_slice().expect("rows of a row slice are contiguous");
            for (y, sy, x0, x1) in shifted_rows(h, w, dy, dx) {
                let s0 = ((sy * w + x0) as isize + dx) as usize;
                let from = &src[y * w + x0..y * w + x1];
                for (d, &v) in dst[s0..s0 + (x1 - x0)].iter_mut().zip(from) {
                    *d += v;
                }
            }
        }
    }
}

/// Adam (Kingma & Ba 2015) with the usual constants.
struct Adam {
    step: i32,
    m: Vec<Array2<f32>>,
    v: Vec<Array2<f32>>,
}

impl Adam {
    fn new(net: &Net) -> Self {
        let zeros = || {
            net.layers
                .iter()
                .map(|l| Array2::zeros(l.weights.raw_dim()))
                .collect()
        };
        Adam {
            step: 0,
            m: zeros(),
            v: zeros(),
        }
    }

    fn update(&mut self, net: &mut Net, grads: &[Array2<f32>], lr: f64) {
        let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
        self.step += 1;
        let c1 = 1.0 - b1.powi(self.step);
        let c2 = 1.0 - b2.powi(self.step);
        let lr = lr as f32;
        for (((layer, g), m), v) in net
            .layers
            .iter_mut()
            .zip(grads)
            .zip(&mut self.m)
            .zip(&mut self.v)
        {
            Zip::from(&mut layer.weights)
                .and(g)
                .and(m)
                .and(v)
                .for_each(|p, &g, m, v| {
                    *m = b1 * *m + (1.0 - b1) * g;
                    *v = b2 * *v + (1.0 - b2) * g * g;
                    *p -= lr * (*m / c1) / ((*v / c2).sqrt() + eps);
                });
        }
    }
}

// ---------------------------------------------------------------------------
// Losses and training

#[derive(Clone, Copy, Debug)]
enum LossKind {
    Bce,
    WeightedBce { pos_weight: f64 },
    Dice,
    DiceBce,
    ShapeAware,
}

impl LossKind {
    fn name(self) -> &'static str {
        match self {
            LossKind::Bce => "BCE",
            LossKind::WeightedBce { .. } => "weighted BCE",
            LossKind::Dice => "Dice",
            LossKind::DiceBce => "Dice + BCE",
            LossKind::ShapeAware => "shape-aware",
        }
    }

    fn file_stem(self) -> &'static str {
        match self {
            LossKind::Bce => "bce",
            LossKind::WeightedBce { .. } => "weighted_bce",
            LossKind::Dice => "dice",
            LossKind::DiceBce => "dice_bce",
            LossKind::ShapeAware => "shape_aware",
        }
    }

    /// The loss of a batch of logits `(N, H, W)` and its gradient in `grad`.
    fn loss_grad(
        self,
        logits: &Array3<f32>,
        target: &Array3<f32>,
        weights: &Array3<f32>,
        grad: &mut Array3<f32>,
    ) -> segloss::Result<f32> {
        match self {
            LossKind::Bce => BinaryCrossEntropy::new().loss_grad(logits, target, grad),
            LossKind::WeightedBce { pos_weight } => BinaryCrossEntropy::new()
                .pos_weight(pos_weight)
                .loss_grad(logits, target, grad),
            LossKind::Dice => DiceLoss::new().loss_grad(logits, target, grad),
            LossKind::DiceBce => {
                let dice = DiceLoss::new().loss_grad(logits, target, grad)?;
                let mut bce_grad = Array3::zeros(grad.raw_dim());
                let bce = BinaryCrossEntropy::new().loss_grad(logits, target, &mut bce_grad)?;
                *grad += &bce_grad;
                Ok(dice + bce)
            }
            LossKind::ShapeAware => {
                ShapeAwareLoss::new().loss_grad_with_weights(logits, target, weights, grad)
            }
        }
    }
}

/// What one loss's training run ends with.
struct Outcome {
    kind: LossKind,
    scores: Scores,
    probability: Array2<f32>,
    predicted: Array2<u32>,
    time: Duration,
}

fn train_with(kind: LossKind, train: &[Sample], held_out: &Sample) -> Result<Outcome, String> {
    println!("\n== {} ==", kind.name());
    let start = Instant::now();
    // The same seed for every loss: same initial weights, same batch order.
    let mut rng = SplitMix64::new(SEED ^ 0xA5A5);
    let mut net = Net::new(train[0].features.nrows(), &mut rng);
    let mut adam = Adam::new(&net);
    let (h, w) = train[0].target.dim();
    let mut workspaces: Vec<Workspace> = (0..BATCH).map(|_| net.workspace(h, w)).collect();
    let (hh, hw) = held_out.target.dim();
    let mut eval_space = net.workspace(hh, hw);
    let mut order: Vec<usize> = (0..train.len()).collect();
    for epoch in 1..=EPOCHS {
        rng.shuffle(&mut order);
        // Cosine decay: large steps early, fine ones at the end.
        let lr = LEARNING_RATE * 0.5 * (1.0 + (PI * (epoch - 1) as f64 / EPOCHS as f64).cos());
        let mut epoch_loss = 0.0;
        for batch in order.chunks(BATCH) {
            let slots = &mut workspaces[..batch.len()];
            let (loss, grads) = batch_gradient(kind, &net, train, batch, slots)?;
            adam.update(&mut net, &grads, lr);
            epoch_loss += f64::from(loss) * batch.len() as f64;
        }
        let (scores, _, _) = evaluate(&net, held_out, &mut eval_space);
        println!(
            "epoch {epoch:2}/{EPOCHS}  loss {:.4}  held-out Dice {:.3}  separated {}/{}  ({:.1} s)",
            epoch_loss / train.len() as f64,
            scores.dice,
            scores.separated,
            scores.touching,
            start.elapsed().as_secs_f64(),
        );
    }
    let time = start.elapsed();
    let (scores, probability, predicted) = evaluate(&net, held_out, &mut eval_space);
    Ok(Outcome {
        kind,
        scores,
        probability,
        predicted,
        time,
    })
}

/// One batch: forward each image in parallel, the loss over the stacked
/// logits (Dice is not a sum over images, so it must see the whole batch),
/// then backward each image in parallel and sum the weight gradients.
fn batch_gradient(
    kind: LossKind,
    net: &Net,
    train: &[Sample],
    batch: &[usize],
    slots: &mut [Workspace],
) -> Result<(f32, Vec<Array2<f32>>), String> {
    let (h, w) = train[batch[0]].target.dim();
    slots
        .par_iter_mut()
        .zip(batch)
        .for_each(|(ws, &i)| net.forward(&train[i].features, ws));
    let stack = |field: fn(&Sample) -> &Array2<f32>| {
        Array3::from_shape_fn((batch.len(), h, w), |(n, y, x)| {
            field(&train[batch[n]])[[y, x]]
        })
    };
    let logits = Array3::from_shape_fn((batch.len(), h, w), |(n, y, x)| {
        slots[n].logits[[0, y * w + x]]
    });
    let target = stack(|s| &s.target);
    let weights = stack(|s| &s.weights);
    let mut grad = Array3::zeros(logits.raw_dim());
    let loss = kind
        .loss_grad(&logits, &target, &weights, &mut grad)
        .map_err(|e| format!("{}: {e}", kind.name()))?;
    slots.par_iter_mut().enumerate().for_each(|(n, ws)| {
        let d = grad.index_axis(Axis(0), n);
        let d = d.to_shape(h * w).expect("a fresh array is contiguous");
        net.backward(d.view(), ws);
    });
    let mut total = slots[0].grads.clone();
    for ws in &slots[1..] {
        for (t, g) in total.iter_mut().zip(&ws.grads) {
            *t += g;
        }
    }
    Ok((loss, total))
}

// ---------------------------------------------------------------------------
// Evaluation

#[derive(Clone, Copy, Debug)]
struct Scores {
    dice: f64,
    iou: f64,
    /// Touching ground-truth cells matched by a predicted component.
    separated: usize,
    touching: usize,
    /// All ground-truth cells matched by a predicted component.
    matched: usize,
    cells: usize,
}

/// Scores the net on `sample`; also returns the probability map and the
/// predicted mask's components.
fn evaluate(net: &Net, sample: &Sample, ws: &mut Workspace) -> (Scores, Array2<f32>, Array2<u32>) {
    let (h, w) = sample.target.dim();
    net.forward(&sample.features, ws);
    let logits = ws.logits.to_shape((h, w)).expect("h·w logits");
    let probability = logits.mapv(|x| 1.0 / (1.0 + (-x).exp()));
    let mask = logits.mapv(|x| x > 0.0);
    let (mut both, mut predicted, mut truth) = (0usize, 0usize, 0usize);
    Zip::from(&mask).and(&sample.target).for_each(|&p, &t| {
        let t = t > 0.5;
        both += usize::from(p && t);
        predicted += usize::from(p);
        truth += usize::from(t);
    });
    let dice = 2.0 * both as f64 / (predicted + truth).max(1) as f64;
    let iou = both as f64 / (predicted + truth - both).max(1) as f64;
    let (components, count) = label_components(&mask, Connectivity::Face);
    let found = matched_cells(&sample.labels, sample.cells, &components, count);
    let scores = Scores {
        dice,
        iou,
        separated: (1..=sample.cells)
            .filter(|&k| found[k] && sample.touching[k])
            .count(),
        touching: sample.touching_count(),
        matched: found.iter().filter(|&&f| f).count(),
        cells: sample.cells,
    };
    (scores, probability, components)
}

/// Per ground-truth label (index 0 unused): whether some predicted
/// component overlaps it with IoU above `MATCH_IOU`.
fn matched_cells(
    truth: &Array2<u32>,
    cells: usize,
    predicted: &Array2<u32>,
    count: usize,
) -> Vec<bool> {
    let stride = count + 1;
    let mut overlap = vec![0u32; (cells + 1) * stride];
    let (mut area_t, mut area_p) = (vec![0u32; cells + 1], vec![0u32; stride]);
    Zip::from(truth).and(predicted).for_each(|&t, &p| {
        overlap[t as usize * stride + p as usize] += 1;
        area_t[t as usize] += 1;
        area_p[p as usize] += 1;
    });
    (0..=cells)
        .map(|t| {
            t > 0
                && (1..=count).any(|p| {
                    let inter = f64::from(overlap[t * stride + p]);
                    let union = f64::from(area_t[t] + area_p[p]) - inter;
                    inter > MATCH_IOU * union
                })
        })
        .collect()
}

fn print_table(outcomes: &[Outcome], held_out: &Sample) {
    println!(
        "\nheld-out image: {} cells, {} touching another\n",
        held_out.cells,
        held_out.touching_count()
    );
    println!(
        "| {:<12} | {:>5} | {:>5} | {:>17} | {:>13} | {:>8} |",
        "loss", "Dice", "IoU", "touching separated", "cells matched", "time"
    );
    println!(
        "|{:-<14}|{:->7}|{:->7}|{:->20}|{:->15}|{:->10}|",
        "", "", "", "", "", ""
    );
    for o in outcomes {
        let s = &o.scores;
        println!(
            "| {:<12} | {:.3} | {:.3} | {:>18} | {:>13} | {:>6.1} s |",
            o.kind.name(),
            s.dice,
            s.iou,
            format!("{}/{}", s.separated, s.touching),
            format!("{}/{}", s.matched, s.cells),
            o.time.as_secs_f64(),
        );
    }
}

// ---------------------------------------------------------------------------
// Pictures

fn output_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("examples-out")
}

fn write_pictures(held_out: &Sample, outcomes: &[Outcome]) -> Result<PathBuf, String> {
    let dir = output_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let save = |image: DynamicImage, name: &str| save_png(&image, &dir.join(name));
    let truth = instances(&held_out.labels);
    let weights = heat_map(&held_out.weights);
    save(gray(&held_out.image, 256).into(), "input.png")?;
    save(truth.clone().into(), "ground_truth.png")?;
    save(weights.clone().into(), "weight_map.png")?;
    // In the panels the noisy input is posterised to 32 levels (invisible
    // under the noise), which halves the panels' PNG size.
    let input = DynamicImage::from(gray(&held_out.image, 32)).to_rgb8();
    let mut tiles = vec![
        (input, "INPUT".to_string()),
        (truth, "GROUND TRUTH".to_string()),
        (weights, "WEIGHT MAP".to_string()),
    ];
    save(panel(&tiles, 3).into(), "weight_map_panel.png")?;
    for o in outcomes {
        let stem = o.kind.file_stem();
        let components = instances(&o.predicted);
        save(
            gray(&o.probability, 256).into(),
            &format!("probability_{stem}.png"),
        )?;
        save(components.clone().into(), &format!("prediction_{stem}.png"))?;
        let s = &o.scores;
        let caption = format!(
            "{} {}/{}",
            o.kind.name().to_uppercase(),
            s.separated,
            s.touching
        );
        tiles.push((components, caption));
    }
    save(panel(&tiles, 4).into(), "comparison.png")?;
    Ok(dir)
}

/// Writes a PNG with the best compression (the default is the fastest).
fn save_png(image: &DynamicImage, path: &Path) -> Result<(), String> {
    let fail = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let file = File::create(path).map_err(|e| fail(&e))?;
    let encoder = PngEncoder::new_with_quality(
        BufWriter::new(file),
        CompressionType::Best,
        FilterType::Adaptive,
    );
    image.write_with_encoder(encoder).map_err(|e| fail(&e))
}

/// Values in `[0, 1]` as gray, rounded to `levels` levels.
fn gray(values: &Array2<f32>, levels: u32) -> GrayImage {
    let (h, w) = values.dim();
    let top = (levels - 1) as f32;
    GrayImage::from_fn(w as u32, h as u32, |x, y| {
        let v = values[[y as usize, x as usize]].clamp(0.0, 1.0);
        Luma([((v * top).round() / top * 255.0).round() as u8])
    })
}

/// One colour per instance label, black background; neighbouring labels get
/// distant hues (golden-ratio steps), so merged cells show as one colour.
fn instances(labels: &Array2<u32>) -> RgbImage {
    let (h, w) = labels.dim();
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let l = labels[[y as usize, x as usize]];
        if l == 0 {
            return Rgb([0, 0, 0]);
        }
        let hue = (f64::from(l) * 0.618_034).fract();
        hsv(hue, 0.65, 0.95)
    })
}

fn hsv(hue: f64, saturation: f64, value: f64) -> Rgb<u8> {
    let h = hue * 6.0;
    let c = value * saturation;
    let x = c * (1.0 - (h % 2.0 - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = value - c;
    let byte = |v: f64| ((v + m) * 255.0).round() as u8;
    Rgb([byte(r), byte(g), byte(b)])
}

/// Tiles of one size in a grid of `columns`, each under a caption strip.
fn panel(tiles: &[(RgbImage, String)], columns: usize) -> RgbImage {
    const GAP: u32 = 4;
    const STRIP: u32 = 22;
    let (tw, th) = tiles[0].0.dimensions();
    let rows = tiles.len().div_ceil(columns) as u32;
    let columns = columns as u32;
    let width = columns * tw + (columns + 1) * GAP;
    let height = rows * (th + STRIP) + (rows + 1) * GAP;
    let mut out = RgbImage::from_pixel(width, height, Rgb([32, 32, 32]));
    for (i, (tile, caption)) in tiles.iter().enumerate() {
        let (col, row) = (i as u32 % columns, i as u32 / columns);
        let x0 = GAP + col * (tw + GAP);
        let y0 = GAP + row * (th + STRIP + GAP);
        draw_text(&mut out, caption, x0 + 2, y0 + 4, 2);
        image::imageops::replace(&mut out, tile, i64::from(x0), i64::from(y0 + STRIP));
    }
    out
}

/// Writes `text` in a 5×7 pixel font scaled by `scale`, white.
fn draw_text(image: &mut RgbImage, text: &str, x0: u32, y0: u32, scale: u32) {
    for (i, ch) in text.chars().enumerate() {
        let Some(rows) = glyph(ch) else { continue };
        let gx = x0 + i as u32 * (5 * scale + 1);
        for (r, bits) in rows.iter().enumerate() {
            for c in 0..5u32 {
                if bits & (0b10000 >> c) == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let (x, y) = (gx + c * scale + dx, y0 + r as u32 * scale + dy);
                        if x < image.width() && y < image.height() {
                            image.put_pixel(x, y, Rgb([235, 235, 235]));
                        }
                    }
                }
            }
        }
    }
}

/// The glyphs the captions use (space and unknown characters are blank).
fn glyph(ch: char) -> Option<[u8; 7]> {
    Some(match ch {
        'A' => [
            0b01110, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001,
        ],
        'B' => [
            0b11110, 0b10001, 0b10001, 0b11110, 0b10001, 0b10001, 0b11110,
        ],
        'C' => [
            0b01110, 0b10001, 0b10000, 0b10000, 0b10000, 0b10001, 0b01110,
        ],
        'D' => [
            0b11110, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b11110,
        ],
        'E' => [
            0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b11111,
        ],
        'G' => [
            0b01110, 0b10001, 0b10000, 0b10111, 0b10001, 0b10001, 0b01111,
        ],
        'H' => [
            0b10001, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001,
        ],
        'I' => [
            0b01110, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110,
        ],
        'M' => [
            0b10001, 0b11011, 0b10101, 0b10101, 0b10001, 0b10001, 0b10001,
        ],
        'N' => [
            0b10001, 0b10001, 0b11001, 0b10101, 0b10011, 0b10001, 0b10001,
        ],
        'O' => [
            0b01110, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110,
        ],
        'P' => [
            0b11110, 0b10001, 0b10001, 0b11110, 0b10000, 0b10000, 0b10000,
        ],
        'R' => [
            0b11110, 0b10001, 0b10001, 0b11110, 0b10100, 0b10010, 0b10001,
        ],
        'S' => [
            0b01111, 0b10000, 0b10000, 0b01110, 0b00001, 0b00001, 0b11110,
        ],
        'T' => [
            0b11111, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100,
        ],
        'U' => [
            0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110,
        ],
        'W' => [
            0b10001, 0b10001, 0b10001, 0b10101, 0b10101, 0b10101, 0b01010,
        ],
        '0' => [
            0b01110, 0b10001, 0b10011, 0b10101, 0b11001, 0b10001, 0b01110,
        ],
        '1' => [
            0b00100, 0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110,
        ],
        '2' => [
            0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b01000, 0b11111,
        ],
        '3' => [
            0b11111, 0b00010, 0b00100, 0b00010, 0b00001, 0b10001, 0b01110,
        ],
        '4' => [
            0b00010, 0b00110, 0b01010, 0b10010, 0b11111, 0b00010, 0b00010,
        ],
        '5' => [
            0b11111, 0b10000, 0b11110, 0b00001, 0b00001, 0b10001, 0b01110,
        ],
        '6' => [
            0b00110, 0b01000, 0b10000, 0b11110, 0b10001, 0b10001, 0b01110,
        ],
        '7' => [
            0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b01000, 0b01000,
        ],
        '8' => [
            0b01110, 0b10001, 0b10001, 0b01110, 0b10001, 0b10001, 0b01110,
        ],
        '9' => [
            0b01110, 0b10001, 0b10001, 0b01111, 0b00001, 0b00010, 0b01100,
        ],
        '/' => [
            0b00000, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0b00000,
        ],
        '-' => [
            0b00000, 0b00000, 0b00000, 0b11111, 0b00000, 0b00000, 0b00000,
        ],
        '+' => [
            0b00000, 0b00100, 0b00100, 0b11111, 0b00100, 0b00100, 0b00000,
        ],
        '.' => [
            0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b01100, 0b01100,
        ],
        _ => return None,
    })
}
