//! `ensi demo` end to end with the real backend: the built-in model written
//! to disk, keys generated, the HTTP server on a loopback port, the client's
//! encrypted round, and the decrypted token checked against the ENSI twin by
//! the demo itself (it fails when they differ). insecure-boot-n12 (NOT
//! secure) and a 3-token prompt, so that the dense layout fits N = 2^12 and
//! the round takes well under a minute.

use std::process::Command;

#[test]
fn demo_round_on_loopback_matches_the_twin() {
    let work = std::env::temp_dir().join(format!("ensi-demo-test-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_ensi"))
        .args([
            "demo",
            "--preset",
            "insecure-boot-n12",
            "--prompt",
            "Hi",
            "--max-new-tokens",
            "1",
            "--work-dir",
        ])
        .arg(&work)
        .output()
        .expect("run ensi demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    assert!(out.status.success(), "ensi demo failed");
    assert!(
        stdout.contains("INSECURE"),
        "the insecure preset is not labeled"
    );
    assert!(
        stdout.contains("encrypted tokens match the ENSI twin's"),
        "tokens differ"
    );
    // The keys the client wrote: secret key private, layout recorded.
    let info = std::fs::read_to_string(work.join("keys/keys.json")).unwrap();
    assert!(info.contains("\"layout\": \"dense\""), "{info}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(work.join("keys/secret.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let _ = std::fs::remove_dir_all(&work);
}
