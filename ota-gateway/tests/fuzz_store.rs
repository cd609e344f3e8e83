//! Bad input at the artifact store (filuxe's HTTP API), through its real router on a
//! real directory: upload paths (traversal, encoded separators, reserved names, control
//! characters, files where directories should be), upload queries (`time`, `force`,
//! `sha256`), `Content-Range` of chunked uploads, and the paths of downloads, listings
//! and deletes. Nothing may answer 5xx, nothing may land outside the store's directory,
//! and a file is visible only once every byte of it arrived: chunks sent in any order,
//! overlapping or repeated, assemble exactly the file. Each target runs through
//! `e2e::fuzz::check` (`UPDRAFT_FUZZ_SECS` for a long campaign).

mod store_support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request};
use e2e::fuzz;
use ota_gateway::store::{self, Store};
use proptest::prelude::*;
use store_support::{store_config, KEY};
use tower::ServiceExt;

const MAX_UPLOAD: u64 = 1 << 20;

/// One store on a fresh directory (`<top>/store`), shared by every case of a target.
struct Fixture {
    rt: tokio::runtime::Runtime,
    store: Store,
    top: PathBuf,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let top = tempfile::tempdir().unwrap().keep();
        let dir = top.join("store");
        std::fs::create_dir(&dir).unwrap();
        // A file where the fuzzer may ask for a directory, and a directory where it may
        // ask for a file.
        std::fs::write(dir.join("a"), b"a file").unwrap();
        std::fs::create_dir_all(dir.join("d/e")).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let store = rt.block_on(async { Store::open(store_config(&dir, "127.0.0.1:0", MAX_UPLOAD)).unwrap() });
        Fixture { rt, store, top }
    })
}

/// How long one request may take before the store counts as hung.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// Status and body of a request through the store's router; panics (failing the
/// case) when the store does not answer within [`ANSWER_WITHIN`].
fn send(req: Request<Body>) -> (u16, Vec<u8>) {
    let f = fixture();
    send_to(&f.rt, &f.store, req)
}

fn send_to(rt: &tokio::runtime::Runtime, store: &Store, req: Request<Body>) -> (u16, Vec<u8>) {
    let what = format!("{} {}", req.method(), req.uri());
    rt.block_on(async {
        let answer = async {
            let r = store::router(store.clone()).oneshot(req).await.unwrap();
            let status = r.status().as_u16();
            let body = axum::body::to_bytes(r.into_body(), usize::MAX).await.unwrap();
            (status, body.to_vec())
        };
        tokio::time::timeout(ANSWER_WITHIN, answer)
            .await
            .unwrap_or_else(|_| panic!("{what}: the store did not answer within {ANSWER_WITHIN:?}"))
    })
}

/// Everything under `dir`, relative, directories included.
fn tree(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            found.push(path.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            if entry.file_type().unwrap().is_dir() && !path.is_symlink() {
                pending.push(path);
            }
        }
    }
    found.sort();
    found
}

/// A path component as a client might write it, hostile or not.
fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        16 => "[a-z0-9_.-]{1,8}",
        1 => Just(".".to_owned()),
        1 => Just("..".to_owned()),
        1 => Just("".to_owned()),
        1 => Just("%2e%2e".to_owned()),
        1 => Just("%2E.".to_owned()),
        1 => Just("%2f".to_owned()),
        1 => Just("..%2f..".to_owned()),
        1 => Just("%5c".to_owned()),
        1 => Just("%00".to_owned()),
        1 => Just("%252e%252e".to_owned()),
        1 => Just(".updraft".to_owned()),
        1 => Just("a".to_owned()),
        1 => Just("d".to_owned()),
        1 => Just("e".to_owned()),
        1 => Just("%ff%fe".to_owned()),
        1 => Just("caf%C3%A9".to_owned()),
        1 => Just("x".repeat(256)),
        // Beyond PATH_MAX, alone or with the rest of the path.
        1 => Just(vec!["y".repeat(250); 17].join("/")),
        1 => Just(vec!["w".repeat(200); 19].join("/")),
        1 => "%[0-9a-fA-F]{2}",
        1 => "[ -~]{1,6}",
    ]
}

fn store_path() -> impl Strategy<Value = String> {
    (any::<bool>(), prop::collection::vec(component(), 1..5), any::<bool>()).prop_map(|(lead, parts, trail)| {
        let mut p = parts.join("/");
        if lead {
            p.insert(0, '/');
        }
        if trail {
            p.push('/');
        }
        p
    })
}

