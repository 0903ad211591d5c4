//! `cargo xtask <command>`: developer tasks for the scs workspace.
//!
//! Each command lives in its own module with a `main(args) -> Result<ExitCode>`; `run` below is
//! the one place that maps command names to modules.

mod bench;
mod browser;
mod fuzz;
mod services;
mod soak;
mod test;

use std::process::ExitCode;

use anyhow::Context as _;

/// The repository root: the parent of xtask's own directory, as `cargo run` gives it at
/// run time. Not `env!("CARGO_MANIFEST_DIR")`: a compiled-in path goes stale when two
/// checkouts share one target directory, as cargo then reuses one checkout's xtask
/// binary for the other, which would build and run the wrong checkout's code.
pub(crate) fn repo_root() -> std::path::PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    manifest_dir
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or(manifest_dir)
}

const USAGE: &str = "\
usage: cargo xtask <command> [args...]

commands:
  services up|down|status [name...]
                   start, stop or list the server backends the store tests use
                   (`cargo xtask services help` for details)
  test [package...] [-- args]
                   run every test and the conformance suite per backend, then print
                   a table of backends (passed / failed / skipped with the reason)
  bench [--smoke]  the benchmark report, scs against tower-sessions in the same run
                   (`cargo xtask bench --help` for options)
  browser [--no-install]
                   the real-browser check: headless Chromium (Debian's chromium and
                   chromium-driver, installed when missing) signs in to the demo
  fuzz [--seconds N] [target...]
                   run each libFuzzer target N seconds; executions and crashes per target
  soak [--requests N] [--sessions N] [--store postgres|redis|URL] [--seconds N]
                   two app processes on one store under load; every counter checked
                   (`cargo xtask soak --help` for options)
  protoc-path      print the path of the vendored protoc binary (for PROTOC)
  protoc-include   print the vendored protobuf include dir (google/protobuf/*.proto)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> anyhow::Result<ExitCode> {
    let Some((command, rest)) = args.split_first() else {
        eprint!("{USAGE}");
        return Ok(ExitCode::from(2));
    };
    match command.as_str() {
        "services" => services::main(rest),
        "test" => test::main(rest),
        "browser" => browser::main(rest),
        "bench" => bench::main(rest),
        "fuzz" => fuzz::main(rest),
        "soak" => soak::main(rest),
        "protoc-path" => {
            let path = protoc_bin_vendored::protoc_bin_path()
                .context("no vendored protoc for this platform; install protobuf-compiler")?;
            println!("{}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        "protoc-include" => {
            let path = protoc_bin_vendored::include_path().context(
                "no vendored protobuf includes for this platform; install libprotobuf-dev",
            )?;
            println!("{}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        // Room for: "check-stores", "new-store" (one module each).
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        other => {
            eprint!("xtask: unknown command `{other}`\n\n{USAGE}");
            Ok(ExitCode::from(2))
        }
    }
}

/// `PROTOC` (and `PROTOC_INCLUDE`) for etcd-client's build script, from the vendored protoc,
/// unless the caller set them.
pub(crate) fn protoc_env() -> anyhow::Result<Vec<(&'static str, std::path::PathBuf)>> {
    let mut env = Vec::new();
    if std::env::var_os("PROTOC").is_none() {
        env.push((
            "PROTOC",
            protoc_bin_vendored::protoc_bin_path()
                .context("no vendored protoc for this platform")?,
        ));
    }
    if std::env::var_os("PROTOC_INCLUDE").is_none()
        && let Ok(include) = protoc_bin_vendored::include_path()
    {
        env.push(("PROTOC_INCLUDE", include));
    }
    Ok(env)
}
