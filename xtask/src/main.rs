//! `cargo xtask <command>`: the project's build, run and test helpers.
//!
//! xtask drives `cargo`, QEMU and `defmt-print` as processes; it links none of the
//! project's crates.

use std::env;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  test        every test: the workspace's tests, the core built for Cortex-M4F and
              Cortex-M0+, the exhaustive safe_div_signed check (release mode), the
              on-target tests, the firmware runs under QEMU and the host/device parity
  qemu        build the firmware and boot it twice on QEMU mps2-an386 (Cortex-M4F): samples
              streamed over UART0, fine-tuning, checkpoint to flash; then a resume from
              flash. Prints the decoded defmt log; exits with the firmware's verdict
  qemu-test   the on-target tests (kernels, gradients, formats) on the emulated Cortex-M4F
  overflow    a firmware that overflows its stack on purpose: QEMU must stop with a
              failure code (flip-link puts the stack at the bottom of RAM)
  fuzz        a million fuzzed byte streams and frames through the parser and the
              training step (release mode)
  bench       the canonical training step on the host: safegrad, a hand-written baseline
              and dfdx 0.13, batch 1 and 32 (--json: one object)
  bench-device  instructions per canonical training step on the emulated Cortex-M4F,
              safegrad against a hand-written baseline, with libm and with fast-math
              (micromath), and fast-math's largest errors (--json: one object)
  soak        100,000 streamed training steps in the host simulator, faults injected
  qemu-soak   300 streamed training frames on the device, one in 25 damaged
  parity      fine-tune on the host simulator and in QEMU, compare the final parameters
              bit for bit (CRC-32 of the checkpoint); with libm, then with fast-math
  faults      power cut at every byte program and sector erase of a checkpoint save, and
              every single-bit flip of a stored slot (--json: one object)
  exhaustive  the exhaustive check over every finite f32 denominator
  cross       the core's builds for thumbv7em-none-eabihf and thumbv6m-none-eabi";

/// The bare-metal targets the core must build for: Cortex-M4F (FPU) and Cortex-M0+ (no FPU).
const CORE_TARGETS: [&str; 2] = ["thumbv7em-none-eabihf", "thumbv6m-none-eabi"];
/// The firmware's target.
const FIRMWARE_TARGET: &str = "thumbv7em-none-eabihf";
/// QEMU's virtual time per instruction is `2^ICOUNT_SHIFT` ns; SysTick runs at the board's
/// 25 MHz (40 ns per tick), so one tick is `40 / 2^ICOUNT_SHIFT` instructions.
const ICOUNT_SHIFT: u32 = 3;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn cargo_bin() -> String {
    env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn run_status(program: &str, args: &[&str]) -> Result<(), String> {
    eprintln!("xtask: {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .current_dir(workspace_root())
        .status()
        .map_err(|e| format!("could not start {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{program} {}` failed ({status})", args.join(" ")))
    }
}

fn cargo(args: &[&str]) -> Result<(), String> {
    run_status(&cargo_bin(), args)
}

fn cargo_output(args: &[&str]) -> Result<String, String> {
    eprintln!("xtask: cargo {}", args.join(" "));
    let out = Command::new(cargo_bin())
        .args(args)
        .current_dir(workspace_root())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("could not start cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`cargo {}` failed ({})",
            args.join(" "),
            out.status
        ));
    }
    String::from_utf8(out.stdout).map_err(|e| e.to_string())
}

fn on_path(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// A cargo-installed tool, found on PATH or in cargo's bin folder, installed if missing.
fn cargo_tool(name: &str) -> Result<String, String> {
    if on_path(name) {
        return Ok(name.to_string());
    }
    let home = env::var("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|_| env::var("HOME").map(|h| Path::new(&h).join(".cargo")))
        .map_err(|_| "neither CARGO_HOME nor HOME is set".to_string())?;
    let path = home.join("bin").join(name);
    if !path.exists() {
        cargo(&["install", name, "--locked"])
            .map_err(|e| format!("{e}; install it with `cargo install {name} --locked`"))?;
    }
    Ok(path.to_string_lossy().into_owned())
}

/// QEMU for Arm, installed with apt when running as root on Debian.
fn qemu() -> Result<String, String> {
    let name = "qemu-system-arm";
    if on_path(name) {
        return Ok(name.to_string());
    }
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    if is_root && on_path("apt-get") {
        run_status("apt-get", &["update", "-qq"])?;
        run_status("apt-get", &["install", "-y", "-qq", name])?;
        if on_path(name) {
            return Ok(name.to_string());
        }
    }
    Err(format!(
        "{name} not found; install it with `sudo apt-get install -y {name}` (Debian/Ubuntu)"
    ))
}

/// Which `exp`, `ln` and `sqrt` a build computes with.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Math {
    /// `libm` (and the FPU's square root on the device): the default.
    Exact,
    /// safegrad's `fast-math` feature: micromath's approximations.
    Fast,
}

impl Math {
    /// The cargo arguments that select it for a crate with a `fast-math` feature.
    fn cargo_args(self) -> &'static [&'static str] {
        match self {
            Math::Exact => &[],
            Math::Fast => &["--features", "fast-math"],
        }
    }

    fn label(self) -> &'static str {
        match self {
            Math::Exact => "libm",
            Math::Fast => "fast-math",
        }
    }
}

