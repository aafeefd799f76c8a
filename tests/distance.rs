//! `segloss::distance` against the reference vectors (SciPy, scikit-image)
//! and on edge cases.

use std::fs::File;
use std::path::{Path, PathBuf};

use ndarray::{Array, ArrayD, Axis, Dimension, ShapeBuilder, Slice, array};
use ndarray_npy::read_npy;
use segloss::Error;
use segloss::distance::{
    ClassWeights, Connectivity, UNetWeights, distance_to, label_components, squared_distance_to,
    two_nearest,
};
use serde_json::Value;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn reference_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/reference")
}

/// The cases of `kind` in `cases.json`.
fn cases(kind: &str) -> Result<Vec<Value>, Box<dyn std::error::Error>> {
    let file = File::open(reference_dir().join("cases.json"))?;
    let all: Value = serde_json::from_reader(file)?;
    let list = all["cases"]
        .as_array()
        .ok_or("cases.json has no case list")?;
    Ok(list.iter().filter(|c| c["kind"] == kind).cloned().collect())
}

fn npy<T: ndarray_npy::ReadableElement>(
    case: &Value,
    key: &str,
) -> Result<ArrayD<T>, Box<dyn std::error::Error>> {
    let name = case["arrays"][key]
        .as_str()
        .ok_or_else(|| format!("{}: no array {key}", case["name"]))?;
    Ok(read_npy(reference_dir().join(name))?)
}

fn mask_of(case: &Value) -> Result<ArrayD<bool>, Box<dyn std::error::Error>> {
    let m: ArrayD<u8> = npy(case, "mask")?;
    Ok(m.mapv(|v| v != 0))
}

fn spacing_of(case: &Value) -> Option<Vec<f64>> {
    case["params"]["spacing"]
        .as_array()
        .map(|s| s.iter().filter_map(Value::as_f64).collect())
}

fn connectivity_of(case: &Value) -> Result<Connectivity, String> {
    match case["params"]["connectivity"].as_str() {
        Some("face") => Ok(Connectivity::Face),
        Some("full") => Ok(Connectivity::Full),
        other => Err(format!("unknown connectivity {other:?}")),
    }
}

/// `|v - e| <= tol * max(1, |e|)` elementwise, or `|v - e| <= tol` when
/// `absolute`; an expected `+∞` must be `+∞`.
fn assert_close(what: &str, got: &ArrayD<f64>, expected: &ArrayD<f64>, tol: f64, absolute: bool) {
    assert_eq!(got.shape(), expected.shape(), "{what}: shape");
    for ((index, &e), &v) in expected.indexed_iter().zip(got.iter()) {
        if e.is_infinite() {
            assert_eq!(v, e, "{what}{:?}: expected {e}, got {v}", index.slice());
        } else {
            let bound = if absolute {
                tol
            } else {
                tol * e.abs().max(1.0)
            };
            assert!(
                (v - e).abs() <= bound,
                "{what}{:?}: expected {e}, got {v} (tolerance {bound})",
                index.slice()
            );
        }
    }
}

#[test]
fn reference_edt() -> TestResult {
    let cases = cases("edt")?;
    assert!(!cases.is_empty());
    for case in &cases {
        let name = case["name"].as_str().unwrap_or("?");
        let rtol = case["rtol"].as_f64().ok_or("no rtol")?;
        let mask = mask_of(case)?;
        let expected: ArrayD<f64> = npy(case, "distance")?;
        let spacing = spacing_of(case);
        let got = distance_to(&mask, spacing.as_deref())?;
        assert_close(name, &got, &expected, rtol, false);
        let squared = squared_distance_to(&mask, spacing.as_deref())?;
        assert_close(name, &squared.mapv(f64::sqrt), &expected, rtol, false);
    }
    Ok(())
}

#[test]
fn reference_label() -> TestResult {
    let cases = cases("label")?;
    assert!(!cases.is_empty());
    for case in &cases {
        let name = case["name"].as_str().unwrap_or("?");
        let mask = mask_of(case)?;
        let expected: ArrayD<u32> = npy(case, "labels")?;
        let count = case["expected"]["count"].as_f64().ok_or("no count")?;
        let (labels, n) = label_components(&mask, connectivity_of(case)?);
        assert_eq!(n as f64, count, "{name}: count");
        assert_eq!(labels, expected, "{name}: labels");
        // The same from a non-standard layout (reversed axes view).
        let reversed = mask.t();
        let (labels_t, n_t) =
            label_components(&reversed.as_standard_layout(), connectivity_of(case)?);
        let (labels_v, n_v) = label_components(&reversed, connectivity_of(case)?);
        assert_eq!((labels_t, n_t), (labels_v, n_v), "{name}: layout");
    }
    Ok(())
}

