//! Every bad input of the SPEC that the first-stage losses cover returns an
//! `Err` naming what is at fault, never a panic.

use ndarray::{Array0, Array1, Array2, ArrayD, IxDyn, array};
use segloss::distance::{ClassWeights, UNetWeights};
use segloss::{BinaryCrossEntropy, DiceLoss, Error, Input, Loss, ShapeAwareLoss};

/// Runs `loss` and `loss_grad` and returns both errors (they must agree).
fn errors<L: Loss<f64>>(loss: &L, x: &Array2<f64>, y: &Array2<f64>) -> Error {
    let a = loss.loss(x, y).unwrap_err();
    let mut grad = Array2::zeros(x.raw_dim());
    let b = loss.loss_grad(x, y, &mut grad).unwrap_err();
    // Compared as messages: a NaN value makes the errors unequal as values.
    assert_eq!(a.to_string(), b.to_string());
    a
}

fn ok_operands() -> (Array2<f64>, Array2<f64>) {
    (
        array![[0.5, 0.2], [0.9, 0.0]],
        array![[1.0, 0.0], [1.0, 0.0]],
    )
}

/// One of each loss, in its default form and on probabilities.
fn all_losses() -> (Vec<BinaryCrossEntropy>, Vec<DiceLoss>, Vec<ShapeAwareLoss>) {
    (
        vec![
            BinaryCrossEntropy::new(),
            BinaryCrossEntropy::new().input(Input::Probabilities),
        ],
        vec![DiceLoss::new(), DiceLoss::new().input(Input::Probabilities)],
        vec![
            ShapeAwareLoss::new(),
            ShapeAwareLoss::new().input(Input::Probabilities),
        ],
    )
}

/// Applies `check` to the error of every loss on `(x, y)`.
fn for_every_loss(x: &Array2<f64>, y: &Array2<f64>, check: impl Fn(Error)) {
    let (bce, dice, shape) = all_losses();
    bce.iter().for_each(|l| check(errors(l, x, y)));
    dice.iter().for_each(|l| check(errors(l, x, y)));
    shape.iter().for_each(|l| check(errors(l, x, y)));
}

#[test]
fn target_of_another_shape() {
    let (x, _) = ok_operands();
    let y = Array2::zeros((2, 3));
    for_every_loss(&x, &y, |e| {
        assert_eq!(
            e,
            Error::ShapeMismatch {
                operand: "target",
                expected: vec![2, 2],
                found: vec![2, 3]
            }
        );
        assert_eq!(
            e.to_string(),
            "target has shape [2, 3], expected the input's shape [2, 2]"
        );
    });
}

#[test]
fn grad_of_another_shape() {
    let (x, y) = ok_operands();
    let mut grad = Array2::zeros((3, 2));
    let expected = Error::ShapeMismatch {
        operand: "grad",
        expected: vec![2, 2],
        found: vec![3, 2],
    };
    assert_eq!(
        BinaryCrossEntropy::new().loss_grad(&x, &y, &mut grad),
        Err(expected.clone())
    );
    assert_eq!(
        DiceLoss::new().loss_grad(&x, &y, &mut grad),
        Err(expected.clone())
    );
    assert_eq!(
        ShapeAwareLoss::new().loss_grad(&x, &y, &mut grad),
        Err(expected.clone())
    );
    let w = Array2::ones((2, 2));
    assert_eq!(
        ShapeAwareLoss::new().loss_grad_with_weights(&x, &y, &w, &mut grad),
        Err(expected)
    );
}

#[test]
fn weights_of_another_shape() {
    let (x, y) = ok_operands();
    let w = Array2::ones((2, 1));
    let e = ShapeAwareLoss::new()
        .loss_with_weights(&x, &y, &w)
        .unwrap_err();
    assert_eq!(
        e,
        Error::ShapeMismatch {
            operand: "weights",
            expected: vec![2, 2],
            found: vec![2, 1]
        }
    );
}

#[test]
fn empty_input() {
    let x = Array2::<f64>::zeros((0, 3));
    for_every_loss(&x, &x, |e| {
        assert!(
            matches!(e, Error::BadShape { operand: "input", ref shape, .. } if shape == &[0, 3]),
            "{e}"
        );
    });
}

#[test]
fn non_finite_input() {
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let (mut x, y) = ok_operands();
        x[[1, 0]] = bad;
        for_every_loss(&x, &y, |e| match e {
            Error::NonFinite {
                operand: "input",
                index,
                ..
            } => assert_eq!(index, vec![1, 0]),
            // Probabilities are range-checked after finiteness: ±∞ and NaN
            // are reported as not finite either way.
            other => panic!("unexpected {other}"),
        });
    }
}

