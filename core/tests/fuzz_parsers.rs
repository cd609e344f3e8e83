//! Property tests of every core parser that takes outside input: `gateway.yaml`, docker
//! `config.json`, OCI manifests and image indexes (and the layer/manifest choice made
//! from them), version tags, ranges and durations. No input may panic; valid inputs
//! must give the answer a reader of the format expects. Image metadata tarballs
//! (`image_metadata::read_metadata_yaml`): damaged xz/gzip/tar streams, real or
//! otherwise, fail cleanly and a valid one gives its product. Each target runs through
//! `e2e::fuzz::check`: proptest's default case count under `cargo test`,
//! `UPDRAFT_FUZZ_SECS=600` seconds per target by hand (`e2e/scripts/fuzz.sh`).

use std::collections::BTreeMap;

use base64::Engine;
use e2e::fuzz;
use oci_client::manifest::{OciImageIndex, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use proptest::prelude::*;
use updraft_core::config::{ArtifactConfig, GatewayConfig};
use updraft_core::image_metadata::read_metadata_yaml;
use updraft_core::oci::{auth_from_docker_config, select_layer, select_manifest};
use updraft_core::simplestreams::ProductKey;
use updraft_core::version::{parse_duration, parse_range, parse_tag};

const VALID_CONFIG: &str = r#"
version: 1
listen: 127.0.0.1:8080
cache: {dir: /tmp/c, maxBytes: 1000}
channels:
  - name: esp32
    device: esp32-dev
    source: {registry: "r:5000", repository: fw/esp32, insecure: true}
    artifact: {unpack: tar, path: fw/app.bin, mediaType: application/x-tar}
    current: {version: 1.0.0, tag: v1.0.0, digest: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}
    rollout: 50
  - name: stm32
    source: {registry: ghcr.io, repository: acme/stm32}
    policy: {range: "^1", interval: 5m}
"#;

/// Text that looks like YAML or JSON: brackets, colons, quotes, anchors, tags.
fn yamlish() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just("\n".to_owned()),
            Just(": ".to_owned()),
            Just("- ".to_owned()),
            Just("{".to_owned()),
            Just("}".to_owned()),
            Just("[".to_owned()),
            Just("]".to_owned()),
            Just("&a ".to_owned()),
            Just("*a".to_owned()),
            Just("!!binary ".to_owned()),
            Just("channels".to_owned()),
            Just("version: 99999999999999999999".to_owned()),
            "[a-zA-Z0-9_ .\"'-]{0,12}",
        ],
        0..60,
    )
    .prop_map(|parts| parts.concat())
}

#[test]
fn config_bytes_never_panic() {
    fuzz::check("config-bytes", prop::collection::vec(any::<u8>(), 0..2048), |bytes| {
        if let Ok(c) = GatewayConfig::parse(&bytes) {
            let _ = c.validate();
        }
        Ok(())
    });
}

#[test]
fn config_yamlish_never_panics() {
    fuzz::check("config-yamlish", yamlish(), |text| {
        if let Ok(c) = GatewayConfig::parse(text.as_bytes()) {
            let _ = c.validate();
        }
        Ok(())
    });
}

#[test]
fn config_mutations_never_panic_and_valid_ones_round_trip() {
    fuzz::check("config-mutations", fuzz::mutated(VALID_CONFIG), |text| {
        if let Ok(c) = GatewayConfig::parse(text.as_bytes()) {
            if c.validate().is_ok() {
                let again = GatewayConfig::parse(c.to_yaml().as_bytes()).expect("what we write, we read");
                prop_assert_eq!(again, c);
            }
        }
        Ok(())
    });
}

