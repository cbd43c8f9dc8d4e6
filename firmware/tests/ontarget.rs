//! Kernel, gradient and format tests run on the emulated Cortex-M4F (`cargo xtask
//! qemu-test`), against the same closed forms and published values as the host tests.
#![no_std]
#![no_main]

// The runtime (vector table, reset handler), the critical section, and the board: the
// logger, the panic and fault handlers, the interrupt vectors.
use cortex_m as _;
use cortex_m_rt as _;
use firmware as _;

#[defmt_test::tests]
mod tests {
    use motion::features::imu_features;
    use motion::wire::cobs_encode;
    use safegrad::checkpoint;
    use safegrad::crc32::CRC32;
    use safegrad::ops;
    use safegrad::{Cap, Tape, Tensor};

    #[init]
    fn init() {
        // IEEE arithmetic, as the application sets it.
        // SAFETY: FPSCR = 0 is a valid mode (round to nearest, no flush-to-zero).
        unsafe { core::arch::asm!("vmsr fpscr, {}", in(reg) 0u32) };
    }

    #[test]
    fn int8_dot_products_with_smlad_match_the_plain_loop() {
        use safegrad::quant::{dot_i8, qlinear, Requant};
        // Every length from 0 to 40 (the four-at-a-time body and each tail), extremes
        // included, against the sum written out here.
        let mut a = [0i8; 40];
        let mut b = [0i8; 40];
        let mut state = 12345u32;
        for (x, y) in a.iter_mut().zip(b.iter_mut()) {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            *x = (state >> 24) as i8;
            *y = (state >> 16) as i8;
        }
        a[0] = -128;
        b[0] = -128;
        a[5] = 127;
        b[5] = -128;
        for n in 0..=40 {
            let mut want = 0i32;
            for i in 0..n {
                want += i32::from(a[i]) * i32::from(b[i]);
            }
            defmt::assert_eq!(dot_i8(&a[..n], &b[..n]), want);
        }
        // A layer through it: the same codes as the host computes (tests/tests/quant.rs
        // checks the host's against the definition).
        let one = Requant::from_scale(1.0).unwrap();
        let mut y = [0i8; 2];
        qlinear(
            &[2, 1, -3, 4, 5],
            &[3, -4, 1, 1, 1, -1, 0, 0, 0, 0],
            &[0, 0],
            &[one, one],
            0,
            -128,
            &mut y,
        );
        defmt::assert_eq!(y, [2 * 3 - 4 - 3 + 4 + 5, -2]);
    }

    #[test]
    fn int8_layers_two_rows_at_a_time_match_the_plain_loop() {
        use safegrad::quant::{qlinear, Requant};
        // Every input length from 1 to 40 (the widened pairs of groups, an odd group, each
        // tail) and 1 to 3 outputs (a pair of rows and one alone), against the sums written
        // out here.
        let mut x = [0i8; 40];
        let mut w = [0i8; 120];
        let mut state = 777u32;
        for v in x.iter_mut().chain(w.iter_mut()) {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            *v = (state >> 24) as i8;
        }
        x[3] = -128;
        w[3] = -128;
        let r = Requant::from_scale(0.001).unwrap();
        for n in 1..=40 {
            for outputs in 1..=3 {
                let bias = [100, -200, 300];
                let mut y = [0i8; 3];
                qlinear(
                    &x[..n],
                    &w[..n * outputs],
                    &bias[..outputs],
                    &[r; 3][..outputs],
                    -3,
                    -128,
                    &mut y[..outputs],
                );
                for o in 0..outputs {
                    let mut acc = bias[o];
                    for i in 0..n {
                        acc += i32::from(x[i]) * i32::from(w[o * n + i]);
                    }
                    let want = (r.apply(acc) - 3).clamp(-128, 127) as i8;
                    defmt::assert_eq!(y[o], want);
                }
            }
        }
    }

    #[test]
    fn matmul_transpose_and_reductions_are_exact_on_small_integers() {
        let a = Tensor::new([[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]]);
        let w = Tensor::new([[1.0f32, 0.0], [0.0, 1.0], [1.0, 1.0]]);
        assert_eq!(a.matmul(&w), Tensor::new([[4.0, 5.0], [10.0, 11.0]]));
        assert_eq!(a.transpose().get(2, 1), Some(6.0));
        assert_eq!(a.sum(), 21.0);
        assert_eq!(a.mean(), 3.5);
        assert_eq!(a.max(), 6.0);
    }

    #[test]
    fn softmax_cross_entropy_at_plus_minus_1e4() {
        let mut t = Tape::<f32, Cap<8, 32>>::new();
        let z = t.variable(&Tensor::new([[1e4f32, 1e4]])).unwrap();
        let loss = t.softmax_cross_entropy(z, &[0]).unwrap();
        t.backward(loss).unwrap();
        let l = t.scalar(loss).unwrap();
        assert!((l - core::f32::consts::LN_2).abs() < 1e-6);
        assert_eq!(t.grad(z).unwrap(), Tensor::new([[-0.5, 0.5]]));
        assert_eq!(ops::softmax_cross_entropy(&[1e4f32, -1e4], 1), Some(2e4));
        assert_eq!(ops::softmax_cross_entropy(&[1e4f32, -1e4], 0), Some(0.0));
    }

