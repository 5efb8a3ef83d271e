//! S3 settings are checked when the server starts: a bucket Berth cannot write, read
//! and delete in stops `berth serve` with a message that names the settings to fix,
//! instead of a 500 at the first push; an endpoint that is an IP address or
//! `localhost` gets path-style addressing unless the configuration says otherwise.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::Berth;

/// `berth serve` with these S3 settings in a fresh data dir: its exit status and
/// standard error, or `None` when it is still running after `limit` (it is killed).
fn serve_exit(envs: &[(String, String)], limit: Duration) -> Option<(bool, String)> {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .current_dir(dir.path())
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .env("BERTH_INITIAL_ROOT_PASSWORD", support::ROOT_PASSWORD)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn berth");
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return Some((
                status.success(),
                String::from_utf8_lossy(&out.stderr).into(),
            ));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn without(envs: &[(String, String)], key: &str) -> Vec<(String, String)> {
    envs.iter().filter(|(k, _)| k != key).cloned().collect()
}

fn with(envs: &[(String, String)], key: &str, value: &str) -> Vec<(String, String)> {
    let mut e = without(envs, key);
    e.push((key.to_string(), value.to_string()));
    e
}

#[test]
fn a_missing_bucket_stops_the_server_naming_the_setting() {
    let Some(envs) = support::s3_env() else {
        return;
    };
    let envs = with(&envs, "BERTH_S3_BUCKET", "no-such-bucket-for-berth");
    let (ok, err) = serve_exit(&envs, Duration::from_secs(120))
        .expect("berth serve should stop when its bucket does not exist");
    assert!(!ok, "exit status is a failure");
    assert!(err.contains("S3 blob storage is not usable"), "{err}");
    assert!(
        err.contains("storage.s3.bucket (BERTH_S3_BUCKET, now \"no-such-bucket-for-berth\""),
        "names the setting and its value: {err}"
    );
}

#[test]
fn virtual_hosted_addressing_at_an_ip_endpoint_stops_the_server_naming_path_style() {
    let Some(envs) = support::s3_env() else {
        return;
    };
    // What the issue saw: virtual-hosted style against http://127.0.0.1:PORT sends
    // every key to the endpoint without the bucket, and S3 answers NoSuchBucket.
    let envs = with(&envs, "BERTH_S3_PATH_STYLE", "false");
    let (ok, err) = serve_exit(&envs, Duration::from_secs(120))
        .expect("berth serve should stop when its requests miss the bucket");
    assert!(!ok);
    assert!(
        err.contains("storage.s3.path_style (BERTH_S3_PATH_STYLE, now false"),
        "names the addressing setting: {err}"
    );
}

#[test]
fn an_ip_endpoint_without_path_style_set_uses_path_style_and_serves() {
    let Some(envs) = support::s3_env() else {
        return;
    };
    let envs = without(&envs, "BERTH_S3_PATH_STYLE");
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let berth = Berth::start_with(&[], &envs);
    berth.project("s3grp/app", "private");
    let resp = berth.token(
        Some(("root", support::ROOT_PASSWORD)),
        &["repository:s3grp/app/img:push,pull"],
    );
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().unwrap();
    let token = body["token"].as_str().expect("token").to_string();
    let blob = support::random_bytes(4096);
    let digest = format!("sha256:{}", support::sha256_hex(&blob));
    let http = reqwest::blocking::Client::new();
    let r = http
        .post(format!(
            "{}/v2/s3grp/app/img/blobs/uploads/?digest={digest}",
            berth.url
        ))
        .bearer_auth(&token)
        .header("Content-Type", "application/octet-stream")
        .body(blob.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().unwrap_or_default());
    let back = http
        .get(format!("{}/v2/s3grp/app/img/blobs/{digest}", berth.url))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(back.status(), 200);
    assert_eq!(back.bytes().unwrap().as_ref(), blob.as_slice());
}
