//! The kernels' execution paths give bit-identical results: the AVX-512
//! and AVX2 dispatch against each other and, but for the losses that fuse
//! their multiply-adds there, against the portable code; and (with the
//! `rayon` feature) the parallel blocks against the serial ones and across
//! thread counts.
//!
//! The tests that compare two passes bit for bit run under
//! [`with_cap`], so that the dispatch test's caps (seen by every thread)
//! cannot change the path between the two.

use super::BLOCK;
use super::dispatch::{Isa, with_cap};
use ndarray::{Array4, ShapeBuilder};

use crate::{
    BinaryCrossEntropy, CrossEntropy, DiceLoss, Float, FocalLoss, Input, Loss, ShapeAwareLoss,
    TverskyLoss,
};

/// More elements than `BLOCK` (2^16), not a multiple of it.
const SHAPE: [usize; 4] = [2, 2, 131, 131];

/// More elements than `PARALLEL_MIN` (2^18).
#[cfg(feature = "rayon")]
const LARGE: [usize; 4] = [2, 2, 263, 251];

/// Deterministic inputs: logits in [-8, 8], probabilities in [0, 1], a
/// binary target, weights in [1, 11] and a one-hot target over axis 1.
fn data<A: Float>(shape: [usize; 4]) -> [Array4<A>; 5] {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut array =
        |f: &dyn Fn(f64) -> f64| Array4::from_shape_simple_fn(shape, || A::from_f64(f(next())));
    let logits = array(&|u| 16.0 * u - 8.0);
    let probabilities = array(&|u| u);
    let target = array(&|u| if u < 0.3 { 1.0 } else { 0.0 });
    let weights = array(&|u| 1.0 + 10.0 * u);
    let one_hot = Array4::from_shape_fn(shape, |(n, c, i, j)| {
        A::from_f64(f64::from(u8::from((n + i * 7 + j * 13) % shape[1] == c)))
    });
    [logits, probabilities, target, weights, one_hot]
}

/// Every loss's value and gradient as bits, over inputs that take the
/// slice paths, the blocked paths, the strided paths and the softmax tiles.
fn results<A: Float>(shape: [usize; 4]) -> Vec<(String, u64, Vec<u64>)>
where
    BinaryCrossEntropy: Loss<A>,
    DiceLoss: Loss<A>,
    CrossEntropy: Loss<A>,
    FocalLoss: Loss<A>,
    TverskyLoss: Loss<A>,
{
    let [logits, probabilities, target, weights, one_hot] = data::<A>(shape);
    let mut fortran = Array4::<A>::zeros(shape.f());
    fortran.assign(&logits);
    let mut out = Vec::new();
    // The gradient of a `loss_grad` (none for a `loss`).
    let mut record = |name: &str, value: A, grad: Option<&Array4<A>>| {
        out.push((
            name.to_string(),
            value.as_f64().to_bits(),
            grad.iter()
                .flat_map(|g| g.iter())
                .map(|g| g.as_f64().to_bits())
                .collect(),
        ));
    };
    let mut grad = Array4::<A>::zeros(shape);
    macro_rules! both {
        ($name:expr, $loss:expr, $x:expr, $y:expr) => {{
            let loss = $loss;
            let value = loss.loss($x, $y).unwrap();
            record(concat!($name, "/loss"), value, None);
            let value = loss.loss_grad($x, $y, &mut grad).unwrap();
            record(concat!($name, "/loss_grad"), value, Some(&grad));
        }};
    }
    both!("bce", BinaryCrossEntropy::new(), &logits, &target);
    both!("bce_strided", BinaryCrossEntropy::new(), &fortran, &target);
    both!(
        "wbce",
        BinaryCrossEntropy::new().pos_weight(3.0),
        &logits,
        &target
    );
    both!(
        "bce_prob",
        BinaryCrossEntropy::new().input(Input::Probabilities),
        &probabilities,
        &target
    );
    both!("focal", FocalLoss::new(), &logits, &target);
    both!("dice", DiceLoss::new(), &logits, &target);
    both!(
        "dice_prob",
        DiceLoss::new().input(Input::Probabilities),
        &probabilities,
        &target
    );
    both!(
        "dice_per_class",
        DiceLoss::new().per_sample(true).per_class(true),
        &logits,
        &target
    );
    both!("tversky", TverskyLoss::new(), &logits, &target);
    both!("ce", CrossEntropy::new(), &logits, &one_hot);
    both!(
        "focal_softmax",
        FocalLoss::new().input(Input::SoftmaxLogits),
        &logits,
        &one_hot
    );
    both!(
        "mdice",
        DiceLoss::new().input(Input::SoftmaxLogits).per_class(true),
        &logits,
        &one_hot
    );
    let shape_aware = ShapeAwareLoss::new();
    let value = shape_aware
        .loss_with_weights(&logits, &target, &weights)
        .unwrap();
    record("shape_aware/loss", value, None);
    let value = shape_aware
        .loss_grad_with_weights(&logits, &target, &weights, &mut grad)
        .unwrap();
    record("shape_aware/loss_grad", value, Some(&grad));
    out
}

