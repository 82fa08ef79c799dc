//! Request and response bodies in the canonical proto3 JSON mapping (lowerCamelCase
//! names, 64-bit integers as strings, enums by name, `bytes` base64, `Timestamp` RFC 3339),
//! done from the compiled descriptors by prost-reflect: never hand-written serde. A request
//! message is assembled from the JSON body, the path's variables and the query string,
//! and every error names the field it is about.

use prost::Message;
use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, SerializeOptions,
};
use serde_json::{Map, Value as Json};

use crate::error::ApiError;

/// Responses carry every field, defaults included (`"hasMore": false`), so clients need no
/// knowledge of proto3 defaults; names stay lowerCamelCase and 64-bit integers strings.
const OUT: SerializeOptions = SerializeOptions::new().skip_default_fields(false);

/// Unknown fields are refused (400 naming them).
const IN: DeserializeOptions = DeserializeOptions::new().deny_unknown_fields(true);

/// Assembles the request message of `desc` from its parts and encodes it.
///
/// - `body`: the JSON body (`body: "*"` routes) or `None`;
/// - `path`: field path (proto names) and value of each path variable;
/// - `query`: query parameters; a name is a field path below `query_root` (`start` for
///   Follow, whose parameters name the Start's fields), in lowerCamelCase or proto form,
///   dotted for nested fields; a repeated field takes the parameter several times.
pub fn request(
    desc: &MessageDescriptor,
    body: Option<&[u8]>,
    path: &[(&[String], String)],
    query: &[(String, String)],
    query_root: &[&str],
) -> Result<Vec<u8>, ApiError> {
    let mut object = match body {
        Some(b) if !b.iter().all(u8::is_ascii_whitespace) => match serde_json::from_slice::<Json>(b) {
            Ok(Json::Object(o)) => o,
            Ok(_) => return Err(ApiError::invalid("body", "must be a JSON object")),
            Err(e) => return Err(ApiError::invalid("body", format!("malformed JSON: {e}"))),
        },
        _ => Map::new(),
    };
    for (name, value) in query {
        let mut field_path: Vec<String> = query_root.iter().map(|s| s.to_string()).collect();
        field_path.extend(name.split('.').map(str::to_string));
        let (fields, field) =
            resolve(desc, &field_path).map_err(|reason| ApiError::invalid(name.clone(), reason))?;
        let v = scalar(&field, value).map_err(|reason| ApiError::invalid(name.clone(), reason))?;
        insert(&mut object, &fields, v, field.is_list())
            .map_err(|reason| ApiError::invalid(name.clone(), reason))?;
    }
    for (field_path, value) in path {
        let (fields, field) =
            resolve(desc, field_path).map_err(|reason| ApiError::invalid(json_path(field_path), reason))?;
        let v = scalar(&field, value).map_err(|reason| ApiError::invalid(json_path(field_path), reason))?;
        set_from_path(&mut object, &fields, v)
            .map_err(|reason| ApiError::invalid(json_path(field_path), reason))?;
    }
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(Json::Object(object), &mut track);
    match DynamicMessage::deserialize_with_options(desc.clone(), de, &IN) {
        Ok(m) => Ok(m.encode_to_vec()),
        Err(e) => {
            let at = track.path().to_string();
            let field = if at.is_empty() || at == "." {
                "body".to_string()
            } else {
                at
            };
            Err(ApiError::invalid(field, e.to_string()))
        }
    }
}

/// The JSON of an encoded message of `desc`.
pub fn response(desc: &MessageDescriptor, bytes: &[u8]) -> Result<Json, ApiError> {
    let message = DynamicMessage::decode(desc.clone(), bytes)
        .map_err(|e| ApiError::Internal(format!("undecodable response: {e}").into()))?;
    to_json(&message)
}

/// The JSON of a typed message, by way of its descriptor.
pub fn of<M: Message>(desc: &MessageDescriptor, message: &M) -> Result<Json, ApiError> {
    response(desc, &message.encode_to_vec())
}

