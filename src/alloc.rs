//! Large buffers backed by transparent huge pages, as NumPy allocates its
//! arrays.
//!
//! A fresh buffer costs one page fault per 4 KiB page at its first touch:
//! the kernel takes a page, charges it, zeroes it and maps it. On the
//! benchmark machine (a KVM guest) that came to about 3 µs per page, so
//! faulting in the 32 MiB output of a 2048² distance transform took about
//! as long as the transform itself (12.9–13.5 ns per pixel in all, against
//! 6.1–7.2 with this module), and the 64 MiB gradient of `loss_and_grad` at
//! 2^24 `f32` elements longer than the loss (see BENCHMARKS.md). With 2 MiB
//! pages the faults are 512 times fewer, and so are the page translations
//! of a pass over the buffer: at 2^24 `f32` elements, on inputs and
//! gradient from [`zeros`] rather than from `Array::zeros`, BCE
//! `loss_grad` ran 1–15 % faster, Dice on logits 11–20 % and the
//! read-write floor 6–18 % (median times, both kinds of arrays in one
//! process and the calls alternating, four rounds).
//!
//! So on Linux, a buffer of [`HUGE_MIN`] bytes or more is advised
//! `MADV_HUGEPAGE` before its first touch, as NumPy (since 1.16) does for
//! its arrays of 4 MiB or more. The advice changes neither the contents nor
//! the validity of the memory; the kernel ignores it where transparent huge
//! pages are disabled, and a buffer it cannot back with huge pages gets the
//! usual small ones. Elsewhere the functions here allocate as usual.
//!
//! The crate allocates its own large outputs this way. [`zeros`] lets a
//! caller do the same for the arrays it passes in: large inputs and
//! preallocated gradients, say, in a data pipeline or a training loop.
//!
//! As NumPy's `NUMPY_MADVISE_HUGEPAGE=0`, the environment variable
//! `SEGLOSS_MADVISE_HUGEPAGE=0` turns the advice off (read once).
//!
//! ```
//! use ndarray::Array4;
//!
//! // 4 × 1 × 1024 × 1024 f32 = 16 MiB: on huge pages where the kernel
//! // allows, zeros as `Array4::zeros` gives.
//! let mut logits: Array4<f32> = segloss::alloc::zeros((4, 1, 1024, 1024));
//! assert!(logits.iter().all(|&v| v == 0.0));
//! logits.fill(0.5);
//! ```

use std::sync::OnceLock;

use ndarray::{Array, ShapeBuilder};
use num_traits::Zero;

/// The smallest buffer, in bytes, advised to use huge pages (NumPy's
/// threshold).
pub const HUGE_MIN: usize = 4 << 20;

/// Advises the kernel to back the whole pages of `bytes` bytes from `start`
/// with transparent huge pages. Returns whether the advice was given and
/// accepted (`false` below [`HUGE_MIN`] and off Linux).
fn advise(start: *const u8, bytes: usize) -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    bytes >= HUGE_MIN
        && *ENABLED.get_or_init(|| enabled_by(std::env::var("SEGLOSS_MADVISE_HUGEPAGE").ok()))
        && advise_pages(start, bytes)
}

/// Whether the advice is on for this value of `SEGLOSS_MADVISE_HUGEPAGE`:
/// unless it is `0` (NumPy's convention).
fn enabled_by(value: Option<String>) -> bool {
    value.is_none_or(|v| v.trim() != "0")
}

/// [`advise`] without the threshold: `madvise(MADV_HUGEPAGE)` on the whole
/// pages of the range.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn advise_pages(start: *const u8, bytes: usize) -> bool {
    // SAFETY: `sysconf` only reads a configuration value of the system.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let Some(page) = usize::try_from(page).ok().filter(|p| p.is_power_of_two()) else {
        return false;
    };
    // `madvise` wants a page-aligned start; the partial pages at either end
    // are left out.
    let Some(end) = (start as usize).checked_add(bytes) else {
        return false;
    };
    let Some(first) = (start as usize).checked_next_multiple_of(page) else {
        return false;
    };
    let last = end - end % page;
    if last <= first {
        return false;
    }
    // SAFETY: `[first, last)` lies inside one live allocation of ours (the
    // caller's buffer), and `MADV_HUGEPAGE` only tells the kernel how to
    // back those pages: it changes neither their contents nor whether they
    // may be accessed, so no Rust reference or value is affected.
    let status = unsafe {
        libc::madvise(
            first as *mut libc::c_void,
            last - first,
            libc::MADV_HUGEPAGE,
        )
    };
    status == 0
}

