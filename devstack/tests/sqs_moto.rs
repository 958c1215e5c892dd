//! The SQS emulator (moto) end to end: install (cached), start, answer, stop.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use tollgate_devstack::{InstallOutcome, SqsServer, sqs_endpoint_for_tests};

/// One awsJson1_0 SQS call, the protocol aws-sdk-sqs speaks.
fn sqs_json(authority: &str, target: &str, body: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(authority)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "POST / HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\
         X-Amz-Target: AmazonSQS.{target}\r\n\
         Content-Type: application/x-amz-json-1.0\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=x/20260101/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=x\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

#[test]
fn a_started_sqs_emulator_creates_queues_and_releases_its_port_when_dropped() {
    let server = SqsServer::ensure().unwrap().start().unwrap();
    let port = server.port();
    let authority = format!("127.0.0.1:{port}");
    assert_eq!(server.endpoint(), format!("http://{authority}"));

    let created = sqs_json(&authority, "CreateQueue", r#"{"QueueName":"usage"}"#).unwrap();
    assert!(created.starts_with("HTTP/1.1 200"), "{created}");
    assert!(created.contains("/usage"), "{created}");
    let listed = sqs_json(&authority, "ListQueues", "{}").unwrap();
    assert!(listed.contains("/usage"), "{listed}");

    drop(server);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    assert!(TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err());
}

#[test]
fn a_second_sqs_ensure_finds_the_virtualenv_cached() {
    let first = SqsServer::ensure().unwrap();
    let second = SqsServer::ensure().unwrap();
    assert_eq!(second.install_outcome(), InstallOutcome::AlreadyCached);
    assert_eq!(second.install_dir(), first.install_dir());
    assert_eq!(second.version(), tollgate_devstack::MOTO_PYPI_VERSION);
}

#[test]
fn the_sqs_test_endpoint_answers() {
    let endpoint = sqs_endpoint_for_tests();
    let authority = endpoint.strip_prefix("http://").unwrap();
    let listed = sqs_json(authority, "ListQueues", "{}").unwrap();
    assert!(listed.starts_with("HTTP/1.1 200"), "{listed}");
}
