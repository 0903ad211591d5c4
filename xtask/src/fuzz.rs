//! `cargo xtask fuzz [--seconds N] [target...]`: runs each libFuzzer target of `fuzz/` for
//! N seconds and prints executions and crashes per target.
//!
//! cargo-fuzz needs sanitizer flags (`-Zsanitizer=address`) that only nightly accepts; the
//! machine's stable toolchain accepts them with `RUSTC_BOOTSTRAP=1`, which is set here, so
//! no nightly is needed. cargo-fuzz itself is installed with `cargo install` when missing.
//! The committed seeds (`fuzz/corpus/<target>/`) are read, never written: what a run finds
//! goes to the scratch corpus `fuzz/corpus-new/<target>/` (git-ignored).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};

const USAGE: &str = "\
usage: cargo xtask fuzz [--seconds N] [target...]

Runs each fuzz target (default: all) for N seconds (default 60) with cargo-fuzz on the
stable toolchain (RUSTC_BOOTSTRAP=1), then prints executions and crashes per target.
Exits 1 when a target crashed; the input is kept in fuzz/artifacts/<target>/ and
`cargo xtask fuzz` prints the command that replays it.

targets: token_is_valid request_token decode_msgpack decode_json decode_aead

environment: CARGO_TARGET_DIR (the fuzz build goes to <it>/fuzz, else fuzz/target)
";

const TARGETS: [&str; 5] = [
    "token_is_valid",
    "request_token",
    "decode_msgpack",
    "decode_json",
    "decode_aead",
];

struct Outcome {
    target: &'static str,
    runs: Option<u64>,
    crashes: usize,
    new_inputs: usize,
    artifacts: Vec<PathBuf>,
}

pub(crate) fn main(args: &[String]) -> Result<ExitCode> {
    let mut seconds: u64 = 60;
    let mut targets = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                seconds = it
                    .next()
                    .context("--seconds needs a value")?
                    .parse()
                    .context("--seconds: a whole number")?;
            }
            "-h" | "--help" | "help" => {
                print!("{USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            t => match TARGETS.iter().find(|&&k| k == t) {
                Some(&k) => targets.push(k),
                None => {
                    eprint!("xtask fuzz: unknown argument or target `{t}`\n\n{USAGE}");
                    return Ok(ExitCode::from(2));
                }
            },
        }
    }
    if targets.is_empty() {
        targets = TARGETS.to_vec();
    }
    if seconds == 0 {
        bail!("--seconds must be above zero");
    }

    let root = crate::repo_root()
        .canonicalize()
        .context("finding the repository root")?;
    let fuzz = root.join("fuzz");
    ensure_cargo_fuzz()?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|v| !v.is_empty())
        .map_or_else(|| fuzz.join("target"), |d| PathBuf::from(d).join("fuzz"));

    println!("==> building the fuzz targets (cargo fuzz build, RUSTC_BOOTSTRAP=1)");
    let status = cargo_fuzz(&root, &target_dir, "build")
        .status()
        .context("running cargo fuzz build")?;
    if !status.success() {
        bail!("cargo fuzz build failed");
    }

    let mut outcomes = Vec::new();
    for target in targets {
        println!("==> {target}: {seconds} s");
        outcomes.push(run_target(&root, &fuzz, &target_dir, target, seconds)?);
    }

    println!();
    println!(
        "| {:<16} | {:>12} | {:>7} | {:>10} |",
        "target", "executions", "crashes", "new inputs"
    );
    println!("|{:-<18}|{:->14}|{:->9}|{:->12}|", "", "", "", "");
    let mut crashed = false;
    for o in &outcomes {
        let runs = o.runs.map_or_else(|| "?".to_owned(), |r| r.to_string());
        println!(
            "| {:<16} | {:>12} | {:>7} | {:>10} |",
            o.target, runs, o.crashes, o.new_inputs
        );
        crashed |= o.crashes > 0;
    }
    let total: u64 = outcomes.iter().filter_map(|o| o.runs).sum();
    let crashes: usize = outcomes.iter().map(|o| o.crashes).sum();
    println!("\nfuzz: {total} executions, {crashes} crashes, {seconds} s per target");
    for o in &outcomes {
        for a in &o.artifacts {
            println!(
                "replay: RUSTC_BOOTSTRAP=1 cargo fuzz run {} {}",
                o.target,
                a.display()
            );
        }
    }
    Ok(if crashed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn ensure_cargo_fuzz() -> Result<()> {
    let found = Command::new("cargo")
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Ok(());
    }
    println!("==> cargo-fuzz not found: cargo install cargo-fuzz --locked");
    let status = Command::new("cargo")
        .args(["install", "cargo-fuzz", "--locked"])
        .status()
        .context("running cargo install")?;
    if !status.success() {
        bail!("installing cargo-fuzz failed");
    }
    Ok(())
}