#[cfg(not(target_os = "linux"))]
fn advise_pages(_start: *const u8, _bytes: usize) -> bool {
    false
}

/// [`advise`] on the memory of `buffer`.
fn advise_slice<T>(buffer: &[T]) -> bool {
    advise(buffer.as_ptr().cast(), size_of_val(buffer))
}

/// `vec![value; n]`, advised before it is filled.
pub(crate) fn filled<T: Clone>(value: T, n: usize) -> Vec<T> {
    let mut v = with_capacity(n);
    v.resize(n, value);
    v
}

/// `Vec::with_capacity(n)`, its capacity advised (for a buffer filled by
/// `push`).
pub(crate) fn with_capacity<T>(n: usize) -> Vec<T> {
    let mut v = Vec::with_capacity(n);
    let spare = v.spare_capacity_mut();
    advise(spare.as_ptr().cast(), size_of_val(spare));
    v
}

/// `vec![T::zero(); n]`: zeroed memory from the allocator (for a large
/// buffer, fresh pages that nothing has touched yet), then advised.
pub(crate) fn zeros_vec<T: Clone + Zero>(n: usize) -> Vec<T> {
    let v = vec![T::zero(); n];
    advise_slice(&v);
    v
}

/// `Array::zeros(shape)`, its memory advised to use transparent huge pages
/// when it holds [`HUGE_MIN`] bytes or more (see the [module](self)).
///
/// The memory is fresh from the allocator and untouched, so the pages that
/// writing to it faults in follow the advice.
pub fn zeros<A, Sh>(shape: Sh) -> Array<A, Sh::Dim>
where
    A: Clone + Zero,
    Sh: ShapeBuilder,
{
    let a = Array::zeros(shape);
    if let Some(data) = a.as_slice_memory_order() {
        advise_slice(data);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the kernel has transparent huge pages built in: then it
    /// takes `MADV_HUGEPAGE` (whether or not they are enabled, which only
    /// decides what it does with the advice).
    fn kernel_has_huge_pages() -> bool {
        std::path::Path::new("/sys/kernel/mm/transparent_hugepage/enabled").exists()
    }

    #[test]
    fn large_buffers_are_advised_where_the_kernel_allows() {
        let n = HUGE_MIN / size_of::<f64>() + 3;
        let v: Vec<f64> = zeros_vec(n);
        let advised = advise_slice(&v);
        if !cfg!(target_os = "linux") {
            assert!(!advised);
        } else if kernel_has_huge_pages()
            && enabled_by(std::env::var("SEGLOSS_MADVISE_HUGEPAGE").ok())
        {
            assert!(advised, "madvise refused a buffer of {n} f64");
        }
        assert!(v.iter().all(|&x| x == 0.0));
        // Small buffers are left alone.
        assert!(!advise_slice(&v[..1000]));
    }

    #[test]
    fn only_zero_turns_the_advice_off() {
        assert!(enabled_by(None));
        assert!(enabled_by(Some("1".into())));
        assert!(enabled_by(Some(String::new())));
        assert!(!enabled_by(Some("0".into())));
        assert!(!enabled_by(Some(" 0\n".into())));
    }

    #[test]
    fn the_buffers_hold_what_they_are_asked_for() {
        let n = HUGE_MIN / size_of::<u32>() * 2 + 5;
        let v = filled(u32::MAX, n);
        assert_eq!(v.len(), n);
        assert!(v.iter().all(|&x| x == u32::MAX));
        let v: Vec<u8> = with_capacity(n);
        assert!(v.is_empty() && v.capacity() >= n);
        let a: Array<f32, _> = zeros(ndarray::Ix2(3, HUGE_MIN / 4));
        assert_eq!(a.shape(), [3, HUGE_MIN / 4]);
        assert!(a.iter().all(|&x| x == 0.0));
        // Any shape `Array::zeros` takes, column-major ones too.
        let f: Array<f64, _> = zeros((3, HUGE_MIN / 8).f());
        assert_eq!(f.shape(), [3, HUGE_MIN / 8]);
        assert!(f.t().is_standard_layout() && f.iter().all(|&x| x == 0.0));
        assert!(filled(1.5_f64, 0).is_empty());
    }
}
