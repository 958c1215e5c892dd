//! `infra/template.yaml` deploys what the code runs, as the code and the local stack run
//! it: every function binary built by cargo-lambda for arm64, every `TOLLGATE_*` variable
//! a function reads set, the meter catalog shipped and valid, the queue, DLQ and event
//! source mapping with the local stack's values, a schedule for every scheduled function
//! whose input the function accepts, the table exactly as the store creates it, IAM
//! statements with only the DynamoDB actions each function's code path needs, and alarms
//! on metrics the functions really emit.
//!
//! CloudFormation's short-form tags (`!Ref`, `!GetAtt`, `!Sub`, `!If`, …) are read as
//! the long form (`{"Ref": …}`, `{"Fn::GetAtt": […]}`) by [`long_form`], so the checks
//! below see one spelling.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Map, Value, json};
use tollgate_budget::BudgetRequest;
use tollgate_core::meter::MeterCatalog;
use tollgate_local::{FUNCTION_BINARIES, StackConfig, scheduled_payload};
use tollgate_store::table::{GSI1, GSI1_PK, GSI1_SK, PK, SK, TTL};

/// EventBridge Scheduler's context attribute for the scheduled time.
const SCHEDULED_TIME: &str = "<aws.scheduler.scheduled-time>";
/// The functions that run on a schedule, as the local stack runs them.
const SCHEDULED: [&str; 3] = ["rollup", "budget", "billing-sync"];
/// Variables a function reads that are for local runs only.
const LOCAL_ONLY: [&str; 1] = ["TOLLGATE_STRIPE_API_BASE"];
/// Every DynamoDB action IAM authorizes the SDK operations the store uses with
/// (`TransactWriteItems` is authorized per item as Put/Update/Delete/ConditionCheck).
const KNOWN_DYNAMODB_ACTIONS: [&str; 8] = [
    "dynamodb:BatchGetItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:ConditionCheckItem",
    "dynamodb:DeleteItem",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:Query",
    "dynamodb:UpdateItem",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn infra() -> PathBuf {
    workspace().join("infra")
}

/// The template as JSON, short-form tags turned into the long form.
fn template() -> Value {
    let text = std::fs::read_to_string(infra().join("template.yaml")).unwrap();
    let yaml: serde_norway::Value =
        serde_norway::from_str(&text).unwrap_or_else(|e| panic!("template.yaml: {e}"));
    long_form(yaml)
}

/// A YAML value as CloudFormation's JSON form: `!Ref x` → `{"Ref": x}`, `!GetAtt a.b` →
/// `{"Fn::GetAtt": [a, b]}`, `!Condition c` → `{"Condition": c}`, any other `!Name v` →
/// `{"Fn::Name": v}`.
fn long_form(yaml: serde_norway::Value) -> Value {
    use serde_norway::Value as Yaml;
    match yaml {
        Yaml::Null => Value::Null,
        Yaml::Bool(b) => Value::Bool(b),
        Yaml::Number(n) => {
            if let Some(i) = n.as_i64() {
                json!(i)
            } else if let Some(u) = n.as_u64() {
                json!(u)
            } else {
                json!(n.as_f64().unwrap())
            }
        }
        Yaml::String(s) => Value::String(s),
        Yaml::Sequence(items) => Value::Array(items.into_iter().map(long_form).collect()),
        Yaml::Mapping(mapping) => Value::Object(
            mapping
                .into_iter()
                .map(|(key, value)| {
                    let key = match key {
                        Yaml::String(s) => s,
                        other => panic!("a mapping key that is not a string: {other:?}"),
                    };
                    (key, long_form(value))
                })
                .collect(),
        ),
        Yaml::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let name = tag.trim_start_matches('!');
            let value = long_form(tagged.value);
            match name {
                "Ref" | "Condition" => json!({ name: value }),
                "GetAtt" => {
                    let value = match value {
                        Value::String(s) => {
                            let (resource, attribute) = s.split_once('.').unwrap();
                            json!([resource, attribute])
                        }
                        other => other,
                    };
                    json!({ "Fn::GetAtt": value })
                }
                _ => json!({ format!("Fn::{name}"): value }),
            }
        }
    }
}

