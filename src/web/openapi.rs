//! The OpenAPI 3 document of every REST route, generated at start-up from the same
//! `google.api.http` rules and message descriptors that route and map the calls, so it
//! cannot drift from what the server does. Served at `/v1/openapi.json`.

use std::collections::BTreeMap;

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{json, Map, Value as Json};

use super::{
    json::lower_camel,
    routes::{Route, Routes, Segment},
};

/// The document.
pub fn document(routes: &Routes) -> Json {
    let mut schemas = BTreeMap::new();
    let mut paths: BTreeMap<String, Map<String, Json>> = BTreeMap::new();
    for r in routes.all() {
        let path = openapi_path(r);
        let op = operation(r, &mut schemas);
        paths
            .entry(path)
            .or_default()
            .insert(r.method.as_str().to_ascii_lowercase(), op);
    }
    schemas.insert(
        "google.rpc.Status".into(),
        json!({
            "type": "object",
            "description": "An error: the gRPC status code number, its message (naming the bad field for INVALID_ARGUMENT) and details.",
            "required": ["code", "message", "details"],
            "properties": {
                "code": {"type": "integer", "format": "int32"},
                "message": {"type": "string"},
                "details": {"type": "array", "items": {"type": "object"}}
            }
        }),
    );
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "activity-hub",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "REST/JSON surface of activity-hub, generated from the protos' google.api.http rules. Bodies are the canonical proto3 JSON mapping of the gRPC messages (lowerCamelCase names, 64-bit integers as strings, enums by name, bytes base64, Timestamp RFC 3339)."
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "accessToken": {"type": "apiKey", "in": "query", "name": "accessToken",
                    "description": "The access token as a parameter, for EventSource (Server-Sent Events routes only)."}
            }
        },
        "security": [{"bearer": []}]
    })
}

/// `/v1/users/{start.user_id}/events/stream` -> `/v1/users/{userId}/events/stream`.
fn openapi_path(r: &Route) -> String {
    let mut out = String::new();
    for seg in &r.segments {
        out.push('/');
        match seg {
            Segment::Literal(l) => out.push_str(l),
            Segment::Field(f) => {
                out.push('{');
                out.push_str(&param_name(f));
                out.push('}');
            }
        }
    }
    out
}

fn param_name(field_path: &[String]) -> String {
    lower_camel(field_path.last().map(String::as_str).unwrap_or(""))
}

