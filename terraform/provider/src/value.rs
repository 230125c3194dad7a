//! Terraform values: the types this provider's schemas use, values of those types, and
//! their two encodings — msgpack (the wire format of `DynamicValue`, where unknown values
//! are msgpack extension values) and JSON (the broker's admin objects).

use std::collections::BTreeMap;

use serde_json::{Number, Value as Json};

/// A type, as the schemas here use them.
#[derive(Clone, Debug, PartialEq)]
pub enum Ty {
    String,
    Number,
    Bool,
    List(Box<Ty>),
    Map(Box<Ty>),
    Object(Vec<(&'static str, Ty)>),
}

impl Ty {
    /// cty's JSON type notation, as `Schema.Attribute.type` carries it.
    pub fn to_json(&self) -> Json {
        match self {
            Self::String => "string".into(),
            Self::Number => "number".into(),
            Self::Bool => "bool".into(),
            Self::List(t) => serde_json::json!(["list", t.to_json()]),
            Self::Map(t) => serde_json::json!(["map", t.to_json()]),
            Self::Object(attrs) => {
                let m: serde_json::Map<String, Json> = attrs
                    .iter()
                    .map(|(n, t)| ((*n).to_owned(), t.to_json()))
                    .collect();
                serde_json::json!(["object", m])
            }
        }
    }
}

/// A value. `Unknown` exists only in plans ("known after apply").
#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    Null,
    Unknown,
    Bool(bool),
    Number(f64),
    String(String),
    List(Vec<Val>),
    /// A map or an object (the type says which).
    Map(BTreeMap<String, Val>),
}

impl Val {
    pub fn str(s: impl Into<String>) -> Self {
        Self::String(s.into())
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// An attribute of an object value (`Null` when absent or not an object).
    pub fn get(&self, name: &str) -> &Val {
        match self {
            Self::Map(m) => m.get(name).unwrap_or(&Val::Null),
            _ => &Val::Null,
        }
    }

    pub fn set(&mut self, name: &str, v: Val) {
        if let Self::Map(m) = self {
            m.insert(name.to_owned(), v);
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Self::Null)
    }

    /// Whether the value, or anything inside it, is unknown.
    pub fn has_unknown(&self) -> bool {
        match self {
            Self::Unknown => true,
            Self::List(v) => v.iter().any(Val::has_unknown),
            Self::Map(m) => m.values().any(Val::has_unknown),
            _ => false,
        }
    }
}

/// A value that does not fit its type.
#[derive(Debug, PartialEq, Eq)]
pub struct TypeError(pub String);

impl std::fmt::Display for TypeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// msgpack extension type 0, one zero byte: how cty writes an unknown value.
fn unknown_msgpack() -> rmpv::Value {
    rmpv::Value::Ext(0, vec![0])
}

pub fn to_msgpack(v: &Val, ty: &Ty) -> rmpv::Value {
    use rmpv::Value as M;
    match (v, ty) {
        (Val::Null, _) => M::Nil,
        (Val::Unknown, _) => unknown_msgpack(),
        (Val::Bool(b), _) => M::Boolean(*b),
        (Val::Number(n), _) => {
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                #[allow(clippy::cast_possible_truncation)] // integral and in range: checked above
                M::from(*n as i64)
            } else {
                M::F64(*n)
            }
        }
        (Val::String(s), _) => M::from(s.as_str()),
        (Val::List(items), Ty::List(t)) => {
            M::Array(items.iter().map(|i| to_msgpack(i, t)).collect())
        }
        (Val::Map(m), Ty::Map(t)) => M::Map(
            m.iter()
                .map(|(k, v)| (M::from(k.as_str()), to_msgpack(v, t)))
                .collect(),
        ),
        (Val::Map(m), Ty::Object(attrs)) => M::Map(
            attrs
                .iter()
                .map(|(name, t)| {
                    let v = m.get(*name).unwrap_or(&Val::Null);
                    (M::from(*name), to_msgpack(v, t))
                })
                .collect(),
        ),
        // A value built against another type: written as null (never happens for values
        // built by `from_*` with the same type).
        _ => M::Nil,
    }
}

pub fn encode(v: &Val, ty: &Ty) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut out, &to_msgpack(v, ty));
    out
}

