//! Input events: the schema of SPEC "Input", decoding of one JSON line, and the typed reasons for bad input.
//!
//! [`decode`] applies SPEC's "Bad input, exactly" list in its order, so the first failing check names the
//! reason. It never panics and never allocates for the common case beyond the event id and profile fields.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use compact_str::CompactString;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::credit_code::EntityKey;
use crate::time::{Ts, parse_rfc3339};

/// Longest accepted line, in bytes, without its newline.
pub const MAX_LINE_BYTES: usize = 65_536;
/// Longest accepted `event_id`, in characters.
pub const MAX_EVENT_ID_CHARS: usize = 256;

/// The seven event kinds of SPEC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    AddressChange,
    Penalty,
    Lawsuit,
    Complaint,
    NegativeSentiment,
    Classification,
    Profile,
}

impl Kind {
    /// Every kind, in schema order.
    pub const ALL: [Kind; 7] = [
        Kind::AddressChange,
        Kind::Penalty,
        Kind::Lawsuit,
        Kind::Complaint,
        Kind::NegativeSentiment,
        Kind::Classification,
        Kind::Profile,
    ];

    /// The kind's name in events and rule files.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::AddressChange => "address_change",
            Kind::Penalty => "penalty",
            Kind::Lawsuit => "lawsuit",
            Kind::Complaint => "complaint",
            Kind::NegativeSentiment => "negative_sentiment",
            Kind::Classification => "classification",
            Kind::Profile => "profile",
        }
    }

    /// Parses a kind name.
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether rules can count events of this kind (the five indicator kinds).
    pub fn is_indicator(self) -> bool {
        !matches!(self, Kind::Classification | Kind::Profile)
    }
}

/// A credit-risk class. Unclassified entities have none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum Class {
    A,
    B,
    C,
    D,
}

impl Class {
    /// Every class, best first.
    pub const ALL: [Class; 4] = [Class::A, Class::B, Class::C, Class::D];

    fn parse(s: &str) -> Option<Class> {
        Some(match s {
            "A" => Class::A,
            "B" => Class::B,
            "C" => Class::C,
            "D" => Class::D,
            _ => return None,
        })
    }

    /// `"A"`..`"D"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::A => "A",
            Class::B => "B",
            Class::C => "C",
            Class::D => "D",
        }
    }
}

/// A valid event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `event_id`, unique per real-world event.
    pub id: CompactString,
    /// `entity_id`, packed.
    pub entity: EntityKey,
    pub kind: Kind,
    /// `occurred_at` in epoch seconds, fraction dropped.
    pub at: Ts,
    /// `data.class` of a `classification` event.
    pub class: Option<Class>,
    /// The master data of a `profile` event (`None` for other kinds).
    pub profile: Option<Box<ProfileData>>,
}

/// Longest profile field kept, in characters; a longer value is cut there (profiles are not validated:
/// SPEC lists no bad-input case for them, so a long name is kept, shortened, rather than refused).
pub const MAX_PROFILE_FIELD_CHARS: usize = 200;

/// `data` of a `profile` event: each field as given when it is a string, else `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileData {
    pub name: Option<CompactString>,
    /// 6-digit administrative division code.
    pub region: Option<CompactString>,
    pub industry: Option<CompactString>,
    /// `food`, `drug`, `special_equipment` or `general` (other values are kept as given).
    pub domain: Option<CompactString>,
    /// The unit responsible for the entity.
    pub authority: Option<CompactString>,
    /// A field was cut at [`MAX_PROFILE_FIELD_CHARS`] (counted as a limit hit).
    pub clipped: bool,
}

impl ProfileData {
    fn field(v: &Val<'_>, clipped: &mut bool) -> Option<CompactString> {
        match v {
            Val::Str(s) => Some(match s.char_indices().nth(MAX_PROFILE_FIELD_CHARS) {
                Some((cut, _)) => {
                    *clipped = true;
                    CompactString::from(&s[..cut])
                }
                None => CompactString::from(s.as_ref()),
            }),
            _ => None,
        }
    }
}

