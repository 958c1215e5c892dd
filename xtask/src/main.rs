//! `cargo xtask`: tollgate's developer workflow (std + anyhow; no argument-parsing crate).
//!
//! - `cargo xtask test [--no-lint] [-- <test runner args>…]`: toolchain check, DynamoDB
//!   Local, fmt, clippy, tests and doctests, with timings ([`test`]).
//! - `cargo xtask demo [--no-wait]`: the local stack end to end, driven through the usage
//!   API ([`demo`]).
//! - `cargo xtask soak [suite…]`: the reliability suites at soak size, with their
//!   figures ([`soak`]).
//! - `cargo xtask dynamodb`: DynamoDB Local until Ctrl-C ([`dynamodb`]).
//! - `cargo xtask admin-key --table <name>`: a deployment's first admin key ([`admin_key`]).

mod admin_key;
mod bench;
mod demo;
mod dynamodb;
mod soak;
mod test;
mod util;

use std::process::ExitCode;

use anyhow::{Context, Result, bail};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  test [--no-lint] [-- <args>…]
        check the toolchain (clippy, rustfmt, wasm32-wasip1), start DynamoDB Local,
        then `cargo fmt --check`, `cargo clippy -D warnings`, the tests (nextest when
        available, else cargo test) and the doctests.
        --no-lint   skip fmt and clippy
        -- <args>   passed to the test runner, e.g. `-- store` (a filter) or
                    `-- -p tollgate-store`; package selections (-p/--package/--exclude)
                    also apply to the doctests
  demo [--no-wait]
        build the Lambda binaries, start the local stack (DynamoDB Local, SQS emulator,
        ingest/rollup/usage-api), create plans, tenants and keys and send a few thousand
        usage events through the usage API, then print each tenant's usage, forecast and
        invoice preview as the API serves them, with curl commands to try; the stack
        stays up until Ctrl-C (at most 10 minutes)
        --no-wait   stop and exit right after printing
  bench [part…]
        the measurements the docs quote; all parts, or only those named:
        filter   per request in the host vs a no-op filter, native decision
        ingest   rows/s per invocation, DynamoDB writes per 1,000 events
        api      usage API month views (50 meters) over HTTP: p50/p99, DynamoDB calls
        sizes    each Lambda's release binary: as built, stripped, zipped
        cost     AWS $ per 1M metered requests: 10 gateways' real filter → SQS →
                 ingest on DynamoDB Local, counted; the model, sweep, idle floor
  soak [suite…] [--fuzz-inputs N] [--load-seconds S]
        the reliability suites at soak size, with their figures: every parser fuzzed
        (1,000,000 inputs each by default), the filter's .wasm in the host under fuzzed
        requests, the pipeline through the local stack under injected faults, the
        local gateway under minutes of load with limits changing; suites: fuzz,
        filter-fuzz, faults, load. Prints a report table, writes
        target/soak/report.json, fails on any panic, trap or difference from the
        ground truth
  admin-key --table <name> [--label <text>] [--endpoint <url>]
        the first admin key of a deployment: written to the table (its SHA-256 digest)
        with the environment's AWS credentials and region, printed once on stdout
  dynamodb
        start DynamoDB Local, print its endpoint and keep it up until Ctrl-C
  help  show this text

Emulators are cached in $TOLLGATE_CACHE_DIR, else $XDG_CACHE_HOME/tollgate, else
~/.cache/tollgate.";

fn main() -> ExitCode {
    match parse_args().and_then(|args| dispatch(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            util::exit_code_for(&err)
        }
    }
}

fn parse_args() -> Result<Vec<String>> {
    std::env::args_os()
        .skip(1)
        .map(|arg| {
            arg.into_string()
                .map_err(|arg| anyhow::anyhow!("argument {arg:?} is not valid UTF-8"))
        })
        .collect::<Result<_>>()
        .context("reading the command line")
}

fn dispatch(args: &[String]) -> Result<()> {
    let Some((command, rest)) = args.split_first() else {
        bail!("no command given\n\n{USAGE}");
    };
    match command.as_str() {
        "test" => test::run(&test::Options::parse(rest)?),
        "demo" => demo::run(demo_options(rest)?),
        "bench" => bench::run(rest),
        "soak" => soak::run(&soak::Options::parse(rest)?),
        "admin-key" => admin_key::run(&admin_key::Options::parse(rest)?),
        "dynamodb" => {
            no_arguments(command, rest)?;
            dynamodb::run()
        }
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command {other:?}\n\n{USAGE}"),
    }
}

fn demo_options(rest: &[String]) -> Result<demo::Options> {
    match rest {
        [] => Ok(demo::Options { wait: true }),
        [flag] if flag == "--no-wait" => Ok(demo::Options { wait: false }),
        _ => bail!("`cargo xtask demo` takes only --no-wait, got {rest:?}\n\n{USAGE}"),
    }
}

fn no_arguments(command: &str, rest: &[String]) -> Result<()> {
    if rest.is_empty() {
        Ok(())
    } else {
        bail!("`cargo xtask {command}` takes no arguments, got {rest:?}\n\n{USAGE}")
    }
}
