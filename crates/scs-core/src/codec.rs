//! Codecs turn a session's deadline and values into the bytes a store keeps, and back.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{Error, ErrorKind, Result, SessionData, Values};

/// Encodes a session (deadline and values) to bytes and back. Stores only ever see bytes.
///
/// Implementations must never panic on any input: garbage bytes are an
/// [`ErrorKind::Codec`] error. A payload with no values decodes to an empty map.
pub trait Codec: Send + Sync + 'static {
    /// A short name for logs (`"msgpack"`, `"json"`).
    fn name(&self) -> &'static str;

    /// Encodes a session.
    ///
    /// # Errors
    /// [`ErrorKind::Codec`] when a value cannot be encoded in this format.
    fn encode(&self, data: &SessionData) -> Result<Vec<u8>>;

    /// Decodes a session.
    ///
    /// # Errors
    /// [`ErrorKind::Codec`] when the bytes are not a session in this format.
    fn decode(&self, bytes: &[u8]) -> Result<SessionData>;
}

/// The on-the-wire form shared by the built-in codecs: the deadline in Unix nanoseconds
/// (an `i64` reaches the year 2262) and the values.
#[derive(Serialize)]
struct WireRef<'a>(i64, &'a Values);

#[derive(Deserialize)]
struct Wire(i64, Option<Values>);

fn to_wire(data: &SessionData) -> Result<WireRef<'_>> {
    let nanos = i64::try_from(data.deadline.unix_timestamp_nanos()).map_err(|_| {
        Error::new(
            ErrorKind::Codec,
            "the session deadline is out of range (years 1677 to 2262)",
        )
    })?;
    Ok(WireRef(nanos, &data.values))
}

fn from_wire(wire: Wire) -> Result<SessionData> {
    let deadline = OffsetDateTime::from_unix_timestamp_nanos(i128::from(wire.0)).map_err(|e| {
        Error::new(ErrorKind::Codec, "the stored deadline is out of range").with_source(e)
    })?;
    Ok(SessionData {
        deadline,
        values: wire.1.unwrap_or_default(),
    })
}

/// The encode buffer's first capacity: a session of a few small values fits.
const ENCODE_CAPACITY: usize = 128;

/// A buffer that reports running out of memory as an error (an oversized session is a
/// codec error, never an abort), as `rmp_serde::to_vec`'s own writer does.
struct TryVec(Vec<u8>);

impl std::io::Write for TryVec {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.0
            .try_reserve(buf.len())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::OutOfMemory))?;
        self.0.extend_from_slice(buf);
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// MessagePack, through `rmp-serde`: compact and fast. The default.
///
/// ```
/// use scs_core::{Codec, MsgPackCodec, SessionData, Value};
/// use time::OffsetDateTime;
///
/// let mut data = SessionData::new(OffsetDateTime::UNIX_EPOCH);
/// data.values.insert("n".into(), Value::from_serialize(&1_u8).unwrap());
/// let bytes = MsgPackCodec.encode(&data).unwrap();
/// assert_eq!(MsgPackCodec.decode(&bytes).unwrap(), data);
/// assert!(MsgPackCodec.decode(b"\xc1garbage").is_err());
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct MsgPackCodec;

impl Codec for MsgPackCodec {
    fn name(&self) -> &'static str {
        "msgpack"
    }

    fn encode(&self, data: &SessionData) -> Result<Vec<u8>> {
        // Room for a typical session up front (as serde_json's `to_vec` does): growing
        // from empty would reallocate a few times on every commit.
        let mut out = TryVec(Vec::with_capacity(ENCODE_CAPACITY));
        rmp_serde::encode::write(&mut out, &to_wire(data)?).map_err(|e| {
            Error::new(ErrorKind::Codec, "encoding the session as MessagePack").with_source(e)
        })?;
        Ok(out.0)
    }

    fn decode(&self, bytes: &[u8]) -> Result<SessionData> {
        let wire: Wire = rmp_serde::from_slice(bytes).map_err(|e| {
            Error::new(
                ErrorKind::Codec,
                "decoding the stored session as MessagePack",
            )
            .with_source(e)
        })?;
        from_wire(wire)
    }
}

