//! Runtime CPU-feature dispatch for the kernels' hot loops.
//!
//! The crate is built for the baseline target (SSE2 on x86-64: 128-bit
//! vectors). [`run`] calls its closure either directly or, on an x86-64 CPU
//! with AVX2 and FMA or with AVX-512, from a `#[target_feature]` function,
//! into which the closure (and the `#[inline(always)]` loop bodies it
//! calls) is inlined and compiled again with 256- or 512-bit vectors: two
//! or four times the lanes per instruction for the compute-bound
//! sigmoid/softmax loops. Every loop fixes its lanes and the order of its
//! operations explicitly, and LLVM may not reassociate floating-point
//! arithmetic (nor fuse a multiply and an add on its own), so a wider
//! vector only does the same operations at once: the results of [`run`]
//! are the same bit for bit on every path.
//!
//! [`run_fma`] also tells its closure whether the path has FMA
//! ([`Fma::On`] on both wide paths, [`Fma::Off`] on the baseline), a
//! constant once inlined. The pixel kernel's logistic stages (the `exp` and
//! the logarithm of BCE, weighted BCE and the shape-aware loss on logits,
//! and BCE's value and gradient formed from them) fuse their multiply-adds
//! with it: BCE's `loss_grad` at 2^24 `f32` takes about 10 % less time
//! under AVX-512, 15 % in cache. Those losses' results then differ in the
//! last bits between the baseline and the two wide paths, which agree with
//! each other bit for bit. Everything else stays unfused.
//!
//! `SEGLOSS_MAX_ISA` (read once, at the first call) caps the level:
//! `baseline`, `avx2` or `avx512`, as oneDNN's `ONEDNN_MAX_CPU_ISA` does.
//! It changes the speed only. Any other value is ignored.

#[cfg(target_arch = "x86_64")]
use std::sync::atomic::{AtomicU8, Ordering};

use super::math::Fma;

/// The vector extensions [`run`] compiles its closure for, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) enum Isa {
    /// The build's target: SSE2 on x86-64.
    Baseline = 1,
    /// AVX2 and FMA (256-bit vectors).
    Avx2 = 2,
    /// AVX-512 F, VL, DQ and BW, and FMA (512-bit vectors).
    Avx512 = 3,
}

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
impl Isa {
    fn from_u8(level: u8) -> Option<Self> {
        match level {
            1 => Some(Isa::Baseline),
            2 => Some(Isa::Avx2),
            3 => Some(Isa::Avx512),
            _ => None,
        }
    }

    /// The cap that a value of `SEGLOSS_MAX_ISA` asks for, if any.
    fn parse_cap(value: &str) -> Option<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "baseline" | "sse2" => Some(Isa::Baseline),
            "avx2" => Some(Isa::Avx2),
            "avx512" => Some(Isa::Avx512),
            _ => None,
        }
    }
}

/// The level detected (and capped by `SEGLOSS_MAX_ISA`): 0 = not yet.
#[cfg(target_arch = "x86_64")]
static LEVEL: AtomicU8 = AtomicU8::new(0);

/// A cap set by the tests that compare the paths: 0 = none.
#[cfg(test)]
static TEST_CAP: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Held by [`with_cap`], so that the tests that compare the paths, which
/// run on parallel threads, set their caps one at a time.
#[cfg(test)]
static CAP_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `f()` with [`run`] using at most `isa` (`None`: the detected level),
/// and no other test changing the cap meanwhile. A test that compares two
/// passes bit for bit runs under it (with `None`): the losses that fuse
/// their multiply-adds on the wide paths give other bits on the baseline.
#[cfg(test)]
pub(crate) fn with_cap<R>(isa: Option<Isa>, f: impl FnOnce() -> R) -> R {
    use std::sync::atomic::Ordering::SeqCst;
    let _lock = CAP_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    TEST_CAP.store(isa.map_or(0, |i| i as u8), SeqCst);
    // Reset when `f` returns or unwinds.
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            TEST_CAP.store(0, SeqCst);
        }
    }
    let _reset = Reset;
    f()
}

/// The level [`run`] uses now.
#[cfg(test)]
pub(crate) fn in_use() -> Isa {
    #[cfg(target_arch = "x86_64")]
    return level();
    #[cfg(not(target_arch = "x86_64"))]
    Isa::Baseline
}