#[test]
fn reference_two_nearest() -> TestResult {
    let cases = cases("two_nearest")?;
    assert!(!cases.is_empty());
    for case in &cases {
        let name = case["name"].as_str().unwrap_or("?");
        let rtol = case["rtol"].as_f64().ok_or("no rtol")?;
        let labels: ArrayD<u32> = npy(case, "labels")?;
        let e1: ArrayD<f64> = npy(case, "d1")?;
        let e2: ArrayD<f64> = npy(case, "d2")?;
        let spacing = spacing_of(case);
        let (d1, d2) = two_nearest(&labels, spacing.as_deref(), f64::INFINITY)?;
        assert_close(&format!("{name} d1"), &d1, &e1, rtol, false);
        assert_close(&format!("{name} d2"), &d2, &e2, rtol, false);
    }
    Ok(())
}

#[test]
fn reference_weight_map() -> TestResult {
    let cases = cases("weight_map")?;
    assert!(!cases.is_empty());
    for case in &cases {
        let name = case["name"].as_str().unwrap_or("?");
        let p = &case["params"];
        let w0 = p["w0"].as_f64().ok_or("no w0")?;
        let sigma = p["sigma"].as_f64().ok_or("no sigma")?;
        let class_weights = match &p["class_weights"] {
            Value::String(s) if s == "uniform" => ClassWeights::Uniform,
            Value::String(s) if s == "balanced" => ClassWeights::Balanced,
            Value::Array(v) => ClassWeights::Fixed {
                background: v[0].as_f64().ok_or("bad class weight")?,
                foreground: v[1].as_f64().ok_or("bad class weight")?,
            },
            other => return Err(format!("{name}: class_weights {other}").into()),
        };
        let everywhere = p["everywhere"].as_bool().ok_or("no everywhere")?;
        let mut weights = UNetWeights::new()
            .w0(w0)
            .sigma(sigma)
            .class_weights(class_weights)
            .border_everywhere(everywhere)
            .connectivity(connectivity_of(case)?);
        if let Some(s) = spacing_of(case) {
            weights = weights.spacing(s);
        }
        let mask = mask_of(case)?;
        let labels: ArrayD<u32> = npy(case, "labels")?;
        let expected: ArrayD<f64> = npy(case, "weights")?;
        let instances = case["expected"]["instances"]
            .as_f64()
            .ok_or("no instances")?;
        let max_label = labels.iter().copied().max().unwrap_or(0);
        assert_eq!(max_label as f64, instances, "{name}: instances");
        let tol = 1e-6 * w0;

        let from_labels = weights.for_labels::<f64, _>(&labels)?;
        assert_close(
            &format!("{name} for_labels"),
            &from_labels,
            &expected,
            tol,
            true,
        );
        let from_mask = weights.for_mask::<f64, _>(&mask)?;
        assert_close(
            &format!("{name} for_mask"),
            &from_mask,
            &expected,
            tol,
            true,
        );
        let (own_labels, n) = label_components(&mask, connectivity_of(case)?);
        assert_eq!(n as f64, instances, "{name}: components of the mask");
        assert_eq!(own_labels, labels, "{name}: labels of the mask");
        let single = weights.for_labels::<f32, _>(&labels)?;
        assert_close(
            &format!("{name} f32"),
            &single.mapv(f64::from),
            &expected,
            tol + 1e-6 * expected.iter().fold(0.0_f64, |m, &v| m.max(v)),
            true,
        );
    }
    Ok(())
}

// ---------------------------------------------------------------- edge cases

#[test]
fn empty_and_full_masks() -> TestResult {
    let empty = Array::from_elem((3, 4), false);
    assert!(
        distance_to(&empty, None)?
            .iter()
            .all(|&d| d == f64::INFINITY)
    );
    let (d1, d2) = two_nearest(&Array::<u32, _>::zeros((3, 4)), None, f64::INFINITY)?;
    assert!(d1.iter().chain(d2.iter()).all(|&d| d == f64::INFINITY));
    assert_eq!(label_components(&empty, Connectivity::Full).1, 0);
    let w = UNetWeights::new().for_mask::<f64, _>(&empty)?;
    assert!(w.iter().all(|&v| v == 1.0));

    let full = Array::from_elem((3, 4), true);
    assert!(distance_to(&full, None)?.iter().all(|&d| d == 0.0));
    let (labels, n) = label_components(&full, Connectivity::Face);
    assert_eq!(n, 1);
    assert!(labels.iter().all(|&l| l == 1));
    let w = UNetWeights::new()
        .class_weights(ClassWeights::Balanced)
        .border_everywhere(true)
        .for_mask::<f32, _>(&full)?;
    assert!(w.iter().all(|&v| v == 0.5));
    Ok(())
}