/// Why a line is bad input. The names (`as_str`) are stable: they appear in summaries and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    TooLarge,
    NotUtf8,
    Empty,
    NotJson,
    NotObject,
    RepeatedKey,
    MissingField(&'static str),
    WrongType(&'static str),
    BadEventId,
    UnknownKind,
    BadCreditCode,
    BadTime,
    BadClass,
    /// Only the live daemon with the wall clock: `occurred_at` beyond the configured future margin.
    Future,
    /// A valid event the engine cannot hold without going over one of its limits (`[limits]`): refused
    /// whole, its id not used up, so it can be replayed once the limit is raised.
    OverLimit(crate::limits::Limit),
}

impl Reason {
    /// Every reason's name, in [`Reason::index`] order (the bounded label set of the rejection metric).
    pub const NAMES: [&'static str; 15] = [
        "too_large",
        "not_utf8",
        "empty",
        "not_json",
        "not_object",
        "repeated_key",
        "missing_field",
        "wrong_type",
        "bad_event_id",
        "unknown_kind",
        "bad_credit_code",
        "bad_time",
        "bad_class",
        "future",
        "over_limit",
    ];

    /// The position of this reason's name in [`Reason::NAMES`].
    pub fn index(self) -> usize {
        match self {
            Reason::TooLarge => 0,
            Reason::NotUtf8 => 1,
            Reason::Empty => 2,
            Reason::NotJson => 3,
            Reason::NotObject => 4,
            Reason::RepeatedKey => 5,
            Reason::MissingField(_) => 6,
            Reason::WrongType(_) => 7,
            Reason::BadEventId => 8,
            Reason::UnknownKind => 9,
            Reason::BadCreditCode => 10,
            Reason::BadTime => 11,
            Reason::BadClass => 12,
            Reason::Future => 13,
            Reason::OverLimit(_) => 14,
        }
    }

    /// A stable snake_case name, e.g. `missing_field`.
    pub fn as_str(self) -> &'static str {
        Reason::NAMES[self.index()]
    }
}

#[cfg(test)]
#[test]
fn reason_names_follow_their_index() {
    let all = [
        Reason::TooLarge,
        Reason::NotUtf8,
        Reason::Empty,
        Reason::NotJson,
        Reason::NotObject,
        Reason::RepeatedKey,
        Reason::MissingField("x"),
        Reason::WrongType("x"),
        Reason::BadEventId,
        Reason::UnknownKind,
        Reason::BadCreditCode,
        Reason::BadTime,
        Reason::BadClass,
        Reason::Future,
        Reason::OverLimit(crate::limits::Limit::Entities),
    ];
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.index(), i);
    }
    assert_eq!(Reason::MissingField("x").as_str(), "missing_field");
    assert_eq!(Reason::Future.as_str(), "future");
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::TooLarge => write!(f, "line longer than {MAX_LINE_BYTES} bytes"),
            Reason::NotUtf8 => f.write_str("not valid UTF-8"),
            Reason::Empty => f.write_str("empty line"),
            Reason::NotJson => f.write_str("not JSON"),
            Reason::NotObject => f.write_str("not a JSON object"),
            Reason::RepeatedKey => f.write_str("an object has a repeated key"),
            Reason::MissingField(name) => write!(f, "required field `{name}` missing or null"),
            Reason::WrongType(name) => write!(f, "field `{name}` has the wrong type"),
            Reason::BadEventId => write!(f, "`event_id` empty or longer than {MAX_EVENT_ID_CHARS} characters"),
            Reason::UnknownKind => f.write_str("unknown `kind`"),
            Reason::BadCreditCode => f.write_str("`entity_id` is not a valid unified social credit code"),
            Reason::BadTime => f.write_str("`occurred_at` is not an RFC 3339 time"),
            Reason::BadClass => f.write_str("classification without `data.class` in A B C D"),
            Reason::Future => f.write_str("`occurred_at` is further in the future than the configured margin"),
            Reason::OverLimit(limit) => write!(f, "over the limit on {limit}"),
        }
    }
}

/// Where a line came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A line of a file (1-based); `-` is stdin.
    File { file: std::sync::Arc<str>, line: u64 },
    /// A Kafka message.
    Kafka { topic: std::sync::Arc<str>, partition: i32, offset: i64 },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File { file, line } => write!(f, "{file}:{line}"),
            Location::Kafka { topic, partition, offset } => write!(f, "{topic}/{partition}/{offset}"),
        }
    }
}

/// A rejected line: where, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {reason}")]
pub struct Rejection {
    pub location: Location,
    pub reason: Reason,
}

