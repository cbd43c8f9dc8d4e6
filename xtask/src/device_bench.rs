//! The device benchmark: instructions per canonical training step on the emulated
//! Cortex-M4F (exact under `-icount`), safegrad against a hand-written baseline in the same
//! firmware, with `libm` and with fast-math; the cost of `exp`, `ln` and `sqrt`; and the
//! fine-tuning firmware's memory against the model's minimum.

use crate::firmware::{
    build_firmware, build_firmware_featured, build_firmware_with, print_sizes, Math, Sizes,
};
use crate::process::{cargo, cargo_output, workspace_root};
use crate::qemu::{log_value, run_qemu, QemuOptions, ICOUNT_SHIFT};

/// Multiply-accumulates of one canonical training step as the benchmarks count them
/// (`bench_steps::MACS`).
const MACS_PER_STEP: f64 = 6724.0;

/// What the device benchmark measured, in instructions.
struct StepBench {
    /// The hand-written baseline's training step.
    baseline: u64,
    /// safegrad's training step.
    safegrad: u64,
    /// Per call of `exp`, `ln` and `sqrt`.
    functions: [f64; 3],
    /// The benchmark firmware's decoded log.
    log: String,
}

/// Runs the device benchmark (`firmware/src/bin/stepbench.rs`) built with `math`.
fn step_bench(math: Math) -> Result<StepBench, String> {
    let elf = build_firmware_with("stepbench", math)?;
    let run = run_qemu(&elf, &QemuOptions::default())?;
    if run.code != 0 {
        print!("{}", run.log);
        return Err(format!("the device benchmark exited with {}", run.code));
    }
    let per_tick = 40 / (1u64 << ICOUNT_SHIFT);
    let value = |what: &str, key: &str| -> Result<u64, String> {
        run.log
            .lines()
            .find(|l| l.contains(what))
            .and_then(|line| log_value(line, key))
            .map(|v| v.trim_end_matches(','))
            .and_then(|v| v.parse().ok())
            .ok_or(format!("the benchmark logged no `{key}` in `{what}`"))
    };
    let calls = value("function ticks", "per")?;
    let per_call = |key| -> Result<f64, String> {
        Ok((value("function ticks", key)? * per_tick) as f64 / calls as f64)
    };
    Ok(StepBench {
        baseline: value("ticks per step", "baseline")? * per_tick,
        safegrad: value("ticks per step", "safegrad")? * per_tick,
        functions: [per_call("exp")?, per_call("ln")?, per_call("sqrt")?],
        log: run.log,
    })
}

/// One convolution of the device's convolution benchmark, in instructions per call.
struct ConvBench {
    /// Its name in the log (`conv1`, `conv2`).
    name: String,
    /// Multiply-accumulates of its forward pass (the backward does twice as many: the input's
    /// gradient and the kernel's).
    macs: u64,
    /// Forward, hand-written and safegrad.
    forward: [u64; 2],
    /// Backward (input, kernel and bias gradients), hand-written and safegrad.
    backward: [u64; 2],
}

/// One int8 kernel's measurement, instructions per call.
struct Int8Bench {
    /// Its name in the log (`linear-32-32`, `conv2`, ...).
    name: String,
    /// Multiply-accumulates of one call.
    macs: u64,
    /// Hand-written and safegrad.
    instructions: [u64; 2],
}

/// Runs the convolution benchmark (`firmware/src/bin/convbench.rs`, the `cnn` feature):
/// `MotionCnn`'s two convolutions, safegrad's kernels against plain loops; then the int8
/// kernels against plain loops.
fn conv_bench() -> Result<(Vec<ConvBench>, Vec<Int8Bench>, String), String> {
    let elf = build_firmware_featured("convbench", Math::Exact, &["cnn"])?;
    let run = run_qemu(&elf, &QemuOptions::default())?;
    if run.code != 0 {
        print!("{}", run.log);
        return Err(format!(
            "the convolution benchmark exited with {}",
            run.code
        ));
    }
    let per_tick = 40 / (1u64 << ICOUNT_SHIFT);
    let mut rows = Vec::new();
    for line in run.log.lines().filter(|l| l.contains("conv bench:")) {
        let name = log_value(line, "conv bench:").unwrap_or("?").to_string();
        let number = |key: &str| -> Result<u64, String> {
            log_value(line, key)
                .and_then(|v| v.parse().ok())
                .ok_or(format!("the convolution benchmark logged no `{key}`"))
        };
        let after = |part: &str, key: &str| -> Result<u64, String> {
            let rest = line.split_once(part).map(|(_, r)| r).unwrap_or("");
            log_value(rest, key)
                .and_then(|v| v.parse::<u64>().ok())
                .map(|v| v * per_tick)
                .ok_or(format!("the convolution benchmark logged no {part} {key}"))
        };
        rows.push(ConvBench {
            name,
            macs: number("macs")?,
            forward: [after("forward", "baseline")?, after("forward", "safegrad")?],
            backward: [
                after("backward", "baseline")?,
                after("backward", "safegrad")?,
            ],
        });
    }
    if rows.is_empty() {
        return Err("the convolution benchmark logged no results".into());
    }
    let mut int8 = Vec::new();
    for line in run.log.lines().filter(|l| l.contains("int8 bench:")) {
        let number = |key: &str| -> Result<u64, String> {
            log_value(line, key)
                .and_then(|v| v.parse().ok())
                .ok_or(format!("the int8 benchmark logged no `{key}`"))
        };
        int8.push(Int8Bench {
            name: log_value(line, "int8 bench:").unwrap_or("?").to_string(),
            macs: number("macs")?,
            instructions: [
                number("baseline")? * per_tick,
                number("safegrad")? * per_tick,
            ],
        });
    }
    if int8.is_empty() {
        return Err("the int8 benchmark logged no results".into());
    }
    Ok((rows, int8, run.log))
}