fn assert_same(a: &[(String, u64, Vec<u64>)], b: &[(String, u64, Vec<u64>)]) {
    assert_eq!(a.len(), b.len());
    for ((name, va, ga), (_, vb, gb)) in a.iter().zip(b) {
        assert_eq!(va, vb, "{name}: the values differ");
        assert!(ga == gb, "{name}: the gradients differ");
    }
}

/// The losses of [`results`] whose logistic stages fuse their
/// multiply-adds on the wide paths (`dispatch::run_fma`).
const FUSED: [&str; 4] = ["bce/", "bce_strided/", "wbce/", "shape_aware/"];

/// As [`assert_same`] for a pass with FMA (`a`) and one without (`b`):
/// the losses of [`FUSED`] within a few ulps of the element type (`eps`),
/// with at least one difference among them (else the wide path did not
/// fuse); the rest bit for bit.
fn assert_same_but_fused(a: &[(String, u64, Vec<u64>)], b: &[(String, u64, Vec<u64>)], eps: f64) {
    assert_eq!(a.len(), b.len());
    let mut fused_differ = false;
    let mut worst = [0.0f64; 2];
    for ((name, va, ga), (_, vb, gb)) in a.iter().zip(b) {
        if !FUSED.iter().any(|f| name.starts_with(f)) {
            assert_eq!(va, vb, "{name}: the values differ");
            assert!(ga == gb, "{name}: the gradients differ");
            continue;
        }
        fused_differ |= va != vb || ga != gb;
        // In units of `eps` relative to the larger magnitude.
        let ulps = |a: u64, b: u64| {
            let (a, b) = (f64::from_bits(a), f64::from_bits(b));
            (a - b).abs() / (eps * a.abs().max(b.abs()).max(f64::MIN_POSITIVE))
        };
        worst[0] = worst[0].max(ulps(*va, *vb));
        for (&p, &q) in ga.iter().zip(gb) {
            worst[1] = worst[1].max(ulps(p, q));
        }
    }
    let [values, grads] = worst;
    eprintln!("fused against unfused: values within {values:.2} eps, gradients {grads:.2} eps");
    assert!(fused_differ, "no loss of {FUSED:?} changed with FMA");
    assert!(values <= 16.0, "values differ by {values} eps");
    assert!(grads <= 8.0, "gradient elements differ by {grads} eps");
}

