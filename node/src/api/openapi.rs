//! The OpenAPI 3.1 description of the HTTP/JSON API, derived from the descriptor set of the
//! `.proto` files and [`ROUTES`], the same sources the routes and their canonical proto3 JSON
//! come from, so the document cannot drift from what the node serves. `sessiond openapi`
//! prints it; `docs/openapi.json` is that output (a test keeps the two equal).

use super::json::ROUTES;
use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorProto, FileDescriptorSet};
use serde_json::{json, Map, Value};

const PACKAGE: &str = "sessiond.v1";

/// The document, or why the descriptor set could not be read (a build defect).
pub fn document() -> anyhow::Result<Value> {
    let set = FileDescriptorSet::decode(sessiond_proto::FILE_DESCRIPTOR_SET)?;
    let files: Vec<&FileDescriptorProto> =
        set.file.iter().filter(|f| f.package() == PACKAGE).collect();
    let mut schemas = Map::new();
    let mut paths = Map::new();
    let (file, service) = files
        .iter()
        .find_map(|f| {
            f.service
                .iter()
                .position(|s| s.name() == "Sessions")
                .map(|i| (*f, i))
        })
        .ok_or_else(|| anyhow::anyhow!("no Sessions service in the descriptor set"))?;
    let sessions = &file.service[service];
    let mut wanted = vec!["ErrorDetail".to_string()];
    for (path, rpc) in ROUTES {
        let (index, method) = sessions
            .method
            .iter()
            .enumerate()
            .find(|(_, m)| m.name() == rpc)
            .ok_or_else(|| anyhow::anyhow!("route {path}: no method {rpc}"))?;
        let input = short(method.input_type());
        let output = short(method.output_type());
        wanted.push(input.to_string());
        wanted.push(output.to_string());
        let answer = if method.server_streaming() {
            json!({
                "description": format!(
                    "A stream of `{output}`, one JSON object per line; on failure a last line \
                     `{{\"error\": ErrorDetail}}`."
                ),
                "content": {"application/x-ndjson": {"schema": reference(output)}},
            })
        } else {
            json!({
                "description": format!("`{output}`."),
                "content": {"application/json": {"schema": reference(output)}},
            })
        };
        let mut operation = json!({
            "operationId": rpc,
            "requestBody": {
                "required": true,
                "content": {"application/json": {"schema": reference(input)}},
            },
            "responses": {
                "200": answer,
                "default": {
                    "description": "An error: its `ErrorDetail`, with the HTTP status of its \
                                    gRPC code (docs/http-api.md).",
                    "content": {"application/json": {"schema": reference("ErrorDetail")}},
                },
            },
        });
        if let Some(text) = comment(file, &[6, service as i32, 2, index as i32]) {
            operation["description"] = Value::String(text);
        }
        paths.insert(path.to_string(), json!({ "post": operation }));
    }
    // Every message the routes reach, following fields to the messages and enums they name.
    while let Some(name) = wanted.pop() {
        if schemas.contains_key(&name) {
            continue;
        }
        let Some((file, path, kind)) = find(&files, &name) else {
            anyhow::bail!("type {name} is not in the descriptor set");
        };
        let schema = match kind {
            Kind::Message(m) => message_schema(file, &path, m, &mut wanted),
            Kind::Enum(values) => json!({ "type": "string", "enum": values }),
        };
        schemas.insert(name, schema);
    }
    Ok(json!({
        "openapi": "3.1.0",
        "info": {
            "title": "sessiond HTTP/JSON API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The gRPC Sessions service over HTTP/1.1 or HTTP/2 on the client \
                            port: every call a POST of the request message as canonical \
                            proto3 JSON (64-bit integers as strings, bytes as base64). See \
                            docs/http-api.md.",
        },
        "servers": [{"url": "https://127.0.0.1:7001"}],
        "security": [{"clientCertificate": []}, {"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "clientCertificate": {
                    "type": "mutualTLS",
                    "description": "A client certificate issued by the cluster's CA.",
                },
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A credential of the node's credentials file.",
                },
            },
            "schemas": schemas,
        },
    }))
}

/// `.sessiond.v1.Session` → `Session`.
fn short(full: &str) -> &str {
    full.rsplit('.').next().unwrap_or(full)
}

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

enum Kind<'a> {
    Message(&'a DescriptorProto),
    Enum(Vec<String>),
}

/// A top-level message or enum of the package by short name, with its file and the source
/// location path of the message (for comments).
fn find<'a>(
    files: &[&'a FileDescriptorProto],
    name: &str,
) -> Option<(&'a FileDescriptorProto, Vec<i32>, Kind<'a>)> {
    for f in files {
        if let Some(i) = f.message_type.iter().position(|m| m.name() == name) {
            return Some((f, vec![4, i as i32], Kind::Message(&f.message_type[i])));
        }
        if let Some(e) = f.enum_type.iter().find(|e| e.name() == name) {
            let values = e.value.iter().map(|v| v.name().to_string()).collect();
            return Some((f, Vec::new(), Kind::Enum(values)));
        }
    }
    None
}

