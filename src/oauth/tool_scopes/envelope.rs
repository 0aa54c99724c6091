//! Reads what per-tool scopes decide on from a JSON-RPC body, and nothing else: each message's
//! `method`, `id`, whether it answers (`result`, `error`), and in `params` the `name`, `uri` or
//! `taskId` it calls. Everything else (arguments above all) is skipped, never built in memory,
//! so a body costs what it weighs. A member the decision depends on that appears twice, or in
//! another case (Go's `encoding/json` matches member names without regard to case, folding `ſ`
//! to `s` and `K` to `k`), makes the message ambiguous: the proxy and the server could read
//! different calls in it.

use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// More messages than this in one batch are refused: no MCP client batches that many.
pub(super) const MAX_BATCH: usize = 100;

/// A member that should be a string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) enum Text {
    #[default]
    Absent,
    Is(String),
    /// Present, and not a string.
    Other,
}

#[derive(Debug, Default)]
pub(super) struct Message {
    pub(super) method: Text,
    /// A string or number id, else null.
    pub(super) id: Value,
    pub(super) params: Params,
    /// Carries `result` or `error`: an answer to a request of the server.
    pub(super) answers: bool,
    pub(super) ambiguous: bool,
}

#[derive(Debug, Default)]
pub(super) enum Params {
    #[default]
    Absent,
    Named(Named),
    /// An array (positional parameters) or a scalar.
    Other,
}

#[derive(Debug, Default)]
pub(super) struct Named {
    pub(super) name: Text,
    pub(super) uri: Text,
    pub(super) task_id: Text,
    pub(super) ambiguous: bool,
}

impl Named {
    pub(super) fn field(&self, field: &str) -> &Text {
        match field {
            "name" => &self.name,
            "uri" => &self.uri,
            _ => &self.task_id,
        }
    }
}

#[derive(Debug)]
pub(super) enum Body {
    One(Message),
    /// The messages, `None` for an element that is no object; `too_many` past `MAX_BATCH`.
    Batch {
        messages: Vec<Option<Message>>,
        too_many: bool,
    },
    /// A scalar where an object or a batch belongs.
    Other,
}

pub(super) fn parse(body: &[u8]) -> Result<Body, serde_json::Error> {
    serde_json::from_slice::<Body>(body)
}

/// The scalar visits of a visitor whose answer to any scalar is `$value`.
macro_rules! every_scalar_is {
    ($value:expr) => {
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok($value)
        }
    };
}

/// `key` as Go would compare it, when it could stand for one of `names`: `encoding/json` matches
/// member names without regard to case (folding `ſ` to `s` and `K` to `k`), and json/v2 can be
/// told to ignore `_` and `-` as well (`task_id`, `me-thod`); pydantic aliases accept `task_id`.
fn folded_match(key: &str, names: &[&'static str]) -> Option<&'static str> {
    let significant = key.chars().filter(|c| !matches!(c, '_' | '-'));
    // No case mapping makes a character disappear: a key longer than every name matches none.
    if significant.clone().count() > 7 {
        return None;
    }
    let folded: String = significant
        .collect::<String>()
        .to_uppercase()
        .to_lowercase();
    names
        .iter()
        .find(|name| name.to_lowercase() == folded)
        .copied()
}

const ENVELOPE: [&str; 6] = ["jsonrpc", "id", "method", "params", "result", "error"];
const PARAMS: [&str; 3] = ["name", "uri", "taskId"];

impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(BodyVisitor)
    }
}

struct BodyVisitor;

impl<'de> Visitor<'de> for BodyVisitor {
    type Value = Body;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON-RPC message or batch")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Body, A::Error> {
        MessageVisitor.visit_map(map).map(Body::One)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Body, A::Error> {
        let mut messages = Vec::new();
        let mut too_many = false;
        loop {
            if messages.len() == MAX_BATCH {
                too_many = seq.next_element::<IgnoredAny>()?.is_some();
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                break;
            }
            match seq.next_element::<Element>()? {
                Some(Element(message)) => messages.push(message),
                None => break,
            }
        }
        Ok(Body::Batch { messages, too_many })
    }
    every_scalar_is!(Body::Other);
}

/// One element of a batch: a message, or `None` for anything else (skipped, arrays too).
struct Element(Option<Message>);

impl<'de> Deserialize<'de> for Element {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ElementVisitor).map(Element)
    }
}

struct ElementVisitor;

impl<'de> Visitor<'de> for ElementVisitor {
    type Value = Option<Message>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON-RPC message")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<Message>, A::Error> {
        MessageVisitor.visit_map(map).map(Some)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Option<Message>, A::Error> {
        skipped(seq).map(|()| None)
    }
    every_scalar_is!(None);
}

