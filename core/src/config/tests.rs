use super::*;

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn pinned_yaml() -> String {
    format!(
        "channels:\n- name: esp32\n  source: {{registry: 127.0.0.1:5000, repository: fw/esp32, insecure: true}}\n  current: {{version: 1.2.0, tag: v1.2.0, digest: \"{DIGEST}\"}}\n  rollout: 30\n"
    )
}

#[test]
fn defaults_fill_a_short_file() {
    let c: GatewayConfig = serde_yaml::from_str(&pinned_yaml()).unwrap();
    c.validate().unwrap();
    assert_eq!(c.listen, "0.0.0.0:8080");
    assert_eq!(c.admin_listen, "0.0.0.0:9090");
    assert_eq!(c.cache.max_bytes, 1 << 30);
    assert_eq!(c.channels[0].device_id(), "esp32");
    assert_eq!(c.channels[0].artifact.unpack, Unpack::Raw);
    assert_eq!(c.channels[0].rollout, 30);
    assert!(c.sendfile);
    assert!(!c.to_yaml().contains("sendfile"), "the default stays out of the file");
    let off: GatewayConfig = serde_yaml::from_str(&format!("sendfile: false\n{}", pinned_yaml())).unwrap();
    assert!(!off.sendfile);
    assert!(off.to_yaml().contains("sendfile: false"));
}

#[test]
fn rollback_fields_stay_out_of_the_file_until_set() {
    let c: GatewayConfig = serde_yaml::from_str(&pinned_yaml()).unwrap();
    assert_eq!((c.channels[0].highest_served.as_deref(), c.channels[0].downgrade), (None, Downgrade::PinnedBack));
    let yaml = c.to_yaml();
    assert!(!yaml.contains("highestServed") && !yaml.contains("downgrade"), "{yaml}");
    let set: GatewayConfig =
        serde_yaml::from_str(&format!("{}  highestServed: 1.3.0\n  downgrade: never\n", pinned_yaml())).unwrap();
    assert_eq!(
        (set.channels[0].highest_served.as_deref(), set.channels[0].downgrade),
        (Some("1.3.0"), Downgrade::Never)
    );
    assert!(set.to_yaml().contains("downgrade: never"));
    assert!(serde_yaml::from_str::<GatewayConfig>(&format!("{}  downgrade: sometimes\n", pinned_yaml())).is_err());
}

#[test]
fn round_trips_through_yaml() {
    let c: GatewayConfig = serde_yaml::from_str(&pinned_yaml()).unwrap();
    let again: GatewayConfig = serde_yaml::from_str(&c.to_yaml()).unwrap();
    assert_eq!(c, again);
}

#[test]
fn rejects_unknown_fields_and_bad_digests() {
    let typo = pinned_yaml().replace("rollout", "rolout");
    assert!(serde_yaml::from_str::<GatewayConfig>(&typo).unwrap_err().to_string().contains("rolout"));
    let bad: GatewayConfig = serde_yaml::from_str(&pinned_yaml().replace(DIGEST, "sha256:abc")).unwrap();
    assert!(bad.validate().unwrap_err().to_string().contains("is not sha256"));
}

#[test]
fn needs_exactly_one_of_current_and_policy() {
    let mut c: GatewayConfig = serde_yaml::from_str(&pinned_yaml()).unwrap();
    c.channels[0].current = None;
    assert!(c.validate().unwrap_err().to_string().contains("needs current"));
}

#[test]
fn a_newer_format_is_refused_by_its_version() {
    let newer = format!("version: {}\nstreams: []\n", CONFIG_VERSION + 1);
    let err = GatewayConfig::parse(newer.as_bytes()).unwrap_err().to_string();
    assert!(err.contains("newer than this gateway reads"), "{err}");
    let current = GatewayConfig::parse(pinned_yaml().as_bytes()).unwrap();
    assert_eq!(current.version, CONFIG_VERSION);
    assert!(current.to_yaml().starts_with("version: 1\n"));
}

const STORE_AND_MIRROR: &str = r#"
stores:
- name: releases
  listen: 127.0.0.1:8081
  dir: /srv/store
  writeKeyFile: /etc/updraft/key
mirrors:
- name: lan-to-wan
  source: {http: {url: "http://lan:8081", path: releases}}
  destination: {http: {url: "http://wan:8081", keyFile: /etc/updraft/wan-key, allowPlainHttp: true}}
  include: ["**/*.zip"]
  exclude: ["**/unversioned_*"]
  version: {regex: ':(\d+\.\d+\.\d+):', groups: ['(.*?):\d+\.\d+\.\d+:(.*)'], range: ">=1"}
  retention: {keepLast: 2}
  interval: 30s
"#;

