//! Each Lambda's release binary: its size as built, after `strip --strip-all`, and zipped
//! as a deployment package (the binary as `bootstrap`, deflated), with each package's
//! share of the largest and the total.
//!
//! Lambda runs these on arm64. When this machine can cross-compile for
//! `aarch64-unknown-linux-gnu` (the rustup target and `aarch64-linux-gnu-gcc`, for the C
//! in ring and aws-lc), the binaries are built for it; otherwise for the host, and the
//! output says so. Each binary is built on its own, `cargo build --release -p <package>
//! --bin <bin>`, as SAM's cargo-lambda builder builds one function at a time (a joint
//! build could unify features across functions and change the sizes).
//!
//! The zip is made with Python's `zipfile` module (deflate), which every machine that runs
//! the demo has; `python3 -m zipfile -c` would store the binary uncompressed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use tollgate_local::FUNCTION_BINARIES;

use crate::util;

const ARM64: &str = "aarch64-unknown-linux-gnu";
const ARM64_CC: &str = "aarch64-linux-gnu-gcc";

/// Writes `bootstrap` from the current directory into the zip named by argv[1], deflated,
/// keeping its file mode (Lambda needs it executable).
const ZIP_SCRIPT: &str = "import sys, zipfile\n\
with zipfile.ZipFile(sys.argv[1], 'w', compression=zipfile.ZIP_DEFLATED) as z:\n    \
z.write('bootstrap')\n";

/// The target the binaries are built for, and how.
struct Target {
    triple: String,
    /// Cross-compiling for arm64 (else the host's own triple).
    arm64: bool,
    strip: &'static str,
}

impl Target {
    fn cargo_args(&self) -> Vec<&str> {
        if self.arm64 {
            vec!["--target", &self.triple]
        } else {
            Vec::new()
        }
    }

    fn configure(&self, command: &mut Command) {
        if self.arm64 {
            command
                .env("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER", ARM64_CC)
                .env("CC_aarch64_unknown_linux_gnu", ARM64_CC)
                .env("AR_aarch64_unknown_linux_gnu", "aarch64-linux-gnu-ar");
        }
    }

    fn release_dir(&self, target_dir: &Path) -> PathBuf {
        if self.arm64 {
            target_dir.join(&self.triple).join("release")
        } else {
            target_dir.join("release")
        }
    }
}

