//! On x86-64, the `f32` kernels run instances compiled for AVX2 when the CPU has it
//! (`safegrad::tensor::kernels::avx2`). They must give the bits of the SSE2 code, which gives
//! the device's: every kernel, over many shapes and over inputs with zeros, negative zeros,
//! infinities and `nan`s, and whole fine-tuning jobs, are run with the AVX2 instances turned
//! off and on and compared bit for bit.
//!
//! One test function: turning the instances off is global to the process, and other tests
//! running beside it would blur which code ran.

use safegrad::ops::conv::{conv1d, conv1d_grad, Conv1dShape};
use safegrad::tensor::kernels::{self as k, allow_avx2, avx2, avx2_available};

/// xorshift64: the test's own stream.
struct Stream(u64);

impl Stream {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// A value in [-2, 2), a zero in `zeros` out of 8, and with `special` a rare infinity or
    /// `nan`.
    fn value(&mut self, zeros: usize, special: bool) -> f32 {
        let r = self.next();
        match r % 64 {
            0 if special => f32::INFINITY,
            1 if special => f32::NAN,
            2 if special => f32::NEG_INFINITY,
            _ if (r >> 8) % 8 < zeros as u64 => {
                if r & (1 << 20) == 0 {
                    0.0
                } else {
                    -0.0
                }
            }
            _ => ((r >> 32) as u32 as f32 / 4_294_967_296.0) * 4.0 - 2.0,
        }
    }
    fn values(&mut self, n: usize, zeros: usize, special: bool) -> Vec<f32> {
        (0..n).map(|_| self.value(zeros, special)).collect()
    }
}

/// The bits of each value, every `nan` as one: which `nan` an operation with two `nan`
/// operands returns, and so its sign, depends on the order of the operands in the
/// instruction (x86 returns the first one's), which IEEE 754 leaves open and LLVM may swap
/// in an addition; a Cortex-M returns the default `nan`. Every other value must match.
fn bits(v: &[f32]) -> Vec<u32> {
    v.iter()
        .map(|x| {
            if x.is_nan() {
                f32::NAN.to_bits()
            } else {
                x.to_bits()
            }
        })
        .collect()
}

/// Runs `f` with the AVX2 instances off, then on, and checks that both give the same bits.
fn same_bits(what: &str, f: impl Fn() -> Vec<Vec<f32>>) {
    allow_avx2(false);
    assert!(!avx2());
    let sse2 = f();
    allow_avx2(true);
    assert!(avx2());
    let wide = f();
    assert_eq!(sse2.len(), wide.len());
    for (i, (a, b)) in sse2.iter().zip(&wide).enumerate() {
        assert_eq!(bits(a), bits(b), "{what}: output {i}, SSE2 then AVX2");
    }
}

/// Every dense kernel on one random shape.
fn dense_case(s: &mut Stream, trial: usize) {
    let rows = if trial.is_multiple_of(5) {
        32
    } else {
        1 + s.below(4)
    };
    let (inner, cols) = (1 + s.below(70), 1 + s.below(70));
    let zeros = s.below(6);
    let special = trial % 4 == 3;
    let x = s.values(rows * inner, zeros, special);
    let w = s.values(inner * cols, 0, special);
    let bias = s.values(cols, 1, false);
    let g = s.values(rows * cols, zeros, special);
    let start_a = s.values(rows * inner, 0, false);
    let start_b = s.values(inner * cols, 0, false);
    let (lr, factor) = (0.05f32, if trial.is_multiple_of(2) { 1.0 } else { 0.7 });
    let known_finite = !special && trial.is_multiple_of(3);
    let what = format!("{rows} x {inner} x {cols}, zeros {zeros}/8, special {special}");
    same_bits(&what, || {
        let mut y = vec![0.0f32; rows * cols];
        let mut y_relu = vec![0.0f32; rows * cols];
        let mut y_plain = vec![0.0f32; rows * cols];
        k::linear(&x, &w, Some(&bias), &mut y, inner, cols);
        k::linear_relu(&x, &w, Some(&bias), &mut y_relu, inner, cols);
        k::matmul(&x, &w, &mut y_plain, inner, cols);
        let mut ga = start_a.clone();
        k::add_matmul_grad_a(&g, &w, &mut ga, inner, cols);
        let mut gb_add = start_b.clone();
        k::add_matmul_grad_b(&g, &x, &mut gb_add, inner, cols);
        let mut gb_set = start_b.clone();
        k::set_matmul_grad_b(&g, &x, &mut gb_set, inner, cols);
        let xr = &x[..inner];
        let gr = &g[..cols];
        let mut outer = start_b.clone();
        k::sgd_outer(&mut outer, xr, gr, known_finite, lr, factor);
        let mut sub = start_b.clone();
        k::sub_outer(&mut sub, xr, gr, known_finite, |v| v * 0.25);
        let mut upd = start_b.clone();
        k::sgd_update(&mut upd, &w, lr, factor);
        let mut mask = vec![0.0f32; rows * cols];
        k::relu_mask(&g, &y, &mut mask);
        let mut relu_grad = y_plain.clone();
        k::add_relu_grad(&g, &y, &mut relu_grad);
        let mut sums = bias.clone();
        k::add_column_sums(&g, &mut sums);
        let mut filled = start_a.clone();
        k::fill(&mut filled, factor);
        vec![
            y,
            y_relu,
            y_plain,
            ga,
            gb_add,
            gb_set,
            outer,
            sub,
            upd,
            mask,
            relu_grad,
            sums,
            filled,
            vec![k::sum_of_squares(&x), k::sum_of_squares(&g)],
            vec![f32::from(u8::from(k::all_finite(&x)))],
        ]
    });
}

