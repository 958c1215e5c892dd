//! `GET /v1/usage`, `/v1/usage/history`, `/v1/usage/realtime`, `/v1/usage/export.csv`.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use lambda_http::{Body, Request, Response};
use rust_decimal::Decimal;
use serde::Serialize;
use tollgate_core::ids::MeterName;
use tollgate_core::invoice::{LineItem, preview_invoice};
use tollgate_core::meter::MeterCatalog;
use tollgate_core::plan::OveragePolicy;
use tollgate_core::quota::{QuotaStatus, quota_status};
use tollgate_core::usage::{Dimensions, UsageRow};
use tollgate_core::window::{Granularity, Window};

use super::{
    invoice_error, load_plan_versions, plan_at, quantities, row_quantity, tenant_request, timeline,
    unit, usage_in,
};
use crate::App;
use crate::auth::Principal;
use crate::csv::CsvWriter;
use crate::error::ApiError;
use crate::http::{Query, WindowView, csv, ok, parse_time, rfc3339};
use crate::ports::{EventQueue, UsageApiStore};

/// The month-to-date picture of one meter.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct MeterUsage<'a> {
    meter: &'a MeterName,
    unit: Option<&'a str>,
    /// Month to date.
    quantity: Decimal,
    /// Today (UTC) so far.
    today: Decimal,
    /// Units per month included in the plan; `None` if the plan does not price the meter.
    included: Option<Decimal>,
    overage: Option<OveragePolicy>,
    quotas: QuotaStatus,
    /// The amount of the meter's invoice line so far.
    cost: Option<Decimal>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct CurrentUsage<'a> {
    tenant: &'a str,
    as_of: String,
    period: WindowView,
    plan: &'a str,
    currency: &'static str,
    meters: Vec<MeterUsage<'a>>,
    /// The invoice total so far: base fees plus usage.
    cost_so_far: Decimal,
}

/// `GET /v1/usage`: the current month per meter, with allowances, quotas and cost.
pub async fn current<S: UsageApiStore, Q: EventQueue>(
    app: &App<S, Q>,
    principal: &Principal,
    request: &Request,
) -> Result<Response<Body>, ApiError> {
    let (_, profile) = tenant_request(app, principal, request, &[]).await?;
    let now = app.now();
    let month = Window::containing(Granularity::Month, now);
    let today = Window::containing(Granularity::Day, now);
    let month_rows = usage_in(app, &profile.tenant, Granularity::Month, month).await?;
    let today_rows = usage_in(app, &profile.tenant, Granularity::Day, today).await?;
    let month_q = quantities(&month_rows, app.catalog())?;
    let today_q = quantities(&today_rows, app.catalog())?;
    let versions = load_plan_versions(app.store(), &profile).await?;
    let timeline = timeline(&versions)?;
    let plan = plan_at(&timeline, now)?;
    let preview =
        preview_invoice(&profile.tenant, month, &timeline, &month_q).map_err(invoice_error)?;
    let costs: BTreeMap<&MeterName, Decimal> = preview
        .lines
        .iter()
        .filter_map(|line| match &line.item {
            LineItem::Usage(charge) => Some((&charge.meter, line.amount)),
            LineItem::Unpriced(unpriced) => Some((&unpriced.meter, line.amount)),
            LineItem::BaseFee(_) => None,
        })
        .collect();
    let meters: BTreeSet<&MeterName> = plan
        .meters()
        .keys()
        .chain(plan.limits().quotas().keys())
        .chain(month_q.keys())
        .collect();
    let meters = meters
        .into_iter()
        .map(|meter| {
            let quantity = month_q.get(meter).copied().unwrap_or_default();
            let used_today = today_q.get(meter).copied().unwrap_or_default();
            let pricing = plan.meter(meter);
            MeterUsage {
                meter,
                unit: unit(app.catalog(), meter),
                quantity,
                today: used_today,
                included: pricing.map(|p| p.included()),
                overage: pricing.map(|p| match p.price() {
                    Some(_) => OveragePolicy::Allowed,
                    None => OveragePolicy::HardLimit,
                }),
                quotas: quota_status(&plan.quota(meter), used_today, quantity, now),
                cost: costs.get(meter).copied(),
            }
        })
        .collect();
    ok(&CurrentUsage {
        tenant: profile.tenant.as_str(),
        as_of: rfc3339(now),
        period: month.into(),
        plan: plan.name().as_str(),
        currency: plan.currency().code(),
        meters,
        cost_so_far: preview.total,
    })
}

/// The longest range a history or export may cover, in windows of each granularity.
pub fn max_windows(granularity: Granularity) -> usize {
    match granularity {
        Granularity::Minute => 0,
        Granularity::Hour => 31 * 24,
        Granularity::Day => 400,
        Granularity::Month => 60,
    }
}