#[test]
fn zero_length_and_zero_dimensional_arrays() -> TestResult {
    let empty = Array::from_elem((0, 5), true);
    assert_eq!(distance_to(&empty, None)?.shape(), &[0, 5]);
    let (labels, n) = label_components(&empty, Connectivity::Full);
    assert_eq!((labels.shape(), n), (&[0usize, 5][..], 0));
    let (d1, d2) = two_nearest(&Array::<u32, _>::zeros((4, 0, 2)), None, 3.0)?;
    assert_eq!((d1.len(), d2.len()), (0, 0));
    assert_eq!(
        UNetWeights::new().for_mask::<f64, _>(&empty)?.shape(),
        &[0, 5]
    );

    let scalar = ndarray::arr0(true);
    assert_eq!(distance_to(&scalar, None)?, ndarray::arr0(0.0));
    assert_eq!(
        distance_to(&ndarray::arr0(false), Some(&[]))?,
        ndarray::arr0(f64::INFINITY)
    );
    assert_eq!(label_components(&scalar, Connectivity::Full).1, 1);
    let (d1, d2) = two_nearest(&ndarray::arr0(7_u32), None, f64::INFINITY)?;
    assert_eq!((d1[()], d2[()]), (0.0, f64::INFINITY));
    let w = UNetWeights::new().for_labels::<f64, _>(&ndarray::arr0(0_u32))?;
    assert_eq!(w[()], 1.0);
    Ok(())
}

#[test]
fn one_by_n_images() -> TestResult {
    let mask = array![[false, true, false, false, true, true, false]];
    let d = distance_to(&mask, Some(&[5.0, 0.5]))?;
    assert_eq!(d, array![[0.5, 0.0, 0.5, 0.5, 0.0, 0.0, 0.5]]);
    let (labels, n) = label_components(&mask, Connectivity::Face);
    assert_eq!(n, 2);
    assert_eq!(labels, array![[0_u32, 1, 0, 0, 2, 2, 0]]);
    let (d1, d2) = two_nearest(&labels, None, f64::INFINITY)?;
    assert_eq!(d1, array![[1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0]]);
    assert_eq!(d2, array![[4.0, 3.0, 2.0, 2.0, 3.0, 4.0, 5.0]]);
    // A column: the same along axis 0.
    let column = mask.t().to_owned();
    assert_eq!(distance_to(&column, None)?, d_unit(&mask)?.t());
    Ok(())
}

fn d_unit(mask: &Array<bool, ndarray::Ix2>) -> Result<Array<f64, ndarray::Ix2>, Error> {
    distance_to(mask, None)
}

#[test]
fn one_instance_touching_the_border() -> TestResult {
    let labels = array![[3_u32, 3, 0, 0], [3, 0, 0, 0]];
    let (d1, d2) = two_nearest(&labels, None, f64::INFINITY)?;
    assert_eq!(d1[[1, 3]], 5_f64.sqrt());
    assert!(d2.iter().all(|&d| d == f64::INFINITY));
    // One instance: no border term, w_c stays.
    let w = UNetWeights::new()
        .class_weights(ClassWeights::Fixed {
            background: 0.25,
            foreground: 4.0,
        })
        .for_labels::<f64, _>(&labels)?;
    assert_eq!(w, labels.mapv(|l| if l == 0 { 0.25 } else { 4.0 }));
    Ok(())
}

#[test]
fn instances_touching_each_other_and_the_border() -> TestResult {
    // Two touching instances on the left edge: d2 inside each is the
    // distance to the other, 1 across the shared boundary.
    let labels = array![[1_u32, 2, 0], [1, 2, 0], [0, 0, 0]];
    let (d1, d2) = two_nearest(&labels, None, f64::INFINITY)?;
    assert_eq!(d1.row(0).to_vec(), vec![0.0, 0.0, 1.0]);
    assert_eq!(d2.row(0).to_vec(), vec![1.0, 1.0, 2.0]);
    assert_eq!(d2[[2, 0]], 2_f64.sqrt());
    let w = UNetWeights::new()
        .border_everywhere(true)
        .sigma(1.0)
        .for_labels::<f64, _>(&labels)?;
    assert!((w[[0, 0]] - (1.0 + 10.0 * (-0.5_f64).exp())).abs() < 1e-12);
    Ok(())
}

