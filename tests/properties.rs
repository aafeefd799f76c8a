//! Property tests of the first-stage losses: analytic gradients against
//! central finite differences, f32 against f64, layout independence, and
//! the identities the definitions imply.

use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;
use segloss::{BinaryCrossEntropy, BoundaryLoss, DiceLoss, Input, Loss, Reduction, ShapeAwareLoss};

/// A random shape of 1 to 3 axes with 1 to 5 elements along each.
fn shape() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..=5, 1..=3)
}

/// Logits in [-6, 6], soft targets and per-element weights of one shape.
fn operands() -> impl Strategy<Value = (ArrayD<f64>, ArrayD<f64>, ArrayD<f64>)> {
    shape().prop_flat_map(|shape| {
        let n: usize = shape.iter().product();
        (
            prop::collection::vec(-6.0f64..6.0, n),
            prop::collection::vec(0.0f64..=1.0, n),
            prop::collection::vec(0.0f64..5.0, n),
        )
            .prop_map(move |(x, y, w)| {
                let arr = |v| ArrayD::from_shape_vec(IxDyn(&shape), v).unwrap();
                (arr(x), arr(y), arr(w))
            })
    })
}

/// The logits mapped to probabilities in [0.02, 0.98] when `probabilities`:
/// away from the clip ε and from 0 and 1, where a finite difference would
/// straddle a kink.
fn as_input(x: ArrayD<f64>, probabilities: bool) -> ArrayD<f64> {
    if probabilities {
        x.mapv(|v| (v / 12.0 + 0.5).clamp(0.02, 0.98))
    } else {
        x
    }
}

fn input_kind(probabilities: bool) -> Input {
    if probabilities {
        Input::Probabilities
    } else {
        Input::Logits
    }
}

/// Checks `grad` against central differences of `f` at every element.
fn assert_gradient(
    x: &ArrayD<f64>,
    grad: &ArrayD<f64>,
    f: impl Fn(&ArrayD<f64>) -> f64,
) -> Result<(), TestCaseError> {
    let h = 1e-6;
    for i in 0..x.len() {
        let mut plus = x.clone();
        let mut minus = x.clone();
        plus.as_slice_mut().unwrap()[i] += h;
        minus.as_slice_mut().unwrap()[i] -= h;
        let fd = (f(&plus) - f(&minus)) / (2.0 * h);
        let g = grad.as_slice().unwrap()[i];
        prop_assert!(
            (g - fd).abs() <= 1e-6 * fd.abs().max(1.0),
            "element {i}: analytic {g:e}, finite difference {fd:e}"
        );
    }
    Ok(())
}

fn reduction(sum: bool) -> Reduction {
    if sum { Reduction::Sum } else { Reduction::Mean }
}