fn resources(template: &Value) -> &Map<String, Value> {
    template["Resources"].as_object().unwrap()
}

fn resource<'a>(template: &'a Value, id: &str) -> &'a Value {
    resources(template)
        .get(id)
        .unwrap_or_else(|| panic!("no resource {id}"))
}

fn get_att(resource: &str, attribute: &str) -> Value {
    json!({ "Fn::GetAtt": [resource, attribute] })
}

fn reference(id: &str) -> Value {
    json!({ "Ref": id })
}

/// The logical id and resource of the function built from `binary`.
fn function<'a>(template: &'a Value, binary: &str) -> (&'a str, &'a Value) {
    let found: Vec<(&str, &Value)> = resources(template)
        .iter()
        .filter(|(_, r)| {
            r["Type"] == "AWS::Serverless::Function"
                && r["Metadata"]["BuildProperties"]["Binary"] == binary
        })
        .map(|(id, r)| (id.as_str(), r))
        .collect();
    assert_eq!(found.len(), 1, "one function builds the binary {binary}");
    found[0]
}

/// A function property, from the function or else from `Globals.Function`.
fn property<'a>(template: &'a Value, function: &'a Value, name: &str) -> &'a Value {
    match &function["Properties"][name] {
        Value::Null => &template["Globals"]["Function"][name],
        value => value,
    }
}

fn environment(function: &Value) -> &Map<String, Value> {
    function["Properties"]["Environment"]["Variables"]
        .as_object()
        .unwrap()
}

fn events<'a>(function: &'a Value, kind: &str) -> Vec<&'a Value> {
    function["Properties"]["Events"]
        .as_object()
        .map(|events| {
            events
                .values()
                .filter(|event| event["Type"] == kind)
                .map(|event| &event["Properties"])
                .collect()
        })
        .unwrap_or_default()
}

fn as_list(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        one => vec![one],
    }
}

/// The IAM statements of the role a function runs with.
fn role_statements<'a>(template: &'a Value, function: &Value) -> Vec<&'a Value> {
    let role = &function["Properties"]["Role"]["Fn::GetAtt"];
    assert_eq!(
        role[1], "Arn",
        "the function runs with a role of this template"
    );
    let role = resource(template, role[0].as_str().unwrap());
    assert_eq!(role["Type"], "AWS::IAM::Role");
    role["Properties"]["Policies"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|policy| as_list(&policy["PolicyDocument"]["Statement"]))
        .collect()
}

fn actions(statement: &Value) -> BTreeSet<String> {
    as_list(&statement["Action"])
        .into_iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

/// Every `"TOLLGATE_…"` string literal in the sources under `dir`.
fn tollgate_variables_in(dir: &Path, found: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            tollgate_variables_in(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            for (start, _) in text.match_indices("\"TOLLGATE_") {
                let name: String = text[start + 1..]
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                found.insert(name);
            }
        }
    }
}

fn scheduled_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 14, 5, 0).unwrap()
}

/// A schedule's `Input` as EventBridge Scheduler renders it at [`scheduled_at`].
fn rendered_input(schedule: &Value) -> Value {
    let input = schedule["Input"].as_str().expect("a JSON string Input");
    let time = scheduled_at().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    serde_json::from_str(&input.replace(SCHEDULED_TIME, &time))
        .unwrap_or_else(|e| panic!("the schedule input {input} is not JSON: {e}"))
}