    #[test]
    fn gradients_match_closed_forms() {
        // d/dx (x^2 + 3x) at 2 = 7; sigmoid'(0) = 1/4; tanh'(0) = 1.
        let mut t = Tape::<f32, Cap<16, 32>>::new();
        let x = t.variable(&Tensor::new([[2.0f32]])).unwrap();
        let sq = t.mul(x, x).unwrap();
        let lin = t.scale(x, 3.0).unwrap();
        let y = t.add(sq, lin).unwrap();
        t.backward(y).unwrap();
        assert_eq!(t.grad(x).unwrap(), Tensor::new([[7.0]]));
        let mut t = Tape::<f32, Cap<16, 32>>::new();
        let x = t.variable(&Tensor::new([[0.0f32, 0.0]])).unwrap();
        let s = t.sigmoid(x).unwrap();
        let th = t.tanh(x).unwrap();
        let both = t.add(s, th).unwrap();
        let y = t.sum(both).unwrap();
        t.backward(y).unwrap();
        assert_eq!(t.grad(x).unwrap(), Tensor::new([[1.25, 1.25]]));
    }

    #[test]
    fn bugzoo_cases_hold_on_the_device() {
        // PyTorch's note: select(div != 0, x / div, 0) with x = [1, 1], div = [0, 1];
        // PyTorch documents [nan, 1], strong zeros give [0, 1].
        let mut t = Tape::<f32, Cap<16, 32>>::new();
        let x = t.variable(&Tensor::new([[1.0f32, 1.0]])).unwrap();
        let div = t.constant(&Tensor::new([[0.0f32, 1.0]])).unwrap();
        let y = t.div(x, div).unwrap();
        let keep = t.not_zero(div).unwrap();
        let zero = t.constant(&Tensor::zeros()).unwrap();
        let out = t.select(keep, y, zero).unwrap();
        let loss = t.sum(out).unwrap();
        t.backward(loss).unwrap();
        assert_eq!(t.grad(x).unwrap(), Tensor::new([[0.0, 1.0]]));
        // mask(0, safe_div(1e30, 0)): exactly zero gradients.
        let mut t = Tape::<f32, Cap<16, 32>>::new();
        let w = t.constant(&Tensor::new([[0.0f32]])).unwrap();
        let num = t.variable(&Tensor::new([[1e30f32]])).unwrap();
        let den = t.variable(&Tensor::new([[0.0f32]])).unwrap();
        let q = t.safe_div(num, den).unwrap();
        let out = t.mask(w, q).unwrap();
        let loss = t.sum(out).unwrap();
        t.backward(loss).unwrap();
        assert_eq!(t.grad(num).unwrap(), Tensor::new([[0.0]]));
        assert_eq!(t.grad(den).unwrap(), Tensor::new([[0.0]]));
        // safe_div at -eps divides by zero; the signed form does not.
        assert!(ops::safe_div(1.0f32, -1e-6, 1e-6).is_infinite());
        assert!(ops::safe_div_signed(1.0f32, -1e-6, 1e-6).is_finite());
    }

    #[test]
    fn crc32_cobs_and_checkpoints() {
        assert_eq!(CRC32.checksum(b"123456789"), 0xCBF4_3926);
        let mut out = [0u8; 8];
        let n = cobs_encode(&[0x11, 0x22, 0x00, 0x33], &mut out).unwrap();
        assert_eq!(&out[..n], &[0x03, 0x11, 0x22, 0x02, 0x33, 0x00]);
        let mut t = Tape::<f32, Cap<4, 16>>::new();
        let w = t.parameter(&Tensor::new([[1.5f32, -2.0]])).unwrap();
        let mut buf = [0u8; 64];
        let len = checkpoint::save(&t, &mut buf).unwrap();
        t.set_parameter(w, &Tensor::zeros()).unwrap();
        checkpoint::load(&mut t, &buf[..len]).unwrap();
        assert_eq!(t.value(w).unwrap(), Tensor::new([[1.5, -2.0]]));
        buf[17] ^= 0x04;
        assert!(checkpoint::load(&mut t, &buf[..len]).is_err());
    }

    #[test]
    fn features_of_a_constant_window() {
        let mut w = [[0.0f32; 8]; 6];
        w[2] = [9.5; 8];
        let f = imu_features(&w).unwrap();
        assert_eq!(f.get(0, 4), Some(9.5));
        assert_eq!(f.get(0, 5), Some(0.0));
        assert_eq!(f.get(0, 12), Some(9.5));
        w[0][3] = f32::NAN;
        assert!(imu_features(&w).is_err());
    }
}
