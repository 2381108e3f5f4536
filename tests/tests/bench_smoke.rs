//! Smoke test of `qam-bench --quick`: every scenario runs end to end against the built qamd
//! (tiny sizes, cheap hashing) and prints its table; the numbers themselves are not judged.

use qam_tests::bin;
use std::process::Command;

#[test]
fn quick_benchmark_runs_every_scenario() {
    let output = Command::new(bin("qam-bench"))
        .arg("--quick")
        .arg("--qamd")
        .arg(bin("qamd"))
        .output()
        .expect("run qam-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "qam-bench failed: {stderr}\n{stdout}"
    );
    for scenario in [
        "| 1 qamd verify",
        "| 2 qamd exists",
        "| 3 qamd exists",
        "| 4 qamd verify accepted",
        "| 5 qamd lookup",
        "| 6 qamd change_password",
        "| 6 qamd lock/unlock",
        "| 7 qamd userdb GetUserRecord",
        "| 7 baseline: qamd `lookup`",
        "| 3 baseline: echo asked",
        "| 8 qamd register_invite",
        "| 8 qamd reset_password",
        "| 9 qamd first verify of a Prosody SCRAM-SHA-1 account",
        "| 9 qamd verify of those accounts after the upgrade",
    ] {
        assert!(
            stdout.contains(scenario),
            "missing `{scenario}` in:\n{stdout}"
        );
    }
    assert!(stdout.contains("Goals met:"), "{stdout}");
    assert!(
        !stdout.contains("unexpected answers"),
        "qamd gave unexpected answers:\n{stdout}"
    );
}