/// Decodes one line (without its newline) into an event, or says why it is bad input.
pub fn decode(line: &[u8]) -> Result<Event, Reason> {
    if line.len() > MAX_LINE_BYTES {
        return Err(Reason::TooLarge);
    }
    let text = std::str::from_utf8(line).map_err(|_| Reason::NotUtf8)?;
    if text.trim_matches(|c: char| c.is_whitespace()).is_empty() {
        return Err(Reason::Empty);
    }
    let repeated = Cell::new(false);
    let mut de = serde_json::Deserializer::from_str(text);
    let top = TopSeed { repeated: &repeated }
        .deserialize(&mut de)
        .and_then(|top| de.end().map(|()| top))
        .map_err(|_| Reason::NotJson)?;
    if repeated.get() {
        return Err(Reason::RepeatedKey);
    }
    let Some(raw) = top else {
        return Err(Reason::NotObject);
    };
    raw.validate()
}

/// The JSON shape of a field value, as far as validation needs it.
#[derive(Debug, Default)]
enum Val<'a> {
    #[default]
    Missing,
    Null,
    Str(Cow<'a, str>),
    Object,
    Other,
}

#[derive(Default)]
struct RawEvent<'a> {
    event_id: Val<'a>,
    entity_id: Val<'a>,
    kind: Val<'a>,
    occurred_at: Val<'a>,
    source: Val<'a>,
    data: Val<'a>,
    /// Members of `data` the schema reads, when `data` is an object.
    fields: DataFields<'a>,
}

/// The members of `data` that some kind reads.
#[derive(Default)]
struct DataFields<'a> {
    class: Val<'a>,
    name: Val<'a>,
    region: Val<'a>,
    industry: Val<'a>,
    domain: Val<'a>,
    authority: Val<'a>,
}

impl<'a> DataFields<'a> {
    fn slot(&mut self, key: &str) -> Option<&mut Val<'a>> {
        match key {
            "class" => Some(&mut self.class),
            "name" => Some(&mut self.name),
            "region" => Some(&mut self.region),
            "industry" => Some(&mut self.industry),
            "domain" => Some(&mut self.domain),
            "authority" => Some(&mut self.authority),
            _ => None,
        }
    }
}

impl RawEvent<'_> {
    fn validate(self) -> Result<Event, Reason> {
        fn required<'v>(v: &'v Val<'_>, name: &'static str) -> Result<&'v str, Reason> {
            match v {
                Val::Str(s) => Ok(s),
                Val::Missing | Val::Null => Err(Reason::MissingField(name)),
                _ => Err(Reason::WrongType(name)),
            }
        }
        let id = required(&self.event_id, "event_id")?;
        let entity = required(&self.entity_id, "entity_id")?;
        let kind = required(&self.kind, "kind")?;
        let at = required(&self.occurred_at, "occurred_at")?;
        if !matches!(self.source, Val::Missing | Val::Null | Val::Str(_)) {
            return Err(Reason::WrongType("source"));
        }
        if !matches!(self.data, Val::Missing | Val::Null | Val::Object) {
            return Err(Reason::WrongType("data"));
        }
        if id.is_empty() || (id.len() > MAX_EVENT_ID_CHARS && id.chars().count() > MAX_EVENT_ID_CHARS) {
            return Err(Reason::BadEventId);
        }
        let kind = Kind::parse(kind).ok_or(Reason::UnknownKind)?;
        let entity = EntityKey::parse(entity).ok_or(Reason::BadCreditCode)?;
        let at = parse_rfc3339(at).map_err(|_| Reason::BadTime)?;
        let class = match (kind, &self.fields.class) {
            (Kind::Classification, Val::Str(c)) => Some(Class::parse(c).ok_or(Reason::BadClass)?),
            (Kind::Classification, _) => return Err(Reason::BadClass),
            _ => None,
        };
        let profile = (kind == Kind::Profile).then(|| {
            let f = &self.fields;
            let mut clipped = false;
            Box::new(ProfileData {
                name: ProfileData::field(&f.name, &mut clipped),
                region: ProfileData::field(&f.region, &mut clipped),
                industry: ProfileData::field(&f.industry, &mut clipped),
                domain: ProfileData::field(&f.domain, &mut clipped),
                authority: ProfileData::field(&f.authority, &mut clipped),
                clipped,
            })
        });
        Ok(Event { id: CompactString::from(id), entity, kind, at, class, profile })
    }
}

/// Remembers the keys of one object and reports a repeat.
#[derive(Default)]
struct KeySet<'a> {
    small: smallvec::SmallVec<[Cow<'a, str>; 8]>,
    large: Option<std::collections::HashSet<Cow<'a, str>>>,
}

