//! Shared helpers: the driver over `embedded-hal-mock`'s I²C mock, the transactions the
//! datasheet prescribes, written out byte for byte, and a float comparison.
//!
//! Register addresses and values are restated here from the register map (RM-MPU-6000A-00)
//! rather than taken from the crate, so that a wrong constant in the crate fails the tests.

// Each test file uses a different subset of these helpers.
#![allow(dead_code)]

use embedded_hal_mock::eh1::i2c::{Mock, Transaction};
use mpu6050::{AccelRange, Address, Config, GyroRange, Mpu6050};

/// Bus address with AD0 low.
pub const ADDR: u8 = 0x68;
/// Bus address with AD0 high.
pub const ADDR_AD0_HIGH: u8 = 0x69;

/// Register addresses (RM §3).
pub struct Register;

impl Register {
    pub const SMPLRT_DIV: u8 = 0x19;
    pub const CONFIG: u8 = 0x1A;
    pub const GYRO_CONFIG: u8 = 0x1B;
    pub const ACCEL_CONFIG: u8 = 0x1C;
    pub const ACCEL_XOUT_H: u8 = 0x3B;
    pub const PWR_MGMT_1: u8 = 0x6B;
    pub const WHO_AM_I: u8 = 0x75;
}

/// `WHO_AM_I` of an MPU-6050.
pub const MPU6050_ID: u8 = 0x68;
/// `PWR_MGMT_1` awake (`SLEEP` = 0) with `CLKSEL` = 1 (PLL, X gyroscope).
pub const WAKE_PLL_X: u8 = 0x01;

/// A driver at AD0 low over a mock expecting `transactions`.
pub fn new_imu(transactions: &[Transaction]) -> Mpu6050<Mock> {
    Mpu6050::new(Mock::new(transactions), Address::Ad0Low)
}

/// Releases the bus and checks that every expected transaction happened.
pub fn destroy(imu: Mpu6050<Mock>) {
    imu.release().done();
}

/// The `WHO_AM_I` read, answered with `id`.
pub fn who_am_i(addr: u8, id: u8) -> Transaction {
    Transaction::write_read(addr, vec![Register::WHO_AM_I], vec![id])
}

/// One register write.
pub fn write(addr: u8, register: u8, value: u8) -> Transaction {
    Transaction::write(addr, vec![register, value])
}

/// The transactions a successful `init` makes, in the order the driver documents.
pub fn init_transactions(addr: u8, div: u8, config: u8, gyro: u8, accel: u8) -> Vec<Transaction> {
    vec![
        who_am_i(addr, MPU6050_ID),
        write(addr, Register::PWR_MGMT_1, WAKE_PLL_X),
        write(addr, Register::SMPLRT_DIV, div),
        write(addr, Register::CONFIG, config),
        write(addr, Register::GYRO_CONFIG, gyro),
        write(addr, Register::ACCEL_CONFIG, accel),
    ]
}

/// `init` with [`Config::default`]: `SMPLRT_DIV` 99, `DLPF_CFG` 6, `FS_SEL` 3 (0x18),
/// `AFS_SEL` 2 (0x10).
pub fn default_init_transactions(addr: u8) -> Vec<Transaction> {
    init_transactions(addr, 99, 0x06, 0x18, 0x10)
}

/// The 14-byte measurement burst from `ACCEL_XOUT_H`, answered with `bytes`.
pub fn burst(addr: u8, bytes: [u8; 14]) -> Transaction {
    Transaction::write_read(addr, vec![Register::ACCEL_XOUT_H], bytes.to_vec())
}

/// The burst bytes for the given register values: accel x/y/z, temperature, gyro x/y/z,
/// each big-endian.
pub fn burst_bytes(accel: [i16; 3], temperature: i16, gyro: [i16; 3]) -> [u8; 14] {
    let mut bytes = [0u8; 14];
    let [ax, ay, az] = accel;
    let [gx, gy, gz] = gyro;
    let values = [ax, ay, az, temperature, gx, gy, gz];
    for (pair, v) in bytes.chunks_exact_mut(2).zip(values) {
        pair.copy_from_slice(&v.to_be_bytes());
    }
    bytes
}

/// A driver at AD0 low after `init` with the default rate and filter and the given ranges
/// (`accel_byte` and `gyro_byte` being what `ACCEL_CONFIG` and `GYRO_CONFIG` must receive),
/// expecting `then` afterwards.
pub fn initialised(
    accel: AccelRange,
    accel_byte: u8,
    gyro: GyroRange,
    gyro_byte: u8,
    then: Vec<Transaction>,
) -> Mpu6050<Mock> {
    let mut expected = init_transactions(ADDR, 99, 0x06, gyro_byte, accel_byte);
    expected.extend(then);
    let mut imu = new_imu(&expected);
    let config = Config {
        accel_range: accel,
        gyro_range: gyro,
        ..Config::default()
    };
    imu.init(config).expect("init over the mock");
    imu
}

/// Relative (or, near zero, absolute) closeness of an `f32` result to a reference computed
/// in `f64`.
#[track_caller]
pub fn assert_close(actual: f32, expected: f64) {
    let expected = expected as f32;
    let tol = 1e-6 * expected.abs().max(1.0);
    assert!(
        (actual - expected).abs() <= tol,
        "got {actual}, expected {expected}"
    );
}
