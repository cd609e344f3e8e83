//! The Helm chart with the real `helm` client against kube-apiserver 1.20: install from
//! the chart directory and from an OCI registry, least-privilege RBAC checked by the API
//! server's authorizer, upgrade, uninstall keeping the CRDs, the values schema, a server
//! dry run of the rendered chart, and the GitOps sample folder.

use std::collections::BTreeMap;
use std::time::Duration;

use e2e::helm::{can_i, chart_dir, exists, helm, Release};
use e2e::procs::{wait_for, TempDir};
use e2e::{cluster, install_crds, kubectl, namespace, repo_root};

const CRDS: [&str; 4] = [
    "otagateways.updraft.dev",
    "firmwarechannels.updraft.dev",
    "imagestreams.updraft.dev",
    "artifactmirrors.updraft.dev",
];

fn chart() -> String {
    chart_dir().to_str().unwrap().to_owned()
}

/// The operator Deployment of `release` as JSON.
fn deployment(release: &Release) -> serde_json::Value {
    let json = kubectl(&["get", "deployment", &release.name, "-n", &release.namespace, "-o", "json"], None).ok();
    serde_json::from_str(&json).unwrap()
}

fn container_args(deployment: &serde_json::Value) -> Vec<String> {
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("the operator container has args")
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn chart_app_version_is_the_workspace_version() {
    let chart: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap()).unwrap();
    assert_eq!(
        chart["appVersion"].as_str(),
        Some(env!("CARGO_PKG_VERSION")),
        "Chart.yaml appVersion must follow the workspace version"
    );
}

