//! Host/device parity: the same fine-tuning in host-sim on the host and in the firmware on
//! QEMU must give bit-identical parameters, with `libm` and with fast-math, for the MLP on
//! features and for the CNN on raw windows, the samples streamed over UART.

use crate::device::device_stream_with;
use crate::firmware::{build_firmware_featured, Math};
use crate::process::{cargo_output, check_generated_with};
use crate::qemu::{log_value, run_qemu, QemuOptions};

/// The files of the CNN's assets that host-sim's `device-assets --model cnn` writes.
const CNN_ASSETS: &[&str] = &[
    "pretrained.sgck",
    "int8.sgck",
    "finetune.sgds",
    "eval.sgds",
    "expected.json",
];

/// The MLP's assets: the CNN's files, and the replay buffer and the unshifted held-out set.
const MLP_ASSETS: &[&str] = &[
    "pretrained.sgck",
    "int8.sgck",
    "finetune.sgds",
    "eval.sgds",
    "replay.sgrb",
    "original.sgds",
    "expected.json",
];

/// The files of the new-class assets (`device-assets --new-class K`).
const NEW_CLASS_ASSETS: &[&str] = &[
    "pretrained.sgck",
    "finetune.sgds",
    "eval.sgds",
    "expected.json",
];

/// One model's parity run: what host-sim is asked and which firmware runs it how.
struct Case {
    /// `host-sim finetune` arguments that choose the model.
    model_args: &'static [&'static str],
    /// The committed assets' folder and its files (checked against what host-sim's
    /// `device-assets` writes, given `model_args`), or `None` for a model whose pre-trained
    /// checkpoint is given in `model_args` (`--pretrained`).
    assets: Option<(&'static str, &'static [&'static str])>,
    /// The firmware program and the features it needs.
    bin: &'static str,
    features: &'static [&'static str],
    /// Whether the samples are streamed over UART (else built into flash).
    stream: bool,
    /// `host-sim device-stream` arguments that choose the streamed recordings.
    stream_args: &'static [&'static str],
    /// How the device side is described in the report.
    device: &'static str,
    /// The parity line's label.
    name: &'static str,
}

const MLP: Case = Case {
    model_args: &[],
    assets: Some(("motion/assets", MLP_ASSETS)),
    bin: "finetune",
    features: &[],
    stream: true,
    stream_args: &[],
    device: "samples over UART, features on the device",
    name: "",
};

const CNN: Case = Case {
    model_args: &["--model", "cnn"],
    assets: Some(("motion/assets/cnn", CNN_ASSETS)),
    bin: "finetune-cnn",
    features: &["cnn"],
    stream: true,
    stream_args: &[],
    device: "raw windows over UART, the CNN on the device",
    name: "cnn, ",
};

/// The CNN trained in PyTorch, exported to ONNX and imported (`host-sim import`): both sides
/// start from the imported checkpoint.
const IMPORTED: Case = Case {
    model_args: &[
        "--model",
        "cnn",
        "--pretrained",
        "tests/fixtures/onnx/basicmotions/imported/model.sgck",
    ],
    assets: None,
    bin: "finetune-cnn",
    features: &["cnn", "imported"],
    stream: true,
    stream_args: &[],
    device: "raw windows over UART, the CNN imported from ONNX",
    name: "imported from ONNX, ",
};

/// The CNN quantised (`--quantize int8`): the `int8` body read in place from its checkpoint
/// on the device, the float head trained; the checkpoint's CRC covers both. The CNN's case
/// checks its asset (`int8.sgck`).
const INT8: Case = Case {
    model_args: &["--model", "cnn", "--quantize", "int8"],
    assets: None,
    bin: "finetune-cnn",
    features: &["cnn", "int8"],
    stream: true,
    stream_args: &[],
    device: "raw windows over UART, the CNN's int8 body",
    name: "int8 body, ",
};

/// The MLP pre-trained without class 3, taught it on the device (`finetune --new-class 3`):
/// the recordings of every class streamed, unshifted.
const NEW_CLASS: Case = Case {
    model_args: &["--new-class", "3"],
    assets: Some(("motion/assets/new-class", NEW_CLASS_ASSETS)),
    bin: "finetune",
    features: &["new-class"],
    stream: true,
    stream_args: &["--new-class", "3"],
    device: "samples over UART, class 3 taught as new",
    name: "new class, ",
};

