//! `scs-bench <part> [--option value]...`: one part of the benchmark per run, results as
//! JSON lines on stdout. `cargo xtask bench` builds it in release mode, runs the parts
//! (the memory part in a fresh process per measurement, the HTTP servers pinned to a core)
//! and writes the report.
//!
//! Parts:
//! - `inproc [--smoke]`: (1) middleware cost through tower, no network.
//! - `profile --case C [--iters N]`: the scs side of one in-process case in a loop, for
//!   callgrind.
//! - `serve --lib L`: (2) an HTTP server on 127.0.0.1 on a single-threaded runtime; prints
//!   its port and a live session cookie, serves until stdin closes.
//! - `load --port P --path /x [--cookie c] [--conns 32] [--secs 5]`: (2) the Rust load
//!   generator (when wrk is not there).
//! - `mem --lib L --count N`: (3) RSS per live session.
//! - `stores [--smoke]`: (4) store latency next to the raw driver, and round trips.
//! - `idle [--smoke]`: (5) store calls per request, idle timeout or not.
//! - `primitives [--smoke]`: native cost of the building blocks on scs's request path.

mod http_parts;
mod idle;
mod inproc;
mod mem;
mod primitives;
mod stores;

use std::collections::HashMap;
use std::process::ExitCode;

pub(crate) type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// `--key value` options and `--flag` switches.
pub(crate) struct Opts(HashMap<String, Option<String>>);

impl Opts {
    fn parse(args: &[String]) -> Result<Self> {
        let mut map = HashMap::new();
        let mut it = args.iter().peekable();
        while let Some(arg) = it.next() {
            let Some(key) = arg.strip_prefix("--") else {
                return Err(format!("unexpected argument `{arg}`").into());
            };
            let value = it.next_if(|v| !v.starts_with("--")).cloned();
            map.insert(key.to_owned(), value);
        }
        Ok(Self(map))
    }

    pub(crate) fn flag(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.as_deref())
    }

    pub(crate) fn req(&self, key: &str) -> Result<&str> {
        self.get(key)
            .ok_or_else(|| format!("missing --{key}").into())
    }

    pub(crate) fn num<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{key}: not a number: {v}").into()),
        }
    }
}

/// Prints one JSON result line.
pub(crate) fn emit(value: &serde_json::Value) {
    println!("{value}");
}

/// A single-threaded Tokio runtime, as every part uses.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((part, rest)) = args.split_first() else {
        eprintln!(
            "usage: scs-bench inproc|profile|serve|load|mem|stores|idle|primitives [--option value]..."
        );
        return ExitCode::from(2);
    };
    let run = || -> Result<()> {
        let opts = Opts::parse(rest)?;
        match part.as_str() {
            "inproc" => inproc::main(&opts),
            "profile" => inproc::profile(&opts),
            "serve" => http_parts::serve(&opts),
            "load" => http_parts::load(&opts),
            "mem" => mem::main(&opts),
            "stores" => stores::main(&opts),
            "idle" => idle::main(&opts),
            "primitives" => primitives::main(&opts),
            other => Err(format!("unknown part `{other}`").into()),
        }
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scs-bench {part}: error: {e}");
            ExitCode::FAILURE
        }
    }
}
