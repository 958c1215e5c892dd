//! The route table: every route the API serves, its method, who may call it, and the
//! matcher that turns a method and path into a route (or a 404 / 405).
//!
//! The table is data so that the OpenAPI document can be checked against it: a test
//! asserts that both list the same paths with the same methods.

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No key needed.
    Public,
    /// A tenant key (its own tenant only) or an admin key (any tenant, via `?tenant=`).
    Tenant,
    /// Admin keys only; a tenant key gets 403.
    Admin,
}

/// What a route does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteId {
    OpenApi,
    /// The tenant dashboard's page, script and style sheet.
    Dashboard,
    DashboardScript,
    DashboardStyle,
    Usage,
    UsageHistory,
    UsageRealtime,
    UsageExport,
    Pricing,
    Estimate,
    Forecast,
    InvoicePreview,
    Events,
    ListTenants,
    CreateTenant,
    GetTenant,
    PutTenant,
    ListPlans,
    CreatePlan,
    CreateKey,
    ListKeys,
    RevokeKey,
    Rejected,
    /// The edge snapshot a gateway pulls (with an admin-role key).
    EdgeSnapshot,
    GetBudget,
    PutBudget,
    ListAlerts,
    AcknowledgeAlert,
    ListStatements,
    GetStatement,
    GetWebhook,
    PutWebhook,
    DeleteWebhook,
    Reconciliation,
}

/// One route: `{name}` segments of the pattern capture a path parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    pub pattern: &'static str,
    pub access: Access,
    pub id: RouteId,
}

const fn route(method: &'static str, pattern: &'static str, access: Access, id: RouteId) -> Route {
    Route {
        method,
        pattern,
        access,
        id,
    }
}

/// Every route of the API.
pub const ROUTES: &[Route] = &[
    route("GET", "/v1/openapi.json", Access::Public, RouteId::OpenApi),
    route("GET", "/v1/dashboard", Access::Public, RouteId::Dashboard),
    route(
        "GET",
        "/v1/dashboard/app.js",
        Access::Public,
        RouteId::DashboardScript,
    ),
    route(
        "GET",
        "/v1/dashboard/app.css",
        Access::Public,
        RouteId::DashboardStyle,
    ),
    route("GET", "/v1/usage", Access::Tenant, RouteId::Usage),
    route(
        "GET",
        "/v1/usage/history",
        Access::Tenant,
        RouteId::UsageHistory,
    ),
    route(
        "GET",
        "/v1/usage/realtime",
        Access::Tenant,
        RouteId::UsageRealtime,
    ),
    route(
        "GET",
        "/v1/usage/export.csv",
        Access::Tenant,
        RouteId::UsageExport,
    ),
    route("GET", "/v1/pricing", Access::Tenant, RouteId::Pricing),
    route("POST", "/v1/estimate", Access::Tenant, RouteId::Estimate),
    route("GET", "/v1/forecast", Access::Tenant, RouteId::Forecast),
    route(
        "GET",
        "/v1/invoice/preview",
        Access::Tenant,
        RouteId::InvoicePreview,
    ),
    route("POST", "/v1/events", Access::Tenant, RouteId::Events),
    route(
        "GET",
        "/v1/admin/tenants",
        Access::Admin,
        RouteId::ListTenants,
    ),
    route(
        "POST",
        "/v1/admin/tenants",
        Access::Admin,
        RouteId::CreateTenant,
    ),
    route(
        "GET",
        "/v1/admin/tenants/{id}",
        Access::Admin,
        RouteId::GetTenant,
    ),
    route(
        "PUT",
        "/v1/admin/tenants/{id}",
        Access::Admin,
        RouteId::PutTenant,
    ),
    route("GET", "/v1/admin/plans", Access::Admin, RouteId::ListPlans),
    route(
        "POST",
        "/v1/admin/plans",
        Access::Admin,
        RouteId::CreatePlan,
    ),
    route(
        "POST",
        "/v1/admin/tenants/{id}/keys",
        Access::Admin,
        RouteId::CreateKey,
    ),
    route(
        "GET",
        "/v1/admin/tenants/{id}/keys",
        Access::Admin,
        RouteId::ListKeys,
    ),
    route(
        "DELETE",
        "/v1/admin/keys/{sha256}",
        Access::Admin,
        RouteId::RevokeKey,
    ),
    route(
        "GET",
        "/v1/admin/rejected",
        Access::Admin,
        RouteId::Rejected,
    ),
    route(
        "GET",
        "/v1/edge/snapshot",
        Access::Admin,
        RouteId::EdgeSnapshot,
    ),
    route("GET", "/v1/budget", Access::Tenant, RouteId::GetBudget),
    route("PUT", "/v1/budget", Access::Tenant, RouteId::PutBudget),
    route("GET", "/v1/alerts", Access::Tenant, RouteId::ListAlerts),
    route(
        "POST",
        "/v1/alerts/{id}/ack",
        Access::Tenant,
        RouteId::AcknowledgeAlert,
    ),
    route(
        "GET",
        "/v1/statements",
        Access::Tenant,
        RouteId::ListStatements,
    ),
    route(
        "GET",
        "/v1/statements/{month}",
        Access::Tenant,
        RouteId::GetStatement,
    ),
    route(
        "GET",
        "/v1/admin/tenants/{id}/webhook",
        Access::Admin,
        RouteId::GetWebhook,
    ),
    route(
        "PUT",
        "/v1/admin/tenants/{id}/webhook",
        Access::Admin,
        RouteId::PutWebhook,
    ),
    route(
        "DELETE",
        "/v1/admin/tenants/{id}/webhook",
        Access::Admin,
        RouteId::DeleteWebhook,
    ),
    route(
        "GET",
        "/v1/admin/billing/reconciliation",
        Access::Admin,
        RouteId::Reconciliation,
    ),
];

