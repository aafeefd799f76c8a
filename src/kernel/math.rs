//! Vectorisable elementary functions and the stable logistic forms built on
//! them.
//!
//! The standard library's `exp`, `ln` and `ln_1p` are calls into libm, one
//! element at a time: a loop that calls them cannot be vectorised. The
//! functions here are straight-line code (polynomials, bit manipulation of
//! the exponent field, and selects instead of branches), so that LLVM
//! vectorises the kernels' chunk loops at the baseline target (SSE2 on
//! x86-64) without any `target-cpu` flag. Each is accurate to a few ulp over
//! its whole domain, subnormal results included (see the tests), and
//! handles the special values (±∞, NaN, 0) as the standard library does.
//!
//! * `exp`: Cody–Waite reduction `x = k·ln 2 + r`, `|r| ≤ ln 2 / 2`, a
//!   polynomial for `e^r` (degree 6 in `f32`, minimax, 0.05 ulp; degree 13
//!   in `f64`, Taylor, whose truncation error is below 0.05 ulp there)
//!   evaluated by Estrin's scheme (a short dependency chain: the kernels'
//!   loops are bound by latency more than by throughput), and `2^k` built
//!   in the exponent field as `2^⌊k/2⌋·2^⌈k/2⌉`, so that results in the
//!   subnormal range are rounded once, correctly scaled.
//! * `ln`, `ln_1p`: `1 + f = 2^k·m` with `m ∈ [√2/2, √2)`, and fdlibm's
//!   kernel `ln(1 + f) = f - (f²/2 - s·(f²/2 + R(s²)))`, `s = f/(2 + f)`,
//!   with fdlibm's minimax coefficients. `ln_1p` carries the rounding error
//!   of `1 + x` (exact by Fast2Sum) into `f`, so that small arguments keep
//!   full relative accuracy.
//! * `ln_1p_unit`: `ln(1 + e)` for `e ∈ [0, 1]` only (the softplus of a
//!   non-positive number): the same kernel on `f = e` with no reduction,
//!   `s ∈ [0, 1/3]`, and minimax coefficients of its own for that wider
//!   interval.
//!
//! Every function is generic-free per type (`f32`, `f64`); the generic code
//! reaches them through the sealed methods of [`Float`], or through
//! [`exp_neg`] and [`ln_1p_unit`]. Those two (and the `exp`s) take an
//! [`Fma`]: with [`Fma::On`] their polynomials' multiply-adds round once,
//! which the tests check to the same 2 ulp; with [`Fma::Off`] they round
//! as the code reads.

use crate::Float;

/// Whether the polynomials' multiply-adds round once (fused, on the
/// dispatch paths whose CPU has FMA) or twice (`a·b`, then `+ c`: the
/// portable code). A parameter, not a cargo feature or a global: inside
/// [`dispatch::run_fma`](super::dispatch::run_fma)'s closures it is a
/// constant, so each path compiles one form with no test in its loops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fma {
    /// `a·b + c` with two roundings.
    Off,
    /// `a·b + c` rounded once. Outside a function compiled with the `fma`
    /// target feature this is a call into libm (correct, slow).
    On,
}

impl Fma {
    /// `a·b + c`, fused or not.
    #[inline(always)]
    pub(crate) fn mul_add<A: Float>(self, a: A, b: A, c: A) -> A {
        match self {
            Fma::Off => a * b + c,
            Fma::On => a.mul_add(b, c),
        }
    }
}

/// `if c { a } else { b }`, with both sides evaluated: compiles to a select
/// (a blend in vector code), never to a branch.
#[inline(always)]
pub(crate) fn select<T>(c: bool, a: T, b: T) -> T {
    if c { a } else { b }
}

// ---------------------------------------------------------------- f32 ---

/// 1.5·2^23: adding it to `x·log2(e)` rounds to an integer `k` held in the
/// low mantissa bits.
const EXP_SHIFT_F32: f32 = 12_582_912.0;

/// The shared core of [`exp_f32`] and [`exp_neg_f32`] for a clamped `xc`:
/// `t = xc·log2(e) + SHIFT` (whose low bits hold `k`) and `e^r ≈ e^xc / 2^k`.
#[inline(always)]
fn exp_core_f32(xc: f32, fma: Fma) -> (f32, f32) {
    const LN2_HI: f32 = 0.693_359_4; // 355/512: k·LN2_HI is exact
    const LN2_LO: f32 = -2.121_944_4e-4;
    let t = fma.mul_add(xc, std::f32::consts::LOG2_E, EXP_SHIFT_F32);
    let kf = t - EXP_SHIFT_F32;
    let r = fma.mul_add(-kf, LN2_LO, xc - kf * LN2_HI);
    // e^r ≈ 1 + r + r²·Q(r) on |r| ≤ ln 2 / 2, Q of degree 4 fitted
    // (minimax, Remez) to the relative error of e^r: 0.05 ulp before
    // rounding, where Cephes's `expf` takes a degree more. On every `f32`
    // in [-104, 0], within 1 ulp of the correctly rounded result, off by
    // one on 0.85 % of them unfused and 0.81 % fused, as with Cephes's.
    // Evaluated by Estrin's scheme (a dependency chain of 3 multiply-adds
    // instead of Horner's 5: the loops are latency-bound, not
    // throughput-bound).
    const Q0: f32 = f32::from_bits(0x3eff_fffe); // 0.49999994
    const Q1: f32 = f32::from_bits(0x3e2a_aa49); // 0.16666521
    const Q2: f32 = f32::from_bits(0x3d2a_ac77); // 0.041668382
    const Q3: f32 = f32::from_bits(0x3c09_1ce2); // 0.0083687026
    const Q4: f32 = f32::from_bits(0x3ab5_12ec); // 0.0013814843
    let r2 = r * r;
    let r4 = r2 * r2;
    let q01 = fma.mul_add(Q1, r, Q0);
    let q23 = fma.mul_add(Q3, r, Q2);
    let q = fma.mul_add(Q4, r4, fma.mul_add(q23, r2, q01));
    (t, fma.mul_add(q, r2, r) + 1.0)
}