#[test]
fn lint_is_clean() {
    cluster();
    let out = helm(&["lint", "--strict", &chart()]);
    assert!(out.success, "helm lint failed:\n{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("1 chart(s) linted, 0 chart(s) failed"), "{}", out.stdout);
    for level in ["[WARNING]", "[ERROR]"] {
        assert!(!out.stdout.contains(level), "helm lint: {}", out.stdout);
    }
}

#[test]
fn install_from_directory_grants_least_privilege_upgrades_and_uninstalls_keeping_crds() {
    let ns = namespace("helm-dir");
    let release = Release::new(&ns);
    let out = release.run("install", &chart(), &[]);
    assert!(out.success, "helm install failed:\n{}{}", out.stdout, out.stderr);

    // CRDs (from the chart's crds/, or already there from another test), then the rest.
    for crd in CRDS {
        assert!(exists(&["crd", crd]), "CRD {crd} missing after install");
    }
    let cluster_name = format!("{}-{ns}", release.name);
    assert!(exists(&["serviceaccount", &release.name, "-n", &ns]));
    assert!(exists(&["clusterrole", &cluster_name]));
    assert!(exists(&["clusterrolebinding", &cluster_name]));
    assert!(exists(&["role", &format!("{}-leader-election", release.name), "-n", &ns]));
    assert!(exists(&["service", &format!("{}-metrics", release.name), "-n", &ns]));

    let d = deployment(&release);
    assert_eq!(d["spec"]["replicas"], 1);
    let args = container_args(&d);
    for expected in ["--leader-elect", "--log-level=info", "--log-format=json", "--admin-addr=0.0.0.0:8081"] {
        assert!(args.iter().any(|a| a == expected), "{expected} missing from {args:?}");
    }
    assert!(args.contains(&"--gateway-image=ghcr.io/updraft-dev/ota-gateway:0.1.0".to_owned()), "{args:?}");
    assert!(!args.iter().any(|a| a.starts_with("--namespace")), "watches all namespaces by default: {args:?}");
    let container = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "ghcr.io/updraft-dev/operator:0.1.0");
    let env: BTreeMap<&str, &str> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?, e["valueFrom"]["fieldRef"]["fieldPath"].as_str()?)))
        .collect();
    assert_eq!(env.get("POD_NAME"), Some(&"metadata.name"));
    assert_eq!(env.get("POD_NAMESPACE"), Some(&"metadata.namespace"));
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["ports"][0]["containerPort"], 8081);
    // Hardening (SECURITY.md): non-root, seccomp, read-only root, no capabilities.
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    assert_ne!(pod["securityContext"]["runAsUser"], 0);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(container["securityContext"]["capabilities"]["drop"], serde_json::json!(["ALL"]));

    // What the operator needs, asked as its ServiceAccount, in a namespace it does not
    // live in (cluster-wide binding) and in its own.
    let sa = release.service_account_user();
    let other = namespace("helm-dir-other");
    for n in [ns.as_str(), other.as_str()] {
        for question in [
            &["patch", "firmwarechannels.updraft.dev", "--subresource=status"][..],
            &["patch", "otagateways.updraft.dev", "--subresource=status"],
            &["patch", "imagestreams.updraft.dev", "--subresource=status"],
            &["patch", "artifactmirrors.updraft.dev", "--subresource=status"],
            &["list", "firmwarechannels.updraft.dev"],
            &["watch", "otagateways.updraft.dev"],
            &["get", "artifactmirrors.updraft.dev"],
            &["create", "events.events.k8s.io"],
            &["patch", "events.events.k8s.io"],
            &["create", "events"],
            // The status page's recent events.
            &["list", "events"],
            &["create", "deployments.apps"],
            &["patch", "deployments.apps"],
            &["watch", "deployments.apps"],
            // The mirror worker, when the last ArtifactMirror goes.
            &["delete", "deployments.apps"],
            &["create", "configmaps"],
            &["patch", "services"],
            &["get", "secrets/registry-credentials"],
            // A gateway's config token, made once when missing (configEndpoint.enabled).
            &["create", "secrets"],
            // A gateway's store claim: exists, ReadWriteMany when replicas > 1.
            &["get", "persistentvolumeclaims/artifacts"],
        ] {
            let mut q = question.to_vec();
            q.extend(["-n", n]);
            assert!(can_i(&sa, &q), "the operator cannot {q:?}");
        }
        // ...and what it must not do.
        for question in [
            &["list", "secrets"][..],
            &["watch", "secrets"],
            &["update", "secrets/registry-credentials"],
            &["patch", "secrets/registry-credentials"],
            &["delete", "secrets/registry-credentials"],
            &["patch", "firmwarechannels.updraft.dev"],
            &["update", "firmwarechannels.updraft.dev", "--subresource=status"],
            &["delete", "otagateways.updraft.dev"],
            &["delete", "configmaps"],
            &["update", "deployments.apps"],
            &["create", "pods"],
            &["list", "persistentvolumeclaims"],
            &["patch", "persistentvolumeclaims/artifacts"],
            &["create", "rolebindings.rbac.authorization.k8s.io"],
        ] {
            let mut q = question.to_vec();
            q.extend(["-n", n]);
            assert!(!can_i(&sa, &q), "the operator may {q:?}");
        }
    }
    for crd_question in [
        ["delete", "customresourcedefinitions.apiextensions.k8s.io"],
        ["update", "customresourcedefinitions.apiextensions.k8s.io"],
    ] {
        assert!(!can_i(&sa, &crd_question), "the operator may {crd_question:?}");
    }
    // Leader election: its own Lease in its own namespace, nothing else.
    assert!(can_i(&sa, &["create", "leases.coordination.k8s.io", "-n", &ns]));
    assert!(can_i(&sa, &["get", "leases.coordination.k8s.io/updraft-operator", "-n", &ns]));
    assert!(can_i(&sa, &["update", "leases.coordination.k8s.io/updraft-operator", "-n", &ns]));
    assert!(!can_i(&sa, &["update", "leases.coordination.k8s.io/kube-controller-manager", "-n", &ns]));
    assert!(!can_i(&sa, &["update", "leases.coordination.k8s.io/updraft-operator", "-n", &other]));
    assert!(!can_i(&sa, &["delete", "leases.coordination.k8s.io/updraft-operator", "-n", &ns]));

    // People bound to the built-in roles get the four kinds through aggregation (done
    // by kube-controller-manager, a moment after install).
    let (editor, viewer) = (format!("editor-{ns}"), format!("viewer-{ns}"));
    kubectl(&["create", "rolebinding", "editor", "--clusterrole=edit", "--user", &editor, "-n", &ns], None).ok();
    kubectl(&["create", "rolebinding", "viewer", "--clusterrole=view", "--user", &viewer, "-n", &ns], None).ok();
    wait_for(Duration::from_secs(30), "the edit and view roles to aggregate Updraft's kinds", || {
        (can_i(&editor, &["create", "firmwarechannels.updraft.dev", "-n", &ns])
            && can_i(&viewer, &["list", "otagateways.updraft.dev", "-n", &ns]))
        .then_some(())
    });
    assert!(!can_i(&viewer, &["create", "firmwarechannels.updraft.dev", "-n", &ns]));
    assert!(!can_i(&editor, &["create", "firmwarechannels.updraft.dev", "-n", &other]));

    // A resource made while installed, to see what uninstall keeps.
    let channel = "apiVersion: updraft.dev/v1alpha1\nkind: FirmwareChannel\nmetadata: {name: kept}\nspec:\n  source: {registry: 127.0.0.1:15000, repository: fw/kept}\n";
    kubectl(&["apply", "--server-side", "-n", &ns, "-f", "-"], Some(channel)).ok();

    // Upgrade with changed values: the Deployment follows.
    let generation = d["metadata"]["generation"].as_i64().unwrap();
    let out = release.run("upgrade", &chart(), &["--set", "logging.level=debug", "--set", "replicaCount=2"]);
    assert!(out.success, "helm upgrade failed:\n{}{}", out.stdout, out.stderr);
    let d = deployment(&release);
    assert_eq!(d["spec"]["replicas"], 2);
    assert!(d["metadata"]["generation"].as_i64().unwrap() > generation);
    let args = container_args(&d);
    assert!(
        args.contains(&"--log-level=debug".to_owned()) && !args.contains(&"--log-level=info".to_owned()),
        "{args:?}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&helm(&["status", &release.name, "-n", &ns, "-o", "json"]).ok()).unwrap();
    assert_eq!(status["version"], 2, "the upgrade is revision 2");
    assert_eq!(status["info"]["status"], "deployed");

    // An upgrade the chart refuses changes nothing.
    let out = release.run("upgrade", &chart(), &["--set", "replicaCount=3", "--set", "leaderElection.enabled=false"]);
    assert!(!out.success && out.stderr.contains("replicaCount > 1 needs leaderElection.enabled"), "{}", out.stderr);
    assert_eq!(deployment(&release)["spec"]["replicas"], 2);

    // Uninstall removes what the chart templated and keeps the CRDs, so resources survive.
    let out = helm(&["uninstall", &release.name, "-n", &ns]);
    assert!(out.success, "helm uninstall failed:\n{}{}", out.stdout, out.stderr);
    assert!(!exists(&["deployment", &release.name, "-n", &ns]));
    assert!(!exists(&["serviceaccount", &release.name, "-n", &ns]));
    assert!(!exists(&["clusterrole", &cluster_name]));
    assert!(!exists(&["clusterrolebinding", &cluster_name]));
    assert!(!exists(&["role", &format!("{}-leader-election", release.name), "-n", &ns]));
    assert!(!exists(&["service", &format!("{}-metrics", release.name), "-n", &ns]));
    for crd in CRDS {
        assert!(exists(&["crd", crd]), "uninstall removed CRD {crd}");
    }
    assert!(exists(&["firmwarechannel", "kept", "-n", &ns]), "uninstall must not take users' resources with it");
}