#[test]
fn docker_config_never_panics() {
    let text = prop_oneof![any::<String>(), fuzz::mutated(r#"{"auths":{"r:5000":{"auth":"dTpw"}}}"#)];
    fuzz::check("docker-config", (text, "[a-z0-9.:/]{0,20}"), |(text, registry)| {
        let _ = auth_from_docker_config(&text, &registry);
        Ok(())
    });
}

#[test]
fn docker_config_auth_decodes() {
    fuzz::check("docker-config-auth", ("[^:\u{0}]{0,16}", any::<String>(), 0u8..3), |(user, pass, key_form)| {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        let key = match key_form {
            0 => "r.example:5000".to_owned(),
            1 => "https://r.example:5000/v1/".to_owned(),
            _ => "R.EXAMPLE:5000".to_owned(),
        };
        let text = serde_json::json!({"auths": {key: {"auth": encoded}}}).to_string();
        let auth = auth_from_docker_config(&text, "r.example:5000").unwrap();
        prop_assert!(matches!(auth, RegistryAuth::Basic(u, p) if u == user && p == pass));
        let other = auth_from_docker_config(&text, "elsewhere.example").unwrap();
        prop_assert!(matches!(other, RegistryAuth::Anonymous));
        Ok(())
    });
}

#[test]
fn manifest_layer_choice() {
    let strategy = (
        prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 0..5),
        prop::option::of(prop::sample::select(vec!["a", "b", "x"])),
        any::<bool>(),
    );
    fuzz::check("manifest-layer-choice", strategy, |(types, wanted, junk)| {
        let layers: Vec<_> = types
            .iter()
            .enumerate()
            .map(|(i, t)| serde_json::json!({"mediaType": t, "digest": format!("sha256:{i:064x}"), "size": i}))
            .collect();
        let mut value = serde_json::json!({"schemaVersion": 2, "config": {"mediaType": "c", "digest": "sha256:00", "size": 2}, "layers": layers});
        if junk {
            value["layers"] = serde_json::json!([{"mediaType": 7}]);
        }
        let Ok(manifest) = serde_json::from_value::<OciImageManifest>(value) else { return Ok(()) };
        let artifact = ArtifactConfig { media_type: wanted.map(str::to_owned), ..Default::default() };
        let candidates = types.iter().filter(|t| wanted.is_none_or(|w| w == **t)).count();
        let chosen = select_layer(&manifest, &artifact);
        prop_assert_eq!(chosen.is_ok(), candidates == 1, "{:?}", chosen.err().map(|e| e.to_string()));
        if let Ok(layer) = chosen {
            prop_assert!(wanted.is_none_or(|w| layer.media_type == w));
        }
        Ok(())
    });
}

#[test]
fn manifest_json_never_panics() {
    let text = prop_oneof![
        any::<String>(),
        fuzz::mutated(
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"a","digest":"sha256:00","size":2},"layers":[{"mediaType":"b","digest":"sha256:01","size":3}]}"#
        ),
        fuzz::mutated(
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:00","size":2,"platform":{"os":"linux","architecture":"arm","variant":"v7"},"annotations":{"board":"s3"}}]}"#
        ),
    ];
    fuzz::check("oci-manifest-json", text, |text| {
        if let Ok(m) = serde_json::from_str::<OciImageManifest>(&text) {
            let _ = select_layer(&m, &ArtifactConfig::default());
        }
        if let Ok(i) = serde_json::from_str::<OciImageIndex>(&text) {
            let _ = select_manifest(&i, &ArtifactConfig::default());
            let artifact = ArtifactConfig { platform: Some("linux/arm/v7".into()), ..Default::default() };
            let _ = select_manifest(&i, &artifact);
        }
        Ok(())
    });
}

#[test]
fn index_manifest_choice() {
    let entry = (
        prop::sample::select(vec!["linux", "rtos"]),
        prop::sample::select(vec!["arm", "arm64"]),
        prop::option::of(prop::sample::select(vec!["v7", "v8"])),
        prop::option::of(prop::sample::select(vec!["s3", "c3"])),
    );
    let strategy = (
        prop::collection::vec(entry, 0..5),
        prop::option::of(prop::sample::select(vec!["linux/arm", "rtos/arm64", "linux/arm/v7", "linux"])),
        prop::option::of(prop::sample::select(vec!["s3", "c3"])),
    );
    fuzz::check("oci-index-choice", strategy, |(entries, platform, board)| {
        let manifests: Vec<_> = entries
            .iter()
            .enumerate()
            .map(|(i, (os, arch, variant, b))| {
                let mut p = serde_json::json!({"os": os, "architecture": arch});
                if let Some(v) = variant {
                    p["variant"] = serde_json::json!(v);
                }
                let mut e = serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{i:064x}"), "size": 10, "platform": p});
                if let Some(b) = b {
                    e["annotations"] = serde_json::json!({"board": b});
                }
                e
            })
            .collect();
        let index: OciImageIndex =
            serde_json::from_value(serde_json::json!({"schemaVersion": 2, "manifests": manifests})).unwrap();
        let mut annotations = BTreeMap::new();
        if let Some(b) = board {
            annotations.insert("board".to_owned(), b.to_owned());
        }
        let artifact = ArtifactConfig {
            platform: platform.map(str::to_owned),
            annotations: annotations.into_iter().collect(),
            ..Default::default()
        };
        let expected = entries
            .iter()
            .filter(|(os, arch, variant, b)| {
                let platform_ok = platform.is_none_or(|p| {
                    let mut parts = p.split('/');
                    let (o, a, v) = (parts.next(), parts.next(), parts.next());
                    o == Some(*os) && a == Some(*arch) && v.is_none_or(|v| *variant == Some(v))
                });
                platform_ok && board.is_none_or(|want| *b == Some(want))
            })
            .count();
        prop_assert_eq!(select_manifest(&index, &artifact).is_ok(), expected == 1);
        Ok(())
    });
}