/// `e^x` in `f32`: the general form, which the tests check
/// [`exp_neg_f32`] against (the kernels need `x ≤ 0` only).
#[cfg(test)]
#[inline(always)]
pub(crate) fn exp_f32(x: f32, fma: Fma) -> f32 {
    // exp(-104) rounds to 0 and exp(89) to +∞; NaN passes through clamp.
    let (t, y) = exp_core_f32(x.clamp(-104.0, 89.0), fma);
    // k ∈ [-150, 129]; 2^k = 2^k1·2^k2 with both factors normal.
    let k = (t.to_bits() as i32).wrapping_sub(EXP_SHIFT_F32.to_bits() as i32);
    // (Wrapping: a NaN argument gives arbitrary bits here, and a NaN result.)
    let k1 = k >> 1;
    let k2 = k.wrapping_sub(k1);
    let s1 = f32::from_bits((k1.wrapping_add(127) as u32) << 23);
    let s2 = f32::from_bits((k2.wrapping_add(127) as u32) << 23);
    y * s1 * s2
}

/// `e^x` in `f32` for `x ≤ 0` (or NaN): the logistic functions' `e^-|x|`
/// and the softmax's `e^(x - max)`.
///
/// [`exp_f32`] without its upper clamp, and with one scaling instead of
/// two: for `k ∈ [-150, 0]`, `y·2^(k+24)` is normal and exact, and the
/// product by `2^-24` rounds once, as `y·2^k1·2^k2` does. So the result is
/// bit for bit [`exp_f32`]'s, from 6 fewer vector instructions.
#[inline(always)]
pub(crate) fn exp_neg_f32(x: f32, fma: Fma) -> f32 {
    const TWO_M24: f32 = 1.0 / 16_777_216.0;
    // As `clamp(-104, ..)`, NaN passing through.
    let (t, y) = exp_core_f32(select(x < -104.0, -104.0, x), fma);
    // The biased exponent of 2^(k+24), k = t - SHIFT in the low bits.
    let biased = (t.to_bits() as i32).wrapping_sub(EXP_SHIFT_F32.to_bits() as i32 - 127 - 24);
    let scale = f32::from_bits((biased as u32) << 23);
    y * scale * TWO_M24
}

/// `k·ln 2 + ln(1 + f)` for `f ∈ [√2/2 - 1, √2 - 1]` (fdlibm's `logf` kernel).
#[inline(always)]
fn log_kernel_f32(f: f32, k: f32) -> f32 {
    const LN2_HI: f32 = f32::from_bits(0x3f31_7180); // 6.9313812256e-1
    const LN2_LO: f32 = f32::from_bits(0x3717_f7d1); // 9.0580006145e-6
    const LG1: f32 = 0.666_666_6; // 0xaaaaaa.0p-24
    const LG2: f32 = 0.400_009_72; // 0xccce13.0p-25
    const LG3: f32 = 0.284_987_87; // 0x91e9ee.0p-25
    const LG4: f32 = 0.242_790_79; // 0xf89e26.0p-26
    let s = f / (2.0 + f);
    let z = s * s;
    let w = z * z;
    let t1 = w * (w * LG4 + LG2);
    let r = z * (w * LG3 + LG1) + t1;
    let hfsq = 0.5 * f * f;
    k * LN2_HI - ((hfsq - (s * (hfsq + r) + k * LN2_LO)) - f)
}