/// Whether `program --version` runs.
fn available(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn output(command: &mut Command) -> Result<String> {
    let out = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// arm64 when the cross compiler is there (adding the rustup target if it is missing),
/// else the host.
fn target() -> Result<Target> {
    if available(ARM64_CC) && available("rustup") {
        let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
        if !installed.lines().any(|l| l.trim() == ARM64) {
            eprintln!("[bench] adding the rustup target {ARM64}");
            util::run(Command::new("rustup").args(["target", "add", ARM64]))?;
        }
        let strip = if available("aarch64-linux-gnu-strip") {
            "aarch64-linux-gnu-strip"
        } else {
            "strip"
        };
        return Ok(Target {
            triple: ARM64.to_owned(),
            arm64: true,
            strip,
        });
    }
    let version = output(Command::new("rustc").arg("-vV"))?;
    let host = version
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .context("`rustc -vV` names no host")?;
    eprintln!(
        "[bench] no {ARM64_CC} here: measuring the host's {host} binaries, not arm64 \
         (on Debian/Ubuntu `apt-get install gcc-aarch64-linux-gnu` enables arm64)"
    );
    Ok(Target {
        triple: host.to_owned(),
        arm64: false,
        strip: "strip",
    })
}

/// One function's figures, in bytes.
struct Sizes {
    bin: &'static str,
    package: String,
    built: u64,
    stripped: u64,
    zipped: u64,
    build_seconds: f64,
}

fn size(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("reading the size of {}", path.display()))?
        .len())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Builds, strips and zips every function binary; prints the table.
pub fn run() -> Result<()> {
    let root = util::repo_root()?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let target = target()?;
    let work = target_dir.join("bench-sizes").join(&target.triple);
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    if !available("python3") {
        bail!("python3 is needed to zip the deployment packages");
    }

    let mut rows = Vec::new();
    for bin in FUNCTION_BINARIES {
        // Every function's package is `tollgate-<bin>` (tollgate-local's FUNCTION_PACKAGES).
        let package = format!("tollgate-{bin}");
        eprintln!(
            "[bench] cargo build --release -p {package} --bin {bin} ({})",
            target.triple
        );
        let started = Instant::now();
        let mut build = util::cargo(&root);
        build
            .args(["build", "--release", "-p", &package, "--bin", bin])
            .args(target.cargo_args());
        target.configure(&mut build);
        util::run(&mut build)?;
        let build_seconds = started.elapsed().as_secs_f64();

        let built_path = target.release_dir(&target_dir).join(bin);
        let built = size(&built_path)?;
        let dir = work.join(bin);
        std::fs::create_dir_all(&dir)?;
        let bootstrap = dir.join("bootstrap");
        std::fs::copy(&built_path, &bootstrap)
            .with_context(|| format!("copying {}", built_path.display()))?;
        output(
            Command::new(target.strip)
                .arg("--strip-all")
                .arg(&bootstrap),
        )?;
        let stripped = size(&bootstrap)?;
        let zip = dir.join(format!("{bin}.zip"));
        if zip.exists() {
            std::fs::remove_file(&zip)?;
        }
        output(
            Command::new("python3")
                .current_dir(&dir)
                .args(["-c", ZIP_SCRIPT])
                .arg(&zip),
        )?;
        let zipped = size(&zip)?;
        rows.push(Sizes {
            bin,
            package,
            built,
            stripped,
            zipped,
            build_seconds,
        });
    }

    let largest = rows.iter().map(|r| r.zipped).max().unwrap_or(1).max(1);
    let arch = if target.arm64 {
        "arm64, as Lambda runs them"
    } else {
        "the host's triple, NOT arm64 (Lambda's)"
    };
    println!(
        "==> Lambda deployment packages, release builds for {} ({arch})",
        target.triple
    );
    println!(
        "    [profile.release]: lto = \"thin\", codegen-units = 1, strip = true (binaries are \
         stripped as built); zip: `bootstrap`, deflate (python3 zipfile)"
    );
    println!(
        "    {:<13} {:<22} {:>12} {:>12} {:>12} {:>9} {:>8} {:>8}",
        "function", "package", "as built", "stripped", "zipped", "zipped", "zip /", "build"
    );
    println!(
        "    {:<13} {:<22} {:>12} {:>12} {:>12} {:>9} {:>8} {:>8}",
        "", "", "bytes", "bytes", "bytes", "MiB", "largest", "s"
    );
    for r in &rows {
        println!(
            "    {:<13} {:<22} {:>12} {:>12} {:>12} {:>9.2} {:>8.2} {:>8.1}",
            r.bin,
            r.package,
            r.built,
            r.stripped,
            r.zipped,
            mib(r.zipped),
            r.zipped as f64 / largest as f64,
            r.build_seconds
        );
    }
    let sum = |f: fn(&Sizes) -> u64| rows.iter().map(f).sum::<u64>();
    let zipped_total = sum(|r| r.zipped);
    println!(
        "    {:<13} {:<22} {:>12} {:>12} {:>12} {:>9.2}",
        "total",
        "",
        sum(|r| r.built),
        sum(|r| r.stripped),
        zipped_total,
        mib(zipped_total)
    );
    println!(
        "    Lambda's documented limits, for context: 50 MB zipped for a direct upload, \
         250 MB unzipped (all layers included)"
    );
    if target.arm64 {
        println!(
            "    (linked by {ARM64_CC}, not by cargo-lambda's zig as `sam build` does: close to, \
             not byte-identical with, the deployed packages)"
        );
    }
    println!("    (packages in {})", work.display());
    Ok(())
}
