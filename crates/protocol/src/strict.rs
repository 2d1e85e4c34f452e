//! [`Strict`]: a deserializer wrapped around `serde_json`'s that holds every request body
//! to what the OpenAPI document says of it, where serde's derives are more lenient.
//!
//! Two things are refused, at any depth:
//!
//! - **An array where an object is required.** serde's derived `Deserialize` for a struct
//!   also accepts the sequence form (`["name","acme"]` for `{"name":..,"account":..}`), and
//!   an internally tagged enum (`{"kind":"tcp",..}`) accepts `["tcp",..]`. The document
//!   says `type: object` for both, so a client relying on the array form would be relying
//!   on an accident. A struct is recognised by the call its derive makes
//!   (`deserialize_struct`, or `struct_variant` for an enum's struct variant); an
//!   internally tagged enum (and a struct inside one) is deserialized through
//!   `deserialize_any` with a private visitor, so there the only signal serde gives is the
//!   visitor's `expecting` text, which serde_derive writes as `struct X` and
//!   `internally tagged enum X`.
//! - **A string or object key holding U+0000.** PostgreSQL's `text` and `jsonb` cannot
//!   hold it (SQLite can), so letting it through made the same request a 201 on one store
//!   and a 500 on the other. Refusing it here, in the one parse every body goes through,
//!   makes both stores accept the same documents.
//!
//! Everything else is passed through unchanged, so `serde_path_to_error` (wrapped around
//! this) still names the offending field.
//!
//! It lives with the wire types because one of them needs it too: an internally tagged
//! enum's variant is deserialized by serde from a buffer, out of any wrapper's reach, so
//! [`DelegateMessage`](crate::socket::DelegateMessage) reads its variant through this
//! itself. The server's JSON parse (`extract::parse`) wraps every body in it.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};

/// What a refused U+0000 is reported as (the error also carries the path).
pub const NUL_IN_STRING: &str =
    "a string holds U+0000 (the NUL character, \\u0000), which the server does not store; remove it";
/// The same, for an object key.
pub const NUL_IN_KEY: &str =
    "an object key holds U+0000 (the NUL character, \\u0000), which the server does not store; remove it";

/// A deserializer that refuses arrays in place of objects and, when `nul` is set,
/// strings holding U+0000.
///
/// `nul` is a prefilter's answer: a body without the bytes `\u0000` cannot hold a NUL
/// (JSON forbids it unescaped), so its strings need not be looked at.
#[derive(Debug)]
pub struct Strict<D> {
    inner: D,
    nul: bool,
}

impl<D> Strict<D> {
    pub fn new(inner: D, nul: bool) -> Self {
        Self { inner, nul }
    }
}

/// Whether the raw bytes of a JSON text may hold a `\u0000` escape. A false positive
/// (`\\u0000`, an escaped backslash followed by `u0000`) only costs the exact check.
pub fn may_hold_nul(bytes: &[u8]) -> bool {
    bytes.windows(6).any(|w| w == b"\\u0000")
}

/// What a visitor is being asked for, as far as this wrapper cares.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    /// Whatever the visitor says it takes.
    Any,
    /// A struct (or struct variant): an object only.
    Object,
    /// An object key: refuse NUL with the key's message.
    Key,
}

/// Wraps a visitor so that what it is handed is checked (and wrapped in turn).
struct Wrap<V> {
    inner: V,
    nul: bool,
    want: Want,
}

impl<V> Wrap<V> {
    fn new(inner: V, nul: bool, want: Want) -> Self {
        Self { inner, nul, want }
    }
}

/// `expecting` of a visitor, as text.
struct Expecting<'a, V>(&'a V);

impl<'de, V: Visitor<'de>> fmt::Display for Expecting<'_, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }
}

impl<'de, V: Visitor<'de>> Wrap<V> {
    /// Whether this visitor builds something the document calls an object.
    fn wants_object(&self) -> bool {
        if self.want == Want::Object {
            return true;
        }
        // serde_derive's own wording (de/struct_.rs, de/enum_internally.rs): the only
        // mark of a struct or tagged enum reached through `deserialize_any`.
        let expecting = Expecting(&self.inner).to_string();
        expecting.starts_with("struct ") || expecting.starts_with("internally tagged enum ")
    }

    fn check_str<E: de::Error>(&self, v: &str) -> Result<(), E> {
        if self.nul && v.contains('\0') {
            return Err(E::custom(if self.want == Want::Key {
                NUL_IN_KEY
            } else {
                NUL_IN_STRING
            }));
        }
        Ok(())
    }
}

