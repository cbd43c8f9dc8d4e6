//! The motion job on a Raspberry Pi Pico (RP2040, Cortex-M0+ at 125 MHz, no FPU: the
//! training runs in software floating point, IEEE arithmetic like the other cores').
//!
//! - An MPU-6050 on I2C0: SDA on GP4, SCL on GP5 (pull-ups on the breakout), at 0x68.
//! - The board's LED (GP25) blinks the class to perform before each run of windows: once
//!   for standing, twice for running, three times for walking, four for badminton.
//! - The last 32 KiB of the 2 MiB flash are the data flash, through embassy-rp's blocking
//!   `embedded-storage` driver: the model's A/B slots (two 4 KiB sectors each), then the
//!   recorded samples.
//! - The log is defmt over RTT (`probe-rs run`, through a debug probe on the SWD pins).
#![no_std]
#![no_main]

use board_app::{Event, Layout};
use cortex_m_rt::entry;
use defmt_rtt as _;
use embassy_rp::flash::{Blocking, Flash};
use embassy_rp::gpio::{Level, Output};
use embassy_rp::i2c::{self, I2c};
use embassy_time::{block_for, Delay, Duration, Instant};
use motion::job::SampleLog;
use motion::model::{FinetuneWorkspace, CLASS_NAMES};
use panic_probe as _;
use safegrad::store::Slots;
use static_cell::ConstStaticCell;

/// Bytes of the Pico's flash.
const FLASH_SIZE: usize = 2 * 1024 * 1024;
/// Where the flash is mapped for reading (execute in place).
const XIP_BASE: usize = 0x1000_0000;
/// The data flash's first byte, as an offset from the flash's start.
const DATA_FLASH: u32 = (FLASH_SIZE - 32 * 1024) as u32;

/// The data flash: the slots, then the two sample logs.
const LAYOUT: Layout = Layout {
    slots: Slots::new(DATA_FLASH, 8192),
    log: SampleLog {
        train: DATA_FLASH + 16384,
        eval: DATA_FLASH + 24576,
        capacity: 8192,
    },
};

/// The session's memory, sized from the model's type, in a static (`.bss`).
static WORK: ConstStaticCell<FinetuneWorkspace> = ConstStaticCell::new(FinetuneWorkspace::new());

#[entry]
fn main() -> ! {
    let p = embassy_rp::init(Default::default());
    let mut config = i2c::Config::default();
    config.frequency = 100_000;
    let i2c = I2c::new_blocking(p.I2C0, p.PIN_5, p.PIN_4, config);
    let mut led = Output::new(p.PIN_25, Level::Low);
    let mut flash = Flash::<_, Blocking, FLASH_SIZE>::new_blocking(p.FLASH);
    let events = |event: Event| {
        defmt::info!("{}", event);
        let Event::Perform { class, .. } = event else {
            return;
        };
        defmt::info!(
            "now: {=str}",
            CLASS_NAMES.get(class).copied().unwrap_or("?")
        );
        for _ in 0..=class {
            led.set_high();
            block_for(Duration::from_millis(200));
            led.set_low();
            block_for(Duration::from_millis(300));
        }
    };
    // The timer's microseconds time the steps (the Cortex-M0+ has no cycle counter).
    let mut ticks = || Instant::now().as_ticks();
    // SAFETY: the flash is mapped at XIP_BASE, and only `flash` writes it.
    let result = unsafe {
        board_app::run(
            WORK.take(),
            i2c,
            Delay,
            &mut flash,
            XIP_BASE as *const u8,
            LAYOUT,
            events,
            &mut ticks,
        )
    };
    match result {
        Ok(report) => defmt::info!(
            "done: {=usize} steps, {=u64} us",
            report.steps,
            report.train_ticks
        ),
        Err(e) => defmt::error!("stopped: {}", e),
    }
    loop {
        cortex_m::asm::wfi();
    }
}
