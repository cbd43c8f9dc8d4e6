//! `init`'s register writes, the configuration's field values and the output rate.

mod common;

use common::{default_init_transactions, destroy, init_transactions, new_imu, ADDR, ADDR_AD0_HIGH};
use embedded_hal_mock::eh1::i2c::Mock;
use mpu6050::{AccelRange, Address, Config, Dlpf, GyroRange, Mpu6050};

#[test]
fn init_with_the_default_config_writes_the_exact_sequence() {
    // SMPLRT_DIV 99, CONFIG DLPF_CFG=6, GYRO_CONFIG FS_SEL=3 (0b11 << 3 = 0x18),
    // ACCEL_CONFIG AFS_SEL=2 (0b10 << 3 = 0x10).
    let expected = init_transactions(ADDR, 99, 0x06, 0x18, 0x10);
    let mut imu = new_imu(&expected);
    imu.init(Config::default()).unwrap();
    assert_eq!(imu.config(), Some(&Config::default()));
    destroy(imu);
}

#[test]
fn init_with_a_custom_config_at_ad0_high() {
    // 0x69; SMPLRT_DIV 7; DLPF off (0); ±500 °/s (1 << 3 = 0x08); ±4 g (1 << 3 = 0x08).
    let expected = init_transactions(ADDR_AD0_HIGH, 7, 0x00, 0x08, 0x08);
    let mut imu = Mpu6050::new(Mock::new(&expected), Address::Ad0High);
    let config = Config {
        sample_rate_divider: 7,
        dlpf: Dlpf::Bw260Hz,
        gyro_range: GyroRange::Dps500,
        accel_range: AccelRange::G4,
    };
    imu.init(config).unwrap();
    assert_eq!(imu.config(), Some(&config));
    destroy(imu);
    // 8 kHz / (1 + 7) = 1 kHz.
    assert_eq!(config.sample_rate_hz(), 1000.0);
}

#[test]
fn every_filter_setting_is_written_to_config_bits_2_to_0() {
    // RM §4.3: DLPF_CFG 0..=6, EXT_SYNC_SET (bits 5:3) left 0.
    let settings = [
        (Dlpf::Bw260Hz, 0x00),
        (Dlpf::Bw184Hz, 0x01),
        (Dlpf::Bw94Hz, 0x02),
        (Dlpf::Bw44Hz, 0x03),
        (Dlpf::Bw21Hz, 0x04),
        (Dlpf::Bw10Hz, 0x05),
        (Dlpf::Bw5Hz, 0x06),
    ];
    for (dlpf, byte) in settings {
        let expected = init_transactions(ADDR, 0, byte, 0x18, 0x10);
        let mut imu = new_imu(&expected);
        let config = Config {
            sample_rate_divider: 0,
            dlpf,
            ..Config::default()
        };
        imu.init(config).unwrap();
        destroy(imu);
        assert_eq!(dlpf.bits(), byte);
    }
}

#[test]
fn every_range_is_written_to_bits_4_to_3() {
    // RM §4.4 and §4.5: FS_SEL and AFS_SEL in bits 4:3, self-test bits 7:5 clear.
    let ranges = [
        (GyroRange::Dps250, 0x00, AccelRange::G2, 0x00),
        (GyroRange::Dps500, 0x08, AccelRange::G4, 0x08),
        (GyroRange::Dps1000, 0x10, AccelRange::G8, 0x10),
        (GyroRange::Dps2000, 0x18, AccelRange::G16, 0x18),
    ];
    for (gyro, gyro_byte, accel, accel_byte) in ranges {
        let expected = init_transactions(ADDR, 99, 0x06, gyro_byte, accel_byte);
        let mut imu = new_imu(&expected);
        let config = Config {
            gyro_range: gyro,
            accel_range: accel,
            ..Config::default()
        };
        imu.init(config).unwrap();
        destroy(imu);
        assert_eq!(gyro.register_value(), gyro_byte);
        assert_eq!(accel.register_value(), accel_byte);
    }
}

#[test]
fn field_values_and_sensitivities_are_the_datasheets() {
    let gyro = [
        (GyroRange::Dps250, 0, 131.0),
        (GyroRange::Dps500, 1, 65.5),
        (GyroRange::Dps1000, 2, 32.8),
        (GyroRange::Dps2000, 3, 16.4),
    ];
    for (range, fs_sel, lsb) in gyro {
        assert_eq!(range.fs_sel(), fs_sel);
        assert_eq!(range.lsb_per_dps(), lsb);
    }
    let accel = [
        (AccelRange::G2, 0, 16384.0),
        (AccelRange::G4, 1, 8192.0),
        (AccelRange::G8, 2, 4096.0),
        (AccelRange::G16, 3, 2048.0),
    ];
    for (range, afs_sel, lsb) in accel {
        assert_eq!(range.afs_sel(), afs_sel);
        assert_eq!(range.lsb_per_g(), lsb);
    }
}

#[test]
fn the_default_config_samples_at_10_hz_for_basic_motions() {
    let default = Config::default();
    assert_eq!(default, Config::BASIC_MOTIONS_10HZ);
    assert_eq!(
        default,
        Config {
            sample_rate_divider: 99,
            dlpf: Dlpf::Bw5Hz,
            gyro_range: GyroRange::Dps2000,
            accel_range: AccelRange::G8,
        }
    );
    // 1 kHz / (1 + 99).
    assert_eq!(default.sample_rate_hz(), 10.0);
    assert_eq!(default.dlpf.gyro_output_rate_hz(), 1000);
}

#[test]
fn the_gyro_output_rate_is_8_khz_only_with_the_filter_off() {
    assert_eq!(Dlpf::Bw260Hz.gyro_output_rate_hz(), 8000);
    for dlpf in [
        Dlpf::Bw184Hz,
        Dlpf::Bw94Hz,
        Dlpf::Bw44Hz,
        Dlpf::Bw21Hz,
        Dlpf::Bw10Hz,
        Dlpf::Bw5Hz,
    ] {
        assert_eq!(dlpf.gyro_output_rate_hz(), 1000);
    }
    // 8 kHz / 256 and 1 kHz / 256, the slowest rates.
    let slowest = |dlpf| Config {
        sample_rate_divider: 255,
        dlpf,
        ..Config::default()
    };
    assert_eq!(slowest(Dlpf::Bw260Hz).sample_rate_hz(), 31.25);
    assert_eq!(slowest(Dlpf::Bw5Hz).sample_rate_hz(), 3.906_25);
}

#[test]
fn init_again_rewrites_every_register_and_replaces_the_config() {
    let mut expected = default_init_transactions(ADDR);
    // ±16 g (3 << 3), ±250 °/s (0), DLPF 44 Hz (3), SMPLRT_DIV 9.
    expected.extend(init_transactions(ADDR, 9, 0x03, 0x00, 0x18));
    let mut imu = new_imu(&expected);
    imu.init(Config::default()).unwrap();
    let second = Config {
        sample_rate_divider: 9,
        dlpf: Dlpf::Bw44Hz,
        gyro_range: GyroRange::Dps250,
        accel_range: AccelRange::G16,
    };
    imu.init(second).unwrap();
    assert_eq!(imu.config(), Some(&second));
    destroy(imu);
    // 1 kHz / (1 + 9).
    assert_eq!(second.sample_rate_hz(), 100.0);
}
