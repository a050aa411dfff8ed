//! The cloud-init user-data of a Nova server: the app's container run by the VM's
//! engine, its env file, and the list of the volumes attached for the guest to
//! mount.

use std::collections::BTreeMap;

use wharf_core::{Error, InstanceSpec, Result};

/// Standard base64 (with padding), as Nova wants `user_data`.
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Where the guest is expected to mount the volume `name` (the host side of the
/// container's `-v` bind).
pub fn guest_mount_dir(name: &str) -> String {
    format!("{GUEST_VOLUMES_DIR}/{name}")
}

/// The folder under which the guest mounts Wharf's volumes.
pub const GUEST_VOLUMES_DIR: &str = "/var/lib/wharf/volumes";

/// The file of the user-data that lists the attached volumes, one a line:
/// `<name> <cinder id> <device> <guest folder> <path in the container>`, the device
/// being `/dev/disk/by-id/virtio-<first 20 characters of the id>` (how virtio
/// disks show their Cinder serial).
pub const GUEST_VOLUMES_FILE: &str = "/etc/wharf/volumes";

/// The cloud-init user-data that runs `spec`'s container with `engine`; `volume_ids`
/// gives the Cinder id of each of the spec's volumes (by name).
///
/// The engine's arguments are a YAML list of JSON strings (JSON strings are valid
/// YAML), so no value can break out of its place; the env file is written base64
/// encoded with mode 0600. Env values with line breaks are refused (env files cannot
/// hold them).
pub fn cloud_init(
    spec: &InstanceSpec,
    engine: &str,
    volume_ids: &BTreeMap<String, String>,
) -> Result<String> {
    let mut env = String::new();
    for (k, v) in &spec.env {
        wharf_core::validate_env_key(k)?;
        if v.contains('\n') || v.contains('\r') {
            return Err(Error::invalid(format!(
                "env {k}: values with line breaks cannot be passed through cloud-init"
            )));
        }
        env.push_str(&format!("{k}={v}\n"));
    }
    let mut args: Vec<String> = vec![
        engine.into(),
        "run".into(),
        "-d".into(),
        "--name".into(),
        spec.name.clone(),
        "--restart".into(),
        "unless-stopped".into(),
        "--env-file".into(),
        "/etc/wharf/app.env".into(),
        "-p".into(),
        format!("{0}:{0}", spec.port),
    ];
    if let Some(mb) = spec.resources.memory_mb {
        args.extend(["--memory".into(), format!("{mb}m")]);
    }
    if let Some(m) = spec.resources.cpu_millis {
        args.extend(["--cpus".into(), format!("{}", f64::from(m) / 1000.0)]);
    }
    let mut volumes = String::new();
    for v in &spec.volumes {
        let id = volume_ids
            .get(&v.name)
            .ok_or_else(|| Error::internal(format!("volume {} has no Cinder volume", v.name)))?;
        let dir = guest_mount_dir(&v.name);
        let serial: String = id.chars().take(20).collect();
        volumes.push_str(&format!(
            "{} {id} /dev/disk/by-id/virtio-{serial} {dir} {}\n",
            v.name, v.path
        ));
        args.extend(["-v".into(), format!("{dir}:{}", v.path)]);
    }
    args.push(spec.image.clone());
    if let Some(cmd) = &spec.command {
        args.extend(cmd.iter().cloned());
    }
    let argv = serde_json::to_string(&args)?;
    let volumes_file = if volumes.is_empty() {
        String::new()
    } else {
        format!(
            "  - path: {GUEST_VOLUMES_FILE}\n    \
               permissions: '0644'\n    \
               encoding: b64\n    \
               content: {}\n",
            base64(volumes.as_bytes())
        )
    };
    Ok(format!(
        "#cloud-config\n\
         write_files:\n  \
           - path: /etc/wharf/app.env\n    \
             permissions: '0600'\n    \
             encoding: b64\n    \
             content: {}\n\
         {volumes_file}\
         runcmd:\n  \
           - {argv}\n",
        base64(env.as_bytes())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn cloud_init_lists_the_volumes_for_the_guest() {
        let mut spec = InstanceSpec {
            replicas: 1,
            run_once: false,
            name: "web-1".into(),
            image: "example/web:1".into(),
            image_local_only: false,
            command: None,
            env: Default::default(),
            port: 8080,
            resources: Default::default(),
            health_check: Default::default(),
            volumes: vec![wharf_core::VolumeMount::new("data", "/var/lib/app")],
            network: None,
            network_alias: None,
            labels: Default::default(),
        };
        assert!(cloud_init(&spec, "docker", &BTreeMap::new()).is_err());
        let id = "0123456789abcdefghijklmnop";
        let ids = BTreeMap::from([("data".to_string(), id.to_string())]);
        let ud = cloud_init(&spec, "docker", &ids).unwrap();
        let v: serde_yaml::Value = serde_yaml::from_str(&ud).unwrap();
        assert_eq!(v["write_files"][0]["path"], "/etc/wharf/app.env");
        assert_eq!(v["write_files"][1]["path"], GUEST_VOLUMES_FILE);
        let listed = nova_b64decode(v["write_files"][1]["content"].as_str().unwrap());
        assert_eq!(
            listed,
            format!(
                "data {id} /dev/disk/by-id/virtio-0123456789abcdefghij \
                 /var/lib/wharf/volumes/data /var/lib/app\n"
            )
        );
        let argv: Vec<String> = serde_yaml::from_value(v["runcmd"][0].clone()).unwrap();
        assert!(argv
            .windows(2)
            .any(|w| w == ["-v", "/var/lib/wharf/volumes/data:/var/lib/app"]));
        spec.volumes.clear();
        let ud = cloud_init(&spec, "docker", &ids).unwrap();
        let v: serde_yaml::Value = serde_yaml::from_str(&ud).unwrap();
        assert!(v["write_files"].get(1).is_none());
    }

    fn nova_b64decode(s: &str) -> String {
        let t = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0);
        for c in s.bytes().filter(|c| *c != b'=') {
            acc = (acc << 6) | t.iter().position(|x| *x == c).unwrap() as u32;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
                acc &= (1 << bits) - 1;
            }
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn cloud_init_quotes_everything() {
        let spec = InstanceSpec {
            replicas: 1,
            run_once: false,
            name: "web-1".into(),
            image: "example/web:1".into(),
            image_local_only: false,
            command: Some(vec![
                "sh".into(),
                "-c".into(),
                "echo \"hi\"; rm -rf /x".into(),
            ]),
            env: [("A".to_string(), "b: c # d".to_string())].into(),
            port: 8080,
            resources: wharf_core::Resources {
                memory_mb: Some(256),
                cpu_millis: Some(500),
            },
            health_check: Default::default(),
            volumes: vec![],
            network: None,
            network_alias: None,
            labels: Default::default(),
        };
        let ud = cloud_init(&spec, "docker", &BTreeMap::new()).unwrap();
        assert!(ud.starts_with("#cloud-config\n"));
        let v: serde_yaml::Value = serde_yaml::from_str(&ud).unwrap();
        let argv: Vec<String> = serde_yaml::from_value(v["runcmd"][0].clone()).unwrap();
        assert_eq!(argv[..2], ["docker".to_string(), "run".to_string()]);
        assert!(argv.contains(&"8080:8080".to_string()));
        assert!(argv.contains(&"256m".to_string()));
        assert_eq!(argv.last().unwrap(), "echo \"hi\"; rm -rf /x");
        assert_eq!(
            v["write_files"][0]["content"],
            base64(b"A=b: c # d\n").as_str()
        );
        let mut bad = spec.clone();
        bad.env.insert("B".into(), "two\nlines".into());
        assert!(cloud_init(&bad, "docker", &BTreeMap::new()).is_err());
    }
}
