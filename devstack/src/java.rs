//! Finding a Java runtime recent enough for the JVM-based emulators.

use std::env;
use std::io::ErrorKind;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The oldest Java major version the emulators are run with.
pub(crate) const MIN_JAVA_MAJOR: u32 = 17;

const INSTALL_HINT: &str = "install a Java 17+ runtime (Debian/Ubuntu: \
     `apt-get install openjdk-17-jre-headless`) or point JAVA_HOME at one";

/// The `java` binary to run: `$JAVA_HOME/bin/java` when that exists, else `java` on PATH.
pub(crate) fn java_binary() -> PathBuf {
    if let Some(home) = env::var_os("JAVA_HOME").filter(|home| !home.is_empty()) {
        let candidate = PathBuf::from(home).join("bin").join("java");
        if candidate.is_file() {
            return candidate;
        }
    }
    PathBuf::from("java")
}

/// Checks that `java -version` works and reports at least [`MIN_JAVA_MAJOR`]; returns the
/// binary to use.
pub(crate) fn require_java() -> Result<PathBuf> {
    let java = java_binary();
    let output = match Command::new(&java).arg("-version").output() {
        Ok(output) => output,
        Err(err) if err.kind() == ErrorKind::NotFound => {
            bail!(
                "Java not found ({} is not on PATH): DynamoDB Local needs Java {MIN_JAVA_MAJOR}+; {INSTALL_HINT}",
                java.display()
            )
        }
        Err(err) => {
            return Err(err).with_context(|| format!("running `{} -version`", java.display()));
        }
    };
    // `java -version` prints to stderr; some builds use stdout.
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    if !output.status.success() {
        bail!(
            "`{} -version` failed ({}): {}\n{INSTALL_HINT}",
            java.display(),
            output.status,
            text.trim()
        );
    }
    match parse_major(&text) {
        Some(major) if major >= MIN_JAVA_MAJOR => Ok(java),
        Some(major) => bail!(
            "Java {major} found at {}, but DynamoDB Local needs Java {MIN_JAVA_MAJOR}+; {INSTALL_HINT}",
            java.display()
        ),
        None => bail!(
            "cannot read the Java version from `{} -version`: {}\n{INSTALL_HINT}",
            java.display(),
            text.trim()
        ),
    }
}

/// The major version in `java -version` output: `version "17.0.15"` → 17,
/// `version "1.8.0_422"` → 8, `version "21"` → 21.
fn parse_major(text: &str) -> Option<u32> {
    let line = text.lines().find(|line| line.contains("version \""))?;
    let quoted = line.split('"').nth(1)?;
    let mut parts = quoted.split(['.', '_', '-', '+']);
    let first: u32 = parts.next()?.parse().ok()?;
    if first == 1 {
        parts.next()?.parse().ok()
    } else {
        Some(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_version_lines_yield_their_major_version() {
        let cases = [
            (
                "openjdk version \"17.0.15\" 2025-04-15\nOpenJDK Runtime",
                Some(17),
            ),
            ("java version \"1.8.0_422\"\nJava(TM) SE", Some(8)),
            ("openjdk version \"21\" 2023-09-19", Some(21)),
            ("openjdk version \"22-ea\" 2024-03-19", Some(22)),
            (
                "Picked up JAVA_TOOL_OPTIONS: -Xmx1g\nopenjdk version \"11.0.2\"",
                Some(11),
            ),
            ("something else", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_major(text), expected, "{text}");
        }
    }
}
