//! Starting up: a backend that does not answer stops segflow with an error naming it.

use segflow::config::{Config, Secret};

/// A backend that does not answer at start stops the engine with an error naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_down_at_start_is_named() {
    let data = tempfile::tempdir().unwrap();
    let closed = |change: fn(&mut Config)| {
        let mut config = Config { data_dir: data.path().to_path_buf(), ..Config::default() };
        change(&mut config);
        config
    };
    type Case = (fn(&mut Config), &'static str);
    let cases: [Case; 3] = [
        (|c| c.kafka = Some("127.0.0.1:1".into()), "Kafka at 127.0.0.1:1"),
        (
            |c| {
                c.s3_endpoint = Some("http://127.0.0.1:1".into());
                c.s3_access_key = Some("k".into());
                c.s3_secret_key = Some(Secret("s".into()));
            },
            "S3 at http://127.0.0.1:1",
        ),
        (|c| c.mongo_uri = Some("mongodb://127.0.0.1:1/".into()), "MongoDB at 127.0.0.1:1"),
    ];
    for (change, named) in cases {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let error = segflow::engine::run(closed(change), listener, std::future::pending()).await.unwrap_err();
        assert!(error.to_string().contains(named), "{error} should name {named}");
    }
}

/// `segflow run` says it listens only once every backend has answered: with a broker that does
/// not answer it prints nothing on stdout, and exits non-zero with an error naming it, without
/// terminal colour codes in a file.
#[test]
fn listening_is_printed_only_once_the_backends_answered() {
    let data = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_segflow"))
        .args(["run", "--listen", "127.0.0.1:0", "--kafka", "127.0.0.1:1", "--data-dir"])
        .arg(data.path())
        .output()
        .expect("the segflow binary runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(!output.status.success(), "{stderr}");
    assert_eq!(stdout, "", "nothing on stdout; stderr: {stderr}");
    assert!(stderr.contains("Kafka at 127.0.0.1:1"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "no colour codes when stderr is not a terminal: {stderr:?}");
}
