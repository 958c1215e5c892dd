//! `dynamodb_endpoint_for_tests`: one endpoint per test process, and it answers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use tollgate_devstack::dynamodb_endpoint_for_tests;

#[test]
fn the_test_endpoint_answers_and_is_shared_by_every_caller_in_the_process() {
    let endpoint = dynamodb_endpoint_for_tests();
    let again = std::thread::spawn(dynamodb_endpoint_for_tests)
        .join()
        .unwrap();
    assert_eq!(again, endpoint);

    let authority = endpoint.strip_prefix("http://").unwrap();
    let mut stream = TcpStream::connect(authority).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "POST / HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\
         X-Amz-Target: DynamoDB_20120810.ListTables\r\n\
         Content-Type: application/x-amz-json-1.0\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=x/20260101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=x\r\n\
         Content-Length: 2\r\n\r\n{{}}"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}
