//! Measurement bursts: decoding, and scaling to m/s², rad/s and °C with the configured
//! ranges. Reference values are computed from the datasheet's sensitivities (PS §6.1,
//! §6.2) and temperature formula (RM §4.18), with g = 9.80665 m/s² and π/180 rad per degree.

mod common;

use common::{assert_close, burst, burst_bytes, destroy, initialised, ADDR};
use mpu6050::{temperature_celsius, AccelRange, GyroRange, RawSample};

#[test]
fn a_burst_is_seven_big_endian_values_in_register_order() {
    let bytes = [
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0xFF, 0xFE,
    ];
    assert_eq!(
        RawSample::from_burst(bytes),
        RawSample {
            accel: [0x0102, 0x0304, 0x0506],
            temperature: 0x0708,
            gyro: [0x090A, 0x0B0C, -2],
        }
    );
}

#[test]
fn read_converts_a_known_burst_at_2g_and_250dps() {
    let bytes = [
        0xE0, 0x00, // accel x = -8192 -> -0.5 g
        0x00, 0x00, // accel y = 0
        0x40, 0x00, // accel z = 16384 -> 1 g
        0x00, 0x00, // temp = 0 -> 36.53 °C
        0x00, 0x83, // gyro x = 131 -> 1 °/s
        0xFE, 0xFA, // gyro y = -262 -> -2 °/s
        0x80, 0x00, // gyro z = -32768 -> -250.1374 °/s
    ];
    let mut imu = initialised(
        AccelRange::G2,
        0x00,
        GyroRange::Dps250,
        0x00,
        vec![burst(ADDR, bytes), burst(ADDR, bytes)],
    );
    let raw = imu.read_raw().unwrap();
    assert_eq!(
        raw,
        RawSample {
            accel: [-8192, 0, 16384],
            temperature: 0,
            gyro: [131, -262, -32768],
        }
    );
    let s = imu.read().unwrap();
    assert_close(s.accel[0], -4.903325);
    assert_close(s.accel[1], 0.0);
    assert_close(s.accel[2], 9.80665);
    assert_close(s.temperature, 36.53);
    // π/180 = 0.017453292519943295.
    assert_close(s.gyro[0], 0.017453292519943295);
    assert_close(s.gyro[1], -0.03490658503988659);
    // -32768 / 131 * π/180.
    assert_close(s.gyro[2], -4.365721292316808);
    destroy(imu);
}

#[test]
fn read_handles_the_extremes_and_temperature() {
    let bytes = [
        0x7F, 0xFF, // accel x = 32767 -> 32767/16384 g at ±2 g
        0x80, 0x00, // accel y = -32768 -> -2 g
        0x00, 0x01, // accel z = 1
        0xFE, 0xAC, // temp = -340 -> 35.53 °C
        0x7F, 0xFF, // gyro x = 32767
        0x00, 0x00, // gyro y
        0xFF, 0xFF, // gyro z = -1
    ];
    let mut imu = initialised(
        AccelRange::G2,
        0x00,
        GyroRange::Dps250,
        0x00,
        vec![burst(ADDR, bytes)],
    );
    let s = imu.read().unwrap();
    // 32767 / 16384 * 9.80665.
    assert_close(s.accel[0], 19.61270144958496);
    assert_close(s.accel[1], -19.6133);
    assert_close(s.accel[2], 9.80665 / 16384.0);
    assert_close(s.temperature, 35.53);
    // 32767 / 131 °/s = 250.129770992 °/s = 4.365588061 rad/s.
    assert_close(s.gyro[0], 4.365588061076198);
    assert_close(s.gyro[1], 0.0);
    assert_close(s.gyro[2], -0.017453292519943295 / 131.0);
    destroy(imu);
}

