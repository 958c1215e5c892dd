//! `infra/envoy/envoy.yaml` loads the filter the way the filter expects: one VM id for the
//! HTTP filter and the bootstrap singleton, the root ids the glue tells its roles by, a
//! plugin configuration the filter accepts, every cluster it names present, SQS calls
//! signed by the cluster's upstream filter, and the filter ahead of the router.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tollgate_edge_filter::config::FilterConfig;

const WASM_FILTER: &str = "envoy.filters.http.wasm";
const JWT_AUTHN: &str = "envoy.filters.http.jwt_authn";
const ROUTER: &str = "envoy.filters.http.router";
const STRING_VALUE: &str = "type.googleapis.com/google.protobuf.StringValue";

fn envoy_yaml_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/envoy/envoy.yaml")
}

fn envoy_yaml_text() -> String {
    std::fs::read_to_string(envoy_yaml_path()).unwrap()
}

/// The bootstrap as JSON, YAML anchors and aliases resolved as Envoy resolves them.
fn bootstrap() -> Value {
    serde_norway::from_str(&envoy_yaml_text()).unwrap_or_else(|e| panic!("envoy.yaml: {e}"))
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer}"))
}

fn array_at<'a>(value: &'a Value, pointer: &str) -> &'a [Value] {
    value
        .pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("no array at {pointer}"))
}

/// The HTTP connection manager of the one listener.
fn http_connection_manager(bootstrap: &Value) -> &Value {
    let listeners = array_at(bootstrap, "/static_resources/listeners");
    assert_eq!(listeners.len(), 1);
    let filters = array_at(&listeners[0], "/filter_chains/0/filters");
    let hcm = filters
        .iter()
        .find(|f| f["name"] == "envoy.filters.network.http_connection_manager")
        .expect("an HTTP connection manager");
    &hcm["typed_config"]
}

fn http_filters(bootstrap: &Value) -> &[Value] {
    array_at(http_connection_manager(bootstrap), "/http_filters")
}

fn http_filter<'a>(bootstrap: &'a Value, name: &str) -> &'a Value {
    http_filters(bootstrap)
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no http filter {name}"))
}

/// The `PluginConfig` of the HTTP Wasm filter.
fn filter_plugin(bootstrap: &Value) -> &Value {
    let wasm = &http_filter(bootstrap, WASM_FILTER)["typed_config"];
    assert_eq!(
        wasm["@type"],
        "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
    );
    &wasm["config"]
}

/// The `WasmService` of the bootstrap extension.
fn singleton_service(bootstrap: &Value) -> &Value {
    let extensions = array_at(bootstrap, "/bootstrap_extensions");
    let wasm = extensions
        .iter()
        .find(|e| e["name"] == "envoy.bootstrap.wasm")
        .expect("an envoy.bootstrap.wasm extension");
    let service = &wasm["typed_config"];
    assert_eq!(
        service["@type"],
        "type.googleapis.com/envoy.extensions.wasm.v3.WasmService"
    );
    service
}

fn cluster<'a>(bootstrap: &'a Value, name: &str) -> &'a Value {
    array_at(bootstrap, "/static_resources/clusters")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no cluster {name}"))
}

/// The plugin configuration JSON carried in a `google.protobuf.StringValue` Any.
fn plugin_configuration(plugin: &Value) -> &str {
    assert_eq!(plugin["configuration"]["@type"], STRING_VALUE);
    str_at(plugin, "/configuration/value")
}

fn compiled_config(bootstrap: &Value) -> FilterConfig {
    FilterConfig::from_json(plugin_configuration(filter_plugin(bootstrap)))
        .unwrap_or_else(|e| panic!("the plugin configuration in envoy.yaml: {e}"))
}

/// Every string under a `cluster` key anywhere in the document: route targets, the
/// JWKS fetch, and any other reference Envoy resolves by cluster name.
fn referenced_clusters(value: &Value, found: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if key == "cluster"
                    && let Some(name) = child.as_str()
                {
                    found.insert(name.to_owned());
                }
                referenced_clusters(child, found);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| referenced_clusters(v, found)),
        _ => {}
    }
}

