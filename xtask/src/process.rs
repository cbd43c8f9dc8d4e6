//! Running `cargo` and other programs from the workspace root, and finding (or installing)
//! the tools the firmware runs need: cargo-installed tools and `qemu-system-arm`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The workspace's root folder: the parent of xtask's manifest folder.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The `cargo` that runs xtask (`$CARGO`), or `cargo` from PATH.
fn cargo_bin() -> String {
    env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// A `--config` value that writes the checkout's path into device programs as
/// `/safegrad`, and the source folders of cargo's registries as `/crates`: their panic
/// locations and file names, and so their read-only data, do not depend on where the
/// repository or cargo's home is (the code can still move by a few bytes: the crates'
/// hashes include their paths), and a registry's folder (58 characters under
/// `/root/.cargo`, once per file with a panic) takes 7.
pub fn remap_checkout() -> String {
    let mut flags = vec![remap_flag(&workspace_root(), "/safegrad")];
    if let Some(src) = cargo_home().map(|h| h.join("registry").join("src")) {
        // The registries' parent first, for a registry extracted after this list is made
        // (rustc applies the last flag that matches): `/crates/<registry>/...`.
        flags.push(remap_flag(&src, "/crates"));
        flags.extend(
            registry_sources(&src)
                .iter()
                .map(|d| remap_flag(d, "/crates")),
        );
    }
    let flags: Vec<String> = flags.into_iter().flatten().collect();
    format!("build.rustflags=[{}]", flags.join(", "))
}

/// `--remap-path-prefix=from=to` as a TOML string, or `None` for a path that is not UTF-8.
fn remap_flag(from: &Path, to: &str) -> Option<String> {
    Some(toml_string(&format!(
        "--remap-path-prefix={}={to}",
        from.to_str()?
    )))
}

/// `s` as a TOML basic string: quotes, backslashes and control characters escaped.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Cargo's home: `$CARGO_HOME`, or `~/.cargo`; absolute.
fn cargo_home() -> Option<PathBuf> {
    let home = env::var_os("CARGO_HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| Path::new(&h).join(".cargo"))
        })?;
    if home.is_absolute() {
        Some(home)
    } else {
        env::current_dir().ok().map(|d| d.join(home))
    }
}

