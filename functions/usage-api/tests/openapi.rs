//! The OpenAPI document and the router's route table describe the same API.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;

use common::schema::document;
use serde_json::Value;
use tollgate_usage_api::router::{Access, ROUTES};

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

#[test]
fn the_document_and_the_route_table_list_the_same_routes_and_methods() {
    let doc = document();
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    let routed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_owned(), r.pattern.to_owned()))
        .collect();
    let only_documented: Vec<_> = documented.difference(&routed).collect();
    let only_routed: Vec<_> = routed.difference(&documented).collect();
    assert!(
        only_documented.is_empty() && only_routed.is_empty(),
        "documented but not routed: {only_documented:?}; routed but not documented: {only_routed:?}"
    );
}

#[test]
fn every_operation_documents_its_security_errors_and_path_parameters() {
    let doc = document();
    for route in ROUTES {
        let operation = &doc["paths"][route.pattern][route.method.to_lowercase()];
        let responses = operation["responses"].as_object().unwrap();
        let codes: BTreeSet<&str> = responses.keys().map(String::as_str).collect();
        let parameters: Vec<String> = operation["parameters"]
            .as_array()
            .map(|ps| ps.iter().map(|p| resolve_parameter(&doc, p)).collect())
            .unwrap_or_default();
        match route.access {
            Access::Public => {
                assert_eq!(operation["security"], Value::Array(vec![]), "{route:?}");
            }
            Access::Tenant | Access::Admin => {
                assert!(
                    operation.get("security").is_none(),
                    "{route:?} uses the global security"
                );
                for code in ["400", "401", "404", "500"] {
                    assert!(codes.contains(code), "{route:?} lacks {code}");
                }
                if route.access == Access::Admin {
                    assert!(codes.contains("403"), "{route:?} lacks 403");
                } else {
                    assert!(
                        parameters.contains(&"tenant".to_owned()),
                        "{route:?} lacks ?tenant"
                    );
                }
                if route.method != "GET" && route.method != "DELETE" {
                    assert!(codes.contains("413"), "{route:?} lacks 413");
                }
            }
        }
        for segment in route.pattern.split('/') {
            if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                assert!(
                    parameters.contains(&name.to_owned()),
                    "{route:?} lacks {name}"
                );
            }
        }
    }
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    assert_eq!(schemes["bearerAuth"]["scheme"], "bearer");
    assert_eq!(schemes["apiKeyHeader"]["name"], "x-api-key");
}

#[test]
fn every_reference_resolves() {
    let doc = document();
    let mut missing = Vec::new();
    collect_missing(&doc, &doc, &mut missing);
    assert!(missing.is_empty(), "unresolved: {missing:?}");
}

fn resolve_parameter(doc: &Value, parameter: &Value) -> String {
    let parameter = match parameter.get("$ref").and_then(Value::as_str) {
        Some(reference) => resolve(doc, reference),
        None => parameter,
    };
    parameter["name"].as_str().unwrap().to_owned()
}

fn resolve<'d>(doc: &'d Value, reference: &str) -> &'d Value {
    reference
        .strip_prefix("#/")
        .unwrap()
        .split('/')
        .fold(doc, |node, part| &node[part])
}

fn collect_missing(doc: &Value, node: &Value, missing: &mut Vec<String>) {
    match node {
        Value::Object(map) => {
            if let Some(reference) = map.get("$ref").and_then(Value::as_str)
                && resolve(doc, reference).is_null()
            {
                missing.push(reference.to_owned());
            }
            map.values().for_each(|v| collect_missing(doc, v, missing));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_missing(doc, v, missing)),
        _ => {}
    }
}