fn endpoint_host(cluster: &Value) -> &str {
    str_at(
        cluster,
        "/load_assignment/endpoints/0/lb_endpoints/0/endpoint/address/socket_address/address",
    )
}

fn endpoint_port(cluster: &Value) -> u64 {
    cluster
        .pointer(
            "/load_assignment/endpoints/0/lb_endpoints/0/endpoint/address/socket_address/port_value",
        )
        .and_then(Value::as_u64)
        .expect("a numeric port")
}

fn tls_sni(cluster: &Value) -> &str {
    assert_eq!(
        cluster["transport_socket"]["name"],
        "envoy.transport_sockets.tls"
    );
    str_at(cluster, "/transport_socket/typed_config/sni")
}

#[test]
fn the_http_filter_and_the_singleton_share_one_vm() {
    let bootstrap = bootstrap();
    let filter = filter_plugin(&bootstrap);
    let service = singleton_service(&bootstrap);
    assert_eq!(service["singleton"], true);
    let singleton = &service["config"];

    assert_eq!(filter["root_id"], "tollgate");
    assert_eq!(singleton["root_id"], "tollgate_flush");

    for plugin in [filter, singleton] {
        assert_eq!(str_at(plugin, "/vm_config/vm_id"), "tollgate");
        assert_eq!(
            str_at(plugin, "/vm_config/runtime"),
            "envoy.wasm.runtime.v8"
        );
        assert_eq!(
            str_at(plugin, "/vm_config/code/local/filename"),
            "/etc/envoy/tollgate_edge_filter.wasm"
        );
    }
    // Same id and same code is what makes Envoy treat them as one VM (shared data and
    // shared queues are keyed by it); the whole vm_config is one YAML anchor.
    assert_eq!(filter["vm_config"], singleton["vm_config"]);
    // A broken VM must not pass traffic unmetered.
    assert_eq!(filter["fail_open"], false);
}

#[test]
fn both_roles_get_one_plugin_configuration_that_compiles() {
    let bootstrap = bootstrap();
    let filter = plugin_configuration(filter_plugin(&bootstrap));
    let singleton = plugin_configuration(&singleton_service(&bootstrap)["config"]);
    assert_eq!(filter, singleton);
    // Written once, referenced twice.
    assert_eq!(envoy_yaml_text().matches("\"gatewayId\"").count(), 1);

    let config = compiled_config(&bootstrap);
    assert_eq!(config.snapshot.path, "/v1/edge/snapshot");
    // The usage API answers the snapshot only to an admin key.
    assert!(config.snapshot_api_key.is_some());
    // The 256 KiB default stays far below Envoy's default 1 MiB buffer limit, which the
    // signing filter's body buffering is subject to.
    assert!(config.max_body_bytes <= 256 * 1024);
}

#[test]
fn every_cluster_the_config_names_exists() {
    let bootstrap = bootstrap();
    let defined: BTreeSet<String> = array_at(&bootstrap, "/static_resources/clusters")
        .iter()
        .map(|c| c["name"].as_str().expect("cluster name").to_owned())
        .collect();

    let mut referenced = BTreeSet::new();
    referenced_clusters(&bootstrap["static_resources"], &mut referenced);
    let config = compiled_config(&bootstrap);
    referenced.insert(config.snapshot.cluster.clone());
    referenced.insert(config.sqs.cluster.clone());

    for name in ["api_backend", "usage_api", "sqs", "jwks"] {
        assert!(referenced.contains(name), "{name} is not referenced");
    }
    let missing: Vec<&String> = referenced.difference(&defined).collect();
    assert!(
        missing.is_empty(),
        "clusters named but not defined: {missing:?}"
    );
    assert_eq!(
        str_at(
            http_filter(&bootstrap, JWT_AUTHN),
            "/typed_config/providers/tenant_idp/remote_jwks/http_uri/cluster"
        ),
        "jwks"
    );
}