/// The one test of the losses that caps the dispatch (a cap seen by every
/// test thread; the tests that compare passes bit for bit hold the lock of
/// [`with_cap`]): the widest path this CPU has and AVX2 give the same bits,
/// and the baseline too, but for the losses that fuse their multiply-adds
/// on the wide paths, which it gives within a few ulps. Meaningful in an
/// optimised build (`cargo test --release`), where the loops vectorise.
#[test]
fn dispatch_paths_agree() {
    // Two classes, and three to five for the softmax losses' other class
    // counts (fixed up to four, see `with_classes!`).
    let [n, _, h, _] = SHAPE;
    for shape in [SHAPE, [n, 3, h, 37], [n, 4, h, 37], [n, 5, h, 37]] {
        let (widest, capped) =
            super::dispatch::on_every_path(|| (results::<f32>(shape), results::<f64>(shape)));
        let wide = with_cap(None, super::dispatch::in_use) > Isa::Baseline;
        for (isa, capped) in capped {
            if wide && isa == Isa::Baseline {
                assert_same_but_fused(&widest.0, &capped.0, f64::from(f32::EPSILON));
                assert_same_but_fused(&widest.1, &capped.1, f64::EPSILON);
            } else {
                assert_same(&widest.0, &capped.0);
                assert_same(&widest.1, &capped.1);
            }
        }
    }
}

/// The softmax losses give the same bits whether the class count is fixed
/// at compile time (two to four classes) or read at run time.
#[test]
fn fixed_and_run_time_class_counts_are_bit_identical() {
    for classes in 2..=4 {
        assert_switch_changes_nothing([2, classes, 37, 41], super::softmax::force_dynamic);
    }
}

/// Asserts that every loss gives the same bits on inputs of `shape` with
/// `switch(true)` as with `switch(false)` (left so).
fn assert_switch_changes_nothing(shape: [usize; 4], switch: fn(bool)) {
    with_cap(None, || {
        let off = (results::<f32>(shape), results::<f64>(shape));
        switch(true);
        let on = (results::<f32>(shape), results::<f64>(shape));
        switch(false);
        assert_same(&off.0, &on.0);
        assert_same(&off.1, &on.1);
    });
}

#[cfg(feature = "rayon")]
#[test]
fn parallel_blocks_match_serial_for_any_thread_count() {
    let in_pool = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| (results::<f32>(LARGE), results::<f64>(LARGE)))
    };
    with_cap(None, || {
        let two = in_pool(2);
        let one = in_pool(1);
        super::force_serial(true);
        let serial = (results::<f32>(LARGE), results::<f64>(LARGE));
        super::force_serial(false);
        for other in [&one, &serial] {
            assert_same(&two.0, &other.0);
            assert_same(&two.1, &other.1);
        }
    });
}

/// An element function with its staged form, or its screen, turned off
/// (for the tests below, which compare the passes with and without).
struct Restricted<E> {
    inner: E,
    staged: bool,
    screens: bool,
}

impl<A: Float, E: super::pixel::Elementwise<A>> super::pixel::Elementwise<A> for Restricted<E> {
    fn domain(&self) -> super::Domain {
        self.inner.domain()
    }
    fn value(&self, x: A, y: A) -> A {
        self.inner.value(x, y)
    }
    fn value_grad(&self, x: A, y: A) -> (A, A) {
        self.inner.value_grad(x, y)
    }
    const FORMS: usize = E::FORMS;
    fn form(&self) -> usize {
        self.inner.form()
    }
    fn value_in<const F: usize>(&self, x: A, y: A) -> A {
        self.inner.value_in::<F>(x, y)
    }
    fn value_grad_in<const F: usize>(&self, x: A, y: A) -> (A, A) {
        self.inner.value_grad_in::<F>(x, y)
    }
    fn staged<const F: usize>(&self) -> bool {
        self.staged && self.inner.staged::<F>()
    }
    fn screens<const F: usize>(&self) -> bool {
        self.screens && self.inner.screens::<F>()
    }
    fn bounded_grad<const F: usize>(&self) -> bool {
        self.inner.bounded_grad::<F>()
    }
    fn stage_in<const F: usize>(&self, x: A, fma: super::math::Fma) -> A {
        self.inner.stage_in::<F>(x, fma)
    }
    fn stage2_in<const F: usize>(&self, s: A, fma: super::math::Fma) -> A {
        self.inner.stage2_in::<F>(s, fma)
    }
    fn value_grad_staged_in<const F: usize>(
        &self,
        x: A,
        y: A,
        s: A,
        t: A,
        fma: super::math::Fma,
    ) -> (A, A) {
        self.inner.value_grad_staged_in::<F>(x, y, s, t, fma)
    }
}

