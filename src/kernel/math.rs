//! Stable scalar forms of the sigmoid and softplus.

use crate::Float;

/// The sigmoid of `x` and the quantities the losses need with it, from one
/// `exp` and one `log1p`, stable for any finite `x`:
/// `sigma = σ(x)`, `sigma_c = 1 - σ(x) = σ(-x)` (each computed directly, not
/// as a difference), `softplus_pos = ln(1 + e^x)`, `softplus_neg = ln(1 + e^-x)`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Logistic<A> {
    pub(crate) sigma: A,
    pub(crate) sigma_c: A,
    pub(crate) softplus_pos: A,
    pub(crate) softplus_neg: A,
}

impl<A: Float> Logistic<A> {
    #[inline(always)]
    pub(crate) fn of(x: A) -> Self {
        let zero = A::zero();
        let one = A::one();
        // e = e^-|x| is in (0, 1]: nothing overflows, and ln(1 + e) is
        // accurate through ln_1p.
        let e = (-x.abs()).exp();
        let l = e.ln_1p();
        let inv = one / (one + e);
        let big = inv; // σ(|x|)
        let small = e * inv; // σ(-|x|)
        let positive = x >= zero;
        Self {
            sigma: if positive { big } else { small },
            sigma_c: if positive { small } else { big },
            softplus_pos: x.max(zero) + l,
            softplus_neg: (-x).max(zero) + l,
        }
    }

    /// `σ(x)` alone.
    #[inline(always)]
    pub(crate) fn sigmoid(x: A) -> A {
        let one = A::one();
        let e = (-x.abs()).exp();
        let inv = one / (one + e);
        if x >= A::zero() { inv } else { e * inv }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logistic_matches_the_definitions() {
        for &x in &[-50.0_f64, -3.0, -1e-3, 0.0, 1e-3, 2.5, 40.0] {
            let l = Logistic::of(x);
            let s = 1.0 / (1.0 + (-x).exp());
            assert!((l.sigma - s).abs() <= 1e-15 * s.max(1e-300));
            assert!((l.sigma_c - (1.0 - s)).abs() <= 1e-15);
            assert!((l.softplus_pos - x.exp().ln_1p()).abs() <= 1e-14 * l.softplus_pos.max(1.0));
            assert!((l.softplus_neg - (-x).exp().ln_1p()).abs() <= 1e-14 * l.softplus_neg.max(1.0));
            assert_eq!(Logistic::sigmoid(x), l.sigma);
        }
    }

    #[test]
    fn logistic_is_finite_at_extremes() {
        for &x in &[-1e4_f32, 1e4, f32::MAX, -f32::MAX] {
            let l = Logistic::of(x);
            assert!(l.sigma.is_finite() && l.sigma_c.is_finite());
            assert!(l.softplus_pos.is_finite() && l.softplus_neg.is_finite());
        }
    }
}
