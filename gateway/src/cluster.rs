//! Clusters: where the filter's `dispatch_http_call`s go, as Envoy's cluster manager
//! would send them.
//!
//! A [`Cluster`] maps a name the plugin configuration uses (`usage_api`, `sqs`) to a
//! loopback base URL. A cluster may sign its requests with AWS SigV4, as Envoy's
//! `aws_request_signing` upstream filter does on the `sqs` cluster of
//! `infra/envoy/envoy.yaml`: the filter itself never holds credentials, and SQS servers
//! (AWS, or moto locally, which routes by the signature's service) get the request they
//! expect.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tollgate_wasm_host::{HttpCall, HttpCallResult};

/// SigV4 signing of a cluster's requests.
#[derive(Clone)]
pub struct SigV4 {
    pub service: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for SigV4 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigV4")
            .field("service", &self.service)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl SigV4 {
    /// Local emulators accept any credentials; these make the intent obvious.
    pub fn local(service: &str) -> SigV4 {
        SigV4 {
            service: service.to_owned(),
            region: "us-east-1".to_owned(),
            access_key_id: "tollgate-local".to_owned(),
            secret_access_key: "tollgate-local".to_owned(),
        }
    }
}

/// One upstream cluster the filter may call.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub name: String,
    /// `http://127.0.0.1:PORT`, no trailing slash; the call's `:path` is appended.
    pub base_url: String,
    pub signing: Option<SigV4>,
}

impl Cluster {
    pub fn new(name: impl Into<String>, base_url: impl Into<String>) -> Cluster {
        Cluster {
            name: name.into(),
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            signing: None,
        }
    }

    pub fn signed(mut self, signing: SigV4) -> Cluster {
        self.signing = Some(signing);
        self
    }
}

/// Makes the filter's calls: one shared HTTP/1 client.
#[derive(Debug, Clone)]
pub struct ClusterClient {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for ClusterClient {
    fn default() -> Self {
        ClusterClient::new()
    }
}

impl ClusterClient {
    pub fn new() -> ClusterClient {
        ClusterClient {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Performs `call` against `cluster`. Like Envoy, anything that prevents a response
    /// (bad request shape, connection failure, the call's timeout) is
    /// [`HttpCallResult::Failed`]; any HTTP response, error statuses included, is a
    /// response.
    pub async fn call(&self, call: &HttpCall, cluster: &Cluster) -> HttpCallResult {
        let request = match build_request(call, cluster) {
            Ok(request) => request,
            Err(reason) => {
                tracing::warn!(cluster = %cluster.name, %reason, "call not sent");
                return HttpCallResult::Failed;
            }
        };
        let timeout = if call.timeout.is_zero() {
            Duration::from_secs(30)
        } else {
            call.timeout
        };
        let exchange = async {
            let response = self.client.request(request).await.ok()?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await.ok()?.to_bytes().to_vec();
            let mut headers = vec![(":status".to_owned(), parts.status.as_u16().to_string())];
            for (name, value) in &parts.headers {
                if let Ok(value) = value.to_str() {
                    headers.push((name.as_str().to_owned(), value.to_owned()));
                }
            }
            Some(HttpCallResult::Response {
                headers,
                body,
                trailers: Vec::new(),
            })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Some(result)) => result,
            Ok(None) | Err(_) => {
                tracing::warn!(cluster = %cluster.name, "call failed or timed out");
                HttpCallResult::Failed
            }
        }
    }
}

fn pseudo<'a>(call: &'a HttpCall, name: &str) -> Option<&'a str> {
    call.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn build_request(
    call: &HttpCall,
    cluster: &Cluster,
) -> Result<hyper::Request<Full<Bytes>>, String> {
    let method = pseudo(call, ":method").ok_or(":method missing")?;
    let path = pseudo(call, ":path").ok_or(":path missing")?;
    let authority = pseudo(call, ":authority").ok_or(":authority missing")?;
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(format!("{}{path}", cluster.base_url))
        .header("host", authority)
        .body(Full::new(Bytes::from(call.body.clone())))
        .map_err(|e| e.to_string())?;
    for (name, value) in &call.headers {
        if name.starts_with(':') {
            continue;
        }
        let name =
            hyper::header::HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
        let value = hyper::header::HeaderValue::from_str(value).map_err(|e| e.to_string())?;
        request.headers_mut().append(name, value);
    }
    if let Some(signing) = &cluster.signing {
        sign_request(&mut request, &call.body, signing)?;
    }
    Ok(request)
}

/// Adds SigV4 headers as Envoy's `aws_request_signing` filter would (payload signed).
fn sign_request(
    request: &mut hyper::Request<Full<Bytes>>,
    body: &[u8],
    signing: &SigV4,
) -> Result<(), String> {
    let identity = Credentials::new(
        &signing.access_key_id,
        &signing.secret_access_key,
        None,
        None,
        "tollgate-gateway",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&signing.region)
        .name(&signing.service)
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let uri = request.uri().to_string();
    let headers: Vec<(&str, &str)> = request
        .headers()
        .iter()
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v)))
        .collect();
    let signable = SignableRequest::new(
        request.method().as_str(),
        uri.as_str(),
        headers.into_iter(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    instructions.apply_to_request_http1x(request);
    Ok(())
}