fn query() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("time=1700000000".to_owned()),
        Just("time=-1".to_owned()),
        Just("time=1e300".to_owned()),
        Just("time=NaN".to_owned()),
        Just("time=inf".to_owned()),
        "time=[0-9.e+-]{0,12}",
        Just("force=True".to_owned()),
        Just("force=maybe".to_owned()),
        "force=[a-zA-Z0-9]{0,5}",
        "sha256=[0-9a-fA-F]{0,66}",
        Just("%".to_owned()),
        Just("&".to_owned()),
        "[a-z=&%0-9]{0,10}",
    ];
    prop::collection::vec(piece, 0..4).prop_map(|p| p.join("&"))
}

/// Uploads, downloads, listings and deletes of any path, with any query: never 5xx,
/// nothing outside the store's directory, and an accepted upload reads back whole.
#[test]
fn any_path_and_query_never_fails_the_store_or_escapes_it() {
    let query = prop_oneof![2 => Just(String::new()), 1 => Just("force=True".to_owned()), 3 => query()];
    let strategy = (store_path(), query, prop::collection::vec(any::<u8>(), 0..64), any::<bool>());
    let accepted = AtomicU64::new(0);
    fuzz::check("store-paths", strategy, |(path, query, body, keyed)| {
        let f = fixture();
        let uri = format!("/upload/{path}?{query}");
        let mut req = Request::post(&uri);
        if keyed {
            req = req.header("key", KEY);
        }
        let Ok(req) = req.body(Body::from(body.clone())) else { return Ok(()) };
        let (status, answer) = send(req);
        prop_assert!(status < 500, "POST {} answered {}: {}", uri, status, String::from_utf8_lossy(&answer));
        // Without the key: 401, or 404 when no route matched (an empty path).
        prop_assert!(keyed || [401, 404].contains(&status), "POST {} without the key answered {}", uri, status);
        if status == 201 {
            accepted.fetch_add(1, Ordering::Relaxed);
            let (got, bytes) = send(Request::get(format!("/download/{path}")).body(Body::empty()).unwrap());
            prop_assert_eq!(got, 200, "{} accepted but not served", path);
            prop_assert!(bytes == body, "{} served other bytes", path);
        }
        for route in ["download", "filelist", "delete"] {
            let Ok(req) =
                Request::get(format!("/{route}/{path}?recursive=true")).header("key", KEY).body(Body::empty())
            else {
                continue;
            };
            let (status, answer) = send(req);
            prop_assert!(status < 500, "{} {} answered {}: {}", route, path, status, String::from_utf8_lossy(&answer));
        }
        // The store's state lives beside its directory (`.store.updraft`).
        let outside = tree(&f.top).into_iter().filter(|p| !p.starts_with("store") && !p.starts_with(".store.updraft"));
        prop_assert_eq!(outside.count(), 0, "wrote outside the store");
        Ok(())
    });
    println!("FIGURE store-paths: {} uploads accepted (and read back whole)", accepted.load(Ordering::Relaxed));
}

/// Any Content-Range text on an upload: 201 only for a well-formed range whose body
/// has exactly its length, otherwise a 4xx; never 5xx.
#[test]
fn any_content_range_gets_a_4xx_or_is_well_formed() {
    let value = prop_oneof![
        "[ -~]{0,40}",
        "bytes ?[0-9]{0,21}-[0-9]{0,21}/[0-9*]{0,21}",
        (0u64..80, 0u64..80, 0u64..80).prop_map(|(a, b, s)| format!("bytes {a}-{b}/{s}")),
        (0u64..80, 0u64..80).prop_map(|(a, b)| format!("bytes {a}-{b}/*")),
        Just("bytes 0-18446744073709551615/18446744073709551616".to_owned()),
        Just(format!("bytes 0-{}/{}", MAX_UPLOAD, MAX_UPLOAD + 1)),
    ];
    // Few names, so the partials this leaves stay few (see the ignored test at the end).
    let strategy = (value, prop::collection::vec(any::<u8>(), 0..80), 0u32..8);
    fuzz::check("store-content-range", strategy, |(value, body, n)| {
        let Ok(req) = Request::post(format!("/upload/ranges/f{n}?force=True"))
            .header("key", KEY)
            .header(header::CONTENT_RANGE, &value)
            .body(Body::from(body.clone()))
        else {
            return Ok(());
        };
        let (status, answer) = send(req);
        prop_assert!(
            status < 500,
            "Content-Range {:?} answered {}: {}",
            value,
            status,
            String::from_utf8_lossy(&answer)
        );
        if status == 201 {
            let parsed = value.trim().strip_prefix("bytes ").and_then(|s| {
                let (span, size) = s.split_once('/')?;
                let (a, b) = span.split_once('-')?;
                Some((a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?, size.trim().parse::<u64>().ok()?))
            });
            let Some((a, b, size)) = parsed else { return Err(TestCaseError::fail(format!("accepted {value:?}"))) };
            prop_assert!(a <= b && b < size && size <= MAX_UPLOAD, "accepted {:?}", value);
            prop_assert_eq!(body.len() as u64, b - a + 1, "accepted a body of the wrong length for {:?}", value);
        }
        Ok(())
    });
}

