//! The mutual-TLS PKI the MQTT notification tests give mosquitto and the gateway: an
//! RSA CA, a server leaf and a client-auth leaf, made with `openssl`. One home for the
//! gateway's `tests/notify.rs` and `e2e/tests/notify.rs`.
//!
//! (The simplestreams tests use [`crate::images::Pki`], an EC CA with leaves in the
//! layout the Incus clients read.)

use std::path::Path;
use std::process::Command;

use crate::run;

/// Writes into `dir` (which must exist) `ca.crt`/`ca.key`, `server.crt`/`server.key`
/// (subjectAltName 127.0.0.1 and localhost) and `client.crt`/`client.key`
/// (extendedKeyUsage clientAuth), each valid for two days.
pub fn make_pki(dir: &Path) {
    let ssl = |args: &[&str]| run(Command::new("openssl").current_dir(dir).args(args));
    ssl(&["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt"]
        .into_iter()
        .chain(["-days", "2", "-subj", "/CN=updraft test CA"])
        .collect::<Vec<_>>());
    for (name, ext) in
        [("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"), ("client", "extendedKeyUsage=clientAuth")]
    {
        let (key, csr, crt, extfile) =
            (format!("{name}.key"), format!("{name}.csr"), format!("{name}.crt"), format!("{name}.ext"));
        ssl(&["req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj", &format!("/CN={name}")]);
        std::fs::write(dir.join(&extfile), format!("{ext}\n")).unwrap();
        ssl(&["x509", "-req", "-in", &csr, "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial"]
            .into_iter()
            .chain(["-out", &crt, "-days", "2", "-extfile", &extfile])
            .collect::<Vec<_>>());
    }
}
