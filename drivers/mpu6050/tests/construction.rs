//! Construction, bus addresses, identification and giving the bus back.

mod common;

use common::{destroy, new_imu, who_am_i, ADDR, ADDR_AD0_HIGH, MPU6050_ID};
use embedded_hal_mock::eh1::i2c::Mock;
use mpu6050::{Address, Mpu6050, WHO_AM_I_VALUE};

#[test]
fn new_touches_no_bus_and_is_not_configured() {
    let imu = new_imu(&[]);
    assert_eq!(imu.config(), None);
    destroy(imu);
}

#[test]
fn addresses_follow_the_ad0_pin() {
    assert_eq!(Address::Ad0Low.addr(), 0x68);
    assert_eq!(Address::Ad0High.addr(), 0x69);
}

#[test]
fn who_am_i_constant_is_the_mpu6050_identity() {
    assert_eq!(WHO_AM_I_VALUE, 0x68);
}

#[test]
fn who_am_i_reads_register_0x75_at_the_configured_address() {
    let expected = [who_am_i(ADDR_AD0_HIGH, MPU6050_ID)];
    let mut imu = Mpu6050::new(Mock::new(&expected), Address::Ad0High);
    assert_eq!(imu.who_am_i(), Ok(0x68));
    // Identifying the chip configures nothing.
    assert_eq!(imu.config(), None);
    destroy(imu);
}

#[test]
fn who_am_i_reports_other_chips_without_judging_them() {
    // An MPU-6500 answers 0x70, an MPU-9250 0x71.
    let expected = [who_am_i(ADDR, 0x70), who_am_i(ADDR, 0x71)];
    let mut imu = new_imu(&expected);
    assert_eq!(imu.who_am_i(), Ok(0x70));
    assert_eq!(imu.who_am_i(), Ok(0x71));
    destroy(imu);
}

#[test]
fn release_after_init_writes_nothing_more() {
    // The device is left awake and measuring: no sleep or reset on release.
    let imu = common::initialised(
        mpu6050::AccelRange::G8,
        0x10,
        mpu6050::GyroRange::Dps2000,
        0x18,
        vec![],
    );
    destroy(imu);
}
