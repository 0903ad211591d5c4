//! `cargo xtask test [crate-or-backend...]`: build and run every test of the workspace
//! (unit, doc, HTTP, and the conformance suite per backend), then print a table of the
//! conformance backends: passed / failed / ignored, or skipped with the reason.

use std::io::{BufRead, BufReader};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context as _, Result};

use crate::protoc_env;

const USAGE: &str = "\
usage: cargo xtask test [--no-services] [package...] [-- <cargo test args>]

Starts the server backends this machine can run (`cargo xtask services up`, idempotent,
loopback only; skip with --no-services), then runs `cargo test` over the whole workspace (or the named packages, e.g. scs-pgstore),
with PROTOC set to the vendored protoc for etcd-client's build, and ends with a table
of conformance backends. Set SCS_REQUIRE_BACKENDS=1 to fail on a missing server.
";

struct Row {
    backend: String,
    passed: u64,
    failed: u64,
    ignored: u64,
    skipped: Option<String>,
}

pub(crate) fn main(args: &[String]) -> Result<ExitCode> {
    if args
        .iter()
        .any(|a| a == "-h" || a == "--help" || a == "help")
    {
        print!("{USAGE}");
        return Ok(ExitCode::SUCCESS);
    }
    let (packages, extra) = match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => (args, &[][..]),
    };
    let no_services = packages.iter().any(|a| a == "--no-services");
    let packages: Vec<&String> = packages.iter().filter(|a| *a != "--no-services").collect();
    if !no_services {
        // A server that cannot start is reported here and again, per backend, by the
        // suite (skipped loudly, or failed under SCS_REQUIRE_BACKENDS=1).
        match crate::services::main(&["up".to_owned()]) {
            Ok(code) if code == ExitCode::SUCCESS => {}
            Ok(_) => eprintln!(
                "xtask: some services did not start; their backends will be skipped or fail"
            ),
            Err(e) => eprintln!("xtask: services up failed: {e:#}"),
        }
    }
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.arg("test").arg("--no-fail-fast");
    if packages.is_empty() {
        cmd.arg("--workspace");
    }
    for p in &packages {
        cmd.arg("-p").arg(p);
    }
    if !extra.is_empty() {
        cmd.arg("--").args(extra);
    }
    for (k, v) in protoc_env()? {
        cmd.env(k, v);
    }
    cmd.stdout(Stdio::piped());
    eprintln!("xtask: running {:?}", cmd);
    let mut child = cmd.spawn().context("starting cargo test")?;
    let stdout = child.stdout.take().context("no stdout from cargo")?;
    let mut rows = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo's output")?;
        println!("{line}");
        if let Some(json) = line.strip_prefix("SCS-SUITE ") {
            match parse_row(json) {
                Ok(row) => rows.push(row),
                Err(e) => eprintln!("xtask: unreadable suite line ({e:#}): {json}"),
            }
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    print_table(&rows);
    let suite_failed = rows.iter().any(|r| r.failed > 0);
    if status.success() && !suite_failed {
        println!("\nxtask: all tests passed");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("\nxtask: tests FAILED (cargo exit status: {status})");
        Ok(ExitCode::FAILURE)
    }
}

fn parse_row(json: &str) -> Result<Row> {
    let v: serde_json::Value = serde_json::from_str(json)?;
    let num = |k: &str| v.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
    Ok(Row {
        backend: v
            .get("backend")
            .and_then(serde_json::Value::as_str)
            .context("no backend")?
            .to_owned(),
        passed: num("passed"),
        failed: num("failed"),
        ignored: num("ignored"),
        skipped: v
            .get("skipped")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned),
    })
}

fn print_table(rows: &[Row]) {
    if rows.is_empty() {
        println!("\nxtask: no conformance suite ran");
        return;
    }
    println!("\n## Conformance suite by backend\n");
    println!("| backend | result | passed | failed | ignored | note |");
    println!("|---|---|---:|---:|---:|---|");
    for r in rows {
        let (result, note) = match (&r.skipped, r.failed) {
            (Some(reason), _) => ("SKIPPED", reason.clone()),
            (None, 0) => ("passed", String::new()),
            (None, _) => ("FAILED", String::new()),
        };
        println!(
            "| {} | {result} | {} | {} | {} | {note} |",
            r.backend, r.passed, r.failed, r.ignored
        );
    }
    let skipped: Vec<&Row> = rows.iter().filter(|r| r.skipped.is_some()).collect();
    if !skipped.is_empty() {
        println!(
            "\n!!! {} backend(s) SKIPPED: their servers were not reachable.",
            skipped.len()
        );
        println!("!!! Start them with `cargo xtask services up`; CI sets SCS_REQUIRE_BACKENDS=1.");
    }
}