/// `cargo fuzz <sub> --target-dir <dir>` from the repository root, on stable.
fn cargo_fuzz(root: &Path, target_dir: &Path, sub: &str) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_DIR", target_dir)
        .args(["fuzz", sub, "--target-dir"])
        .arg(target_dir);
    cmd
}

fn run_target(
    root: &Path,
    fuzz: &Path,
    target_dir: &Path,
    target: &'static str,
    seconds: u64,
) -> Result<Outcome> {
    let seeds = fuzz.join("corpus").join(target);
    let scratch = fuzz.join("corpus-new").join(target);
    let artifacts_dir = fuzz.join("artifacts").join(target);
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let before_new = count_files(&scratch);
    let before_artifacts = list_files(&artifacts_dir);
    let started = Instant::now();
    let out = cargo_fuzz(root, target_dir, "run")
        .arg(target)
        .arg(&scratch)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        // A stuck input is a finding, not a hang of the whole run.
        .arg("-timeout=10")
        .arg("-print_final_stats=1")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running cargo fuzz run {target}"))?;
    let log =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let runs = parse_runs(&log);
    let artifacts: Vec<PathBuf> = list_files(&artifacts_dir)
        .into_iter()
        .filter(|p| !before_artifacts.contains(p))
        .collect();
    let crashes = if out.status.success() {
        0
    } else {
        artifacts.len().max(1)
    };
    if crashes > 0 {
        // The end of libFuzzer's report: the panic message and the input.
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        for line in tail.into_iter().rev() {
            eprintln!("  {line}");
        }
    }
    println!(
        "    {} executions in {:.0} s, {} crash(es)",
        runs.map_or_else(|| "?".to_owned(), |r| r.to_string()),
        started.elapsed().as_secs_f64(),
        crashes
    );
    Ok(Outcome {
        target,
        runs,
        crashes,
        new_inputs: count_files(&scratch).saturating_sub(before_new),
        artifacts,
    })
}

/// Executions from libFuzzer's `Done 1234 runs in 10 second(s)` line, or from the final
/// stats (`stat::number_of_executed_units: 1234`) when it stopped early.
fn parse_runs(log: &str) -> Option<u64> {
    log.lines()
        .find_map(|l| {
            l.strip_prefix("Done ")
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        })
        .or_else(|| {
            log.lines().find_map(|l| {
                l.strip_prefix("stat::number_of_executed_units:")
                    .and_then(|n| n.trim().parse().ok())
            })
        })
}

fn list_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn count_files(dir: &Path) -> usize {
    list_files(dir).len()
}

#[cfg(test)]
mod tests {
    use super::parse_runs;

    #[test]
    fn reads_libfuzzer_counts() {
        assert_eq!(
            parse_runs("#2 INITED\nDone 1566672 runs in 16 second(s)\n"),
            Some(1_566_672)
        );
        assert_eq!(
            parse_runs("==1== ERROR\nstat::number_of_executed_units: 42\n"),
            Some(42)
        );
        assert_eq!(parse_runs("nothing"), None);
    }
}