/// Builds the firmware binary `bin` (release) for the device and returns the ELF's path.
fn build_firmware_bin(bin: &str) -> Result<PathBuf, String> {
    build_firmware_with(bin, Math::Exact)
}

/// [`build_firmware_bin`] with the given math.
fn build_firmware_with(bin: &str, math: Math) -> Result<PathBuf, String> {
    run_status("rustup", &["target", "add", FIRMWARE_TARGET])?;
    cargo_tool("flip-link")?;
    let mut args = vec![
        "build",
        "-p",
        "firmware",
        "--release",
        "--target",
        FIRMWARE_TARGET,
        "--bin",
        bin,
    ];
    args.extend(math.cargo_args());
    cargo(&args)?;
    Ok(workspace_root()
        .join("target")
        .join(FIRMWARE_TARGET)
        .join("release")
        .join(bin))
}

/// Builds the fine-tuning firmware and returns the ELF's path.
fn build_firmware() -> Result<PathBuf, String> {
    build_firmware_bin("firmware")
}

/// What a QEMU run gave: the decoded log and the firmware's exit code.
struct QemuRun {
    log: String,
    code: i32,
    /// What QEMU itself printed (e.g. a CPU lockup).
    stderr: String,
}

/// How to run the firmware.
#[derive(Default)]
struct QemuOptions<'a> {
    /// Stream these bytes into UART0 (and pass `stream` to the firmware).
    stream: Option<&'a [u8]>,
    /// Back the firmware's flash with this host file.
    flash: Option<&'a Path>,
    /// More semihosting arguments for the firmware.
    args: &'a [&'a str],
    /// Run without `-icount` (no instruction-exact timing, much faster for long runs).
    no_icount: bool,
}

/// Runs the ELF on `mps2-an386` with semihosting; decodes its defmt output.
fn run_qemu(elf: &Path, options: &QemuOptions<'_>) -> Result<QemuRun, String> {
    let qemu = qemu()?;
    let defmt_print = cargo_tool("defmt-print")?;
    let elf_str = elf.to_string_lossy().into_owned();
    let mut semihosting = String::from("enable=on,target=native,arg=firmware");
    if options.stream.is_some() {
        semihosting.push_str(",arg=stream");
    }
    if let Some(flash) = options.flash {
        semihosting.push_str(&format!(",arg=flash={}", flash.display()));
    }
    for arg in options.args {
        semihosting.push_str(&format!(",arg={arg}"));
    }
    let port = match options.stream {
        Some(_) => Some(
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("no free local port: {e}"))?
                .port(),
        ),
        None => None,
    };
    let serial = match port {
        Some(p) => format!("tcp:127.0.0.1:{p},server=on,wait=on"),
        None => "null".to_string(),
    };
    let icount = format!("shift={ICOUNT_SHIFT}");
    let mut args = vec![
        "-M",
        "mps2-an386",
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        serial.as_str(),
        "-semihosting-config",
        semihosting.as_str(),
        "-kernel",
        elf_str.as_str(),
    ];
    if !options.no_icount {
        args.extend(["-icount", icount.as_str()]);
    }
    eprintln!("xtask: {qemu} {}", args.join(" "));
    let mut child = Command::new(&qemu)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not start {qemu}: {e}"))?;
    let mut stdout = child.stdout.take().ok_or("no QEMU stdout")?;
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut bytes);
        bytes
    });
    let mut stderr_pipe = child.stderr.take().ok_or("no QEMU stderr")?;
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr_pipe, &mut text);
        text
    });
    // The board waits for the host side of its UART before it starts.
    let mut connection = None;
    if let (Some(p), Some(bytes)) = (port, options.stream) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut stream = loop {
            match std::net::TcpStream::connect(("127.0.0.1", p)) {
                Ok(s) => break s,
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => {
                    let _ = child.kill();
                    return Err(format!("could not connect to QEMU's UART on port {p}: {e}"));
                }
            }
        };
        stream
            .write_all(bytes)
            .map_err(|e| format!("streaming to QEMU's UART: {e}"))?;
        eprintln!("xtask: streamed {} bytes into UART0", bytes.len());
        connection = Some(stream);
    }
    let status = child.wait().map_err(|e| format!("QEMU: {e}"))?;
    drop(connection);
    let output = reader.join().map_err(|_| "reading QEMU's output failed")?;
    let stderr = err_reader.join().unwrap_or_default();
    let code = status.code().unwrap_or(-1);
    let mut decoder = Command::new(&defmt_print)
        .args(["-e", elf_str.as_str()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("could not start {defmt_print}: {e}"))?;
    if let Some(mut stdin) = decoder.stdin.take() {
        stdin
            .write_all(&output)
            .map_err(|e| format!("defmt-print: {e}"))?;
    }
    let decoded = decoder
        .wait_with_output()
        .map_err(|e| format!("defmt-print: {e}"))?;
    let log = String::from_utf8_lossy(&decoded.stdout).into_owned();
    Ok(QemuRun { log, code, stderr })
}