/// A Dice configuration over the parameter ranges the SPEC allows.
fn dice(probabilities: bool, gamma: f64, s_nr: f64, s_dr: f64, per_sample: bool) -> DiceLoss {
    DiceLoss::new()
        .input(input_kind(probabilities))
        .gamma(gamma)
        .smooth_terms(s_nr, s_dr)
        .per_sample(per_sample)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn bce_gradient_matches_finite_differences(
        probabilities in any::<bool>(),
        (x, y, _) in operands(),
        beta in 0.1f64..5.0,
        sum in any::<bool>(),
    ) {
        let x = as_input(x, probabilities);
        let bce = BinaryCrossEntropy::new()
            .input(input_kind(probabilities))
            .pos_weight(beta)
            .reduction(reduction(sum));
        let (loss, grad) = bce.loss_and_grad(&x, &y).unwrap();
        prop_assert!(loss >= 0.0);
        assert_gradient(&x, &grad, |x| bce.loss(x, &y).unwrap())?;
    }

    #[test]
    fn dice_gradient_matches_finite_differences(
        probabilities in any::<bool>(),
        (x, y, _) in operands(),
        gamma in prop_oneof![Just(1.0), Just(2.0), 1.0f64..3.0],
        s_nr in prop_oneof![Just(1e-6), 0.0f64..1.0],
        s_dr in prop_oneof![Just(1e-6), 0.01f64..1.0],
        per_sample in any::<bool>(),
    ) {
        let x = as_input(x, probabilities);
        let loss = dice(probabilities, gamma, s_nr, s_dr, per_sample);
        let (_, grad) = loss.loss_and_grad(&x, &y).unwrap();
        assert_gradient(&x, &grad, |x| loss.loss(x, &y).unwrap())?;
    }

    #[test]
    fn dice_is_non_negative_for_gamma_up_to_two(
        probabilities in any::<bool>(),
        (x, y, _) in operands(),
        gamma in 1.0f64..=2.0,
        s in 0.0f64..1.0,
        per_sample in any::<bool>(),
    ) {
        // 2py <= p^γ + y^γ for p, y in [0, 1] and γ in [1, 2], so with
        // s_nr <= s_dr the fraction is at most 1.
        let x = as_input(x, probabilities);
        let loss = dice(probabilities, gamma, s, s + 1e-9, per_sample);
        let value = loss.loss(&x, &y).unwrap();
        prop_assert!((0.0..=1.0).contains(&value), "loss {value}");
    }

    #[test]
    fn per_sample_dice_of_one_sample_is_the_global_dice(
        (x, y, _) in operands(),
        gamma in 1.0f64..3.0,
    ) {
        let mut shape = vec![1];
        shape.extend_from_slice(x.shape());
        let x = x.into_shape_with_order(IxDyn(&shape)).unwrap();
        let y = y.into_shape_with_order(IxDyn(&shape)).unwrap();
        let global = dice(false, gamma, 1e-6, 1e-6, false).loss_and_grad(&x, &y).unwrap();
        let sample = dice(false, gamma, 1e-6, 1e-6, true).loss_and_grad(&x, &y).unwrap();
        prop_assert!((global.0 - sample.0).abs() <= 1e-15);
        prop_assert_eq!(global.1, sample.1);
    }

    #[test]
    fn weighted_bce_gradient_matches_finite_differences(
        probabilities in any::<bool>(),
        (x, y, w) in operands(),
        sum in any::<bool>(),
    ) {
        let x = as_input(x, probabilities);
        let loss = ShapeAwareLoss::new().input(input_kind(probabilities)).reduction(reduction(sum));
        let mut grad = ArrayD::zeros(x.raw_dim());
        let value = loss.loss_grad_with_weights(&x, &y, &w, &mut grad).unwrap();
        prop_assert!(value >= 0.0);
        // Σ w·ℓ with weights 1 is plain BCE.
        let ones = ArrayD::ones(x.raw_dim());
        let bce = BinaryCrossEntropy::new().input(input_kind(probabilities)).reduction(reduction(sum));
        let plain = loss.loss_with_weights(&x, &y, &ones).unwrap();
        prop_assert!((plain - bce.loss(&x, &y).unwrap()).abs() <= 1e-14 * plain.max(1.0));
        assert_gradient(&x, &grad, |x| loss.loss_with_weights(x, &y, &w).unwrap())?;
    }

    #[test]
    fn f32_agrees_with_f64(
        (x, y, w) in operands(),
        beta in 0.1f64..5.0,
        gamma in 1.0f64..3.0,
        per_sample in any::<bool>(),
    ) {
        let x32 = x.mapv(|v| v as f32);
        let y32 = y.mapv(|v| v as f32);
        let w32 = w.mapv(|v| v as f32);
        // Compare with f64 on the very same (f32-representable) values.
        let (x, y, w) = (x32.mapv(f64::from), y32.mapv(f64::from), w32.mapv(f64::from));
        let close = |a: f32, b: f64| (f64::from(a) - b).abs() <= 2e-6 * b.abs().max(1.0);

        let bce = BinaryCrossEntropy::new().pos_weight(beta);
        let (l32, g32) = bce.loss_and_grad(&x32, &y32).unwrap();
        let (l64, g64) = bce.loss_and_grad(&x, &y).unwrap();
        prop_assert!(close(l32, l64), "BCE {l32} vs {l64}");
        for (&a, &b) in g32.iter().zip(&g64) {
            prop_assert!(close(a, b), "BCE grad {a} vs {b}");
        }

        let dice = dice(false, gamma, 1e-6, 1e-6, per_sample);
        let (l32, g32) = dice.loss_and_grad(&x32, &y32).unwrap();
        let (l64, g64) = dice.loss_and_grad(&x, &y).unwrap();
        prop_assert!(close(l32, l64), "Dice {l32} vs {l64}");
        for (&a, &b) in g32.iter().zip(&g64) {
            prop_assert!(close(a, b), "Dice grad {a} vs {b}");
        }

        let weighted = ShapeAwareLoss::new();
        let l32 = weighted.loss_with_weights(&x32, &y32, &w32).unwrap();
        let l64 = weighted.loss_with_weights(&x, &y, &w).unwrap();
        prop_assert!(close(l32, l64), "weighted BCE {l32} vs {l64}");
    }

    #[test]
    fn strided_layouts_give_the_contiguous_result(
        (x, y, w) in operands(),
        gamma in 1.0f64..3.0,
    ) {
        // The input and the weights transposed (Fortran order), the target
        // and the gradient in standard layout: no two share a memory order,
        // so the strided path copies the operands in logical order into the
        // slice path's blocks, and gives the standard layout's result bit
        // for bit.
        let (xt, yt, wt) = (x.t(), y.t(), w.t());
        let (xs, ys, ws) = (
            xt.as_standard_layout(),
            yt.as_standard_layout(),
            wt.as_standard_layout(),
        );

        let bce = BinaryCrossEntropy::new();
        let (a, ga) = bce.loss_and_grad(&xt, &ys).unwrap();
        let (b, gb) = bce.loss_and_grad(&xs, &ys).unwrap();
        prop_assert_eq!(a.to_bits(), b.to_bits());
        prop_assert_eq!(ga, gb);

        let dice = DiceLoss::new().gamma(gamma).per_sample(true);
        let (a, ga) = dice.loss_and_grad(&xt, &ys).unwrap();
        let (b, gb) = dice.loss_and_grad(&xs, &ys).unwrap();
        prop_assert_eq!(a.to_bits(), b.to_bits());
        prop_assert_eq!(ga, gb);

        let weighted = ShapeAwareLoss::new();
        let mut ga = ArrayD::zeros(xs.raw_dim());
        let mut gb = ArrayD::zeros(xs.raw_dim());
        let a = weighted.loss_grad_with_weights(&xt, &ys, &wt, &mut ga).unwrap();
        let b = weighted.loss_grad_with_weights(&xs, &ys, &ws, &mut gb).unwrap();
        prop_assert_eq!(a.to_bits(), b.to_bits());
        prop_assert_eq!(ga, gb);

        // The weights stand in for the boundary loss's distance map.
        let boundary = BoundaryLoss::new();
        let mut ga = ArrayD::zeros(xs.raw_dim());
        let mut gb = ArrayD::zeros(xs.raw_dim());
        let a = boundary.loss_grad_with_distance(&xt, &wt, &mut ga).unwrap();
        let b = boundary.loss_grad_with_distance(&xs, &ws, &mut gb).unwrap();
        prop_assert_eq!(a.to_bits(), b.to_bits());
        prop_assert_eq!(ga, gb);
    }
}

#[test]
fn extreme_logits_give_finite_losses_and_gradients() {
    let x = ndarray::array![1e4_f32, -1e4, 1e4, -1e4];
    let y = ndarray::array![0.0_f32, 1.0, 1.0, 0.0];
    let (loss, grad) = BinaryCrossEntropy::new()
        .pos_weight(3.0)
        .reduction(Reduction::Sum)
        .loss_and_grad(&x, &y)
        .unwrap();
    // Two confident mistakes cost 1e4 and 3·1e4; the two right answers ~0.
    assert!((loss - 4e4).abs() <= 4e4 * 1e-6, "loss {loss}");
    assert_eq!(grad.to_vec(), vec![1.0, -3.0, 0.0, 0.0]);

    let (loss, grad) = DiceLoss::new().loss_and_grad(&x, &y).unwrap();
    assert!(loss.is_finite() && grad.iter().all(|g| g.is_finite()));
}