#[test]
fn three_d_anisotropic_volume() -> TestResult {
    let mut mask = Array::from_elem((4, 5, 6), false);
    mask[[1, 2, 3]] = true;
    mask[[3, 0, 0]] = true;
    let spacing = [2.5, 1.0, 0.4];
    let d = distance_to(&mask, Some(&spacing))?;
    for ((i, j, k), &v) in d.indexed_iter() {
        let to = |p: [usize; 3]| {
            let a = 2.5 * (i as f64 - p[0] as f64);
            let b = j as f64 - p[1] as f64;
            let c = 0.4 * (k as f64 - p[2] as f64);
            (a * a + b * b + c * c).sqrt()
        };
        let e = to([1, 2, 3]).min(to([3, 0, 0]));
        assert!(
            (v - e).abs() <= 1e-12 * e.max(1.0),
            "{:?}: {v} vs {e}",
            (i, j, k)
        );
    }
    let (labels, n) = label_components(&mask, Connectivity::Full);
    assert_eq!(n, 2);
    assert_eq!((labels[[1, 2, 3]], labels[[3, 0, 0]]), (1, 2));
    let (d1, d2) = two_nearest(&labels, Some(&spacing), f64::INFINITY)?;
    let between = (2.0_f64 * 2.5).hypot(2.0).hypot(3.0 * 0.4);
    assert_eq!(d1[[1, 2, 3]], 0.0);
    assert!((d2[[1, 2, 3]] - between).abs() < 1e-12);
    assert!((d2[[3, 0, 0]] - between).abs() < 1e-12);
    // Axis order does not matter: permuting axes and spacing permutes d.
    let permuted = mask.view().permuted_axes([2, 0, 1]);
    let dp = distance_to(&permuted, Some(&[0.4, 2.5, 1.0]))?;
    for (a, b) in dp.iter().zip(d.view().permuted_axes([2, 0, 1]).iter()) {
        assert!((a - b).abs() <= 1e-12 * a.max(1.0));
    }
    Ok(())
}

#[test]
fn connectivity_counts_in_3d() {
    // Two voxels touching by a corner only.
    let mut mask = Array::from_elem((2, 2, 2), false);
    mask[[0, 0, 0]] = true;
    mask[[1, 1, 1]] = true;
    assert_eq!(label_components(&mask, Connectivity::Face).1, 2);
    assert_eq!(label_components(&mask, Connectivity::Full).1, 1);
    // Along rows of length 1 nothing wraps around.
    let mask = array![[true, false], [false, true]];
    assert_eq!(label_components(&mask, Connectivity::Face).1, 2);
    let mask = array![[false, true], [true, false]];
    assert_eq!(label_components(&mask, Connectivity::Face).1, 2);
    assert_eq!(label_components(&mask, Connectivity::Full).1, 1);
    // Row ends do not connect to the next row's start.
    let mask = array![[false, false, true], [true, false, false]];
    assert_eq!(label_components(&mask, Connectivity::Full).1, 2);
}

#[test]
fn works_on_views_and_dynamic_dimensions() -> TestResult {
    let mask = array![[true, false, false], [false, false, false]];
    let dynamic = mask.clone().into_dyn();
    let a = distance_to(&mask, None)?;
    let b = distance_to(&dynamic, None)?;
    assert_eq!(a.into_dyn(), b);
    let strided = mask.slice_axis(Axis(1), Slice::new(0, None, 2));
    assert_eq!(
        distance_to(&strided, None)?,
        array![[0.0, 1.0], [1.0, 2_f64.sqrt()]]
    );
    let arc = mask.to_shared();
    assert_eq!(label_components(&arc, Connectivity::Full).1, 1);
    let f_order = Array::from_shape_vec((2, 3).f(), vec![true, false, false, false, false, true])?;
    let expected = distance_to(&f_order.as_standard_layout(), None)?;
    assert_eq!(distance_to(&f_order, None)?, expected);
    Ok(())
}

// ------------------------------------------------------------------ bad input

