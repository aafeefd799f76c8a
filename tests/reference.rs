//! Every loss case of the reference vectors (PyTorch, MONAI, Keras), through
//! `loss`, `loss_grad` and `loss_and_grad`, at the case's tolerance.

mod common;

use common::{Case, check_loss as check, input_kind, reduction};
use ndarray::ArrayD;
use segloss::{BinaryCrossEntropy, DiceLoss};

#[test]
fn bce_matches_pytorch_and_keras() {
    let cases = common::cases("bce");
    assert_eq!(cases.len(), 20);
    for case in &cases {
        let bce = BinaryCrossEntropy::new()
            .input(input_kind(case))
            .pos_weight(case.param_f64("pos_weight"))
            .reduction(reduction(case));
        check(case, &bce);
    }
}

/// The binary Dice cases: those of the first stage (no class axis).
fn binary_dice_cases() -> Vec<Case> {
    common::cases("dice")
        .into_iter()
        .filter(|c| {
            c.params.get("per_class").is_none()
                && c.params.get("log_cosh").is_none()
                && c.params["input"] != "softmax_logits"
        })
        .collect()
}

#[test]
fn dice_matches_monai_and_keras() {
    let cases = binary_dice_cases();
    assert_eq!(cases.len(), 20);
    for case in &cases {
        let dice = DiceLoss::new()
            .input(input_kind(case))
            .gamma(case.param_f64("gamma"))
            .smooth_terms(case.param_f64("smooth_nr"), case.param_f64("smooth_dr"))
            .per_sample(case.param_bool("per_sample"));
        check(case, &dice);
    }
}

#[test]
fn shape_aware_matches_pytorch_with_unet_maps() {
    use segloss::ShapeAwareLoss;
    use segloss::distance::{ClassWeights, Connectivity, UNetWeights};

    let cases = common::cases("shape_aware");
    assert_eq!(cases.len(), 3);
    for case in &cases {
        let class_weights = match case.param_str("class_weights") {
            "uniform" => ClassWeights::Uniform,
            "balanced" => ClassWeights::Balanced,
            other => panic!("{}: unexpected class weights {other}", case.name),
        };
        let connectivity = match case.param_str("connectivity") {
            "full" => Connectivity::Full,
            "face" => Connectivity::Face,
            other => panic!("{}: unexpected connectivity {other}", case.name),
        };
        let loss = ShapeAwareLoss::new()
            .input(input_kind(case))
            .reduction(reduction(case))
            .weights(
                UNetWeights::new()
                    .w0(case.param_f64("w0"))
                    .sigma(case.param_f64("sigma"))
                    .class_weights(class_weights)
                    .connectivity(connectivity),
            );
        // As a `Loss`: the maps are made from the target, sample by sample.
        check(case, &loss);

        // With the reference's own maps.
        let input = case.f64("input");
        let target = case.f64("target");
        let weights = case.f64("weights");
        let expected = case.expected("loss");
        let value = loss.loss_with_weights(&input, &target, &weights).unwrap();
        case.assert_close("loss_with_weights", value, expected);
        let mut grad = ArrayD::zeros(input.raw_dim());
        let value = loss
            .loss_grad_with_weights(&input, &target, &weights, &mut grad)
            .unwrap();
        case.assert_close("loss_grad_with_weights", value, expected);
        case.assert_all_close("grad (given weights)", &grad, &case.f64("grad"));
    }
}
