//! Property tests of the second-stage losses: analytic gradients against
//! central finite differences (in f64, including softmax logits of ±1e3),
//! the softmax walk on larger planes against the plain definition, f32
//! against f64, no panic on arbitrary input, and one test per kind of bad
//! input.

use ndarray::{Array, ArrayD, Dimension, IxDyn};
use proptest::prelude::*;
use segloss::{
    BinaryCrossEntropy, BoundaryLoss, Combo, CrossEntropy, DiceLoss, Error, FocalLoss,
    HausdorffDtLoss, Input, Loss, Reduction, TverskyLoss, one_hot,
};

/// A loss and its gradient as a function of the input alone.
type LossAndGrad<'a> = dyn Fn(&ArrayD<f64>) -> (f64, ArrayD<f64>) + 'a;
/// A loss as a function of input and target.
type LossFn<'a> = dyn Fn(&ArrayD<f64>, &ArrayD<f64>) -> Result<f64, Error> + 'a;

/// A random `(N, C, H, W)` shape: 1–2 samples, 2–4 classes, 1–4 × 1–4 pixels.
fn shape() -> impl Strategy<Value = Vec<usize>> {
    (1usize..=2, 2usize..=4, 1usize..=4, 1usize..=4).prop_map(|(n, c, h, w)| vec![n, c, h, w])
}

/// Logits in [-4, 4] and soft targets in [0, 1] of one `(N, C, H, W)` shape.
fn operands() -> impl Strategy<Value = (ArrayD<f64>, ArrayD<f64>)> {
    shape().prop_flat_map(|shape| {
        let n: usize = shape.iter().product();
        (
            prop::collection::vec(-4.0f64..4.0, n),
            prop::collection::vec(0.0f64..=1.0, n),
        )
            .prop_map(move |(x, y)| {
                let arr = |v| ArrayD::from_shape_vec(IxDyn(&shape), v).unwrap();
                (arr(x), arr(y))
            })
    })
}

/// Maps logits in [-4, 4] to probabilities in [0.05, 0.95] (away from the
/// clips and from 0.5-thresholds' neighbourhoods do not matter here).
fn probabilities(x: &ArrayD<f64>) -> ArrayD<f64> {
    x.mapv(|v| (v / 9.0 + 0.5).clamp(0.05, 0.95))
}

/// Hard one-hot targets with the labels taken from `y`.
fn hard(y: &ArrayD<f64>) -> ArrayD<f64> {
    let classes = y.shape()[1];
    let labels = y
        .index_axis(ndarray::Axis(1), 0)
        .mapv(|v| ((v * classes as f64) as u32).min(classes as u32 - 1));
    one_hot::<f64, _>(&labels, classes).unwrap()
}

/// Checks `grad` against central differences of `f` at every element, with
/// step `h` and tolerance `atol + rtol·|fd|`.
fn assert_gradient_with(
    x: &ArrayD<f64>,
    grad: &ArrayD<f64>,
    h: f64,
    tol: (f64, f64),
    f: impl Fn(&ArrayD<f64>) -> f64,
) -> Result<(), TestCaseError> {
    for i in 0..x.len() {
        let mut plus = x.clone();
        let mut minus = x.clone();
        plus.as_slice_mut().unwrap()[i] += h;
        minus.as_slice_mut().unwrap()[i] -= h;
        let fd = (f(&plus) - f(&minus)) / (2.0 * h);
        let g = grad.as_slice().unwrap()[i];
        prop_assert!(
            (g - fd).abs() <= tol.0 + tol.1 * fd.abs(),
            "element {i}: analytic {g:e}, finite difference {fd:e}"
        );
    }
    Ok(())
}

/// The gradient of `loss` at (x, y) against finite differences.
fn check_gradient<L: Loss<f64>>(
    loss: &L,
    x: &ArrayD<f64>,
    y: &ArrayD<f64>,
) -> Result<(), TestCaseError> {
    let (_, grad) = loss.loss_and_grad(x, y).unwrap();
    assert_gradient_with(x, &grad, 1e-6, (1e-7, 1e-6), |x| loss.loss(x, y).unwrap())
}

fn input_of(kind: u8) -> Input {
    match kind % 3 {
        0 => Input::Logits,
        1 => Input::Probabilities,
        _ => Input::SoftmaxLogits,
    }
}

/// The operands for an input kind (probabilities mapped into (0, 1)).
fn for_kind(input: Input, x: &ArrayD<f64>) -> ArrayD<f64> {
    if input == Input::Probabilities {
        probabilities(x)
    } else {
        x.clone()
    }
}

fn dice_from(
    input: Input,
    flags: (bool, bool, bool, bool, bool),
    gamma: f64,
    weights: bool,
    classes: usize,
) -> DiceLoss {
    let (per_sample, per_class, background, jaccard, log_cosh) = flags;
    let kept = classes - usize::from(!background);
    let dice = DiceLoss::new()
        .input(input)
        .gamma(gamma)
        .smooth_terms(1e-3, 1e-3)
        .per_sample(per_sample)
        .per_class(per_class)
        .include_background(background)
        .jaccard(jaccard)
        .log_cosh(log_cosh);
    if weights && per_class {
        dice.class_weights((0..kept).map(|k| 0.5 + k as f64).collect::<Vec<_>>())
    } else {
        dice
    }
}

