//! Admin: `GET /v1/admin/rejected`: messages the ingest rejected for good, with reasons.

use lambda_http::{Body, Request, Response};
use serde::Serialize;
use tollgate_core::message::Rejection;

use super::page_limit;
use crate::App;
use crate::error::ApiError;
use crate::http::{Query, ok};
use crate::ports::{EventQueue, UsageApiStore};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct RejectionPage {
    /// Oldest first.
    rejections: Vec<Rejection>,
    /// Pass as `after` for the next page; `None` on the last page.
    next: Option<String>,
}

/// `GET /v1/admin/rejected?after=&limit=`.
pub async fn list<S: UsageApiStore, Q: EventQueue>(
    app: &App<S, Q>,
    request: &Request,
) -> Result<Response<Body>, ApiError> {
    let query = Query::of(request, &["after", "limit"])?;
    let after = query.get("after");
    if after.is_some_and(|a| a.len() > 512) {
        return Err(ApiError::bad_request(
            "bad_query_parameter",
            "query parameter `after` is not a cursor",
        ));
    }
    let limit = page_limit(&query, 100, 1000)?;
    let rejections = app.store().rejections(after, limit).await?;
    let next = (rejections.len() == limit)
        .then(|| rejections.last().map(|r| app.store().rejection_cursor(r)))
        .flatten();
    ok(&RejectionPage { rejections, next })
}