#[test]
fn every_function_binary_is_a_sam_function_built_by_cargo_lambda_for_arm64() {
    let template = template();
    assert_eq!(template["Transform"], "AWS::Serverless-2016-10-31");
    for binary in FUNCTION_BINARIES {
        let (id, function) = function(&template, binary);
        assert_eq!(
            function["Metadata"]["BuildMethod"], "rust-cargolambda",
            "{id}"
        );
        assert_eq!(property(&template, function, "Runtime"), "provided.al2023");
        assert_eq!(
            property(&template, function, "Architectures"),
            &json!(["arm64"])
        );
        assert_eq!(property(&template, function, "Handler"), "bootstrap");
        assert!(property(&template, function, "Timeout").as_u64().unwrap() > 0);
        assert!(
            property(&template, function, "MemorySize")
                .as_u64()
                .unwrap()
                >= 128
        );
        // The builder copies <CodeUri>/target/lambda/<Binary>/bootstrap, and cargo writes
        // a workspace's artifacts to the workspace root's target/.
        let code_uri = property(&template, function, "CodeUri").as_str().unwrap();
        assert_eq!(
            infra().join(code_uri).canonicalize().unwrap(),
            workspace(),
            "{id}: CodeUri must be the workspace root"
        );
        let manifest = std::fs::read_to_string(
            workspace()
                .join("functions")
                .join(binary)
                .join("Cargo.toml"),
        )
        .unwrap();
        assert!(
            manifest.contains(&format!("[[bin]]\nname = \"{binary}\"")),
            "functions/{binary} defines the binary {binary}"
        );
    }
    let functions = resources(&template)
        .values()
        .filter(|r| r["Type"] == "AWS::Serverless::Function")
        .count();
    assert_eq!(
        functions,
        FUNCTION_BINARIES.len(),
        "no function without a binary"
    );
}

#[test]
fn every_tollgate_variable_a_function_reads_is_set_and_none_it_does_not() {
    let template = template();
    for binary in FUNCTION_BINARIES {
        let (id, function) = function(&template, binary);
        let mut read = BTreeSet::new();
        tollgate_variables_in(
            &workspace().join("functions").join(binary).join("src"),
            &mut read,
        );
        assert!(read.contains("TOLLGATE_TABLE"), "{binary} reads its table");
        let expected: BTreeSet<String> = read
            .into_iter()
            .filter(|name| !LOCAL_ONLY.contains(&name.as_str()))
            .collect();
        let set: BTreeSet<String> = environment(function).keys().cloned().collect();
        assert_eq!(set, expected, "{id}'s TOLLGATE_* variables");
        assert_eq!(
            environment(function)["TOLLGATE_TABLE"],
            reference("UsageTable")
        );
    }
    let (_, api) = function(&template, "usage-api");
    let (_, ingest) = function(&template, "ingest");
    assert_eq!(
        environment(api)["TOLLGATE_QUEUE_URL"],
        reference("UsageQueue")
    );
    assert_eq!(
        environment(api)["TOLLGATE_LATE_HORIZON_HOURS"],
        environment(ingest)["TOLLGATE_LATE_HORIZON_HOURS"],
        "the API and ingest judge event times alike"
    );
    assert_eq!(
        environment(api)["TOLLGATE_SNAPSHOT_MAX_AGE_SECONDS"],
        json!(
            tollgate_usage_api::snapshot_cache::RECOMMENDED_SNAPSHOT_MAX_AGE
                .as_secs()
                .to_string()
        ),
        "the edge snapshot max age the usage API's docs justify"
    );
    let (_, billing) = function(&template, "billing-sync");
    let secret = environment(billing)["TOLLGATE_STRIPE_SECRET_KEY"]["Fn::Sub"]
        .as_str()
        .unwrap();
    assert_eq!(secret, "{{resolve:secretsmanager:${StripeSecretId}}}");
}