/// The MLP's head trained on a replay buffer of the original installation's latents too
/// (`finetune --replay 3`); the MLP's case checks its asset (`replay.sgrb`).
const REPLAY: Case = Case {
    model_args: &["--replay", "3"],
    assets: None,
    bin: "finetune",
    features: &["replay"],
    stream: true,
    stream_args: &[],
    device: "samples over UART, 12 latent rows replayed",
    name: "replay, ",
};

/// The CRC-32 of the parameters `host-sim finetune --json ARGS` fine-tunes with `math`, as
/// it prints it (`0x...`).
pub fn host_finetune_crc(math: Math, args: &[&str]) -> Result<String, String> {
    let mut all = vec!["run", "-q", "--release", "-p", "host-sim"];
    all.extend(math.cargo_args());
    all.extend(["--", "finetune", "--json"]);
    all.extend(args);
    let json = cargo_output(&all)?;
    json.lines()
        .last()
        .and_then(|l| l.split("\"finetuned_checkpoint_crc32\":\"").nth(1))
        .and_then(|rest| rest.split('"').next())
        .map(str::to_string)
        .ok_or_else(|| "host-sim finetune --json printed no finetuned_checkpoint_crc32".to_string())
}

/// Fine-tunes on the host simulator and on the device with the given math and compares the
/// fine-tuned parameters' CRC-32. Both start from the device's pre-trained asset: with
/// `libm` the host pre-trains it again first (the assets check has shown that it gives the
/// same bytes); with fast-math the host loads it, as pre-training is not the device's job.
fn parity(case: &Case, math: Math) -> Result<(), String> {
    let mut args: Vec<&str> = case.model_args.to_vec();
    let pretrained;
    if let Some((assets, files)) = case.assets {
        let mut generate = vec!["device-assets"];
        generate.extend(case.model_args);
        check_generated_with(&generate, assets, files)?;
        pretrained = format!("{assets}/pretrained.sgck");
        if math == Math::Fast {
            args.extend(["--pretrained", &pretrained]);
        }
    }
    let host = host_finetune_crc(math, &args)?;
    let stream = if case.stream {
        Some(device_stream_with(case.stream_args)?)
    } else {
        None
    };
    let elf = build_firmware_featured(case.bin, math, case.features)?;
    let run = run_qemu(
        &elf,
        &QemuOptions {
            stream: stream.as_deref(),
            flash: None,
            args: &[],
            no_icount: false,
            machine: None,
        },
    )?;
    if run.code != 0 {
        print!("{}", run.log);
        return Err(format!("{} exited with {}", case.bin, run.code));
    }
    let device = log_value(&run.log, "checkpoint crc32")
        .ok_or(format!("{} logged no checkpoint crc32", case.bin))?
        .to_string();
    let label = math.label();
    let command = ["host-sim finetune"]
        .into_iter()
        .chain(case.model_args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    println!("host   (x86-64, {command}, {label}): parameters crc32 {host}");
    println!(
        "device (Cortex-M4F, QEMU mps2-an386, {}, {label}): parameters crc32 {device}",
        case.device
    );
    let name = case.name;
    if host == device {
        println!("parity ({name}{label}): the fine-tuned parameters are bit-identical");
        Ok(())
    } else {
        Err(format!(
            "parity ({name}{label}): the fine-tuned parameters differ"
        ))
    }
}

/// [`parity`] for the MLP with `libm`, then with fast-math; then the same for the CNN; then
/// the CNN imported from ONNX, the CNN quantised, the MLP with latent replay and the MLP
/// taught a new class, with `libm`.
pub fn host_device_parity() -> Result<(), String> {
    for case in [&MLP, &CNN] {
        parity(case, Math::Exact)?;
        parity(case, Math::Fast)?;
    }
    for case in [&IMPORTED, &INT8, &REPLAY, &NEW_CLASS] {
        parity(case, Math::Exact)?;
    }
    Ok(())
}