/// `ln(1 + e)` in `f32` for `e ∈ [0, 1]` (NaN propagates): fdlibm's
/// kernel on `f = e` itself, with no reduction. Then `s = e/(2 + e)` lies
/// in `[0, 1/3]`, and `R` is a minimax fit on `s² ∈ [0, 1/9]`, weighted by
/// `s² + 10⁻³` (its error reaches the result scaled by `s²/2`): 0.08 ulp
/// before the coefficients' and the arithmetic's rounding. Four
/// coefficients, as fdlibm's on its narrower interval, and no compare,
/// select or `k·ln 2` terms: BCE `loss_grad` on the AVX2 path went from
/// 14.8 to 13.0 instructions per element, and 10–15 % faster. The last
/// multiply-add is fused where `fma` says (the pixel-weighted BCE: 3 %
/// fewer instructions). Checked on every `f32` in `[0, 1]`: within 1 ulp
/// of the correctly rounded result everywhere, off by one on 0.34 % of
/// them unfused and 0.32 % fused (0.31 % with the reduction at `√2 - 1`).
#[inline(always)]
pub(crate) fn ln_1p_unit_f32(e: f32, fma: Fma) -> f32 {
    const C1: f32 = f32::from_bits(0x3f2a_aa82); // 0.66666424
    const C2: f32 = f32::from_bits(0x3ecc_e874); // 0.40021098
    const C3: f32 = f32::from_bits(0x3e8f_6619); // 0.28007582
    const C4: f32 = f32::from_bits(0x3e8f_4bdc); // 0.27987564
    let s = e / (2.0 + e);
    let z = s * s;
    let w = z * z;
    let t1 = w * fma.mul_add(w, C4, C2);
    let r = fma.mul_add(z, fma.mul_add(w, C3, C1), t1);
    let hfsq = 0.5 * e * e;
    e - fma.mul_add(-s, hfsq + r, hfsq)
}

/// Splits a positive normal `u` as `2^k·m`, `m ∈ [√2/2, √2)`: `(m - 1, k)`,
/// and the bits of `2^-k`.
#[inline(always)]
fn reduce_f32(u: f32) -> (f32, f32, u32) {
    const SQRT_HALF_BITS: u32 = 0x3f35_04f3;
    let bits = u.to_bits().wrapping_add(0x3f80_0000 - SQRT_HALF_BITS);
    let e = bits >> 23; // the biased exponent of m·2^k rounded at √2/2
    let k = (e as i32).wrapping_sub(127);
    let m = f32::from_bits((bits & 0x007f_ffff) + SQRT_HALF_BITS);
    // Capped so that 2^-k stays a number for u ≥ 2^127·√2 (where c·2^-k
    // is far below an ulp of the result anyway).
    let inv_scale = (254 - e.min(254)) << 23;
    (m - 1.0, k as f32, inv_scale)
}

/// `ln(x)` in `f32`.
#[inline(always)]
pub(crate) fn ln_f32(x: f32) -> f32 {
    const TWO25: f32 = 33_554_432.0;
    let sub = x < f32::MIN_POSITIVE;
    let xs = select(sub, x * TWO25, x);
    let (f, k, _) = reduce_f32(xs);
    let r = log_kernel_f32(f, k - select(sub, 25.0, 0.0));
    let r = select(x > 0.0, r, select(x == 0.0, f32::NEG_INFINITY, f32::NAN));
    select(x == f32::INFINITY, x, r)
}

/// `ln(1 + x)` in `f32`.
#[inline(always)]
pub(crate) fn ln_1p_f32(x: f32) -> f32 {
    // Fast2Sum of the larger and the smaller of (1, x): u + c = 1 + x exactly.
    let a = select(x > 1.0, x, 1.0);
    let b = select(x > 1.0, 1.0, x);
    let u = a + b;
    let c = b - (u - a);
    let (f, k, inv_scale) = reduce_f32(u);
    // ln(u + c) = k·ln 2 + ln(m + c·2^-k): fold c into f.
    let f = f + c * f32::from_bits(inv_scale);
    let r = log_kernel_f32(f, k);
    let r = select(x > -1.0, r, select(x == -1.0, f32::NEG_INFINITY, f32::NAN));
    select(x == f32::INFINITY, x, r)
}

// ---------------------------------------------------------------- f64 ---

/// 1.5·2^52: adding it to `x·log2(e)` rounds to an integer `k` held in the
/// low mantissa bits.
const EXP_SHIFT_F64: f64 = 6_755_399_441_055_744.0;

/// The shared core of [`exp_f64`] and [`exp_neg_f64`] for a clamped `xc`:
/// `t = xc·log2(e) + SHIFT` (whose low bits hold `k`) and `e^r ≈ e^xc / 2^k`.
#[inline(always)]
fn exp_core_f64(xc: f64, fma: Fma) -> (f64, f64) {
    const LN2_HI: f64 = 6.931_471_803_691_238e-1; // 0x3fe62e42fee00000
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10; // 0x3dea39ef35793c76
    let t = fma.mul_add(xc, std::f64::consts::LOG2_E, EXP_SHIFT_F64);
    let kf = t - EXP_SHIFT_F64;
    let r = fma.mul_add(-kf, LN2_LO, xc - kf * LN2_HI);
    // e^r = 1 + r + r²·P(r), P the Taylor series to r^11/13!: on
    // |r| ≤ ln 2 / 2 the first omitted term is below 5e-18.
    // Evaluated by Estrin's scheme: a dependency chain of 4 multiply-adds
    // instead of Horner's 12 (the loops are latency-bound).
    let r2 = r * r;
    let r4 = r2 * r2;
    let r8 = r4 * r4;
    let p01 = fma.mul_add(1.0 / 6.0, r, 0.5);
    let p23 = fma.mul_add(1.0 / 120.0, r, 1.0 / 24.0);
    let p45 = fma.mul_add(1.0 / 5_040.0, r, 1.0 / 720.0);
    let p67 = fma.mul_add(1.0 / 362_880.0, r, 1.0 / 40_320.0);
    let p89 = fma.mul_add(1.0 / 39_916_800.0, r, 1.0 / 3_628_800.0);
    let p1011 = fma.mul_add(1.0 / 6_227_020_800.0_f64, r, 1.0 / 479_001_600.0);
    let p03 = fma.mul_add(p23, r2, p01);
    let p47 = fma.mul_add(p67, r2, p45);
    let p811 = fma.mul_add(p1011, r2, p89);
    let p = fma.mul_add(p811, r8, fma.mul_add(p47, r4, p03));
    (t, fma.mul_add(p, r2, r) + 1.0)
}

