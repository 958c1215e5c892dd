//! `cargo xtask dynamodb`: a DynamoDB Local for poking at by hand, until Ctrl-C.
//!
//! Ctrl-C interrupts the whole foreground process group: the JVM exits on its SIGINT, and
//! should it not, the devstack watchdog kills it once this process is gone.

use std::io::Write;

use anyhow::{Context, Result, bail};
use tollgate_devstack::{DYNAMODB_ENDPOINT_ENV, DynamoDbLocal};

pub fn run() -> Result<()> {
    let mut dynamodb = DynamoDbLocal::ensure()?.start()?;
    let endpoint = dynamodb.endpoint().to_owned();
    // The endpoint alone on stdout, for scripts; hints on stderr.
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{endpoint}").context("writing the endpoint to stdout")?;
    stdout.flush().context("flushing stdout")?;
    eprintln!("    export {DYNAMODB_ENDPOINT_ENV}={endpoint}");
    eprintln!(
        "    e.g. aws dynamodb list-tables --endpoint-url {endpoint} (any region and credentials)"
    );
    eprintln!("    Ctrl-C to stop");
    let status = dynamodb.wait()?;
    bail!(
        "DynamoDB Local exited by itself ({status}); its last output:\n{}",
        dynamodb.output()
    )
}