#[test]
fn the_meter_catalog_ships_as_a_layer_and_is_a_valid_catalog() {
    let template = template();
    let layer = resource(&template, "MeterCatalogLayer");
    assert_eq!(layer["Type"], "AWS::Serverless::LayerVersion");
    assert_eq!(
        layer["Properties"]["CompatibleArchitectures"],
        json!(["arm64"])
    );
    let content = infra().join(layer["Properties"]["ContentUri"].as_str().unwrap());
    for binary in FUNCTION_BINARIES {
        let (id, function) = function(&template, binary);
        let Some(path) = environment(function).get("TOLLGATE_METERS_FILE") else {
            continue;
        };
        // Layers are extracted into /opt.
        let file = path.as_str().unwrap().strip_prefix("/opt/").unwrap();
        assert!(
            as_list(&function["Properties"]["Layers"]).contains(&&reference("MeterCatalogLayer")),
            "{id} has the catalog layer"
        );
        let text = std::fs::read_to_string(content.join(file)).unwrap();
        let catalog =
            MeterCatalog::from_json(&text).unwrap_or_else(|e| panic!("infra/config/{file}: {e}"));
        assert!(catalog.meters().count() > 0);
    }
}

#[test]
fn the_queue_dlq_and_mapping_use_the_local_stacks_values() {
    let template = template();
    let local = StackConfig::new("target/debug", "meters.json");
    let queue = &resource(&template, "UsageQueue")["Properties"];
    let dlq = resource(&template, "UsageDeadLetterQueue");
    assert_eq!(dlq["Type"], "AWS::SQS::Queue");
    assert_eq!(
        queue["RedrivePolicy"]["deadLetterTargetArn"],
        get_att("UsageDeadLetterQueue", "Arn")
    );
    assert_eq!(
        queue["RedrivePolicy"]["maxReceiveCount"],
        json!(local.max_receive_count)
    );
    let retention = queue["MessageRetentionPeriod"].as_u64().unwrap();
    assert!(
        dlq["Properties"]["MessageRetentionPeriod"]
            .as_u64()
            .unwrap()
            >= retention,
        "messages keep their enqueue time in the DLQ"
    );

    let (_, ingest) = function(&template, "ingest");
    let timeout = property(&template, ingest, "Timeout").as_u64().unwrap();
    assert_eq!(timeout, local.function_timeout.as_secs());
    let window = &template["Parameters"]["IngestBatchingWindowSeconds"];
    let longest_window = window["MaxValue"].as_u64().unwrap();
    assert!(
        queue["VisibilityTimeout"].as_u64().unwrap() >= 6 * timeout + longest_window,
        "AWS: a visibility timeout of at least 6x the function timeout plus the window"
    );
    let mappings = events(ingest, "SQS");
    assert_eq!(mappings.len(), 1);
    let mapping = mappings[0];
    assert_eq!(mapping["Queue"], get_att("UsageQueue", "Arn"));
    assert_eq!(mapping["BatchSize"], json!(local.batch_size));
    // One claim holds at most 100 markers: a larger batch would be split into claims
    // that each write the counters again.
    assert_eq!(
        local.batch_size,
        tollgate_store::apply::MAX_TRANSACTION_ITEMS
    );
    // The window is the deployment's cost knob; the local stack uses a short one, which
    // must be a value the parameter allows. Batches above 10 need a window of ≥ 1 s.
    assert_eq!(
        mapping["MaximumBatchingWindowInSeconds"],
        reference("IngestBatchingWindowSeconds")
    );
    assert_eq!(window["Default"], json!(90));
    let local_window = local.batching_window.as_secs();
    assert!(window["MinValue"].as_u64().unwrap() >= 1);
    assert!((window["MinValue"].as_u64().unwrap()..=longest_window).contains(&local_window));
    assert_eq!(
        mapping["ScalingConfig"]["MaximumConcurrency"],
        json!(local.max_concurrency)
    );
    assert_eq!(
        mapping["FunctionResponseTypes"],
        json!(["ReportBatchItemFailures"])
    );
}