impl<'a> KeySet<'a> {
    /// Returns false if `key` was seen before.
    fn insert(&mut self, key: Cow<'a, str>) -> bool {
        if let Some(set) = &mut self.large {
            return set.insert(key);
        }
        if self.small.contains(&key) {
            return false;
        }
        self.small.push(key);
        if self.small.len() > 16 {
            self.large = Some(self.small.drain(..).collect());
        }
        true
    }
}

/// A key, borrowed from the line when it has no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

/// Walks any JSON value, flags repeated keys in every object, and returns its [`Val`] shape.
/// With `of_data`, the object's members the schema reads ([`DataFields`]) are returned as well.
struct WalkSeed<'c> {
    repeated: &'c Cell<bool>,
    of_data: bool,
}

impl<'de> DeserializeSeed<'de> for WalkSeed<'_> {
    type Value = (Val<'de>, DataFields<'de>);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for WalkSeed<'_> {
    type Value = (Val<'de>, DataFields<'de>);
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok((Val::Null, DataFields::default()))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok((Val::Other, DataFields::default()))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok((Val::Other, DataFields::default()))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok((Val::Other, DataFields::default()))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok((Val::Other, DataFields::default()))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok((Val::Str(Cow::Borrowed(v)), DataFields::default()))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok((Val::Str(Cow::Owned(v.to_owned())), DataFields::default()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let inner = WalkSeed { repeated: self.repeated, of_data: false };
        while seq.next_element_seed(WalkSeed { ..inner })?.is_some() {}
        Ok((Val::Other, DataFields::default()))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut keys = KeySet::default();
        let mut fields = DataFields::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let (value, _) = map.next_value_seed(WalkSeed { repeated: self.repeated, of_data: false })?;
            if self.of_data
                && let Some(slot) = fields.slot(&key)
            {
                *slot = value;
            }
            if !keys.insert(key) {
                self.repeated.set(true);
            }
        }
        Ok((Val::Object, fields))
    }
}