#[test]
fn install_from_oci_registry_watching_one_namespace() {
    let cluster = cluster();
    let dir = TempDir::new("helm-oci");
    let out = helm(&["package", &chart(), "--destination", dir.0.to_str().unwrap()]);
    assert!(out.success, "helm package failed:\n{}{}", out.stdout, out.stderr);
    let package = dir.0.join(format!("updraft-{}.tgz", env!("CARGO_PKG_VERSION")));
    assert!(package.is_file(), "helm package wrote no {}: {}", package.display(), out.stdout);
    let registry = format!("oci://{}/charts", cluster.registry);
    let out = helm(&["push", package.to_str().unwrap(), &registry, "--plain-http"]);
    assert!(out.success, "helm push failed:\n{}{}", out.stdout, out.stderr);
    let pushed = format!("{}{}", out.stdout, out.stderr);
    assert!(pushed.contains("Digest: sha256:"), "{pushed}");

    let ns = namespace("helm-oci");
    let watched = namespace("helm-oci-watched");
    let elsewhere = namespace("helm-oci-elsewhere");
    let release = Release::new(&ns);
    let reference = format!("{registry}/updraft");
    let watch = format!("watchNamespace={watched}");
    let out = release.run(
        "install",
        &reference,
        &[
            "--version",
            env!("CARGO_PKG_VERSION"),
            "--plain-http",
            "--set",
            &watch,
            "--set",
            "defaultGateway.enabled=true",
        ],
    );
    assert!(out.success, "helm install from {reference} failed:\n{}{}", out.stdout, out.stderr);
    let list: serde_json::Value = serde_json::from_str(&helm(&["list", "-n", &ns, "-o", "json"]).ok()).unwrap();
    assert_eq!(list[0]["chart"], format!("updraft-{}", env!("CARGO_PKG_VERSION")), "{list}");
    assert_eq!(list[0]["status"], "deployed");

    let args = container_args(&deployment(&release));
    assert!(args.contains(&format!("--namespace={watched}")), "{args:?}");
    // Bound in the watched namespace only, not cluster-wide.
    let cluster_name = format!("{}-{ns}", release.name);
    assert!(exists(&["rolebinding", &cluster_name, "-n", &watched]));
    assert!(!exists(&["clusterrolebinding", &cluster_name]));
    let sa = release.service_account_user();
    assert!(can_i(&sa, &["list", "firmwarechannels.updraft.dev", "-n", &watched]));
    assert!(can_i(&sa, &["patch", "deployments.apps", "-n", &watched]));
    assert!(!can_i(&sa, &["list", "firmwarechannels.updraft.dev", "-n", &elsewhere]));
    assert!(!can_i(&sa, &["get", "secrets/anything", "-n", &elsewhere]));
    assert!(!can_i(&sa, &["list", "firmwarechannels.updraft.dev", "--all-namespaces"]));
    assert!(
        can_i(&sa, &["update", "leases.coordination.k8s.io/updraft-operator", "-n", &ns]),
        "the Lease lives in the release namespace"
    );

    // The default gateway, in the watched namespace, with the CRD's defaults applied.
    let gw = kubectl(
        &["get", "otagateway", "default", "-n", &watched, "-o", "jsonpath={.spec.replicas} {.spec.service.port}"],
        None,
    )
    .ok();
    assert_eq!(gw, "1 8080");

    let out = helm(&["uninstall", &release.name, "-n", &ns]);
    assert!(out.success, "{}", out.stderr);
    assert!(!exists(&["rolebinding", &cluster_name, "-n", &watched]));
    assert!(!exists(&["otagateway", "default", "-n", &watched]), "the chart's own OtaGateway goes with it");
}

