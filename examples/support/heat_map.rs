//! A colour heat map shared by the examples.

use image::{Rgb, RgbImage};
use ndarray::Array2;

/// The map from its minimum (black) to its maximum (pale yellow) through an
/// inferno-like colour map.
pub fn heat_map(map: &Array2<f32>) -> RgbImage {
    let lo = map.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = map.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let span = (hi - lo).max(f32::MIN_POSITIVE);
    let (h, w) = map.dim();
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        inferno(f64::from((map[[y as usize, x as usize]] - lo) / span))
    })
}

/// Five control points of matplotlib's "inferno", linearly interpolated.
pub fn inferno(t: f64) -> Rgb<u8> {
    const STOPS: [[f64; 3]; 5] = [
        [0.0, 0.0, 4.0],
        [87.0, 16.0, 110.0],
        [188.0, 55.0, 84.0],
        [249.0, 142.0, 9.0],
        [252.0, 255.0, 164.0],
    ];
    let s = t.clamp(0.0, 1.0) * (STOPS.len() - 1) as f64;
    let i = (s.floor() as usize).min(STOPS.len() - 2);
    let f = s - i as f64;
    let mix = |c: usize| (STOPS[i][c] * (1.0 - f) + STOPS[i + 1][c] * f).round() as u8;
    Rgb([mix(0), mix(1), mix(2)])
}