/// A validated history request.
#[derive(Debug)]
pub struct Range {
    granularity: Granularity,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    meter: Option<MeterName>,
    /// `by=meter`: one row per window and meter, its dimensions folded together.
    by_meter: bool,
}

/// The history routes' query (`granularity`, `from`, `to`, `meter`, `by`), validated:
/// public so the parser fuzz target reaches it without a store.
pub fn range(query: &Query, now: DateTime<Utc>) -> Result<Range, ApiError> {
    let granularity = match query.get("granularity").unwrap_or("day") {
        "hour" => Granularity::Hour,
        "day" => Granularity::Day,
        "month" => Granularity::Month,
        other => {
            return Err(ApiError::bad_request(
                "bad_granularity",
                format!("unknown granularity {other:?}; expected hour, day or month"),
            ));
        }
    };
    let to = query.parse("to", parse_time)?.unwrap_or(now);
    let from = match query.parse("from", parse_time)? {
        Some(from) => from,
        None => {
            let span = match granularity {
                Granularity::Hour => Duration::hours(24),
                Granularity::Day => Duration::days(30),
                _ => Duration::days(365),
            };
            to.checked_sub_signed(span).unwrap_or(to)
        }
    };
    if from >= to {
        return Err(ApiError::bad_request(
            "bad_range",
            "`from` must be earlier than `to`",
        ));
    }
    let limit = max_windows(granularity);
    if Window::range(granularity, from, to).take(limit + 1).count() > limit {
        return Err(ApiError::bad_request(
            "range_too_large",
            format!("at most {limit} windows of this granularity per request; narrow `from`/`to`"),
        ));
    }
    let meter = query.parse("meter", |v| MeterName::new(v))?;
    let by_meter = match query.get("by").unwrap_or("dimensions") {
        "dimensions" => false,
        "meter" => true,
        other => {
            return Err(ApiError::bad_request(
                "bad_query_parameter",
                format!("unknown `by` {other:?}; expected dimensions or meter"),
            ));
        }
    };
    Ok(Range {
        granularity,
        from,
        to,
        meter,
        by_meter,
    })
}

/// A row as the history and the export show it.
struct ShownRow<'r> {
    window: Window,
    meter: &'r MeterName,
    /// `None` when the range folds dimensions (`by=meter`).
    dimensions: Option<&'r Dimensions>,
    quantity: Option<Decimal>,
}

/// The stored rows of `range` as shown: one per window, meter and dimensions, or with
/// `by=meter` one per window and meter, folded under the meter's own aggregation (a sum
/// for counts, the merged sketch for percentiles), so a client never has to add up
/// rows itself.
fn shown_rows<'r>(
    range: &Range,
    rows: &'r [UsageRow],
    catalog: &MeterCatalog,
) -> Result<Vec<ShownRow<'r>>, ApiError> {
    if !range.by_meter {
        return Ok(rows
            .iter()
            .map(|row| ShownRow {
                window: row.key.window,
                meter: &row.key.meter,
                dimensions: Some(&row.key.dimensions),
                quantity: row_quantity(row, catalog),
            })
            .collect());
    }
    // The rows are in key order (meter, then window), so each meter's window is one run.
    rows.chunk_by(|a, b| a.key.meter == b.key.meter && a.key.window == b.key.window)
        .map(|run| {
            let key = &run[0].key;
            Ok(ShownRow {
                window: key.window,
                meter: &key.meter,
                dimensions: None,
                quantity: quantities(run, catalog)?.get(&key.meter).copied(),
            })
        })
        .collect()
}