/// The chunks (inclusive byte spans) of a file of `size` bytes cut at `cuts`, plus up
/// to `max_repeats - 1` of them again (a client retrying), in any order.
fn chunk_order(
    size: usize,
    cuts: &[prop::sample::Index],
    max_repeats: usize,
) -> impl Strategy<Value = Vec<(usize, usize)>> {
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c.index(size)).chain([0, size]).collect();
    bounds.sort_unstable();
    bounds.dedup();
    let spans: Vec<(usize, usize)> = bounds.windows(2).map(|w| (w[0], w[1] - 1)).collect();
    let repeats = prop::collection::vec(prop::sample::select(spans.clone()), 0..max_repeats);
    (Just(spans), repeats)
        .prop_map(|(mut s, r)| {
            s.extend(r);
            s
        })
        .prop_shuffle()
}

/// Chunks of a file sent in any order, some sent twice (a client retrying): the file
/// is absent until every byte arrived, then exactly the file.
#[test]
fn chunks_in_any_order_assemble_exactly_the_file() {
    let strategy = (1usize..3000, prop::collection::vec(any::<prop::sample::Index>(), 0..10), any::<u64>())
        .prop_flat_map(|(size, cuts, seed)| {
            (Just(store_support::pseudo_random(size, seed)), chunk_order(size, &cuts, 3), Just(seed))
        });
    fuzz::check("store-chunk-order", strategy, |(data, spans, seed)| {
        let f = fixture();
        static CASE: AtomicU64 = AtomicU64::new(0);
        let name = format!("chunks/{seed}-{}-{}", data.len(), CASE.fetch_add(1, Ordering::Relaxed));
        let size = data.len();
        let mut done = vec![false; size];
        for (i, &(a, b)) in spans.iter().enumerate() {
            let req = Request::post(format!("/upload/{name}?force=True"))
                .header("key", KEY)
                .header(header::CONTENT_RANGE, format!("bytes {a}-{b}/{size}"))
                .body(Body::from(data[a..=b].to_vec()))
                .unwrap();
            let (status, answer) = send(req);
            prop_assert_eq!(status, 201, "chunk {} ({}-{}): {}", i, a, b, String::from_utf8_lossy(&answer));
            done[a..=b].iter_mut().for_each(|d| *d = true);
            let (got, bytes) = send(Request::get(format!("/download/{name}")).body(Body::empty()).unwrap());
            if done.iter().all(|d| *d) {
                prop_assert_eq!(got, 200, "complete after chunk {} but not served", i);
                prop_assert!(bytes == data, "assembled other bytes");
            } else {
                prop_assert_eq!(got, 404, "visible after chunk {} before every byte arrived", i);
            }
        }
        let _ = std::fs::remove_file(f.top.join("store").join(&name));
        Ok(())
    });
}

