//! Register addresses and bit fields of the registers the driver uses (RM §3, register map;
//! RM §4 for each register's fields).

/// Register addresses.
pub(crate) struct Register;

impl Register {
    /// Sample rate divider (RM §4.2).
    pub(crate) const SMPLRT_DIV: u8 = 0x19;
    /// FSYNC and DLPF configuration (RM §4.3).
    pub(crate) const CONFIG: u8 = 0x1A;
    /// Gyroscope self-test and full-scale range (RM §4.4).
    pub(crate) const GYRO_CONFIG: u8 = 0x1B;
    /// Accelerometer self-test and full-scale range (RM §4.5).
    pub(crate) const ACCEL_CONFIG: u8 = 0x1C;
    /// First of the 14 measurement registers, 0x3B..=0x48 (RM §4.17–4.19).
    pub(crate) const ACCEL_XOUT_H: u8 = 0x3B;
    /// Power management 1 (RM §4.28).
    pub(crate) const PWR_MGMT_1: u8 = 0x6B;
    /// Device identity (RM §4.32).
    pub(crate) const WHO_AM_I: u8 = 0x75;
}

/// Bit positions and field values inside the registers.
pub(crate) struct BitFlags;

impl BitFlags {
    /// `DLPF_CFG`, bits 2:0 of `CONFIG` (RM §4.3); `EXT_SYNC_SET` (bits 5:3) is left 0, so
    /// the FSYNC pin is not sampled.
    pub(crate) const DLPF_CFG_MASK: u8 = 0b0000_0111;
    /// Shift of `FS_SEL` in `GYRO_CONFIG` (bits 4:3, RM §4.4) and of `AFS_SEL` in
    /// `ACCEL_CONFIG` (bits 4:3, RM §4.5); the self-test bits 7:5 above them stay 0.
    pub(crate) const FULL_SCALE_SHIFT: u8 = 3;
    /// `CLKSEL` = 1 in `PWR_MGMT_1` bits 2:0: PLL with the X-axis gyroscope as reference,
    /// which RM §4.28 "highly recommends" over the internal 8 MHz oscillator.
    pub(crate) const CLKSEL_PLL_X_GYRO: u8 = 0x01;
}

/// Bytes from `ACCEL_XOUT_H` (0x3B) to `GYRO_ZOUT_L` (0x48): accelerometer x/y/z,
/// temperature, gyroscope x/y/z, each a big-endian `i16`.
pub(crate) const BURST_LEN: usize = 14;

/// `PWR_MGMT_1` as `init` writes it: `DEVICE_RESET` = 0, `SLEEP` (bit 6, set at power-up:
/// reset value 0x40, RM §4.28) = 0, `CYCLE` = 0, `TEMP_DIS` = 0 (temperature sensor on),
/// `CLKSEL` = 1.
pub(crate) const PWR_MGMT_1_WAKE_PLL_X: u8 = BitFlags::CLKSEL_PLL_X_GYRO;

/// The value `WHO_AM_I` (0x75) holds on an MPU-6050 (RM §4.32: bits 6:1 = 0b110100, i.e.
/// 0x68, whatever the AD0 pin says).
pub const WHO_AM_I_VALUE: u8 = 0x68;