/// `e^x` in `f64`.
#[inline(always)]
pub(crate) fn exp_f64(x: f64, fma: Fma) -> f64 {
    // exp(-746) rounds to 0 and exp(710) to +∞; NaN passes through clamp.
    let (t, y) = exp_core_f64(x.clamp(-746.0, 710.0), fma);
    // k ∈ [-1077, 1025]; 2^k = 2^k1·2^k2 with both factors normal. The
    // halving shift is done on a positive offset (logical shift).
    let k = (t.to_bits() as i64).wrapping_sub(EXP_SHIFT_F64.to_bits() as i64);
    // (Wrapping: a NaN argument gives arbitrary bits here, and a NaN result.)
    let k1 = ((k.wrapping_add(4096) as u64) >> 1) as i64 - 2048;
    let k2 = k.wrapping_sub(k1);
    let s1 = f64::from_bits((k1.wrapping_add(1023) as u64) << 52);
    let s2 = f64::from_bits((k2.wrapping_add(1023) as u64) << 52);
    y * s1 * s2
}

/// `e^x` in `f64` for `x ≤ 0` (or NaN), bit for bit [`exp_f64`] (see
/// [`exp_neg_f32`]: here `y·2^(k+55)` is normal and exact for
/// `k ∈ [-1077, 0]`).
#[inline(always)]
pub(crate) fn exp_neg_f64(x: f64, fma: Fma) -> f64 {
    const TWO_M55: f64 = 1.0 / 36_028_797_018_963_968.0;
    let (t, y) = exp_core_f64(select(x < -746.0, -746.0, x), fma);
    let biased = (t.to_bits() as i64).wrapping_sub(EXP_SHIFT_F64.to_bits() as i64 - 1023 - 55);
    let scale = f64::from_bits((biased as u64) << 52);
    y * scale * TWO_M55
}

/// `k·ln 2 + ln(1 + f)` for `f ∈ [√2/2 - 1, √2 - 1]` (fdlibm's `log` kernel).
#[inline(always)]
fn log_kernel_f64(f: f64, k: f64) -> f64 {
    const LN2_HI: f64 = 6.931_471_803_691_238e-1; // 0x3fe62e42fee00000
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10; // 0x3dea39ef35793c76
    const LG1: f64 = 6.666_666_666_666_735e-1; // 0x3fe5555555555593
    const LG2: f64 = 3.999_999_999_940_942e-1; // 0x3fd999999997fa04
    const LG3: f64 = 2.857_142_874_366_239e-1; // 0x3fd2492494229359
    const LG4: f64 = 2.222_219_843_214_978_4e-1; // 0x3fcc71c51d8e78af
    const LG5: f64 = 1.818_357_216_161_805e-1; // 0x3fc7466496cb03de
    const LG6: f64 = 1.531_383_769_920_937_3e-1; // 0x3fc39a09d078c69f
    const LG7: f64 = 1.479_819_860_511_658_6e-1; // 0x3fc2f112df3e5244
    let s = f / (2.0 + f);
    let z = s * s;
    let w = z * z;
    let t1 = w * (w * (w * LG6 + LG4) + LG2);
    let t2 = w * (w * (w * LG7 + LG5) + LG3) + LG1;
    let r = z * t2 + t1;
    let hfsq = 0.5 * f * f;
    k * LN2_HI - ((hfsq - (s * (hfsq + r) + k * LN2_LO)) - f)
}