#[test]
fn the_filter_calls_reach_the_hosts_it_names() {
    let bootstrap = bootstrap();
    let config = compiled_config(&bootstrap);

    // SigV4 signs the host header, so the SQS authority from the queue URL must be the
    // host the sqs cluster connects to.
    let sqs = cluster(&bootstrap, &config.sqs.cluster);
    assert_eq!(endpoint_host(sqs), config.sqs.authority);
    assert_eq!(tls_sni(sqs), config.sqs.authority);
    assert_eq!(endpoint_port(sqs), 443);

    // A Function URL routes by host name: the snapshot's :authority is the URL's host.
    let usage_api = cluster(&bootstrap, &config.snapshot.cluster);
    assert!(
        config.snapshot.authority.ends_with(".on.aws"),
        "snapshot.authority must be the Function URL host, got {}",
        config.snapshot.authority
    );
    assert_eq!(endpoint_host(usage_api), config.snapshot.authority);
    assert_eq!(endpoint_port(usage_api), 443);
    assert_eq!(tls_sni(usage_api), config.snapshot.authority);
}

#[test]
fn the_sqs_cluster_signs_every_request_with_an_upstream_filter() {
    let bootstrap = bootstrap();
    let config = compiled_config(&bootstrap);
    let sqs = cluster(&bootstrap, &config.sqs.cluster);
    let options = &sqs["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
    assert_eq!(
        options["@type"],
        "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    );
    let filters = array_at(options, "/http_filters");
    let names: Vec<&str> = filters
        .iter()
        .map(|f| f["name"].as_str().expect("filter name"))
        .collect();
    assert_eq!(
        names,
        [
            "envoy.filters.http.aws_request_signing",
            "envoy.filters.http.upstream_codec"
        ]
    );

    let signing = &filters[0]["typed_config"];
    assert_eq!(
        signing["@type"],
        "type.googleapis.com/envoy.extensions.filters.http.aws_request_signing.v3.AwsRequestSigning"
    );
    assert_eq!(signing["service_name"], "sqs");
    // SQS does not accept UNSIGNED-PAYLOAD: the body hash must be signed.
    assert_eq!(signing["use_unsigned_payload"], false);
    let region = config
        .sqs
        .authority
        .strip_prefix("sqs.")
        .and_then(|rest| rest.strip_suffix(".amazonaws.com"))
        .expect("an sqs.<region>.amazonaws.com queue URL");
    assert_eq!(signing["region"], region);
    // No credentials in the configuration: Envoy's default credential chain supplies them.
    assert!(signing.get("credential_provider").is_none());
    assert_eq!(
        filters[1]["typed_config"]["@type"],
        "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"
    );
}

#[test]
fn the_filter_runs_after_jwt_authn_and_before_the_router() {
    let bootstrap = bootstrap();
    let names: Vec<&str> = http_filters(&bootstrap)
        .iter()
        .map(|f| f["name"].as_str().expect("filter name"))
        .collect();
    assert_eq!(names, [JWT_AUTHN, WASM_FILTER, ROUTER]);

    let jwt = &http_filter(&bootstrap, JWT_AUTHN)["typed_config"];
    assert_eq!(
        jwt["providers"]["tenant_idp"]["payload_in_metadata"],
        "jwt_payload"
    );
    assert_eq!(str_at(jwt, "/rules/0/requires/provider_name"), "tenant_idp");
    assert!(str_at(jwt, "/rules/0/match/prefix").starts_with('/'));
}

#[test]
fn listener_and_admin_addresses() {
    let bootstrap = bootstrap();
    assert_eq!(
        str_at(&bootstrap, "/admin/address/socket_address/address"),
        "127.0.0.1"
    );
    assert_eq!(
        bootstrap.pointer("/admin/address/socket_address/port_value"),
        Some(&Value::from(9901))
    );
    let listener = &array_at(&bootstrap, "/static_resources/listeners")[0];
    assert_eq!(
        str_at(listener, "/address/socket_address/address"),
        "0.0.0.0"
    );
    assert_eq!(
        listener.pointer("/address/socket_address/port_value"),
        Some(&Value::from(10000))
    );
    assert_eq!(
        str_at(
            http_connection_manager(&bootstrap),
            "/route_config/virtual_hosts/0/routes/0/route/cluster"
        ),
        "api_backend"
    );
}
