//! `fulcrum init`, as a person would use it: the dialogue typed into a real
//! pseudo-terminal (with a typo corrected at the prompt, a live probe of a server
//! that is up and of one that is down, a test e-mail to a local SMTP sink), and
//! the file it writes validated, run, and failing over; the non-interactive mode
//! and an answers file giving the byte-identical file.

use rexpect::session::{PtySession, spawn_with_options};
use std::net::SocketAddr;
use std::process::Command;
use testkit::backend::TestBackend;
use testkit::smtp::SmtpSink;
use testkit::{Fulcrum, TempDir, bin, client, free_addr};

/// Waits for `text` on the terminal, then types `keys` (`\r` is Enter).
fn answer(p: &mut PtySession, text: &str, keys: &str) {
    if let Err(e) = p.exp_string(text) {
        panic!("the dialogue never showed `{text}`: {e}");
    }
    p.send(keys).unwrap();
    p.flush().unwrap();
}

#[derive(Clone, Copy)]
struct Setup {
    up: SocketAddr,
    down: SocketAddr,
    backup: SocketAddr,
    smtp_port: u16,
    listen: SocketAddr,
    admin: SocketAddr,
}

/// Types the whole dialogue; returns what the terminal showed after the last answer.
fn type_dialogue(s: &Setup, out: &std::path::Path, answers: &std::path::Path) -> String {
    let mut cmd = Command::new(bin());
    cmd.args(["init", "-o"])
        .arg(out)
        .arg("--save-answers")
        .arg(answers)
        .env("TERM", "xterm");
    let opts = rexpect::reader::Options::new()
        .timeout_ms(Some(20_000))
        .strip_ansi_escape_codes(true);
    let mut p = spawn_with_options(cmd, opts).expect("spawn fulcrum init in a pty");
    answer(&mut p, "Host names of the site", "app.test\r");
    answer(&mut p, "Health check path", "\r");
    answer(&mut p, "Status that counts as healthy", "\r");
    // A duration without a unit: refused with validate's message, then fixed in place.
    answer(&mut p, "Check every", "5\r");
    answer(&mut p, "interval: duration `5` needs a unit", "00ms\r");
    answer(&mut p, "Timeout of one check", "\r");
    answer(&mut p, "Failed checks in a row", "1\r");
    answer(&mut p, "Passed checks in a row", "\r");
    // A bad port: refused, erased, retyped.
    answer(&mut p, "Application server (host:port", "127.0.0.1:99999\r");
    let fix = format!("{}{}\r", "\x7f".repeat(5), s.up.port());
    answer(
        &mut p,
        "invalid backend address `127.0.0.1:99999`: bad port `99999`",
        &fix,
    );
    answer(
        &mut p,
        &format!("{}: GET /health answered 200 OK", s.up),
        "",
    );
    answer(&mut p, &format!("Weight of {}", s.up), "\r");
    answer(
        &mut p,
        "Another application server",
        &format!("{}\r", s.down),
    );
    answer(
        &mut p,
        &format!("{}: GET /health did not answer: connection refused", s.down),
        "",
    );
    answer(&mut p, &format!("Keep {} anyway?", s.down), "n\r");
    answer(&mut p, "Another application server", "\r");
    answer(&mut p, "Backup server", &format!("{}\r", s.backup));
    answer(
        &mut p,
        &format!("{}: GET /health answered 200 OK", s.backup),
        "",
    );
    answer(&mut p, &format!("Level of {}", s.backup), "\r");
    answer(&mut p, &format!("Region of {}", s.backup), "eu-west\r");
    answer(&mut p, "Another backup server", "\r");
    answer(&mut p, "How should requests be spread", "\r");
    answer(&mut p, "how should traffic move to the backups", "\r");
    answer(&mut p, "Recovery interval", "1s\r");
    answer(&mut p, "Post each failover to a webhook", "\r");
    answer(&mut p, "Send an e-mail on each failover", "y\r");
    answer(&mut p, "SMTP server", "127.0.0.1\r");
    answer(&mut p, "SMTP port", &format!("{}\r", s.smtp_port));
    answer(&mut p, "SMTP user", "\r");
    answer(&mut p, "Sender address", "\r");
    // An address without a domain: refused, then completed.
    answer(&mut p, "Send to", "ops@\r");
    answer(&mut p, "invalid e-mail address `ops@`", "example.com\r");
    answer(&mut p, "Send a test message now?", "\r");
    answer(&mut p, "the server accepted the test message", "");
    answer(&mut p, "HTTPS?", "\r");
    answer(&mut p, "Address to serve on", &format!("{}\r", s.listen));
    answer(
        &mut p,
        "Admin API and dashboard address",
        &format!("{}\r", s.admin),
    );
    answer(&mut p, "Show a systemd unit", "y\r");
    let rest = p.exp_eof().expect("fulcrum init ends");
    assert!(rest.contains("Wrote"), "{rest}");
    rest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialogue_writes_a_config_that_runs_and_fails_over() {
    let dir = TempDir::new("init");
    let mut primary = TestBackend::echo("primary").await;
    let backup = TestBackend::echo("backup").await;
    let sink = SmtpSink::start().await;
    let setup = Setup {
        up: primary.addr,
        down: free_addr(),
        backup: backup.addr,
        smtp_port: sink.addr.port(),
        listen: free_addr(),
        admin: free_addr(),
    };
    let out = dir.path("fulcrum.yaml");
    let saved = dir.path("answers.yaml");
    let (o, a) = (out.clone(), saved.clone());
    let shown = tokio::task::spawn_blocking(move || type_dialogue(&setup, &o, &a))
        .await
        .unwrap();

    // What the person is told at the end.
    let path = out.display().to_string();
    assert!(shown.contains(&format!("run -c {path}")), "{shown}");
    assert!(shown.contains("ExecStart="), "{shown}");
    assert!(shown.contains("backups       "), "{shown}");
    // The test message really went out.
    let mails = sink.mails.lock().unwrap().clone();
    assert_eq!(mails.len(), 1);
    assert!(mails[0].data.contains("failover.test"), "{}", mails[0].data);

    let text = std::fs::read_to_string(&out).unwrap();
    assert!(!text.contains(&setup.down.to_string()), "{text}");
    let token = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .unwrap()
        .trim_matches('"')
        .to_string();
    assert_eq!(token.len(), 64);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let v = Command::new(bin())
        .args(["validate", "-c", &path])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&v.stdout), "ok\n");

    // The same answers as flags give the same bytes.
    let flags_out = dir.path("flags.yaml");
    let st = Command::new(bin())
        .args(["init", "--non-interactive", "-o"])
        .arg(&flags_out)
        .args(["--host", "app.test", "--health-interval", "500ms"])
        .args(["--unhealthy-threshold", "1"])
        .args(["--server", &setup.up.to_string()])
        .args(["--backup", &format!("{},region=eu-west", setup.backup)])
        .args(["--recovery-interval", "1s", "--smtp-server", "127.0.0.1"])
        .args(["--smtp-port", &setup.smtp_port.to_string()])
        .args(["--email-to", "ops@example.com"])
        .args(["--listen", &setup.listen.to_string()])
        .args(["--admin", &setup.admin.to_string(), "--admin-token", &token])
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    assert_eq!(std::fs::read_to_string(&flags_out).unwrap(), text);
    // And so does the answers file the dialogue saved.
    let replay_out = dir.path("replay.yaml");
    let st = Command::new(bin())
        .args(["init", "-o"])
        .arg(&replay_out)
        .arg("--answers")
        .arg(&saved)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    assert_eq!(std::fs::read_to_string(&replay_out).unwrap(), text);

    // It runs: traffic to the primary, then to the backup once the primary stops.
    let f = Fulcrum::spawn(
        dir,
        out.clone(),
        &["--log-format", "json", "run", "-c", &path],
    );
    for _ in 0..5 {
        let r = client::get_host(setup.listen, "app.test", "/").await;
        assert_eq!(r.header("x-backend").as_deref(), Some("primary"));
    }
    primary.stop();
    testkit::eventually("traffic on the backup", || async {
        let r = client::get_host(setup.listen, "app.test", "/").await;
        (r.header("x-backend").as_deref() == Some("backup")).then_some(())
    })
    .await;
    f.stderr
        .wait_for("the failover event", |l| l.contains("failover.activated"));
}