pub fn from_msgpack(m: &rmpv::Value, ty: &Ty) -> Result<Val, TypeError> {
    use rmpv::Value as M;
    let wrong = |what: &str| TypeError(format!("expected {what}, got {m}"));
    match m {
        M::Nil => return Ok(Val::Null),
        // Type 0 is an unknown; newer Terraform sends refined unknowns as type 12.
        M::Ext(_, _) => return Ok(Val::Unknown),
        _ => {}
    }
    match ty {
        Ty::String => m.as_str().map(Val::str).ok_or_else(|| wrong("a string")),
        Ty::Bool => m.as_bool().map(Val::Bool).ok_or_else(|| wrong("a bool")),
        Ty::Number => match m {
            M::Integer(i) => i
                .as_i64()
                .map(|i| i as f64)
                .or_else(|| i.as_u64().map(|u| u as f64))
                .map(Val::Number)
                .ok_or_else(|| wrong("a number")),
            M::F32(f) => Ok(Val::Number(f64::from(*f))),
            M::F64(f) => Ok(Val::Number(*f)),
            // cty writes numbers that do not fit a float as strings.
            M::String(s) => s
                .as_str()
                .and_then(|s| s.parse().ok())
                .map(Val::Number)
                .ok_or_else(|| wrong("a number")),
            _ => Err(wrong("a number")),
        },
        Ty::List(t) => match m {
            M::Array(items) => Ok(Val::List(
                items
                    .iter()
                    .map(|i| from_msgpack(i, t))
                    .collect::<Result<_, _>>()?,
            )),
            _ => Err(wrong("a list")),
        },
        Ty::Map(t) => match m {
            M::Map(entries) => {
                let mut out = BTreeMap::new();
                for (k, v) in entries {
                    let k = k.as_str().ok_or_else(|| wrong("string map keys"))?;
                    out.insert(k.to_owned(), from_msgpack(v, t)?);
                }
                Ok(Val::Map(out))
            }
            _ => Err(wrong("a map")),
        },
        Ty::Object(attrs) => match m {
            M::Map(entries) => {
                let mut out = BTreeMap::new();
                for (k, v) in entries {
                    let k = k.as_str().ok_or_else(|| wrong("string attribute names"))?;
                    if let Some((name, t)) = attrs.iter().find(|(n, _)| *n == k) {
                        out.insert((*name).to_owned(), from_msgpack(v, t)?);
                    }
                }
                for (name, _) in attrs {
                    out.entry((*name).to_owned()).or_insert(Val::Null);
                }
                Ok(Val::Map(out))
            }
            _ => Err(wrong("an object")),
        },
    }
}

pub fn decode(bytes: &[u8], ty: &Ty) -> Result<Val, TypeError> {
    let mut r = bytes;
    let m = rmpv::decode::read_value(&mut r).map_err(|e| TypeError(format!("msgpack: {e}")))?;
    if !r.is_empty() {
        return Err(TypeError("msgpack: bytes after the value".into()));
    }
    from_msgpack(&m, ty)
}

/// A JSON value (from the broker, or a state file) as a value of `ty`. Keys the type does
/// not name are dropped; missing ones are null.
pub fn from_json(j: &Json, ty: &Ty) -> Result<Val, TypeError> {
    let wrong = |what: &str| TypeError(format!("expected {what}, got {j}"));
    if j.is_null() {
        return Ok(Val::Null);
    }
    match ty {
        Ty::String => j.as_str().map(Val::str).ok_or_else(|| wrong("a string")),
        Ty::Bool => j.as_bool().map(Val::Bool).ok_or_else(|| wrong("a bool")),
        Ty::Number => j.as_f64().map(Val::Number).ok_or_else(|| wrong("a number")),
        Ty::List(t) => match j {
            Json::Array(items) => Ok(Val::List(
                items
                    .iter()
                    .map(|i| from_json(i, t))
                    .collect::<Result<_, _>>()?,
            )),
            _ => Err(wrong("a list")),
        },
        Ty::Map(t) => match j {
            Json::Object(o) => Ok(Val::Map(
                o.iter()
                    .map(|(k, v)| Ok((k.clone(), from_json(v, t)?)))
                    .collect::<Result<_, TypeError>>()?,
            )),
            _ => Err(wrong("a map")),
        },
        Ty::Object(attrs) => match j {
            Json::Object(o) => {
                let mut out = BTreeMap::new();
                for (name, t) in attrs {
                    let v = match o.get(*name) {
                        Some(v) => from_json(v, t)?,
                        None => Val::Null,
                    };
                    out.insert((*name).to_owned(), v);
                }
                Ok(Val::Map(out))
            }
            _ => Err(wrong("an object")),
        },
    }
}