/// Cross-entropy (mean over positions) and its gradient from the
/// definition, position by position: the reference for the chunked walk.
fn plain_cross_entropy(x: &ArrayD<f64>, y: &ArrayD<f64>) -> (f64, ArrayD<f64>) {
    let (n, c) = (x.shape()[0], x.shape()[1]);
    let positions = x.len() / (n * c).max(1);
    let (xs, ys) = (
        x.as_standard_layout().iter().copied().collect::<Vec<_>>(),
        y.as_standard_layout().iter().copied().collect::<Vec<_>>(),
    );
    let mut grad = vec![0.0; xs.len()];
    let mut total = 0.0;
    for s in 0..n {
        for q in 0..positions {
            let at = |k: usize| (s * c + k) * positions + q;
            let max = (0..c).map(|k| xs[at(k)]).fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = (0..c).map(|k| (xs[at(k)] - max).exp()).sum();
            let lse = max + sum.ln();
            for k in 0..c {
                total += ys[at(k)] * (lse - xs[at(k)]);
                grad[at(k)] = ((xs[at(k)] - lse).exp() - ys[at(k)]) / (n * positions) as f64;
            }
        }
    }
    let grad = ArrayD::from_shape_vec(IxDyn(x.shape()), grad).unwrap();
    (total / (n * positions) as f64, grad)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// The softmax walk over shapes whose planes hold from one position
    /// (short chunks only) to several tiles of them, with one to six
    /// classes (fixed and run-time counts), in standard and transposed
    /// layouts: every lane reaches the loss at its place, and no bounds
    /// check of the walk fires.
    #[test]
    fn softmax_walk_matches_the_plain_definition(
        (n, c, h, w) in (1usize..=3, 1usize..=6, 1usize..=40, 1usize..=30),
        seed in 0u64..1000,
        transposed in any::<bool>(),
    ) {
        let value = |i: &[usize], k: f64| (i.iter().fold(seed as f64, |a, &v| a * 7.3 + v as f64) * k).sin();
        let mut x = ArrayD::from_shape_fn(IxDyn(&[n, c, h, w]), |i| 4.0 * value(i.slice(), 0.71));
        let labels = ArrayD::from_shape_fn(IxDyn(&[n, h, w]), |i| {
            ((value(i.slice(), 1.37) + 1.0) * 0.5 * c as f64) as u32 % c as u32
        });
        let mut y = one_hot::<f64, _>(&labels, c).unwrap();
        if transposed {
            x = x.reversed_axes().as_standard_layout().into_owned().reversed_axes();
            y = y.reversed_axes().as_standard_layout().into_owned().reversed_axes();
        }
        let (expected, expected_grad) = plain_cross_entropy(&x, &y);
        let (loss, grad) = CrossEntropy::new().loss_and_grad(&x, &y).unwrap();
        prop_assert!((loss - expected).abs() <= 1e-12 * expected.abs().max(1.0), "{loss} vs {expected}");
        for (g, e) in grad.iter().zip(expected_grad.iter()) {
            prop_assert!((g - e).abs() <= 1e-14, "{g} vs {e}");
        }
        // Multi-class Dice reads the same lanes through both of its passes.
        let dice = DiceLoss::new().input(Input::SoftmaxLogits).per_class(true);
        let (d, dg) = dice.loss_and_grad(&x, &y).unwrap();
        let (d_std, dg_std) = dice
            .loss_and_grad(&x.as_standard_layout().into_owned(), &y.as_standard_layout().into_owned())
            .unwrap();
        prop_assert_eq!(d, d_std);
        prop_assert!(dg.iter().zip(dg_std.iter()).all(|(a, b)| a == b));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn cross_entropy_gradient(
        (x, y) in operands(),
        probs in any::<bool>(),
        weighted in any::<bool>(),
        ls in 0.0f64..0.5,
        sum in any::<bool>(),
        pixel_weights in any::<bool>(),
    ) {
        let classes = x.shape()[1];
        let input = if probs { Input::Probabilities } else { Input::SoftmaxLogits };
        let x = for_kind(input, &x);
        let mut ce = CrossEntropy::new()
            .input(input)
            .label_smoothing(ls)
            .reduction(if sum { Reduction::Sum } else { Reduction::Mean });
        if weighted {
            ce = ce.class_weights((0..classes).map(|c| 0.25 + c as f64).collect::<Vec<_>>());
        }
        if pixel_weights {
            let m = y.mapv(|v| 2.0 * v + 0.1);
            let mut grad = ArrayD::zeros(x.raw_dim());
            ce.loss_grad_with_weights(&x, &y, &m, &mut grad).unwrap();
            assert_gradient_with(&x, &grad, 1e-6, (1e-7, 1e-6), |x| {
                ce.loss_with_weights(x, &y, &m).unwrap()
            })?;
        } else {
            check_gradient(&ce, &x, &y)?;
        }
    }

    #[test]
    fn dice_gradient(
        (x, y) in operands(),
        kind in 0u8..3,
        flags in any::<(bool, bool, bool, bool, bool)>(),
        gamma in prop_oneof![Just(1.0), Just(2.0), 1.0f64..3.0],
        weights in any::<bool>(),
        hard_target in any::<bool>(),
    ) {
        let input = input_of(kind);
        let x = for_kind(input, &x);
        let y = if hard_target { hard(&y) } else { y };
        // The Jaccard denominator may vanish for γ > 2 (p^γ + y^γ < p·y).
        let gamma = if flags.3 { gamma.min(2.0) } else { gamma };
        let dice = dice_from(input, flags, gamma, weights, x.shape()[1]);
        check_gradient(&dice, &x, &y)?;
    }

    #[test]
    fn tversky_gradient(
        (x, y) in operands(),
        kind in 0u8..3,
        alpha in 0.0f64..1.0,
        beta in 0.0f64..1.0,
        focal in prop_oneof![Just(1.0), 0.5f64..2.0],
        groups in any::<(bool, bool, bool)>(),
    ) {
        let input = input_of(kind);
        let x = for_kind(input, &x);
        let tversky = TverskyLoss::new()
            .input(input)
            .alpha(alpha)
            .beta(beta)
            .focal(focal)
            .smooth(1e-3)
            .per_sample(groups.0)
            .per_class(groups.1)
            .include_background(groups.2);
        check_gradient(&tversky, &x, &y)?;
    }

    #[test]
    fn focal_gradient(
        (x, y) in operands(),
        kind in 0u8..3,
        gamma in prop_oneof![Just(0.0), Just(2.0), 0.0f64..4.0],
        alpha in prop::option::of(0.0f64..=1.0),
        sum in any::<bool>(),
        hard_target in any::<bool>(),
    ) {
        let input = input_of(kind);
        let x = for_kind(input, &x);
        let y = if hard_target { hard(&y) } else { y };
        let focal = FocalLoss::new()
            .input(input)
            .gamma(gamma)
            .alpha(alpha)
            .reduction(if sum { Reduction::Sum } else { Reduction::Mean });
        check_gradient(&focal, &x, &y)?;
    }

    #[test]
    fn combo_gradient((x, y) in operands(), wa in 0.0f64..2.0, wb in 0.0f64..2.0) {
        let combo = Combo::new(
            DiceLoss::new().input(Input::SoftmaxLogits).per_class(true),
            CrossEntropy::new(),
        )
        .weights(wa, wb);
        check_gradient(&combo, &x, &y)?;
        let (value, _) = combo.loss_and_grad(&x, &y).unwrap();
        let a = DiceLoss::new().input(Input::SoftmaxLogits).per_class(true).loss(&x, &y).unwrap();
        let b = CrossEntropy::new().loss(&x, &y).unwrap();
        prop_assert!((value - (wa * a + wb * b)).abs() <= 1e-12 * value.abs().max(1.0));
    }

    #[test]
    fn boundary_gradient((x, y) in operands(), probs in any::<bool>()) {
        let input = if probs { Input::Probabilities } else { Input::Logits };
        let x = for_kind(input, &x);
        let y = y.mapv(|v| f64::from(v > 0.5));
        let boundary = BoundaryLoss::new().input(input);
        check_gradient(&boundary, &x, &y)?;
        // The precomputed-map entry points agree with the map made from the target.
        let phi = y.map(|v| v - 0.5) * 3.0;
        let mut grad = ArrayD::zeros(x.raw_dim());
        boundary.loss_grad_with_distance(&x, &phi, &mut grad).unwrap();
        assert_gradient_with(&x, &grad, 1e-6, (1e-7, 1e-6), |x| {
            boundary.loss_with_distance(x, &phi).unwrap()
        })?;
    }

    #[test]
    fn hausdorff_gradient((x, y) in operands(), probs in any::<bool>(), alpha in 0.0f64..3.0) {
        let input = if probs { Input::Probabilities } else { Input::Logits };
        // Keep the input away from the 0.5 threshold, where the (constant)
        // distance map of the prediction would change under the step.
        let x = x.mapv(|v| if v.abs() < 0.2 { v.signum() * 0.2 + v } else { v });
        let x = for_kind(input, &x);
        let hd = HausdorffDtLoss::new().input(input).alpha(alpha);
        check_gradient(&hd, &x, &y)?;
    }

    /// The softmax losses with logits of ±1e3: finite, and the gradient
    /// still matches finite differences (a larger step: the loss itself is
    /// of order 1e3).
    #[test]
    fn softmax_gradient_with_large_logits(
        (x, y) in operands(),
        offsets in prop::collection::vec(-1i8..=1, 4 * 2 * 16),
        which in 0u8..4,
    ) {
        let mut x = x;
        for (v, &o) in x.iter_mut().zip(&offsets) {
            *v += 1e3 * f64::from(o);
        }
        let y = hard(&y);
        let check = |loss: &LossAndGrad<'_>| {
            let (value, grad) = loss(&x);
            prop_assert!(value.is_finite() && grad.iter().all(|g| g.is_finite()));
            assert_gradient_with(&x, &grad, 1e-4, (1e-6, 1e-5), |x| loss(x).0)
        };
        match which {
            0 => check(&|x| CrossEntropy::new().label_smoothing(0.1).loss_and_grad(x, &y).unwrap())?,
            1 => check(&|x| {
                DiceLoss::new().input(Input::SoftmaxLogits).per_class(true).loss_and_grad(x, &y).unwrap()
            })?,
            2 => check(&|x| {
                FocalLoss::new().input(Input::SoftmaxLogits).alpha(0.25).loss_and_grad(x, &y).unwrap()
            })?,
            _ => check(&|x| {
                TverskyLoss::new().input(Input::SoftmaxLogits).alpha(0.3).beta(0.7).focal(0.75)
                    .per_class(true).loss_and_grad(x, &y).unwrap()
            })?,
        }
    }

    /// f32 agrees with f64 to a few f32 ulps, loss and gradient. The
    /// gradient's tolerance is relative to the larger of its largest element
    /// and `1/len`, the scale of one element's term in a mean: through a
    /// softmax (whose Jacobian rows sum to zero) a gradient can cancel to
    /// far below the terms it is made of, and `f32` keeps about 1e-7 of the
    /// terms, not of their difference (seen: focal and focal-Tversky
    /// gradients near 4e-4 off by 1e-5 of themselves, 2e-8; the earlier
    /// code gives the same bits, checked on `aeb03db`).
    #[test]
    fn f32_agrees_with_f64((x, y) in operands(), which in 0u8..7) {
        let x32 = x.mapv(|v| v as f32);
        let y32 = y.mapv(|v| v as f32);
        let x = x32.mapv(f64::from);
        let y = y32.mapv(f64::from);
        fn both<L: Loss<f32> + Loss<f64>>(
            l: &L, x: &ArrayD<f64>, y: &ArrayD<f64>, x32: &ArrayD<f32>, y32: &ArrayD<f32>,
        ) -> Result<(), TestCaseError> {
            let (v64, g64) = Loss::<f64>::loss_and_grad(l, x, y).unwrap();
            let (v32, g32) = Loss::<f32>::loss_and_grad(l, x32, y32).unwrap();
            prop_assert!((f64::from(v32) - v64).abs() <= 2e-6 * v64.abs().max(1.0), "{v32} vs {v64}");
            let terms = 1.0 / g64.len() as f64;
            let scale = g64.iter().fold(terms, |m, g| m.max(g.abs()));
            for (a, b) in g32.iter().zip(&g64) {
                prop_assert!((f64::from(*a) - b).abs() <= 1e-5 * scale, "{a} vs {b}");
            }
            Ok(())
        }
        match which {
            0 => both(&CrossEntropy::new().label_smoothing(0.1), &x, &y, &x32, &y32)?,
            1 => both(&DiceLoss::new().input(Input::SoftmaxLogits).per_class(true).per_sample(true), &x, &y, &x32, &y32)?,
            2 => both(&TverskyLoss::new().input(Input::SoftmaxLogits).focal(0.75).per_class(true), &x, &y, &x32, &y32)?,
            3 => both(&FocalLoss::new().alpha(0.25), &x, &y, &x32, &y32)?,
            4 => both(&FocalLoss::new().input(Input::SoftmaxLogits).alpha(0.25), &x, &y, &x32, &y32)?,
            5 => both(&BoundaryLoss::new(), &x, &y, &x32, &y32)?,
            _ => both(&HausdorffDtLoss::new(), &x, &y, &x32, &y32)?,
        }
    }

    /// Arbitrary shapes (empty axes included), values (NaN, ±∞, out of
    /// range) and parameters never panic: every call returns `Ok` with a
    /// finite value or an `Err`.
    #[test]
    fn arbitrary_input_never_panics(
        shape in prop::collection::vec(0usize..=3, 0..=4),
        values in prop::collection::vec(
            prop_oneof![-5.0f64..5.0, Just(f64::NAN), Just(f64::INFINITY), Just(-1e300), Just(0.0), Just(1.0)],
            0..=81,
        ),
        kind in 0u8..3,
        param in prop_oneof![-1.0f64..2.0, Just(f64::NAN), Just(0.0), Just(1.0), Just(1e300)],
        flags in any::<(bool, bool, bool)>(),
    ) {
        let n: usize = shape.iter().product();
        let x = ArrayD::from_shape_vec(
            IxDyn(&shape),
            (0..n).map(|i| values.get(i % values.len().max(1)).copied().unwrap_or(0.5)).collect(),
        )
        .unwrap();
        let y = x.mapv(|v| v.clamp(0.0, 1.0));
        let input = input_of(kind);
        fn run<L: Loss<f64> + Loss<f32>>(l: &L, x: &ArrayD<f64>, y: &ArrayD<f64>) {
            if let Ok((v, _)) = Loss::<f64>::loss_and_grad(l, x, y) {
                assert!(v.is_finite());
            }
            let _ = Loss::<f64>::loss(l, x, y);
            let (x32, y32) = (x.mapv(|v| v as f32), y.mapv(|v| v as f32));
            if let Ok(v) = Loss::<f32>::loss(l, &x32, &y32) {
                assert!(v.is_finite());
            }
        }
        run(&CrossEntropy::new().input(input).label_smoothing(param).class_weights(vec![param; 3]), &x, &y);
        run(&DiceLoss::new().input(input).gamma(param + 1.0).per_class(flags.0)
            .include_background(flags.1).jaccard(flags.2).log_cosh(flags.2), &x, &y);
        run(&TverskyLoss::new().input(input).alpha(param).beta(param).focal(param)
            .per_sample(flags.0).per_class(flags.1).include_background(flags.2), &x, &y);
        run(&FocalLoss::new().input(input).gamma(param).alpha(param), &x, &y);
        run(&BoundaryLoss::new().input(input), &x, &y);
        run(&HausdorffDtLoss::new().input(input).alpha(param), &x, &y);
        run(&Combo::new(CrossEntropy::new(), DiceLoss::new()).weights(param, 1.0), &x, &y);
        let labels = x.mapv(|v| if v.is_finite() { v.abs() as u32 } else { 7 });
        let _ = one_hot::<f32, _>(&labels, (param.abs().min(9.0)) as usize);
    }
}