/// Found by `store-content-range` in a long campaign: every chunked upload whose first
/// chunk starts at byte 0 keeps a blocking thread for its SHA-256 (`HashPipe` in
/// `store/upload.rs`) until it completes, so 512 unfinished uploads (clients that gave
/// up, or one client with the write key) take tokio's whole blocking pool, and every
/// later upload, download or listing of the process waited forever. Now at most 32
/// uploads hash beside their writes; the others are hashed by re-reading at commit.
#[test]
fn unfinished_chunked_uploads_do_not_stop_the_store() {
    let top = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let store =
        rt.block_on(async { Store::open(store_config(&top.path().join("store"), "127.0.0.1:0", MAX_UPLOAD)).unwrap() });
    for n in 0..600 {
        let req = Request::post(format!("/upload/abandoned/f{n}"))
            .header("key", KEY)
            .header(header::CONTENT_RANGE, "bytes 0-0/2")
            .body(Body::from(vec![1u8]))
            .unwrap();
        assert_eq!(send_to(&rt, &store, req).0, 201, "chunk 0 of upload {n}");
    }
    let req = Request::post("/upload/whole").header("key", KEY).body(Body::from(vec![7u8; 100])).unwrap();
    assert_eq!(send_to(&rt, &store, req).0, 201, "a whole upload after 600 unfinished ones");
    let (status, body) = send_to(&rt, &store, Request::get("/download/whole").body(Body::empty()).unwrap());
    assert_eq!((status, body), (200, vec![7u8; 100]));
}

/// Found by `store-chunk-order` in a 10-minute run ("Too many open files" after ~39,000
/// cases, each leaving an upload unfinished): every unfinished upload kept its partial's
/// data file and range log open until the sweep, so abandoned uploads exhausted the
/// process's descriptors and every upload and download then failed. Now at most 256
/// uploads stay open between chunks; a forgotten one still completes from disk.
#[test]
fn abandoned_uploads_do_not_hold_descriptors() {
    let top = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let store =
        rt.block_on(async { Store::open(store_config(&top.path().join("store"), "127.0.0.1:0", MAX_UPLOAD)).unwrap() });
    let chunk = |name: &str, range: &str, byte: u8| {
        Request::post(format!("/upload/{name}"))
            .header("key", KEY)
            .header(header::CONTENT_RANGE, range)
            .body(Body::from(vec![byte]))
            .unwrap()
    };
    const ABANDONED: usize = 2_000;
    for n in 0..ABANDONED {
        // The second byte first: no upload is hashed beside its writes.
        assert_eq!(send_to(&rt, &store, chunk(&format!("abandoned/f{n}"), "bytes 1-1/2", 1)).0, 201, "upload {n}");
    }
    let root = top.path().canonicalize().unwrap();
    let open_under_store = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target.starts_with(&root)))
        .count();
    println!("FIGURE abandoned-uploads: {open_under_store} descriptors open under the store after {ABANDONED} unfinished uploads");
    assert!(open_under_store <= 2 * 256 + 8, "{open_under_store} descriptors held by {ABANDONED} unfinished uploads");
    // The first of them was forgotten long ago: its last byte completes it from disk.
    assert_eq!(send_to(&rt, &store, chunk("abandoned/f0", "bytes 0-0/2", 9)).0, 201);
    let (status, body) = send_to(&rt, &store, Request::get("/download/abandoned/f0").body(Body::empty()).unwrap());
    assert_eq!((status, body), (200, vec![9u8, 1]));
}