/// The rows of a validated range, in key order: meter, window, dimensions.
async fn range_rows<S: UsageApiStore, Q: EventQueue>(
    app: &App<S, Q>,
    profile_tenant: &tollgate_core::ids::TenantId,
    range: &Range,
) -> Result<Vec<UsageRow>, ApiError> {
    let mut rows = app
        .store()
        .usage_view(
            profile_tenant,
            range.granularity,
            range.from,
            range.to,
            app.now(),
        )
        .await?;
    rows.retain(|row| range.meter.as_ref().is_none_or(|m| *m == row.key.meter));
    rows.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(rows)
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct HistoryRow<'a> {
    window: WindowView,
    meter: &'a MeterName,
    dimensions: BTreeMap<&'a str, &'a str>,
    quantity: Option<Decimal>,
    unit: Option<&'a str>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct History<'a> {
    tenant: &'a str,
    granularity: Granularity,
    from: String,
    to: String,
    rows: Vec<HistoryRow<'a>>,
}

const RANGE_PARAMS: &[&str] = &["granularity", "from", "to", "meter", "by"];

/// `GET /v1/usage/history`: rows per window, meter and dimensions.
pub async fn history<S: UsageApiStore, Q: EventQueue>(
    app: &App<S, Q>,
    principal: &Principal,
    request: &Request,
) -> Result<Response<Body>, ApiError> {
    let (query, profile) = tenant_request(app, principal, request, RANGE_PARAMS).await?;
    let range = range(&query, app.now())?;
    let rows = range_rows(app, &profile.tenant, &range).await?;
    ok(&History {
        tenant: profile.tenant.as_str(),
        granularity: range.granularity,
        from: rfc3339(range.from),
        to: rfc3339(range.to),
        rows: shown_rows(&range, &rows, app.catalog())?
            .into_iter()
            .map(|row| HistoryRow {
                window: row.window.into(),
                meter: row.meter,
                dimensions: row
                    .dimensions
                    .map(|d| d.iter().collect())
                    .unwrap_or_default(),
                quantity: row.quantity,
                unit: unit(app.catalog(), row.meter),
            })
            .collect(),
    })
}

/// `GET /v1/usage/export.csv`: the history as RFC 4180 CSV with a header row.
pub async fn export_csv<S: UsageApiStore, Q: EventQueue>(
    app: &App<S, Q>,
    principal: &Principal,
    request: &Request,
) -> Result<Response<Body>, ApiError> {
    let (query, profile) = tenant_request(app, principal, request, RANGE_PARAMS).await?;
    let range = range(&query, app.now())?;
    let rows = range_rows(app, &profile.tenant, &range).await?;
    let mut out = CsvWriter::new();
    out.record([
        "window_start",
        "window_end",
        "granularity",
        "meter",
        "dimensions",
        "quantity",
        "unit",
    ]);
    for row in shown_rows(&range, &rows, app.catalog())? {
        let window = row.window;
        let quantity = row.quantity.map(|q| q.to_string()).unwrap_or_default();
        let dimensions = row.dimensions.map(|d| d.key()).unwrap_or_default();
        out.record([
            rfc3339(window.start()).as_str(),
            rfc3339(window.end()).as_str(),
            granularity_name(window.granularity()),
            row.meter.as_str(),
            dimensions.as_str(),
            quantity.as_str(),
            unit(app.catalog(), row.meter).unwrap_or_default(),
        ]);
    }
    let filename = format!(
        "usage-{}-{}.csv",
        profile.tenant,
        granularity_name(range.granularity)
    );
    csv(out.finish(), &filename)
}

fn granularity_name(granularity: Granularity) -> &'static str {
    match granularity {
        Granularity::Minute => "minute",
        Granularity::Hour => "hour",
        Granularity::Day => "day",
        Granularity::Month => "month",
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct MeterQuantity<'a> {
    meter: &'a MeterName,
    unit: Option<&'a str>,
    quantity: Decimal,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct WindowUsage<'a> {
    window: WindowView,
    meters: Vec<MeterQuantity<'a>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Realtime<'a> {
    tenant: &'a str,
    as_of: String,
    hour: WindowUsage<'a>,
    day: WindowUsage<'a>,
}

/// `GET /v1/usage/realtime`: the current hour and day, counters not yet rolled up included.
pub async fn realtime<S: UsageApiStore, Q: EventQueue>(
    app: &App<S, Q>,
    principal: &Principal,
    request: &Request,
) -> Result<Response<Body>, ApiError> {
    let (_, profile) = tenant_request(app, principal, request, &[]).await?;
    let now = app.now();
    let hour = Window::containing(Granularity::Hour, now);
    let day = Window::containing(Granularity::Day, now);
    let hour_q = quantities(
        &usage_in(app, &profile.tenant, Granularity::Hour, hour).await?,
        app.catalog(),
    )?;
    let day_q = quantities(
        &usage_in(app, &profile.tenant, Granularity::Day, day).await?,
        app.catalog(),
    )?;
    let hour_view = window_usage(hour, &hour_q, app.catalog());
    let day_view = window_usage(day, &day_q, app.catalog());
    ok(&Realtime {
        tenant: profile.tenant.as_str(),
        as_of: rfc3339(now),
        hour: hour_view,
        day: day_view,
    })
}

fn window_usage<'a>(
    window: Window,
    quantities: &'a BTreeMap<MeterName, Decimal>,
    catalog: &'a tollgate_core::meter::MeterCatalog,
) -> WindowUsage<'a> {
    WindowUsage {
        window: window.into(),
        meters: quantities
            .iter()
            .map(|(meter, &quantity)| MeterQuantity {
                meter,
                unit: unit(catalog, meter),
                quantity,
            })
            .collect(),
    }
}