/// Over many elements, the chunked f32 sums stay within 2e-6 of f64.
#[test]
fn f32_sums_over_many_elements() {
    let shape = (2, 4, 128, 128);
    let x = Array::from_shape_fn(shape, |(n, c, i, j)| {
        ((n * 7 + c * 13 + i * 31 + j * 17) as f64 * 0.37).sin() * 3.0
    });
    let labels = Array::from_shape_fn((2, 128, 128), |(n, i, j)| ((n + i / 9 + j / 13) % 4) as u32);
    let y = one_hot::<f64, _>(&labels, 4).unwrap();
    let (x32, y32) = (x.mapv(|v| v as f32), y.mapv(|v| v as f32));
    let x = x32.mapv(f64::from);
    fn close<L: Loss<f32> + Loss<f64>>(
        l: &L,
        x: &Array<f64, ndarray::Ix4>,
        y: &Array<f64, ndarray::Ix4>,
        x32: &Array<f32, ndarray::Ix4>,
        y32: &Array<f32, ndarray::Ix4>,
    ) {
        let v64 = Loss::<f64>::loss(l, x, y).unwrap();
        let v32 = Loss::<f32>::loss(l, x32, y32).unwrap();
        assert!(
            (f64::from(v32) - v64).abs() <= 2e-6 * v64.abs().max(1.0),
            "{v32} vs {v64}"
        );
    }
    close(&CrossEntropy::new(), &x, &y, &x32, &y32);
    close(
        &CrossEntropy::new().reduction(Reduction::Sum),
        &x,
        &y,
        &x32,
        &y32,
    );
    close(
        &DiceLoss::new().input(Input::SoftmaxLogits).per_class(true),
        &x,
        &y,
        &x32,
        &y32,
    );
    close(
        &FocalLoss::new().input(Input::SoftmaxLogits),
        &x,
        &y,
        &x32,
        &y32,
    );
}