/// The stream of rotated recordings, written by host-sim.
fn device_stream() -> Result<Vec<u8>, String> {
    let path = workspace_root().join("target").join("device-stream.bin");
    let path_str = path.to_string_lossy().into_owned();
    cargo_output(&[
        "run",
        "-q",
        "--release",
        "-p",
        "host-sim",
        "--",
        "device-stream",
        "--out",
        &path_str,
    ])?;
    std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The value after `key` on the log line that contains it.
fn log_value<'a>(log: &'a str, key: &str) -> Option<&'a str> {
    log.lines()
        .find_map(|l| l.split_once(key).map(|(_, rest)| rest.trim()))
        .and_then(|rest| rest.split_whitespace().next())
}

/// Flash and static RAM of an ELF, from `llvm-size -A` (rustup's llvm-tools component).
/// Flash and static RAM of a firmware ELF, bytes.
struct Sizes {
    flash: u64,
    static_ram: u64,
}

fn print_sizes(elf: &Path) -> Result<Sizes, String> {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .current_dir(workspace_root())
        .output()
        .map_err(|e| format!("rustc: {e}"))?;
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_string();
    let host = Command::new("rustc")
        .args(["-vV"])
        .output()
        .map_err(|e| format!("rustc: {e}"))?;
    let host = String::from_utf8_lossy(&host.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .ok_or("rustc -vV printed no host")?;
    let tool = Path::new(&sysroot)
        .join("lib/rustlib")
        .join(host)
        .join("bin/llvm-size");
    let out = Command::new(&tool)
        .args(["-A", &elf.to_string_lossy()])
        .output()
        .map_err(|e| format!("{}: {e} (rustup component add llvm-tools)", tool.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let size = |name: &str| -> u64 {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let flash = size(".vector_table") + size(".text") + size(".rodata") + size(".data");
    let ram = size(".data") + size(".bss") + size(".uninit");
    println!(
        "xtask: firmware size: flash {flash} bytes (.text {}, .rodata {}, .data {}), static RAM {ram} bytes (.data {}, .bss {}), data flash {} bytes (checkpoints, logged samples)",
        size(".text"),
        size(".rodata"),
        size(".data"),
        size(".data"),
        size(".bss"),
        size(".storage")
    );
    Ok(Sizes {
        flash,
        static_ram: ram,
    })
}

fn print_instructions(log: &str) {
    if let Some(ticks) = log_value(log, "ticks per step").and_then(|t| t.parse::<u64>().ok()) {
        println!(
            "xtask: about {} instructions per training step (icount shift {ICOUNT_SHIFT}: {} instructions per SysTick tick)",
            ticks * 40 / (1 << ICOUNT_SHIFT),
            40 / (1 << ICOUNT_SHIFT)
        );
    }
}

/// Two boots: the first streams the rotated recordings over UART0, fine-tunes and saves the
/// checkpoint to flash (a host file); the second resumes from it.
fn qemu_command() -> Result<(), String> {
    let stream = device_stream()?;
    let elf = build_firmware()?;
    let flash = workspace_root().join("target").join("qemu-flash.bin");
    let _ = std::fs::remove_file(&flash);
    let _ = print_sizes(&elf)?;

    println!("xtask: boot 1: samples streamed over UART0, flash empty");
    let first = run_qemu(
        &elf,
        &QemuOptions {
            stream: Some(&stream),
            flash: Some(&flash),
            args: &[],
            no_icount: false,
        },
    )?;
    print!("{}", first.log);
    print_instructions(&first.log);
    if first.code != 0 {
        return Err(format!("boot 1: firmware exited with {}", first.code));
    }
    let after = log_value(&first.log, "held-out accuracy after fine-tuning:")
        .ok_or("boot 1 logged no accuracy after fine-tuning")?
        .to_string();

    println!("xtask: boot 2: built-in samples, flash kept from boot 1");
    let second = run_qemu(
        &elf,
        &QemuOptions {
            stream: None,
            flash: Some(&flash),
            args: &[],
            no_icount: false,
        },
    )?;
    print!("{}", second.log);
    if second.code != 0 {
        return Err(format!("boot 2: firmware exited with {}", second.code));
    }
    let resumed = second
        .log
        .lines()
        .find(|l| l.contains("resumed from the checkpoint in flash"))
        .and_then(|l| log_value(l, "held-out accuracy"))
        .ok_or("boot 2 did not resume from the checkpoint in flash")?;
    if resumed != after {
        return Err(format!(
            "boot 2 resumed with accuracy {resumed}, boot 1 ended with {after}"
        ));
    }
    println!("xtask: firmware exited with 0 twice; boot 2 resumed with boot 1's model ({resumed})");
    Ok(())
}

/// Builds the on-target tests and runs them on QEMU; their exit code is the verdict.
fn qemu_test() -> Result<(), String> {
    run_status("rustup", &["target", "add", FIRMWARE_TARGET])?;
    cargo_tool("flip-link")?;
    let json = cargo_output(&[
        "test",
        "-p",
        "firmware",
        "--release",
        "--target",
        FIRMWARE_TARGET,
        "--test",
        "ontarget",
        "--no-run",
        "--message-format=json",
    ])?;
    let elf = json
        .lines()
        .filter(|l| l.contains("\"name\":\"ontarget\""))
        .find_map(|l| l.split("\"executable\":\"").nth(1))
        .and_then(|rest| rest.split('"').next())
        .ok_or("cargo reported no executable for the on-target tests")?
        .to_string();
    let run = run_qemu(Path::new(&elf), &QemuOptions::default())?;
    print!("{}", run.log);
    if run.code == 0 && run.log.contains("all tests passed!") {
        println!("xtask: on-target tests passed on the emulated Cortex-M4F");
        Ok(())
    } else {
        Err(format!("on-target tests failed (exit code {})", run.code))
    }
}

/// Runs a firmware that overflows its stack on purpose: with flip-link the stack sits at the
/// bottom of RAM, so the overflow leaves RAM and faults; QEMU must stop with a failure code
/// instead of running on.
fn overflow() -> Result<(), String> {
    let elf = build_firmware_bin("overflow")?;
    let run = run_qemu(&elf, &QemuOptions::default())?;
    print!("{}", run.log);
    let lockup = run
        .stderr
        .lines()
        .find(|l| l.contains("Lockup"))
        .unwrap_or("");
    if run.code != 0 && !run.log.contains("no fault") {
        println!(
            "xtask: stack overflow caught: QEMU stopped with exit code {} ({})",
            run.code,
            if lockup.is_empty() {
                "fault"
            } else {
                lockup.trim()
            }
        );
        Ok(())
    } else {
        Err(format!(
            "the stack overflow was not caught (exit code {})",
            run.code
        ))
    }
}

/// The device benchmark: instructions per canonical training step, safegrad against the
/// hand-written baseline in the same firmware, exact under `-icount`.
/// What the device benchmark measured, in instructions.
struct StepBench {
    baseline: u64,
    safegrad: u64,
    /// Per call of `exp`, `ln` and `sqrt`.
    functions: [f64; 3],
    log: String,
}

/// Runs the device benchmark built with `math`.
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

/// The canonical fine-tuning firmware's memory: flash, static RAM and stack high-water mark
/// (one run on the built-in samples), and the minimum the model needs as the firmware
/// logs it.
struct Memory {
    sizes: Sizes,
    stack: u64,
    minimum: u64,
}

fn firmware_memory() -> Result<Memory, String> {
    let elf = build_firmware()?;
    let sizes = print_sizes(&elf)?;
    let run = run_qemu(&elf, &QemuOptions::default())?;
    if run.code != 0 {
        print!("{}", run.log);
        return Err(format!("the firmware exited with {}", run.code));
    }
    let number = |key: &str| -> Result<u64, String> {
        log_value(&run.log, key)
            .and_then(|v| v.parse().ok())
            .ok_or(format!("the firmware logged no `{key}`"))
    };
    Ok(Memory {
        sizes,
        stack: number("stack high-water mark")?,
        minimum: number("memory minimum")?,
    })
}

fn bench_device(json: bool) -> Result<(), String> {
    let exact = step_bench(Math::Exact)?;
    let fast = step_bench(Math::Fast)?;
    let memory = firmware_memory()?;
    let ram = memory.sizes.static_ram + memory.stack;
    let ram_ratio = ram as f64 / memory.minimum as f64;
    let (baseline, safegrad) = (exact.baseline, exact.safegrad);
    let macs = 6724.0;
    let per_mac = |n: u64| n as f64 / macs;
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
            "{{\"target\":\"Cortex-M4F (QEMU mps2-an386, -icount shift={ICOUNT_SHIFT})\",\"baseline_instructions_per_step\":{baseline},\"safegrad_instructions_per_step\":{safegrad},\"baseline_instructions_per_mac\":{:.2},\"safegrad_instructions_per_mac\":{:.2},\"ratio\":{:.2},\"instructions_per_call\":{},\"fast_math\":{{\"baseline_instructions_per_step\":{},\"safegrad_instructions_per_step\":{},\"safegrad_speedup\":{speedup:.3},\"instructions_per_call\":{},\"max_error\":{errors}}},\"memory\":{{\"flash_bytes\":{},\"static_ram_bytes\":{},\"stack_high_water_bytes\":{},\"ram_bytes\":{ram},\"model_minimum_bytes\":{},\"ram_to_minimum\":{ram_ratio:.2}}}}}",
            per_mac(baseline),
            per_mac(safegrad),
            safegrad as f64 / baseline as f64,
            functions(&exact.functions),
            fast.baseline,
            fast.safegrad,
            functions(&fast.functions),
            memory.sizes.flash,
            memory.sizes.static_ram,
            memory.stack,
            memory.minimum,
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
    }
    Ok(())
}

/// Frames of the device's soak run.
const SOAK_FRAMES: u64 = 300;

/// A streamed soak on the device (`firmware/src/bin/soak.rs`): 300 training frames over
/// UART0 (each byte crosses the emulated UART one at a time), one in 25 damaged on purpose;
/// one training step per good frame. Every good frame must train, and the tape must not
/// grow.
fn qemu_soak() -> Result<(), String> {
    let path = workspace_root().join("target").join("soak-stream.bin");
    let path_str = path.to_string_lossy().into_owned();
    let frames = SOAK_FRAMES.to_string();
    let report = cargo_output(&[
        "run",
        "-q",
        "--release",
        "-p",
        "host-sim",
        "--",
        "device-stream",
        "--out",
        &path_str,
        "--soak",
        &frames,
        "--fault-every",
        "25",
    ])?;
    let injected: u64 = ["corrupted", "nan", "out_of_range", "bad_label", "truncated"]
        .iter()
        .filter_map(|k| {
            report
                .split(&format!("\"{k}\":"))
                .nth(1)
                .and_then(|rest| rest.split([',', '}']).next())
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .sum();
    let stream = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let elf = build_firmware_bin("soak")?;
    let run = run_qemu(
        &elf,
        &QemuOptions {
            stream: Some(&stream),
            flash: None,
            args: &[],
            no_icount: true,
        },
    )?;
    print!("{}", run.log);
    let steps: u64 = log_value(&run.log, "soak:")
        .and_then(|v| v.parse().ok())
        .ok_or("the firmware logged no soak result")?;
    let expected = SOAK_FRAMES - injected;
    if run.code == 0 && steps == expected && run.log.contains("no growth") {
        println!(
            "xtask: device soak: {steps} training steps from {SOAK_FRAMES} frames, the {injected} damaged ones refused, no growth"
        );
        Ok(())
    } else {
        Err(format!(
            "device soak: {steps} steps, expected {expected} (exit code {})",
            run.code
        ))
    }
}

/// Checks that the firmware's embedded assets are what host-sim produces now.
fn check_assets() -> Result<(), String> {
    let fresh = workspace_root().join("target").join("device-assets");
    let fresh_str = fresh.to_string_lossy().into_owned();
    cargo_output(&[
        "run",
        "-q",
        "--release",
        "-p",
        "host-sim",
        "--",
        "device-assets",
        "--out",
        &fresh_str,
    ])?;
    let committed = workspace_root().join("firmware").join("assets");
    for name in [
        "pretrained.sgck",
        "finetune.sgds",
        "eval.sgds",
        "expected.json",
    ] {
        let a = std::fs::read(fresh.join(name)).map_err(|e| format!("{name}: {e}"))?;
        let b = std::fs::read(committed.join(name)).map_err(|e| format!("{name}: {e}"))?;
        if a != b {
            return Err(format!(
                "firmware/assets/{name} differs from what host-sim writes now; \
                 regenerate with `cargo run --release -p host-sim -- device-assets`"
            ));
        }
    }
    Ok(())
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
        args.extend(["--pretrained", "firmware/assets/pretrained.sgck"]);
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
    let elf = build_firmware_with("firmware", math)?;
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

/// Power cuts at every point of a checkpoint save and every bit flip of a stored slot, on the
/// simulated NOR flash (host-sim faults); prints its report (one JSON object with `--json`).
fn faults(json: bool) -> Result<(), String> {
    let mut args = vec!["run", "-q", "--release", "-p", "host-sim", "--", "faults"];
    if json {
        args.push("--json");
    }
    cargo(&args)
}

/// The host benchmark: safegrad, a hand-written baseline and dfdx 0.13 on the canonical
/// step, batch 1 and 32, single-threaded, in one run.
fn bench(json: bool) -> Result<(), String> {
    let mut args = vec![
        "run",
        "--release",
        "-p",
        "host-sim",
        "--features",
        "peers",
        "--bin",
        "bench",
    ];
    if json {
        args.extend(["--", "--json"]);
    }
    cargo(&args)
}

/// A million fuzzed inputs through the sample-stream parser and the training step.
fn fuzz() -> Result<(), String> {
    cargo(&[
        "test",
        "--release",
        "-p",
        "safegrad-tests",
        "--test",
        "fuzz_stream",
        "--",
        "--ignored",
        "--nocapture",
    ])
}

/// 100,000 streamed training steps in the host simulator, with faults injected.
fn soak() -> Result<(), String> {
    cargo(&["run", "-q", "--release", "-p", "host-sim", "--", "soak"])
}

fn cross() -> Result<(), String> {
    for target in CORE_TARGETS {
        cargo(&["build", "-p", "safegrad", "--target", target])?;
        cargo(&[
            "build",
            "-p",
            "safegrad",
            "--target",
            target,
            "--features",
            "defmt,fast-math",
        ])?;
    }
    Ok(())
}

fn exhaustive() -> Result<(), String> {
    cargo(&[
        "test",
        "--release",
        "-p",
        "safegrad-tests",
        "--test",
        "exhaustive",
        "--",
        "--ignored",
        "--nocapture",
    ])
}

fn run(command: &str, json_flag: bool) -> Result<(), String> {
    match command {
        "test" => {
            cargo(&["test", "--workspace"])?;
            cargo(&["test", "-p", "safegrad", "--features", "fast-math", "--lib"])?;
            cross()?;
            exhaustive()?;
            fuzz()?;
            faults(false)?;
            qemu_test()?;
            overflow()?;
            qemu_soak()?;
            soak()?;
            qemu_command()?;
            parity(Math::Exact)?;
            parity(Math::Fast)
        }
        "qemu" => qemu_command(),
        "qemu-test" => qemu_test(),
        "overflow" => overflow(),
        "qemu-soak" => qemu_soak(),
        "soak" => soak(),
        "fuzz" => fuzz(),
        "bench-device" => bench_device(json_flag),
        "bench" => bench(json_flag),
        "faults" => faults(json_flag),
        "parity" => parity(Math::Exact).and_then(|()| parity(Math::Fast)),
        "exhaustive" => exhaustive(),
        "cross" => cross(),
        other => Err(format!("unknown command `{other}`\n\n{USAGE}")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let Some(command) = args.first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    if command == "-h" || command == "--help" {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let json_flag = args.iter().any(|a| a == "--json");
    match run(command, json_flag) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}