#[test]
fn every_scheduled_function_has_a_schedule_whose_input_it_accepts() {
    let template = template();
    let at = scheduled_at();
    for binary in SCHEDULED {
        let (id, function) = function(&template, binary);
        let schedules = events(function, "ScheduleV2");
        assert!(!schedules.is_empty(), "{id} runs on a schedule");
        for schedule in schedules {
            assert_eq!(schedule["ScheduleExpressionTimezone"], "UTC");
            let payload = rendered_input(schedule);
            // What the local scheduler sends for the same template and time.
            let mut template_fields = payload.clone();
            template_fields
                .as_object_mut()
                .unwrap()
                .remove("scheduledTime");
            assert_eq!(payload, scheduled_payload(&template_fields, at).unwrap());
            let sample =
                workspace().join(format!("events/samples/triggers/{binary}-schedule.json"));
            let sample: Value =
                serde_json::from_str(&std::fs::read_to_string(sample).unwrap()).unwrap();
            let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
            assert_eq!(keys(&payload), keys(&sample), "{id}: the sample's shape");
            match binary {
                "rollup" => {
                    let request: tollgate_rollup::RollupRequest =
                        serde_json::from_value(payload).unwrap();
                    assert_eq!(request.scheduled_time, at);
                }
                "budget" => {
                    let request = BudgetRequest::from_trigger(payload).unwrap();
                    assert_eq!(request.scheduled_time, at);
                }
                "billing-sync" => {
                    let request: tollgate_billing_sync::SyncRequest =
                        serde_json::from_value(payload).unwrap();
                    assert_eq!(request.scheduled_time, at);
                }
                other => panic!("no request type known for {other}"),
            }
        }
    }
}