/// The JSON of a decoded message.
pub fn dynamic(message: &DynamicMessage) -> Result<Json, ApiError> {
    to_json(message)
}

fn to_json(message: &DynamicMessage) -> Result<Json, ApiError> {
    message
        .serialize_with_options(serde_json::value::Serializer, &OUT)
        .map_err(|e| ApiError::Internal(format!("unencodable response: {e}").into()))
}

fn json_path(path: &[String]) -> String {
    path.iter().map(|p| lower_camel(p)).collect::<Vec<_>>().join(".")
}

/// `user_id` -> `userId`, as protoc derives JSON names.
pub fn lower_camel(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The fields along `path` (each by proto or JSON name) and the last one, which must be a
/// scalar, an enum or a repeated one of those.
fn resolve(
    desc: &MessageDescriptor,
    path: &[String],
) -> Result<(Vec<FieldDescriptor>, FieldDescriptor), String> {
    let mut message = desc.clone();
    let mut fields = Vec::with_capacity(path.len());
    for (i, name) in path.iter().enumerate() {
        let field = message
            .get_field_by_name(name)
            .or_else(|| message.get_field_by_json_name(name))
            .ok_or_else(|| format!("unknown parameter (no such field in {})", message.name()))?;
        let last = i + 1 == path.len();
        match field.kind() {
            Kind::Message(m) if !last && !field.is_list() && !field.is_map() => message = m,
            Kind::Message(m) if last => {
                return Err(format!(
                    "is a {} message: set its fields as {}.<field>",
                    m.name(),
                    lower_camel(field.name())
                ))
            }
            _ if !last => return Err(format!("{} is not a message field", field.name())),
            _ => {}
        }
        fields.push(field);
    }
    let last = fields.last().cloned().ok_or("empty parameter name")?;
    if last.is_map() {
        return Err("a map field cannot be set from the URL".into());
    }
    Ok((fields, last))
}

/// A URL value as the JSON the mapping expects for `field`: booleans as JSON booleans,
/// everything else as a string (the mapping accepts numbers and enum names as strings).
fn scalar(field: &FieldDescriptor, value: &str) -> Result<Json, String> {
    match field.kind() {
        Kind::Bool => match value {
            "true" | "1" => Ok(Json::Bool(true)),
            "false" | "0" => Ok(Json::Bool(false)),
            _ => Err(format!("{value:?} is not a boolean (true or false)")),
        },
        Kind::Enum(_) => Ok(match value.parse::<i64>() {
            Ok(n) => Json::from(n),
            Err(_) => Json::String(value.to_string()),
        }),
        _ => Ok(Json::String(value.to_string())),
    }
}

/// Sets (or, for a repeated field, appends) the value at `fields` in `object`, by JSON name.
fn insert(
    object: &mut Map<String, Json>,
    fields: &[FieldDescriptor],
    v: Json,
    list: bool,
) -> Result<(), String> {
    let (last, parents) = fields.split_last().expect("resolved paths are not empty");
    let at = parent(object, parents)?;
    let key = existing_key(at, last);
    if list {
        match at.entry(key).or_insert_with(|| Json::Array(Vec::new())) {
            Json::Array(a) => a.push(v),
            _ => return Err("is given twice".into()),
        }
    } else if at.insert(key, v).is_some() {
        return Err("is given twice".into());
    }
    Ok(())
}

/// A path variable: set, or checked against the body's value of the same field.
fn set_from_path(object: &mut Map<String, Json>, fields: &[FieldDescriptor], v: Json) -> Result<(), String> {
    let (last, parents) = fields.split_last().expect("resolved paths are not empty");
    let at = parent(object, parents)?;
    let key = existing_key(at, last);
    match at.get(&key) {
        Some(given) if !same_scalar(given, &v) => Err(format!(
            "the body says {given} but the path says {v}; leave it out of the body"
        )),
        _ => {
            at.insert(key, v);
            Ok(())
        }
    }
}

fn same_scalar(a: &Json, b: &Json) -> bool {
    let text = |j: &Json| match j {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    };
    text(a) == text(b)
}

/// The object that holds the last field of a path: `parents` walked down from `object`,
/// made where missing.
fn parent<'o>(
    object: &'o mut Map<String, Json>,
    parents: &[FieldDescriptor],
) -> Result<&'o mut Map<String, Json>, String> {
    let mut at = object;
    for f in parents {
        let key = existing_key(at, f);
        at = match at.entry(key).or_insert_with(|| Json::Object(Map::new())) {
            Json::Object(o) => o,
            _ => return Err(format!("{} must be an object", f.json_name())),
        };
    }
    Ok(at)
}

