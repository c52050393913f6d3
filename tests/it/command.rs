//! `[source] command = [...]`: a program's stdout as the source. It drives a target like a
//! file (and an unchanged output sends 0 requests); a non-zero exit, a timeout or an
//! output that does not parse is a source error (exit 2, nothing sent), its stderr shown.

use std::sync::Arc;

use crate::fakes::Fake;
use crate::harness::*;

/// An environment whose source is `sh export.sh` (written by the test).
fn env(fake: Arc<dyn Fake>, timeout: &str) -> Env {
    let env = Env::new(fake);
    let text = format!(
        "state = \"state/rostersync.db\"\n\n[source]\ncommand = [\"/bin/sh\", \"export.sh\"]\n\
         timeout = \"{timeout}\"\n\n[safety]\nmax_removals = 1000\nmax_removal_ratio = 1.0\n\n{}\n",
        env.fake.target_toml(T)
    );
    std::fs::write(env.config_path(), text).unwrap();
    env
}

/// The program's text: it changes to the config's folder's script (run from the test's
/// working directory, so the path is absolute).
fn script(env: &Env, body: &str) {
    std::fs::write(env.path("export.sh"), body).unwrap();
    let cfg = std::fs::read_to_string(env.config_path()).unwrap();
    let cfg = cfg.replace(
        "\"export.sh\"",
        &format!("{:?}", env.path("export.sh").display().to_string()),
    );
    std::fs::write(env.config_path(), cfg).unwrap();
}

#[test]
fn a_program_drives_a_target_and_an_unchanged_output_sends_nothing() {
    let fake = crate::fakes::maestro::FakeMaestro::start();
    let env = env(fake.clone(), "10s");
    for i in 1..=3 {
        fake.add_user(&email(i));
    }
    script(
        &env,
        "cat <<'EOF'\n{\"groups\": [{\"name\": \"Tier 1\", \"members\": [\"agent001@example.com\", \"agent002@example.com\"]}]}\nEOF\n",
    );
    env.sync().expect(0);
    assert_eq!(fake.groups().len(), 1);
    fake.clear_requests();
    let r = env.sync().expect(0);
    assert!(fake.requests().is_empty(), "no-op: 0 requests");
    assert!(r.stdout.contains("unchanged since run 1"), "{}", r.stdout);
    // YAML output too
    script(
        &env,
        "cat <<'EOF'\ngroups:\n  - name: Tier 1\n    members: [agent001@example.com, agent003@example.com]\nEOF\n",
    );
    env.sync().expect(0);
    let g = fake.groups();
    assert!(g["Tier 1"].contains(&email(3)) && !g["Tier 1"].contains(&email(2)));
}

#[test]
fn a_failing_program_is_a_source_error_with_its_stderr() {
    let fake = crate::fakes::maestro::FakeMaestro::start();
    let env = env(fake.clone(), "500ms");
    for (body, needle) in [
        (
            "echo 'HR API said 503' >&2\necho '{\"groups\": []}'\nexit 3\n",
            "exited with status 3",
        ),
        (
            "echo 'still exporting' >&2\nexec sleep 20\n",
            "longer than the timeout",
        ),
        ("echo '{\"groups\": [ {\"name\": '\n", "error"),
        ("echo '{\"groups\": []}'\n", "remove everybody"),
        ("exit 0\n", "wrote nothing"),
    ] {
        script(&env, body);
        let r = env.sync();
        assert_eq!(r.code, 2, "{body}: {}", r.stderr);
        assert!(
            r.stderr.contains(needle),
            "{body}: {needle:?} in {}",
            r.stderr
        );
        assert!(fake.requests().is_empty(), "{body}: nothing sent");
        if body.contains("HR API") {
            assert!(
                r.stderr.contains("HR API said 503"),
                "stderr shown: {}",
                r.stderr
            );
        }
        if body.contains("sleep") {
            assert!(r.stderr.contains("still exporting"), "{}", r.stderr);
        }
    }
}