#[test]
fn version_parsers_never_panic() {
    fuzz::check("version-text", any::<String>(), |s| {
        let _ = parse_range(&s);
        let _ = parse_tag(&s, true);
        let _ = parse_tag(&s, false);
        let _ = parse_duration(&s);
        Ok(())
    });
}

#[test]
fn durations_never_panic() {
    let parts = prop::collection::vec(("[0-9]{1,20}", prop::sample::select(vec!["s", "m", "h", "d", "x", ""])), 0..4);
    fuzz::check("durations", parts, |parts| {
        let text: String = parts.iter().map(|(n, u)| format!("{n}{u}")).collect();
        let _ = parse_duration(&text);
        Ok(())
    });
}

#[test]
fn tags_parse_as_semver() {
    let strategy =
        (0u64..1000, 0u64..1000, 0u64..1000, prop::option::of("[a-z]{1,5}\\.(0|[1-9][0-9]{0,2})"), any::<bool>());
    fuzz::check("semver-tags", strategy, |(major, minor, patch, pre, v)| {
        let plain = match &pre {
            Some(p) => format!("{major}.{minor}.{patch}-{p}"),
            None => format!("{major}.{minor}.{patch}"),
        };
        let tag = if v { format!("v{plain}") } else { plain.clone() };
        let parsed = parse_tag(&tag, true).expect("a semver tag parses");
        prop_assert_eq!(parsed.to_string(), plain);
        prop_assert_eq!(parse_tag(&tag, false).is_some(), !v);
        Ok(())
    });
}

/// The case the campaign found: a number too large for its unit overflowed (a panic
/// in debug builds, a wrong interval in release); now it is invalid.
#[test]
fn duration_overflow_is_an_error() {
    assert!(parse_duration("18446744073709551615d").is_err());
    assert!(parse_duration("213503982334601d86400s").is_err());
    assert_eq!(parse_duration("1h30m").unwrap().as_secs(), 5400);
}

/// A metadata tarball: tar of `metadata.yaml` (plus `padding` bytes of another file
/// first), compressed by liblzma (xz, any preset) or flate2 (gzip), or plain.
fn tarball(yaml: &[u8], padding: usize, format: u8, level: u32) -> Vec<u8> {
    use std::io::Write;
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in [("templates/hostname.tpl", vec![b'x'; padding]), ("metadata.yaml", yaml.to_vec())] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, name, &data[..]).unwrap();
    }
    let tar = builder.into_inner().unwrap();
    match format {
        0 => {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), level % 10);
            e.write_all(&tar).unwrap();
            e.finish().unwrap()
        }
        1 => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level % 10));
            e.write_all(&tar).unwrap();
            e.finish().unwrap()
        }
        _ => tar,
    }
}

#[test]
fn metadata_tarballs_read_or_fail_cleanly() {
    let yaml = b"architecture: x86_64\ncreation_date: 1767225600\nproperties: {os: Debian, release: bookworm}\n";
    let strategy = (
        0usize..20_000,
        0u8..3,
        0u32..10,
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        prop::option::of(any::<prop::sample::Index>()),
    );
    fuzz::check_with("metadata-tarballs", Some(64), strategy, |(padding, format, level, flips, cut)| {
        let mut input = tarball(yaml, padding, format, level);
        let intact = flips.is_empty() && cut.is_none();
        for (at, byte) in flips {
            let i = at.index(input.len());
            input[i] ^= byte;
        }
        if let Some(cut) = cut {
            input.truncate(cut.index(input.len()));
        }
        let read = read_metadata_yaml(&input[..]);
        if intact {
            let metadata = read.map_err(|e| TestCaseError::fail(e.to_string()))?;
            let product = ProductKey::from_metadata(&metadata).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(product.to_string(), "debian:bookworm:amd64:default");
        }
        Ok(())
    });
}

#[test]
fn metadata_tarball_bytes_never_panic() {
    fuzz::check("metadata-tarball-bytes", prop::collection::vec(any::<u8>(), 0..4096), |mut bytes| {
        for magic in [&b""[..], b"\xfd7zXZ\0", b"\x1f\x8b"] {
            bytes.splice(0..0, magic.iter().copied());
            let _ = read_metadata_yaml(&bytes[..]);
        }
        Ok(())
    });
}
