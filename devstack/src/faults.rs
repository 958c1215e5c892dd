//! Faults on cue for the AWS SDK's DynamoDB client: a process that dies part-way, seen
//! from the table. Tests wrap a client with [`dying_dynamodb`] and hand it to the code
//! under test, then check that the next, healthy run repairs what the dead one left.

use std::sync::Mutex;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::interceptors::{
    BeforeDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;

/// Kills the "process" after `alive` `TransactWriteItems` calls reached DynamoDB: every
/// later call fails before it is sent. With `lose_last`, the last call commits but its
/// response is lost, as when the connection drops before the reply.
#[derive(Debug)]
struct DieAfter {
    transmitted: Mutex<u32>,
    alive: u32,
    lose_last: bool,
}

impl Intercept for DieAfter {
    fn name(&self) -> &'static str {
        "DieAfter"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let mut transmitted = self
            .transmitted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *transmitted >= self.alive {
            return Err("injected: the process died".into());
        }
        let is_transaction = context
            .request()
            .headers()
            .get("x-amz-target")
            .is_some_and(|t| t.ends_with("TransactWriteItems"));
        if is_transaction {
            *transmitted += 1;
        }
        Ok(())
    }

    fn read_before_deserialization(
        &self,
        _: &BeforeDeserializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let transmitted = *self
            .transmitted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.lose_last && transmitted == self.alive {
            return Err("injected: response lost after commit".into());
        }
        Ok(())
    }
}

/// `client` as seen by a process that dies after `alive` transactions (see the module
/// docs). Retries are off: a dead process does not retry.
pub fn dying_dynamodb(client: &Client, alive: u32, lose_last: bool) -> Client {
    let config = client
        .config()
        .to_builder()
        .interceptor(DieAfter {
            transmitted: Mutex::new(0),
            alive,
            lose_last,
        })
        .retry_config(RetryConfig::disabled())
        .build();
    Client::from_conf(config)
}
