//! Property tests: any value map, with any deadline an `i64` of nanoseconds can hold,
//! round-trips through each codec; broken encodings are codec errors, never panics.

use std::collections::BTreeMap;

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::test_runner::Config;
use scs_core::time::OffsetDateTime;
use scs_core::{Codec, ErrorKind, JsonCodec, MsgPackCodec, SessionData, Value, Values};
use serde::{Serialize, Serializer};

/// A session value as users write them: scalars, bytes, and nested lists and maps.
#[derive(Debug, Clone)]
enum Model {
    Str(String),
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
    Bytes(Vec<u8>),
    List(Vec<Model>),
    Map(BTreeMap<String, Model>),
}

impl Serialize for Model {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Str(v) => s.serialize_str(v),
            Self::I64(v) => s.serialize_i64(*v),
            Self::U64(v) => s.serialize_u64(*v),
            Self::F64(v) => s.serialize_f64(*v),
            Self::Bool(v) => s.serialize_bool(*v),
            Self::Bytes(v) => s.serialize_bytes(v),
            Self::List(v) => v.serialize(s),
            Self::Map(v) => v.serialize(s),
        }
    }
}

impl Model {
    /// What JSON gives back: it has no bytes type, so bytes come back as a list of numbers
    /// (typed reads still turn them into bytes).
    fn as_json_reads_it(&self) -> Self {
        match self {
            Self::Bytes(b) => Self::List(b.iter().map(|&x| Self::U64(x.into())).collect()),
            Self::List(v) => Self::List(v.iter().map(Self::as_json_reads_it).collect()),
            Self::Map(m) => Self::Map(
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_json_reads_it()))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

fn finite_f64() -> impl Strategy<Value = f64> {
    use proptest::num::f64::{NEGATIVE, NORMAL, POSITIVE, SUBNORMAL, ZERO};
    POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO
}

/// Any value; with `floats` false, no floating-point numbers anywhere in it.
fn model(floats: bool) -> impl Strategy<Value = Model> {
    let float = if floats {
        finite_f64().prop_map(Model::F64).boxed()
    } else {
        any::<bool>().prop_map(Model::Bool).boxed()
    };
    let leaf = prop_oneof![
        any::<String>().prop_map(Model::Str),
        any::<i64>().prop_map(Model::I64),
        any::<u64>().prop_map(Model::U64),
        float,
        any::<bool>().prop_map(Model::Bool),
        vec(any::<u8>(), 0..48).prop_map(Model::Bytes),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..8).prop_map(Model::List),
            btree_map(any::<String>(), inner, 0..8).prop_map(Model::Map),
        ]
    })
}

fn session(floats: bool) -> impl Strategy<Value = (i64, BTreeMap<String, Model>)> {
    (
        any::<i64>(),
        btree_map(any::<String>(), model(floats), 0..12),
    )
}

fn data_of(nanos: i64, models: &BTreeMap<String, Model>, json: bool) -> SessionData {
    // Every i64 of nanoseconds (years 1677 to 2262) is a valid timestamp.
    let deadline = OffsetDateTime::from_unix_timestamp_nanos(nanos.into()).unwrap();
    let values: Values = models
        .iter()
        .map(|(k, m)| {
            let m = if json {
                m.as_json_reads_it()
            } else {
                m.clone()
            };
            (k.clone(), Value::from_serialize(&m).unwrap())
        })
        .collect();
    SessionData { deadline, values }
}

fn config() -> Config {
    Config {
        // Failures print their minimal case; no regression files in the source tree.
        failure_persistence: None,
        ..Config::default()
    }
}

