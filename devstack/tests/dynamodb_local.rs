//! DynamoDB Local end to end: install (cached), start, answer, stop, watchdog.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tollgate_devstack::{DynamoDbLocal, InstallOutcome};

const WATCHDOG_HELPER_ENV: &str = "TOLLGATE_DEVSTACK_WATCHDOG_HELPER";

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// A raw `ListTables`, independent of the crate's own probe.
fn list_tables(port: u16) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr(port), Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let body = "{}";
    write!(
        stream,
        "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         X-Amz-Target: DynamoDB_20120810.ListTables\r\n\
         Content-Type: application/x-amz-json-1.0\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=x/20260101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=x\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

fn port_is_closed(port: u16) -> bool {
    TcpStream::connect_timeout(&addr(port), Duration::from_millis(500)).is_err()
}

/// Alive and not a zombie.
fn process_is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn eventually(within: Duration, condition: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    condition()
}

#[test]
fn a_started_emulator_answers_list_tables_and_releases_its_port_when_dropped() {
    let dynamodb = DynamoDbLocal::ensure().unwrap();
    let server = dynamodb.start().unwrap();
    let port = server.port();
    let pid = server.pid();
    assert_eq!(server.endpoint(), format!("http://127.0.0.1:{port}"));

    let response = list_tables(port).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"TableNames\""), "{response}");

    drop(server);
    assert!(
        port_is_closed(port),
        "port {port} still accepts connections"
    );
    assert!(!process_is_running(pid), "JVM {pid} still running");
}

#[test]
fn a_second_ensure_finds_the_install_cached_and_changes_nothing() {
    let first = DynamoDbLocal::ensure().unwrap();
    let marker = first.install_dir().join("tollgate-install.txt");
    let modified = std::fs::metadata(&marker).unwrap().modified().unwrap();

    let started = Instant::now();
    let second = DynamoDbLocal::ensure().unwrap();
    let took = started.elapsed();

    assert_eq!(second.install_outcome(), InstallOutcome::AlreadyCached);
    assert_eq!(second.install_dir(), first.install_dir());
    assert_eq!(second.version(), first.version());
    assert!(second.version().starts_with("1."), "{}", second.version());
    assert_eq!(
        std::fs::metadata(&marker).unwrap().modified().unwrap(),
        modified
    );
    // Only `java -version` runs: no npm, no extraction.
    assert!(
        took < Duration::from_secs(10),
        "cached ensure took {took:?}"
    );
}

#[test]
fn an_emulator_dies_with_the_process_that_started_it() {
    // Run the helper below in a child process, SIGKILL that child, and expect its
    // emulator to go too.
    let exe = std::env::current_exe().unwrap();
    let mut owner = Command::new(exe)
        .args([
            "--exact",
            "watchdog_helper_starts_an_emulator_and_sleeps",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WATCHDOG_HELPER_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = owner.stdout.take().unwrap();
    let line = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        // libtest may have printed `test … ... ` on the same line before it.
        .find_map(|line| line.split_once("HELPER ").map(|(_, rest)| rest.to_owned()))
        .expect("the helper reports its emulator");
    let fields: Vec<u32> = line
        .split_whitespace()
        .map(|field| field.split_once('=').unwrap().1.parse().unwrap())
        .collect();
    let (pid, port) = (fields[0], u16::try_from(fields[1]).unwrap());
    assert!(list_tables(port).unwrap().starts_with("HTTP/1.1 200"));

    owner.kill().unwrap(); // SIGKILL: no destructors run in the owner
    owner.wait().unwrap();

    assert!(
        eventually(Duration::from_secs(10), || port_is_closed(port)),
        "the orphaned emulator still listens on {port}"
    );
    assert!(
        eventually(Duration::from_secs(10), || !process_is_running(pid)),
        "the orphaned JVM {pid} is still running"
    );
}

/// Not a test by itself: the owner process for the watchdog test above.
#[test]
#[ignore = "helper process for an_emulator_dies_with_the_process_that_started_it"]
fn watchdog_helper_starts_an_emulator_and_sleeps() {
    if std::env::var_os(WATCHDOG_HELPER_ENV).is_none() {
        return;
    }
    let server = DynamoDbLocal::ensure().unwrap().start().unwrap();
    println!("HELPER pid={} port={}", server.pid(), server.port());
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(120));
    drop(server);
}