/// `ln(1 + e)` in `f64` for `e ∈ [0, 1]` (NaN propagates), as
/// [`ln_1p_unit_f32`]: no reduction, and `R` a minimax fit on
/// `s² ∈ [0, 1/9]` with ten coefficients (fdlibm's seven cover
/// `[0, 0.0295]`), 0.013 ulp before rounding. `f64` BCE `loss_grad` on
/// the AVX2 path: 6–8 % faster.
#[inline(always)]
pub(crate) fn ln_1p_unit_f64(e: f64, fma: Fma) -> f64 {
    const C1: f64 = f64::from_bits(0x3fe5_5555_5555_553f); // 0.66666666666666418
    const C2: f64 = f64::from_bits(0x3fd9_9999_9999_f12f); // 0.40000000000124462
    const C3: f64 = f64::from_bits(0x3fd2_4924_9211_e866); // 0.28571428551334174
    const C4: f64 = f64::from_bits(0x3fcc_71c7_3deb_f829); // 0.22222223781130992
    const C5: f64 = f64::from_bits(0x3fc7_45cb_b91c_10a8); // 0.18181749857479202
    const C6: f64 = f64::from_bits(0x3fc3_b1d4_92ce_ac5c); // 0.15386445205999420
    const C7: f64 = f64::from_bits(0x3fc1_06ea_a39c_76b6); // 0.13302357662990056
    const C8: f64 = f64::from_bits(0x3fbe_f72f_fbe8_1fff); // 0.12095928096834994
    const C9: f64 = f64::from_bits(0x3fb5_74f7_28cd_1b09); // 0.08381600137827773
    const C10: f64 = f64::from_bits(0x3fc5_b0ee_a50f_7db6); // 0.16946204242320357
    let s = e / (2.0 + e);
    let z = s * s;
    let w = z * z;
    let even = fma.mul_add(w, fma.mul_add(w, fma.mul_add(w, C10, C8), C6), C4);
    let t1 = w * fma.mul_add(w, even, C2);
    let odd = fma.mul_add(w, fma.mul_add(w, fma.mul_add(w, C9, C7), C5), C3);
    let r = fma.mul_add(z, fma.mul_add(w, odd, C1), t1);
    let hfsq = 0.5 * e * e;
    e - fma.mul_add(-s, hfsq + r, hfsq)
}

/// Splits a positive normal `u` as `2^k·m`, `m ∈ [√2/2, √2)`: `(m - 1, k)`,
/// and the bits of `2^-k`.
#[inline(always)]
fn reduce_f64(u: f64) -> (f64, f64, u64) {
    const SQRT_HALF_HI: u64 = 0x3fe6_a09e << 32;
    // 2^52: an integer i < 2^52 placed in its mantissa reads 2^52 + i.
    const TWO52: f64 = 4_503_599_627_370_496.0;
    let bits = u.to_bits().wrapping_add((0x3ff0_0000 << 32) - SQRT_HALF_HI);
    let e = bits >> 52; // the biased exponent of m·2^k rounded at √2/2
    // k as a float without an i64 → f64 conversion (none in SSE2).
    let k = f64::from_bits(TWO52.to_bits() | e) - (TWO52 + 1023.0);
    let m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) + SQRT_HALF_HI);
    let inv_scale = (2046 - e.min(2046)) << 52;
    (m - 1.0, k, inv_scale)
}

/// `ln(x)` in `f64`.
#[inline(always)]
pub(crate) fn ln_f64(x: f64) -> f64 {
    const TWO54: f64 = 18_014_398_509_481_984.0;
    let sub = x < f64::MIN_POSITIVE;
    let xs = select(sub, x * TWO54, x);
    let (f, k, _) = reduce_f64(xs);
    let r = log_kernel_f64(f, k - select(sub, 54.0, 0.0));
    let r = select(x > 0.0, r, select(x == 0.0, f64::NEG_INFINITY, f64::NAN));
    select(x == f64::INFINITY, x, r)
}

/// `ln(1 + x)` in `f64`.
#[inline(always)]
pub(crate) fn ln_1p_f64(x: f64) -> f64 {
    let a = select(x > 1.0, x, 1.0);
    let b = select(x > 1.0, 1.0, x);
    let u = a + b;
    let c = b - (u - a);
    let (f, k, inv_scale) = reduce_f64(u);
    let f = f + c * f64::from_bits(inv_scale);
    let r = log_kernel_f64(f, k);
    let r = select(x > -1.0, r, select(x == -1.0, f64::NEG_INFINITY, f64::NAN));
    select(x == f64::INFINITY, x, r)
}

// ----------------------------------------------------------- logistic ---

/// `f32_fn(v)` or `f64_fn(v)`, whichever is `A`'s: the test and the casts
/// are identities that fold away once `A` is known. (The per-type
/// functions that take an [`Fma`] are reached through here, not through
/// the sealed `Float`, whose methods' signatures are public.)
#[inline(always)]
fn per_type<A: Float>(v: A, f32_fn: impl Fn(f32) -> f32, f64_fn: impl Fn(f64) -> f64) -> A {
    let out = if size_of::<A>() == size_of::<f32>() {
        v.to_f32().map(f32_fn).and_then(A::from)
    } else {
        v.to_f64().map(f64_fn).and_then(A::from)
    };
    out.unwrap_or_else(A::nan)
}

/// `e^x` for `x ≤ 0` (or NaN) in the element type: [`exp_neg_f32`] or
/// [`exp_neg_f64`].
#[inline(always)]
pub(crate) fn exp_neg<A: Float>(x: A, fma: Fma) -> A {
    per_type(x, |x| exp_neg_f32(x, fma), |x| exp_neg_f64(x, fma))
}

/// `ln(1 + e)` for `e ∈ [0, 1]` (or NaN) in the element type:
/// [`ln_1p_unit_f32`] or [`ln_1p_unit_f64`].
#[inline(always)]
pub(crate) fn ln_1p_unit<A: Float>(e: A, fma: Fma) -> A {
    per_type(e, |e| ln_1p_unit_f32(e, fma), |e| ln_1p_unit_f64(e, fma))
}

