//! # tollgate-store
//!
//! DynamoDB persistence for tollgate, behind one adapter: [`DynamoDbStore`]. Everything
//! about `AttributeValue`s, key spelling and conditional writes stays in this crate; the
//! domain types come from `tollgate-core`.
//!
//! - [`table`]: the single-table key design, retention, and table creation.
//! - [`apply`]: exactly-once application of usage batches (the core invariant), with
//!   the journal that lets one invocation write each counter once.
//! - [`usage`]: reading a tenant's usage by granularity and time range.
//! - [`directory`]: tenants and API keys (stored as SHA-256 digests only).
//! - [`plans`]: immutable plan versions and tenant budgets.
//! - [`rejections`]: rejected messages, kept with their reasons.
//! - [`rollups`]: daily and monthly rollups, the rollup watermark, and the usage view.
//! - [`alerts`]: budget alerts (once per month and trigger), webhooks, the budget block list.
//! - [`billing`]: the Stripe ledger (pending → sent/rejected) and month statements.
//!
//! Errors are [`StoreError`]s that know whether they are transient, so a Lambda can
//! return a message to the queue for a retry or record it as rejected.

pub mod alerts;
pub mod apply;
pub mod billing;
mod codec;
pub mod directory;
pub mod error;
pub mod logging;
pub mod plans;
pub mod rejections;
pub mod rollups;
pub mod table;
pub mod usage;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};

pub use alerts::{BudgetBlock, WebhookEndpoint};
pub use apply::{
    ApplyReport, BatchOutcome, BatchesReport, Chunk, JOURNAL_GRACE, STORAGE_REFUSED,
    content_chunks, plan_rows,
};
pub use error::StoreError;
pub use rejections::rejection_cursor;
pub use rollups::RollupWatermark;
pub use table::{Retention, create_table};

/// The DynamoDB adapter: a client, the table name, and the retention policy.
#[derive(Debug, Clone)]
pub struct DynamoDbStore {
    client: Client,
    table: String,
    retention: Retention,
}

impl DynamoDbStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoDbStore {
            client,
            table: table.into(),
            retention: Retention::default(),
        }
    }

    /// Replaces the default retention policy.
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Creates this store's table if needed (see [`create_table`]).
    pub async fn ensure_table(&self) -> Result<(), StoreError> {
        create_table(&self.client, &self.table).await
    }
}

/// A client for a local DynamoDB endpoint (DynamoDB Local), with static dummy
/// credentials and a fixed region: for tests and the local stack only.
pub fn local_client(endpoint: &str) -> Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "local",
            "local",
            None,
            None,
            "tollgate-local",
        ))
        .build();
    Client::from_conf(config)
}
