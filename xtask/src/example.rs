//! `cargo xtask example`: the first program (`firmware/examples/quickstart.rs`) on the
//! emulated Cortex-M4F, after checking that its embedded assets are what `host-sim
//! example-assets` writes now.

use crate::firmware::build_example;
use crate::process::{check_generated, workspace_root};
use crate::qemu::{log_value, run_qemu, QemuOptions};

/// The program's source, relative to the repository.
const SOURCE: &str = "firmware/examples/quickstart.rs";

/// The files `host-sim example-assets` writes for the program.
const ASSETS: [&str; 3] = ["digits.sgck", "digits-train.sgds", "digits-eval.sgds"];

/// Checks that the program's assets are what host-sim produces now.
fn check_assets() -> Result<(), String> {
    check_generated("example-assets", "firmware/examples/assets", &ASSETS)
}

/// Lines of the program's source between its `safegrad: begin` and `safegrad: end` markers,
/// blank lines left out: the code that uses safegrad.
fn safegrad_lines(source: &str) -> Option<usize> {
    let begin = source.find("// safegrad: begin")?;
    let end = source.find("// safegrad: end")?;
    let region = source.get(begin..end)?;
    Some(
        region
            .lines()
            .skip(1)
            .filter(|l| !l.trim().is_empty())
            .count(),
    )
}

/// The value `before`, `after`, `total` or `steps` of the program's report line.
fn report(log: &str) -> Option<(usize, usize, usize, usize)> {
    let line = log
        .lines()
        .find(|l| l.contains("quickstart: correct before"))?;
    let number = |key: &str| -> Option<usize> {
        log_value(line, key)?
            .trim_end_matches(',')
            .split('/')
            .next()?
            .parse()
            .ok()
    };
    let total = log_value(line, "before")?
        .trim_end_matches(',')
        .split('/')
        .nth(1)?
        .parse()
        .ok()?;
    Some((number("before")?, number("after")?, total, number("steps")?))
}

/// Builds and runs the program; prints its log and what it reports (one JSON object as the
/// last line with `json`). Fails unless it exits with 0 and fine-tuning improved it.
pub fn example(json: bool) -> Result<(), String> {
    check_assets()?;
    let elf = build_example("quickstart")?;
    let flash = workspace_root().join("target").join("quickstart-flash.bin");
    let _ = std::fs::remove_file(&flash);
    let run = run_qemu(
        &elf,
        &QemuOptions {
            flash: Some(&flash),
            ..QemuOptions::default()
        },
    )?;
    if !json {
        print!("{}", run.log);
    }
    let parsed = report(&run.log);
    let (before, after, total, steps) = parsed.unwrap_or((0, 0, 1, 0));
    let ok = run.code == 0 && parsed.is_some() && after > before;
    let fraction = |n: usize| n as f64 / total.max(1) as f64;
    if json {
        println!(
            "{{\"ok\":{ok},\"source\":\"{SOURCE}\",\"accuracy_before\":{},\"accuracy_after\":{},\"steps\":{steps}}}",
            fraction(before),
            fraction(after)
        );
    } else {
        let source = std::fs::read_to_string(workspace_root().join(SOURCE))
            .map_err(|e| format!("{SOURCE}: {e}"))?;
        println!(
            "xtask: {SOURCE}: {} lines of safegrad code; held-out accuracy {:.1}% -> {:.1}% after {steps} steps",
            safegrad_lines(&source).unwrap_or(0),
            100.0 * fraction(before),
            100.0 * fraction(after)
        );
    }
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the example failed (exit code {}, accuracy {before}/{total} -> {after}/{total})",
            run.code
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_line_is_read() {
        let log = "INFO  quickstart: correct before 65/200, after 188/200, steps 1500\n";
        assert_eq!(report(log), Some((65, 188, 200, 1500)));
        assert_eq!(report("INFO  something else\n"), None);
    }

    #[test]
    fn the_safegrad_region_is_counted_without_blank_lines() {
        let source = "a\n// safegrad: begin\nuse x;\n\nfn f() {\n    // safegrad: end\n}\n";
        assert_eq!(safegrad_lines(source), Some(2));
        assert_eq!(safegrad_lines("no markers"), None);
    }
}
