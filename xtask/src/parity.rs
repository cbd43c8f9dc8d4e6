//! Host/device parity: the same fine-tuning in host-sim on the host and in the firmware on
//! QEMU must give bit-identical parameters, with `libm` and with fast-math.

use crate::device::device_stream;
use crate::firmware::{build_firmware_featured, build_firmware_with, Math};
use crate::process::{cargo_output, check_generated, check_generated_with};
use crate::qemu::{log_value, run_qemu, QemuOptions};

/// The files of `motion/assets/` that host-sim's `device-assets` writes.
const ASSETS: [&str; 4] = [
    "pretrained.sgck",
    "finetune.sgds",
    "eval.sgds",
    "expected.json",
];

/// Checks that the firmware's embedded assets are what host-sim produces now.
fn check_assets() -> Result<(), String> {
    check_generated("device-assets", "motion/assets", &ASSETS)
}

/// Fine-tunes on the host simulator and on the device with the given math and compares the
/// fine-tuned parameters' CRC-32. Both start from the device's pre-trained asset: with
/// `libm` the host pre-trains it again first (`check_assets` has checked that it gives the
/// same bytes); with fast-math the host loads it, as pre-training is not the device's job.
fn parity(math: Math) -> Result<(), String> {
    check_assets()?;
    let mut args = vec!["run", "-q", "--release", "-p", "host-sim"];
    args.extend(math.cargo_args());
    args.extend(["--", "finetune", "--json"]);
    if math == Math::Fast {
        args.extend(["--pretrained", "motion/assets/pretrained.sgck"]);
    }
    let json = cargo_output(&args)?;
    let host = json
        .lines()
        .last()
        .and_then(|l| l.split("\"finetuned_checkpoint_crc32\":\"").nth(1))
        .and_then(|rest| rest.split('"').next())
        .ok_or("host-sim finetune --json printed no finetuned_checkpoint_crc32")?
        .to_string();
    let stream = device_stream()?;
    let elf = build_firmware_with("finetune", math)?;
    let run = run_qemu(
        &elf,
        &QemuOptions {
            stream: Some(&stream),
            flash: None,
            args: &[],
            no_icount: false,
        },
    )?;
    if run.code != 0 {
        print!("{}", run.log);
        return Err(format!("firmware exited with {}", run.code));
    }
    let device = log_value(&run.log, "checkpoint crc32")
        .ok_or("the firmware logged no checkpoint crc32")?
        .to_string();
    let label = math.label();
    println!("host   (x86-64, host-sim finetune, {label}): parameters crc32 {host}");
    println!("device (Cortex-M4F, QEMU mps2-an386, samples over UART, features on the device, {label}): parameters crc32 {device}");
    if host == device {
        println!("parity ({label}): the fine-tuned parameters are bit-identical");
        Ok(())
    } else {
        Err(format!(
            "parity ({label}): the fine-tuned parameters differ"
        ))
    }
}

/// The CRC-32 `host-sim finetune --json` with `args` reports for the fine-tuned model.
fn host_crc(math: Math, args: &[&str]) -> Result<String, String> {
    let mut cargo_args = vec!["run", "-q", "--release", "-p", "host-sim"];
    cargo_args.extend(math.cargo_args());
    cargo_args.extend(["--", "finetune", "--json"]);
    cargo_args.extend(args);
    let json = cargo_output(&cargo_args)?;
    json.lines()
        .last()
        .and_then(|l| l.split("\"finetuned_checkpoint_crc32\":\"").nth(1))
        .and_then(|rest| rest.split('"').next())
        .map(str::to_string)
        .ok_or_else(|| "host-sim finetune --json printed no finetuned_checkpoint_crc32".into())
}

/// The CNN on raw windows: `host-sim finetune --model cnn` on the host and the firmware's
/// `finetune-cnn` (built-in raw windows) on QEMU, with the given math.
fn cnn_parity(math: Math) -> Result<(), String> {
    check_generated_with(
        &["device-assets", "--model", "cnn"],
        "motion/assets/cnn",
        &ASSETS,
    )?;
    let host = match math {
        Math::Exact => host_crc(math, &["--model", "cnn"])?,
        Math::Fast => host_crc(
            math,
            &[
                "--model",
                "cnn",
                "--pretrained",
                "motion/assets/cnn/pretrained.sgck",
            ],
        )?,
    };
    let elf = build_firmware_featured("finetune-cnn", math, &["cnn"])?;
    let run = run_qemu(
        &elf,
        &QemuOptions {
            stream: None,
            flash: None,
            args: &[],
            no_icount: false,
        },
    )?;
    if run.code != 0 {
        print!("{}", run.log);
        return Err(format!("the CNN firmware exited with {}", run.code));
    }
    let device = log_value(&run.log, "checkpoint crc32")
        .ok_or("the CNN firmware logged no checkpoint crc32")?
        .to_string();
    let label = math.label();
    println!("host   (x86-64, host-sim finetune --model cnn, {label}): parameters crc32 {host}");
    println!("device (Cortex-M4F, QEMU mps2-an386, the CNN on raw windows in flash, {label}): parameters crc32 {device}");
    if host == device {
        println!("parity (cnn, {label}): the fine-tuned parameters are bit-identical");
        Ok(())
    } else {
        Err(format!(
            "parity (cnn, {label}): the fine-tuned parameters differ"
        ))
    }
}

/// [`parity`] with `libm`, then with fast-math; then the same for the CNN.
pub fn host_device_parity() -> Result<(), String> {
    parity(Math::Exact)?;
    parity(Math::Fast)?;
    cnn_parity(Math::Exact)?;
    cnn_parity(Math::Fast)
}
