//! The AVX2 instances of the `f32` kernels on x86-64, chosen at run time.
//!
//! The default x86-64 target has SSE2's 4-lane registers. On a CPU with AVX2, the `f32`
//! kernels run instances of the same code compiled for AVX2 (8 lanes), chosen when they are
//! called: the CPU is asked once (the `cpufeatures` crate: CPUID and the OS's saved
//! registers) and the answer cached. Those instances are built from the same bodies with no other change: FMA is
//! not enabled, so no multiply and add are fused, and LLVM does not reorder floating-point
//! sums, so each output's terms are added in the order its kernel documents and the results
//! are the bits of the SSE2 instances and of the Cortex-M (which `nan` an operation with two
//! `nan` operands returns may differ: x86 returns the first operand's, and LLVM may swap the
//! operands of an addition). `tests/tests/wide_simd.rs` checks that, kernel by kernel and
//! over whole fine-tuning jobs.
//!
//! The kernels with AVX2 instances: `linear` and `linear_relu` on two rows or more,
//! `add_matmul_grad_b`, `set_matmul_grad_b`, `sgd_update`, `relu_mask`, `add_relu_grad`,
//! `add_column_sums`, `fill`, `sum_of_squares`, `all_finite`, and the convolution's
//! forward and backward. The others (a single row's forward pass, `add_matmul_grad_a`,
//! `sgd_outer`) run the SSE2 code, which was as fast or faster (`BENCHMARKS.md`).
//!
//! [`allow_avx2`] turns the AVX2 instances off and on, for benchmarks and tests that compare
//! both; results are the same either way. On other targets there are no such instances.

use core::sync::atomic::{AtomicBool, Ordering};

/// Whether the AVX2 instances may run (they do if the CPU has AVX2).
static ALLOWED: AtomicBool = AtomicBool::new(true);

#[cfg(target_arch = "x86_64")]
cpufeatures::new!(cpuid_avx2, "avx2");

/// `true` when this CPU can run the AVX2 instances (x86-64 with AVX2, enabled by the OS).
///
/// ```
/// use safegrad::tensor::kernels::{avx2, avx2_available};
///
/// assert!(avx2_available() || !avx2());
/// ```
#[inline]
pub fn avx2_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        cpuid_avx2::get()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `true` when the `f32` kernels run their AVX2 instances: the CPU has AVX2 and
/// [`allow_avx2`] has not turned them off.
#[inline]
pub fn avx2() -> bool {
    cfg!(target_arch = "x86_64") && ALLOWED.load(Ordering::Relaxed) && avx2_available()
}

/// Allows (the default) or forbids the AVX2 instances, for the whole program. Results are the
/// same bits either way; benchmarks use it to time both, tests to compare them.
///
/// ```
/// use safegrad::tensor::kernels::{allow_avx2, avx2, avx2_available, linear};
///
/// // Two rows of three inputs (a single row runs the SSE2 code either way).
/// let x: [f32; 6] = core::array::from_fn(|i| i as f32 * 0.37 - 1.0);
/// let w: [f32; 3 * 20] = core::array::from_fn(|i| (i as f32 * 0.11).sin());
/// let (mut sse2, mut wide) = ([0.0f32; 40], [0.0f32; 40]);
/// allow_avx2(false);
/// assert!(!avx2());
/// linear(&x, &w, None, &mut sse2, 3, 20);
/// allow_avx2(true);
/// assert_eq!(avx2(), avx2_available());
/// linear(&x, &w, None, &mut wide, 3, 20);
/// assert_eq!(sse2.map(f32::to_bits), wide.map(f32::to_bits));
/// ```
pub fn allow_avx2(allowed: bool) {
    ALLOWED.store(allowed, Ordering::Relaxed);
}

/// Defines the `f32` instance `$name` of a kernel: `#[inline(never)]`, running `$body`; on
/// x86-64 it runs `$body` compiled for AVX2 when [`avx2`] says so.
macro_rules! instance {
    ($(#[$m:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? = $body:expr;) => {
        $(#[$m])*
        #[inline(never)]
        pub(crate) fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                /// The body compiled for AVX2 (without FMA: the same operations in the same
                /// order, so the same bits).
                #[target_feature(enable = "avx2")]
                unsafe fn with_avx2($($arg: $ty),*) $(-> $ret)? {
                    $body
                }
                if $crate::tensor::kernels::avx2() {
                    // SAFETY: `avx2` is true only on a CPU with AVX2 whose OS saves the YMM
                    // registers.
                    return unsafe { with_avx2($($arg),*) };
                }
            }
            $body
        }
    };
}
pub(crate) use instance;
