//! Packages, signatures, assignment and reports through the platform.

use ring::signature::{Ed25519KeyPair, KeyPair};

use super::*;
use crate::attributes::Scope;
use crate::model::NewDevice;
use crate::testing::TestPlatform;

fn key_pair() -> Ed25519KeyPair {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
}

fn package(title: &str, version: &str, signature: Option<Vec<u8>>) -> NewPackage {
    NewPackage {
        kind: Kind::Firmware,
        title: title.into(),
        version: version.into(),
        profile: None,
        signature,
    }
}

#[test]
fn signed_images_verify_against_the_tenants_keys() {
    let t = TestPlatform::new();
    let p = &t.platform;
    let tenant = p.registry.tenant("default").unwrap().id;
    let image: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let pair = key_pair();
    let sig = pair.sign(&image).as_ref().to_vec();
    // Signed, but no key registered yet.
    let e = p
        .firmware
        .create(&tenant, package("pump", "1.0", Some(sig.clone())), &image)
        .unwrap_err();
    assert!(e.to_string().contains("no signing keys"), "{e}");
    let key = p
        .firmware
        .add_key(&tenant, "release", pair.public_key().as_ref())
        .unwrap();
    let sig_bytes = sig.clone();
    let pkg = p
        .firmware
        .create(&tenant, package("pump", "1.0", Some(sig)), &image)
        .unwrap();
    assert_eq!(pkg.signed_by.as_deref(), Some(key.id.as_str()));
    // The signature goes to the device with the image; an unsigned package takes it away.
    assert_eq!(pkg.signature.as_deref(), Some(hex(&sig_bytes).as_str()));
    let (d, _) = p
        .registry
        .create_device(
            &tenant,
            NewDevice {
                name: "signed-1".into(),
                ..Default::default()
            },
        )
        .unwrap();
    p.assign_firmware(&d.id, &pkg.id).unwrap();
    let shared = p.attributes.values(&d.id, Scope::Shared, None).unwrap();
    assert_eq!(shared["fw_signature"], hex(&sig_bytes).as_str());
    assert_eq!(shared["fw_signature_algorithm"], "ED25519");
    let plain = p
        .firmware
        .create(&tenant, package("pump", "0.9", None), &image)
        .unwrap();
    assert_eq!(plain.signature, None);
    p.assign_firmware(&d.id, &plain.id).unwrap();
    let shared = p.attributes.values(&d.id, Scope::Shared, None).unwrap();
    assert!(shared.get("fw_signature").is_none(), "{shared:?}");
    assert_eq!(shared["fw_version"], "0.9");
    assert_eq!(pkg.size, 100_000);
    let digest = ring::digest::digest(&ring::digest::SHA256, &image);
    assert_eq!(pkg.checksum, hex(digest.as_ref()));
    // A signature by another key, or over other bytes, is refused; nothing is stored.
    let other = key_pair().sign(&image).as_ref().to_vec();
    let e = p
        .firmware
        .create(&tenant, package("pump", "1.1", Some(other)), &image)
        .unwrap_err();
    assert!(e.to_string().contains("bad signature"), "{e}");
    let mut tampered = image.clone();
    tampered[7] ^= 1;
    let sig = pair.sign(&image).as_ref().to_vec();
    assert!(p
        .firmware
        .create(&tenant, package("pump", "1.1", Some(sig)), &tampered)
        .is_err());
    assert_eq!(p.firmware.list(Some(&tenant)).unwrap().len(), 2);
    // Same title and version again: refused (packages are immutable).
    assert!(matches!(
        p.firmware
            .create(&tenant, package("pump", "1.0", None), &image),
        Err(CoreError::AlreadyExists(_))
    ));
    // Refused uploads leave no file behind; stored ones are one file each.
    let dir = p.firmware.image("x");
    let files: Vec<String> = std::fs::read_dir(dir.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(files.iter().all(|f| f.ends_with(".bin")), "{files:?}");
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(p.firmware.add_key(&tenant, "short", &[1, 2, 3]).is_err());
    assert!(p
        .firmware
        .create(&tenant, package("", "1", None), &image)
        .is_err());
    assert!(p
        .firmware
        .create(&tenant, package("e", "1", None), &[])
        .is_err());
}

#[test]
fn assignment_chunks_and_reports() {
    let t = TestPlatform::new();
    let p = &t.platform;
    let tenant = p.registry.tenant("default").unwrap().id;
    let (d, _) = p
        .registry
        .create_device(
            &tenant,
            NewDevice {
                name: "meter-1".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let image: Vec<u8> = (0..2500u32).map(|i| (i % 256) as u8).collect();
    let pkg = p
        .firmware
        .create(&tenant, package("meter", "2.0", None), &image)
        .unwrap();
    assert!(matches!(
        p.firmware_chunk(&d.id, 1000, 0),
        Err(CoreError::NotFound(_))
    ));
    let assigned = p.assign_firmware(&d.id, &pkg.id).unwrap();
    assert_eq!(assigned.package.id, pkg.id);
    let shared = p.attributes.values(&d.id, Scope::Shared, None).unwrap();
    assert_eq!(shared["fw_title"], "meter");
    assert_eq!(shared["fw_version"], "2.0");
    assert_eq!(shared["fw_size"], 2500);
    assert_eq!(shared["fw_checksum_algorithm"], "SHA256");
    assert_eq!(shared["fw_checksum"], pkg.checksum.as_str());
    // Chunks of 1000: 1000, 1000, 500, then nothing.
    let mut all = Vec::new();
    for n in 0..4 {
        let c = p.firmware_chunk(&d.id, 1000, n).unwrap();
        assert_eq!(c.len(), [1000, 1000, 500, 0][n as usize]);
        all.extend(c);
    }
    assert_eq!(all, image);
    assert_eq!(
        p.firmware_chunk(&d.id, 0, 0).unwrap(),
        image,
        "size 0: whole"
    );
    assert!(p.firmware_chunk(&d.id, MAX_CHUNK_BYTES + 1, 0).is_err());
    // The device's reports.
    let report = |v: serde_json::Value| {
        let Value::Object(m) = v else { unreachable!() };
        p.firmware.report(&d.id, 1_000, &m).unwrap();
    };
    report(
        json!({"fw_state": "DOWNLOADING", "current_fw_title": "meter", "current_fw_version": "1.0"}),
    );
    report(json!({"fw_state": "FAILED", "fw_error": "Checksum verification failed!"}));
    let now = p
        .firmware
        .of_device(&d.id, Kind::Firmware)
        .unwrap()
        .unwrap();
    assert_eq!(now.state.as_deref(), Some("FAILED"));
    assert_eq!(now.error.as_deref(), Some("Checksum verification failed!"));
    assert_eq!(now.current_version.as_deref(), Some("1.0"));
    report(json!({"fw_state": "UPDATED", "fw_error": "", "current_fw_version": "2.0"}));
    let now = p
        .firmware
        .of_device(&d.id, Kind::Firmware)
        .unwrap()
        .unwrap();
    assert_eq!((now.state.as_deref(), now.error), (Some("UPDATED"), None));
    assert_eq!(now.current_version.as_deref(), Some("2.0"));
    // An assigned package stays.
    assert!(matches!(
        p.firmware.delete(&pkg.id),
        Err(CoreError::Conflict(_))
    ));
}

#[test]
fn a_profile_package_reaches_its_devices_and_those_that_join() {
    let t = TestPlatform::new();
    let p = &t.platform;
    let tenant = p.registry.tenant("default").unwrap().id;
    let profile = p
        .registry
        .create_profile(
            &tenant,
            crate::model::NewProfile {
                name: "meters".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let device = |name: &str, profile: Option<&str>| {
        p.registry
            .create_device(
                &tenant,
                NewDevice {
                    name: name.into(),
                    profile: profile.map(str::to_string),
                    ..Default::default()
                },
            )
            .unwrap()
            .0
            .id
    };
    let (m1, other) = (device("m1", Some("meters")), device("x1", None));
    let pkg = p
        .firmware
        .create(&tenant, package("meter", "4.0", None), b"meter image")
        .unwrap();
    let assigned = p.assign_profile_firmware(&profile.id, &pkg.id, 1).unwrap();
    assert_eq!(assigned.devices, 1);
    let version = |d: &str| {
        p.attributes
            .values(d, Scope::Shared, None)
            .unwrap()
            .get("fw_version")
            .cloned()
    };
    assert_eq!(version(&m1), Some(json!("4.0")));
    assert_eq!(version(&other), None, "another profile's device");
    // A device that joins later gets it at the driver's next pass; one with its own keeps it.
    let m2 = device("m2", Some("meters"));
    let own = p
        .firmware
        .create(&tenant, package("meter", "4.1-beta", None), b"beta")
        .unwrap();
    let m3 = device("m3", Some("meters"));
    p.assign_firmware(&m3, &own.id).unwrap();
    assert_eq!(version(&m2), None);
    p.campaign_step(crate::db::now_ms()).unwrap();
    assert_eq!(version(&m2), Some(json!("4.0")));
    assert_eq!(version(&m3), Some(json!("4.1-beta")));
    assert_eq!(
        p.profile_firmware(&profile.id, Kind::Firmware)
            .unwrap()
            .unwrap()
            .package
            .id,
        pkg.id
    );
    assert!(matches!(
        p.firmware.delete(&pkg.id),
        Err(CoreError::Conflict(_))
    ));
    // Unassigned: new devices get nothing; assigned ones keep theirs.
    assert!(p
        .unassign_profile_firmware(&profile.id, Kind::Firmware)
        .unwrap());
    let m4 = device("m4", Some("meters"));
    p.campaign_step(crate::db::now_ms()).unwrap();
    assert_eq!(version(&m4), None);
    assert_eq!(version(&m1), Some(json!("4.0")));
    assert!(!p
        .unassign_profile_firmware(&profile.id, Kind::Firmware)
        .unwrap());
    // Another tenant's package does not exist for this profile.
    let other_tenant = p.registry.create_tenant("t2").unwrap();
    let foreign = p
        .firmware
        .create(&other_tenant.id, package("meter", "9", None), b"x")
        .unwrap();
    assert!(matches!(
        p.assign_profile_firmware(&profile.id, &foreign.id, 1),
        Err(CoreError::NotFound(_))
    ));
}