/// The sigmoid of `x` and the quantities the losses need with it, from one
/// `exp`, one `ln_1p` and one division, stable for any finite `x`:
/// `sigma = σ(x)`, `sigma_c = 1 - σ(x) = σ(-x)` (each computed directly, not
/// as a difference), `softplus_pos = ln(1 + e^x)`, `softplus_neg = ln(1 + e^-x)`.
///
/// Branch-free, so that loops over it vectorise; callers that use only some
/// fields pay only for those (the rest is dead code once inlined).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Logistic<A> {
    pub(crate) sigma: A,
    pub(crate) sigma_c: A,
    pub(crate) softplus_pos: A,
    pub(crate) softplus_neg: A,
}

impl<A: Float> Logistic<A> {
    /// The quantities with the multiply-adds unfused (the scalar and
    /// strided code's form; the pixel kernel's stages pass their [`Fma`]).
    #[inline(always)]
    pub(crate) fn of(x: A) -> Self {
        let e = Self::stage(x, Fma::Off);
        Self::from_stages(x, e, Self::softplus_stage(e, Fma::Off))
    }

    /// The first stage of [`Logistic::of`]: `e^-|x|`, in `[0, 1]` (nothing
    /// overflows, and `ln(1 + e)` keeps full relative accuracy).
    ///
    /// It depends on `x` alone, so a kernel can compute it for a whole
    /// chunk in a loop of its own before the rest: two short dependency
    /// chains per element instead of one long one (the `exp`, then the
    /// logarithm and the division), which lets the CPU overlap more
    /// elements (see `pixel`).
    #[inline(always)]
    pub(crate) fn stage(x: A, fma: Fma) -> A {
        exp_neg(-x.abs(), fma)
    }

    /// The second stage of [`Logistic::of`]: `ln(1 + e) = softplus(-|x|)`
    /// from `e = Logistic::stage(x)`. Like the first, a kernel can compute
    /// it in a loop of its own: the logarithm's chain (with its division)
    /// and the sigmoid's division then overlap over many elements.
    #[inline(always)]
    pub(crate) fn softplus_stage(e: A, fma: Fma) -> A {
        ln_1p_unit(e, fma)
    }

    /// [`Logistic::of`] from `e = Logistic::stage(x)` and
    /// `l = Logistic::softplus_stage(e)`.
    #[inline(always)]
    pub(crate) fn from_stages(x: A, e: A, l: A) -> Self {
        let zero = A::zero();
        let one = A::one();
        let inv = one / (one + e);
        let big = inv; // σ(|x|)
        let small = e * inv; // σ(-|x|)
        let positive = x >= zero;
        // max(x, 0) + l and l - min(x, 0): one vector instruction each for
        // the max and the min (x = -0 gives l either way).
        Self {
            sigma: select(positive, big, small),
            sigma_c: select(positive, small, big),
            softplus_pos: select(x > zero, x, zero) + l,
            softplus_neg: l - select(x < zero, x, zero),
        }
    }

    /// `σ(x)` alone (unfused, as [`Logistic::of`]).
    #[inline(always)]
    pub(crate) fn sigmoid(x: A) -> A {
        Self::sigmoid_from_stage(x, Self::stage(x, Fma::Off))
    }

