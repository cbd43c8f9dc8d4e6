//! Failures: a chip that is not an MPU-6050, bus errors at each step, reads before `init`,
//! and what the errors say.

mod common;

use common::{
    assert_close, burst, burst_bytes, default_init_transactions, destroy, initialised, new_imu,
    who_am_i, write, Register, ADDR, MPU6050_ID, WAKE_PLL_X,
};
use embedded_hal::i2c::ErrorKind;
use mpu6050::{AccelRange, Config, Error, GyroRange};

#[test]
fn a_wrong_who_am_i_is_reported_and_nothing_is_written() {
    // An MPU-6500 answers 0x70; only the WHO_AM_I read may happen.
    let expected = [who_am_i(ADDR, 0x70)];
    let mut imu = new_imu(&expected);
    assert_eq!(
        imu.init(Config::default()),
        Err(Error::WrongDevice { found: 0x70 })
    );
    assert_eq!(imu.config(), None);
    // Not initialised: reading touches no bus.
    assert_eq!(imu.read(), Err(Error::NotInitialized));
    destroy(imu);
}

#[test]
fn reading_before_init_touches_nothing() {
    let mut imu = new_imu(&[]);
    assert_eq!(imu.read_raw(), Err(Error::NotInitialized));
    assert_eq!(imu.read(), Err(Error::NotInitialized));
    destroy(imu);
}

#[test]
fn a_bus_error_in_who_am_i_is_passed_through() {
    let expected = [who_am_i(ADDR, 0x00).with_error(ErrorKind::Other)];
    let mut imu = new_imu(&expected);
    assert_eq!(
        imu.init(Config::default()),
        Err(Error::I2c(ErrorKind::Other))
    );
    assert_eq!(imu.config(), None);
    destroy(imu);

    let expected = [who_am_i(ADDR, 0x00).with_error(ErrorKind::Bus)];
    let mut imu = new_imu(&expected);
    assert_eq!(imu.who_am_i(), Err(Error::I2c(ErrorKind::Bus)));
    destroy(imu);
}

#[test]
fn a_bus_error_mid_init_leaves_the_driver_uninitialised_and_init_can_be_retried() {
    let mut expected = vec![
        who_am_i(ADDR, MPU6050_ID),
        write(ADDR, Register::PWR_MGMT_1, WAKE_PLL_X),
        write(ADDR, Register::SMPLRT_DIV, 99),
        write(ADDR, Register::CONFIG, 0x06).with_error(ErrorKind::ArbitrationLoss),
    ];
    // The retry: the whole sequence again, then a reading.
    expected.extend(default_init_transactions(ADDR));
    expected.push(burst(ADDR, burst_bytes([0, 0, 4096], 0, [0; 3])));
    let mut imu = new_imu(&expected);
    assert_eq!(
        imu.init(Config::default()),
        Err(Error::I2c(ErrorKind::ArbitrationLoss))
    );
    assert_eq!(imu.config(), None);
    assert_eq!(imu.read(), Err(Error::NotInitialized));

    imu.init(Config::default()).unwrap();
    assert_close(imu.read().unwrap().accel[2], 9.80665);
    destroy(imu);
}

#[test]
fn a_failed_init_forgets_the_previous_config() {
    let mut expected = default_init_transactions(ADDR);
    expected.push(who_am_i(ADDR, 0x00).with_error(ErrorKind::NoAcknowledge(
        embedded_hal::i2c::NoAcknowledgeSource::Address,
    )));
    let mut imu = new_imu(&expected);
    imu.init(Config::default()).unwrap();
    assert!(imu.init(Config::default()).is_err());
    assert_eq!(imu.config(), None);
    assert_eq!(imu.read_raw(), Err(Error::NotInitialized));
    destroy(imu);
}

#[test]
fn a_bus_error_in_a_read_is_passed_through_and_the_next_read_works() {
    let failing = burst(ADDR, [0; 14]).with_error(ErrorKind::Bus);
    let good = burst(ADDR, burst_bytes([0, 0, 4096], 0, [0; 3]));
    let mut imu = initialised(
        AccelRange::G8,
        0x10,
        GyroRange::Dps2000,
        0x18,
        vec![failing, good],
    );
    assert_eq!(imu.read(), Err(Error::I2c(ErrorKind::Bus)));
    // The device's configuration is not in doubt after a failed read.
    assert_eq!(imu.config(), Some(&Config::default()));
    assert_close(imu.read().unwrap().accel[2], 9.80665);
    destroy(imu);
}

#[test]
fn errors_say_what_went_wrong() {
    let e: Error<ErrorKind> = Error::WrongDevice { found: 0x70 };
    assert_eq!(
        e.to_string(),
        "MPU-6050: WHO_AM_I (0x75) read 0x70, expected 0x68"
    );
    let e: Error<ErrorKind> = Error::WrongDevice { found: 0x00 };
    assert_eq!(
        e.to_string(),
        "MPU-6050: WHO_AM_I (0x75) read 0x00, expected 0x68"
    );
    let e: Error<ErrorKind> = Error::I2c(ErrorKind::Other);
    assert_eq!(e.to_string(), "MPU-6050: I2C bus error: Other");
    let e: Error<ErrorKind> = Error::NotInitialized;
    assert_eq!(e.to_string(), "MPU-6050: read before init");
}

#[test]
fn errors_are_std_errors_and_wrap_bus_errors() {
    let e: Error<ErrorKind> = ErrorKind::Overrun.into();
    assert_eq!(e, Error::I2c(ErrorKind::Overrun));
    let boxed: Box<dyn std::error::Error> = Box::new(e);
    assert_eq!(boxed.to_string(), "MPU-6050: I2C bus error: Overrun");
}
