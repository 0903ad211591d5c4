//! Native cost of the building blocks on scs's request path, through their public APIs:
//! the evidence next to a callgrind profile (valgrind's CPU lacks SHA-NI and counts
//! instructions, not time; a syscall is one instruction to it).

use std::hint::black_box;
use std::time::{Duration, Instant};

use scs_bench::stats;
use scs_core::time::OffsetDateTime;
use scs_core::{Codec as _, MsgPackCodec, SessionData, Value, token};
use serde_json::json;

use crate::{Opts, Result, emit, runtime};

/// Median ns per call of `f`, over `samples` batches of `batch` calls after a warm-up.
fn time<T>(samples: usize, batch: usize, mut f: impl FnMut() -> T) -> f64 {
    for _ in 0..batch {
        black_box(f());
    }
    let mut ns: Vec<f64> = (0..samples)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..batch {
                black_box(f());
            }
            t.elapsed().as_nanos() as f64 / batch as f64
        })
        .collect();
    stats::median(&mut ns)
}

/// `primitives [--smoke]`.
pub(crate) fn main(opts: &Opts) -> Result<()> {
    let (samples, batch) = if opts.flag("smoke") {
        (5, 100)
    } else {
        (101, 2000)
    };
    let tok = token::generate();
    let key = token::store_key(&tok, true);
    let mut session = SessionData::new(OffsetDateTime::now_utc() + Duration::from_secs(86_400));
    session
        .values
        .insert("n".to_owned(), Value::from_serialize(&41_i64)?);
    let bytes = MsgPackCodec.encode(&session)?;
    let row = |name: &str, what: &str, ns: f64| {
        emit(&json!({ "part": "primitive", "name": name, "what": what, "ns": ns }));
    };
    row(
        "Token::try_generate",
        "new session: 32 bytes from the OS CSPRNG (read 16 tokens per getrandom call) + base64url, held inline",
        time(samples, batch, token::Token::try_generate),
    );
    row(
        "token::is_valid",
        "every request whose handler asks for its session (once)",
        time(samples, batch, || token::is_valid(black_box(&tok))),
    );
    let inline = token::Token::parse(&tok).ok_or("a generated token does not parse")?;
    row(
        "Token::store_key (SHA-256)",
        "every load and every new session's commit: SHA-256 + base64url, held inline",
        time(samples, batch, || black_box(&inline).store_key(true)),
    );
    row(
        "MsgPackCodec::decode",
        "every load: one value",
        time(samples, batch, || MsgPackCodec.decode(black_box(&bytes))),
    );
    row(
        "MsgPackCodec::encode",
        "every commit: one value",
        time(samples, batch, || MsgPackCodec.encode(black_box(&session))),
    );
    row(
        "Value::from_serialize(i64)",
        "every put",
        time(samples, batch, || Value::from_serialize(black_box(&42_i64))),
    );
    row(
        "OffsetDateTime::now_utc",
        "read 1 to 4 times per request (store expiry check, new deadline, cookie Max-Age)",
        time(samples, batch, OffsetDateTime::now_utc),
    );
    row(
        "String from key",
        "one small allocation + copy, for comparison",
        time(samples, batch, || black_box(&key).to_owned()),
    );
    runtime()?.block_on(async {
        let t = Instant::now();
        let n = samples * batch;
        for _ in 0..n {
            let ready = std::future::ready(black_box(1_u8));
            black_box(
                tokio::time::timeout(Duration::from_secs(5), ready)
                    .await
                    .ok(),
            );
        }
        row(
            "tokio::time::timeout(ready)",
            "what a timer would cost per store call (scs arms one only for stores that do not answer at once)",
            t.elapsed().as_nanos() as f64 / n as f64,
        );
    });
    Ok(())
}