/// The convolution's forward and backward on one random geometry.
fn conv_case(s: &mut Stream, trial: usize) {
    let groups = [1, 1, 2, 4][s.below(4)];
    let c_in = groups * (1 + s.below(4));
    let c_out = groups * (1 + s.below(4));
    let kernel = 1 + s.below(9);
    let dilation = 1 + s.below(2) * s.below(3);
    let span = dilation * (kernel - 1) + 1;
    let l_in = span + s.below(60);
    let stride = 1 + s.below(3);
    let padding = s.below(kernel.min(4));
    let shape = Conv1dShape::new(c_in, l_in, c_out, kernel, stride, padding, dilation, groups);
    let special = trial % 4 == 3;
    let zeros = s.below(5);
    let x = s.values(c_in * l_in, zeros, special);
    let w = s.values(c_out * (c_in / groups) * kernel, 0, special);
    let b = s.values(c_out, 0, false);
    let g = s.values(c_out * shape.l_out, zeros, special);
    let start_dx = s.values(c_in * l_in, 0, false);
    let what = format!("conv {shape:?}, zeros {zeros}/8, special {special}");
    same_bits(&what, || {
        let mut y = vec![0.0f32; c_out * shape.l_out];
        conv1d(&shape, &x, &w, &b, &mut y);
        let mut dx = start_dx.clone();
        let mut dw = vec![0.0f32; w.len()];
        let mut db = vec![0.0f32; c_out];
        conv1d_grad(&shape, &x, &w, &g, &mut dx, &mut dw, &mut db);
        vec![y, dx, dw, db]
    });
}

/// Whole fine-tuning jobs: the MLP on its features and the CNN on raw windows, pre-training
/// (Adam) and fine-tuning (SGD, the gate): the same parameters, bit for bit.
fn jobs() {
    use host_sim::finetune::{run, FinetuneConfig, MotionNet};
    let dir = host_sim::data::default_dir();
    for model in [MotionNet::Mlp, MotionNet::Cnn] {
        let config = FinetuneConfig {
            pretrain_epochs: 6,
            ..FinetuneConfig::for_model(model)
        };
        let mut crcs = Vec::new();
        for allowed in [false, true] {
            allow_avx2(allowed);
            let report = run(&dir, &config, &mut |_| {}).expect("the job");
            crcs.push((
                report.finetuned_crc32(),
                bits(&[
                    report.pretrain_accuracy as f32,
                    report.shifted_accuracy_after as f32,
                ]),
                report.pretrained_checkpoint.clone(),
            ));
        }
        assert_eq!(crcs[0], crcs[1], "{model:?}: SSE2 then AVX2");
    }
}

#[test]
fn the_avx2_instances_give_the_bits_of_the_sse2_code() {
    if !avx2_available() {
        eprintln!("this CPU has no AVX2 (or is not x86-64): nothing to compare");
        assert!(!avx2());
        return;
    }
    let mut s = Stream(0x9E37_79B9_7F4A_7C15);
    for trial in 0..300 {
        dense_case(&mut s, trial);
    }
    for trial in 0..300 {
        conv_case(&mut s, trial);
    }
    jobs();
    allow_avx2(true);
}