#[test]
fn the_cadences_are_the_documented_ones_and_billing_runs_one_at_a_time() {
    let template = template();
    let expression = |binary: &str| {
        let (_, function) = function(&template, binary);
        events(function, "ScheduleV2")[0]["ScheduleExpression"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    // docs/billing.md: budget every 5 minutes, billing-sync hourly; the rollup hourly,
    // at :05 like the sample triggers.
    assert_eq!(expression("budget"), "cron(0/5 * * * ? *)");
    assert_eq!(expression("billing-sync"), "cron(5 * * * ? *)");
    assert_eq!(expression("rollup"), "cron(5 * * * ? *)");
    let (_, billing) = function(&template, "billing-sync");
    assert_eq!(billing["Properties"]["ReservedConcurrentExecutions"], 1);
    let (_, budget) = function(&template, "budget");
    assert!(
        property(&template, budget, "Timeout").as_u64().unwrap() < 300,
        "a budget run ends before the next one starts"
    );
}

#[test]
fn a_finished_rollup_starts_a_budget_run_with_its_own_scheduled_time() {
    let template = template();
    let (_, rollup) = function(&template, "rollup");
    let (budget_id, _) = function(&template, "budget");
    let on_success = &rollup["Properties"]["EventInvokeConfig"]["DestinationConfig"]["OnSuccess"];
    assert_eq!(on_success["Type"], "Lambda");
    assert_eq!(on_success["Destination"], get_att(budget_id, "Arn"));
    let invokes_budget = role_statements(&template, rollup).into_iter().any(|s| {
        s["Effect"] == "Allow"
            && actions(s).contains("lambda:InvokeFunction")
            && s["Resource"] == get_att(budget_id, "Arn")
    });
    assert!(
        invokes_budget,
        "the rollup's role may invoke the budget function"
    );

    // The destination record Lambda sends: the rollup's request and its reply.
    let request = rendered_input(events(rollup, "ScheduleV2")[0]);
    let record = json!({
        "version": "1.0",
        "timestamp": "2026-11-23T14:05:09.000Z",
        "requestContext": {"condition": "Success", "approximateInvokeCount": 1},
        "requestPayload": request,
        "responseContext": {"statusCode": 200},
        "responsePayload": {"tenants": 3, "complete": true}
    });
    let budget = BudgetRequest::from_trigger(record).unwrap();
    assert_eq!(budget.scheduled_time, scheduled_at());
}

#[test]
fn the_usage_api_has_a_public_function_url_and_the_outputs_are_there() {
    let template = template();
    let (id, api) = function(&template, "usage-api");
    assert_eq!(api["Properties"]["FunctionUrlConfig"]["AuthType"], "NONE");
    let outputs = &template["Outputs"];
    assert_eq!(
        outputs["UsageApiUrl"]["Value"],
        get_att(&format!("{id}Url"), "FunctionUrl")
    );
    assert_eq!(outputs["UsageQueueUrl"]["Value"], reference("UsageQueue"));
    assert_eq!(
        outputs["UsageQueueArn"]["Value"],
        get_att("UsageQueue", "Arn")
    );
    assert_eq!(outputs["TableName"]["Value"], reference("UsageTable"));
    assert_eq!(
        outputs["GatewayPolicyArn"]["Value"],
        reference("GatewaySendPolicy")
    );
}

#[test]
fn the_table_is_defined_as_the_store_creates_it() {
    let template = template();
    let table = resource(&template, "UsageTable");
    assert_eq!(table["Type"], "AWS::DynamoDB::Table");
    let table = &table["Properties"];
    assert_eq!(table["BillingMode"], "PAY_PER_REQUEST");
    let attributes: BTreeSet<(String, String)> = table["AttributeDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["AttributeName"].as_str().unwrap().to_owned(),
                a["AttributeType"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let strings = |names: &[&str]| -> BTreeSet<(String, String)> {
        names
            .iter()
            .map(|n| ((*n).to_owned(), "S".to_owned()))
            .collect()
    };
    assert_eq!(attributes, strings(&[PK, SK, GSI1_PK, GSI1_SK]));
    let key_schema = |hash: &str, range: &str| {
        json!([
            {"AttributeName": hash, "KeyType": "HASH"},
            {"AttributeName": range, "KeyType": "RANGE"}
        ])
    };
    assert_eq!(table["KeySchema"], key_schema(PK, SK));
    assert_eq!(
        table["GlobalSecondaryIndexes"],
        json!([{
            "IndexName": GSI1,
            "KeySchema": key_schema(GSI1_PK, GSI1_SK),
            "Projection": {"ProjectionType": "ALL"}
        }])
    );
    assert!(table["LocalSecondaryIndexes"].is_null());
    assert_eq!(
        table["TimeToLiveSpecification"],
        json!({"AttributeName": TTL, "Enabled": true})
    );
    assert_eq!(
        table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"],
        true
    );
    assert_eq!(table["SSESpecification"]["SSEEnabled"], true);
}

#[test]
fn each_function_may_use_only_the_dynamodb_actions_its_code_path_needs() {
    let template = template();
    // The store methods each function calls, and the actions IAM authorizes them with
    // (TransactWriteItems is authorized per item as PutItem/UpdateItem/DeleteItem).
    let expected: BTreeMap<&str, (&[&str], bool)> = BTreeMap::from([
        // apply_batches (transactions of puts, updates and journal deletes, BatchGetItem
        // of versioned states), finish_journals, record_rejection, tenant.
        (
            "ingest",
            (
                &[
                    "BatchGetItem",
                    "DeleteItem",
                    "GetItem",
                    "PutItem",
                    "Query",
                    "UpdateItem",
                ][..],
                false,
            ),
        ),
        // cursor and watermarks, usage queries, put_rollups, finish_journals; tenants()
        // lists gsi1.
        (
            "rollup",
            (
                &[
                    "BatchGetItem",
                    "BatchWriteItem",
                    "DeleteItem",
                    "GetItem",
                    "PutItem",
                    "Query",
                    "UpdateItem",
                ][..],
                true,
            ),
        ),
        // budgets, plans, usage, alerts (create, deliveries), webhooks, block list.
        (
            "budget",
            (
                &["DeleteItem", "GetItem", "PutItem", "Query", "UpdateItem"][..],
                true,
            ),
        ),
        // ledger (transactions of puts), statements, plans, usage.
        ("billing-sync", (&["GetItem", "PutItem", "Query"][..], true)),
        // everything tenants and admins do, listings in gsi1.
        (
            "usage-api",
            (
                &["DeleteItem", "GetItem", "PutItem", "Query", "UpdateItem"][..],
                true,
            ),
        ),
    ]);
    let table = get_att("UsageTable", "Arn");
    let index = json!({ "Fn::Sub": format!("${{UsageTable.Arn}}/index/{GSI1}") });
    for binary in FUNCTION_BINARIES {
        let (id, function) = function(&template, binary);
        let (expected_actions, queries_index) = expected[binary];
        let mut on_table = BTreeSet::new();
        let mut on_index = BTreeSet::new();
        for statement in role_statements(&template, function) {
            assert_eq!(statement["Effect"], "Allow", "{id}: only Allow statements");
            assert!(statement["NotAction"].is_null() && statement["NotResource"].is_null());
            let resources = as_list(&statement["Resource"]);
            assert!(
                !resources
                    .iter()
                    .any(|r| r.as_str().is_some_and(|r| r.contains('*'))),
                "{id}: no wildcard resources: {statement}"
            );
            let dynamodb: BTreeSet<String> = actions(statement)
                .into_iter()
                .filter(|a| a.starts_with("dynamodb:"))
                .collect();
            if dynamodb.is_empty() {
                continue;
            }
            for action in &dynamodb {
                assert!(
                    KNOWN_DYNAMODB_ACTIONS.contains(&action.as_str()),
                    "{id}: unknown DynamoDB action {action}"
                );
            }
            for resource in resources {
                if *resource == table {
                    on_table.extend(dynamodb.iter().cloned());
                } else if *resource == index {
                    on_index.extend(dynamodb.iter().cloned());
                } else {
                    panic!("{id}: DynamoDB actions on something else than the table: {resource}");
                }
            }
        }
        let expected_actions: BTreeSet<String> = expected_actions
            .iter()
            .map(|a| format!("dynamodb:{a}"))
            .collect();
        assert_eq!(on_table, expected_actions, "{id}'s actions on the table");
        let expected_index: BTreeSet<String> = if queries_index {
            BTreeSet::from(["dynamodb:Query".to_owned()])
        } else {
            BTreeSet::new()
        };
        assert_eq!(on_index, expected_index, "{id}'s actions on {GSI1}");
    }
}

#[test]
fn only_the_usage_api_and_the_gateways_may_send_to_the_usage_queue() {
    let template = template();
    let queue = get_att("UsageQueue", "Arn");
    for binary in FUNCTION_BINARIES {
        let (id, function) = function(&template, binary);
        let sqs: BTreeSet<String> = role_statements(&template, function)
            .into_iter()
            .filter(|s| as_list(&s["Resource"]).contains(&&queue))
            .flat_map(actions)
            .collect();
        let expected: &[&str] = match binary {
            "usage-api" => &["sqs:SendMessage"],
            "ingest" => &[
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes",
                "sqs:ReceiveMessage",
            ],
            _ => &[],
        };
        let expected: BTreeSet<String> = expected.iter().map(|a| (*a).to_owned()).collect();
        assert_eq!(sqs, expected, "{id}'s actions on the usage queue");
    }
    let gateway = resource(&template, "GatewaySendPolicy");
    assert_eq!(gateway["Type"], "AWS::IAM::ManagedPolicy");
    let statements = as_list(&gateway["Properties"]["PolicyDocument"]["Statement"]);
    assert_eq!(statements.len(), 1);
    assert_eq!(
        actions(statements[0]),
        BTreeSet::from(["sqs:SendMessage".to_owned()])
    );
    assert_eq!(statements[0]["Resource"], queue);
}

#[test]
fn every_alarm_watches_a_metric_that_exists_and_notifies_the_optional_topic() {
    let template = template();
    let now = scheduled_at();
    // The metrics each function's embedded-metric line declares.
    let declared = |line: String| -> BTreeSet<String> {
        let doc: Value = serde_json::from_str(&line).unwrap();
        doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap().to_owned())
            .collect()
    };
    let emitted = BTreeMap::from([
        (
            "ingest",
            declared(tollgate_ingest::IngestStats::default().emf_line(now)),
        ),
        (
            tollgate_billing_sync::metrics::FUNCTION,
            declared(tollgate_billing_sync::SyncReport::default().emf_line(now)),
        ),
    ]);
    let topic = json!({"Fn::If": ["HasAlarmTopic", [reference("AlarmTopicArn")], reference("AWS::NoValue")]});
    let mut watched = BTreeSet::new();
    for (id, alarm) in resources(&template)
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::CloudWatch::Alarm")
    {
        let alarm = &alarm["Properties"];
        assert_eq!(alarm["AlarmActions"], topic, "{id}");
        let mut metrics: Vec<&Value> = vec![alarm];
        if let Some(queries) = alarm["Metrics"].as_array() {
            metrics.extend(
                queries
                    .iter()
                    .map(|q| &q["MetricStat"]["Metric"])
                    .filter(|m| !m.is_null()),
            );
        }
        for metric in metrics.into_iter().filter(|m| m["Namespace"] == "tollgate") {
            let name = metric["MetricName"].as_str().unwrap();
            let dimensions = metric["Dimensions"].as_array().unwrap();
            assert_eq!(dimensions.len(), 1);
            assert_eq!(dimensions[0]["Name"], "Function");
            let function = dimensions[0]["Value"].as_str().unwrap();
            assert!(
                emitted[function].contains(name),
                "{id}: {function} emits no metric {name}"
            );
            watched.insert(name.to_owned());
        }
        if alarm["Namespace"] == "AWS/Lambda" {
            let function = &alarm["Dimensions"][0]["Value"]["Ref"];
            assert!(
                resource(&template, function.as_str().unwrap())["Type"]
                    == "AWS::Serverless::Function"
            );
        }
    }
    for name in [
        "MessagesRejected",
        "EventsRejected",
        "EventsExpired",
        "MetersStopped",
    ] {
        assert!(watched.contains(name), "an alarm watches {name}");
    }
    let dlq_alarm = &resource(&template, "DeadLetterQueueAlarm")["Properties"];
    assert_eq!(
        dlq_alarm["Dimensions"][0]["Value"],
        get_att("UsageDeadLetterQueue", "QueueName")
    );
}

/// Every name a `Ref`, `Fn::GetAtt` or `${…}` in `Fn::Sub` points at, collected in `out`.
fn referenced_names(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(fields) => {
            for (key, inner) in fields {
                match (key.as_str(), inner) {
                    ("Ref", Value::String(name)) => {
                        out.insert(name.clone());
                    }
                    ("Fn::GetAtt", Value::Array(parts)) => {
                        out.insert(parts[0].as_str().unwrap().to_owned());
                    }
                    ("Fn::Sub", Value::String(text)) => {
                        for piece in text.split("${").skip(1) {
                            let name = piece.split('}').next().unwrap();
                            out.insert(name.split('.').next().unwrap().to_owned());
                        }
                    }
                    _ => referenced_names(inner, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| referenced_names(item, out)),
        _ => {}
    }
}

#[test]
fn every_reference_names_a_resource_parameter_or_pseudo_parameter_of_the_stack() {
    let template = template();
    let mut names = BTreeSet::new();
    referenced_names(&template["Resources"], &mut names);
    referenced_names(&template["Outputs"], &mut names);
    referenced_names(&template["Conditions"], &mut names);
    let parameters = template["Parameters"].as_object().unwrap();
    // SAM's generated resources that the template may name: a function's Function URL.
    let generated: BTreeSet<String> = resources(&template)
        .iter()
        .filter(|(_, r)| !r["Properties"]["FunctionUrlConfig"].is_null())
        .map(|(id, _)| format!("{id}Url"))
        .collect();
    for name in names {
        assert!(
            resources(&template).contains_key(&name)
                || parameters.contains_key(&name)
                || name.starts_with("AWS::")
                || generated.contains(&name),
            "{name} is referenced but the stack has no such resource or parameter"
        );
    }
    let mut used = BTreeSet::new();
    referenced_names(&template, &mut used);
    for name in parameters.keys() {
        assert!(used.contains(name), "parameter {name} is never used");
    }
}
