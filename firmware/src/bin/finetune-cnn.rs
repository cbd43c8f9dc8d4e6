//! The fine-tuning job of the 1-D CNN on raw windows, on the device: loads the pre-trained
//! `motion::model::MotionCnn` embedded at build time (its frozen convolutions read in place
//! from flash), fine-tunes its dense head on the shifted recordings as raw `6 x 100`
//! windows, with the host simulator's schedule (`motion::job::run_model`), saves the
//! fine-tuned model to the data flash, logs with `defmt` over semihosting and exits with
//! its verdict. Built with the `cnn` feature (`cargo xtask parity` builds it).
//!
//! With the `imported` feature, the model is the CNN trained in PyTorch and imported from
//! its ONNX export by `host-sim import`: the generated type and checkpoint of
//! `tests/fixtures/onnx/basicmotions/imported/`.
//!
//! With the `int8` feature, the model is the pre-trained CNN quantised (`host-sim finetune
//! --model cnn --quantize int8`): its convolutions run in `int8` from the checkpoint in
//! flash, and only its float head is kept in RAM and trained (`motion::job::run_int8`).
//!
//! With the semihosting argument `stream`, the windows come over UART0 in `motion::wire`
//! frames and are logged to the data flash as they arrive, each straight from its frame;
//! otherwise they are the sets built into flash.
#![no_std]
#![no_main]

use model::{Model, Workspace, PRETRAINED, SIZES};
use motion::assets::cnn;
use motion::job::{self, SampleLog};
use motion::model::FINETUNE_PLAN;
use motion::samples::Stream;
use motion::samples::WINDOW_VALUES;
use safegrad::dataset::Dataset;
use safegrad::session::Session;
use safegrad::store::Slots;
use safegrad::Error;
use static_cell::ConstStaticCell;

use firmware::board::storage::{self, Flash};
use firmware::board::{self, args, entry, exit, ticks};

#[cfg(all(feature = "imported", feature = "int8"))]
compile_error!("the `imported` and `int8` features choose different models: pick one");

/// The model and the checkpoint it starts from: the shipped CNN.
#[cfg(not(any(feature = "imported", feature = "int8")))]
mod model {
    pub use motion::assets::cnn::PRETRAINED;
    pub use motion::model::{
        CnnFinetuneWorkspace as Workspace, MotionCnn as Model, CNN_FINETUNE_SIZES as SIZES,
    };
}

/// The model and the checkpoint it starts from: the shipped CNN quantised, its float head
/// (all that trains) over its `int8` body.
#[cfg(feature = "int8")]
mod model {
    pub use motion::assets::cnn::INT8 as PRETRAINED;
    pub use motion::model::{
        CnnInt8Head as Model, CnnInt8Workspace as Workspace, CNN_INT8_SIZES as SIZES,
    };
}

/// The buffers of the quantised job: the training windows' latents (the sample log holds 40
/// windows at most), a window, and the `int8` body's codes.
#[cfg(feature = "int8")]
struct Int8Memory {
    latents: [([f32; 16], usize); 40],
    row: [f32; WINDOW_VALUES],
    scratch: [i8; motion::model::CNN_INT8_SCRATCH],
}

#[cfg(feature = "int8")]
static INT8_MEMORY: ConstStaticCell<Int8Memory> = ConstStaticCell::new(Int8Memory {
    latents: [([0.0; 16], 0); 40],
    row: [0.0; WINDOW_VALUES],
    scratch: [0; motion::model::CNN_INT8_SCRATCH],
});

/// The model and the checkpoint it starts from: the CNN trained in PyTorch, exported to ONNX
/// and imported by `host-sim import` (its generated type and checkpoint).
#[cfg(feature = "imported")]
mod model {
    use motion::model::{FINETUNE_PLAN, MAX_SAMPLES};
    use safegrad::nn::{sizes, Sizes};
    use safegrad::Cap;

    include!("../../../tests/fixtures/onnx/basicmotions/imported/model.rs");

    /// The imported checkpoint, aligned for reading the frozen layers in place.
    pub static PRETRAINED: &[u8] = safegrad::include_checkpoint!(
        "../../../tests/fixtures/onnx/basicmotions/imported/model.sgck"
    );
    /// What one fine-tuning step records, from the imported type.
    pub const SIZES: Sizes = sizes::<Model>(FINETUNE_PLAN);
    /// The session's memory, sized from the imported type.
    pub type Workspace = safegrad::session::Workspace<
        Model,
        f32,
        Cap<{ SIZES.nodes }, { SIZES.values }, { SIZES.gradients }>,
        { SIZES.trainable },
        MAX_SAMPLES,
    >;
}