#[test]
fn a_typo_in_values_fails_install_with_the_schema_message() {
    let ns = namespace("helm-typo");
    let release = Release::new(&ns);
    let dir = TempDir::new("helm-typo");

    let out = release.run("install", &chart(), &["--set", "logging.levle=debug"]);
    assert!(!out.success, "a misspelt nested value was accepted");
    assert!(out.stderr.contains("values don't meet the specifications of the schema"), "{}", out.stderr);
    assert!(out.stderr.contains("logging: Additional property levle is not allowed"), "{}", out.stderr);

    let values = dir.0.join("values.yaml");
    std::fs::write(&values, "replicas: 2\nimage:\n  repository: example.com/operator\n").unwrap();
    let out = release.run("install", &chart(), &["-f", values.to_str().unwrap()]);
    assert!(!out.success, "a misspelt top-level value was accepted");
    assert!(out.stderr.contains("Additional property replicas is not allowed"), "{}", out.stderr);

    let out = release.run("install", &chart(), &["--set", "logging.format=xml"]);
    assert!(
        !out.success && out.stderr.contains("logging.format"),
        "an unknown log format was accepted: {}",
        out.stderr
    );

    let out = release.run("install", &chart(), &["--set", "replicaCount=two"]);
    assert!(
        !out.success && out.stderr.contains("replicaCount"),
        "a non-number replicaCount was accepted: {}",
        out.stderr
    );

    // Nothing was installed.
    assert!(!helm(&["status", &release.name, "-n", &ns]).success);
    assert!(!exists(&["deployment", &release.name, "-n", &ns]));
}