#[test]
fn stores_and_mirrors_parse_and_round_trip() {
    let c = GatewayConfig::parse(STORE_AND_MIRROR.as_bytes()).unwrap();
    c.validate().unwrap();
    let s = &c.stores[0];
    assert!(s.public_reads);
    assert_eq!(s.max_upload_bytes, 16 << 30);
    let m = &c.mirrors[0];
    assert_eq!(m.source.http.as_ref().unwrap().path.as_deref(), Some("releases"));
    assert_eq!(m.retention.as_ref().unwrap().keep_last, Some(2));
    assert!(!m.dry_run && !m.suspend);
    assert_eq!(GatewayConfig::parse(c.to_yaml().as_bytes()).unwrap(), c);
}

#[test]
fn empty_stores_and_mirrors_stay_out_of_the_file() {
    let c = GatewayConfig::parse(pinned_yaml().as_bytes()).unwrap();
    let yaml = c.to_yaml();
    assert!(!yaml.contains("stores") && !yaml.contains("mirrors"), "{yaml}");
}

#[test]
fn invalid_stores_and_mirrors_are_refused() {
    let cases = [
        ("writeKeyFile: /etc/updraft/key", "", "needs writeKey or writeKeyFile"),
        ("writeKeyFile: /etc/updraft/key", "writeKey: \" \\t \"", "writeKey is empty or only whitespace"),
        (", allowPlainHttp: true", "", "destination.http: http://wan:8081 is plain http://"),
        ("listen: 127.0.0.1:8081", "listen: 0.0.0.0:9090", "used by another listener"),
        ("http: {url: \"http://lan:8081\", path: releases}", "http: {url: \"lan:8081\"}", "is not http(s)"),
        ("interval: 30s", "interval: soon", "invalid duration"),
        ("keepLast: 2", "keepLast: 0", "at least 1"),
        // The operator refused these globs; a hand-written file used to match them literally.
        ("include: [\"**/*.zip\"]", "include: [\"**/*.{zip,tar}\"]", "include[0] \"**/*.{zip,tar}\": '{' is not"),
        ("exclude: [\"**/unversioned_*\"]", "exclude: [\" \"]", "exclude[0] is empty"),
        ("regex: ':(\\d+\\.\\d+\\.\\d+):'", "regex: ':\\d+:'", "needs a capture group"),
        ("range: \">=1\"", "range: \"banana\"", "invalid semver range"),
    ];
    for (from, to, expected) in cases {
        assert!(STORE_AND_MIRROR.contains(from), "{from}");
        let text = STORE_AND_MIRROR.replace(from, to);
        let err = GatewayConfig::parse(text.as_bytes()).unwrap().validate().unwrap_err().to_string();
        assert!(err.contains(expected), "{from} -> {to}: {err}");
    }
}

#[test]
fn tls_and_streams_are_read_and_omitted_when_unset() {
    let plain = GatewayConfig::parse(pinned_yaml().as_bytes()).unwrap();
    assert!(!plain.to_yaml().contains("tls"));
    assert!(!plain.to_yaml().contains("streams"));
    let yaml = format!(
        "{}tls: {{certFile: /tls/tls.crt, keyFile: /tls/tls.key}}\nstreams:\n- name: images\n  source:\n    upload: {{registry: 127.0.0.1:5000, repository: images/up, insecure: true, tokenFile: /t, allowDelete: true}}\n- name: lab\n  keepVersions: 3\n  source:\n    oci: {{registry: 127.0.0.1:5000, repository: images/lab}}\n",
        pinned_yaml()
    );
    let c = GatewayConfig::parse(yaml.as_bytes()).unwrap();
    c.validate().unwrap();
    let tls = c.tls.as_ref().unwrap();
    assert_eq!(tls.listen, "0.0.0.0:8443");
    assert_eq!(tls.key_file, PathBuf::from("/tls/tls.key"));
    let up = c.streams[0].source.upload.as_ref().unwrap();
    assert!(up.allow_delete && !up.allow_overwrite);
    assert_eq!(up.max_bytes, 4 << 30);
    assert_eq!(up.repository.repository, "images/up");
    assert_eq!(c.streams[1].keep_versions, 3);
    assert_eq!(GatewayConfig::parse(c.to_yaml().as_bytes()).unwrap(), c);
    let twice = yaml.replace("name: lab", "name: images");
    assert!(GatewayConfig::parse(twice.as_bytes()).unwrap().validate().unwrap_err().to_string().contains("twice"));
    let escape = yaml.replace("name: lab", "name: ../x");
    assert!(GatewayConfig::parse(escape.as_bytes()).unwrap().validate().is_err());
    let unknown = yaml.replace("    oci:", "    mirror:");
    assert!(GatewayConfig::parse(unknown.as_bytes()).is_err());
    let mut mirror = c.clone();
    mirror.streams[1].source.oci = None;
    mirror.streams[1].source.upstream = Some(UpstreamStreamSource {
        url: "https://images.example".into(),
        filters: vec!["os=debian".into()],
        ca_file: None,
        interval: "10m".into(),
    });
    mirror.validate().unwrap();
    mirror.streams[1].source.upstream.as_mut().unwrap().filters = vec!["color=red".into()];
    assert!(mirror.validate().unwrap_err().to_string().contains("filter"));
    let mut none = c.clone();
    none.streams[1].source.oci = None;
    assert!(none.validate().unwrap_err().to_string().contains("exactly one"));
}

