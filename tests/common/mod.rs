//! Loading the reference vectors of `tests/data/reference/` (a verbatim copy
//! of `../shared/reference/`; see its README for the format).

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn, ShapeBuilder};
use ndarray_npy::read_npy;
use segloss::{Input, Loss, Reduction};
use serde_json::Value;

/// One entry of `cases.json`.
pub struct Case {
    pub name: String,
    pub kind: String,
    pub params: Value,
    pub arrays: Value,
    pub expected: Value,
    pub rtol: f64,
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/reference")
}

/// Every case of `kind`, in file order.
pub fn cases(kind: &str) -> Vec<Case> {
    let text = std::fs::read_to_string(dir().join("cases.json")).expect("cases.json is readable");
    let json: Value = serde_json::from_str(&text).expect("cases.json is JSON");
    json["cases"]
        .as_array()
        .expect("a `cases` list")
        .iter()
        .filter(|c| c["kind"] == kind)
        .map(|c| Case {
            name: c["name"].as_str().unwrap().to_owned(),
            kind: kind.to_owned(),
            params: c["params"].clone(),
            arrays: c["arrays"].clone(),
            expected: c["expected"].clone(),
            rtol: c["rtol"].as_f64().unwrap(),
        })
        .collect()
}

impl Case {
    pub fn has(&self, array: &str) -> bool {
        self.arrays.get(array).is_some()
    }

    pub fn f64(&self, array: &str) -> ArrayD<f64> {
        read_npy(dir().join(self.arrays[array].as_str().unwrap()))
            .unwrap_or_else(|e| panic!("{}: reading {array}: {e}", self.name))
    }

    pub fn expected(&self, key: &str) -> f64 {
        self.expected[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{}: no expected {key}", self.name))
    }

    pub fn param_f64(&self, key: &str) -> f64 {
        self.params[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{}: no numeric param {key}", self.name))
    }

    pub fn param_str(&self, key: &str) -> &str {
        self.params[key]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no string param {key}", self.name))
    }

    pub fn param_bool(&self, key: &str) -> bool {
        self.params[key].as_bool().unwrap_or(false)
    }

    /// `|v - e| <= rtol·max(1, |e|)`.
    pub fn assert_close(&self, what: &str, value: f64, expected: f64) {
        let tol = self.rtol * expected.abs().max(1.0);
        assert!(
            (value - expected).abs() <= tol,
            "{}: {what} = {value:e}, expected {expected:e} (|diff| {:e} > {tol:e})",
            self.name,
            (value - expected).abs()
        );
    }

    /// Elementwise [`Case::assert_close`]; an expected ±∞ must match exactly.
    pub fn assert_all_close(&self, what: &str, values: &ArrayD<f64>, expected: &ArrayD<f64>) {
        assert_eq!(
            values.shape(),
            expected.shape(),
            "{}: {what} shape",
            self.name
        );
        for ((index, &v), &e) in values.indexed_iter().zip(expected.iter()) {
            if e.is_infinite() {
                assert_eq!(v, e, "{}: {what}{index:?}", self.name);
            } else {
                let tol = self.rtol * e.abs().max(1.0);
                assert!(
                    (v - e).abs() <= tol,
                    "{}: {what}{index:?} = {v:e}, expected {e:e}",
                    self.name
                );
            }
        }
    }
}

/// Readers for the integer arrays of the second-stage cases.
impl Case {
    /// A `uint32` array (class labels).
    pub fn u32(&self, array: &str) -> ArrayD<u32> {
        read_npy(dir().join(self.arrays[array].as_str().unwrap()))
            .unwrap_or_else(|e| panic!("{}: reading {array}: {e}", self.name))
    }

    /// A `uint8` 0/1 array, as a boolean mask.
    pub fn mask(&self, array: &str) -> ArrayD<bool> {
        let m: ArrayD<u8> = read_npy(dir().join(self.arrays[array].as_str().unwrap()))
            .unwrap_or_else(|e| panic!("{}: reading {array}: {e}", self.name));
        m.mapv(|v| v != 0)
    }
}

/// The case's `input` parameter as an [`Input`].
pub fn input_kind(case: &Case) -> Input {
    match case.param_str("input") {
        "logits" => Input::Logits,
        "probabilities" => Input::Probabilities,
        "softmax_logits" => Input::SoftmaxLogits,
        other => panic!("{}: unexpected input kind {other}", case.name),
    }
}

/// The case's `reduction` parameter as a [`Reduction`].
pub fn reduction(case: &Case) -> Reduction {
    match case.param_str("reduction") {
        "mean" => Reduction::Mean,
        "sum" => Reduction::Sum,
        other => panic!("{}: unexpected reduction {other}", case.name),
    }
}

/// Runs the three entry points of `loss` on the case's arrays and compares
/// the loss and (where the case has one) the gradient, then the same on a
/// Fortran-order copy of the input, which takes the strided paths.
pub fn check_loss<L: Loss<f64>>(case: &Case, loss: &L) {
    let input = case.f64("input");
    let target = case.f64("target");
    let expected = case.expected("loss");

    let value = loss.loss(&input, &target).unwrap();
    case.assert_close("loss", value, expected);

    let mut grad = ArrayD::from_elem(input.raw_dim(), f64::NAN);
    let value = loss.loss_grad(&input, &target, &mut grad).unwrap();
    case.assert_close("loss_grad", value, expected);

    let (value, allocated) = loss.loss_and_grad(&input, &target).unwrap();
    case.assert_close("loss_and_grad", value, expected);
    assert_eq!(grad, allocated, "{}: the gradient paths differ", case.name);

    if case.has("grad") {
        case.assert_all_close("grad", &grad, &case.f64("grad"));
    }

    let mut fortran = ArrayD::zeros(IxDyn(input.shape()).f());
    fortran.assign(&input);
    let mut grad_f = ArrayD::zeros(IxDyn(input.shape()).f());
    let value = loss.loss_grad(&fortran, &target, &mut grad_f).unwrap();
    case.assert_close("loss_grad (Fortran layout)", value, expected);
    case.assert_all_close("grad (Fortran layout)", &grad_f, &grad);
}
