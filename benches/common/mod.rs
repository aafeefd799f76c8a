//! What the loss benches share: deterministic inputs and the floor kernels
//! (see `losses.rs`).
//!
//! Every array is allocated by `segloss::alloc::zeros`, on transparent huge
//! pages from 4 MiB, as NumPy allocates the peers' inputs (see
//! `benches/peers`): the losses, their floors and the peers then read and
//! write memory backed alike.

use ndarray::{Array, Array4};
use segloss::Float;

/// Independent accumulators of the floor kernels.
const FLOOR_LANES: usize = 8;

/// A xorshift64* generator: deterministic inputs without extra crates.
struct Rng(u64);

impl Rng {
    /// A uniform value in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11;
        bits as f64 / (1u64 << 53) as f64
    }

    /// An array of the given shape filled with `f(uniform)`, in memory
    /// order.
    fn array<A: Float>(&mut self, shape: [usize; 4], f: impl Fn(f64) -> f64) -> Array4<A> {
        let mut a = segloss::alloc::zeros(shape);
        a.iter_mut()
            .for_each(|v| *v = A::from_f64(f(self.next_f64())));
        a
    }
}

/// Read floor: `Σ x·y` over two slices (reads two inputs, reduces).
pub fn floor_read<A: Float>(x: &[A], y: &[A]) -> A {
    let mut acc = [A::zero(); FLOOR_LANES];
    for (xc, yc) in x.chunks_exact(FLOOR_LANES).zip(y.chunks_exact(FLOOR_LANES)) {
        for k in 0..FLOOR_LANES {
            acc[k] += xc[k] * yc[k];
        }
    }
    acc.iter().fold(A::zero(), |s, &a| s + a)
}

/// Read-write floor: `g = x - y` and `Σ g` (reads two inputs, writes one,
/// reduces).
pub fn floor_read_write<A: Float>(x: &[A], y: &[A], g: &mut [A]) -> A {
    let mut acc = [A::zero(); FLOOR_LANES];
    for ((gc, xc), yc) in g
        .chunks_exact_mut(FLOOR_LANES)
        .zip(x.chunks_exact(FLOOR_LANES))
        .zip(y.chunks_exact(FLOOR_LANES))
    {
        for k in 0..FLOOR_LANES {
            let d = xc[k] - yc[k];
            gc[k] = d;
            acc[k] += d;
        }
    }
    acc.iter().fold(A::zero(), |s, &a| s + a)
}

/// Write floor: `g` filled with a running count per lane (writes one
/// output, reads nothing), and the last counts summed. The least that the
/// second pass of a region loss moves: its gradient can only be written
/// once sums over the whole input are known, so `floor/read` plus
/// `floor/write` bounds such a loss's `loss_grad` from below.
pub fn floor_write<A: Float>(g: &mut [A]) -> A {
    let mut acc = [A::zero(); FLOOR_LANES];
    for gc in g.chunks_exact_mut(FLOOR_LANES) {
        for (g, a) in gc.iter_mut().zip(&mut acc) {
            *a += A::one();
            *g = *a;
        }
    }
    acc.iter().fold(A::zero(), |s, &a| s + a)
}

/// Read floor of the pixel-weighted loss: `Σ x·y·w` (reads three inputs).
pub fn floor_read3<A: Float>(x: &[A], y: &[A], w: &[A]) -> A {
    let mut acc = [A::zero(); FLOOR_LANES];
    for ((xc, yc), wc) in x
        .chunks_exact(FLOOR_LANES)
        .zip(y.chunks_exact(FLOOR_LANES))
        .zip(w.chunks_exact(FLOOR_LANES))
    {
        for k in 0..FLOOR_LANES {
            acc[k] += xc[k] * yc[k] * wc[k];
        }
    }
    acc.iter().fold(A::zero(), |s, &a| s + a)
}

/// Read-write floor of the pixel-weighted loss: `g = (x - y)·w` and `Σ g`
/// (reads three inputs, writes one).
pub fn floor_read3_write<A: Float>(x: &[A], y: &[A], w: &[A], g: &mut [A]) -> A {
    let mut acc = [A::zero(); FLOOR_LANES];
    for (((gc, xc), yc), wc) in g
        .chunks_exact_mut(FLOOR_LANES)
        .zip(x.chunks_exact(FLOOR_LANES))
        .zip(y.chunks_exact(FLOOR_LANES))
        .zip(w.chunks_exact(FLOOR_LANES))
    {
        for k in 0..FLOOR_LANES {
            let d = (xc[k] - yc[k]) * wc[k];
            gc[k] = d;
            acc[k] += d;
        }
    }
    acc.iter().fold(A::zero(), |s, &a| s + a)
}

/// The operands of one group.
pub struct Data<A> {
    pub logits: Array4<A>,
    pub probabilities: Array4<A>,
    pub target: Array4<A>,
    pub weights: Array4<A>,
    pub grad: Array4<A>,
}

impl<A: Float> Data<A> {
    pub fn new(shape: [usize; 4]) -> Self {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        Self {
            logits: rng.array(shape, |u| 16.0 * u - 8.0),
            probabilities: rng.array(shape, |u| u),
            target: rng.array(shape, |u| if u < 0.3 { 1.0 } else { 0.0 }),
            weights: rng.array(shape, |u| 1.0 + 10.0 * u),
            grad: segloss::alloc::zeros(shape),
        }
    }
}

/// Softmax logits uniform in [-8, 8] of an `(N, C, H, W)` shape and a
/// one-hot target (each position's class uniform over the `C` classes).
pub fn class_data<A: Float>(shape: [usize; 4]) -> (Array4<A>, Array4<A>) {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let logits = rng.array(shape, |u| 16.0 * u - 8.0);
    let [n, c, h, w] = shape;
    let labels = Array::from_shape_simple_fn((n, h, w), || {
        ((rng.next_f64() * c as f64) as usize).min(c - 1)
    });
    let mut target = segloss::alloc::zeros(shape);
    for ((n, k, i, j), t) in target.indexed_iter_mut() {
        if labels[[n, i, j]] == k {
            *t = A::one();
        }
    }
    (logits, target)
}