struct MessageVisitor;

impl<'de> Visitor<'de> for MessageVisitor {
    type Value = Message;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON-RPC message")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Message, A::Error> {
        let mut message = Message::default();
        let mut seen: Vec<&'static str> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let Some(member) = folded_match(&key, &ENVELOPE) else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            if member != key || seen.contains(&member) {
                message.ambiguous = true;
            }
            seen.push(member);
            match member {
                "method" => message.method = map.next_value::<TextValue>()?.0,
                "id" => message.id = map.next_value::<IdValue>()?.0,
                "params" => message.params = map.next_value::<ParamsValue>()?.0,
                "result" | "error" => {
                    message.answers = true;
                    map.next_value::<IgnoredAny>()?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(message)
    }
}

/// Skips what is left of an array or an object.
fn skipped<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn skipped_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

struct TextValue(Text);

impl<'de> Deserialize<'de> for TextValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TextVisitor).map(TextValue)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any JSON value")
    }
    fn visit_str<E>(self, value: &str) -> Result<Text, E> {
        Ok(Text::Is(value.to_owned()))
    }
    fn visit_string<E>(self, value: String) -> Result<Text, E> {
        Ok(Text::Is(value))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Text, E> {
        Ok(Text::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Text, E> {
        Ok(Text::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Text, E> {
        Ok(Text::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Text, E> {
        Ok(Text::Other)
    }
    fn visit_unit<E>(self) -> Result<Text, E> {
        Ok(Text::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Text, A::Error> {
        skipped(seq).map(|()| Text::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Text, A::Error> {
        skipped_map(map).map(|()| Text::Other)
    }
}

struct IdValue(Value);

impl<'de> Deserialize<'de> for IdValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(IdVisitor).map(IdValue)
    }
}

struct IdVisitor;

impl<'de> Visitor<'de> for IdVisitor {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any JSON value")
    }
    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }
    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::from(value))
    }
    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::from(value))
    }
    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        Ok(Value::from(value))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Value, A::Error> {
        skipped(seq).map(|()| Value::Null)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Value, A::Error> {
        skipped_map(map).map(|()| Value::Null)
    }
}

struct ParamsValue(Params);

impl<'de> Deserialize<'de> for ParamsValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ParamsVisitor).map(ParamsValue)
    }
}

struct ParamsVisitor;

impl<'de> Visitor<'de> for ParamsVisitor {
    type Value = Params;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("JSON-RPC params")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Params, A::Error> {
        let mut named = Named::default();
        let mut seen: Vec<&'static str> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let Some(member) = folded_match(&key, &PARAMS) else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            if member != key || seen.contains(&member) {
                named.ambiguous = true;
            }
            seen.push(member);
            let value = map.next_value::<TextValue>()?.0;
            match member {
                "name" => named.name = value,
                "uri" => named.uri = value,
                _ => named.task_id = value,
            }
        }
        Ok(Params::Named(named))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Params, A::Error> {
        skipped(seq).map(|()| Params::Other)
    }
    every_scalar_is!(Params::Other);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_fold_as_go_folds_them() {
        assert_eq!(folded_match("Method", &ENVELOPE), Some("method"));
        assert_eq!(folded_match("METHOD", &ENVELOPE), Some("method"));
        assert_eq!(folded_match("paramſ", &ENVELOPE), Some("params"));
        assert_eq!(folded_match("taſkid", &PARAMS), Some("taskId"));
        assert_eq!(folded_match("\u{212a}", &["k"]), Some("k"));
        assert_eq!(folded_match("arguments", &PARAMS), None);
        assert_eq!(folded_match("methods", &ENVELOPE), None);
        assert_eq!(folded_match("task_id", &PARAMS), Some("taskId"));
        assert_eq!(folded_match("me-thod", &ENVELOPE), Some("method"));
        assert_eq!(folded_match("p_a_r_a_m_s", &ENVELOPE), Some("params"));
        assert_eq!(folded_match("arguments_", &PARAMS), None);
    }

    #[test]
    fn arguments_are_skipped_not_built() {
        let body = br#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"arguments":{"name":"x","Name":"y","n":[1,2,{"name":3}]},"name":"t"}}"#;
        let Ok(Body::One(message)) = parse(body) else {
            panic!("one message")
        };
        assert_eq!(message.method, Text::Is("tools/call".into()));
        assert_eq!(message.id, Value::from("a"));
        assert!(!message.ambiguous);
        let Params::Named(named) = message.params else {
            panic!("named params")
        };
        assert_eq!(named.name, Text::Is("t".into()));
        assert!(
            !named.ambiguous,
            "case variants inside arguments decide nothing"
        );
    }
}