#[test]
fn rendered_chart_passes_a_server_side_dry_run() {
    install_crds();
    let ns = namespace("helm-template");
    let chart = chart();
    let template = |extra: &[&str]| {
        let mut args = vec!["template", "updraft", &chart, "--namespace", &ns];
        args.extend_from_slice(extra);
        let out = helm(&args);
        assert!(out.success, "helm template failed:\n{}", out.stderr);
        out.stdout
    };
    let all_on = [
        "--set",
        "defaultGateway.enabled=true",
        "--set",
        "networkPolicy.enabled=true",
        "--set",
        "replicaCount=2",
        "--set",
        "monitoring.dashboard.enabled=true",
    ];
    let rendered = template(&all_on);
    let out = kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&rendered)).ok();
    for kind in [
        "serviceaccount/",
        "clusterrole.rbac.authorization.k8s.io/",
        "clusterrolebinding.rbac.authorization.k8s.io/",
        "role.rbac.authorization.k8s.io/",
        "rolebinding.rbac.authorization.k8s.io/",
        "service/",
        "deployment.apps/",
        "networkpolicy.networking.k8s.io/",
        "otagateway.updraft.dev/",
        "configmap/updraft-dashboard",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(kind) && l.ends_with("(server dry run)")),
            "{kind} not in the dry run:\n{out}"
        );
    }
    // Nothing was written.
    assert!(!exists(&["deployment", "updraft", "-n", &ns]));
    // The operator's policy, and the gateways' and mirror workers' (by port name).
    for policy in ["updraft", "updraft-gateways", "updraft-mirror-workers"] {
        let line = format!("networkpolicy.networking.k8s.io/{policy} created (server dry run)");
        assert!(out.lines().any(|l| l == line), "{line} not in the dry run:\n{out}");
    }
    let network_policies = |rendered: &str| -> Vec<serde_yaml::Value> {
        rendered
            .split("\n---\n")
            .filter_map(|doc| serde_yaml::from_str::<serde_yaml::Value>(doc).ok())
            .filter(|doc| doc["kind"] == "NetworkPolicy")
            .collect()
    };
    let policies = network_policies(&rendered);
    let ports = |name: &str| -> Vec<String> {
        let policy = policies.iter().find(|p| p["metadata"]["name"] == name).expect(name);
        let rules = policy["spec"]["ingress"].as_sequence().expect("ingress rules");
        rules
            .iter()
            .flat_map(|r| r["ports"].as_sequence().cloned().unwrap_or_default())
            .map(|p| {
                assert_eq!(p["protocol"], "TCP");
                p["port"].as_str().expect("named port").to_owned()
            })
            .collect()
    };
    // The admin port twice: from metricsFrom (Prometheus), and from the operator's own pods,
    // which gather the device census there.
    assert_eq!(ports("updraft-gateways"), ["http", "https", "store", "admin", "admin"]);
    let gateways = policies.iter().find(|p| p["metadata"]["name"] == "updraft-gateways").unwrap();
    let census = &gateways["spec"]["ingress"][3]["from"][0];
    assert_eq!(census["podSelector"]["matchLabels"]["app.kubernetes.io/name"], "updraft", "{census:?}");
    assert!(census["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"].is_string(), "{census:?}");
    assert_eq!(ports("updraft-mirror-workers"), ["admin"]);
    let watched = template(&["--set", "networkPolicy.enabled=true", "--set", "watchNamespace=fleet"]);
    let in_fleet: Vec<_> = network_policies(&watched)
        .into_iter()
        .filter(|doc| doc["metadata"]["namespace"] == "fleet")
        .map(|doc| doc["metadata"]["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        in_fleet,
        ["updraft-gateways", "updraft-mirror-workers"],
        "the gateway policies go where the gateways are"
    );

    // Optional objects appear only when asked for.
    let defaults = template(&[]);
    for kind in [
        "kind: ServiceMonitor",
        "kind: NetworkPolicy",
        "kind: OtaGateway",
        "kind: PrometheusRule",
        "kind: PodMonitor",
        "kind: ConfigMap",
    ] {
        assert!(!defaults.contains(kind), "{kind} rendered by default");
    }
    let monitored = template(&[
        "--set",
        "serviceMonitor.enabled=true",
        "--set",
        "monitoring.rules.enabled=true",
        "--set",
        "monitoring.dashboard.enabled=true",
        "--set",
        "monitoring.podMonitor.enabled=true",
    ]);
    for kind in ["kind: ServiceMonitor", "kind: PrometheusRule", "kind: PodMonitor"] {
        assert!(monitored.contains(kind), "{kind} not rendered");
    }
    assert!(monitored.contains("apiVersion: monitoring.coreos.com/v1"));
    assert!(monitored.contains("grafana_dashboard: \"1\"") && monitored.contains("\"uid\": \"updraft-overview\""));
    let no_leader = template(&["--set", "leaderElection.enabled=false"]);
    assert!(!no_leader.contains("--leader-elect") && !no_leader.contains("kind: Role\n"), "{no_leader}");
}