/// The pixel kernel's `loss` and `loss_grad` (scale 1/4) of two element
/// functions on the same operands, with and without the weights: the same
/// value and gradient bit for bit.
fn assert_passes_agree<A: Float, E1, E2>(
    a: &E1,
    b: &E2,
    input: &Array4<A>,
    target: &Array4<A>,
    weights: &Array4<A>,
) where
    E1: super::pixel::Elementwise<A>,
    E2: super::pixel::Elementwise<A>,
{
    use super::pixel::{loss, loss_grad};
    let scale = A::from_f64(0.25);
    let weights: &ndarray::ArrayRef<A, _> = weights;
    for w in [None, Some(weights)] {
        let va = loss(a, input, target, w).unwrap();
        let vb = loss(b, input, target, w).unwrap();
        assert_eq!(va.to_bits(), vb.to_bits());
        let mut ga = Array4::<A>::zeros(SHAPE);
        let mut gb = Array4::<A>::zeros(SHAPE);
        let va = loss_grad(a, input, target, w, &mut ga, scale).unwrap();
        let vb = loss_grad(b, input, target, w, &mut gb, scale).unwrap();
        assert_eq!(va.to_bits(), vb.to_bits());
        assert!(
            ga.iter()
                .zip(&gb)
                .all(|(a, b)| a.as_f64().to_bits() == b.as_f64().to_bits())
        );
    }
}

/// Splitting off the `exp` into a loop of its own (`Elementwise::staged`)
/// changes the schedule, not the arithmetic: the staged pass gives the
/// unstaged one's value and gradient bit for bit, with and without weights.
/// On the baseline: the unstaged form does not fuse its multiply-adds, and
/// the staged one does on the wide paths.
fn staged_matches_unstaged<A: Float>() {
    use super::pixel::Elementwise;
    let [logits, _, target, weights, _] = data::<A>(SHAPE);
    let staged = BinaryCrossEntropy::new()
        .pos_weight(3.0)
        .element::<A>()
        .unwrap();
    assert!(staged.staged::<0>() && staged.form() == 0);
    let unstaged = Restricted {
        inner: staged,
        staged: false,
        screens: true,
    };
    assert_passes_agree(&staged, &unstaged, &logits, &target, &weights);
}

#[test]
fn staged_and_unstaged_passes_are_bit_identical() {
    with_cap(Some(Isa::Baseline), || {
        staged_matches_unstaged::<f32>();
        staged_matches_unstaged::<f64>();
    });
}

/// Screening the input and the weights by the sum (`Elementwise::screens`)
/// leaves the arithmetic as it is: the screened pass gives the checked
/// one's value and gradient bit for bit, with and without weights, and on
/// soft targets (`BCE` with `pos_weight` 1 and 3).
fn screened_matches_checked<A: Float>() {
    use super::pixel::Elementwise;
    let [logits, probabilities, _, weights, _] = data::<A>(SHAPE);
    for pos_weight in [1.0, 3.0] {
        let screened = BinaryCrossEntropy::new()
            .pos_weight(pos_weight)
            .element::<A>()
            .unwrap();
        assert!(screened.screens::<0>() && screened.form() == 0);
        let checked = Restricted {
            inner: screened,
            staged: true,
            screens: false,
        };
        // Soft targets: the probabilities' draw.
        assert_passes_agree(&screened, &checked, &logits, &probabilities, &weights);
    }
}

#[test]
fn screened_and_checked_passes_are_bit_identical() {
    with_cap(None, || {
        screened_matches_checked::<f32>();
        screened_matches_checked::<f64>();
    });
}

