//! Session values: any `serde` type, kept with its type.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, ErrorKind, Result};

/// The values of a session, by key. Sorted, so [`keys`](BTreeMap::keys) come out in order.
pub type Values = BTreeMap<String, Value>;

/// One session value: a self-describing tree (integers stay integers, bytes stay bytes,
/// strings stay strings) built from any `Serialize` type and read back as any
/// `Deserialize` type.
///
/// `Debug` shows only the kind of value, never its content, so logging a session never
/// leaks what is in it.
///
/// ```
/// use scs_core::Value;
///
/// let v = Value::from_serialize(&vec![1_u8, 2, 3]).unwrap();
/// assert_eq!(v.to::<Vec<u8>>().unwrap(), vec![1, 2, 3]);
/// // Reading as another type is an error, never a panic.
/// assert!(v.to::<String>().is_err());
/// ```
#[derive(Clone, PartialEq)]
pub struct Value(rmpv::Value);

impl Value {
    /// Builds a value from any serializable type.
    ///
    /// # Errors
    /// [`ErrorKind::Codec`] when the type's `Serialize` implementation fails.
    pub fn from_serialize<T: Serialize + ?Sized>(value: &T) -> Result<Self> {
        rmpv::ext::to_value(value)
            .map(Self)
            .map_err(|e| Error::new(ErrorKind::Codec, "encoding a session value").with_source(e))
    }

    /// Reads the value as `T`.
    ///
    /// # Errors
    /// [`ErrorKind::Codec`] when the stored value does not have the shape of `T`.
    pub fn to<T: DeserializeOwned>(&self) -> Result<T> {
        rmpv::ext::deserialize_from(self.0.as_ref()).map_err(|e| {
            Error::new(
                ErrorKind::Codec,
                format!(
                    "the session value ({}) is not a {}",
                    self.kind(),
                    std::any::type_name::<T>()
                ),
            )
            .with_source(e)
        })
    }

    /// The kind of value, for messages: `"nil"`, `"bool"`, `"integer"`, `"float"`,
    /// `"string"`, `"bytes"`, `"array"`, `"map"` or `"ext"`.
    pub fn kind(&self) -> &'static str {
        use rmpv::Value as V;
        match &self.0 {
            V::Nil => "nil",
            V::Boolean(_) => "bool",
            V::Integer(_) => "integer",
            V::F32(_) | V::F64(_) => "float",
            V::String(_) => "string",
            V::Binary(_) => "bytes",
            V::Array(_) => "array",
            V::Map(_) => "map",
            V::Ext(..) => "ext",
        }
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Value(<{}>)", self.kind())
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        rmpv::Value::deserialize(deserializer).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_keep_types() {
        let i = Value::from_serialize(&-7_i64).unwrap();
        assert_eq!(i.kind(), "integer");
        assert_eq!(i.to::<i64>().unwrap(), -7);
        assert!(i.to::<String>().is_err());

        let b = Value::from_serialize(serde_bytes::Bytes::new(b"\x00\xff")).unwrap();
        assert_eq!(b.kind(), "bytes");
        assert_eq!(
            b.to::<serde_bytes::ByteBuf>().unwrap().into_vec(),
            vec![0, 255]
        );

        let t = time::OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
        let tv = Value::from_serialize(&t).unwrap();
        assert_eq!(tv.to::<time::OffsetDateTime>().unwrap(), t);
    }

    #[test]
    fn debug_hides_content() {
        let v = Value::from_serialize("secret").unwrap();
        assert_eq!(format!("{v:?}"), "Value(<string>)");
    }
}
