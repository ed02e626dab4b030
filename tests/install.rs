//! The release story through the real binary: a `triage` copied alone into an empty directory
//! classifies and routes `auto` with its compiled-in model, and the README's "try it" commands
//! (`init --demo`, `mock-upstream`, `serve`, `curl`) work exactly as written.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Kills the process when the test ends, pass or fail.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The built binary, copied into a fresh directory with nothing else in it.
fn binary_alone() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("triage");
    std::fs::copy(env!("CARGO_BIN_EXE_triage"), &copy).unwrap();
    // A process another test forks while the copy is being written inherits the write handle
    // until it execs, and executing the copy meanwhile fails with "Text file busy": wait until
    // it runs once.
    for _ in 0..100 {
        match Command::new(&copy).arg("--version").output() {
            Err(error) if error.raw_os_error() == Some(26) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => break,
        }
    }
    (dir, copy)
}

/// A command with no environment but what is given: no key, no TRIAGE_CONFIG, no HF_HOME.
fn bare(program: &Path, cwd: &Path) -> Command {
    let mut command = Command::new(program);
    command.current_dir(cwd).env_clear().stdin(Stdio::null());
    command
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `url` until it answers 200, or panics after 20 s with the log.
async fn wait_healthy(url: &str, log: &Path) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if let Ok(response) = client.get(url).send().await
            && response.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{url} never answered; log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

#[test]
fn a_copied_binary_classifies_from_an_empty_directory() {
    let (dir, triage) = binary_alone();
    let output = bare(&triage, dir.path())
        .args([
            "classify",
            "--json",
            "Prove that there are infinitely many primes of the form 4k+3.",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let view: Value = serde_json::from_slice(&output.stdout).unwrap();
    let skills = view["skills"].as_object().unwrap();
    let top = skills
        .iter()
        .max_by(|a, b| a.1.as_f64().unwrap().total_cmp(&b.1.as_f64().unwrap()))
        .unwrap()
        .0;
    assert_eq!(top, "math", "{view}");
    // Nothing was read from or written to the directory but the binary itself.
    let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(entries.len(), 1);
}

#[tokio::test]
async fn a_copied_binary_serves_auto_with_the_builtin_catalog_and_classifier() {
    let (dir, triage) = binary_alone();
    let port = free_port();
    let log_path = dir.path().join("serve.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let _serve = Running(
        bare(&triage, dir.path())
            // One provider key, so that `auto` has models to choose from; nothing else.
            .env("OPENAI_API_KEY", "sk-test-not-used")
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let url = format!("http://127.0.0.1:{port}");
    wait_healthy(&format!("{url}/health"), &log_path).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let body = json!({"model": "auto", "messages": [
        {"role": "user", "content": "Write a Rust function that merges two sorted vectors."}
    ]});
    let response = client
        .post(format!("{url}/v1/route"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let decision: Value = response.json().await.unwrap();
    assert_eq!(decision["route"], "auto", "{decision}");
    assert_eq!(decision["classifier"]["top_skill"], "code", "{decision}");
    let chosen = decision["chosen"]["model"].as_str().unwrap();
    assert!(chosen.starts_with("openai/"), "{decision}");
    // The container health check: 0 on 200, 1 on anything else or nobody listening.
    let health = |target: &str| {
        bare(&triage, dir.path())
            .args(["health", "--url", target])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(health(&format!("{url}/health")));
    assert!(!health(&format!("{url}/no-such-path")));
    assert!(!health(&format!("http://127.0.0.1:{}/health", free_port())));
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("built-in defaults"), "{log}");
    assert!(log.contains("model=builtin"), "{log}");
}

/// The README's try-it block: the lines between the markers, in order.
fn readme_try_it() -> Vec<String> {
    let readme = include_str!("../README.md");
    let start = readme
        .find("<!-- try-it -->")
        .expect("README has a try-it block");
    let end = readme
        .find("<!-- /try-it -->")
        .expect("the try-it block ends");
    readme[start..end]
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("triage ") || line.starts_with("curl "))
        // The comments are for the reader (`… &   # what it is`).
        .map(|line| {
            line.split(" #")
                .next()
                .unwrap_or(line)
                .trim_end()
                .to_string()
        })
        .collect()
}

/// Runs the README's commands as written, in an empty directory with the binary on PATH and no
/// other variable set: background lines (`… &`) are started, the others run until they exit 0
/// (retried for a while, as a person would retry a `curl` sent before the server was up).
#[test]
fn the_readme_try_it_commands_work_as_written() {
    let (dir, _) = binary_alone();
    let lines = readme_try_it();
    let firsts: Vec<&str> = lines
        .iter()
        .map(|l| l.split_whitespace().take(2).last().unwrap())
        .collect();
    assert!(firsts.contains(&"init"), "{lines:?}");
    assert!(lines.iter().filter(|l| l.starts_with("curl ")).count() >= 2);
    let path = format!("{}:/usr/bin:/bin", dir.path().display());
    let shell = |line: &str| {
        let mut command = bare(Path::new("bash"), dir.path());
        command.env("PATH", &path).args(["-c", line]);
        command
    };
    let mut background = Vec::new();
    let mut answers = Vec::new();
    for line in &lines {
        if let Some(command) = line.strip_suffix('&') {
            let log = std::fs::File::create(dir.path().join(format!("bg{}.log", background.len())))
                .unwrap();
            let child = shell(&format!("exec {command}"))
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            background.push(Running(child));
            continue;
        }
        let started = Instant::now();
        let output = loop {
            let output = shell(line).output().unwrap();
            if output.status.success() || started.elapsed() > Duration::from_secs(20) {
                break output;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(
            output.status.success(),
            "`{line}` failed: {}{}",
            String::from_utf8_lossy(&output.stderr),
            background_logs(dir.path())
        );
        if line.starts_with("curl ") {
            answers.push(String::from_utf8_lossy(&output.stdout).into_owned());
        }
    }
    for answer in &answers {
        let answer: Value = serde_json::from_str(answer)
            .unwrap_or_else(|e| panic!("{e}: {answer}{}", background_logs(dir.path())));
        assert!(
            answer["choices"][0]["message"]["content"].is_string(),
            "{answer}"
        );
        // The mock echoes the upstream model names the demo config gives.
        let model = answer["model"].as_str().unwrap();
        assert!(["small-model", "large-model"].contains(&model), "{answer}");
    }
    assert!(dir.path().join("triage.toml").is_file());

    // The demo's `auto` tells its two models apart: a greeting to the small one, a proof to
    // the large one.
    for (prompt, expected) in [
        ("hi, how are you?", "demo/small"),
        ("Prove the Riemann hypothesis", "demo/large"),
    ] {
        let body = json!({"model": "auto", "messages": [{"role": "user", "content": prompt}]});
        let output = shell(&format!("curl -s localhost:8080/v1/route -d '{body}'"))
            .output()
            .unwrap();
        let decision: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{e}{}", background_logs(dir.path())));
        assert_eq!(
            decision["chosen"]["model"], expected,
            "{prompt}: {decision}"
        );
    }
}

fn background_logs(dir: &Path) -> String {
    (0..4)
        .filter_map(|i| std::fs::read_to_string(dir.join(format!("bg{i}.log"))).ok())
        .collect::<Vec<_>>()
        .join("\n---\n")
}