/// The folders of `src` (cargo's `registry/src`: one per registry), sorted.
fn registry_sources(src: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(src)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

/// Runs `program` with `args` in the workspace root, its output going to the terminal; an
/// error if it cannot start or exits with a failure.
pub fn run_status(program: &str, args: &[&str]) -> Result<(), String> {
    run_status_in(&workspace_root(), program, args)
}

/// [`run_status`] in the folder `dir`.
pub fn run_status_in(dir: &Path, program: &str, args: &[&str]) -> Result<(), String> {
    eprintln!("xtask: {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .current_dir(dir)
        .status()
        .map_err(|e| format!("could not start {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{program} {}` failed ({status})", args.join(" ")))
    }
}

/// Runs `cargo` with `args` (see [`run_status`]).
pub fn cargo(args: &[&str]) -> Result<(), String> {
    run_status(&cargo_bin(), args)
}

/// Runs `cargo` with `args` in the folder `dir` (see [`run_status`]).
pub fn cargo_in(dir: &Path, args: &[&str]) -> Result<(), String> {
    run_status_in(dir, &cargo_bin(), args)
}

/// Runs `cargo` with `args` in the workspace root and returns what it printed on stdout;
/// its stderr goes to the terminal.
pub fn cargo_output(args: &[&str]) -> Result<String, String> {
    cargo_output_in(&workspace_root(), args)
}

/// [`cargo_output`] in the folder `dir`.
pub fn cargo_output_in(dir: &Path, args: &[&str]) -> Result<String, String> {
    eprintln!("xtask: cargo {}", args.join(" "));
    let out = Command::new(cargo_bin())
        .args(args)
        .current_dir(dir)
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

/// Whether `program --version` starts, i.e. `program` is on PATH.
fn on_path(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// A cargo-installed tool, found on PATH or in cargo's bin folder, installed if missing.
pub fn cargo_tool(name: &str) -> Result<String, String> {
    if on_path(name) {
        return Ok(name.to_string());
    }
    let home = cargo_home().ok_or_else(|| "neither CARGO_HOME nor HOME is set".to_string())?;
    let path = home.join("bin").join(name);
    if !path.exists() {
        cargo(&["install", name, "--locked"])
            .map_err(|e| format!("{e}; install it with `cargo install {name} --locked`"))?;
    }
    Ok(path.to_string_lossy().into_owned())
}

/// The QEMU program `name`, installed with apt from `package` when running as root on
/// Debian.
pub fn qemu_system(name: &str, package: &str) -> Result<String, String> {
    if on_path(name) {
        return Ok(name.to_string());
    }
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    if is_root && on_path("apt-get") {
        run_status("apt-get", &["update", "-qq"])?;
        let install = ["install", "-y", "-qq", "--no-install-recommends", package];
        if run_status("apt-get", &install).is_err() {
            // A newer qemu-utils than the distribution's (from backports, say) breaks the
            // distribution's qemu-system-common: install qemu-utils of the same version.
            let policy = Command::new("apt-cache")
                .args(["policy", package])
                .output()
                .map_err(|e| format!("apt-cache: {e}"))?;
            let policy = String::from_utf8_lossy(&policy.stdout);
            let version = policy
                .lines()
                .find_map(|l| l.trim().strip_prefix("Candidate:"))
                .map(str::trim)
                .ok_or_else(|| format!("apt-cache knows no candidate for {package}"))?;
            let utils = format!("qemu-utils={version}");
            run_status(
                "apt-get",
                &[
                    "install",
                    "-y",
                    "-qq",
                    "--no-install-recommends",
                    "--allow-downgrades",
                    package,
                    &utils,
                ],
            )?;
        }
        if on_path(name) {
            return Ok(name.to_string());
        }
    }
    Err(format!(
        "{name} not found; install it with `sudo apt-get install -y {package}` (Debian/Ubuntu)"
    ))
}

/// Runs the host simulator's command line (`cargo run -q --release -p host-sim -- args`)
/// and returns what it printed on stdout.
pub fn host_sim(args: &[&str]) -> Result<String, String> {
    let mut all = vec!["run", "-q", "--release", "-p", "host-sim", "--"];
    all.extend(args);
    cargo_output(&all)
}

/// Checks that the files `files` of the committed folder `committed` (relative to the
/// workspace) are what the host simulator's `command --out DIR` writes now.
pub fn check_generated(command: &str, committed: &str, files: &[&str]) -> Result<(), String> {
    check_generated_with(&[command], committed, files)
}

/// [`check_generated`] for a host-sim command with arguments (`["device-assets", "--model",
/// "cnn"]`).
pub fn check_generated_with(
    command: &[&str],
    committed: &str,
    files: &[&str],
) -> Result<(), String> {
    let fresh = workspace_root().join("target").join(command.join("-"));
    let mut args = command.to_vec();
    let out = fresh.to_string_lossy();
    args.extend(["--out", &out]);
    host_sim(&args)?;
    let command = command.join(" ");
    for name in files {
        let a = std::fs::read(fresh.join(name)).map_err(|e| format!("{name}: {e}"))?;
        let b = std::fs::read(workspace_root().join(committed).join(name))
            .map_err(|e| format!("{committed}/{name}: {e}"))?;
        if a != b {
            return Err(format!(
                "{committed}/{name} differs from what host-sim writes now; \
                 regenerate with `cargo run --release -p host-sim -- {command}`"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remap_flags_are_toml_strings() {
        let flag = remap_flag(Path::new("/a b/\"q\"/it's\\x\t"), "/crates");
        assert_eq!(
            flag.as_deref(),
            Some(r#""--remap-path-prefix=/a b/\"q\"/it's\\x\u0009=/crates""#)
        );
        let config = remap_checkout();
        assert!(config.starts_with(r#"build.rustflags=["--remap-path-prefix="#));
        assert!(config.contains(r#"=/safegrad""#), "{config}");
    }
}