/// Forwards the scalar visits unchanged.
macro_rules! forward_visits {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(
            fn $method<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
                self.inner.$method(v)
            }
        )*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visits!(
        visit_bool(bool),
        visit_i8(i8),
        visit_i16(i16),
        visit_i32(i32),
        visit_i64(i64),
        visit_i128(i128),
        visit_u8(u8),
        visit_u16(u16),
        visit_u32(u32),
        visit_u64(u64),
        visit_u128(u128),
        visit_f32(f32),
        visit_f64(f64),
        visit_char(char),
        visit_bytes(&[u8]),
        visit_byte_buf(Vec<u8>),
    );

    fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Self::Value, E> {
        self.inner.visit_borrowed_bytes(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        self.check_str(v)?;
        self.inner.visit_str(v)
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        self.check_str(v)?;
        self.inner.visit_borrowed_str(v)
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        self.check_str(&v)?;
        self.inner.visit_string(v)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.inner.visit_some(Strict::new(d, self.nul))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.inner.visit_newtype_struct(Strict::new(d, self.nul))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        if self.wants_object() {
            return Err(de::Error::custom(format_args!(
                "an array where an object ({}) is required",
                Expecting(&self.inner)
            )));
        }
        self.inner.visit_seq(Seq {
            inner: seq,
            nul: self.nul,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_map(Map {
            inner: map,
            nul: self.nul,
        })
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_enum(Enum {
            inner: data,
            nul: self.nul,
        })
    }
}

/// Forwards `deserialize_*` calls, wrapping the visitor.
macro_rules! forward_deserialize {
    ($($method:ident),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
                self.inner.$method(Wrap::new(visitor, self.nul, Want::Any))
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Strict<D> {
    type Error = D::Error;

    forward_deserialize!(
        deserialize_any,
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_option,
        deserialize_unit,
        deserialize_seq,
        deserialize_map,
        deserialize_identifier,
        deserialize_ignored_any,
    );

    fn deserialize_unit_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> Result<V::Value, D::Error> {
        self.inner
            .deserialize_unit_struct(name, Wrap::new(visitor, self.nul, Want::Any))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> Result<V::Value, D::Error> {
        self.inner
            .deserialize_newtype_struct(name, Wrap::new(visitor, self.nul, Want::Any))
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, D::Error> {
        self.inner
            .deserialize_tuple(len, Wrap::new(visitor, self.nul, Want::Any))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner
            .deserialize_tuple_struct(name, len, Wrap::new(visitor, self.nul, Want::Any))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner
            .deserialize_struct(name, fields, Wrap::new(visitor, self.nul, Want::Object))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner
            .deserialize_enum(name, variants, Wrap::new(visitor, self.nul, Want::Any))
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// A seed whose deserializer is wrapped.
struct Seed<S> {
    inner: S,
    nul: bool,
    key: bool,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        if self.key {
            self.inner.deserialize(KeyDeserializer {
                inner: d,
                nul: self.nul,
            })
        } else {
            self.inner.deserialize(Strict::new(d, self.nul))
        }
    }
}

/// An object key's deserializer: keys are strings in JSON, so only the string-ish calls
/// matter, and they report a NUL as a key's.
struct KeyDeserializer<D> {
    inner: D,
    nul: bool,
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for KeyDeserializer<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_any(Wrap::new(visitor, self.nul, Want::Key))
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_str(Wrap::new(visitor, self.nul, Want::Key))
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_string(Wrap::new(visitor, self.nul, Want::Key))
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.inner
            .deserialize_identifier(Wrap::new(visitor, self.nul, Want::Key))
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }

    // Non-string keys (numbers parsed from key text, newtypes around strings): still
    // through `Strict`, whose NUL check reports them as strings, which is close enough.
    fn deserialize_newtype_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> Result<V::Value, D::Error> {
        Strict::new(self.inner, self.nul).deserialize_newtype_struct(name, visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        Strict::new(self.inner, self.nul).deserialize_enum(name, variants, visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        Strict::new(self.inner, self.nul).deserialize_struct(name, fields, visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        Strict::new(self.inner, self.nul).deserialize_tuple_struct(name, len, visitor)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> Result<V::Value, D::Error> {
        Strict::new(self.inner, self.nul).deserialize_unit_struct(name, visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, D::Error> {
        Strict::new(self.inner, self.nul).deserialize_tuple(len, visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf option unit
        seq map ignored_any
    }
}

struct Seq<A> {
    inner: A,
    nul: bool,
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Seq<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, A::Error> {
        self.inner.next_element_seed(Seed {
            inner: seed,
            nul: self.nul,
            key: false,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

struct Map<A> {
    inner: A,
    nul: bool,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Map<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, A::Error> {
        self.inner.next_key_seed(Seed {
            inner: seed,
            nul: self.nul,
            key: true,
        })
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.inner.next_value_seed(Seed {
            inner: seed,
            nul: self.nul,
            key: false,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

struct Enum<A> {
    inner: A,
    nul: bool,
}

impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for Enum<A> {
    type Error = A::Error;
    type Variant = Variant<A::Variant>;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self::Variant), A::Error> {
        let nul = self.nul;
        let (value, variant) = self.inner.variant_seed(Seed {
            inner: seed,
            nul,
            key: true,
        })?;
        Ok((value, Variant { inner: variant, nul }))
    }
}

struct Variant<A> {
    inner: A,
    nul: bool,
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Variant<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.inner.newtype_variant_seed(Seed {
            inner: seed,
            nul: self.nul,
            key: false,
        })
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.inner.tuple_variant(len, Wrap::new(visitor, self.nul, Want::Any))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.inner
            .struct_variant(fields, Wrap::new(visitor, self.nul, Want::Object))
    }
}
