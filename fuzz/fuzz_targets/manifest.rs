//! `wharf.toml` manifests (`wharf_server::manifest::Manifest`) as `wharf deploy` reads
//! them: the input is written as `wharf.toml` into a fresh temp dir and loaded with
//! `Manifest::load`. Checked, for a manifest that loads:
//! - it declares services or databases, no service path is absolute or goes up with
//!   `..`, and every database makes a valid API body;
//! - `waves()` either refuses (cycle, unknown dependency, bad name) or puts every
//!   service in exactly one wave, after all of its dependencies (a database is made
//!   before every wave, and is in none);
//! - `service_body` builds the API body of every service without panicking.
#![no_main]

use std::collections::HashMap;
use std::path::Component;

use libfuzzer_sys::fuzz_target;
use wharf_server::manifest::{Manifest, FILE};

fuzz_target!(|data: &[u8]| {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join(FILE), data).unwrap();
    let Ok(Some(m)) = Manifest::load(tmp.path()) else {
        return;
    };
    assert!(!m.services.is_empty() || !m.databases.is_empty());
    for (name, d) in &m.databases {
        assert!(!m.services.contains_key(name), "{name} both service and database");
        let body = d.input(name).expect("a loaded manifest's databases are valid");
        assert_eq!(&body.name, name);
    }
    for s in m.services.values() {
        if let Some(p) = &s.path {
            assert!(!p.is_absolute(), "absolute path {p:?} accepted");
            assert!(
                !p.components().any(|c| c == Component::ParentDir),
                "path {p:?} going up accepted"
            );
        }
    }
    if let Ok(waves) = m.waves() {
        let mut wave_of = HashMap::new();
        for (i, wave) in waves.iter().enumerate() {
            for name in wave {
                assert!(!m.databases.contains_key(name), "database {name} in a wave");
                assert!(wave_of.insert(name.as_str(), i as i64).is_none(), "{name} twice");
            }
        }
        assert_eq!(wave_of.len(), m.services.len(), "waves: {waves:?}");
        for name in m.databases.keys() {
            wave_of.insert(name.as_str(), -1);
        }
        for (name, s) in &m.services {
            for dep in &s.depends_on {
                assert!(
                    wave_of[dep.as_str()] < wave_of[name.as_str()],
                    "{name} is not after {dep}: {waves:?}"
                );
            }
        }
    }
    for name in m.services.keys() {
        let body = m.service_body(name);
        assert_eq!(body.port, m.services[name].port);
    }
});