#[test]
fn bad_spacing() {
    let mask = array![[true, false]];
    let e = distance_to(&mask, Some(&[1.0])).unwrap_err();
    assert!(matches!(
        e,
        Error::InvalidLength {
            name: "spacing",
            expected: 2,
            found: 1
        }
    ));
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let e = squared_distance_to(&mask, Some(&[1.0, bad])).unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidParameter {
                    name: "spacing",
                    ..
                }
            ),
            "{e}"
        );
        let e = two_nearest(&mask.mapv(u32::from), Some(&[bad, 1.0]), 1.0).unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidParameter {
                    name: "spacing",
                    ..
                }
            ),
            "{e}"
        );
        let e = UNetWeights::new()
            .spacing(vec![bad, 1.0])
            .for_mask::<f64, _>(&mask)
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidParameter {
                    name: "spacing",
                    ..
                }
            ),
            "{e}"
        );
    }
    let e = UNetWeights::new()
        .spacing(vec![1.0, 1.0, 1.0])
        .for_labels::<f64, _>(&mask.mapv(u32::from))
        .unwrap_err();
    assert!(matches!(
        e,
        Error::InvalidLength {
            name: "spacing",
            expected: 2,
            found: 3
        }
    ));
}

#[test]
fn bad_max_distance() -> TestResult {
    let labels = array![1_u32, 0, 2];
    for bad in [f64::NAN, -1.0, f64::NEG_INFINITY] {
        let e = two_nearest(&labels, None, bad).unwrap_err();
        assert!(matches!(
            e,
            Error::InvalidParameter {
                name: "max_distance",
                ..
            }
        ));
    }
    let (d1, d2) = two_nearest(&labels, None, 0.0)?;
    assert_eq!(d1, array![0.0, 1.0, 0.0]);
    assert!(d2.iter().all(|&d| d == f64::INFINITY));
    Ok(())
}

#[test]
fn bad_weight_parameters() {
    let labels = array![[1_u32, 0, 2]];
    let check = |w: UNetWeights, name: &str| {
        let e = w.for_labels::<f64, _>(&labels).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidParameter { name: n, .. } if *n == name),
            "{name}: {e}"
        );
    };
    check(UNetWeights::new().sigma(0.0), "sigma");
    check(UNetWeights::new().sigma(-1.0), "sigma");
    check(UNetWeights::new().sigma(f64::NAN), "sigma");
    check(UNetWeights::new().sigma(f64::INFINITY), "sigma");
    check(UNetWeights::new().w0(-0.1), "w0");
    check(UNetWeights::new().w0(f64::NAN), "w0");
    check(UNetWeights::new().w0(f64::INFINITY), "w0");
    for (bg, fg) in [(f64::NAN, 1.0), (1.0, f64::INFINITY)] {
        let e = UNetWeights::new()
            .class_weights(ClassWeights::Fixed {
                background: bg,
                foreground: fg,
            })
            .for_mask::<f64, _>(&labels.mapv(|l| l > 0))
            .unwrap_err();
        assert!(matches!(e, Error::NonFinite { .. }), "{e}");
    }
    let e = UNetWeights::new()
        .class_weights(ClassWeights::Fixed {
            background: 1.0,
            foreground: -2.0,
        })
        .for_labels::<f32, _>(&labels)
        .unwrap_err();
    assert!(
        matches!(e, Error::OutOfRange { value, .. } if value == -2.0),
        "{e}"
    );
    // A w0 that overflows f32 but not f64.
    let e = UNetWeights::new()
        .w0(1e300)
        .for_labels::<f32, _>(&labels)
        .unwrap_err();
    assert!(matches!(e, Error::NonFiniteResult { .. }), "{e}");
    assert!(
        UNetWeights::new()
            .w0(1e300)
            .for_labels::<f64, _>(&labels)
            .is_ok()
    );
    // w0 = 0 is allowed: the map is w_c.
    let w = UNetWeights::new().w0(0.0).for_labels::<f64, _>(&labels);
    assert_eq!(w.ok(), Some(array![[1.0, 1.0, 1.0]]));
}

#[test]
fn balanced_weights_split_the_total() -> TestResult {
    let labels = array![[1_u32, 0, 0, 0, 0, 0, 0, 2]];
    let w = UNetWeights::new()
        .w0(0.0)
        .class_weights(ClassWeights::Balanced)
        .for_labels::<f64, _>(&labels)?;
    assert_eq!(
        w,
        array![[
            2.0,
            2.0 / 3.0,
            2.0 / 3.0,
            2.0 / 3.0,
            2.0 / 3.0,
            2.0 / 3.0,
            2.0 / 3.0,
            2.0
        ]]
    );
    Ok(())
}

#[test]
fn defaults_are_documented_values() {
    assert_eq!(UNetWeights::new(), UNetWeights::default());
    assert_eq!(
        UNetWeights::new(),
        UNetWeights::new()
            .w0(10.0)
            .sigma(5.0)
            .class_weights(ClassWeights::Uniform)
            .border_everywhere(false)
            .connectivity(Connectivity::Full)
    );
    assert_eq!(ClassWeights::default(), ClassWeights::Uniform);
}