/// The outcome of matching a request against [`ROUTES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match<'p> {
    /// The route and its path parameters, in pattern order.
    Found(&'static Route, Vec<&'p str>),
    /// The path exists, but not with this method.
    MethodNotAllowed(Vec<&'static str>),
    NotFound,
}

/// Matches `method` and `path` against the table. `HEAD` is not served.
pub fn find<'p>(method: &str, path: &'p str) -> Match<'p> {
    let mut allowed = Vec::new();
    for route in ROUTES {
        if let Some(params) = captures(route.pattern, path) {
            if route.method == method {
                return Match::Found(route, params);
            }
            allowed.push(route.method);
        }
    }
    if allowed.is_empty() {
        Match::NotFound
    } else {
        Match::MethodNotAllowed(allowed)
    }
}

/// The path parameters of `path` under `pattern`, or `None` when it does not match.
fn captures<'p>(pattern: &str, path: &'p str) -> Option<Vec<&'p str>> {
    let mut pattern_segments = pattern.split('/');
    let mut path_segments = path.split('/');
    let mut params = Vec::new();
    loop {
        match (pattern_segments.next(), path_segments.next()) {
            (None, None) => return Some(params),
            (Some(expected), Some(actual)) => {
                if expected.starts_with('{') && expected.ends_with('}') {
                    if actual.is_empty() {
                        return None;
                    }
                    params.push(actual);
                } else if expected != actual {
                    return None;
                }
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_and_parameter_segments_match() {
        assert!(matches!(find("GET", "/v1/usage"), Match::Found(r, _) if r.id == RouteId::Usage));
        match find("PUT", "/v1/admin/tenants/acme") {
            Match::Found(route, params) => {
                assert_eq!(route.id, RouteId::PutTenant);
                assert_eq!(params, ["acme"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            find("GET", "/v1/admin/tenants/acme/keys"),
            Match::Found(r, p) if r.id == RouteId::ListKeys && p == ["acme"]
        ));
    }

    #[test]
    fn alert_and_statement_paths_capture_their_parameter() {
        assert!(matches!(
            find("POST", "/v1/alerts/2026-11.threshold-80/ack"),
            Match::Found(r, p) if r.id == RouteId::AcknowledgeAlert && p == ["2026-11.threshold-80"]
        ));
        assert!(matches!(
            find("GET", "/v1/statements/2026-10"),
            Match::Found(r, p) if r.id == RouteId::GetStatement && p == ["2026-10"]
        ));
        assert_eq!(find("POST", "/v1/alerts//ack"), Match::NotFound);
        assert_eq!(
            find("PATCH", "/v1/admin/tenants/acme/webhook"),
            Match::MethodNotAllowed(vec!["GET", "PUT", "DELETE"])
        );
    }

    #[test]
    fn a_known_path_with_another_method_is_405_with_the_allowed_methods() {
        assert_eq!(
            find("DELETE", "/v1/admin/tenants/acme"),
            Match::MethodNotAllowed(vec!["GET", "PUT"])
        );
    }

    #[test]
    fn unknown_paths_trailing_slashes_and_empty_parameters_are_not_found() {
        for path in [
            "/v1/nope",
            "/v1/usage/",
            "/v1/admin/tenants//keys",
            "/",
            "",
            "/v2/usage",
        ] {
            assert_eq!(find("GET", path), Match::NotFound, "{path}");
        }
    }

    #[test]
    fn every_route_is_listed_once() {
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[i + 1..] {
                assert!(
                    !(a.method == b.method && a.pattern == b.pattern),
                    "{a:?} twice"
                );
                assert_ne!(a.id, b.id);
            }
        }
    }
}
