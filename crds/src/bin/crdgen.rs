//! Prints Updraft's CustomResourceDefinitions as YAML.
//!
//! `cargo run -p updraft-crds --bin crdgen > crds/crds.yaml`

#![deny(unsafe_code)]

fn main() {
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        println!("crdgen: print the CustomResourceDefinitions of updraft.dev/v1alpha1 as YAML\n\nUsage: crdgen > crds/crds.yaml");
        return;
    }
    print!("{}", updraft_crds::crds_yaml());
}