#[test]
fn notifications_are_omitted_while_empty_and_checked() {
    let c: GatewayConfig = serde_yaml::from_str(&pinned_yaml()).unwrap();
    assert!(!c.to_yaml().contains("notifications"), "an empty section stays out of the file");
    let yaml = format!(
        "{}notifications:\n  mqtt: {{url: \"mqtts://broker:8883\", caFile: /etc/ca.crt}}\n  webhooks:\n  - {{url: \"https://ci.example/hook\", secretFile: /etc/key}}\n",
        pinned_yaml()
    );
    let n: GatewayConfig = serde_yaml::from_str(&yaml).unwrap();
    n.validate().unwrap();
    let mqtt = n.notifications.mqtt.as_ref().unwrap();
    assert_eq!(mqtt.topic_prefix, "firmware/updates");
    assert_eq!(mqtt.ca_file.as_deref(), Some(Path::new("/etc/ca.crt")));
    assert_eq!(serde_yaml::from_str::<GatewayConfig>(&n.to_yaml()).unwrap(), n);
    let bad = |from: &str, to: &str| {
        let c: GatewayConfig = serde_yaml::from_str(&yaml.replace(from, to)).unwrap();
        c.validate().unwrap_err().to_string()
    };
    assert!(bad("mqtts://", "tcp://").contains("mqtt://"));
    assert!(bad("https://ci", "ftp://ci").contains("http://"));
    assert!(bad("caFile: /etc/ca.crt", "clientCertFile: /c").contains("go together"));
    assert!(bad("caFile: /etc/ca.crt", "topicPrefix: \"a/#\"").contains("wildcards"));
}

/// The one rule for store keys, used by the gateway's config and the operator's check:
/// only a key bound for a plain `http://` URL (any case) without `allowPlainHttp` is
/// refused, and the refusal names the URL.
#[test]
fn a_store_key_goes_to_plain_http_only_when_allowed() {
    let url = "HTTP://wan:8081";
    assert_eq!(plain_http_key(url, true, false), Err(PlainHttpKeyError { url: url.into() }));
    assert!(plain_http_key(url, true, false).unwrap_err().to_string().starts_with("HTTP://wan:8081 is plain http://"));
    assert_eq!(plain_http_key(url, true, true), Ok(()), "allowPlainHttp");
    assert_eq!(plain_http_key(url, false, false), Ok(()), "no key to send");
    assert_eq!(plain_http_key("https://wan:8081", true, false), Ok(()));
}

#[test]
fn rejects_duplicate_devices() {
    let mut c: GatewayConfig = serde_yaml::from_str(&pinned_yaml()).unwrap();
    let mut other = c.channels[0].clone();
    other.name = "other".into();
    other.device = Some("esp32".into());
    c.channels.push(other);
    assert!(c.validate().unwrap_err().to_string().contains("two channels"));
}