/// JSON, through `serde_json`: readable in the database, larger and slower. Bytes are
/// kept as arrays of numbers; typed reads give them back as bytes.
///
/// ```
/// use scs_core::{Codec, JsonCodec, SessionData, Value};
/// use time::OffsetDateTime;
///
/// let mut data = SessionData::new(OffsetDateTime::UNIX_EPOCH);
/// data.values.insert("name".into(), Value::from_serialize("ada").unwrap());
/// let bytes = JsonCodec.encode(&data).unwrap();
/// assert_eq!(bytes, br#"[0,{"name":"ada"}]"#);
/// assert_eq!(JsonCodec.decode(&bytes).unwrap(), data);
/// ```
#[cfg(feature = "json")]
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonCodec;

#[cfg(feature = "json")]
impl Codec for JsonCodec {
    fn name(&self) -> &'static str {
        "json"
    }

    fn encode(&self, data: &SessionData) -> Result<Vec<u8>> {
        serde_json::to_vec(&to_wire(data)?).map_err(|e| {
            Error::new(ErrorKind::Codec, "encoding the session as JSON").with_source(e)
        })
    }

    fn decode(&self, bytes: &[u8]) -> Result<SessionData> {
        let wire: Wire = serde_json::from_slice(bytes).map_err(|e| {
            Error::new(ErrorKind::Codec, "decoding the stored session as JSON").with_source(e)
        })?;
        from_wire(wire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Value;

    fn sample() -> SessionData {
        let mut d = SessionData::new(
            OffsetDateTime::from_unix_timestamp_nanos(1_800_000_000_000_000_001).unwrap(),
        );
        let put = |d: &mut SessionData, k: &str, v: Value| {
            d.values.insert(k.to_owned(), v);
        };
        put(&mut d, "i", Value::from_serialize(&i64::MIN).unwrap());
        put(&mut d, "u", Value::from_serialize(&u64::MAX).unwrap());
        put(&mut d, "f", Value::from_serialize(&1.5_f64).unwrap());
        put(&mut d, "s", Value::from_serialize("héllo").unwrap());
        put(
            &mut d,
            "b",
            Value::from_serialize(serde_bytes::Bytes::new(&[0, 1, 255])).unwrap(),
        );
        put(&mut d, "v", Value::from_serialize(&vec!["a", "b"]).unwrap());
        d
    }

    fn check(codec: &dyn Codec) {
        let d = sample();
        let bytes = codec.encode(&d).unwrap();
        let back = codec.decode(&bytes).unwrap();
        assert_eq!(back.deadline, d.deadline);
        assert_eq!(back.values["i"].to::<i64>().unwrap(), i64::MIN);
        assert_eq!(back.values["u"].to::<u64>().unwrap(), u64::MAX);
        assert_eq!(back.values["f"].to::<f64>().unwrap(), 1.5);
        assert_eq!(back.values["s"].to::<String>().unwrap(), "héllo");
        assert_eq!(
            back.values["b"]
                .to::<serde_bytes::ByteBuf>()
                .unwrap()
                .into_vec(),
            vec![0, 1, 255]
        );
        assert_eq!(back.values["v"].to::<Vec<String>>().unwrap(), ["a", "b"]);
        for garbage in [
            &b""[..],
            b"\x00",
            b"\xff\xff\xff",
            b"[1,2",
            b"\x92\xa1x\xc0",
        ] {
            let err = codec.decode(garbage).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Codec, "{garbage:?}");
        }
    }

    #[test]
    fn msgpack_round_trip() {
        check(&MsgPackCodec);
    }

    #[cfg(feature = "json")]
    #[test]
    fn json_round_trip() {
        check(&JsonCodec);
    }

    #[test]
    fn nil_values_decode_to_empty_map() {
        let bytes = rmp_serde::to_vec(&(5_i64, ())).unwrap();
        let d = MsgPackCodec.decode(&bytes).unwrap();
        assert!(d.values.is_empty());
    }
}