/// The canonical fine-tuning firmware's memory, bytes.
struct Memory {
    /// Flash and static RAM, from the ELF.
    sizes: Sizes,
    /// The stack's high-water mark in one run on the built-in samples, as the firmware logs it.
    stack: u64,
    /// The minimum the model needs (parameters, gradients, activations, optimiser state), as
    /// the firmware logs it.
    minimum: u64,
}

/// Builds the fine-tuning firmware, prints its sizes and runs it once on the built-in
/// samples for its stack high-water mark and the model's minimum.
fn firmware_memory() -> Result<Memory, String> {
    memory_of(&build_firmware()?).map(|(memory, _, _)| memory)
}

/// [`firmware_memory`] for the ELF of any fine-tuning program; also returns the
/// instructions per training step it logs, and its log.
fn memory_of(elf: &std::path::Path) -> Result<(Memory, u64, String), String> {
    let sizes = print_sizes(elf)?;
    let run = run_qemu(elf, &QemuOptions::default())?;
    if run.code != 0 {
        print!("{}", run.log);
        return Err(format!("the firmware exited with {}", run.code));
    }
    let number = |key: &str| -> Result<u64, String> {
        log_value(&run.log, key)
            .and_then(|v| v.parse().ok())
            .ok_or(format!("the firmware logged no `{key}`"))
    };
    let per_tick = 40 / (1u64 << ICOUNT_SHIFT);
    Ok((
        Memory {
            sizes,
            stack: number("stack high-water mark")?,
            minimum: number("memory minimum")?,
        },
        number("ticks per step")? * per_tick,
        run.log,
    ))
}

/// The CNN's fine-tuning firmware with its body in `int8` (`finetune-cnn`, feature
/// `int8`) against the float one.
struct Int8Firmware {
    memory: Memory,
    /// Instructions per training step (the head's, on a latent).
    step: u64,
    /// Instructions of one window through the `int8` body.
    body: u64,
    /// Bytes of the float and of the quantised pre-trained checkpoint.
    checkpoint: [u64; 2],
}