#[test]
fn gitops_sample_applies_server_side_and_reapplies_without_writes() {
    install_crds();
    let folder = repo_root().join("charts/gitops-sample");
    let folder = folder.to_str().unwrap();
    let out = kubectl(&["apply", "--server-side", "-f", folder], None).ok();
    for object in [
        "namespace/updraft-fleet",
        "otagateway.updraft.dev/default",
        "firmwarechannel.updraft.dev/esp32-stable",
        "firmwarechannel.updraft.dev/esp32-beta",
        "imagestream.updraft.dev/lab",
        "artifactmirror.updraft.dev/router-releases-to-wan",
    ] {
        assert!(out.contains(object), "{object} not applied:\n{out}");
    }
    let versions = || {
        let namespace = kubectl(&["get", "namespace", "updraft-fleet", "-o", "json"], None).ok();
        let json = kubectl(
            &["get", "-n", "updraft-fleet", "otagateways,firmwarechannels,imagestreams,artifactmirrors", "-o", "json"],
            None,
        );
        let list: serde_json::Value = serde_json::from_str(&json.ok()).unwrap();
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .chain([&serde_json::from_str::<serde_json::Value>(&namespace).unwrap()])
            .map(|o| {
                let key = format!("{}/{}", o["kind"].as_str().unwrap(), o["metadata"]["name"].as_str().unwrap());
                (key, o["metadata"]["resourceVersion"].as_str().unwrap().to_owned())
            })
            .collect::<BTreeMap<_, _>>()
    };
    let before = versions();
    assert_eq!(before.len(), 6, "{before:?}");
    kubectl(&["apply", "--server-side", "-f", folder], None).ok();
    assert_eq!(versions(), before, "re-applying the sample wrote to the API server");

    // The fields survived as written (none pruned by the schema).
    let beta = kubectl(
        &[
            "get",
            "fwc/esp32-beta",
            "-n",
            "updraft-fleet",
            "-o",
            "jsonpath={.spec.version.prerelease} {.spec.rollout.percentage}",
        ],
        None,
    )
    .ok();
    assert_eq!(beta, "true 20");
}