    /// [`Logistic::sigmoid`] from `e = Logistic::stage(x)`.
    #[inline(always)]
    pub(crate) fn sigmoid_from_stage(x: A, e: A) -> A {
        let one = A::one();
        let inv = one / (one + e);
        select(x >= A::zero(), inv, e * inv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_rng::Xorshift;

    /// Distance in ulps between two values (0 for equal values, two NaNs,
    /// or equal infinities; `u64::MAX` when only one is NaN).
    fn ulps_f64(a: f64, b: f64) -> u64 {
        if a.is_nan() || b.is_nan() {
            return if a.is_nan() && b.is_nan() {
                0
            } else {
                u64::MAX
            };
        }
        let ord = |v: f64| {
            let bits = v.to_bits() as i64;
            if bits < 0 { i64::MIN - bits } else { bits }
        };
        ord(a).abs_diff(ord(b))
    }

    fn ulps_f32(a: f32, b: f32) -> u64 {
        if a.is_nan() || b.is_nan() {
            return if a.is_nan() && b.is_nan() {
                0
            } else {
                u64::MAX
            };
        }
        let ord = |v: f32| {
            let bits = v.to_bits() as i32;
            i64::from(if bits < 0 { i32::MIN - bits } else { bits })
        };
        ord(a).abs_diff(ord(b))
    }

    /// The largest ulp distance between `fast` and `reference` over
    /// `points`, reported on stderr, with the worst argument.
    fn max_ulps_f32(
        name: &str,
        points: impl Iterator<Item = f32>,
        fast: impl Fn(f32) -> f32,
        reference: impl Fn(f32) -> f32,
    ) -> u64 {
        let (mut worst, mut at, mut count) = (0, 0.0, 0usize);
        for x in points {
            let d = ulps_f32(fast(x), reference(x));
            if d > worst {
                (worst, at) = (d, x);
            }
            count += 1;
        }
        eprintln!("{name}: max {worst} ulp (at {at:e}) over {count} points");
        worst
    }

    fn max_ulps_f64(
        name: &str,
        points: impl Iterator<Item = f64>,
        fast: impl Fn(f64) -> f64,
        reference: impl Fn(f64) -> f64,
    ) -> u64 {
        let (mut worst, mut at, mut count) = (0, 0.0, 0usize);
        for x in points {
            let d = ulps_f64(fast(x), reference(x));
            if d > worst {
                (worst, at) = (d, x);
            }
            count += 1;
        }
        eprintln!("{name}: max {worst} ulp (at {at:e}) over {count} points");
        worst
    }

    /// `n` evenly spaced points over `[lo, hi]`.
    fn grid(lo: f64, hi: f64, n: usize) -> impl Iterator<Item = f64> {
        (0..=n).map(move |i| lo + (hi - lo) * i as f64 / n as f64)
    }

    /// `n` points spread log-uniformly over `±[2^lo, 2^hi]`.
    fn log_spread(lo: f64, hi: f64, n: usize, seed: u64) -> impl Iterator<Item = f64> {
        let mut rng = Xorshift(seed);
        (0..n).map(move |i| {
            let v = (lo + (hi - lo) * rng.uniform()).exp2();
            if i % 2 == 0 { v } else { -v }
        })
    }

    /// Random bit patterns: every exponent, subnormals included.
    fn any_f32(n: usize, seed: u64) -> impl Iterator<Item = f32> {
        let mut rng = Xorshift(seed);
        (0..n).map(move |_| f32::from_bits(rng.next_u64() as u32))
    }

    fn any_f64(n: usize, seed: u64) -> impl Iterator<Item = f64> {
        let mut rng = Xorshift(seed);
        (0..n).map(move |_| f64::from_bits(rng.next_u64()))
    }

    const SPECIALS: [f64; 12] = [
        0.0,
        -0.0,
        1.0,
        -1.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        f64::MIN_POSITIVE,
        f64::MAX,
        -f64::MAX,
        1e4,
        -1e4,
    ];

    /// Both forms of the functions that take an [`Fma`]. Outside a
    /// function compiled with the `fma` feature, `Fma::On` calls libm's
    /// `fma`, which rounds once as the instruction does.
    const BOTH: [Fma; 2] = [Fma::Off, Fma::On];

    #[test]
    fn exp_f32_is_within_2_ulp() {
        for fma in BOTH {
            let points = grid(-110.0, 95.0, 1 << 21)
                .chain(grid(-88.0, -80.0, 1 << 18))
                .chain(log_spread(-60.0, 7.0, 1 << 18, 1))
                .chain(SPECIALS)
                .map(|x| x as f32)
                .chain(any_f32(1 << 18, 2));
            let fast = |x| exp_f32(x, fma);
            assert!(max_ulps_f32(&format!("exp_f32 {fma:?}"), points, fast, f32::exp) <= 2);
        }
    }

    /// The non-positive `exp` is bit for bit the general one on its domain,
    /// fused or not.
    #[test]
    fn exp_neg_is_exp() {
        for fma in BOTH {
            let points = grid(-110.0, 0.0, 1 << 21)
                .chain(grid(-105.0, -86.0, 1 << 18))
                .chain(log_spread(-150.0, 7.0, 1 << 18, 15).map(|x| -x.abs()))
                .chain([0.0, -0.0, f64::NEG_INFINITY, -f64::MAX, f64::NAN]);
            for x in points
                .map(|x| x as f32)
                .chain(any_f32(1 << 20, 16).map(|x| -x.abs()))
            {
                let general = exp_f32(x, fma).to_bits();
                assert_eq!(exp_neg_f32(x, fma).to_bits(), general, "at {x:e}, {fma:?}");
                assert_eq!(exp_neg(x, fma).to_bits(), general, "at {x:e}, {fma:?}");
            }
            let points = grid(-750.0, 0.0, 1 << 21)
                .chain(grid(-746.0, -700.0, 1 << 18))
                .chain(log_spread(-1074.0, 10.0, 1 << 18, 17).map(|x| -x.abs()))
                .chain(any_f64(1 << 20, 18).map(|x| -x.abs()))
                .chain([0.0, -0.0, f64::NEG_INFINITY, -f64::MAX, f64::NAN]);
            for x in points {
                let general = exp_f64(x, fma).to_bits();
                assert_eq!(exp_neg_f64(x, fma).to_bits(), general, "at {x:e}, {fma:?}");
                assert_eq!(exp_neg(x, fma).to_bits(), general, "at {x:e}, {fma:?}");
            }
        }
    }

    #[test]
    fn exp_f64_is_within_2_ulp() {
        for fma in BOTH {
            let points = grid(-750.0, 712.0, 1 << 21)
                .chain(grid(-746.0, -700.0, 1 << 18))
                .chain(grid(-90.0, 90.0, 1 << 18))
                .chain(log_spread(-80.0, 10.0, 1 << 18, 3))
                .chain(any_f64(1 << 18, 4))
                .chain(SPECIALS);
            let fast = |x| exp_f64(x, fma);
            assert!(max_ulps_f64(&format!("exp_f64 {fma:?}"), points, fast, f64::exp) <= 2);
        }
    }

    /// The two forms differ in the last bits only where they round
    /// differently: on most arguments they agree.
    #[test]
    fn fused_and_unfused_forms_mostly_agree() {
        let points: Vec<f32> = grid(-30.0, 0.0, 1 << 16).map(|x| x as f32).collect();
        let same = points
            .iter()
            .filter(|&&x| exp_neg_f32(x, Fma::Off) == exp_neg_f32(x, Fma::On))
            .count();
        eprintln!(
            "exp_neg_f32: fused = unfused on {same} of {} points",
            points.len()
        );
        assert!(same * 4 > points.len() * 3 && same < points.len());
    }

    #[test]
    fn ln_is_within_2_ulp() {
        let points = any_f32(1 << 20, 5)
            .chain(grid(0.0, 4.0, 1 << 20).map(|x| x as f32))
            .chain(SPECIALS.map(|x| x as f32));
        assert!(max_ulps_f32("ln_f32", points, ln_f32, f32::ln) <= 2);
        let points = any_f64(1 << 20, 6)
            .chain(grid(0.0, 4.0, 1 << 20))
            .chain(SPECIALS);
        assert!(max_ulps_f64("ln_f64", points, ln_f64, f64::ln) <= 2);
    }

    #[test]
    fn ln_1p_is_within_2_ulp() {
        let points = || {
            grid(-1.0, 3.0, 1 << 20)
                .chain(log_spread(-140.0, 0.0, 1 << 19, 7).map(f64::abs))
                .chain(log_spread(-140.0, 0.0, 1 << 19, 8).map(|x| -x.abs()))
                .chain(log_spread(0.0, 127.0, 1 << 18, 9).map(f64::abs))
                .chain(SPECIALS)
                .chain([-2.0, -1.5])
        };
        let f32s = points().map(|x| x as f32).chain(any_f32(1 << 18, 10));
        assert!(max_ulps_f32("ln_1p_f32", f32s, ln_1p_f32, f32::ln_1p) <= 2);
        let f64s = points()
            .chain(log_spread(127.0, 1023.0, 1 << 16, 11).map(f64::abs))
            .chain(any_f64(1 << 18, 12));
        assert!(max_ulps_f64("ln_1p_f64", f64s, ln_1p_f64, f64::ln_1p) <= 2);
    }

    #[test]
    fn ln_1p_unit_is_within_2_ulp() {
        let points = || {
            grid(0.0, 1.0, 1 << 21)
                .chain(log_spread(-150.0, 0.0, 1 << 19, 13).map(f64::abs))
                .chain([0.0, 1.0, f64::MIN_POSITIVE])
        };
        for fma in BOTH {
            let f32s = points().map(|x| x as f32);
            let fast = |e| ln_1p_unit_f32(e, fma);
            let name = format!("ln_1p_unit_f32 {fma:?}");
            assert!(max_ulps_f32(&name, f32s, fast, f32::ln_1p) <= 2);
            let f64s = points().chain(log_spread(-1074.0, 0.0, 1 << 18, 14).map(f64::abs));
            let fast = |e| ln_1p_unit_f64(e, fma);
            let name = format!("ln_1p_unit_f64 {fma:?}");
            assert!(max_ulps_f64(&name, f64s, fast, f64::ln_1p) <= 2);
        }
    }

    /// The composition the losses use: softplus and σ at extreme logits.
    #[test]
    fn logistic_of_f32_matches_f64() {
        let mut worst = [0.0f64; 3];
        for x in grid(-120.0, 120.0, 1 << 20).chain([-1e4, 1e4, 0.0]) {
            let l32 = Logistic::of(x as f32);
            let x = f64::from(x as f32);
            let sig = |x: f64| {
                if x >= 0.0 {
                    1.0 / (1.0 + (-x).exp())
                } else {
                    x.exp() / (1.0 + x.exp())
                }
            };
            let s = sig(x);
            let sp = x.max(0.0) + (-x.abs()).exp().ln_1p();
            let rel = |a: f32, b: f64| {
                // Relative where the reference is a normal f32, absolute
                // in units of the smallest normal below.
                (f64::from(a) - b).abs() / b.abs().max(f64::from(f32::MIN_POSITIVE))
            };
            worst[0] = worst[0].max(rel(l32.sigma, s));
            worst[1] = worst[1].max(rel(l32.softplus_pos, sp));
            worst[2] = worst[2].max(rel(l32.sigma_c, sig(-x)));
        }
        eprintln!("Logistic<f32> relative errors (sigma, softplus, sigma_c): {worst:?}");
        assert!(worst[0] <= 4.0 * f64::from(f32::EPSILON));
        assert!(worst[1] <= 4.0 * f64::from(f32::EPSILON));
        assert!(worst[2] <= 4.0 * f64::from(f32::EPSILON));
    }

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
        for &x in &[-1e4_f64, 1e4, 800.0, -800.0, f64::MAX, -f64::MAX] {
            let l = Logistic::of(x);
            assert!(l.sigma.is_finite() && l.sigma_c.is_finite());
            assert!(l.softplus_pos.is_finite() && l.softplus_neg.is_finite());
            assert_eq!(l.softplus_pos + l.softplus_neg, x.abs());
        }
    }
}
