//! The motion job on an nRF52840-DK (nRF52840, Cortex-M4F at 64 MHz).
//!
//! - An MPU-6050 on TWIM0: SCL on P0.27, SDA on P0.26 (the Arduino header's SCL and SDA), at
//!   0x68.
//! - LEDs 1 to 4 (P0.13 to P0.16, lit low) show the class to perform: standing, running,
//!   walking, badminton.
//! - The last 32 KiB of the internal flash are the data flash (`storage.x`), through
//!   nrf-hal's `embedded-storage` NVMC driver: the model's A/B slots (two 4 KiB pages each),
//!   then the recorded samples.
//! - The log is defmt over RTT (`probe-rs run`).
#![no_std]
#![no_main]

use board_app::{Event, Layout};
use cortex_m::peripheral::DWT;
use cortex_m_rt::entry;
use defmt_rtt as _;
use embedded_hal::digital::{OutputPin, PinState};
use motion::job::SampleLog;
use motion::model::{FinetuneWorkspace, CLASS_NAMES};
use nrf52840_hal::gpio::{p0, Level};
use nrf52840_hal::nvmc::Nvmc;
use nrf52840_hal::pac;
use nrf52840_hal::twim::{self, Twim};
use nrf52840_hal::Delay;
use panic_probe as _;
use safegrad::store::Slots;
use static_cell::ConstStaticCell;

/// Bytes of the data flash.
const DATA_FLASH: usize = 32 * 1024;

/// The data flash, as offsets from its start: the slots, then the two sample logs.
const LAYOUT: Layout = Layout {
    slots: Slots::new(0, 8192),
    log: SampleLog {
        train: 16384,
        eval: 24576,
        capacity: 8192,
    },
};

#[link_section = ".storage"]
static mut STORAGE: [u8; DATA_FLASH] = [0; DATA_FLASH];

/// The session's memory, sized from the model's type, in a static (`.bss`).
static WORK: ConstStaticCell<FinetuneWorkspace> = ConstStaticCell::new(FinetuneWorkspace::new());

#[entry]
fn main() -> ! {
    let (Some(p), Some(mut cp)) = (pac::Peripherals::take(), cortex_m::Peripherals::take()) else {
        defmt::panic!("the peripherals are taken")
    };
    let port0 = p0::Parts::new(p.P0);
    let pins = twim::Pins {
        scl: port0.p0_27.into_floating_input().degrade(),
        sda: port0.p0_26.into_floating_input().degrade(),
    };
    let i2c = Twim::new(p.TWIM0, pins, twim::Frequency::K100);
    let delay = Delay::new(cp.SYST);
    let mut leds = [
        port0.p0_13.into_push_pull_output(Level::High).degrade(),
        port0.p0_14.into_push_pull_output(Level::High).degrade(),
        port0.p0_15.into_push_pull_output(Level::High).degrade(),
        port0.p0_16.into_push_pull_output(Level::High).degrade(),
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

    let mapped = core::ptr::addr_of!(STORAGE).cast::<u8>();
    // SAFETY: `main` runs once, and the data flash is used through `flash` alone (and read
    // through `mapped` while nothing writes it).
    let storage = unsafe { &mut *core::ptr::addr_of_mut!(STORAGE) };
    let mut flash = Nvmc::new(p.NVMC, storage);
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
            // Lit low; setting a GPIO cannot fail on the nRF52.
            let _ = led.set_state(PinState::from(i != class));
        }
    };
    // SAFETY: `mapped` is where `flash`'s offset 0 is mapped.
    let result = unsafe {
        board_app::run(
            WORK.take(),
            i2c,
            delay,
            &mut flash,
            mapped,
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
