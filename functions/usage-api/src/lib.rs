//! # tollgate-usage-api
//!
//! The tenant usage API: a Lambda behind a Function URL. Tenants read their usage, quotas,
//! prices, estimates, forecasts and invoice previews, set their budget, read and
//! acknowledge budget alerts, read their month statements, export usage as CSV, submit
//! usage events and see it all on a dashboard page; admins manage tenants, plans, keys
//! and alert webhooks, reconcile the Stripe ledger and inspect rejected messages.
//! Every route is listed in [`router::ROUTES`] and described by the OpenAPI 3.1 document
//! served at `GET /v1/openapi.json` (`openapi.json` in this crate).
//!
//! The crate is a thin shell: decisions (what an event means, what usage costs, how much
//! quota is left) are `tollgate-core`'s, storage is `tollgate-store`'s. Handlers are
//! generic over the ports in [`ports`] so they run in tests exactly as in Lambda, over
//! DynamoDB and SQS.
//!
//! - [`router`]: the route table and matcher (404 / 405).
//! - [`auth`]: API keys, roles and tenant isolation.
//! - [`handlers`]: one module per resource.
//! - [`error`]: stable error codes and their JSON replies.
//! - [`openapi`]: the OpenAPI document.
//! - [`dashboard`]: the tenant dashboard, a static page that reads this API.
//! - [`snapshot_cache`]: the edge snapshot kept per instance for a short max age.
//!
//! ```no_run
//! # async fn run(store: tollgate_store::DynamoDbStore, queue: tollgate_usage_api::sqs::SqsEventQueue,
//! #              catalog: tollgate_core::meter::MeterCatalog) -> Result<(), lambda_http::Error> {
//! use tollgate_usage_api::App;
//!
//! let app = App::new(store, queue, catalog);
//! let app = &app;
//! lambda_http::run(lambda_http::service_fn(move |request| async move {
//!     Ok::<_, lambda_http::Error>(app.handle(request).await)
//! }))
//! .await
//! # }
//! ```

pub mod auth;
pub mod csv;
pub mod dashboard;
pub mod dynamodb;
pub mod error;
pub mod handlers;
pub mod http;
pub mod openapi;
pub mod ports;
pub mod router;
pub mod snapshot_cache;
pub mod sqs;

use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound, Utc};
use lambda_http::{Body, Request, Response};
use tollgate_core::meter::MeterCatalog;
use tollgate_core::window::EventTimePolicy;

use crate::error::ApiError;
use crate::ports::{EventQueue, UsageApiStore};
use crate::router::{Access, Match};
use crate::snapshot_cache::SnapshotCache;

/// Where "now" comes from: the system clock (to the millisecond, so replies and records
/// carry readable times), or a fixed instant for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    System,
    Fixed(DateTime<Utc>),
}

impl Clock {
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now().trunc_subsecs(3),
            Clock::Fixed(t) => *t,
        }
    }
}

/// The API: its store, its queue, the meter catalog, a clock and the edge snapshot cache.
#[derive(Debug)]
pub struct App<S, Q> {
    store: S,
    queue: Q,
    catalog: MeterCatalog,
    policy: EventTimePolicy,
    clock: Clock,
    snapshot_cache: SnapshotCache,
}

impl<S: UsageApiStore, Q: EventQueue> App<S, Q> {
    /// An API on the system clock with the default event-time policy, building every
    /// edge snapshot afresh.
    pub fn new(store: S, queue: Q, catalog: MeterCatalog) -> Self {
        App {
            store,
            queue,
            catalog,
            policy: EventTimePolicy::default(),
            clock: Clock::System,
            snapshot_cache: SnapshotCache::off(),
        }
    }

    /// Judges event times by `policy` (keep it the ingest's, so what the API accepts the
    /// ingest does too).
    pub fn with_policy(mut self, policy: EventTimePolicy) -> Self {
        self.policy = policy;
        self
    }

    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Serves a built edge snapshot again for up to `max_age` (zero: never); see
    /// [`snapshot_cache`].
    pub fn with_snapshot_max_age(mut self, max_age: Duration) -> Self {
        self.snapshot_cache = SnapshotCache::new(max_age);
        self
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn queue(&self) -> &Q {
        &self.queue
    }

    pub fn catalog(&self) -> &MeterCatalog {
        &self.catalog
    }

    pub fn policy(&self) -> &EventTimePolicy {
        &self.policy
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub fn snapshot_cache(&self) -> &SnapshotCache {
        &self.snapshot_cache
    }

    /// Answers one request. Never fails: errors become their JSON replies.
    pub async fn handle(&self, request: Request) -> Response<Body> {
        let started = Instant::now();
        let (response, route) = match self.route(&request).await {
            Ok((response, route)) => (response, route),
            Err((error, route)) => (error.into_response(), route),
        };
        tracing::info!(
            method = %request.method(),
            route = route.unwrap_or("-"),
            status = response.status().as_u16(),
            millis = started.elapsed().as_millis() as u64,
            "request"
        );
        response
    }

    async fn route(
        &self,
        request: &Request,
    ) -> Result<(Response<Body>, Option<&'static str>), (ApiError, Option<&'static str>)> {
        let path = request.uri().path();
        let (route, params) = match router::find(request.method().as_str(), path) {
            Match::Found(route, params) => (route, params),
            Match::MethodNotAllowed(allowed) => {
                let error = ApiError::MethodNotAllowed {
                    method: request.method().to_string(),
                    allowed,
                };
                return Err((error, None));
            }
            Match::NotFound => {
                let path = path.chars().take(200).collect();
                return Err((ApiError::NoRoute { path }, None));
            }
        };
        let pattern = Some(route.pattern);
        let result = async {
            let principal = match route.access {
                Access::Public => None,
                Access::Tenant => Some(auth::authenticate(&self.store, request.headers()).await?),
                Access::Admin => {
                    let principal = auth::authenticate(&self.store, request.headers()).await?;
                    principal.require_admin()?;
                    Some(principal)
                }
            };
            handlers::dispatch(self, route.id, principal.as_ref(), &params, request).await
        }
        .await;
        result.map(|r| (r, pattern)).map_err(|e| (e, pattern))
    }
}