/// A known value as JSON; `None` for null (the key is left out). Unknown values never
/// reach here (callers check `has_unknown` first) and are left out too.
pub fn to_json(v: &Val) -> Option<Json> {
    match v {
        Val::Null | Val::Unknown => None,
        Val::Bool(b) => Some(Json::Bool(*b)),
        Val::Number(n) => Some(if n.fract() == 0.0 && n.abs() < 9.0e15 {
            #[allow(clippy::cast_possible_truncation)] // integral and in range: checked above
            Json::Number(Number::from(*n as i64))
        } else {
            Number::from_f64(*n).map_or(Json::Null, Json::Number)
        }),
        Val::String(s) => Some(Json::String(s.clone())),
        Val::List(items) => Some(Json::Array(
            items
                .iter()
                .map(|i| to_json(i).unwrap_or(Json::Null))
                .collect(),
        )),
        Val::Map(m) => Some(Json::Object(
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), to_json(v)?)))
                .collect(),
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn boundary_like() -> Ty {
        Ty::Object(vec![
            ("name", Ty::String),
            ("max_hops", Ty::Number),
            ("single_use", Ty::Bool),
            ("scopes", Ty::List(Box::new(Ty::String))),
            ("claims", Ty::Map(Box::new(Ty::String))),
            (
                "require",
                Ty::Object(vec![("uid", Ty::List(Box::new(Ty::Number)))]),
            ),
        ])
    }

    #[test]
    fn msgpack_round_trip_keeps_nulls_and_unknowns() {
        let ty = boundary_like();
        let mut v = from_json(
            &serde_json::json!({"name": "b", "max_hops": 3, "scopes": ["a", "b"],
                "claims": {"repository": "acme/*"}, "require": {"uid": [1000]}}),
            &ty,
        )
        .unwrap();
        v.set("single_use", Val::Unknown);
        let back = decode(&encode(&v, &ty), &ty).unwrap();
        assert_eq!(back, v);
        assert_eq!(back.get("single_use"), &Val::Unknown);
        assert!(back.has_unknown());
    }

    #[test]
    fn unknown_is_cty_fixext1_type_0() {
        assert_eq!(encode(&Val::Unknown, &Ty::String), vec![0xd4, 0, 0]);
        // A refined unknown (extension type 12) is still unknown.
        assert_eq!(decode(&[0xd4, 12, 0], &Ty::String).unwrap(), Val::Unknown);
    }

    #[test]
    fn json_leaves_out_nulls_and_writes_whole_numbers_as_integers() {
        let ty = boundary_like();
        let v = from_json(
            &serde_json::json!({"name": "b", "max_hops": 3, "require": {"uid": [1000]}}),
            &ty,
        )
        .unwrap();
        assert_eq!(
            to_json(&v).unwrap(),
            serde_json::json!({"name": "b", "max_hops": 3, "require": {"uid": [1000]}})
        );
    }

    #[test]
    fn wrong_types_are_errors_not_panics() {
        assert!(from_json(&serde_json::json!(3), &Ty::String).is_err());
        assert!(decode(&[0xa5, b'a'], &Ty::String).is_err()); // a 5-byte string cut short
        assert!(decode(&[0xc0, 0xc0], &Ty::String).is_err()); // two values
        assert!(decode(&[], &Ty::String).is_err());
        assert!(from_json(&serde_json::json!({"name": 1}), &boundary_like()).is_err());
    }
}