#[test]
fn every_range_scales_by_its_own_sensitivity() {
    // Each range: accel x = 1 g and accel y = -1 g in its LSB; gyro x = 10 °/s in its LSB.
    // (accel range, ACCEL_CONFIG byte, LSB/g, gyro range, GYRO_CONFIG byte, 10 °/s raw)
    let cases: [(AccelRange, u8, i16, GyroRange, u8, i16); 4] = [
        (AccelRange::G2, 0x00, 16384, GyroRange::Dps250, 0x00, 1310),
        (AccelRange::G4, 0x08, 8192, GyroRange::Dps500, 0x08, 655),
        (AccelRange::G8, 0x10, 4096, GyroRange::Dps1000, 0x10, 328),
        (AccelRange::G16, 0x18, 2048, GyroRange::Dps2000, 0x18, 164),
    ];
    for (accel, accel_byte, lsb_g, gyro, gyro_byte, raw_10dps) in cases {
        let bytes = burst_bytes([lsb_g, -lsb_g, 0], 0, [raw_10dps, 0, 0]);
        let mut imu = initialised(accel, accel_byte, gyro, gyro_byte, vec![burst(ADDR, bytes)]);
        let s = imu.read().unwrap();
        assert_close(s.accel[0], 9.80665);
        assert_close(s.accel[1], -9.80665);
        // 10 °/s = 0.17453292519943295 rad/s.
        assert_close(s.gyro[0], 0.17453292519943295);
        destroy(imu);
    }
}

#[test]
fn the_default_ranges_read_gravity_and_rotation() {
    // ±8 g: 4096 LSB/g; ±2000 °/s: 16.4 LSB per °/s. Lying flat, turning about z at
    // -1000 °/s (raw -16400), die at 25 °C (raw (25 - 36.53) * 340 = -3920.2, so -3920).
    let bytes = burst_bytes([0, 0, 4096], -3920, [0, 0, -16400]);
    let mut imu = initialised(
        AccelRange::G8,
        0x10,
        GyroRange::Dps2000,
        0x18,
        vec![burst(ADDR, bytes)],
    );
    let s = imu.read().unwrap();
    assert_close(s.accel[0], 0.0);
    assert_close(s.accel[2], 9.80665);
    // -1000 °/s = -17.453292519943297 rad/s.
    assert_close(s.gyro[2], -17.453292519943297);
    // -3920 / 340 + 36.53 = 25.000588...
    assert_close(s.temperature, 25.000588235294117);
    destroy(imu);
}

#[test]
fn each_read_is_a_fresh_burst() {
    // Two reads, two bursts: the second reading is the second burst's, not a cached one.
    let first = burst_bytes([4096, 0, 0], 0, [0; 3]);
    let second = burst_bytes([-4096, 0, 0], 0, [0; 3]);
    let mut imu = initialised(
        AccelRange::G8,
        0x10,
        GyroRange::Dps2000,
        0x18,
        vec![burst(ADDR, first), burst(ADDR, second)],
    );
    assert_close(imu.read().unwrap().accel[0], 9.80665);
    assert_close(imu.read().unwrap().accel[0], -9.80665);
    destroy(imu);
}

#[test]
fn conversions_outside_the_driver_match_the_datasheet() {
    // 3400 -> 3400/340 + 36.53 = 46.53 °C.
    assert_close(temperature_celsius(3400), 46.53);
    assert_close(temperature_celsius(-340), 35.53);
    // 2048 LSB at ±16 g is 1 g; -8192 at ±4 g is -1 g.
    assert_close(AccelRange::G16.to_m_per_s2(2048), 9.80665);
    assert_close(AccelRange::G4.to_m_per_s2(-8192), -9.80665);
    // 655 LSB at ±500 °/s is 10 °/s; 328 at ±1000 °/s too.
    assert_close(GyroRange::Dps500.to_rad_per_s(655), 0.17453292519943295);
    assert_close(GyroRange::Dps1000.to_rad_per_s(328), 0.17453292519943295);
    let raw = RawSample {
        accel: [16384, 0, -16384],
        temperature: 340,
        gyro: [0, 131, 0],
    };
    let si = raw.to_si(AccelRange::G2, GyroRange::Dps250);
    assert_close(si.accel[0], 9.80665);
    assert_close(si.accel[2], -9.80665);
    assert_close(si.gyro[1], 0.017453292519943295);
    assert_close(si.temperature, 37.53);
}
