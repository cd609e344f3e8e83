//! What the simplestreams tests build and run, in one place: a test PKI made by
//! `openssl` (a CA and leaves for 127.0.0.1), Incus images made reproducibly with GNU
//! tar/xz and `mksquashfs` the way `shared/simplestreams-clients.md` describes, the
//! combined fingerprint the clients compute, and the real `incus`/`lxc` clients run
//! with a throwaway config against the test CA.
//!
//! Used by the gateway's `simplestreams*.rs` tests and `e2e/tests/streams.rs`.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::run;

/// A test CA in a directory, and leaves it signs.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    /// A CA (`ca.pem`, `ca.key`) and a leaf for 127.0.0.1 and localhost (`tls.crt`,
    /// `tls.key`), in `dir` (created).
    pub fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        let pki = Pki { dir: dir.to_owned() };
        pki.openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key"]);
        pki.openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-subj",
            "/CN=Updraft test CA",
            "-days",
            "2",
            "-out",
            "ca.pem",
        ]);
        pki.leaf("tls", "gateway");
        pki
    }

    fn openssl(&self, args: &[&str]) {
        run(Command::new("openssl").args(args).current_dir(&self.dir));
    }

    /// The CA certificate, for `--cacert` and `SSL_CERT_FILE`.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The leaf certificate and key (`tls.crt`, `tls.key`).
    pub fn cert(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("tls.crt"), self.dir.join("tls.key"))
    }

    /// A new leaf for 127.0.0.1 and localhost with common name `cn`, signed by the CA:
    /// `<name>.crt` and `<name>.key` (PKCS#8).
    pub fn leaf(&self, name: &str, cn: &str) -> (PathBuf, PathBuf) {
        let (ec, key, crt) = (format!("{name}.ec"), format!("{name}.key"), format!("{name}.crt"));
        self.openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", &ec]);
        self.openssl(&["pkcs8", "-topk8", "-nocrypt", "-in", &ec, "-out", &key]);
        self.openssl(&["req", "-new", "-key", &key, "-subj", &format!("/CN={cn}"), "-out", "leaf.csr"]);
        std::fs::write(self.dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            &crt,
        ]);
        (self.dir.join(crt), self.dir.join(key))
    }
}

/// The `metadata.yaml` of the test images (Debian bookworm, x86_64).
pub const METADATA_YAML: &str = "architecture: x86_64\ncreation_date: 1767225600\nproperties:\n  os: Debian\n  release: bookworm\n  variant: default\n  description: Debian bookworm\ntemplates: {}\n";

/// `tar -cJf OUT WHAT…` in `cwd`, reproducibly (sorted, fixed time and owner).
pub fn tar_xz(out: &str, what: &[&str], cwd: &Path) {
    run(Command::new("tar")
        .args(["--sort=name", "--mtime=@1767225600", "--owner=0", "--group=0", "--numeric-owner", "-cJf", out])
        .args(what)
        .current_dir(cwd));
}

/// `root` as a squashfs image at `out`, as LXD images are made (xz), reproducibly (owners
/// root, fixed times), so the same tree gives the same bytes.
pub fn mksquashfs(root: &Path, out: &Path) {
    run(Command::new("mksquashfs").arg(root).arg(out).args([
        "-noappend",
        "-all-root",
        "-comp",
        "xz",
        "-mkfs-time",
        "1767225600",
        "-all-time",
        "1767225600",
        "-no-progress",
        "-quiet",
    ]));
}

/// In `dir` (created): `incus.tar.xz` (the metadata tarball, holding `metadata.yaml`),
/// `rootfs.squashfs` and `root.tar.xz`, made reproducibly; `seed` makes the root file
/// system, and so the fingerprints, unique.
pub fn make_image(dir: &Path, seed: &str) {
    std::fs::create_dir_all(dir.join("rootdir/etc")).unwrap();
    std::fs::write(dir.join("rootdir/etc/hostname"), format!("{seed}\n")).unwrap();
    std::fs::write(dir.join("metadata.yaml"), METADATA_YAML).unwrap();
    tar_xz("incus.tar.xz", &["metadata.yaml"], dir);
    tar_xz("../root.tar.xz", &["."], &dir.join("rootdir"));
    mksquashfs(&dir.join("rootdir"), &dir.join("rootfs.squashfs"));
}

/// The fingerprint Incus and LXD give an image: sha256 of the metadata tarball
/// followed by the root file system.
pub fn fingerprint(metadata: &Path, rootfs: &Path) -> String {
    let mut hash = Sha256::new();
    hash.update(std::fs::read(metadata).unwrap());
    hash.update(std::fs::read(rootfs).unwrap());
    hex::encode(hash.finalize())
}

/// Runs `tool` (`incus` or `lxc`) with a throwaway config and cache under `home`,
/// trusting `ca`; returns its stdout.
pub fn image_client(tool: &str, home: &Path, ca: &Path, args: &[&str]) -> String {
    let conf = if tool == "incus" { "INCUS_CONF" } else { "LXD_CONF" };
    std::fs::create_dir_all(home.join(format!("{tool}-conf"))).unwrap();
    run(Command::new(tool)
        .args(args)
        .env(conf, home.join(format!("{tool}-conf")))
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("HOME", home)
        .env("SSL_CERT_FILE", ca))
}

fn have(tool: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().is_ok_and(|o| o.status.success())
}

/// Installs the image tools (`incus`, `lxc`, `mksquashfs`, …) with `cluster.sh tools`
/// unless they are there.
pub fn ensure_tools() {
    if !(have("incus") && have("lxc") && have("mksquashfs")) {
        run(Command::new("bash").arg(crate::repo_root().join("e2e/scripts/cluster.sh")).arg("tools"));
    }
}

/// [`cached_tool`] as a command, once it answers `--version`: a test that needs a
/// reference tool (detools, …) fails saying how to install it, not with a spawn error.
pub fn required_tool(name: &str) -> Command {
    let tool = cached_tool(name);
    let found = Command::new(&tool).arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{name} (a reference implementation the tests run) is not installed; install it with \
         `bash e2e/scripts/cluster.sh tools` (it puts it in ~/.cache/updraft/bin)"
    );
    Command::new(tool)
}

/// A tool `cluster.sh tools` keeps in `~/.cache/updraft/bin`, else from the PATH.
pub fn cached_tool(name: &str) -> PathBuf {
    let cached = Path::new(&std::env::var("HOME").unwrap()).join(".cache/updraft/bin").join(name);
    if cached.exists() {
        cached
    } else {
        name.into()
    }
}
