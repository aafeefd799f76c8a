//! `f32` losses over many elements agree with the `f64` ones: the kernels'
//! chunked accumulation (element-type lanes over a chunk, `f64` chunk
//! totals) and the vectorised `exp` / `ln_1p` keep an `f32` loss over 2^24
//! elements within 2e-6 relative of the same loss computed in `f64` on the
//! same (f32-representable) inputs.
//!
//! An optimised build (`cargo test --release --test precision`) runs the
//! full 2^24 elements; a debug build runs 2^22 to stay at a few seconds.
//! The accumulation error of the chunked sums grows with the number of
//! chunks only through the `f64` totals, so the bound does not depend on
//! the size.

use ndarray::{Array, Array4};
use segloss::{BinaryCrossEntropy, DiceLoss, Input, Loss, Reduction};

const SHAPE: [usize; 4] = if cfg!(debug_assertions) {
    [4, 1, 1024, 1024]
} else {
    [16, 1, 1024, 1024]
};
const TOLERANCE: f64 = 2e-6;

/// A xorshift64* generator: deterministic inputs without extra crates.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// An `f32` array and its exact `f64` copy.
    fn arrays(&mut self, f: impl Fn(f64) -> f64) -> (Array4<f32>, Array4<f64>) {
        let a32 = Array::from_shape_simple_fn(SHAPE, || f(self.next_f64()) as f32);
        let a64 = a32.mapv(f64::from);
        (a32, a64)
    }
}

fn relative(a: f32, b: f64) -> f64 {
    (f64::from(a) - b).abs() / b.abs()
}

fn assert_agrees<L: Loss<f32> + Loss<f64>>(
    name: &str,
    loss: &L,
    input: &(Array4<f32>, Array4<f64>),
    target: &(Array4<f32>, Array4<f64>),
) {
    let l64: f64 = loss.loss(&input.1, &target.1).unwrap();
    let l32: f32 = loss.loss(&input.0, &target.0).unwrap();
    let rel = relative(l32, l64);
    eprintln!("{name}: f32 {l32:e}, f64 {l64:e}, relative {rel:.2e}");
    assert!(
        rel <= TOLERANCE,
        "{name}: f32 loss {l32} vs f64 {l64} (relative {rel:e})"
    );
}

fn logits_and_target() -> [(Array4<f32>, Array4<f64>); 2] {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    [
        rng.arrays(|u| 16.0 * u - 8.0),
        rng.arrays(|u| if u < 0.3 { 1.0 } else { 0.0 }),
    ]
}

#[test]
fn bce_f32_agrees_with_f64() {
    let [logits, target] = logits_and_target();
    assert_agrees("bce", &BinaryCrossEntropy::new(), &logits, &target);
    let soft = Rng(7).arrays(|u| u);
    assert_agrees(
        "bce soft, pos_weight 3, sum",
        &BinaryCrossEntropy::new()
            .pos_weight(3.0)
            .reduction(Reduction::Sum),
        &logits,
        &soft,
    );
}

#[test]
fn bce_probabilities_f32_agrees_with_f64() {
    let mut rng = Rng(11);
    let probabilities = rng.arrays(|u| u);
    let target = rng.arrays(|u| if u < 0.3 { 1.0 } else { 0.0 });
    assert_agrees(
        "bce probabilities",
        &BinaryCrossEntropy::new().input(Input::Probabilities),
        &probabilities,
        &target,
    );
}

#[test]
fn dice_f32_agrees_with_f64() {
    let [logits, target] = logits_and_target();
    assert_agrees("dice logits", &DiceLoss::new(), &logits, &target);
    let probabilities = Rng(13).arrays(|u| u);
    assert_agrees(
        "dice probabilities",
        &DiceLoss::new().input(Input::Probabilities).gamma(1.0),
        &probabilities,
        &target,
    );
}
