//! JSON for untrusted input: duplicate member names are refused at every depth.
//!
//! RFC 8259 §4 leaves duplicate names to the implementation and `serde_json::Value` keeps
//! the last one; RFC 7515 §5.2 and RFC 7517 §4 require JOSE parsers to refuse them or use
//! the last consistently. Two parsers disagreeing on which value counts is how token
//! confusion starts, so everything untrusted that this workspace reads as generic JSON
//! goes through [`parse_strict`]. serde_json's own recursion limit (128) bounds depth.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Why a document is not acceptable JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StrictJsonError {
    #[error("duplicate member name {0:?}")]
    DuplicateMember(String),
    #[error("malformed JSON at line {line} column {column}")]
    Syntax { line: usize, column: usize },
}

/// Parses one JSON document, refusing duplicate member names anywhere in it.
pub fn parse_strict(bytes: &[u8]) -> Result<Value, StrictJsonError> {
    serde_json::from_slice::<Strict>(bytes)
        .map(|s| s.0)
        .map_err(|e| {
            let msg = e.to_string();
            match msg.strip_prefix(DUPLICATE_PREFIX) {
                // serde_json appends " at line L column C" to custom messages.
                Some(rest) => StrictJsonError::DuplicateMember(
                    rest.rsplit_once(" at line ")
                        .map_or(rest, |(name, _)| name)
                        .to_owned(),
                ),
                None => StrictJsonError::Syntax {
                    line: e.line(),
                    column: e.column(),
                },
            }
        })
}

const DUPLICATE_PREFIX: &str = "duplicate member ";

struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Strict, E> {
        Ok(Strict(Value::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Strict, E> {
        Ok(Strict(Value::Number(v.into())))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Strict, E> {
        Ok(Strict(Value::Number(v.into())))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Strict, E> {
        // JSON has no NaN or infinity, so this only fails for input serde_json never makes.
        Number::from_f64(v)
            .map(|n| Strict(Value::Number(n)))
            .ok_or_else(|| E::custom("non-finite number"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Strict, E> {
        Ok(Strict(Value::String(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Strict, E> {
        Ok(Strict(Value::String(v)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Strict(Value::Array(out)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            // One search per member: the vacant entry is filled once its value is read.
            match out.entry(key) {
                serde_json::map::Entry::Occupied(seen) => {
                    return Err(de::Error::custom(format_args!(
                        "{DUPLICATE_PREFIX}{}",
                        seen.key()
                    )));
                }
                serde_json::map::Entry::Vacant(slot) => {
                    let Strict(v) = map.next_value()?;
                    slot.insert(v);
                }
            }
        }
        Ok(Strict(Value::Object(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_json() {
        let v = parse_strict(br#"{"a":[1,-2,3.5,"x",null,true,{"b":{}}]}"#).unwrap();
        assert_eq!(v["a"][3], "x");
        assert_eq!(v["a"][1], -2);
    }

    #[test]
    fn refuses_duplicates_at_any_depth() {
        assert_eq!(
            parse_strict(br#"{"a":1,"a":2}"#),
            Err(StrictJsonError::DuplicateMember("a".into()))
        );
        assert_eq!(
            parse_strict(br#"{"k":[{"x":{"kid":"1","kid":"2"}}]}"#),
            Err(StrictJsonError::DuplicateMember("kid".into()))
        );
        // An escape that decodes to the same name is the same name.
        assert!(matches!(
            parse_strict(br#"{"kid":1,"k\u0069d":2}"#),
            Err(StrictJsonError::DuplicateMember(_))
        ));
    }

    #[test]
    fn refuses_trailing_garbage_and_bad_syntax() {
        assert!(matches!(
            parse_strict(br#"{"a":1} x"#),
            Err(StrictJsonError::Syntax { .. })
        ));
        assert!(matches!(
            parse_strict(b"{"),
            Err(StrictJsonError::Syntax { .. })
        ));
    }

    #[test]
    fn depth_is_bounded() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(parse_strict(deep.as_bytes()).is_err());
        let ok = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(parse_strict(ok.as_bytes()).is_ok());
    }
}