fn round_trip(codec: &dyn Codec, nanos: i64, models: &BTreeMap<String, Model>, json: bool) {
    let data = data_of(nanos, models, false);
    let bytes = codec.encode(&data).unwrap();
    let back = codec.decode(&bytes).unwrap();
    assert_eq!(back.deadline, data.deadline);
    let want = data_of(nanos, models, json).values;
    // `Value`'s Debug hides content by design: show both sides as JSON on failure.
    assert!(
        back.values == want,
        "{} changed the values:\n got  {}\n want {}",
        codec.name(),
        serde_json::to_string(&back.values).unwrap_or_default(),
        serde_json::to_string(&want).unwrap_or_default(),
    );
    // Encoding what was decoded gives the same bytes: nothing drifts across commits.
    assert_eq!(codec.encode(&back).unwrap(), bytes);
    // Every strict prefix (a truncated write) is a codec error.
    for cut in [0, bytes.len() / 2, bytes.len() - 1] {
        let err = codec.decode(&bytes[..cut]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Codec);
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn msgpack_round_trips_any_value_map((nanos, models) in session(true)) {
        round_trip(&MsgPackCodec, nanos, &models, false);
    }

    #[test]
    fn json_round_trips_any_value_map_without_floats((nanos, models) in session(false)) {
        round_trip(&JsonCodec, nanos, &models, true);
    }

    #[test]
    fn json_round_trips_any_value_map((nanos, models) in session(true)) {
        round_trip(&JsonCodec, nanos, &models, true);
    }

    #[test]
    fn json_keeps_every_f64_bit_for_bit(f in finite_f64()) {
        let mut models = BTreeMap::new();
        models.insert("f".to_owned(), Model::F64(f));
        let data = data_of(0, &models, false);
        let back = JsonCodec.decode(&JsonCodec.encode(&data).unwrap()).unwrap();
        prop_assert_eq!(back.values["f"].to::<f64>().unwrap().to_bits(), f.to_bits(), "{:e}", f);
    }

    #[test]
    fn typed_reads_give_back_what_was_put(
        nanos in any::<i64>(),
        s in any::<String>(),
        i in any::<i64>(),
        u in any::<u64>(),
        f in finite_f64(),
        b in any::<bool>(),
        bytes in vec(any::<u8>(), 0..64),
        list in vec(any::<i64>(), 0..8),
        map in btree_map(any::<String>(), any::<String>(), 0..8),
    ) {
        let mut models = BTreeMap::new();
        models.insert("s".to_owned(), Model::Str(s.clone()));
        models.insert("i".to_owned(), Model::I64(i));
        models.insert("u".to_owned(), Model::U64(u));
        models.insert("f".to_owned(), Model::F64(f));
        models.insert("b".to_owned(), Model::Bool(b));
        models.insert("bytes".to_owned(), Model::Bytes(bytes.clone()));
        models.insert("list".to_owned(), Model::List(list.iter().map(|&x| Model::I64(x)).collect()));
        models.insert(
            "map".to_owned(),
            Model::Map(map.iter().map(|(k, v)| (k.clone(), Model::Str(v.clone()))).collect()),
        );
        let codecs: [&dyn Codec; 2] = [&MsgPackCodec, &JsonCodec];
        for codec in codecs {
            let data = data_of(nanos, &models, false);
            let back = codec.decode(&codec.encode(&data).unwrap()).unwrap();
            let v = &back.values;
            prop_assert_eq!(back.deadline, data.deadline, "{}", codec.name());
            prop_assert_eq!(&v["s"].to::<String>().unwrap(), &s);
            prop_assert_eq!(v["i"].to::<i64>().unwrap(), i);
            prop_assert_eq!(v["u"].to::<u64>().unwrap(), u);
            if codec.name() == "msgpack" {
                // JSON's floats: see json_keeps_every_f64_bit_for_bit.
                prop_assert_eq!(v["f"].to::<f64>().unwrap().to_bits(), f.to_bits(), "{:e}", f);
            }
            prop_assert_eq!(v["b"].to::<bool>().unwrap(), b);
            prop_assert_eq!(v["bytes"].to::<serde_bytes::ByteBuf>().unwrap().into_vec(), bytes.clone());
            prop_assert_eq!(v["list"].to::<Vec<i64>>().unwrap(), list.clone());
            prop_assert_eq!(v["map"].to::<BTreeMap<String, String>>().unwrap(), map.clone());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..256)) {
        let codecs: [&dyn Codec; 2] = [&MsgPackCodec, &JsonCodec];
        for codec in codecs {
            if let Err(e) = codec.decode(&bytes) {
                prop_assert_eq!(e.kind(), ErrorKind::Codec);
            }
        }
    }
}