// ---------------------------------------------------------------------------
// Bad input: one test per kind the SPEC lists for the second stage.
// ---------------------------------------------------------------------------

fn ok_operands() -> (ArrayD<f64>, ArrayD<f64>) {
    let x = ArrayD::from_shape_fn(IxDyn(&[2, 3, 2, 2]), |i| {
        (i[0] as f64 - i[1] as f64 + 0.5 * i[3] as f64).sin()
    });
    let labels = ArrayD::from_shape_fn(IxDyn(&[2, 2, 2]), |i| ((i[0] + i[1] + i[2]) % 3) as u32);
    (x, one_hot::<f64, _>(&labels, 3).unwrap())
}

fn errors<L: Loss<f64>>(l: &L, x: &ArrayD<f64>, y: &ArrayD<f64>) -> Error {
    let e = l.loss(x, y).unwrap_err();
    let mut grad = ArrayD::zeros(x.raw_dim());
    // Compared as text: an error holding a NaN value is not `==` itself.
    assert_eq!(
        l.loss_grad(x, y, &mut grad).unwrap_err().to_string(),
        e.to_string()
    );
    e
}

#[test]
fn class_weight_length_mismatch() {
    let (x, y) = ok_operands();
    for e in [
        errors(&CrossEntropy::new().class_weights(vec![1.0, 2.0]), &x, &y),
        errors(
            &DiceLoss::new()
                .input(Input::SoftmaxLogits)
                .per_class(true)
                .include_background(false)
                .class_weights(vec![1.0, 2.0, 3.0]),
            &x,
            &y,
        ),
    ] {
        assert!(
            matches!(
                e,
                Error::InvalidLength {
                    name: "class_weights",
                    ..
                }
            ),
            "{e}"
        );
    }
    // Class weights weigh per-class losses: without per_class they are refused.
    let e = errors(&DiceLoss::new().class_weights(vec![1.0, 1.0, 1.0]), &x, &y);
    assert!(
        matches!(
            e,
            Error::Unsupported {
                option: "class_weights",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn label_smoothing_outside_0_1() {
    let (x, y) = ok_operands();
    for ls in [-0.1, 1.0, 1.5, f64::NAN] {
        let e = errors(&CrossEntropy::new().label_smoothing(ls), &x, &y);
        assert!(
            matches!(
                e,
                Error::InvalidParameter {
                    name: "label_smoothing",
                    ..
                }
            ),
            "{e}"
        );
    }
}

#[test]
fn alpha_outside_0_1() {
    let (x, y) = ok_operands();
    for alpha in [-0.01, 1.01, f64::INFINITY] {
        for input in [Input::Logits, Input::SoftmaxLogits] {
            let e = errors(&FocalLoss::new().input(input).alpha(alpha), &x, &y);
            assert!(
                matches!(e, Error::InvalidParameter { name: "alpha", .. }),
                "{e}"
            );
        }
    }
}

#[test]
fn negative_gamma() {
    let (x, y) = ok_operands();
    let e = errors(&FocalLoss::new().gamma(-0.5), &x, &y);
    assert!(
        matches!(e, Error::InvalidParameter { name: "gamma", .. }),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "parameter `gamma` = -0.5 is invalid: must be >= 0"
    );
}

#[test]
fn softmax_logits_on_a_binary_only_loss() {
    let (x, y) = ok_operands();
    for (e, loss) in [
        (
            errors(
                &BinaryCrossEntropy::new().input(Input::SoftmaxLogits),
                &x,
                &y,
            ),
            "BinaryCrossEntropy",
        ),
        (
            errors(&BoundaryLoss::new().input(Input::SoftmaxLogits), &x, &y),
            "BoundaryLoss",
        ),
        (
            errors(&HausdorffDtLoss::new().input(Input::SoftmaxLogits), &x, &y),
            "HausdorffDtLoss",
        ),
    ] {
        assert_eq!(
            e,
            Error::Unsupported {
                loss,
                option: "input",
                reason: match &e {
                    Error::Unsupported { reason, .. } => reason,
                    _ => "",
                },
            }
        );
    }
    let phi = x.clone();
    let e = BoundaryLoss::new()
        .input(Input::SoftmaxLogits)
        .loss_with_distance(&x, &phi)
        .unwrap_err();
    assert!(matches!(
        e,
        Error::Unsupported {
            option: "input",
            ..
        }
    ));
    // Cross-entropy is over classes: sigmoid logits are refused.
    let e = errors(&CrossEntropy::new().input(Input::Logits), &x, &y);
    assert!(
        matches!(
            e,
            Error::Unsupported {
                loss: "CrossEntropy",
                option: "input",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn label_not_below_classes() {
    let labels = ndarray::array![[0_u32, 1], [3, 2]];
    let e = one_hot::<f64, _>(&labels, 3).unwrap_err();
    assert_eq!(
        e,
        Error::OutOfRange {
            operand: "labels",
            index: vec![1, 0],
            value: 3.0,
            allowed: "[0, classes)",
        }
    );
    assert!(matches!(
        one_hot::<f64, _>(&labels, 0).unwrap_err(),
        Error::InvalidParameter {
            name: "classes",
            ..
        }
    ));
    let scalar = ndarray::arr0(0_u32);
    assert!(matches!(
        one_hot::<f64, _>(&scalar, 2).unwrap_err(),
        Error::BadShape { .. }
    ));
    let huge = one_hot::<f64, _>(&labels, usize::MAX).unwrap_err();
    assert!(matches!(huge, Error::BadShape { .. }), "{huge}");
}

#[test]
fn negative_or_non_finite_parameters() {
    let (x, y) = ok_operands();
    let cases: Vec<(Error, &str)> = vec![
        (errors(&TverskyLoss::new().alpha(-0.1), &x, &y), "alpha"),
        (errors(&TverskyLoss::new().beta(f64::NAN), &x, &y), "beta"),
        (errors(&TverskyLoss::new().focal(0.0), &x, &y), "focal"),
        (
            errors(&TverskyLoss::new().smooth_terms(-1.0, 0.0), &x, &y),
            "smooth_nr",
        ),
        (
            errors(
                &CrossEntropy::new().class_weights(vec![1.0, -1.0, 1.0]),
                &x,
                &y,
            ),
            "class_weights",
        ),
        (
            errors(
                &CrossEntropy::new().class_weights(vec![1.0, f64::INFINITY, 1.0]),
                &x,
                &y,
            ),
            "class_weights",
        ),
        (
            errors(
                &DiceLoss::new()
                    .per_class(true)
                    .class_weights(vec![1.0, f64::NAN, 1.0]),
                &x,
                &y,
            ),
            "class_weights",
        ),
        (
            errors(
                &CrossEntropy::new().input(Input::Probabilities).epsilon(0.0),
                &x,
                &y,
            ),
            "epsilon",
        ),
        (errors(&FocalLoss::new().gamma(f64::NAN), &x, &y), "gamma"),
        (errors(&HausdorffDtLoss::new().alpha(-1.0), &x, &y), "alpha"),
        (
            errors(
                &Combo::new(CrossEntropy::new(), DiceLoss::new()).weights(-1.0, 1.0),
                &x,
                &y,
            ),
            "weight_a",
        ),
        (
            errors(
                &Combo::new(CrossEntropy::new(), DiceLoss::new()).weights(1.0, f64::NAN),
                &x,
                &y,
            ),
            "weight_b",
        ),
    ];
    for (e, name) in cases {
        assert!(
            matches!(e, Error::InvalidParameter { name: n, .. } if n == name),
            "{name}: {e}"
        );
    }
}

#[test]
fn shapes_that_differ() {
    let (x, y) = ok_operands();
    let other = ArrayD::<f64>::zeros(IxDyn(&[2, 3, 2, 1]));
    let losses: Vec<Box<LossFn<'_>>> = vec![
        Box::new(|x, y| CrossEntropy::new().loss(x, y)),
        Box::new(|x, y| DiceLoss::new().input(Input::SoftmaxLogits).loss(x, y)),
        Box::new(|x, y| TverskyLoss::new().per_class(true).loss(x, y)),
        Box::new(|x, y| FocalLoss::new().input(Input::SoftmaxLogits).loss(x, y)),
        Box::new(|x, y| BoundaryLoss::new().loss(x, y)),
        Box::new(|x, y| HausdorffDtLoss::new().loss(x, y)),
        Box::new(|x, y| Combo::new(FocalLoss::new(), DiceLoss::new()).loss(x, y)),
    ];
    for f in &losses {
        let e = f(&x, &other).unwrap_err();
        assert!(
            matches!(
                e,
                Error::ShapeMismatch {
                    operand: "target",
                    ..
                }
            ),
            "{e}"
        );
    }
    // grad, weights and phi of the wrong shape.
    let mut bad_grad = other.clone();
    for e in [
        CrossEntropy::new()
            .loss_grad(&x, &y, &mut bad_grad)
            .unwrap_err(),
        DiceLoss::new()
            .input(Input::SoftmaxLogits)
            .per_class(true)
            .loss_grad(&x, &y, &mut bad_grad)
            .unwrap_err(),
        FocalLoss::new()
            .input(Input::SoftmaxLogits)
            .loss_grad(&x, &y, &mut bad_grad)
            .unwrap_err(),
        Combo::new(CrossEntropy::new(), DiceLoss::new())
            .loss_grad(&x, &y, &mut bad_grad)
            .unwrap_err(),
        BoundaryLoss::new()
            .loss_grad(&x, &y, &mut bad_grad)
            .unwrap_err(),
        HausdorffDtLoss::new()
            .loss_grad(&x, &y, &mut bad_grad)
            .unwrap_err(),
    ] {
        assert!(
            matches!(
                e,
                Error::ShapeMismatch {
                    operand: "grad",
                    ..
                }
            ),
            "{e}"
        );
    }
    let e = CrossEntropy::new()
        .loss_with_weights(&x, &y, &other)
        .unwrap_err();
    assert!(matches!(
        e,
        Error::ShapeMismatch {
            operand: "weights",
            ..
        }
    ));
    let e = BoundaryLoss::new()
        .loss_with_distance(&x, &other)
        .unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { operand: "phi", .. }));
    // A softmax over classes needs a class axis.
    let flat = ndarray::array![0.5, 1.0];
    let e = CrossEntropy::new()
        .loss(&flat, &flat.mapv(|_| 0.5))
        .unwrap_err();
    assert!(matches!(e, Error::BadShape { .. }), "{e}");
    // Leaving out the background needs a second class.
    let one_class = ArrayD::<f64>::zeros(IxDyn(&[2, 1, 3]));
    let e = DiceLoss::new()
        .per_class(true)
        .include_background(false)
        .loss(&one_class, &one_class)
        .unwrap_err();
    assert!(matches!(e, Error::BadShape { .. }), "{e}");
}

#[test]
fn empty_arrays() {
    let empty = ArrayD::<f64>::zeros(IxDyn(&[2, 3, 0]));
    let losses: Vec<Box<dyn Fn() -> Result<f64, Error>>> = vec![
        Box::new(|| CrossEntropy::new().loss(&empty, &empty)),
        Box::new(|| {
            DiceLoss::new()
                .input(Input::SoftmaxLogits)
                .per_class(true)
                .loss(&empty, &empty)
        }),
        Box::new(|| TverskyLoss::new().loss(&empty, &empty)),
        Box::new(|| FocalLoss::new().loss(&empty, &empty)),
        Box::new(|| {
            FocalLoss::new()
                .input(Input::SoftmaxLogits)
                .loss(&empty, &empty)
        }),
        Box::new(|| BoundaryLoss::new().loss(&empty, &empty)),
        Box::new(|| HausdorffDtLoss::new().loss(&empty, &empty)),
        Box::new(|| Combo::new(CrossEntropy::new(), DiceLoss::new()).loss(&empty, &empty)),
    ];
    for f in &losses {
        let e = f().unwrap_err();
        assert!(
            matches!(
                e,
                Error::BadShape {
                    operand: "input",
                    ..
                }
            ),
            "{e}"
        );
    }
    // one_hot and signed_distance accept empty arrays.
    let labels = ndarray::Array2::<u32>::zeros((0, 4));
    assert_eq!(one_hot::<f64, _>(&labels, 3).unwrap().shape(), &[0, 3, 4]);
}

#[test]
fn nan_or_infinite_inputs() {
    let (mut x, y) = ok_operands();
    x[[1, 2, 0, 1]] = f64::NAN;
    let expected = |e: &Error| matches!(e, Error::NonFinite { operand: "input", index, .. } if index == &vec![1, 2, 0, 1]);
    for e in [
        errors(&CrossEntropy::new(), &x, &y),
        errors(&DiceLoss::new().input(Input::SoftmaxLogits), &x, &y),
        errors(&TverskyLoss::new().per_class(true), &x, &y),
        errors(&FocalLoss::new(), &x, &y),
        errors(&FocalLoss::new().input(Input::SoftmaxLogits), &x, &y),
        errors(&BoundaryLoss::new(), &x, &y),
        errors(&HausdorffDtLoss::new(), &x, &y),
    ] {
        assert!(expected(&e), "{e}");
    }
    // Cross-entropy finds a bad logit through the loss or the gradient it
    // spoils (-∞ leaves every gradient finite): each must still be named.
    for bad in [f64::INFINITY, f64::NEG_INFINITY] {
        x[[1, 2, 0, 1]] = bad;
        assert!(expected(&errors(&CrossEntropy::new(), &x, &y)));
        assert!(expected(&CrossEntropy::new().loss(&x, &y).unwrap_err()));
    }
    // Per-element weights and distance maps are checked too.
    let (x, y) = ok_operands();
    let mut w = y.mapv(|_| 1.0);
    w[[0, 1, 1, 1]] = f64::NAN;
    let e = CrossEntropy::new()
        .loss_with_weights(&x, &y, &w)
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::NonFinite {
                operand: "weights",
                ..
            }
        ),
        "{e}"
    );
    w[[0, 1, 1, 1]] = -1.0;
    let e = CrossEntropy::new()
        .loss_with_weights(&x, &y, &w)
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::OutOfRange {
                operand: "weights",
                ..
            }
        ),
        "{e}"
    );
    let mut phi = x.clone();
    phi[[0, 0, 0, 0]] = f64::NEG_INFINITY;
    let e = BoundaryLoss::new()
        .loss_with_distance(&x, &phi)
        .unwrap_err();
    assert!(matches!(e, Error::NonFinite { operand: "phi", .. }), "{e}");
}

#[test]
fn probabilities_outside_0_1() {
    let (x, y) = ok_operands();
    let mut p = x.mapv(|v| (v + 2.0) / 4.0);
    p[[0, 1, 1, 0]] = 1.5;
    for e in [
        errors(&CrossEntropy::new().input(Input::Probabilities), &p, &y),
        errors(
            &DiceLoss::new().input(Input::Probabilities).per_class(true),
            &p,
            &y,
        ),
        errors(&TverskyLoss::new().input(Input::Probabilities), &p, &y),
        errors(&FocalLoss::new().input(Input::Probabilities), &p, &y),
        errors(&BoundaryLoss::new().input(Input::Probabilities), &p, &y),
        errors(&HausdorffDtLoss::new().input(Input::Probabilities), &p, &y),
    ] {
        assert!(
            matches!(&e, Error::OutOfRange { operand: "input", index, .. } if index == &vec![0, 1, 1, 0]),
            "{e}"
        );
    }
}

#[test]
fn target_outside_0_1() {
    let (x, mut y) = ok_operands();
    y[[1, 0, 1, 1]] = -0.5;
    for e in [
        errors(&CrossEntropy::new(), &x, &y),
        errors(&DiceLoss::new().input(Input::SoftmaxLogits), &x, &y),
        errors(&TverskyLoss::new(), &x, &y),
        errors(&FocalLoss::new(), &x, &y),
        errors(&FocalLoss::new().input(Input::SoftmaxLogits), &x, &y),
        errors(&BoundaryLoss::new(), &x, &y),
        errors(&HausdorffDtLoss::new(), &x, &y),
    ] {
        assert!(
            matches!(&e, Error::OutOfRange { operand: "target", index, .. } if index == &vec![1, 0, 1, 1]),
            "{e}"
        );
    }
}

#[test]
fn f32_overflow_is_an_error() {
    let (x, y) = ok_operands();
    let (x, y) = (x.mapv(|v| v as f32), y.mapv(|v| v as f32));
    // A class weight that does not fit in f32.
    let e = CrossEntropy::new()
        .class_weights(vec![1.0, 1e39, 1.0])
        .loss(&x, &y)
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidParameter {
                name: "class_weights",
                ..
            }
        ),
        "{e}"
    );
    // Weights that fit but whose sum overflows.
    let e = CrossEntropy::new()
        .class_weights(vec![3e38, 3e38, 3e38])
        .reduction(Reduction::Sum)
        .loss_and_grad(&x, &y)
        .unwrap_err();
    assert!(matches!(e, Error::NonFiniteResult { .. }), "{e}");
    // Hausdorff weights d^alpha that overflow f32.
    let big = ndarray::Array4::from_shape_fn((1, 1, 1, 40), |(.., j)| f32::from(j < 2));
    let e = HausdorffDtLoss::new()
        .alpha(30.0)
        .loss(&big, &big)
        .unwrap_err();
    assert!(matches!(e, Error::NonFiniteResult { .. }), "{e}");
}