#[test]
fn probability_outside_unit_interval() {
    let (_, y) = ok_operands();
    let x = array![[0.5, 0.2], [1.5, 0.0]];
    let e = errors(
        &BinaryCrossEntropy::new().input(Input::Probabilities),
        &x,
        &y,
    );
    assert_eq!(
        e.to_string(),
        "input[1, 0] = 1.5 is outside [0, 1] (Input::Probabilities)"
    );
    let e = errors(&DiceLoss::new().input(Input::Probabilities), &x, &y);
    assert!(matches!(
        e,
        Error::OutOfRange {
            operand: "input",
            ..
        }
    ));
    let e = errors(&ShapeAwareLoss::new().input(Input::Probabilities), &x, &y);
    assert!(matches!(
        e,
        Error::OutOfRange {
            operand: "input",
            ..
        }
    ));
    // The same numbers are fine as logits.
    assert!(BinaryCrossEntropy::new().loss(&x, &y).is_ok());
}

#[test]
fn target_outside_unit_interval() {
    for bad in [-0.1, 1.5, f64::NAN, f64::INFINITY] {
        let (x, mut y) = ok_operands();
        y[[0, 1]] = bad;
        for_every_loss(&x, &y, |e| match e {
            Error::OutOfRange {
                operand: "target",
                index,
                ..
            } => assert_eq!(index, vec![0, 1]),
            other => panic!("unexpected {other}"),
        });
    }
}

#[test]
fn non_binary_target_for_the_shape_aware_loss() {
    let (x, mut y) = ok_operands();
    y[[1, 1]] = 0.5;
    let e = errors(&ShapeAwareLoss::new(), &x, &y);
    assert_eq!(
        e.to_string(),
        "target[1, 1] = 0.5 is outside {0, 1} (a binary mask)"
    );
    // Soft targets are fine with a precomputed map.
    let w = Array2::ones((2, 2));
    assert!(ShapeAwareLoss::new().loss_with_weights(&x, &y, &w).is_ok());
}

#[test]
fn bad_weights() {
    let (x, y) = ok_operands();
    for (bad, operand_error) in [
        (-1.0, "outside"),
        (f64::NAN, "not finite"),
        (f64::INFINITY, "not finite"),
    ] {
        let mut w = Array2::ones((2, 2));
        w[[0, 1]] = bad;
        let e = ShapeAwareLoss::new()
            .loss_with_weights(&x, &y, &w)
            .unwrap_err();
        let message = e.to_string();
        assert!(
            message.starts_with("weights[0, 1]") && message.contains(operand_error),
            "{message}"
        );
        let mut grad = Array2::zeros((2, 2));
        let e2 = ShapeAwareLoss::new()
            .loss_grad_with_weights(&x, &y, &w, &mut grad)
            .unwrap_err();
        assert_eq!(e2.to_string(), message);
    }
}

/// The parameter named in an `InvalidParameter` error.
fn parameter(e: Error) -> &'static str {
    match e {
        Error::InvalidParameter { name, .. } => name,
        other => panic!("expected an invalid parameter, got {other}"),
    }
}

#[test]
fn bad_bce_parameters() {
    let (x, y) = ok_operands();
    for beta in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert_eq!(
            parameter(errors(&BinaryCrossEntropy::new().pos_weight(beta), &x, &y)),
            "pos_weight"
        );
    }
    for eps in [0.0, -1e-7, 0.5, 0.7, f64::NAN] {
        let bce = BinaryCrossEntropy::new()
            .input(Input::Probabilities)
            .epsilon(eps);
        assert_eq!(
            parameter(errors(&bce, &x.mapv(|v| v.clamp(0.0, 1.0)), &y)),
            "epsilon"
        );
    }
}

#[test]
fn bad_dice_parameters() {
    let (x, y) = ok_operands();
    for gamma in [0.99, 0.0, -2.0, f64::NAN, f64::INFINITY] {
        assert_eq!(
            parameter(errors(&DiceLoss::new().gamma(gamma), &x, &y)),
            "gamma"
        );
    }
    assert_eq!(
        parameter(errors(&DiceLoss::new().smooth(-1e-6), &x, &y)),
        "smooth_nr"
    );
    assert_eq!(
        parameter(errors(&DiceLoss::new().smooth_terms(0.0, -1.0), &x, &y)),
        "smooth_dr"
    );
    assert_eq!(
        parameter(errors(&DiceLoss::new().smooth_terms(f64::NAN, 1.0), &x, &y)),
        "smooth_nr"
    );
}