/// Every kind of bad element that a screened pass leaves to its sum, in
/// the middle of an array of more than a block on the widest path: the
/// call fails and names it, as the checked pass does.
fn screened_pass_names_bad_elements<A: Float>() {
    use crate::Error;
    let [logits, probabilities, _, weights, _] = data::<A>(SHAPE);
    let at = [1, 0, 77, 5];
    let bce = BinaryCrossEntropy::new().pos_weight(3.0);
    let shape_aware = ShapeAwareLoss::new();
    let named = |e: Error, operand: &str| match e {
        Error::NonFinite {
            operand: o, index, ..
        }
        | Error::OutOfRange {
            operand: o, index, ..
        } => o == operand && index == at,
        _ => false,
    };
    let mut grad = Array4::<A>::zeros(SHAPE);
    for (operand, bad) in [
        ("input", f64::NAN),
        ("input", f64::INFINITY),
        ("input", f64::NEG_INFINITY),
        ("target", f64::NAN),
        ("target", f64::INFINITY),
        ("target", -0.5),
        ("target", 1.5),
        ("weights", f64::NAN),
        ("weights", f64::INFINITY),
        ("weights", f64::NEG_INFINITY),
        ("weights", -1.0),
    ] {
        let (mut x, mut y, mut w) = (logits.clone(), probabilities.clone(), weights.clone());
        let a = match operand {
            "input" => &mut x,
            "target" => &mut y,
            _ => &mut w,
        };
        a[at] = A::from_f64(bad);
        let case = format!("{operand} = {bad}");
        let e = shape_aware.loss_with_weights(&x, &y, &w).unwrap_err();
        assert!(named(e, operand), "{case}");
        let e = shape_aware
            .loss_grad_with_weights(&x, &y, &w, &mut grad)
            .unwrap_err();
        assert!(named(e, operand), "{case}");
        if operand != "weights" {
            assert!(named(bce.loss(&x, &y).unwrap_err(), operand), "{case}");
            let e = bce.loss_grad(&x, &y, &mut grad).unwrap_err();
            assert!(named(e, operand), "{case}");
        }
    }
}

#[test]
fn screened_passes_name_every_bad_element() {
    with_cap(None, || {
        screened_pass_names_bad_elements::<f32>();
        screened_pass_names_bad_elements::<f64>();
    });
}

/// A configured loss's `loss_grad`, unwrapped.
type LossGrad<A> = Box<dyn Fn(&Array4<A>, &Array4<A>, &mut Array4<A>) -> A>;

/// `loss_grad` of every loss on every `(input, target)` into a gradient in
/// standard layout (pass 1 may stage what pass 2 needs there) and into one
/// in Fortran order (it may not): the same value and gradient bit for bit.
fn assert_stage_matches<A: Float>(
    losses: &[(&str, LossGrad<A>)],
    inputs: &[(&Array4<A>, &Array4<A>)],
) {
    for (name, loss_grad) in losses {
        for &(x, y) in inputs {
            let mut staged = Array4::<A>::zeros(SHAPE);
            let mut recomputed = Array4::<A>::zeros(SHAPE.f());
            let a = loss_grad(x, y, &mut staged);
            let b = loss_grad(x, y, &mut recomputed);
            assert_eq!(a.as_f64(), b.as_f64(), "{name}: the values differ");
            assert!(
                staged
                    .iter()
                    .zip(&recomputed)
                    .all(|(a, b)| a.as_f64().to_bits() == b.as_f64().to_bits()),
                "{name}: the gradients differ"
            );
        }
    }
}

/// The boxed `loss_grad` of a loss.
fn boxed<A: Float, L: Loss<A> + 'static>(loss: L) -> LossGrad<A> {
    Box::new(move |x, y, g| loss.loss_grad(x, y, g).unwrap())
}