fn int8_firmware() -> Result<Int8Firmware, String> {
    let elf = build_firmware_featured("finetune-cnn", Math::Exact, &["cnn", "int8"])?;
    let (memory, step, log) = memory_of(&elf)?;
    let per_tick = 40 / (1u64 << ICOUNT_SHIFT);
    let body = log_value(&log, "int8 body ticks per window")
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or("the int8 firmware logged no ticks per window")?
        * per_tick;
    let size = |name: &str| -> Result<u64, String> {
        let path = workspace_root().join("motion/assets/cnn").join(name);
        std::fs::metadata(&path)
            .map(|m| m.len())
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    Ok(Int8Firmware {
        memory,
        step,
        body,
        checkpoint: [size("pretrained.sgck")?, size("int8.sgck")?],
    })
}

/// Runs the device benchmark with `libm` and with fast-math and measures the firmware's
/// memory; prints Markdown tables (and fast-math's largest errors, from host-sim's
/// `fastmath-error`), or with `json` one JSON object.
pub fn bench_device(json: bool) -> Result<(), String> {
    let exact = step_bench(Math::Exact)?;
    let fast = step_bench(Math::Fast)?;
    let (convs, int8, conv_log) = conv_bench()?;
    let memory = firmware_memory()?;
    let ram = memory.sizes.static_ram + memory.stack;
    let (cnn, cnn_step, _) = memory_of(&build_firmware_featured(
        "finetune-cnn",
        Math::Exact,
        &["cnn"],
    )?)?;
    let q = int8_firmware()?;
    let q_ram = q.memory.sizes.static_ram + q.memory.stack;
    let cnn_ram = cnn.sizes.static_ram + cnn.stack;
    let cnn_ratio = cnn_ram as f64 / cnn.minimum as f64;
    let conv_per_mac = |c: &ConvBench| {
        let f = |n: u64| n as f64 / c.macs as f64;
        let b = |n: u64| n as f64 / (2 * c.macs) as f64;
        [
            f(c.forward[0]),
            f(c.forward[1]),
            b(c.backward[0]),
            b(c.backward[1]),
        ]
    };
    let ram_ratio = ram as f64 / memory.minimum as f64;
    let (baseline, safegrad) = (exact.baseline, exact.safegrad);
    let per_mac = |n: u64| n as f64 / MACS_PER_STEP;
    let speedup = safegrad as f64 / fast.safegrad as f64;
    let functions = |f: &[f64; 3]| {
        format!(
            "{{\"exp\":{:.1},\"ln\":{:.1},\"sqrt\":{:.1}}}",
            f[0], f[1], f[2]
        )
    };
    if json {
        let mut errors_args = vec!["run", "-q", "--release", "-p", "host-sim", "--bin"];
        errors_args.extend(["fastmath-error", "--", "--json"]);
        let errors = cargo_output(&errors_args)?;
        let errors = errors
            .lines()
            .last()
            .and_then(|l| l.strip_prefix("{\"fast_math_max_error\":"))
            .and_then(|l| l.strip_suffix('}'))
            .ok_or("fastmath-error printed no fast_math_max_error")?
            .to_string();
        println!(
            "{{\"target\":\"Cortex-M4F (QEMU mps2-an386, -icount shift={ICOUNT_SHIFT})\",\"baseline_instructions_per_step\":{baseline},\"safegrad_instructions_per_step\":{safegrad},\"baseline_instructions_per_mac\":{:.2},\"safegrad_instructions_per_mac\":{:.2},\"ratio\":{:.2},\"instructions_per_call\":{},\"conv\":[{}],\"int8\":[{}],\"fast_math\":{{\"baseline_instructions_per_step\":{},\"safegrad_instructions_per_step\":{},\"safegrad_speedup\":{speedup:.3},\"instructions_per_call\":{},\"max_error\":{errors}}},\"memory\":{{\"flash_bytes\":{},\"static_ram_bytes\":{},\"stack_high_water_bytes\":{},\"ram_bytes\":{ram},\"model_minimum_bytes\":{},\"ram_to_minimum\":{ram_ratio:.2}}},\"cnn_firmware\":{{\"instructions_per_step\":{cnn_step},\"flash_bytes\":{},\"static_ram_bytes\":{},\"stack_high_water_bytes\":{},\"ram_bytes\":{cnn_ram},\"model_minimum_bytes\":{},\"ram_to_minimum\":{cnn_ratio:.2}}},\"cnn_int8_firmware\":{{\"instructions_per_step\":{},\"instructions_per_window_through_the_body\":{},\"flash_bytes\":{},\"static_ram_bytes\":{},\"stack_high_water_bytes\":{},\"ram_bytes\":{q_ram},\"checkpoint_bytes\":{},\"float_checkpoint_bytes\":{}}}}}",
            per_mac(baseline),
            per_mac(safegrad),
            safegrad as f64 / baseline as f64,
            functions(&exact.functions),
            convs
                .iter()
                .map(|c| {
                    let [fb, fs, bb, bs] = conv_per_mac(c);
                    format!(
                        "{{\"name\":\"{}\",\"macs\":{},\"forward_baseline_per_mac\":{fb:.2},\"forward_safegrad_per_mac\":{fs:.2},\"backward_baseline_per_mac\":{bb:.2},\"backward_safegrad_per_mac\":{bs:.2}}}",
                        c.name, c.macs
                    )
                })
                .collect::<Vec<_>>()
                .join(","),
            int8.iter()
                .map(|q| {
                    format!(
                        "{{\"name\":\"{}\",\"macs\":{},\"baseline_per_mac\":{:.2},\"safegrad_per_mac\":{:.2}}}",
                        q.name,
                        q.macs,
                        q.instructions[0] as f64 / q.macs as f64,
                        q.instructions[1] as f64 / q.macs as f64
                    )
                })
                .collect::<Vec<_>>()
                .join(","),
            fast.baseline,
            fast.safegrad,
            functions(&fast.functions),
            memory.sizes.flash,
            memory.sizes.static_ram,
            memory.stack,
            memory.minimum,
            cnn.sizes.flash,
            cnn.sizes.static_ram,
            cnn.stack,
            cnn.minimum,
            q.step,
            q.body,
            q.memory.sizes.flash,
            q.memory.sizes.static_ram,
            q.memory.stack,
            q.checkpoint[1],
            q.checkpoint[0],
        );
    } else {
        print!("{}{}", exact.log, fast.log);
        println!("| Cortex-M4F (QEMU, -icount shift={ICOUNT_SHIFT}) | instructions per step | per multiply-accumulate | ratio to baseline |");
        println!("| --- | --- | --- | --- |");
        let row = |name: &str, n: u64| {
            println!(
                "| {name} | {n} | {:.2} | {:.2} |",
                per_mac(n),
                n as f64 / baseline as f64
            );
        };
        row("hand-written baseline", baseline);
        row("safegrad", safegrad);
        row("hand-written baseline, fast-math", fast.baseline);
        row("safegrad, fast-math", fast.safegrad);
        println!("fast-math speed-up of safegrad's step: {speedup:.3}x");
        print!("{conv_log}");
        println!("| convolution (M4F), instructions per multiply-accumulate | MACs | forward, hand-written | forward, safegrad | backward, hand-written | backward, safegrad |");
        println!("| --- | ---: | ---: | ---: | ---: | ---: |");
        for c in &convs {
            let [fb, fs, bb, bs] = conv_per_mac(c);
            println!(
                "| {} | {} | {fb:.2} | {fs:.2} | {bb:.2} | {bs:.2} |",
                c.name, c.macs
            );
        }
        println!("| int8 kernel (M4F), instructions per multiply-accumulate | MACs | hand-written | safegrad |");
        println!("| --- | ---: | ---: | ---: |");
        for q in &int8 {
            println!(
                "| {} | {} | {:.2} | {:.2} |",
                q.name,
                q.macs,
                q.instructions[0] as f64 / q.macs as f64,
                q.instructions[1] as f64 / q.macs as f64
            );
        }
        println!("| instructions per call | exp | ln | sqrt |");
        println!("| --- | ---: | ---: | ---: |");
        for (name, f) in [
            ("libm", exact.functions),
            ("fast-math (micromath)", fast.functions),
        ] {
            println!("| {name} | {:.1} | {:.1} | {:.1} |", f[0], f[1], f[2]);
        }
        cargo(&[
            "run",
            "-q",
            "--release",
            "-p",
            "host-sim",
            "--bin",
            "fastmath-error",
        ])?;
        println!("| canonical fine-tuning firmware | bytes |");
        println!("| --- | ---: |");
        println!(
            "| flash (code and read-only data) | {} |",
            memory.sizes.flash
        );
        println!("| static RAM | {} |", memory.sizes.static_ram);
        println!("| stack high-water mark | {} |", memory.stack);
        println!("| RAM, static and stack | {ram} |");
        println!(
            "| the model's minimum (parameters, gradients, activations, optimiser state) | {} |",
            memory.minimum
        );
        println!("RAM is {ram_ratio:.2}x the model's minimum");
        println!("| the CNN's fine-tuning firmware (finetune-cnn) | bytes |");
        println!("| --- | ---: |");
        println!(
            "| flash (code and read-only data, the raw windows included) | {} |",
            cnn.sizes.flash
        );
        println!("| static RAM | {} |", cnn.sizes.static_ram);
        println!("| stack high-water mark | {} |", cnn.stack);
        println!("| RAM, static and stack | {cnn_ram} |");
        println!("| the model's minimum | {} |", cnn.minimum);
        println!("the CNN's RAM is {cnn_ratio:.2}x its minimum; about {cnn_step} instructions per training step");
        println!("| the CNN's fine-tuning firmware | float body | int8 body |");
        println!("| --- | ---: | ---: |");
        println!(
            "| pre-trained checkpoint in flash, bytes | {} | {} |",
            q.checkpoint[0], q.checkpoint[1]
        );
        println!(
            "| flash (code and read-only data, the raw windows included), bytes | {} | {} |",
            cnn.sizes.flash, q.memory.sizes.flash
        );
        println!(
            "| static RAM, bytes | {} | {} |",
            cnn.sizes.static_ram, q.memory.sizes.static_ram
        );
        println!(
            "| stack high-water mark, bytes | {} | {} |",
            cnn.stack, q.memory.stack
        );
        println!("| RAM, static and stack, bytes | {cnn_ram} | {q_ram} |");
        println!(
            "| instructions per training step | {cnn_step} | {} |",
            q.step
        );
        println!(
            "| instructions per window through the frozen body | in every step | {} (once per window) |",
            q.body
        );
    }
    Ok(())
}
