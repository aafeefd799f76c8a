//! Property tests of `segloss::distance` against naive references: brute-force
//! distances, a flood fill, and the weight map straight from its definition.

use std::collections::VecDeque;

use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;
use segloss::distance::{
    ClassWeights, Connectivity, UNetWeights, label_components, squared_distance_to, two_nearest,
};

/// A shape of 1 to 4 axes, small enough for quadratic references (a 3-D
/// last axis longer than the gather block of strided passes included).
fn shape() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        prop::collection::vec(0usize..=40, 1),
        prop::collection::vec(0usize..=14, 2),
        (1usize..=4, 1usize..=4, 0usize..=20).prop_map(|(a, b, c)| vec![a, b, c]),
        prop::collection::vec(1usize..=4, 4),
    ]
}

fn spacing(ndim: usize) -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(0.25f64..4.0, ndim)
}

/// A mask of a random shape and density.
fn mask() -> impl Strategy<Value = ArrayD<bool>> {
    (shape(), 0.0f64..1.0).prop_flat_map(|(shape, density)| {
        let n = shape.iter().product::<usize>();
        prop::collection::vec(prop::bool::weighted(density), n).prop_map(move |data| {
            ArrayD::from_shape_vec(IxDyn(&shape), data).expect("length matches the shape")
        })
    })
}

/// Labels with up to `max_label` distinct instances (not necessarily
/// connected), mostly background.
fn labels(max_label: u32) -> impl Strategy<Value = ArrayD<u32>> {
    (shape(), 0.0f64..0.5).prop_flat_map(move |(shape, density)| {
        let n = shape.iter().product::<usize>();
        prop::collection::vec(
            (prop::bool::weighted(density), 1..=max_label)
                .prop_map(|(on, l)| if on { l } else { 0 }),
            n,
        )
        .prop_map(move |data| {
            ArrayD::from_shape_vec(IxDyn(&shape), data).expect("length matches the shape")
        })
    })
}

fn squared(a: &[usize], b: &[usize], spacing: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .zip(spacing)
        .map(|((&x, &y), &h)| {
            let d = h * (x as f64 - y as f64);
            d * d
        })
        .sum()
}

fn indices<T>(a: &ArrayD<T>) -> Vec<Vec<usize>> {
    a.indexed_iter().map(|(i, _)| i.slice().to_vec()).collect()
}

use ndarray::Dimension;

/// Brute-force squared distance to the nearest true element.
fn brute_edt(mask: &ArrayD<bool>, spacing: &[f64]) -> Vec<f64> {
    let idx = indices(mask);
    let sites: Vec<&Vec<usize>> = idx
        .iter()
        .zip(mask.iter())
        .filter(|(_, m)| **m)
        .map(|(i, _)| i)
        .collect();
    idx.iter()
        .map(|x| {
            sites
                .iter()
                .map(|y| squared(x, y, spacing))
                .fold(f64::INFINITY, f64::min)
        })
        .collect()
}

/// Brute-force (d1, d2), squared, from one distance per instance.
fn brute_two(labels: &ArrayD<u32>, spacing: &[f64]) -> Vec<(f64, f64)> {
    let idx = indices(labels);
    let max = labels.iter().copied().max().unwrap_or(0) as usize;
    idx.iter()
        .map(|x| {
            let mut per = vec![f64::INFINITY; max + 1];
            for (y, &l) in idx.iter().zip(labels.iter()) {
                if l > 0 {
                    let d = squared(x, y, spacing);
                    if d < per[l as usize] {
                        per[l as usize] = d;
                    }
                }
            }
            let mut best = per[1..].to_vec();
            best.sort_by(f64::total_cmp);
            (
                best.first().copied().unwrap_or(f64::INFINITY),
                best.get(1).copied().unwrap_or(f64::INFINITY),
            )
        })
        .collect()
}

fn close(v: f64, e: f64, rtol: f64) -> bool {
    if e.is_infinite() {
        v == e
    } else {
        (v - e).abs() <= rtol * e.abs().max(1.0)
    }
}

/// Flood fill labelling, numbering components in row-major order of their
/// first element.
fn flood_label(mask: &ArrayD<bool>, full: bool) -> (ArrayD<u32>, usize) {
    let shape = mask.shape().to_vec();
    let mut out = ArrayD::<u32>::zeros(IxDyn(&shape));
    let idx = indices(mask);
    let mut count = 0u32;
    for start in &idx {
        if !mask[start.as_slice()] || out[start.as_slice()] != 0 {
            continue;
        }
        count += 1;
        out[start.as_slice()] = count;
        let mut queue = VecDeque::from([start.clone()]);
        while let Some(p) = queue.pop_front() {
            for q in &idx {
                let steps: Vec<usize> = p.iter().zip(q).map(|(&a, &b)| a.abs_diff(b)).collect();
                let neighbour = if full {
                    steps.iter().all(|&s| s <= 1) && steps.contains(&1)
                } else {
                    steps.iter().sum::<usize>() == 1
                };
                if neighbour && mask[q.as_slice()] && out[q.as_slice()] == 0 {
                    out[q.as_slice()] = count;
                    queue.push_back(q.clone());
                }
            }
        }
    }
    (out, count as usize)
}