/// The leading comment of the element at source location `path`, trimmed.
fn comment(file: &FileDescriptorProto, path: &[i32]) -> Option<String> {
    let info = file.source_code_info.as_ref()?;
    let location = info.location.iter().find(|l| l.path == path)?;
    let text = location
        .leading_comments()
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ");
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

fn message_schema(
    file: &FileDescriptorProto,
    path: &[i32],
    m: &DescriptorProto,
    wanted: &mut Vec<String>,
) -> Value {
    let mut properties = Map::new();
    for (i, f) in m.field.iter().enumerate() {
        let mut schema = field_schema(m, f, wanted);
        let mut at = path.to_vec();
        at.extend([2, i as i32]);
        if let Some(text) = comment(file, &at) {
            schema["description"] = Value::String(text);
        }
        let name = if f.json_name().is_empty() {
            f.name()
        } else {
            f.json_name()
        };
        properties.insert(name.to_string(), schema);
    }
    let mut schema = json!({
        "type": "object",
        "properties": properties,
        "additionalProperties": false,
    });
    if let Some(text) = comment(file, path) {
        schema["description"] = Value::String(text);
    }
    for (i, oneof) in m.oneof_decl.iter().enumerate() {
        let members: Vec<Value> = m
            .field
            .iter()
            .filter(|f| f.oneof_index == Some(i as i32) && !f.proto3_optional())
            .map(|f| json!({ "required": [f.json_name()] }))
            .collect();
        if members.len() > 1 {
            // At most one member of a oneof is set.
            schema["not"] = json!({ "anyOf": pairs(&members) });
            schema["description"] = Value::String(format!(
                "{}At most one of the `{}` fields.",
                schema["description"]
                    .as_str()
                    .map(|d| format!("{d} "))
                    .unwrap_or_default(),
                oneof.name()
            ));
        }
    }
    schema
}

/// Every pair of oneof members, both present: the cases the schema excludes.
fn pairs(members: &[Value]) -> Vec<Value> {
    let mut out = Vec::new();
    for (i, a) in members.iter().enumerate() {
        for b in &members[i + 1..] {
            out.push(json!({ "allOf": [a, b] }));
        }
    }
    out
}

fn field_schema(
    m: &DescriptorProto,
    f: &prost_types::FieldDescriptorProto,
    wanted: &mut Vec<String>,
) -> Value {
    if f.r#type() == Type::Message {
        // A map field's type is a nested `...Entry` message of the field's message.
        let entry = m.nested_type.iter().find(|n| {
            n.options.as_ref().is_some_and(|o| o.map_entry())
                && f.type_name().ends_with(&format!(".{}", n.name()))
        });
        if let Some(entry) = entry {
            let value = entry.field.iter().find(|v| v.number() == 2);
            let values = value.map_or(json!({}), |v| scalar_or_ref(v, wanted));
            return json!({ "type": "object", "additionalProperties": values });
        }
    }
    let one = scalar_or_ref(f, wanted);
    if f.label() == Label::Repeated {
        json!({ "type": "array", "items": one })
    } else {
        one
    }
}

fn scalar_or_ref(f: &prost_types::FieldDescriptorProto, wanted: &mut Vec<String>) -> Value {
    match f.r#type() {
        Type::String => json!({ "type": "string" }),
        Type::Bool => json!({ "type": "boolean" }),
        Type::Bytes => json!({ "type": "string", "contentEncoding": "base64" }),
        Type::Double | Type::Float => json!({ "type": "number" }),
        Type::Int32 | Type::Sint32 | Type::Sfixed32 => {
            json!({ "type": "integer", "format": "int32" })
        }
        Type::Uint32 | Type::Fixed32 => {
            json!({ "type": "integer", "minimum": 0, "maximum": u32::MAX })
        }
        Type::Int64 | Type::Sint64 | Type::Sfixed64 => {
            json!({ "type": "string", "format": "int64", "pattern": "^-?[0-9]+$" })
        }
        Type::Uint64 | Type::Fixed64 => {
            json!({ "type": "string", "format": "uint64", "pattern": "^[0-9]+$" })
        }
        Type::Message | Type::Enum | Type::Group => {
            let name = short(f.type_name()).to_string();
            let r = reference(&name);
            wanted.push(name);
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        document().expect("the document")
    }

    #[test]
    fn every_route_is_described_with_its_messages() {
        let d = doc();
        for (path, rpc) in ROUTES {
            let op = &d["paths"][path]["post"];
            assert_eq!(op["operationId"], rpc, "{path}");
            let input = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                .as_str()
                .expect("a request schema");
            let name = input.rsplit('/').next().expect("a name");
            assert!(d["components"]["schemas"][name].is_object(), "{name}");
        }
        assert_eq!(d["paths"].as_object().map(|p| p.len()), Some(ROUTES.len()));
    }

    #[test]
    fn fields_are_in_canonical_proto3_json() {
        let d = doc();
        let s = &d["components"]["schemas"];
        let session = &s["Session"]["properties"];
        assert_eq!(session["userId"]["type"], "string");
        assert_eq!(session["version"]["format"], "uint64", "64-bit as strings");
        assert_eq!(session["data"]["contentEncoding"], "base64");
        assert_eq!(
            session["attributes"]["additionalProperties"]["type"], "string",
            "a map is an object"
        );
        assert_eq!(s["Consistency"]["enum"][1], "CONSISTENCY_STALE");
        let r = &s["SessionRef"];
        assert!(r["properties"]["token"].is_object() && r["not"].is_object());
        // Every reference resolves.
        let text = d.to_string();
        for piece in text.split("#/components/schemas/").skip(1) {
            let name: String = piece.chars().take_while(|c| c.is_alphanumeric()).collect();
            assert!(s[&name].is_object(), "dangling $ref {name}");
        }
    }

    #[test]
    fn the_checked_in_document_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        let generated = serde_json::to_string_pretty(&doc()).expect("json") + "\n";
        assert!(
            checked_in == generated,
            "docs/openapi.json is not what the node describes; regenerate it with \
             `cargo run --release -p sessiond -- openapi > docs/openapi.json`"
        );
    }
}
