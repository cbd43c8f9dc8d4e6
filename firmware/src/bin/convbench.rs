//! The device's convolution benchmark: the two convolutions of `motion::model::MotionCnn`
//! (6 x 100 to 16 x 48 and 16 x 48 to 16 x 22, 5 taps at stride 2), forward and backward,
//! with safegrad's kernels (`safegrad::ops::conv`) and written by hand in plain loops
//! (`bench_steps::conv`), in the same firmware, timed with SysTick. Under QEMU with
//! `-icount`, SysTick advances with executed instructions (`cargo xtask bench-device`).
#![no_std]
#![no_main]

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::entry;
// The board: the logger, the panic and fault handlers.
use firmware as _;
use static_cell::ConstStaticCell;

use bench_steps::conv::{self as plain, Geometry};
use safegrad::ops::conv::{conv1d, conv1d_grad, Conv1dShape};
use safegrad::rng::{Draw, SeedableRng, SplitMix64};

/// Calls of each kernel per measurement.
const REPS: u32 = 4;

/// Room for either convolution's tensors.
struct Buffers {
    x: [f32; 768],
    w: [f32; 1280],
    b: [f32; 16],
    gy: [f32; 768],
    y: [[f32; 768]; 2],
    dx: [[f32; 768]; 2],
    dw: [[f32; 1280]; 2],
    db: [[f32; 16]; 2],
}

static BUFFERS: ConstStaticCell<Buffers> = ConstStaticCell::new(Buffers {
    x: [0.0; 768],
    w: [0.0; 1280],
    b: [0.0; 16],
    gy: [0.0; 768],
    y: [[0.0; 768]; 2],
    dx: [[0.0; 768]; 2],
    dw: [[0.0; 1280]; 2],
    db: [[0.0; 16]; 2],
});

/// SysTick's current value; it counts down from its reload value.
fn systick() -> u32 {
    cortex_m::peripheral::SYST::get_current()
}

/// Ticks of [`REPS`] calls of `f`, per call.
fn ticks(mut f: impl FnMut()) -> u32 {
    let start = systick();
    for _ in 0..REPS {
        f();
    }
    let end = systick();
    (start.wrapping_sub(end) & 0x00FF_FFFF) / REPS
}

fn exit(code: i32) -> ! {
    semihosting::process::exit(code)
}

/// Times one convolution both ways; exits with 1 if they disagree.
fn bench(name: &str, shape: &'static Conv1dShape, b: &mut Buffers) {
    let geometry = Geometry {
        c_in: shape.c_in,
        l_in: shape.l_in,
        c_out: shape.c_out,
        l_out: shape.l_out,
        kernel: shape.kernel,
        stride: shape.stride,
        padding: shape.padding,
    };
    let mut rng = SplitMix64::seed_from_u64(shape.macs() as u64);
    let (nx, nw, ny) = (
        shape.c_in * shape.l_in,
        shape.weights(),
        shape.c_out * shape.l_out,
    );
    for v in
        b.x.iter_mut()
            .chain(b.w.iter_mut())
            .chain(b.b.iter_mut())
            .chain(b.gy.iter_mut())
    {
        *v = rng.uniform(-1.0, 1.0) as f32;
    }
    let (x, w, bias, gy) = (&b.x[..nx], &b.w[..nw], &b.b[..shape.c_out], &b.gy[..ny]);
    let [y0, y1] = &mut b.y;
    let fwd_base = ticks(|| plain::forward(&geometry, x, w, bias, &mut y0[..ny]));
    let fwd_safe = ticks(|| conv1d(shape, x, w, bias, &mut y1[..ny]));
    if y0[..ny] != y1[..ny] {
        defmt::error!("conv bench: {=str}: the forward passes differ", name);
        exit(1)
    }
    let [dx0, dx1] = &mut b.dx;
    let [dw0, dw1] = &mut b.dw;
    let [db0, db1] = &mut b.db;
    let bwd_base = ticks(|| {
        plain::backward(
            &geometry,
            x,
            w,
            gy,
            &mut dx0[..nx],
            &mut dw0[..nw],
            &mut db0[..shape.c_out],
        )
    });
    let bwd_safe = ticks(|| {
        conv1d_grad(
            shape,
            x,
            w,
            gy,
            &mut dx1[..nx],
            &mut dw1[..nw],
            &mut db1[..shape.c_out],
        )
    });
    let close = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .all(|(p, q)| (p - q).abs() <= 1e-4 * p.abs().max(1.0))
    };
    if !close(&dx0[..nx], &dx1[..nx])
        || !close(&dw0[..nw], &dw1[..nw])
        || !close(&db0[..shape.c_out], &db1[..shape.c_out])
    {
        defmt::error!("conv bench: {=str}: the backward passes differ", name);
        exit(1)
    }
    defmt::info!(
        "conv bench: {=str} macs {=usize} forward baseline {=u32} safegrad {=u32} backward baseline {=u32} safegrad {=u32} (ticks per call)",
        name,
        shape.macs(),
        fwd_base,
        fwd_safe,
        bwd_base,
        bwd_safe
    );
}

static CONV1: Conv1dShape = Conv1dShape::new(6, 100, 16, 5, 2, 0, 1, 1);
static CONV2: Conv1dShape = Conv1dShape::new(16, 48, 16, 5, 2, 0, 1, 1);

#[entry]
fn main() -> ! {
    // SAFETY: FPSCR = 0 is IEEE mode (no flush-to-zero, no default NaN).
    unsafe { core::arch::asm!("vmsr fpscr, {}", in(reg) 0u32) };
    let Some(mut p) = cortex_m::Peripherals::take() else {
        exit(1)
    };
    p.SYST.set_clock_source(SystClkSource::Core);
    p.SYST.set_reload(0x00FF_FFFF);
    p.SYST.clear_current();
    p.SYST.enable_counter();
    let buffers = BUFFERS.take();
    bench("conv1", &CONV1, buffers);
    bench("conv2", &CONV2, buffers);
    exit(0)
}