/// `repr(x)` of a Python float: the shortest digits that read back as `x`, in fixed
/// notation for decimal exponents -4 to 15 (`1796555001.0810335`, `1.0`), else
/// scientific (`1e+22`, `1.5e-07`). What filuxe's client puts in `?time=`.
fn python_repr(x: f64) -> String {
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').expect("LowerExp has an exponent");
    let exp: i32 = exp.parse().expect("an exponent");
    if (-4..16).contains(&exp) {
        let fixed = format!("{x}");
        if fixed.contains('.') {
            fixed
        } else {
            format!("{fixed}.0")
        }
    } else {
        format!("{mantissa}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    }
}

#[test]
fn python_repr_is_pythons() {
    for (x, repr) in [
        (1796555001.0810335, "1796555001.0810335"),
        (1.0, "1.0"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (1.5e-7, "1.5e-07"),
        (1e16, "1e+16"),
        (123456789012345.6, "123456789012345.6"),
        (-2.5, "-2.5"),
    ] {
        assert_eq!(python_repr(x), repr);
    }
}

/// The time of an upload as a client may send it: Python's `time.time()` (its
/// `repr`), whole seconds, none, or any finite float (most of which are refused).
fn upload_time() -> impl Strategy<Value = Option<f64>> {
    prop_oneof![
        4 => (1.0e9f64..2.2e9).prop_map(Some),
        1 => (0u32..u32::MAX).prop_map(|s| Some(f64::from(s))),
        1 => Just(None),
        1 => any::<f64>().prop_filter("finite", |t| t.is_finite()).prop_map(Some),
        1 => (0.0f64..1e11).prop_map(Some),
    ]
}

/// Issue #19: filuxe's client lost about 1 upload in 10 (every chunk answered 201,
/// the file never appeared) because the partial's record kept the float `time` and
/// compared it, read back inexactly, with the request's. Any finite time (sent as
/// Python's `repr`), any size, chunks in any order (some repeated), with or without
/// `force` over an existing file: when every chunk was answered 201, the file is
/// there byte for byte, and a listing reports the very float that was sent. Times
/// inside the store's range are never refused.
#[test]
fn every_upload_answered_201_is_there_byte_for_byte() {
    let strategy = (1usize..3000, prop::collection::vec(any::<prop::sample::Index>(), 0..6), any::<u64>())
        .prop_flat_map(|(size, cuts, seed)| {
            let data = store_support::pseudo_random(size, seed);
            (Just(data), chunk_order(size, &cuts, 2), upload_time(), any::<bool>(), any::<bool>())
        });
    let committed = AtomicU64::new(0);
    fuzz::check("store-float-times", strategy, |(data, spans, time, exists, force)| {
        let f = fixture();
        static CASE: AtomicU64 = AtomicU64::new(0);
        let name = format!("times/{}-{}", data.len(), CASE.fetch_add(1, Ordering::Relaxed));
        let force = force || exists;
        if exists {
            let old = Request::post(format!("/upload/{name}")).header("key", KEY).body(Body::from(vec![0u8; 10]));
            prop_assert_eq!(send(old.unwrap()).0, 201);
        }
        let query = match time {
            Some(t) => format!("time={}&force={}", python_repr(t), if force { "True" } else { "False" }),
            None => format!("force={}", if force { "True" } else { "False" }),
        };
        let accepted = time.is_none_or(|t| (0.0..1e11).contains(&t));
        let size = data.len();
        let mut done = vec![false; size];
        for (i, &(a, b)) in spans.iter().enumerate() {
            // The client is done once every byte was sent (a repeat after that would
            // be a new upload over an existing file).
            if done.iter().all(|d| *d) {
                break;
            }
            done[a..=b].iter_mut().for_each(|d| *d = true);
            let req = Request::post(format!("/upload/{name}?{query}"))
                .header("key", KEY)
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .header(header::CONTENT_RANGE, format!("bytes {a}-{b}/{size}"))
                .body(Body::from(data[a..=b].to_vec()))
                .unwrap();
            let (status, answer) = send(req);
            if status != 201 {
                // filuxe's client stops at the first answer other than 201.
                prop_assert!(
                    !accepted,
                    "chunk {} ({}-{}) of {}: {} {}",
                    i,
                    a,
                    b,
                    query,
                    status,
                    String::from_utf8_lossy(&answer)
                );
                prop_assert!((400..500).contains(&status), "{}: {}", query, status);
                return Ok(());
            }
        }
        committed.fetch_add(1, Ordering::Relaxed);
        let (got, bytes) = send(Request::get(format!("/download/{name}")).body(Body::empty()).unwrap());
        prop_assert_eq!(got, 200, "every chunk of {} got 201 ({}), the file is not there", name, query);
        prop_assert!(bytes == data, "{} holds other bytes ({})", name, query);
        // Exact for any time after April 1970 (2^23 s) a filesystem holds (all do up to
        // 2106; ext4 clamps past 2446).
        if let Some(t) = time.filter(|t| (8_388_608.0..4_294_967_296.0).contains(t)) {
            let (status, listing) = send(Request::get("/filelist/times").body(Body::empty()).unwrap());
            prop_assert_eq!(status, 200);
            let listing: serde_json::Value = serde_json::from_slice(&listing).unwrap();
            let file = name.strip_prefix("times/").unwrap();
            let listed = listing["filelist"]["times"][file]["time"].as_f64();
            prop_assert_eq!(
                listed.map(f64::to_bits),
                Some(t.to_bits()),
                "{} listed {:?}, sent {}",
                name,
                listed,
                query
            );
        }
        let _ = std::fs::remove_file(f.top.join("store").join(&name));
        Ok(())
    });
    println!(
        "FIGURE store-float-times: {} uploads answered 201 on every chunk, each there byte for byte",
        committed.load(Ordering::Relaxed)
    );
}