/// The softmax region losses keep `p` in the gradient between their passes
/// (signed by the targets): checked with one-hot targets (pass 2 reads
/// the targets from the signs), soft ones (it reads them), and logits so
/// far apart that `p` is 0 at a target of 1 (stored as -0).
fn softmax_stage_matches_recomputation<A: Float>()
where
    DiceLoss: Loss<A>,
    TverskyLoss: Loss<A>,
{
    let [logits, _, _, _, one_hot] = data::<A>(SHAPE);
    let soft = one_hot.mapv(|y| y * A::from_f64(0.8) + A::from_f64(0.05));
    let extreme = logits.mapv(|x| x * A::from_f64(100.0));
    let softmax = Input::SoftmaxLogits;
    let dice = DiceLoss::new().input(softmax);
    let losses = [
        ("dice per class", boxed(dice.clone().per_class(true))),
        (
            "dice per sample, no background",
            boxed(dice.clone().per_sample(true).include_background(false)),
        ),
        (
            "jaccard, γ = 2",
            boxed(dice.clone().gamma(2.0).jaccard(true)),
        ),
        ("dice γ = 1.5", boxed(dice.clone().gamma(1.5))),
        (
            "tversky",
            boxed(TverskyLoss::new().input(softmax).per_class(true)),
        ),
    ];
    assert_stage_matches(
        &losses,
        &[(&logits, &one_hot), (&logits, &soft), (&extreme, &one_hot)],
    );
    // The extreme logits do reach `p = 0` (`exp` below -745) at targets of 1.
    let [n, c, h, w] = SHAPE;
    let mut underflows = 0;
    for (n, i, j) in ndarray::indices((n, h, w)) {
        let max = (0..c)
            .map(|c| extreme[[n, c, i, j]].as_f64())
            .fold(f64::MIN, f64::max);
        let hot = (0..c).find(|&c| one_hot[[n, c, i, j]] == A::one()).unwrap();
        underflows += usize::from(extreme[[n, hot, i, j]].as_f64() < max - 750.0);
    }
    assert!(underflows > 1000, "{underflows} underflows");
}

/// The sigmoid region losses with one group keep `e^-|x|`, signed as `x`
/// (and flagged with binary targets), or `σ(x)·σ(-x)` in the gradient
/// between their passes: checked with binary targets, soft ones, logits
/// so large that `e^-|x|` is 0, and logits of 0 (whose flagged `e^-|x|`
/// of 1 has the bits of +∞).
fn sigmoid_stage_matches_recomputation<A: Float>()
where
    DiceLoss: Loss<A>,
    TverskyLoss: Loss<A>,
{
    let [logits, _, target, _, _] = data::<A>(SHAPE);
    let soft = target.mapv(|y| y * A::from_f64(0.8) + A::from_f64(0.05));
    let extreme = logits.mapv(|x| x * A::from_f64(100.0));
    // SHAPE spans two blocks. One soft target late in block 0 (whose
    // earlier chunks were staged in the target-sign format), block 1
    // binary; and a target of -0 in block 1, which the target-sign format
    // cannot hold (it would come back as +0).
    assert!(SHAPE.iter().product::<usize>() > BLOCK);
    let flat = |mut t: Array4<A>, i: usize, v: f64| {
        t.as_slice_mut().unwrap()[i] = A::from_f64(v);
        t
    };
    let mixed = flat(target.clone(), 40_000, 0.5);
    let negative_zero = flat(target.clone(), BLOCK + 1000, -0.0);
    let zeros = logits.mapv(|x| {
        if x.abs() < A::from_f64(0.5) {
            A::zero()
        } else {
            x
        }
    });
    let losses = [
        ("dice", boxed(DiceLoss::new())),
        ("jaccard", boxed(DiceLoss::new().jaccard(true))),
        ("dice γ = 1", boxed(DiceLoss::new().gamma(1.0))),
        ("dice γ = 1.5", boxed(DiceLoss::new().gamma(1.5))),
        ("tversky", boxed(TverskyLoss::new())),
        // α = -0: `∂L/∂p = a·y + b` with `b = -0` (and `a < 0`), which is
        // +0 at y = -0 and -0 at y = +0.
        ("tversky α = -0", boxed(TverskyLoss::new().alpha(-0.0))),
        ("dice per sample", boxed(DiceLoss::new().per_sample(true))),
        (
            "dice per class and sample, γ = 1",
            boxed(DiceLoss::new().per_class(true).per_sample(true).gamma(1.0)),
        ),
        (
            "dice per class, no background",
            boxed(DiceLoss::new().per_class(true).include_background(false)),
        ),
        (
            "tversky per sample",
            boxed(TverskyLoss::new().per_sample(true)),
        ),
    ];
    assert_stage_matches(
        &losses,
        &[
            (&logits, &target),
            (&logits, &soft),
            (&extreme, &target),
            (&logits, &mixed),
            (&logits, &negative_zero),
            (&zeros, &target),
        ],
    );
    // `e^-|x|` underflows to 0 past |x| = 745 in both types.
    let underflows = ndarray::Zip::from(&extreme)
        .and(&target)
        .fold(0, |n, x, &y| {
            n + usize::from(x.abs().as_f64() > 750.0 && y == A::one())
        });
    assert!(underflows > 100, "{underflows} underflows");
}

