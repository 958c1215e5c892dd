//! `cargo xtask admin-key --table <name> [--label <text>] [--endpoint <url>]`: the first
//! admin key of a deployment. The usage API creates every other key, but only for a caller
//! that already holds an admin key; this writes one straight to the table (its SHA-256
//! digest only, as the API does) with the AWS credentials and region of the environment,
//! and prints the key once.

use anyhow::{Context, Result, bail};
use chrono::Utc;
use tollgate_core::tenant::{ApiKeyHash, ApiKeyRecord, ApiKeyRole};
use tollgate_store::DynamoDbStore;

/// What `cargo xtask admin-key` was asked for.
#[derive(Debug, PartialEq, Eq)]
pub struct Options {
    table: String,
    label: String,
    /// A DynamoDB endpoint other than AWS's (DynamoDB Local), for trying it out.
    endpoint: Option<String>,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Options> {
        let (mut table, mut label, mut endpoint) = (None, None, None);
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let slot = match flag.as_str() {
                "--table" => &mut table,
                "--label" => &mut label,
                "--endpoint" => &mut endpoint,
                other => bail!("`cargo xtask admin-key` does not take {other:?}"),
            };
            let value = args
                .next()
                .with_context(|| format!("{flag} needs a value"))?;
            *slot = Some(value.clone());
        }
        Ok(Options {
            table: table.context(
                "--table is required: the stack's table name (the TableName output of `sam deploy`)",
            )?,
            label: label.unwrap_or_else(|| "first admin key (cargo xtask admin-key)".to_owned()),
            endpoint,
        })
    }
}

pub fn run(options: &Options) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let key = crate::util::new_api_key()?;
    runtime.block_on(async {
        let client = match &options.endpoint {
            Some(endpoint) => tollgate_store::local_client(endpoint),
            None => {
                let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
                aws_sdk_dynamodb::Client::new(&config)
            }
        };
        DynamoDbStore::new(client, options.table.clone())
            .create_api_key(&ApiKeyRecord {
                hash: ApiKeyHash::of(&key),
                role: ApiKeyRole::Admin,
                tenant: None,
                label: options.label.clone(),
                created_at: Utc::now(),
                revoked_at: None,
            })
            .await
            .with_context(|| format!("writing the admin key to table {}", options.table))
    })?;
    eprintln!(
        "an admin key is stored in {} (its SHA-256 digest only); it is shown once, here:",
        options.table
    );
    println!("{key}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_table_is_required_and_the_rest_optional() {
        assert!(Options::parse(&[]).is_err());
        let options = Options::parse(&args(&["--table", "t", "--label", "ops"])).unwrap();
        assert_eq!(options.table, "t");
        assert_eq!(options.label, "ops");
        assert_eq!(options.endpoint, None);
        assert!(Options::parse(&args(&["--table"])).is_err());
        assert!(Options::parse(&args(&["--table", "t", "--region", "x"])).is_err());
    }
}