/// The key `f` already has in `object` (proto or JSON name), else its JSON name.
fn existing_key(object: &Map<String, Json>, f: &FieldDescriptor) -> String {
    if object.contains_key(f.name()) {
        f.name().to_string()
    } else {
        f.json_name().to_string()
    }
}

#[cfg(test)]
mod tests {
    use prost_reflect::DescriptorPool;

    use super::*;
    use crate::proto::activity::v1 as pb;

    fn desc(name: &str) -> MessageDescriptor {
        DescriptorPool::decode(crate::proto::FILE_DESCRIPTOR_SET)
            .unwrap()
            .get_message_by_name(name)
            .unwrap()
    }

    fn field_of(e: ApiError) -> String {
        match e {
            ApiError::InvalidArgument { field, .. } => field.to_string(),
            other => panic!("not INVALID_ARGUMENT: {other:?}"),
        }
    }

    #[test]
    fn query_path_and_body_make_one_message() {
        let d = desc("activity.v1.FollowRequest");
        let user = ["start".to_string(), "user_id".to_string()];
        let bytes = request(
            &d,
            None,
            &[(&user, "42".into())],
            &[
                ("consumerId".into(), "phone".into()),
                ("types".into(), "a".into()),
                ("types".into(), "b".into()),
                ("startFrom".into(), "START_FROM_SEQ".into()),
                ("after_seq".into(), "18446744073709551615".into()),
                ("window".into(), "7".into()),
            ],
            &["start"],
        )
        .unwrap();
        let start = pb::FollowRequest::decode(bytes.as_slice())
            .unwrap()
            .start
            .unwrap();
        assert_eq!(start.user_id, 42);
        assert_eq!(start.consumer_id, "phone");
        assert_eq!(start.types, ["a", "b"]);
        assert_eq!(start.start_from, pb::StartFrom::Seq as i32);
        assert_eq!(start.after_seq, u64::MAX);
        assert_eq!(start.window, 7);
    }

    #[test]
    fn errors_name_the_field() {
        let d = desc("activity.v1.AckRequest");
        let user = ["user_id".to_string()];
        let e = request(&d, Some(br#"{"seq": "x"}"#), &[(&user, "1".into())], &[], &[]).unwrap_err();
        assert_eq!(field_of(e), "seq");
        let e = request(&d, Some(br#"{"seq": "1", "nope": 1}"#), &[], &[], &[]).unwrap_err();
        assert!(format!("{e}").contains("nope"), "{e}");
        let e = request(&d, Some(br#"{"seq": "#), &[], &[], &[]).unwrap_err();
        assert_eq!(field_of(e), "body");
        let e = request(&d, None, &[], &[("bogus".into(), "1".into())], &[]).unwrap_err();
        assert_eq!(field_of(e), "bogus");
        let e = request(&d, Some(br#"{"userId": "2"}"#), &[(&user, "1".into())], &[], &[]).unwrap_err();
        assert_eq!(field_of(e), "userId");
    }

    #[test]
    fn responses_use_the_canonical_mapping_with_defaults() {
        let d = desc("activity.v1.Cursor");
        let json = of(
            &d,
            &pb::Cursor {
                user_id: 7,
                consumer_id: "c".into(),
                acked_seq: 0,
                head_seq: 3,
            },
        )
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"userId": "7", "consumerId": "c", "ackedSeq": "0", "headSeq": "3"})
        );
    }
}