/// Which format the sigmoid's pass 1 leaves, per block: with binary
/// targets the flagged `e^-|x|` where `∂L/∂p` reads `p` (each flag its
/// target), else `σ(x)·σ(-x)`; the plain `e^-|x|` in a block with a soft
/// target.
#[test]
fn sigmoid_stage_formats() {
    use super::math::{Fma, Logistic};
    use super::region::{Activation, Groups, Layout, Stage, sums_for_grad};
    use crate::float::sealed::Sealed;
    let [logits, _, target, _, _] = data::<f32>(SHAPE);
    let groups = Groups {
        per_sample: false,
        per_class: false,
        background: true,
    };
    let layout = Layout::new(groups, Activation::Sigmoid, &logits, &target).unwrap();
    let stage = |target: &Array4<f32>, dp_reads_p: bool, g: &mut Array4<f32>| {
        let term = |p: f32, y: f32| [p * y, p * p, y * y];
        let (_, stage) =
            sums_for_grad(&layout, &logits, target, Some(g), dp_reads_p, term).unwrap();
        stage.unwrap()
    };
    let mut g = Array4::zeros(SHAPE);
    let flagged = |binary: Vec<bool>| Stage::Logistic {
        binary,
        flagged: true,
        runs: vec![Some(0)],
    };
    assert_eq!(stage(&target, true, &mut g), flagged(vec![true, true]));
    for ((&g, &x), &y) in g.iter().zip(&logits).zip(&target) {
        let (hot, e) = g.take_flag();
        let sign = if x >= 0.0 { 1.0 } else { -1.0 };
        assert_eq!((hot, e), (y, sign * Logistic::stage(x, Fma::Off)));
    }
    let soft = {
        let mut t = target.clone();
        t.as_slice_mut().unwrap()[BLOCK + 5] = 0.5;
        t
    };
    assert_eq!(stage(&soft, true, &mut g), flagged(vec![true, false]));
    let product = Stage::Logistic {
        binary: vec![true, true],
        flagged: false,
        runs: vec![Some(0)],
    };
    assert_eq!(stage(&target, false, &mut g), product);
    // Per (sample, class) cell without the background: one run per cell
    // (17161 elements, one block each), class 0 in none.
    let groups = Groups {
        per_sample: true,
        per_class: true,
        background: false,
    };
    let layout = Layout::new(groups, Activation::Sigmoid, &logits, &target).unwrap();
    let term = |p: f32, y: f32| [p * y, p * p, y * y];
    let (sums, staged) = sums_for_grad(&layout, &logits, &soft, Some(&mut g), true, term).unwrap();
    let cells = Stage::Logistic {
        binary: vec![true, true, true, false],
        flagged: true,
        runs: vec![None, Some(0), None, Some(1)],
    };
    assert_eq!(staged, Some(cells));
    assert_eq!(sums.len(), 2);
    // Not in standard layout, the groups are not runs: no stage.
    let mut fortran = Array4::zeros(SHAPE.f());
    let (_, staged) =
        sums_for_grad(&layout, &logits, &soft, Some(&mut fortran), true, term).unwrap();
    assert_eq!(staged, None);
}

#[test]
fn stages_and_recomputation_are_bit_identical() {
    softmax_stage_matches_recomputation::<f32>();
    softmax_stage_matches_recomputation::<f64>();
    sigmoid_stage_matches_recomputation::<f32>();
    sigmoid_stage_matches_recomputation::<f64>();
}