/// For the tests that compare the paths: `f()` on the widest path this CPU
/// has, then capped at AVX2 and at the baseline, each under [`with_cap`]
/// and checked to run at the level asked for (a cap that did nothing
/// would pass as agreement). Returns the widest result and the capped ones
/// with their caps.
#[cfg(test)]
pub(crate) fn on_every_path<R>(f: impl Fn() -> R) -> (R, Vec<(Isa, R)>) {
    let (widest_isa, widest) = with_cap(None, || (in_use(), f()));
    let capped = [Isa::Avx2, Isa::Baseline]
        .into_iter()
        .map(|isa| {
            let result = with_cap(Some(isa), || {
                assert_eq!(in_use(), widest_isa.min(isa));
                f()
            });
            (isa, result)
        })
        .collect();
    (widest, capped)
}

/// What this CPU has, without a cap.
#[cfg(target_arch = "x86_64")]
fn detect() -> Isa {
    if std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx512dq")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("fma")
    {
        Isa::Avx512
    } else if std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
    {
        Isa::Avx2
    } else {
        Isa::Baseline
    }
}

/// The level [`run`] uses: detected once, capped by `SEGLOSS_MAX_ISA`
/// (and, in tests, by [`cap`]).
#[cfg(target_arch = "x86_64")]
#[inline]
fn level() -> Isa {
    let level = match Isa::from_u8(LEVEL.load(Ordering::Relaxed)) {
        Some(level) => level,
        None => {
            let cap = std::env::var("SEGLOSS_MAX_ISA")
                .ok()
                .and_then(|v| Isa::parse_cap(&v));
            let found = detect();
            let level = cap.map_or(found, |cap| cap.min(found));
            LEVEL.store(level as u8, Ordering::Relaxed);
            level
        }
    };
    #[cfg(test)]
    if let Some(cap) = Isa::from_u8(TEST_CAP.load(std::sync::atomic::Ordering::SeqCst)) {
        return level.min(cap);
    }
    level
}

/// Calls `f` with the widest vector extension the CPU has (see the module
/// documentation). `f` should be an `#[inline(always)]` closure whose hot
/// loop is made of `#[inline(always)]` functions, so that the loop is
/// compiled inside the dispatched function; what is not inlined runs at
/// the baseline either way. The result is the same on every path.
#[inline(always)]
pub(crate) fn run<R>(f: impl FnOnce() -> R) -> R {
    run_fma(
        #[inline(always)]
        |_| f(),
    )
}

/// As [`run`], telling `f` whether the path has FMA: [`Fma::On`] on the
/// wide paths, [`Fma::Off`] on the baseline. The result of an `f` that
/// passes it to [`Fma::mul_add`] is the same on the two wide paths and
/// may differ from the baseline's in the last bits.
#[inline(always)]
#[allow(unsafe_code)]
pub(crate) fn run_fma<R>(f: impl FnOnce(Fma) -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    match level() {
        // SAFETY: `avx512` requires AVX-512 F, VL, DQ and BW and FMA, which
        // `detect` found at run time (a cap only lowers the level).
        Isa::Avx512 => return unsafe { avx512(f) },
        // SAFETY: `avx2` requires AVX2 and FMA, which `detect` found at
        // run time.
        Isa::Avx2 => return unsafe { avx2(f) },
        Isa::Baseline => {}
    }
    f(Fma::Off)
}

/// `f(Fma::On)`, compiled with AVX2 and FMA enabled.
///
/// # Safety
///
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<R>(f: impl FnOnce(Fma) -> R) -> R {
    f(Fma::On)
}

/// `f(Fma::On)`, compiled with AVX-512 and FMA enabled.
///
/// # Safety
///
/// The CPU must support AVX-512 F, VL, DQ and BW, and FMA.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
#[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,fma")]
unsafe fn avx512<R>(f: impl FnOnce(Fma) -> R) -> R {
    f(Fma::On)
}

#[cfg(test)]
mod tests {
    use super::Isa;

    #[test]
    fn caps_parse_and_order() {
        assert_eq!(Isa::parse_cap(" AVX2 "), Some(Isa::Avx2));
        assert_eq!(Isa::parse_cap("sse2"), Some(Isa::Baseline));
        assert_eq!(Isa::parse_cap("baseline"), Some(Isa::Baseline));
        assert_eq!(Isa::parse_cap("avx512"), Some(Isa::Avx512));
        assert_eq!(Isa::parse_cap("avx10"), None);
        assert!(Isa::Baseline < Isa::Avx2 && Isa::Avx2 < Isa::Avx512);
        for isa in [Isa::Baseline, Isa::Avx2, Isa::Avx512] {
            assert_eq!(Isa::from_u8(isa as u8), Some(isa));
        }
        assert_eq!(Isa::from_u8(0), None);
    }
}
