//! Running a firmware ELF on QEMU: the `mps2-an386` board (Cortex-M4F) unless another
//! [`Machine`] is asked for; semihosting arguments, bytes streamed into UART0 over a local
//! TCP socket, and the defmt log decoded with `defmt-print`.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{cargo_tool, qemu_system};

/// QEMU's virtual time per instruction is `2^ICOUNT_SHIFT` ns; SysTick runs at the board's
/// 25 MHz (40 ns per tick), so one tick is `40 / 2^ICOUNT_SHIFT` instructions.
pub const ICOUNT_SHIFT: u32 = 3;

/// A QEMU machine a firmware board runs on (`firmware/src/board/`).
pub struct Machine {
    /// QEMU's name for it (`-M`).
    pub name: &'static str,
    /// The QEMU program that has it.
    pub qemu: &'static str,
    /// The Debian package that installs that program.
    pub package: &'static str,
    /// The rate of the counter the firmware's ticks come from, Hz: SysTick on the core
    /// clock on the Cortex-M machines, the CLINT's `mtime` on RISC-V `virt`.
    pub tick_hz: u64,
    /// More QEMU arguments the machine needs.
    pub extra: &'static [&'static str],
}

impl Machine {
    /// Instructions per tick under `-icount shift=ICOUNT_SHIFT`: QEMU's virtual clock
    /// advances `2^ICOUNT_SHIFT` ns per instruction.
    pub fn instructions_per_tick(&self) -> f64 {
        1e9 / self.tick_hz as f64 / f64::from(1u32 << ICOUNT_SHIFT)
    }
}

/// QEMU's `mps2-an386` (Cortex-M4F): SysTick at the board's 25 MHz.
pub const MPS2_AN386: Machine = Machine {
    name: "mps2-an386",
    qemu: "qemu-system-arm",
    package: "qemu-system-arm",
    tick_hz: 25_000_000,
    extra: &[],
};

/// How long to wait for QEMU to open the host side of UART0.
const UART_CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// What a QEMU run gave: the decoded log and the firmware's exit code.
pub struct QemuRun {
    /// The firmware's defmt log, decoded.
    pub log: String,
    /// QEMU's exit code: the firmware's, through semihosting (-1 if QEMU was killed).
    pub code: i32,
    /// What QEMU itself printed (e.g. a CPU lockup).
    pub stderr: String,
}

/// How to run the firmware.
#[derive(Default)]
pub struct QemuOptions<'a> {
    /// Stream these bytes into UART0 (and pass `stream` to the firmware).
    pub stream: Option<&'a [u8]>,
    /// Back the firmware's flash with this host file.
    pub flash: Option<&'a Path>,
    /// More semihosting arguments for the firmware.
    pub args: &'a [&'a str],
    /// Run without `-icount` (no instruction-exact timing, much faster for long runs).
    pub no_icount: bool,
    /// The machine (none: [`MPS2_AN386`]).
    pub machine: Option<&'a Machine>,
}

/// QEMU's `-semihosting-config` value: the firmware's arguments (`firmware`, then `stream`,
/// `flash=<file>` and `options.args` as the options ask).
fn semihosting_config(options: &QemuOptions<'_>) -> String {
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
    semihosting
}

/// Runs the ELF on its machine with semihosting; decodes its defmt output.
pub fn run_qemu(elf: &Path, options: &QemuOptions<'_>) -> Result<QemuRun, String> {
    let machine = options.machine.unwrap_or(&MPS2_AN386);
    let qemu = qemu_system(machine.qemu, machine.package)?;
    let defmt_print = cargo_tool("defmt-print")?;
    let elf_str = elf.to_string_lossy().into_owned();
    let semihosting = semihosting_config(options);
    let port = match options.stream {
        Some(_) => Some(
            TcpListener::bind("127.0.0.1:0")
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
        machine.name,
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
    args.extend(machine.extra);
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
        let _ = stdout.read_to_end(&mut bytes);
        bytes
    });
    let mut stderr_pipe = child.stderr.take().ok_or("no QEMU stderr")?;
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text);
        text
    });
    // The board waits for the host side of its UART before it starts.
    let mut connection = None;
    if let (Some(p), Some(bytes)) = (port, options.stream) {
        let deadline = Instant::now() + UART_CONNECT_TIMEOUT;
        let mut stream = loop {
            match TcpStream::connect(("127.0.0.1", p)) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
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
    let log = decode_defmt(&defmt_print, &elf_str, &output)?;
    Ok(QemuRun { log, code, stderr })
}

/// The defmt frames `output` decoded by `defmt_print` with the ELF's symbols, as text.
fn decode_defmt(defmt_print: &str, elf: &str, output: &[u8]) -> Result<String, String> {
    let mut decoder = Command::new(defmt_print)
        .args(["-e", elf])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("could not start {defmt_print}: {e}"))?;
    if let Some(mut stdin) = decoder.stdin.take() {
        stdin
            .write_all(output)
            .map_err(|e| format!("defmt-print: {e}"))?;
    }
    let decoded = decoder
        .wait_with_output()
        .map_err(|e| format!("defmt-print: {e}"))?;
    Ok(String::from_utf8_lossy(&decoded.stdout).into_owned())
}

/// The value after `key` on the log line that contains it.
pub fn log_value<'a>(log: &'a str, key: &str) -> Option<&'a str> {
    log.lines()
        .find_map(|l| l.split_once(key).map(|(_, rest)| rest.trim()))
        .and_then(|rest| rest.split_whitespace().next())
}
