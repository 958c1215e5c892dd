//! A small check of replies against the OpenAPI document's response schemas: types,
//! required and unknown properties, items, enums, `const`, `oneOf` and `$ref` (local
//! only). Enough to catch a handler and the document drifting apart, without a
//! JSON-schema crate.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::Value;

/// The document, parsed.
pub fn document() -> Value {
    serde_json::from_str(tollgate_usage_api::openapi::DOCUMENT).expect("openapi.json is JSON")
}

/// Asserts that `body` conforms to the documented JSON response of `method pattern` with
/// `status`.
pub fn assert_documented(method: &str, pattern: &str, status: u16, body: &Value) {
    let doc = document();
    let mut response =
        &doc["paths"][pattern][method.to_lowercase()]["responses"][status.to_string()];
    if let Some(reference) = response.get("$ref").and_then(Value::as_str) {
        response = resolve(&doc, reference);
    }
    let schema = &response["content"]["application/json"]["schema"];
    assert!(
        !schema.is_null(),
        "no JSON schema documented for {method} {pattern} {status}"
    );
    let mut problems = Vec::new();
    check(&doc, schema, body, "$", &mut problems);
    assert!(
        problems.is_empty(),
        "{method} {pattern} {status} does not match the document:\n{}\n{body:#}",
        problems.join("\n")
    );
}

fn resolve<'d>(doc: &'d Value, reference: &str) -> &'d Value {
    let path = reference.strip_prefix("#/").expect("local reference");
    path.split('/').fold(doc, |node, part| &node[part])
}

fn type_matches(name: &str, value: &Value) -> bool {
    match name {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        other => panic!("unknown type {other}"),
    }
}

fn check(doc: &Value, schema: &Value, value: &Value, at: &str, problems: &mut Vec<String>) {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        return check(doc, resolve(doc, reference), value, at, problems);
    }
    if let Some(options) = schema.get("oneOf").and_then(Value::as_array) {
        let matching = options
            .iter()
            .filter(|option| {
                let mut inner = Vec::new();
                check(doc, option, value, at, &mut inner);
                inner.is_empty()
            })
            .count();
        if matching != 1 {
            problems.push(format!("{at}: matches {matching} of the oneOf options"));
        }
        return;
    }
    match schema.get("type") {
        Some(Value::String(name)) if !type_matches(name, value) => {
            return problems.push(format!("{at}: expected {name}, found {value}"));
        }
        Some(Value::Array(names))
            if !names
                .iter()
                .any(|n| type_matches(n.as_str().unwrap(), value)) =>
        {
            return problems.push(format!("{at}: expected one of {names:?}, found {value}"));
        }
        _ => {}
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        problems.push(format!("{at}: {value} is not one of {options:?}"));
    }
    if let Some(expected) = schema.get("const")
        && expected != value
    {
        problems.push(format!("{at}: expected {expected}, found {value}"));
    }
    if let (Some(items), Some(values)) = (schema.get("items"), value.as_array()) {
        for (i, item) in values.iter().enumerate() {
            check(doc, items, item, &format!("{at}[{i}]"), problems);
        }
    }
    let Some(object) = value.as_object() else {
        return;
    };
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for name in required.iter().filter_map(Value::as_str) {
            if !object.contains_key(name) {
                problems.push(format!("{at}: required property `{name}` is missing"));
            }
        }
    }
    let properties = schema.get("properties").and_then(Value::as_object);
    for (name, item) in object {
        let path = format!("{at}.{name}");
        match (
            properties.and_then(|p| p.get(name)),
            schema.get("additionalProperties"),
        ) {
            (Some(property), _) => check(doc, property, item, &path, problems),
            (None, Some(Value::Bool(false))) => {
                problems.push(format!("{path}: not in the document"));
            }
            (None, Some(extra @ Value::Object(_))) => check(doc, extra, item, &path, problems),
            (None, _) => {}
        }
    }
}
