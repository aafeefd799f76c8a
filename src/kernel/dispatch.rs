//! Runtime CPU-feature dispatch for the kernels' hot loops.
//!
//! The crate is built for the baseline target (SSE2 on x86-64: 128-bit
//! vectors). [`run`] calls its closure either directly or, on an x86-64 CPU
//! with AVX2, from a `#[target_feature(enable = "avx2")]` function, into
//! which the closure (and the `#[inline(always)]` loop bodies it calls) is
//! inlined and compiled again with 256-bit vectors: twice the lanes per
//! instruction for the compute-bound sigmoid/softmax loops.
//!
//! Only AVX2, not FMA: a fused multiply-add rounds once where the portable
//! code rounds twice, so FMA would change the results. With plain AVX2 the
//! two paths are bit-identical: every loop fixes its lanes and the order of
//! its operations explicitly, and LLVM may not reassociate floating-point
//! arithmetic, so a wider vector only does the same operations at once.

#[cfg(target_arch = "x86_64")]
use std::sync::atomic::{AtomicU8, Ordering};

/// Whether the CPU has AVX2: 0 = not yet detected, 1 = no, 2 = yes.
#[cfg(target_arch = "x86_64")]
static AVX2: AtomicU8 = AtomicU8::new(0);

/// Forces the portable path (for the test that compares the two paths).
#[cfg(test)]
static FORCE_PORTABLE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes [`run`] take the portable path (`true`) or dispatch (`false`).
#[cfg(test)]
pub(crate) fn force_portable(portable: bool) {
    FORCE_PORTABLE.store(portable, std::sync::atomic::Ordering::SeqCst);
}

/// Whether AVX2 is available, detected once and cached.
#[cfg(target_arch = "x86_64")]
#[inline]
fn has_avx2() -> bool {
    #[cfg(test)]
    if FORCE_PORTABLE.load(Ordering::SeqCst) {
        return false;
    }
    match AVX2.load(Ordering::Relaxed) {
        0 => {
            let found = std::arch::is_x86_feature_detected!("avx2");
            AVX2.store(if found { 2 } else { 1 }, Ordering::Relaxed);
            found
        }
        state => state == 2,
    }
}

/// Calls `f` with the widest vector extension the CPU has (see the module
/// documentation). `f` should be an `#[inline(always)]` closure whose hot
/// loop is made of `#[inline(always)]` functions, so that the loop is
/// compiled inside the dispatched function; what is not inlined runs at
/// the baseline either way. The result is the same on every path.
#[inline(always)]
#[allow(unsafe_code)]
pub(crate) fn run<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: `avx2` only requires the CPU to support AVX2, which
        // `has_avx2` detected at run time.
        return unsafe { avx2(f) };
    }
    f()
}

/// `f()`, compiled with AVX2 enabled.
///
/// # Safety
///
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
#[target_feature(enable = "avx2")]
unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}
