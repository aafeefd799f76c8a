//! Every second-stage case of the reference vectors (PyTorch, MONAI, SciPy):
//! one-hot encoding, cross-entropy, multi-class Dice, Tversky, focal,
//! Dice + CE, signed distances, the boundary and the Hausdorff-DT losses,
//! through `loss`, `loss_grad` and `loss_and_grad`, at the case's tolerance.

mod common;

use common::{Case, check_loss as check, input_kind, reduction};
use ndarray::{ArrayD, Ix3};
use segloss::distance::signed_distance;
use segloss::{
    BoundaryLoss, Combo, CrossEntropy, DiceLoss, FocalLoss, HausdorffDtLoss, Input, TverskyLoss,
    one_hot,
};

/// The case's class weights (`null` or a list).
fn class_weights(case: &Case) -> Option<Vec<f64>> {
    case.params
        .get("class_weights")
        .and_then(|w| w.as_array())
        .map(|w| w.iter().map(|v| v.as_f64().unwrap()).collect())
}

#[test]
fn one_hot_matches_numpy() {
    let cases = common::cases("one_hot");
    assert_eq!(cases.len(), 1);
    for case in &cases {
        let labels: ArrayD<u32> = case.u32("labels");
        let classes = case.params["classes"].as_u64().unwrap() as usize;
        let expected = case.f64("onehot");
        let out = one_hot::<f64, _>(&labels, classes).unwrap();
        assert_eq!(out, expected, "{}", case.name);
        // Static dimensions too.
        let labels3 = labels.clone().into_dimensionality::<Ix3>().unwrap();
        let out3 = one_hot::<f32, _>(&labels3, classes).unwrap();
        assert_eq!(out3.shape(), expected.shape());
        assert!(out3.iter().zip(&expected).all(|(&a, &b)| f64::from(a) == b));
    }
}

#[test]
fn cross_entropy_matches_pytorch() {
    let cases = common::cases("cross_entropy");
    assert_eq!(cases.len(), 18);
    for case in &cases {
        let ce = CrossEntropy::new()
            .input(input_kind(case))
            .class_weights(class_weights(case))
            .label_smoothing(case.param_f64("label_smoothing"))
            .reduction(reduction(case));
        if case.has("weights") {
            let input = case.f64("input");
            let target = case.f64("target");
            let weights = case.f64("weights");
            let expected = case.expected("loss");
            let value = ce.loss_with_weights(&input, &target, &weights).unwrap();
            case.assert_close("loss_with_weights", value, expected);
            let mut grad = ArrayD::zeros(input.raw_dim());
            let value = ce
                .loss_grad_with_weights(&input, &target, &weights, &mut grad)
                .unwrap();
            case.assert_close("loss_grad_with_weights", value, expected);
            case.assert_all_close("grad", &grad, &case.f64("grad"));
        } else {
            check(case, &ce);
        }
    }
}

/// The multi-class Dice cases: those with a class axis option or softmax.
fn multiclass_dice_cases() -> Vec<Case> {
    common::cases("dice")
        .into_iter()
        .filter(|c| {
            c.params.get("per_class").is_some()
                || c.params.get("log_cosh").is_some()
                || c.params["input"] == "softmax_logits"
        })
        .collect()
}

#[test]
fn multiclass_dice_matches_monai() {
    let cases = multiclass_dice_cases();
    assert_eq!(cases.len(), 18);
    for case in &cases {
        let mut dice = DiceLoss::new()
            .input(input_kind(case))
            .gamma(case.param_f64("gamma"))
            .smooth_terms(case.param_f64("smooth_nr"), case.param_f64("smooth_dr"))
            .per_sample(case.param_bool("per_sample"))
            .per_class(case.param_bool("per_class"))
            .class_weights(class_weights(case))
            .jaccard(case.param_bool("jaccard"))
            .log_cosh(case.param_bool("log_cosh"));
        if let Some(bg) = case.params.get("include_background") {
            dice = dice.include_background(bg.as_bool().unwrap());
        }
        check(case, &dice);
    }
}

#[test]
fn tversky_matches_monai() {
    let cases = common::cases("tversky");
    assert_eq!(cases.len(), 7);
    for case in &cases {
        let mut tversky = TverskyLoss::new()
            .input(input_kind(case))
            .alpha(case.param_f64("alpha"))
            .beta(case.param_f64("beta"))
            .smooth_terms(case.param_f64("smooth_nr"), case.param_f64("smooth_dr"))
            .focal(case.param_f64("focal"))
            .per_sample(case.param_bool("per_sample"))
            .per_class(case.param_bool("per_class"));
        if let Some(bg) = case.params.get("include_background") {
            tversky = tversky.include_background(bg.as_bool().unwrap());
        }
        check(case, &tversky);
    }
}

#[test]
fn focal_matches_monai() {
    let cases = common::cases("focal");
    assert_eq!(cases.len(), 7);
    for case in &cases {
        let focal = FocalLoss::new()
            .input(input_kind(case))
            .gamma(case.param_f64("gamma"))
            .alpha(case.params["alpha"].as_f64())
            .reduction(reduction(case));
        check(case, &focal);
    }
}

#[test]
fn dice_ce_matches_monai() {
    let cases = common::cases("combo_dice_ce");
    assert_eq!(cases.len(), 2);
    for case in &cases {
        let dice = DiceLoss::new()
            .input(Input::SoftmaxLogits)
            .per_class(true)
            .smooth(1e-6);
        let combo = Combo::new(dice, CrossEntropy::new())
            .weights(case.param_f64("lambda_dice"), case.param_f64("lambda_ce"));
        check(case, &combo);
    }
}

/// The case's spacing (`null` or a list).
fn spacing(case: &Case) -> Option<Vec<f64>> {
    case.params["spacing"]
        .as_array()
        .map(|s| s.iter().map(|v| v.as_f64().unwrap()).collect())
}

#[test]
fn signed_distance_matches_scipy() {
    let cases = common::cases("signed_distance");
    assert_eq!(cases.len(), 4);
    for case in &cases {
        let mask = case.mask("mask");
        let spacing = spacing(case);
        let sdf = signed_distance(&mask, spacing.as_deref()).unwrap();
        case.assert_all_close("sdf", &sdf, &case.f64("sdf"));
    }
}

#[test]
fn boundary_matches_pytorch() {
    let cases = common::cases("boundary");
    assert_eq!(cases.len(), 2);
    for case in &cases {
        let boundary = BoundaryLoss::new().input(input_kind(case));
        check(case, &boundary);
        let input = case.f64("input");
        let phi = case.f64("phi");
        let expected = case.expected("loss");
        let value = boundary.loss_with_distance(&input, &phi).unwrap();
        case.assert_close("loss_with_distance", value, expected);
        let mut grad = ArrayD::zeros(input.raw_dim());
        let value = boundary
            .loss_grad_with_distance(&input, &phi, &mut grad)
            .unwrap();
        case.assert_close("loss_grad_with_distance", value, expected);
        case.assert_all_close("grad (with distance)", &grad, &case.f64("grad"));
    }
}

#[test]
fn hausdorff_dt_matches_monai() {
    let cases = common::cases("hausdorff_dt");
    assert_eq!(cases.len(), 2);
    for case in &cases {
        let hd = HausdorffDtLoss::new()
            .input(input_kind(case))
            .alpha(case.param_f64("alpha"));
        check(case, &hd);
    }
}