#[test]
fn bad_shape_aware_parameters() {
    let (x, y) = ok_operands();
    let with = |w: UNetWeights| errors(&ShapeAwareLoss::new().weights(w), &x, &y);
    assert_eq!(parameter(with(UNetWeights::new().sigma(0.0))), "sigma");
    assert_eq!(parameter(with(UNetWeights::new().sigma(f64::NAN))), "sigma");
    assert_eq!(parameter(with(UNetWeights::new().w0(-1.0))), "w0");
    let e = with(UNetWeights::new().class_weights(ClassWeights::Fixed {
        background: -1.0,
        foreground: 1.0,
    }));
    assert!(e.to_string().contains("-1"), "{e}");
    // Spacing covers the axes after the sample axis: here one.
    let e = with(UNetWeights::new().spacing(vec![1.0, 1.0]));
    assert!(
        matches!(
            e,
            Error::InvalidLength {
                name: "spacing",
                expected: 1,
                found: 2
            }
        ),
        "{e}"
    );
    let e = with(UNetWeights::new().spacing(vec![0.0]));
    assert_eq!(parameter(e), "spacing");
    assert_eq!(
        parameter(errors(&ShapeAwareLoss::new().epsilon(0.5), &x, &y)),
        "epsilon"
    );
}

#[test]
fn shape_aware_needs_a_spatial_axis() {
    let x = Array1::from(vec![0.5, -0.5]);
    let e = ShapeAwareLoss::new()
        .loss(&x, &x.mapv(|_| 1.0))
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::BadShape {
                operand: "target",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn per_sample_needs_a_sample_axis() {
    let x = Array0::from_elem((), 0.5);
    let e = DiceLoss::new().per_sample(true).loss(&x, &x).unwrap_err();
    assert!(matches!(e, Error::BadShape { .. }), "{e}");
    // A 0-d array is one element: fine globally.
    assert!(DiceLoss::new().loss(&x, &x).is_ok());
}

#[test]
fn results_that_overflow_the_element_type() {
    // Finite parameters whose f32 loss overflows: an Err, never Ok(inf).
    let x = ndarray::array![-1e4_f32, -1e4];
    let y = ndarray::array![1.0_f32, 1.0];
    let bce = BinaryCrossEntropy::new()
        .pos_weight(1e36)
        .reduction(segloss::Reduction::Sum);
    assert!(matches!(
        bce.loss(&x, &y),
        Err(Error::NonFiniteResult { .. })
    ));
    let mut grad = ndarray::Array1::zeros(2);
    assert!(bce.loss_grad(&x, &y, &mut grad).is_err());
    // The same through finite pixel weights: the sum, not an element, is
    // at fault (a pass that screens its elements by the sum checks them
    // all again before it says so).
    let w = ndarray::array![1e36_f32, 1e36];
    let shape_aware = ShapeAwareLoss::new().reduction(segloss::Reduction::Sum);
    assert!(matches!(
        shape_aware.loss_with_weights(&x, &y, &w),
        Err(Error::NonFiniteResult { .. })
    ));
    assert!(matches!(
        shape_aware.loss_grad_with_weights(&x, &y, &w, &mut grad),
        Err(Error::NonFiniteResult { .. })
    ));
    // A parameter that is not even representable in f32.
    let e = BinaryCrossEntropy::new()
        .pos_weight(1e39)
        .loss(&x, &y)
        .unwrap_err();
    assert_eq!(parameter(e), "pos_weight");
    // The same in f64 is fine.
    let x64 = x.mapv(f64::from);
    let y64 = y.mapv(f64::from);
    assert!(bce.loss(&x64, &y64).unwrap().is_finite());
}

#[test]
fn dice_with_a_zero_denominator() {
    let x = ArrayD::<f64>::zeros(IxDyn(&[2, 3]));
    let dice = DiceLoss::new()
        .input(Input::Probabilities)
        .smooth_terms(0.0, 0.0);
    assert!(matches!(
        dice.loss(&x, &x),
        Err(Error::NonFiniteResult { .. })
    ));
    // With the default smoothing, empty against empty is a perfect 0.
    let dice = DiceLoss::new().input(Input::Probabilities);
    assert_eq!(dice.loss(&x, &x), Ok(0.0));
}

#[test]
fn softmax_logits_on_a_binary_loss() {
    let (x, y) = ok_operands();
    let e = errors(
        &BinaryCrossEntropy::new().input(Input::SoftmaxLogits),
        &x,
        &y,
    );
    assert!(
        matches!(
            e,
            Error::Unsupported {
                loss: "BinaryCrossEntropy",
                option: "input",
                ..
            }
        ),
        "{e}"
    );
    let e = errors(&ShapeAwareLoss::new().input(Input::SoftmaxLogits), &x, &y);
    assert!(
        matches!(
            e,
            Error::Unsupported {
                loss: "ShapeAwareLoss",
                option: "input",
                ..
            }
        ),
        "{e}"
    );
    let w = Array2::ones((2, 2));
    let e = ShapeAwareLoss::new()
        .input(Input::SoftmaxLogits)
        .loss_with_weights(&x, &y, &w)
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Unsupported {
                loss: "ShapeAwareLoss",
                ..
            }
        ),
        "{e}"
    );
}