/// SECURITY.md's ports table lists exactly the ports that exist, with their numbers: the
/// operator's, as the chart declares them with every optional port on, and the gateway
/// pods' and the mirror worker's, as the real operator renders them for a gateway with
/// TLS, a store and an ArtifactMirror. A port added to the chart or the render and not
/// to the table (or the other way round, or a number that moved) fails here.
#[test]
fn security_md_ports_match_the_chart_and_the_rendered_pods() {
    use std::collections::BTreeSet;
    type Ports = BTreeSet<(String, String, i64)>;

    // The table: its first column reads "<component> `<port name>` (<number>...".
    let doc = std::fs::read_to_string(repo_root().join("SECURITY.md")).unwrap();
    let section = doc.split("\n## Ports\n").nth(1).expect("SECURITY.md has a Ports section");
    let section = section.split("\n## ").next().unwrap();
    let table = section.lines().skip_while(|l| !l.starts_with("| Port |")).skip(2).take_while(|l| l.starts_with('|'));
    let documented: Ports = table
        .map(|row| {
            let cell = row.trim_start_matches('|').split('|').next().unwrap().trim();
            let parse = || -> Option<(String, String, i64)> {
                let (component, rest) = cell.split_once('`')?;
                let (name, rest) = rest.split_once('`')?;
                let digits: String =
                    rest.trim_start().strip_prefix('(')?.chars().take_while(char::is_ascii_digit).collect();
                Some((component.trim().to_owned(), name.to_owned(), digits.parse().ok()?))
            };
            parse().unwrap_or_else(|| panic!("SECURITY.md ports row {row:?}: want \"<component> `<name>` (<port>\""))
        })
        .collect();

    let container_ports = |component: &str, pod: &serde_json::Value| -> Ports {
        pod["spec"]["template"]["spec"]["containers"][0]["ports"]
            .as_array()
            .unwrap_or_else(|| panic!("{component}: no container ports in {pod}"))
            .iter()
            .map(|p| {
                let name = p["name"].as_str().unwrap_or_else(|| panic!("{component}: unnamed port {p}"));
                (component.to_owned(), name.to_owned(), p["containerPort"].as_i64().unwrap())
            })
            .collect()
    };

    // The operator's ports, from the chart with the webhook receiver on.
    install_crds();
    let ns = namespace("ports");
    let args = ["template", "updraft", &chart(), "--namespace", &ns];
    let out = helm(
        &[&args[..], &["--set", "webhookReceiver.enabled=true", "--set", "webhookReceiver.tokenSecret=t"]].concat(),
    );
    assert!(out.success, "helm template failed:\n{}", out.stderr);
    let operator_pod = out
        .stdout
        .split("\n---\n")
        .filter_map(|doc| serde_yaml::from_str::<serde_json::Value>(doc).ok())
        .find(|doc| doc["kind"] == "Deployment" && doc["metadata"]["name"] == "updraft")
        .expect("the chart renders the operator Deployment");
    let mut actual = container_ports("operator", &operator_pod);

    // The gateway's and the mirror worker's, from the real operator.
    let dir = TempDir::new("ports");
    let (operator, _) = e2e::procs::operator(&ns, &dir.0, "operator", &[]);
    let objects = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: store}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 1Gi}}\n---\napiVersion: updraft.dev/v1alpha1\nkind: OtaGateway\nmetadata: {name: default}\nspec:\n  tls: {secretName: cert}\n  store: {claimName: store, writeKeySecret: {name: store-key, key: key}}\n---\napiVersion: updraft.dev/v1alpha1\nkind: ArtifactMirror\nmetadata: {name: out}\nspec:\n  source: {http: {url: \"https://lan.example:8081\"}}\n  destination: {http: {url: \"https://wan.example:8081\"}}\n";
    kubectl(&["apply", "--server-side", "-n", &ns, "-f", "-"], Some(objects)).ok();
    for (component, deployment) in [("gateway", "default"), ("mirror worker", "default-mirror")] {
        let pod = std::panic::catch_unwind(|| {
            wait_for(Duration::from_secs(60), &format!("deployment {deployment}"), || {
                let out = kubectl(&["get", "deployment", deployment, "-n", &ns, "-o", "json"], None);
                out.success.then(|| serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap())
            })
        })
        .unwrap_or_else(|_| panic!("no {deployment} Deployment; operator log:\n{}", operator.output()));
        actual.extend(container_ports(component, &pod));
    }

    let missing: Vec<_> = actual.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&actual).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "SECURITY.md's ports table is out of step: not in the table {missing:?}; in the table but not served {stale:?}"
    );
}
