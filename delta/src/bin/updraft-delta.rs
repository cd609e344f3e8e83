//! `updraft-delta`: build a delta patch from two files, by hand or from a script.
//! The library does the work; this only reads, writes and reports.

use std::process::ExitCode;
use std::time::Instant;
use std::{env, fs};

use sha2::{Digest, Sha256};

const HELP: &str = "\
updraft-delta: build the delta patches Updraft serves

USAGE:
    updraft-delta esp BASE TARGET OUT
        Write to OUT the esp_delta_ota patch turning the firmware BASE into TARGET:
        the 64-byte header (magic, BASE's digest, zeros), then a detools sequential
        patch, heatshrink window 2^8 lookahead 2^7. Check it with
        `detools apply_patch BASE <(tail -c +65 OUT) NEW`. Sizes and build time go
        to stderr.

    updraft-delta apply BASE PATCH OUT
        Apply an esp_delta_ota patch to BASE as a device does, writing the result to
        OUT; refuses a patch whose header names another base image. Prints the
        result's SHA-256.

    updraft-delta digest IMAGE
        Print in hex the SHA-256 a device reports for IMAGE (esp_partition_get_sha256):
        an ESP-IDF app image's appended hash when it verifies, else the file's SHA-256.

    updraft-delta vcdiff SOURCE TARGET OUT
        Write to OUT the VCDIFF (RFC 3284) delta turning SOURCE into TARGET, as the
        gateway serves simplestreams .vcdiff items: no secondary compression, the
        default code table. Check it with `xdelta3 -d -s SOURCE OUT NEW`. Both files
        are read whole into memory. Sizes and build time go to stderr.

    updraft-delta --help | -h
        Print this help.
";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        [] | ["--help" | "-h" | "help"] => {
            print!("{HELP}");
            Ok(())
        }
        ["esp", base, target, out] => esp(base, target, out),
        ["apply", base, patch, out] => apply(base, patch, out),
        ["digest", image] => digest(image),
        ["vcdiff", source, target, out] => vcdiff(source, target, out),
        _ => Err(format!("unexpected arguments: {}\n\n{HELP}", args.join(" "))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("updraft-delta: {message}");
            ExitCode::FAILURE
        }
    }
}

fn read(path: &str) -> Result<Vec<u8>, String> {
    fs::read(path).map_err(|e| format!("reading {path}: {e}"))
}

fn esp(base: &str, target: &str, out: &str) -> Result<(), String> {
    let (base_bytes, target_bytes) = (read(base)?, read(target)?);
    let started = Instant::now();
    let patch = updraft_delta::esp::patch(&base_bytes, &target_bytes);
    let elapsed = started.elapsed();
    fs::write(out, &patch).map_err(|e| format!("writing {out}: {e}"))?;
    report("esp", base_bytes.len(), target_bytes.len(), patch.len(), elapsed.as_secs_f64());
    Ok(())
}

fn vcdiff(source: &str, target: &str, out: &str) -> Result<(), String> {
    let (source_bytes, target_bytes) = (read(source)?, read(target)?);
    let started = Instant::now();
    let mut delta = Vec::new();
    updraft_delta::vcdiff::encode(&source_bytes, &target_bytes, &mut delta).map_err(|e| format!("encoding: {e}"))?;
    let elapsed = started.elapsed();
    fs::write(out, &delta).map_err(|e| format!("writing {out}: {e}"))?;
    report("vcdiff", source_bytes.len(), target_bytes.len(), delta.len(), elapsed.as_secs_f64());
    Ok(())
}

/// One line on stderr: what was built from what, and how long it took.
fn report(what: &str, base: usize, target: usize, delta: usize, seconds: f64) {
    eprintln!(
        "{what}: base {base} B, target {target} B, delta {delta} B ({:.2} % of target), built in {seconds:.3} s",
        100.0 * delta as f64 / target.max(1) as f64,
    );
}

fn apply(base: &str, patch: &str, out: &str) -> Result<(), String> {
    let (base_bytes, patch_bytes) = (read(base)?, read(patch)?);
    // Every byte of the result is in the patch's stream, which heatshrink shrinks at best
    // 64 times (a 16-bit token for 128 bytes).
    let limit = patch_bytes.len().saturating_mul(64);
    let target = updraft_delta::esp::apply(&base_bytes, &patch_bytes, limit).map_err(|e| format!("{patch}: {e}"))?;
    fs::write(out, &target).map_err(|e| format!("writing {out}: {e}"))?;
    println!("{}", hex(&Sha256::digest(&target)));
    Ok(())
}

fn digest(image: &str) -> Result<(), String> {
    let digest = updraft_delta::esp::image_digest(&read(image)?);
    println!("{}", hex(&digest));
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