/// `run_sums` folds each quantity in `lanes_sum`'s order: the same bits as
/// writing the terms to buffers and summing those, for every run length
/// around the lane count and longer, in `f32` and `f64`, with one to three
/// quantities.
#[test]
fn run_sums_match_buffered_lanes_sums() {
    use super::{LANES, lanes_sum, run_sums};

    fn check<A: Float>() {
        for len in (0..=3 * LANES + 1).chain([100, 1023]) {
            // Values in [0, 1] that no short pattern repeats.
            let value = |i: usize, k: f64| A::from_f64(0.5 + 0.5 * (k * i as f64 + 0.3).sin());
            let p: Vec<A> = (0..len).map(|i| value(i, 1.7)).collect();
            let y: Vec<A> = (0..len).map(|i| value(i, 0.37)).collect();
            let buffered = |q: usize, term: &dyn Fn(A, A) -> [A; 3]| {
                let terms: Vec<A> = p.iter().zip(&y).map(|(&p, &y)| term(p, y)[q]).collect();
                lanes_sum(&terms).to_bits()
            };
            let term = |p: A, y: A| [p * y, p * p + y, y * y - p];
            let three = run_sums(&p, &y, term);
            for (q, sum) in three.iter().enumerate() {
                assert_eq!(sum.to_bits(), buffered(q, &term), "len {len}, quantity {q}");
            }
            let [one] = run_sums(&p, &y, |p, y| [p * y]);
            assert_eq!(one.to_bits(), three[0].to_bits(), "len {len}");
            let [a, b] = run_sums(&p, &y, |p, y| [p * p + y, y * y - p]);
            assert_eq!(
                [a.to_bits(), b.to_bits()],
                [three[1].to_bits(), three[2].to_bits()]
            );
        }
    }
    check::<f32>();
    check::<f64>();
}

/// `run_sums_into` over the pieces of a chunk (whole groups but the last)
/// adds each term to lane `i % LANES` of its quantity, `i` its index in
/// the chunk, in index order: the same bits as that loop, for chunk
/// lengths around the lane count and up to `CHUNK`, in `f32` and `f64`,
/// with one to three quantities.
#[test]
fn run_sums_into_pieces_add_in_index_order() {
    use super::{CHUNK, LANES, Lanes, STAGE, run_sums_into, sum_lanes};

    fn check<A: Float>() {
        for len in (0..=3 * LANES + 1).chain([STAGE + 5, 3 * STAGE, CHUNK - 1, CHUNK]) {
            let value = |i: usize, k: f64| A::from_f64(0.5 + 0.5 * (k * i as f64 + 0.3).sin());
            let p: Vec<A> = (0..len).map(|i| value(i, 1.7)).collect();
            let y: Vec<A> = (0..len).map(|i| value(i, 0.37)).collect();
            let term = |p: A, y: A| [p * y, p * p + y, y * y - p];
            let mut lanes = Lanes::<A, 3>::new();
            for (p, y) in p.chunks(STAGE).zip(y.chunks(STAGE)) {
                run_sums_into(&mut lanes, p, y, term);
            }
            let (sums, good) = lanes.fold();
            assert!(good);
            for (q, sum) in sums.iter().enumerate() {
                let mut reference = [A::zero(); LANES];
                for (i, (&p, &y)) in p.iter().zip(&y).enumerate() {
                    reference[i % LANES] += term(p, y)[q];
                }
                let expected = sum_lanes(&reference);
                assert_eq!(sum.to_bits(), expected.to_bits(), "len {len}, quantity {q}");
            }
            let mut one = Lanes::<A, 1>::new();
            for (p, y) in p.chunks(STAGE).zip(y.chunks(STAGE)) {
                run_sums_into(&mut one, p, y, |p, y| [p * y]);
            }
            assert_eq!(one.fold().0[0].to_bits(), sums[0].to_bits(), "len {len}");
        }
    }
    check::<f32>();
    check::<f64>();
}