/// The checkpoint's two slots (A and B), two 4 KiB sectors each, at the start of the data
/// flash.
const SLOTS: Slots = Slots::new(0, 8192);
/// The streamed windows' two sets after the slots, 96 KiB each (40 windows of 2,402 bytes
/// at the most).
const SAMPLE_LOG: SampleLog = SampleLog {
    train: 16384,
    eval: 16384 + 98304,
    capacity: 98304,
};

/// Reads the windows streamed over UART0 into the flash's sample log; returns the lengths
/// of the two recorded sets.
#[inline(never)]
fn record_stream(flash: &mut Flash) -> Result<(usize, usize), ()> {
    // SAFETY: UART0 is used by nothing else in this program.
    let uart = unsafe { board::uart::open() };
    let mut source = Stream::new(uart);
    let recorded = job::record_windows(&mut source, flash, SAMPLE_LOG);
    let r = source.rejected();
    defmt::info!(
        "stream: {=u32} windows accepted, {=u32} frames refused ({=u32} CRC, {=u32} values), {=u32} sequence gaps",
        source.accepted(),
        r.frames,
        r.crc,
        r.values,
        r.gaps
    );
    recorded.map_err(|e| defmt::error!("stream: {}", e))
}

/// The session's memory, sized from the model's type, in a static initialised at compile
/// time (zero bytes: `.bss`).
static WORKSPACE: ConstStaticCell<Workspace> = ConstStaticCell::new(Workspace::new());

#[inline(never)]
fn run() -> Result<(), Error> {
    let Some(mut flash) = storage::take() else {
        exit(1)
    };
    let Some(work) = WORKSPACE.try_take() else {
        exit(1)
    };
    let mut session = Session::<Model, f32, _>::from_checkpoint(work, PRETRAINED, FINETUNE_PLAN)?;
    let stream = args::has("stream");
    let recorded = if stream {
        Some(record_stream(&mut flash).unwrap_or_else(|()| exit(1)))
    } else {
        None
    };
    let image = flash.image();
    let (train, eval) = match recorded {
        None => (cnn::FINETUNE_SET, cnn::EVAL_SET),
        Some((t, e)) => {
            let at = |base: u32, len: usize| {
                image.get(base as usize..base as usize + len).unwrap_or(&[])
            };
            (at(SAMPLE_LOG.train, t), at(SAMPLE_LOG.eval, e))
        }
    };
    let train = Dataset::<f32, WINDOW_VALUES>::parse(train)?;
    let eval = Dataset::<f32, WINDOW_VALUES>::parse(eval)?;
    defmt::info!(
        "samples: {=usize} raw windows to fine-tune on, {=usize} to evaluate ({=str}, read in place)",
        train.len(),
        eval.len(),
        if stream {
            "UART stream, logged to flash"
        } else {
            "built into flash"
        }
    );
    #[cfg(not(feature = "int8"))]
    let (r, int8) = (
        job::run_model(&mut session, SIZES, &train, &eval, &mut ticks)?,
        &[],
    );
    #[cfg(feature = "int8")]
    let (r, int8) = {
        let _ = SIZES;
        let body =
            safegrad::quant::Int8Body::parse(safegrad::checkpoint::int8_body::<f32>(PRETRAINED)?)?;
        defmt::info!(
            "int8 body: {=usize} layers, {=usize} bytes read in place, {=usize} codes of scratch",
            body.layers(),
            body.encoded_len(),
            body.scratch_len()
        );
        let Some(memory) = INT8_MEMORY.try_take() else {
            exit(1)
        };
        // One window through the body, timed: what each row's latent costs.
        let mut latent = [0.0f32; 16];
        if safegrad::train::Samples::read_into(&train, 0, &mut memory.row).is_some() {
            let start = ticks();
            body.forward(&memory.row, &mut memory.scratch, &mut latent)?;
            defmt::info!(
                "int8 body ticks per window {=u64} (SysTick, core clock)",
                ticks().wrapping_sub(start)
            );
        }
        let buffers = job::Int8Buffers {
            latents: &mut memory.latents,
            row: &mut memory.row,
            scratch: &mut memory.scratch,
        };
        let r = job::run_int8(&mut session, body, buffers, &train, &eval, &mut ticks)?;
        (r, body.as_bytes())
    };
    firmware::log::job(&r);
    match session.save_with_int8(&mut flash, &SLOTS, int8) {
        Ok(seq) => defmt::info!("checkpoint saved to flash (save {=u32})", seq),
        Err(e) => defmt::error!("saving the checkpoint failed: {}", e),
    }
    Ok(())
}

#[entry]
fn main() -> ! {
    board::init();
    defmt::info!("safegrad firmware: fine-tuning the CNN on raw windows on the device");
    let result = run();
    firmware::log::finish(result)
}