/// The top level: an object becomes `Some(RawEvent)`, anything else `None` (not an object).
struct TopSeed<'c> {
    repeated: &'c Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for TopSeed<'_> {
    type Value = Option<RawEvent<'de>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopSeed<'_> {
    type Value = Option<RawEvent<'de>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        WalkSeed { repeated: self.repeated, of_data: false }.visit_seq(seq)?;
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        // The schema's keys are remembered as bits; only other keys go to a `KeySet`.
        let mut known = 0u8;
        let mut others = KeySet::default();
        let mut raw = RawEvent::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let (bit, slot) = match key.as_ref() {
                "event_id" => (1, Some(&mut raw.event_id)),
                "entity_id" => (2, Some(&mut raw.entity_id)),
                "kind" => (4, Some(&mut raw.kind)),
                "occurred_at" => (8, Some(&mut raw.occurred_at)),
                "source" => (16, Some(&mut raw.source)),
                "data" => (32, Some(&mut raw.data)),
                _ => (0, None),
            };
            let is_data = bit == 32;
            let (value, fields) = map.next_value_seed(WalkSeed { repeated: self.repeated, of_data: is_data })?;
            if let Some(slot) = slot {
                *slot = value;
            }
            if is_data {
                raw.fields = fields;
            }
            let repeated = if bit == 0 { !others.insert(key) } else { known & bit != 0 };
            known |= bit;
            if repeated {
                self.repeated.set(true);
            }
        }
        Ok(Some(raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CODE: &str = "91350100M000100Y43";

    fn line(fields: &str) -> String {
        format!("{{{fields}}}")
    }

    fn ok_line(kind: &str, extra: &str) -> String {
        line(&format!(
            r#""event_id":"e1","entity_id":"{CODE}","kind":"{kind}","occurred_at":"2025-03-01T09:30:00+08:00"{extra}"#
        ))
    }

    #[test]
    fn keeps_the_master_data_of_a_profile() {
        let long = "名".repeat(MAX_PROFILE_FIELD_CHARS + 5);
        let data = format!(
            r#","data":{{"name":"{long}","region":"360502","industry":"餐饮","domain":"food","authority":7,"x":{{"name":"no"}}}}"#
        );
        let p = decode(ok_line("profile", &data).as_bytes()).unwrap().profile.unwrap();
        assert_eq!(p.name.unwrap().chars().count(), MAX_PROFILE_FIELD_CHARS);
        assert_eq!(p.region.as_deref(), Some("360502"));
        assert_eq!(p.industry.as_deref(), Some("餐饮"));
        assert_eq!(p.domain.as_deref(), Some("food"));
        assert_eq!(p.authority, None, "not a string");
        // Other kinds carry no profile, and a repeated key inside data is still bad input.
        assert_eq!(decode(ok_line("penalty", &data).as_bytes()).unwrap().profile, None);
        let repeated = r#","data":{"name":"a","name":"b"}"#;
        assert_eq!(decode(ok_line("profile", repeated).as_bytes()), Err(Reason::RepeatedKey));
    }

    #[test]
    fn decodes_every_kind() {
        for kind in Kind::ALL {
            let extra = if kind == Kind::Classification { r#","data":{"class":"B"}"# } else { "" };
            let ev = decode(ok_line(kind.as_str(), extra).as_bytes()).unwrap();
            assert_eq!(ev.kind, kind);
            assert_eq!(ev.at, 1_740_792_600);
            assert_eq!(ev.entity.to_string(), CODE);
        }
        let ev = decode(ok_line("classification", r#","data":{"class":"D","x":[1,{"y":2}]},"source":null"#).as_bytes());
        assert_eq!(ev.unwrap().class, Some(Class::D));
    }

    #[test]
    fn names_each_reason() {
        let cases: Vec<(Vec<u8>, Reason)> = vec![
            (vec![b'x'; MAX_LINE_BYTES + 1], Reason::TooLarge),
            (b"{\"a\":\"\xff\"}".to_vec(), Reason::NotUtf8),
            (b"  \t\r".to_vec(), Reason::Empty),
            (b"{\"event_id\":".to_vec(), Reason::NotJson),
            (b"{\"a\":NaN}".to_vec(), Reason::NotJson),
            (b"[1,2]".to_vec(), Reason::NotObject),
            (b"\"x\"".to_vec(), Reason::NotObject),
            (ok_line("penalty", r#","event_id":"e2""#).into_bytes(), Reason::RepeatedKey),
            (ok_line("penalty", r#","data":{"a":1,"\u0061":2}"#).into_bytes(), Reason::RepeatedKey),
            (ok_line("penalty", r#","x":[{"a":1,"a":1}]"#).into_bytes(), Reason::RepeatedKey),
            (
                line(&format!(r#""entity_id":"{CODE}","kind":"penalty","occurred_at":"2025-03-01T09:30:00Z""#))
                    .into_bytes(),
                Reason::MissingField("event_id"),
            ),
            (
                line(&format!(
                    r#""event_id":null,"entity_id":"{CODE}","kind":"penalty","occurred_at":"2025-03-01T09:30:00Z""#
                ))
                .into_bytes(),
                Reason::MissingField("event_id"),
            ),
            (
                line(&format!(
                    r#""event_id":1,"entity_id":"{CODE}","kind":"penalty","occurred_at":"2025-03-01T09:30:00Z""#
                ))
                .into_bytes(),
                Reason::WrongType("event_id"),
            ),
            (ok_line("penalty", r#","source":5"#).into_bytes(), Reason::WrongType("source")),
            (ok_line("penalty", r#","data":"x""#).into_bytes(), Reason::WrongType("data")),
            (ok_line("fraud", "").into_bytes(), Reason::UnknownKind),
            (ok_line("penalty", "").replace(CODE, "91350100M000100Y44").into_bytes(), Reason::BadCreditCode),
            (ok_line("penalty", "").replace("09:30:00+08:00", "09:30:60+08:00").into_bytes(), Reason::BadTime),
            (ok_line("classification", r#","data":{"class":"E"}"#).into_bytes(), Reason::BadClass),
            (ok_line("classification", "").into_bytes(), Reason::BadClass),
            (ok_line("penalty", "").replace("\"e1\"", "\"\"").into_bytes(), Reason::BadEventId),
            (
                ok_line("penalty", "").replace("\"e1\"", &format!("\"{}\"", "é".repeat(257))).into_bytes(),
                Reason::BadEventId,
            ),
        ];
        for (input, want) in cases {
            assert_eq!(decode(&input), Err(want), "{}", String::from_utf8_lossy(&input));
        }
        let long_but_ok = ok_line("penalty", "").replace("\"e1\"", &format!("\"{}\"", "é".repeat(256)));
        assert!(decode(long_but_ok.as_bytes()).is_ok());
    }
}
