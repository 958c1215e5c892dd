//! cfn-lint end to end: installed once (then found cached), and it tells a valid SAM
//! template from a broken one by its exit code, offline.

#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::path::PathBuf;

use tollgate_devstack::{CFN_LINT_PYPI_VERSION, CfnLint, InstallOutcome};

fn template(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "tollgate-cfn-lint-{name}-{}.yaml",
        std::process::id()
    ));
    std::fs::write(&path, text).unwrap();
    path
}

const VALID: &str = "\
AWSTemplateFormatVersion: '2010-09-09'
Transform: AWS::Serverless-2016-10-31
Resources:
  Queue:
    Type: AWS::SQS::Queue
    Properties:
      VisibilityTimeout: 180
Outputs:
  QueueUrl:
    Value: !Ref Queue
";

/// A reference to a resource that does not exist and a property SQS does not have.
const BROKEN: &str = "\
AWSTemplateFormatVersion: '2010-09-09'
Resources:
  Queue:
    Type: AWS::SQS::Queue
    Properties:
      VisibilityTimeoutSeconds: 180
Outputs:
  QueueUrl:
    Value: !Ref Missing
";

#[test]
fn a_second_cfn_lint_ensure_finds_the_virtualenv_cached() {
    let first = CfnLint::ensure().unwrap();
    let second = CfnLint::ensure().unwrap();
    assert_eq!(second.install_outcome(), InstallOutcome::AlreadyCached);
    assert_eq!(second.install_dir(), first.install_dir());
    assert_eq!(second.version(), CFN_LINT_PYPI_VERSION);
}

#[test]
fn cfn_lint_passes_a_valid_template_and_fails_a_broken_one_naming_the_rules() {
    let cfn_lint = CfnLint::ensure().unwrap();
    let valid = template("valid", VALID);
    let broken = template("broken", BROKEN);

    let passed = cfn_lint.command().arg(&valid).output().unwrap();
    let failed = cfn_lint.command().arg(&broken).output().unwrap();

    assert!(
        passed.status.success(),
        "{}",
        String::from_utf8_lossy(&passed.stdout)
    );
    assert!(!failed.status.success());
    let findings = String::from_utf8_lossy(&failed.stdout);
    assert!(findings.contains("E3002"), "unknown property: {findings}");
    assert!(
        findings.contains("E6101"),
        "a Ref to no resource: {findings}"
    );
    std::fs::remove_file(valid).unwrap();
    std::fs::remove_file(broken).unwrap();
}