#[test]
fn refuses_to_overwrite_and_reports_every_bad_flag() {
    let dir = TempDir::new("init-flags");
    let existing = dir.write("fulcrum.yaml", "# mine\n");
    let out = Command::new(bin())
        .args(["init", "--non-interactive", "--server", "127.0.0.1:9", "-o"])
        .arg(&existing)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists: use --force"));
    assert_eq!(std::fs::read_to_string(&existing).unwrap(), "# mine\n");

    let out = Command::new(bin())
        .args(["init", "--non-interactive", "-o"])
        .arg(dir.path("bad.yaml"))
        .args(["--server", "10.0.0.1:99999", "--health-timeout", "2"])
        .args([
            "--backup",
            "10.0.0.2:80,level=0",
            "--failover-strategy",
            "gracefull",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "invalid backend address `10.0.0.1:99999`: bad port `99999`",
        "timeout: duration `2` needs a unit",
        "a backup needs failover_level 1 or more",
        "strategy must be one of immediate | graceful | delayed, found `gracefull` (did you mean `graceful`?)",
    ] {
        assert!(err.contains(expected), "missing `{expected}` in:\n{err}");
    }
    assert!(!dir.path("bad.yaml").exists());

    // --force replaces the file; with no terminal and no flags, init says what to do.
    let out = Command::new(bin())
        .args([
            "init",
            "--non-interactive",
            "--force",
            "--server",
            "127.0.0.1:9",
            "-o",
        ])
        .arg(&existing)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read_to_string(&existing)
            .unwrap()
            .contains("127.0.0.1:9")
    );
    let mut no_tty = Command::new(bin());
    no_tty
        .args(["init", "-o"])
        .arg(dir.path("tty.yaml"))
        .stdin(std::process::Stdio::null());
    // A new session has no controlling terminal, even when the tests run in one.
    unsafe {
        use std::os::unix::process::CommandExt;
        no_tty.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let out = no_tty.output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--non-interactive"));
}