fn operation(r: &Route, schemas: &mut BTreeMap<String, Json>) -> Json {
    let input = r.rpc.input();
    let mut params = Vec::new();
    let mut bound = Vec::new();
    for seg in &r.segments {
        if let Segment::Field(f) = seg {
            let field = super::routes::field_at(&input, f).expect("validated when routes were read");
            params.push(json!({
                "name": param_name(f),
                "in": "path",
                "required": true,
                "description": format!("Sets `{}` of the request.", f.iter().map(|p| lower_camel(p)).collect::<Vec<_>>().join(".")),
                "schema": field_schema(&field, schemas),
            }));
            bound.push(f.clone());
        }
    }
    let stream = r.is_stream();
    if !r.body {
        // Query parameters: the scalar fields not in the path (Follow: those of its Start).
        let (root, prefix) = if stream {
            match input.get_field_by_name("start").map(|f| f.kind()) {
                Some(Kind::Message(m)) => (m, vec!["start".to_string()]),
                _ => (input.clone(), Vec::new()),
            }
        } else {
            (input.clone(), Vec::new())
        };
        query_params(&root, &prefix, "", &bound, schemas, &mut params);
    }
    if stream {
        params.push(json!({"name": "lastEventId", "in": "query", "required": false,
            "description": "Resume strictly after this seq (as the Last-Event-ID header does).",
            "schema": {"type": "string", "format": "uint64"}}));
        params.push(json!({"name": "Last-Event-ID", "in": "header", "required": false,
            "description": "Sent by a reconnecting EventSource: resume strictly after this seq.",
            "schema": {"type": "string"}}));
    }
    let service = r.rpc.parent_service().full_name();
    let mut op = Map::new();
    op.insert(
        "operationId".into(),
        json!(format!("{}_{}", r.rpc.parent_service().name(), r.rpc.name())),
    );
    op.insert("tags".into(), json!([service]));
    op.insert(
        "summary".into(),
        json!(format!(
            "{}/{}{}",
            service,
            r.rpc.name(),
            if stream { ", as Server-Sent Events" } else { "" }
        )),
    );
    if !params.is_empty() {
        op.insert("parameters".into(), Json::Array(params));
    }
    if r.body {
        op.insert(
            "requestBody".into(),
            json!({"required": true, "content": {"application/json": {"schema": message_ref(&input, schemas)}}}),
        );
    }
    let ok = if stream {
        json!({"description": "text/event-stream: `event: subscribed` (data: Subscribed), then one message per Event (id: seq, data: Event), heartbeats as comments, and `event: error` (data: google.rpc.Status) if the stream ends with one.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}}})
    } else {
        json!({"description": "OK", "content": {"application/json": {"schema": message_ref(&r.rpc.output(), schemas)}}})
    };
    let error = json!({"description": "The call's gRPC status as JSON; the HTTP status follows its code (400 INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE; 401; 403; 404; 409 ALREADY_EXISTS, ABORTED; 429 with Retry-After; 499; 503; 504; else 500).",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/google.rpc.Status"}}}});
    op.insert("responses".into(), json!({"200": ok, "default": error}));
    if matches!(r.rpc.name(), "Login" | "Refresh") {
        op.insert("security".into(), json!([]));
    } else if stream {
        op.insert("security".into(), json!([{"bearer": []}, {"accessToken": []}]));
    }
    Json::Object(op)
}

fn query_params(
    message: &MessageDescriptor,
    prefix: &[String],
    dotted: &str,
    bound: &[Vec<String>],
    schemas: &mut BTreeMap<String, Json>,
    out: &mut Vec<Json>,
) {
    for field in message.fields() {
        let mut path = prefix.to_vec();
        path.push(field.name().to_string());
        if bound.contains(&path) || field.is_map() {
            continue;
        }
        let name = format!("{dotted}{}", field.json_name());
        match field.kind() {
            Kind::Message(m) if !field.is_list() && !is_well_known(&m) => {
                query_params(&m, &path, &format!("{name}."), bound, schemas, out)
            }
            Kind::Message(_) if field.is_list() => {}
            _ => out.push(json!({
                "name": name,
                "in": "query",
                "required": false,
                "explode": true,
                "schema": field_schema(&field, schemas),
            })),
        }
    }
}

fn is_well_known(m: &MessageDescriptor) -> bool {
    m.full_name().starts_with("google.protobuf.")
}

fn message_ref(m: &MessageDescriptor, schemas: &mut BTreeMap<String, Json>) -> Json {
    if let Some(s) = well_known(m) {
        return s;
    }
    let name = m.full_name().to_string();
    if !schemas.contains_key(&name) {
        // Placeholder first: recursive messages terminate.
        schemas.insert(name.clone(), Json::Null);
        let mut props = Map::new();
        for f in m.fields() {
            props.insert(f.json_name().to_string(), field_schema(&f, schemas));
        }
        schemas.insert(name.clone(), json!({"type": "object", "properties": props}));
    }
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn well_known(m: &MessageDescriptor) -> Option<Json> {
    match m.full_name() {
        "google.protobuf.Timestamp" => Some(json!({"type": "string", "format": "date-time"})),
        "google.protobuf.Empty" => Some(json!({"type": "object"})),
        _ => None,
    }
}

fn field_schema(f: &FieldDescriptor, schemas: &mut BTreeMap<String, Json>) -> Json {
    if f.is_map() {
        if let Kind::Message(entry) = f.kind() {
            let value = entry.map_entry_value_field();
            return json!({"type": "object", "additionalProperties": field_schema(&value, schemas)});
        }
    }
    let one = match f.kind() {
        Kind::Message(m) => message_ref(&m, schemas),
        Kind::Enum(e) => {
            json!({"type": "string", "enum": e.values().map(|v| v.name().to_string()).collect::<Vec<_>>()})
        }
        Kind::Bool => json!({"type": "boolean"}),
        Kind::String => json!({"type": "string"}),
        Kind::Bytes => json!({"type": "string", "format": "byte"}),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => json!({"type": "integer", "format": "int32"}),
        Kind::Uint32 | Kind::Fixed32 => json!({"type": "integer", "format": "int64", "minimum": 0}),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => json!({"type": "string", "format": "int64"}),
        Kind::Uint64 | Kind::Fixed64 => json!({"type": "string", "format": "uint64"}),
        Kind::Float => json!({"type": "number", "format": "float"}),
        Kind::Double => json!({"type": "number", "format": "double"}),
    };
    if f.is_list() {
        json!({"type": "array", "items": one})
    } else {
        one
    }
}

#[cfg(test)]
mod tests {
    use prost_reflect::DescriptorPool;

    use super::*;

    #[test]
    fn every_route_is_documented_and_every_reference_resolves() {
        let pool = DescriptorPool::decode(crate::proto::FILE_DESCRIPTOR_SET).unwrap();
        let routes = Routes::from_pool(&pool).unwrap();
        let doc = document(&routes);
        for r in routes.all() {
            let op = &doc["paths"][openapi_path(r)][r.method.as_str().to_ascii_lowercase()];
            assert!(op.is_object(), "{} {} undocumented", r.method, r.template);
        }
        assert!(
            doc["paths"]["/v1/users/{userId}/events/stream"]["get"]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "consumerId")
        );
        let text = doc.to_string();
        for piece in text.split("\"#/components/schemas/").skip(1) {
            let name = &piece[..piece.find('"').unwrap()];
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "dangling $ref {name}"
            );
        }
    }
}
