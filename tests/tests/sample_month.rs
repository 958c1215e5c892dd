//! The demo's sample month, end to end: sample files → core validation and aggregation →
//! exactly-once apply into DynamoDB Local → stored usage → invoice previews. The expected
//! amounts are computed by hand from the sample's generator (`events/samples/`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tollgate_core::ids::TenantId;
use tollgate_core::invoice::{InvoicePreview, LineItem};
use tollgate_store::DynamoDbStore;
use xtask::sample_month::{self, SampleData};

fn line_amount(preview: &InvoicePreview, meter: &str) -> Decimal {
    preview
        .lines
        .iter()
        .find_map(|line| match &line.item {
            LineItem::Usage(usage) if usage.meter.as_str() == meter => Some(line.amount),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no line for {meter}"))
}

#[tokio::test]
async fn the_sample_month_is_counted_once_and_priced_exactly() {
    let endpoint = tollgate_devstack::dynamodb_endpoint_for_tests();
    let store = DynamoDbStore::new(
        tollgate_store::local_client(&endpoint),
        format!("sample-month-{}", std::process::id()),
    );
    let data = SampleData::read(&sample_month::samples_dir()).unwrap();
    let report = sample_month::load(&store, &data).await.unwrap();

    // 744 hours × (acme + podco samples) + 31 network reports; two malformed lines.
    assert_eq!(report.events_accepted, 744 * 2 + 31);
    let codes: Vec<&str> = report.rejected.iter().map(|r| r.code).collect();
    assert_eq!(codes, ["missing_value", "no_meter_for_type"]);
    assert!(report.redelivery.was_duplicate());

    // Loading the same month again (a replay of every batch) changes nothing.
    let replay = sample_month::load(&store, &data).await.unwrap();
    assert_eq!(replay.applied.batches_applied, 0);

    let acme = sample_month::invoice(&store, &data.catalog, &TenantId::new("acme").unwrap())
        .await
        .unwrap();
    // 163,422 requests: 100,000 included, 63,422 billable = 64 started thousands × 0.50.
    let LineItem::Usage(requests) = &acme.lines[1].item else {
        panic!("second line is the request line: {:?}", acme.lines)
    };
    assert_eq!(requests.quantity, dec!(163422));
    assert_eq!(line_amount(&acme, "api_requests"), dec!(32.00));
    assert_eq!(acme.total, dec!(61.00));

    let podco = sample_month::invoice(&store, &data.catalog, &TenantId::new("podco").unwrap())
        .await
        .unwrap();
    // October has 744 hours: 2 vCPU × 744 h × 0.01; 4 GB × 744 h × 0.005;
    // 50 GB × 744/730 GB-months × 0.10 = 5.0958… → 5.10; 31 × 0.40 GB out × 0.05.
    assert_eq!(line_amount(&podco, "cpu_vcpu_hours"), dec!(14.88));
    assert_eq!(line_amount(&podco, "memory_gb_hours"), dec!(14.88));
    assert_eq!(line_amount(&podco, "disk_gb_months"), dec!(5.10));
    assert_eq!(line_amount(&podco, "network_out_gb"), dec!(0.62));
    assert_eq!(line_amount(&podco, "network_in_gb"), dec!(0.00));
    assert_eq!(podco.total, dec!(35.48));
}