fn class_weights() -> impl Strategy<Value = ClassWeights> {
    prop_oneof![
        Just(ClassWeights::Uniform),
        Just(ClassWeights::Balanced),
        (0.0f64..5.0, 0.0f64..5.0).prop_map(|(background, foreground)| ClassWeights::Fixed {
            background,
            foreground
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn edt_matches_brute_force((mask, spacing) in mask().prop_flat_map(|m| {
        let d = m.ndim();
        (Just(m), spacing(d))
    })) {
        let got = squared_distance_to(&mask, Some(&spacing)).expect("valid spacing");
        let expected = brute_edt(&mask, &spacing);
        for (&v, &e) in got.iter().zip(&expected) {
            prop_assert!(close(v, e, 1e-12), "{v} vs {e}");
        }
        // Unit spacing: exact integers.
        let unit = squared_distance_to(&mask, None).expect("no spacing");
        let ones = vec![1.0; mask.ndim()];
        for (&v, &e) in unit.iter().zip(&brute_edt(&mask, &ones)) {
            prop_assert_eq!(v, e);
        }
    }

    #[test]
    fn labelling_matches_flood_fill(mask in mask(), full in any::<bool>()) {
        let connectivity = if full { Connectivity::Full } else { Connectivity::Face };
        let (labels, n) = label_components(&mask, connectivity);
        let (expected, m) = flood_label(&mask, full);
        prop_assert_eq!(n, m);
        prop_assert_eq!(labels, expected);
    }

    #[test]
    fn two_nearest_matches_brute_force(
        (labels, spacing) in labels(5).prop_flat_map(|l| {
            let d = l.ndim();
            (Just(l), spacing(d))
        }),
        max_distance in prop_oneof![Just(f64::INFINITY), 0.0f64..6.0],
    ) {
        let (d1, d2) = two_nearest(&labels, Some(&spacing), max_distance).expect("valid input");
        let expected = brute_two(&labels, &spacing);
        for ((&a, &b), &(e1, e2)) in d1.iter().zip(d2.iter()).zip(&expected) {
            let (e1, e2) = (e1.sqrt(), e2.sqrt());
            prop_assert!(close(a, e1, 1e-12), "d1 {a} vs {e1}");
            if (e2 - max_distance).abs() <= 1e-9 * max_distance.max(1.0) {
                // At the cut-off itself either answer is right.
                prop_assert!(b == f64::INFINITY || close(b, e2, 1e-12), "d2 {b} vs {e2}");
            } else if e2 <= max_distance {
                prop_assert!(close(b, e2, 1e-12), "d2 {b} vs {e2} (max {max_distance})");
            } else {
                prop_assert_eq!(b, f64::INFINITY, "d2 beyond {} should be cut", max_distance);
            }
        }
    }

    #[test]
    fn weight_map_matches_its_definition(
        (labels, spacing) in labels(6).prop_flat_map(|l| {
            let d = l.ndim();
            (Just(l), spacing(d))
        }),
        w0 in 0.0f64..20.0,
        sigma in 0.2f64..3.0,
        class_weights in class_weights(),
        everywhere in any::<bool>(),
    ) {
        let weights = UNetWeights::new()
            .w0(w0)
            .sigma(sigma)
            .class_weights(class_weights)
            .border_everywhere(everywhere)
            .spacing(spacing.clone());
        let got = weights.for_labels::<f64, _>(&labels).expect("valid parameters");
        let n = labels.len() as f64;
        let n_fg = labels.iter().filter(|&&l| l > 0).count() as f64;
        let instances = {
            let mut seen: Vec<u32> = labels.iter().copied().filter(|&l| l > 0).collect();
            seen.sort_unstable();
            seen.dedup();
            seen.len()
        };
        let expected = brute_two(&labels, &spacing);
        for ((&w, &l), &(e1, e2)) in got.iter().zip(labels.iter()).zip(&expected) {
            let wc = match class_weights {
                ClassWeights::Uniform => 1.0,
                ClassWeights::Balanced => n / (2.0 * if l == 0 { n - n_fg } else { n_fg }),
                ClassWeights::Fixed { background, foreground } => {
                    if l == 0 { background } else { foreground }
                }
            };
            let s = e1.sqrt() + e2.sqrt();
            let border = if instances >= 2 && (everywhere || l == 0) {
                w0 * (-s * s / (2.0 * sigma * sigma)).exp()
            } else {
                0.0
            };
            let e = wc + border;
            prop_assert!((w - e).abs() <= 1e-6 * w0 + 1e-12 * e.max(1.0), "{w} vs {e}");
        }
    }

    #[test]
    fn weight_map_of_a_mask_is_that_of_its_components(
        mask in mask(),
        full in any::<bool>(),
        sigma in 0.2f64..3.0,
    ) {
        let connectivity = if full { Connectivity::Full } else { Connectivity::Face };
        let weights = UNetWeights::new().sigma(sigma).connectivity(connectivity);
        let from_mask = weights.for_mask::<f32, _>(&mask).expect("valid parameters");
        let (labels, _) = label_components(&mask, connectivity);
        let from_labels = weights.for_labels::<f32, _>(&labels).expect("valid parameters");
        prop_assert_eq!(from_mask, from_labels);
    }
}
