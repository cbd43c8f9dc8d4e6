//! The motion job on an STM32F4 Discovery (STM32F407VG, Cortex-M4F at 168 MHz).
//!
//! - An MPU-6050 on I2C1: SCL on PB8, SDA on PB9 (pull-ups on the breakout), at 0x68.
//! - The four user LEDs show the class to perform: green (PD12) standing, orange (PD13)
//!   running, red (PD14) walking, blue (PD15) badminton.
//! - The internal flash's sectors 8-11 are the data flash, through stm32f4xx-hal's
//!   `embedded-storage` driver: the recorded samples in sectors 8 and 9, the model's A/B
//!   slots in sectors 10 and 11 (one 128 KiB sector each, the F407's erase unit there).
//! - The log is defmt over RTT (`probe-rs run`).
#![no_std]
#![no_main]

use board_app::{Event, Layout};
use cortex_m::peripheral::DWT;
use cortex_m_rt::entry;
use defmt_rtt as _;
use motion::job::SampleLog;
use motion::model::{FinetuneWorkspace, CLASS_NAMES};
use panic_probe as _;
use safegrad::store::Slots;
use static_cell::ConstStaticCell;
use stm32f4xx_hal::flash::{FlashExt, LockedFlash};
use stm32f4xx_hal::gpio::PinState;
use stm32f4xx_hal::i2c::{I2c, Mode};
use stm32f4xx_hal::pac;
use stm32f4xx_hal::prelude::*;
use stm32f4xx_hal::rcc::Config;

/// Where the internal flash is mapped for reading.
const FLASH_BASE: usize = 0x0800_0000;
/// A 128 KiB sector, the erase unit of sectors 5-11.
const SECTOR: u32 = 128 * 1024;

/// The data flash, as offsets from the flash's start: samples in sectors 8 and 9, the
/// checkpoint's slots in sectors 10 and 11.
const LAYOUT: Layout = Layout {
    slots: Slots::new(0x000C_0000, SECTOR),
    log: SampleLog {
        train: 0x0008_0000,
        eval: 0x000A_0000,
        capacity: SECTOR as usize,
    },
};

/// The session's memory, sized from the model's type, in a static (`.bss`).
static WORK: ConstStaticCell<FinetuneWorkspace> = ConstStaticCell::new(FinetuneWorkspace::new());

#[entry]
fn main() -> ! {
    let (Some(dp), Some(mut cp)) = (pac::Peripherals::take(), cortex_m::Peripherals::take()) else {
        defmt::panic!("the peripherals are taken")
    };
    let mut rcc = dp.RCC.freeze(Config::hse(8.MHz()).sysclk(168.MHz()));
    let gpiob = dp.GPIOB.split(&mut rcc);
    let gpiod = dp.GPIOD.split(&mut rcc);
    let i2c = I2c::new(
        dp.I2C1,
        (gpiob.pb8, gpiob.pb9),
        Mode::standard(100.kHz()),
        &mut rcc,
    );
    let delay = cp.SYST.delay(&rcc.clocks);
    let mut leds = [
        gpiod.pd12.into_push_pull_output().erase(),
        gpiod.pd13.into_push_pull_output().erase(),
        gpiod.pd14.into_push_pull_output().erase(),
        gpiod.pd15.into_push_pull_output().erase(),
    ];

    // The cycle counter times the steps, widened to 64 bits.
    cp.DCB.enable_trace();
    cp.DWT.enable_cycle_counter();
    let (mut last, mut cycles) = (DWT::cycle_count(), 0u64);
    let mut ticks = move || {
        let now = DWT::cycle_count();
        cycles += u64::from(now.wrapping_sub(last));
        last = now;
        cycles
    };

    let mut flash = LockedFlash::new(dp.FLASH);
    let mut data_flash = flash.unlocked();
    let events = |event: Event| {
        defmt::info!("{}", event);
        let Event::Perform { class, .. } = event else {
            return;
        };
        defmt::info!(
            "now: {=str}",
            CLASS_NAMES.get(class).copied().unwrap_or("?")
        );
        for (i, led) in leds.iter_mut().enumerate() {
            led.set_state(PinState::from(i == class));
        }
    };
    // SAFETY: the internal flash is mapped at FLASH_BASE, and only `data_flash` writes it.
    let result = unsafe {
        board_app::run(
            WORK.take(),
            i2c,
            delay,
            &mut data_flash,
            FLASH_BASE as *const u8,
            LAYOUT,
            events,
            &mut ticks,
        )
    };
    match result {
        Ok(report) => defmt::info!(
            "done: {=usize} steps, {=u64} cycles",
            report.steps,
            report.train_ticks
        ),
        Err(e) => defmt::error!("stopped: {}", e),
    }
    loop {
        cortex_m::asm::wfi();
    }
}