/// A field left out of the file and the default code builds with are one value: the
/// sections serde may fill whole equal their `Default`, and in sections with required
/// fields every omitted field is its `DEFAULT_*` constant (what the operator renders).
#[test]
fn omitted_fields_are_the_defaults_code_builds_with() {
    fn omitted<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
        serde_yaml::from_str(yaml).unwrap()
    }
    assert_eq!(omitted::<GatewayConfig>("{}"), GatewayConfig::default());
    assert_eq!(omitted::<CacheConfig>("{}"), CacheConfig::default());
    assert_eq!(omitted::<NotificationsConfig>("{}"), NotificationsConfig::default());
    assert_eq!(omitted::<ArtifactConfig>("{}"), ArtifactConfig::default());
    assert_eq!(omitted::<MirrorEndpoint>("{}"), MirrorEndpoint::default());
    assert_eq!(omitted::<VersionFilter>("{}"), VersionFilter::default());
    assert_eq!(omitted::<RetentionConfig>("{}"), RetentionConfig::default());
    assert_eq!(omitted::<StreamSource>("{}"), StreamSource::default());

    let d = GatewayConfig::default();
    assert_eq!((d.listen.as_str(), d.admin_listen.as_str()), (GatewayConfig::DEFAULT_LISTEN, "0.0.0.0:9090"));
    assert_eq!((d.version, d.sendfile), (CONFIG_VERSION, true));
    assert_eq!(d.cache.dir, PathBuf::from(CacheConfig::DEFAULT_DIR));

    let tls: TlsConfig = omitted("{certFile: /c, keyFile: /k}");
    assert_eq!(tls.listen, TlsConfig::DEFAULT_LISTEN);
    let mqtt: MqttConfig = omitted("{url: 'mqtt://broker'}");
    assert_eq!(mqtt.topic_prefix, MqttConfig::DEFAULT_TOPIC_PREFIX);
    let channel: ChannelConfig = omitted("{name: c, source: {registry: r, repository: p}, policy: {range: '*'}}");
    assert_eq!(
        (channel.rollout, channel.downgrade, channel.artifact),
        (ChannelConfig::DEFAULT_ROLLOUT, Downgrade::default(), ArtifactConfig::default())
    );
    let store: StoreConfig = omitted("{name: s, listen: ':1', dir: /d}");
    assert_eq!(
        (store.public_reads, store.max_upload_bytes, store.allow_plain_writes),
        (true, StoreConfig::DEFAULT_MAX_UPLOAD_BYTES, false)
    );
    let mirror: MirrorConfig =
        omitted("{name: m, source: {http: {url: 'http://a'}}, destination: {http: {url: 'http://b'}}}");
    assert_eq!(
        (mirror.interval.as_str(), mirror.suspend, mirror.dry_run),
        (MirrorConfig::DEFAULT_INTERVAL, false, false)
    );
    let oci: OciStreamSource = omitted("{registry: r, repository: p}");
    assert_eq!(oci.interval, OciStreamSource::DEFAULT_INTERVAL);
    let upload: UploadStreamSource = omitted("{registry: r, repository: p, tokenFile: /t}");
    assert_eq!(
        (
            upload.max_bytes,
            upload.interval.as_str(),
            upload.allow_overwrite,
            upload.allow_delete,
            upload.allow_plain_writes
        ),
        (UploadStreamSource::DEFAULT_MAX_BYTES, UploadStreamSource::DEFAULT_INTERVAL, false, false, false)
    );
    let upstream: UpstreamStreamSource = omitted("{url: 'https://images.example'}");
    assert_eq!(upstream.interval, UpstreamStreamSource::DEFAULT_INTERVAL);
}

/// Mutual TLS: `clientAuth` defaults to optional once a CA is given, needs one, and both
/// are omitted from the file while unset.
#[test]
fn client_certificate_settings_are_read_checked_and_omitted_when_unset() {
    let tls = |extra: &str| {
        let yaml = format!("{}tls: {{certFile: /tls/tls.crt, keyFile: /tls/tls.key{extra}}}\n", pinned_yaml());
        GatewayConfig::parse(yaml.as_bytes()).unwrap()
    };
    let plain = tls("");
    plain.validate().unwrap();
    assert_eq!(plain.tls.as_ref().unwrap().client_auth(), None);
    assert!(!plain.to_yaml().contains("client"), "{}", plain.to_yaml());

    let optional = tls(", clientCaFile: /ca/ca.crt");
    optional.validate().unwrap();
    assert_eq!(optional.tls.as_ref().unwrap().client_auth(), Some(ClientAuth::Optional));
    assert_eq!(GatewayConfig::parse(optional.to_yaml().as_bytes()).unwrap(), optional);

    let required = tls(", clientCaFile: /ca/ca.crt, clientAuth: required");
    required.validate().unwrap();
    assert_eq!(required.tls.as_ref().unwrap().client_auth(), Some(ClientAuth::Required));
    assert!(required.to_yaml().contains("clientAuth: required"));

    let without_ca = tls(", clientAuth: required");
    assert_eq!(
        without_ca.tls.as_ref().unwrap().check(),
        Err(TlsConfigError::ClientAuthWithoutCa(ClientAuth::Required))
    );
    let err = without_ca.validate().unwrap_err().to_string();
    assert!(err.contains("tls: clientAuth: required needs a clientCaFile"), "{err}");
    let empty = tls(", clientCaFile: ''");
    assert_eq!(empty.tls.as_ref().unwrap().check(), Err(TlsConfigError::EmptyClientCaFile));
    assert!(empty.validate().is_err());
    let unknown =
        format!("{}tls: {{certFile: /c, keyFile: /k, clientCaFile: /ca, clientAuth: sometimes}}\n", pinned_yaml());
    assert!(GatewayConfig::parse(unknown.as_bytes()).is_err());
}
