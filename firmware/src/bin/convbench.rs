//! The device's convolution benchmark: the two convolutions of `motion::model::MotionCnn`
//! (6 x 100 to 16 x 48 and 16 x 48 to 16 x 22, 5 taps at stride 2), forward and backward,
//! with safegrad's kernels (`safegrad::ops::conv`) and written by hand in plain loops
//! (`bench_steps::conv`), in the same firmware, timed with SysTick. Under QEMU with
//! `-icount`, SysTick advances with executed instructions (`cargo xtask bench-device`).
//!
//! Then the `int8` kernels (`safegrad::quant`): the MLP's hidden layers and a wider one
//! (`qlinear`), and the CNN's second convolution (`qconv1d`), against the same sums written
//! as plain loops here; both must give the same codes.
#![no_std]
#![no_main]

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::entry;
// The board: the logger, the panic and fault handlers.
use firmware as _;
use static_cell::ConstStaticCell;

use bench_steps::conv::{self as plain, Geometry};
use safegrad::ops::conv::{conv1d, conv1d_grad, Conv1dShape};
use safegrad::quant::{qconv1d, qlinear, requantize, Requant};
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

/// Room for the int8 benchmarks' tensors.
struct QBuffers {
    x: [i8; 768],
    w: [i8; 16384],
    bias: [i32; 64],
    y: [[i8; 768]; 2],
}

static QBUFFERS: ConstStaticCell<QBuffers> = ConstStaticCell::new(QBuffers {
    x: [0; 768],
    w: [0; 16384],
    bias: [0; 64],
    y: [[0; 768]; 2],
});

/// The hand-written fully connected layer: each output's sum of products, then the same
/// requantisation.
fn plain_qlinear(x: &[i8], w: &[i8], bias: &[i32], r: Requant, y: &mut [i8]) {
    let n = x.len();
    for (o, out) in y.iter_mut().enumerate() {
        let mut acc = bias[o];
        for i in 0..n {
            acc += i32::from(x[i]) * i32::from(w[o * n + i]);
        }
        *out = requantize(acc, r, 0, -128);
    }
}

/// The hand-written convolution (no padding, dilation 1, one group).
fn plain_qconv(
    s: &Conv1dShape,
    x: &[i8],
    zp: i32,
    w: &[i8],
    bias: &[i32],
    r: Requant,
    y: &mut [i8],
) {
    for c in 0..s.c_out {
        for t in 0..s.l_out {
            let mut acc = bias[c];
            for i in 0..s.c_in {
                for k in 0..s.kernel {
                    let xv = i32::from(x[i * s.l_in + t * s.stride + k]) - zp;
                    acc += i32::from(w[(c * s.c_in + i) * s.kernel + k]) * xv;
                }
            }
            y[c * s.l_out + t] = requantize(acc, r, 0, -128);
        }
    }
}

/// Times the int8 kernels against the plain loops; exits with 1 if they disagree.
fn qbench(b: &mut QBuffers) {
    let mut rng = SplitMix64::seed_from_u64(8);
    for v in b.x.iter_mut().chain(b.w.iter_mut()) {
        *v = rng.uniform(-128.0, 127.0) as i8;
    }
    for v in b.bias.iter_mut() {
        *v = rng.uniform(-2000.0, 2000.0) as i32;
    }
    let r = Requant::from_scale(0.004).unwrap_or_default();
    let requant = [r; 64];
    for (name, inputs, outputs) in [
        ("linear-16-32", 16, 32),
        ("linear-32-32", 32, 32),
        ("linear-256-64", 256, 64),
    ] {
        let (x, w, bias) = (&b.x[..inputs], &b.w[..inputs * outputs], &b.bias[..outputs]);
        let [y0, y1] = &mut b.y;
        let base = ticks(|| plain_qlinear(x, w, bias, r, &mut y0[..outputs]));
        let safe = ticks(|| qlinear(x, w, bias, &requant[..outputs], 0, -128, &mut y1[..outputs]));
        if y0[..outputs] != y1[..outputs] {
            defmt::error!("int8 bench: {=str}: the outputs differ", name);
            exit(1)
        }
        defmt::info!(
            "int8 bench: {=str} macs {=usize} baseline {=u32} safegrad {=u32} (ticks per call)",
            name,
            inputs * outputs,
            base,
            safe
        );
    }
    for (name, s) in [("conv1", &CONV1), ("conv2", &CONV2)] {
        let (x, w, bias) = (
            &b.x[..s.c_in * s.l_in],
            &b.w[..s.weights()],
            &b.bias[..s.c_out],
        );
        let ny = s.c_out * s.l_out;
        let [y0, y1] = &mut b.y;
        let base = ticks(|| plain_qconv(s, x, 3, w, bias, r, &mut y0[..ny]));
        let safe = ticks(|| {
            qconv1d(
                s,
                x,
                3,
                w,
                bias,
                &requant[..s.c_out],
                0,
                -128,
                &mut y1[..ny],
            )
        });
        if y0[..ny] != y1[..ny] {
            defmt::error!("int8 bench: {=str}: the outputs differ", name);
            exit(1)
        }
        defmt::info!(
            "int8 bench: {=str} macs {=usize} baseline {=u32} safegrad {=u32} (ticks per call)",
            name,
            s.macs(),
            base,
            safe
        );
    }
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
    qbench(QBUFFERS.take());
    exit(0)
}
