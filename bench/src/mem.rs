//! Part 3: resident memory per live session, one library and one count per process.

use std::collections::HashMap;
use std::time::Duration;

use scs_bench::apps::Lib;
use scs_core::time::OffsetDateTime;
use scs_core::{Codec as _, MsgPackCodec, SessionData, Store as _, Value, token};
use serde_json::json;
use tower_sessions::SessionStore as _;
use tower_sessions::session::{Id, Record};

use crate::{Opts, Result, emit, runtime};

/// Resident set size of this process, from `/proc/self/statm` (pages) and the page size
/// the kernel reports for our mappings.
fn rss_bytes() -> Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .ok_or("short /proc/self/statm")?
        .parse()?;
    Ok(pages * page_size()?)
}

fn page_size() -> Result<u64> {
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let kb = smaps
        .lines()
        .find_map(|l| l.strip_prefix("KernelPageSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(4);
    Ok(kb * 1024)
}

/// `mem --lib scs|tower-sessions --count N`: RSS delta of N sessions, each holding `n` (an
/// i64), stored the way the library itself stores it.
pub(crate) fn main(opts: &Opts) -> Result<()> {
    let lib = Lib::parse(opts.req("lib")?).ok_or("unknown --lib")?;
    let count: u64 = opts.num("count", 100_000)?;
    let deadline = OffsetDateTime::now_utc() + Duration::from_secs(24 * 3600);
    runtime()?.block_on(async {
        let (before, after) = match lib {
            Lib::Scs => {
                // No cleanup task: nothing expires during the run anyway.
                let store = scs_memstore::MemoryStore::builder()
                    .cleanup_interval(None)
                    .build()?;
                let before = rss_bytes()?;
                for i in 0..count {
                    // The middleware's own path: a token, its hashed store key, the codec.
                    let key = token::store_key(&token::generate(), true);
                    let mut data = SessionData::new(deadline);
                    data.values
                        .insert("n".to_owned(), Value::from_serialize(&(i as i64))?);
                    let bytes = MsgPackCodec.encode(&data)?;
                    store.commit(&key, &bytes, deadline).await?;
                }
                let after = rss_bytes()?;
                assert_eq!(store.len() as u64, count);
                (before, after)
            }
            Lib::Tower => {
                let store = tower_sessions::MemoryStore::default();
                let before = rss_bytes()?;
                for i in 0..count {
                    // What `Session::save` hands its store for a new session.
                    let mut record = Record {
                        id: Id::default(),
                        data: HashMap::from([("n".to_owned(), json!(i as i64))]),
                        expiry_date: deadline,
                    };
                    store.create(&mut record).await?;
                }
                let after = rss_bytes()?;
                (before, after)
            }
            Lib::Bare => return Err("mem needs --lib scs or tower-sessions".into()),
        };
        let delta = after.saturating_sub(before);
        emit(&json!({
            "part": "mem",
            "lib": lib.name(),
            "count": count,
            "rss_delta": delta,
            "bytes_per_session": delta as f64 / count as f64,
        }));
        Ok(())
    })
}
