//! Issue #19: filuxe's own client lost 16 uploads in 100 (every chunk answered 201,
//! the file never appeared). This test reproduces filuxe's requests exactly, with the
//! library filuxe uses: `tests/filuxe/filuxe_upload.py` follows `Filuxe.upload` and
//! `Filuxe.list` of filuxe's `filuxe_api.py` (and `chunked_reader`, `get_file_time` of
//! its `util.py`), github.com/bjerrep/filuxe at c22cd99: Python `requests`, a new
//! connection per request, `?time=<repr of time.time() or of the file's mtime>&force=
//! True|False`, the `key` header, 1 MiB chunks with `Content-Range`, an empty file as
//! one empty POST. filuxe itself is not packaged, so its requests are reproduced, not
//! its program run.
//!
//! Against a real gateway process: 1,000 files, 40 of 1-3 MiB (filuxe's own 1 MiB
//! chunks, so 2-3 requests each), 10 empty, the rest single-chunk files up to 64 KiB
//! (what keeps a debug build under two minutes while every request is one filuxe
//! sends); every fourth file replaces an older version with `force=True`. Each is
//! downloaded and compared, and the root listing filuxe's forwarder asks for
//! (`/filelist//?recursive=True`) must report each file's time as the very float
//! sent (the forwarder compares them with `!=`). 0 lost.
//!
//! Needs `requests`: `e2e/scripts/cluster.sh tools` installs it in
//! `~/.cache/updraft/clients-venv` (`UPDRAFT_CACHE` moves it), whose python runs the script.

mod store_support;

use store_support::*;

const FILES: usize = 1_000;
const BIG: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_uploads_as_filuxe_sends_them_are_all_there() {
    let work = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(work.path(), "filuxe", free_port()).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/filuxe/filuxe_upload.py");
    let cache = std::env::var_os("UPDRAFT_CACHE").map(std::path::PathBuf::from).unwrap_or_else(|| {
        std::path::PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/updraft")
    });
    let python = cache.join("clients-venv/bin/python");
    assert!(python.exists(), "{} is missing: run `bash e2e/scripts/cluster.sh tools`", python.display());
    let out = tokio::process::Command::new(&python)
        .arg(script)
        .arg(&gateway.url)
        .arg(KEY)
        .arg(work.path().join("client"))
        .arg(FILES.to_string())
        .arg(BIG.to_string())
        .output()
        .await
        .expect("run the clients venv's python");
    let figures = String::from_utf8_lossy(&out.stdout);
    let complaints = String::from_utf8_lossy(&out.stderr);
    println!("FIGURE filuxe-client: {}", figures.trim());
    assert!(
        out.status.success(),
        "filuxe's requests lost files: {figures}\n{}\ngateway log (tail):\n{}",
        complaints.lines().take(40).collect::<Vec<_>>().join("\n"),
        gateway.proc.log_text().lines().rev().take(40).collect::<Vec<_>>().join("\n")
    );
    let figures: serde_json::Value = serde_json::from_str(figures.trim()).unwrap();
    assert_eq!(figures["files"], FILES);
    for zero in ["upload_failed", "lost", "wrong_bytes", "unlisted", "time_differs"] {
        assert_eq!(figures[zero], 0, "{zero}");
    }
    // The served directory holds exactly the files uploaded.
    assert_eq!(files_under(&gateway.dir).len(), FILES);
}
