//! Builds the XDP relay program (`media-ebpf/xdp`) with aya-build and embeds
//! it: `src/xdp.rs` does `include_bytes!(OUT_DIR/media_xdp.bpf.o)`.
//!
//! The offload is optional and fails open. The program is built only when
//! `bpf-linker` is on `PATH` and the pinned nightly (with `rust-src`) is
//! installed; otherwise this prints a `cargo:warning`, embeds an empty file
//! and the loader reports "XDP program not built into this binary".
//! `GATEWAY_REQUIRE_XDP=1` turns every such fallback into a build failure
//! (CI sets it).
//!
//! Toolchain: aya-build runs `rustup run <toolchain> cargo build
//! --target bpfel-unknown-none -Z build-std=core ...`; we pass
//! `Toolchain::Custom($GATEWAY_BPF_NIGHTLY)`, default [`DEFAULT_NIGHTLY`]
//! (its LLVM must match bpf-linker's: 0.13.0 is built against LLVM 22,
//! a floating `nightly` has moved to LLVM 23).
//!
//! Rebuilds: this script reruns only when the xdp or common sources, this
//! file, or one of the env vars above change (and, after a fallback, when
//! `PATH` changes). After installing the nightly toolchain,
//! `touch media-ebpf/xdp/src/main.rs` (or set `GATEWAY_REQUIRE_XDP=1`) to
//! make it try again.

use std::{
    env,
    ffi::OsStr,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

/// Nightly with LLVM 22 (rustc 1.97) and rust-src, matching bpf-linker 0.13.0.
const DEFAULT_NIGHTLY: &str = "nightly-2026-05-19";
/// Package (and bin target) name of the XDP program.
const XDP_PACKAGE: &str = "media-xdp";
/// Embedded object, under OUT_DIR.
const OBJECT_FILE: &str = "media_xdp.bpf.o";

const ENV_NIGHTLY: &str = "GATEWAY_BPF_NIGHTLY";
const ENV_REQUIRE: &str = "GATEWAY_REQUIRE_XDP";

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let ebpf_dir = manifest_dir
        .parent()
        .expect("media-userspace is inside the workspace")
        .join("media-ebpf");
    let xdp_dir = ebpf_dir.join("xdp");
    let common_dir = ebpf_dir.join("common");

    println!("cargo:rerun-if-changed=build.rs");
    for p in [
        xdp_dir.join("Cargo.toml"),
        xdp_dir.join("Cargo.lock"),
        xdp_dir.join("src"),
        common_dir.join("Cargo.toml"),
        common_dir.join("src"),
    ] {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    println!("cargo:rerun-if-env-changed={ENV_NIGHTLY}");
    println!("cargo:rerun-if-env-changed={ENV_REQUIRE}");

    let require = env::var(ENV_REQUIRE)
        .map(|v| matches!(v.trim(), "1" | "true" | "yes"))
        .unwrap_or(false);
    let toolchain = env::var(ENV_NIGHTLY)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_NIGHTLY.to_owned());
    let object = out_dir.join(OBJECT_FILE);

    match build(&toolchain, &xdp_dir, &out_dir) {
        Ok(built) => {
            fs::copy(&built, &object).unwrap_or_else(|e| {
                panic!("copy {} to {}: {e}", built.display(), object.display())
            });
            println!("cargo:rustc-env=MEDIA_XDP_BUILD={XDP_PACKAGE} built with {toolchain}");
        }
        Err(reason) => {
            if require {
                eprintln!(
                    "error: {ENV_REQUIRE}=1 but the XDP program could not be built: {reason}\n\
                     hint: scripts/setup.sh test installs {toolchain} (rust-src) and bpf-linker"
                );
                std::process::exit(1);
            }
            println!(
                "cargo:warning=XDP offload disabled, program not built: {reason} \
                 (userspace relay only; scripts/setup.sh test installs the toolchain; {ENV_REQUIRE}=1 makes this an error)"
            );
            // Retry when PATH changes (bpf-linker or rustup added). Only
            // in this case: tracking PATH always would rebuild needlessly.
            println!("cargo:rerun-if-env-changed=PATH");
            fs::write(&object, []).unwrap_or_else(|e| panic!("write {}: {e}", object.display()));
            let reason = reason.replace(['\n', '\r'], " ");
            println!("cargo:rustc-env=MEDIA_XDP_BUILD=not built: {reason}");
        }
    }
}

/// Builds the XDP program; returns the object's path or why it could not.
fn build(toolchain: &str, xdp_dir: &Path, out_dir: &Path) -> Result<PathBuf, String> {
    if find_in_path("bpf-linker").is_none() {
        return Err("bpf-linker not found in PATH".into());
    }
    // aya-build selects the toolchain with `rustup run`; without rustup it
    // would silently use the current (stable) one.
    if find_in_path("rustup").is_none() {
        return Err("rustup not found in PATH".into());
    }
    let sysroot = Command::new("rustup")
        .args(["run", toolchain, "rustc", "--print", "sysroot"])
        .env("RUSTUP_AUTO_INSTALL", "0")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .ok_or_else(|| format!("toolchain {toolchain} not installed ({ENV_NIGHTLY} selects it)"))?;
    let rust_src = sysroot.join("lib/rustlib/src/rust/library/core/Cargo.toml");
    if !rust_src.is_file() {
        return Err(format!("toolchain {toolchain} has no rust-src component"));
    }

    // SAFETY: the build script is single-threaded; these only affect the
    // nested cargo that aya-build spawns. Don't let rustup download
    // anything, and keep its "Compiling ..." lines out of our warnings.
    unsafe {
        env::set_var("RUSTUP_AUTO_INSTALL", "0");
        env::set_var("CARGO_TERM_QUIET", "true");
    }
    // aya-build runs `cargo build --package media-xdp` in the current
    // directory: media-ebpf/xdp is its own workspace, so build from there.
    env::set_current_dir(xdp_dir).map_err(|e| format!("cd {}: {e}", xdp_dir.display()))?;

    let xdp_dir_str = xdp_dir.to_str().ok_or("non-UTF-8 path to media-ebpf/xdp")?;
    // Never embed a stale object from an earlier run.
    let built = out_dir.join(XDP_PACKAGE);
    let _ = fs::remove_file(&built);
    aya_build::build_ebpf(
        [aya_build::Package {
            name: XDP_PACKAGE,
            root_dir: xdp_dir_str,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(toolchain),
    )
    .map_err(|e| format!("aya-build failed: {e:#}"))?;

    // aya-build copies each bin to OUT_DIR/<bin name> (and builds nothing
    // when AYA_BUILD_SKIP is set).
    match fs::metadata(&built) {
        Ok(m) if m.len() > 0 => Ok(built),
        _ => Err(format!(
            "aya-build produced no {} (AYA_BUILD_SKIP set?)",
            built.display()
        )),
    }
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .filter(|dir| !dir.as_os_str().is_empty() && dir.as_os_str() != OsStr::new("."))
        .map(|dir| dir.join(program))
        .find(|p| {
            fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}
