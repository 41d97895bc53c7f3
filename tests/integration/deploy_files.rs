//! The Docker deployment files (docker-compose.yml, Dockerfile, deploy/) checked with real
//! parsers, because neither this machine nor CI has a Docker engine to run them: a YAML parser
//! for compose and Prometheus, a Dockerfile parser, a PromQL parser for the Grafana dashboard,
//! and the real segflow binary, started with the image's own CMD, for the metric names.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use dockerfile_parser::{Dockerfile, Instruction, ShellOrExecExpr, Stage, StageParent};
use promql_parser::parser::{Expr, LabelModifier};
use promql_parser::util::{ExprVisitor, walk_expr};
use serde_json::Value as Json;
use serde_norway::Value as Yaml;

/// The backends segflow's compose service must wait for (healthy, not just started).
const BACKENDS: [&str; 3] = ["kafka", "minio", "mongodb"];
/// The settings (legacy names) that point segflow's compose services at the backends.
const BACKEND_ENV: [&str; 6] = [
    "KAFKA_BOOTSTRAP_SERVERS",
    "MINIO_ENDPOINT",
    "MINIO_PUBLIC_ENDPOINT",
    "MINIO_ROOT_USER",
    "MINIO_ROOT_PASSWORD",
    "MONGO_URI",
];
/// The compose services of the two-process cluster, in process order.
const CLUSTER: [&str; 2] = ["segflow-cluster-0", "segflow-cluster-1"];
/// Every metric family the dashboard must chart.
const CHARTED: [&str; 13] = [
    "api_requests_total",
    "chunk_checksum_failures_total",
    "chunk_processing_latency_seconds",
    "live_chunk_gaps_total",
    "segflow_dead_letters_total",
    "segflow_live_chunks_total",
    "segflow_live_gap_slots",
    "segflow_live_gaps_filled_total",
    "segflow_log_appends_total",
    "segflow_playlists_written_total",
    "segflow_sink_retries_total",
    "segflow_vod_processing_seconds",
    "segflow_vod_videos_total",
];
/// Series Prometheus adds to every scrape itself; they never appear in /metrics.
const SCRAPE_SERIES: [&str; 5] = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];
/// Labels Prometheus attaches to every scraped series (the target's).
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

// ---- files --------------------------------------------------------------------------------

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    let path = repo().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml(relative: &str) -> Yaml {
    serde_norway::from_str(&read(relative)).unwrap_or_else(|e| panic!("{relative} is not valid YAML: {e}"))
}

/// docker-compose.yml with its YAML merge keys (`<<: *anchor`) applied, as compose applies them.
/// `apply_merge` leaves a merge key that a merged mapping brings along, so it runs until
/// nothing changes.
fn compose() -> Yaml {
    let mut compose = yaml("docker-compose.yml");
    loop {
        let before = compose.clone();
        compose.apply_merge().unwrap_or_else(|e| panic!("docker-compose.yml: a bad merge key: {e}"));
        if compose == before {
            return compose;
        }
    }
}

fn dockerfile() -> Dockerfile {
    Dockerfile::parse(&read("Dockerfile")).unwrap_or_else(|e| panic!("Dockerfile does not parse: {e}"))
}

fn dashboard() -> Json {
    serde_json::from_str(&read("deploy/grafana/dashboards/segflow.json"))
        .unwrap_or_else(|e| panic!("the dashboard is not valid JSON: {e}"))
}

// ---- compose helpers ------------------------------------------------------------------------

fn service<'a>(compose: &'a Yaml, name: &str) -> &'a Yaml {
    compose["services"].get(name).unwrap_or_else(|| panic!("docker-compose.yml has no service {name:?}"))
}

fn scalar(value: &Yaml) -> Option<String> {
    match value {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Number(n) => Some(n.to_string()),
        Yaml::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A service's `environment`, in either compose form (mapping or `KEY=VALUE` list), as written.
fn environment(service: &Yaml) -> BTreeMap<String, String> {
    match &service["environment"] {
        Yaml::Mapping(map) => {
            map.iter().map(|(k, v)| (scalar(k).expect("string key"), scalar(v).unwrap_or_default())).collect()
        }
        Yaml::Sequence(list) => list
            .iter()
            .map(|item| {
                let item = item.as_str().expect("KEY=VALUE");
                let (k, v) = item.split_once('=').unwrap_or((item, ""));
                (k.to_string(), v.to_string())
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// `environment[key]` with every `${VAR:-default}` replaced by its default: what
/// `docker compose up` uses when neither the shell nor a `.env` file sets the variable.
fn env_default(service: &Yaml, key: &str) -> String {
    let raw = environment(service).remove(key).unwrap_or_else(|| panic!("environment has no {key}"));
    resolve_defaults(&raw).unwrap_or_else(|e| panic!("{key}: {e}"))
}

/// (host port, container port) pairs of a service's `ports`, short or long syntax.
fn ports(service: &Yaml) -> Vec<(Option<u16>, u16)> {
    let Some(list) = service["ports"].as_sequence() else { return Vec::new() };
    list.iter()
        .map(|entry| match entry {
            Yaml::Mapping(_) => (
                scalar(&entry["published"]).map(|p| p.parse().expect("published port")),
                scalar(&entry["target"]).expect("target port").parse().expect("target port"),
            ),
            _ => {
                let text = scalar(entry).expect("port mapping");
                let text = text.split('/').next().unwrap();
                let parts: Vec<&str> = text.split(':').collect();
                let container = parts.last().unwrap().parse().unwrap_or_else(|_| panic!("port {text:?}"));
                let host = (parts.len() >= 2).then(|| parts[parts.len() - 2].parse().expect("host port"));
                (host, container)
            }
        })
        .collect()
}

fn container_ports(service: &Yaml) -> BTreeSet<u16> {
    ports(service).into_iter().map(|(_, c)| c).collect()
}

/// The ports of a service's `expose` (reachable from the other containers, not published).
fn exposed(service: &Yaml) -> BTreeSet<u16> {
    let Some(list) = service["expose"].as_sequence() else { return BTreeSet::new() };
    list.iter().map(|p| scalar(p).and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("expose {p:?}"))).collect()
}

/// One entry of a service's `volumes`: a bind mount (host path) or a named volume.
#[derive(Debug)]
struct Mount {
    source: String,
    target: String,
    bind: bool,
}

fn mounts(service: &Yaml) -> Vec<Mount> {
    let Some(list) = service["volumes"].as_sequence() else { return Vec::new() };
    list.iter()
        .map(|entry| match entry {
            Yaml::Mapping(_) => Mount {
                source: scalar(&entry["source"]).unwrap_or_default(),
                target: scalar(&entry["target"]).expect("volume target"),
                bind: entry["type"].as_str() == Some("bind"),
            },
            _ => {
                let text = scalar(entry).expect("volume entry");
                let parts: Vec<&str> = text.split(':').collect();
                assert!((2..=3).contains(&parts.len()), "volume {text:?}: SOURCE:TARGET[:MODE] expected");
                let source = parts[0].to_string();
                let bind = source.starts_with('.') || source.starts_with('/') || source.starts_with('~');
                Mount { source, target: parts[1].to_string(), bind }
            }
        })
        .collect()
}

/// The repository file a container path of `service` comes from, through a bind mount.
fn host_path(service: &Yaml, container_path: &str) -> Option<PathBuf> {
    mounts(service).into_iter().filter(|m| m.bind).find_map(|m| {
        let rest = container_path.strip_prefix(m.target.trim_end_matches('/'))?;
        let source = repo().join(&m.source);
        match rest.strip_prefix('/') {
            _ if rest.is_empty() => Some(source),
            Some(inside) => Some(source.join(inside)),
            None => None, // `/etc/foo` is not under a mount at `/etc/fo`
        }
    })
}

/// Calls `f` on every string in a YAML document, keys included, with its path.
fn each_string(value: &Yaml, path: &str, f: &mut dyn FnMut(&str, &str)) {
    match value {
        Yaml::String(s) => f(path, s),
        Yaml::Sequence(list) => {
            for (i, item) in list.iter().enumerate() {
                each_string(item, &format!("{path}[{i}]"), f);
            }
        }
        Yaml::Mapping(map) => {
            for (k, v) in map {
                let key = scalar(k).unwrap_or_default();
                f(&format!("{path} (key)"), &key);
                each_string(v, &format!("{path}.{key}"), f);
            }
        }
        Yaml::Tagged(tagged) => each_string(&tagged.value, path, f),
        _ => {}
    }
}

// ---- compose interpolation ------------------------------------------------------------------

/// One `$VAR` or `${VAR[op arg]}` of the compose interpolation syntax.
#[derive(Debug, Clone, PartialEq)]
struct Interpolation {
    name: String,
    /// `:-`, `-`, `:?`, `?`, `:+` or `+`, when there is one.
    op: Option<String>,
    arg: String,
}

fn is_name_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

fn name_len(s: &str) -> usize {
    s.bytes().take_while(|c| c.is_ascii_alphanumeric() || *c == b'_').count()
}

/// Parses the interpolations of one compose string, as the compose spec defines them: `$$` is a
/// literal dollar, `$VAR`, `${VAR}` and `${VAR<op><arg>}` (ops `:-` `-` `:?` `?` `:+` `+`, the
/// argument itself interpolated); any other `$` is an error (compose refuses the file).
fn interpolations(s: &str) -> Result<Vec<Interpolation>, String> {
    let bytes = s.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            i += 1;
            continue;
        }
        match bytes.get(i + 1) {
            Some(b'$') => i += 2,
            Some(b'{') => {
                let end = closing_brace(s, i + 2).ok_or_else(|| format!("unclosed `${{` in {s:?}"))?;
                let inner = &s[i + 2..end];
                let n = name_len(inner);
                if n == 0 || !is_name_start(inner.as_bytes()[0]) {
                    return Err(format!("`${{{inner}}}` in {s:?} does not start with a variable name"));
                }
                let rest = &inner[n..];
                let op = [":-", ":?", ":+", "-", "?", "+"].into_iter().find(|op| rest.starts_with(op));
                if op.is_none() && !rest.is_empty() {
                    return Err(format!("`${{{inner}}}` in {s:?}: {rest:?} is not one of :- - :? ? :+ +"));
                }
                let arg = op.map(|op| &rest[op.len()..]).unwrap_or_default();
                found.push(Interpolation { name: inner[..n].to_string(), op: op.map(String::from), arg: arg.into() });
                found.extend(interpolations(arg)?);
                i = end + 1;
            }
            Some(&c) if is_name_start(c) => {
                let n = name_len(&s[i + 1..]);
                found.push(Interpolation { name: s[i + 1..i + 1 + n].to_string(), op: None, arg: String::new() });
                i += 1 + n;
            }
            _ => return Err(format!("lone `$` in {s:?}: write `$$` for a literal dollar")),
        }
    }
    Ok(found)
}

/// The index of the `}` closing a `${` whose body starts at `from`, nested `${…}` skipped.
fn closing_brace(s: &str, from: usize) -> Option<usize> {
    let bytes = s.as_bytes();
    let (mut depth, mut i) = (0usize, from);
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1)) {
            (b'$', Some(b'$')) => i += 2,
            (b'$', Some(b'{')) => {
                depth += 1;
                i += 2;
            }
            (b'}', _) if depth == 0 => return Some(i),
            (b'}', _) => {
                depth -= 1;
                i += 1;
            }
            _ => i += 1,
        }
    }
    None
}

/// `s` with every interpolation replaced by its `:-` default (and `$$` by `$`).
fn resolve_defaults(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut i = 0;
    while let Some(offset) = s[i..].find('$') {
        let start = i + offset;
        out.push_str(&s[i..start]);
        let rest = &s[start..];
        if rest.starts_with("$$") {
            out.push('$');
            i = start + 2;
        } else if rest.starts_with("${") {
            let end = closing_brace(s, start + 2).ok_or("unclosed ${")?;
            let inner = &s[start + 2..end];
            let default =
                inner.split_once(":-").map(|(_, d)| d).ok_or_else(|| format!("${{{inner}}} has no default"))?;
            out.push_str(&resolve_defaults(default)?);
            i = end + 1;
        } else {
            return Err(format!("{rest:?} has no default"));
        }
    }
    out.push_str(&s[i..]);
    Ok(out)
}

// ---- Dockerfile helpers ---------------------------------------------------------------------

fn exec_form(expr: &ShellOrExecExpr, what: &str) -> Vec<String> {
    expr.as_exec()
        .unwrap_or_else(|| panic!("{what} must use the exec form [\"…\"] (a shell form breaks signals)"))
        .as_str_vec()
        .into_iter()
        .map(String::from)
        .collect()
}

/// The final stage's instructions named `keyword` (ENTRYPOINT, CMD and misc ones like USER).
fn misc_args<'a>(stage: &Stage<'a>, keyword: &str) -> Vec<String> {
    stage
        .instructions
        .iter()
        .filter_map(|i| i.as_misc())
        .filter(|m| m.instruction.content.eq_ignore_ascii_case(keyword))
        .map(|m| m.arguments.to_string().trim().to_string())
        .collect()
}

fn run_commands(stage: &Stage<'_>) -> Vec<String> {
    stage
        .instructions
        .iter()
        .filter_map(|i| i.as_run())
        .map(|run| match &run.expr {
            ShellOrExecExpr::Shell(shell) => shell.to_string(),
            ShellOrExecExpr::Exec(exec) => exec.as_str_vec().join(" "),
        })
        .collect()
}

fn entrypoint_and_cmd(file: &Dockerfile) -> (Vec<String>, Vec<String>) {
    let stages = file.stages();
    let last = stages.iter().last().expect("a stage");
    let entrypoint = last.instructions.iter().rev().find_map(|i| i.as_entrypoint()).expect("ENTRYPOINT");
    let cmd = last.instructions.iter().rev().find_map(|i| i.as_cmd()).expect("CMD");
    (exec_form(&entrypoint.expr, "ENTRYPOINT"), exec_form(&cmd.expr, "CMD"))
}

/// The value following `flag` in an argument list (`--flag value` or `--flag=value`).
fn flag_value(args: &[String], flag: &str) -> Option<String> {
    args.iter().enumerate().find_map(|(i, a)| {
        if a == flag {
            args.get(i + 1).cloned()
        } else {
            a.strip_prefix(flag).and_then(|v| v.strip_prefix('=')).map(String::from)
        }
    })
}

// ---- compose tests --------------------------------------------------------------------------

#[test]
fn compose_defines_every_service_with_pinned_images_and_declared_volumes() {
    let compose = compose();
    assert!(compose.get("version").is_none(), "the Compose spec has no top-level `version:`");
    let services = compose["services"].as_mapping().expect("services");
    for name in ["kafka", "minio", "mongodb", "segflow", "prometheus", "grafana"] {
        service(&compose, name);
    }
    let declared: BTreeSet<String> =
        compose["volumes"].as_mapping().map(|m| m.keys().filter_map(scalar).collect()).unwrap_or_default();
    for (name, svc) in services {
        let name = scalar(name).unwrap();
        if svc.get("build").is_none() {
            let image = svc["image"].as_str().unwrap_or_else(|| panic!("{name}: image or build"));
            let reference = dockerfile_parser::ImageRef::parse(image);
            let tag = reference.tag.as_deref().unwrap_or("latest");
            assert!(
                reference.hash.is_some() || (tag != "latest" && !tag.is_empty()),
                "{name}: image {image:?} is not pinned to a tag"
            );
        }
        for mount in mounts(svc).into_iter().filter(|m| !m.bind) {
            assert!(
                declared.contains(&mount.source),
                "{name}: volume {:?} is not declared under volumes:",
                mount.source
            );
        }
    }
}

#[test]
fn kafka_runs_kraft_without_zookeeper() {
    let compose = compose();
    let mut zookeeper = Vec::new();
    each_string(&compose, "", &mut |path, s| {
        if s.to_ascii_lowercase().contains("zookeeper") {
            zookeeper.push(format!("{path}: {s}"));
        }
    });
    assert!(zookeeper.is_empty(), "KRaft needs no ZooKeeper, yet: {zookeeper:?}");

    let kafka = service(&compose, "kafka");
    assert_eq!(kafka["image"].as_str(), Some("apache/kafka:3.9.1"), "the official Apache Kafka image");
    let env = environment(kafka);
    let roles: BTreeSet<&str> = env["KAFKA_PROCESS_ROLES"].split(',').map(str::trim).collect();
    assert_eq!(roles, BTreeSet::from(["broker", "controller"]), "one combined broker and controller");

    // The quorum is this node, on a listener named as the controller listener.
    let node_id = &env["KAFKA_NODE_ID"];
    let voters = &env["KAFKA_CONTROLLER_QUORUM_VOTERS"];
    let (voter_id, voter_address) = voters.split_once('@').expect("id@host:port");
    assert_eq!(voter_id, node_id, "the only voter is this node");
    let controller = &env["KAFKA_CONTROLLER_LISTENER_NAMES"];
    let listeners: BTreeMap<&str, &str> =
        env["KAFKA_LISTENERS"].split(',').map(|l| l.split_once("://").expect("NAME://host:port")).collect();
    let controller_port = listeners.get(controller.as_str()).expect("a listener for the controller").rsplit(':').next();
    assert_eq!(controller_port, voter_address.rsplit(':').next(), "voters use the controller listener's port");
    let protocols: BTreeMap<&str, &str> =
        env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(',').map(|p| p.split_once(':').unwrap()).collect();
    for name in listeners.keys() {
        assert!(protocols.contains_key(name), "listener {name} has no security protocol");
    }
    assert!(listeners.contains_key(env["KAFKA_INTER_BROKER_LISTENER_NAME"].as_str()));

    // What segflow bootstraps from is an advertised listener.
    let bootstrap = env_default(service(&compose, "segflow"), "KAFKA_BOOTSTRAP_SERVERS");
    let advertised: Vec<&str> =
        env["KAFKA_ADVERTISED_LISTENERS"].split(',').map(|l| l.split_once("://").unwrap().1).collect();
    assert!(advertised.contains(&bootstrap.as_str()), "{bootstrap} is not among {advertised:?}");

    for key in [
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ] {
        assert_eq!(env.get(key).map(String::as_str), Some("1"), "{key}: a single broker");
    }

    // kafka-storage refuses a cluster id that is not 16 bytes in base64url (22 characters).
    let cluster_id = env_default(kafka, "CLUSTER_ID");
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    assert_eq!(cluster_id.len(), 22, "CLUSTER_ID {cluster_id:?}");
    assert!(cluster_id.chars().all(|c| alphabet.contains(c)), "CLUSTER_ID {cluster_id:?} is not base64url");
    let last = alphabet.find(cluster_id.chars().last().unwrap()).unwrap();
    assert_eq!(last % 16, 0, "CLUSTER_ID {cluster_id:?} does not decode to exactly 16 bytes");

    let test: Vec<&str> = kafka["healthcheck"]["test"]
        .as_sequence()
        .expect("exec-form healthcheck")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(test[1].starts_with("/opt/kafka/bin/"), "the image's own scripts: {test:?}");
    assert!(test.contains(&"localhost:9092") || test.iter().any(|t| t.ends_with(":9092")), "{test:?}");
}

#[test]
fn segflow_builds_the_dockerfile_and_waits_for_healthy_backends() {
    let compose = compose();
    let segflow = service(&compose, "segflow");
    let context = segflow["build"]["context"].as_str().or(segflow["build"].as_str()).expect("build context");
    let file_name = segflow["build"]["dockerfile"].as_str().unwrap_or("Dockerfile");
    assert!(repo().join(context).join(file_name).is_file(), "{context}/{file_name} does not exist");

    let env = environment(segflow);
    for key in BACKEND_ENV.into_iter().chain(["MONGO_DB", "SEGFLOW_PUBLIC_URL"]) {
        assert!(env.contains_key(key), "segflow's environment lacks {key}");
    }

    // Internal endpoints name the backend services on the ports they listen on.
    let minio = service(&compose, "minio");
    let endpoint = reqwest::Url::parse(&env_default(segflow, "MINIO_ENDPOINT")).expect("MINIO_ENDPOINT is a URL");
    assert_eq!(endpoint.host_str(), Some("minio"));
    assert!(container_ports(minio).contains(&endpoint.port_or_known_default().unwrap()), "MinIO's S3 port");
    let mongo = reqwest::Url::parse(&env_default(segflow, "MONGO_URI")).expect("MONGO_URI is a URL");
    assert_eq!((mongo.scheme(), mongo.host_str()), ("mongodb", Some("mongodb")));
    assert!(container_ports(service(&compose, "mongodb")).contains(&mongo.port().unwrap_or(27017)));
    // segflow signs with the credentials MinIO was started with (same expression, same default).
    let minio_env = environment(minio);
    for key in ["MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"] {
        assert_eq!(env[key], minio_env[key], "{key} differs between segflow and minio");
    }
    // Public URLs reach published ports from the host.
    for (key, svc, container_port) in [("MINIO_PUBLIC_ENDPOINT", minio, 9000), ("SEGFLOW_PUBLIC_URL", segflow, 8080)] {
        let url = reqwest::Url::parse(&env_default(segflow, key)).unwrap_or_else(|e| panic!("{key}: {e}"));
        let published = ports(svc).into_iter().find(|(_, c)| *c == container_port).and_then(|(h, _)| h);
        assert_eq!(url.port_or_known_default(), published, "{key} {url} is not the published port of {container_port}");
    }

    for backend in BACKENDS {
        let condition = segflow["depends_on"][backend]["condition"].as_str();
        assert_eq!(condition, Some("service_healthy"), "segflow must wait for a healthy {backend}");
        let test = &service(&compose, backend)["healthcheck"]["test"];
        let first = test.as_sequence().and_then(|t| t.first()).and_then(|v| v.as_str());
        assert!(matches!(first, Some("CMD" | "CMD-SHELL")), "{backend} needs a healthcheck, else segflow never starts");
    }

    // The image's port, data dir and health check agree with the compose service.
    let file = dockerfile();
    let (_, cmd) = entrypoint_and_cmd(&file);
    let listen_port: u16 = flag_value(&cmd, "--listen").unwrap().rsplit(':').next().unwrap().parse().unwrap();
    assert!(container_ports(segflow).contains(&listen_port), "segflow publishes its --listen port {listen_port}");
    let data_dir = flag_value(&cmd, "--data-dir").unwrap();
    assert!(mounts(segflow).iter().any(|m| m.target == data_dir), "a volume on segflow's --data-dir {data_dir}");
    let health: Vec<&str> =
        segflow["healthcheck"]["test"].as_sequence().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(health.iter().any(|t| *t == format!("http://127.0.0.1:{listen_port}/health")), "{health:?}");
}

/// segflow reads every variable the compose file gives it and, with them, runs on the three
/// backends: checked through the real `Config::load` (figment's Jail restores the environment).
#[test]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment's own error
fn compose_environment_configures_segflow_for_every_backend() {
    use segflow::config::{Config, Overrides};
    let compose = compose();
    let segflow = service(&compose, "segflow");
    let vars: BTreeMap<String, String> = environment(segflow)
        .into_keys()
        .filter(|k| k != "RUST_LOG") // read by tracing, not the config
        .map(|k| (k.clone(), env_default(segflow, &k)))
        .collect();
    figment::Jail::expect_with(|jail| {
        for (key, value) in &vars {
            jail.set_env(key, value);
        }
        let config = Config::load(None, &Overrides::default()).expect("the compose environment is a valid config");
        assert_eq!(config.kafka.as_deref(), Some("kafka:9092"));
        assert_eq!(config.s3_endpoint.as_deref(), Some("http://minio:9000"));
        assert_eq!(config.s3_public_endpoint.as_deref(), Some("http://localhost:9000"));
        assert_eq!(config.s3_access_key.as_deref(), Some("minioadmin"));
        assert_eq!(config.s3_secret_key.as_ref().map(|s| s.0.as_str()), Some("minioadmin123"));
        assert_eq!(config.mongo_uri.as_deref(), Some("mongodb://mongodb:27017"));
        assert_eq!(config.mongo_database, "segflow");
        assert_eq!(config.public_url.as_deref(), Some("http://localhost:8080"));
        // Every variable lands in the config: SEGFLOW_<KEY> in field <key>, a legacy name in
        // some field holding its value.
        let fields = serde_json::to_value(&config).unwrap();
        let text = |v: &Json| v.as_str().map(String::from).unwrap_or_else(|| v.to_string());
        for (key, value) in &vars {
            let read = match key.strip_prefix("SEGFLOW_") {
                Some(field) => fields.get(field.to_ascii_lowercase()).is_some_and(|v| text(v) == *value),
                None => fields.as_object().unwrap().values().any(|v| text(v) == *value),
            };
            assert!(read, "segflow's config does not read {key}={value}: {fields}");
        }
        Ok(())
    });
}

/// The cluster's processes: one timely cluster of two, each a copy of the segflow service (same
/// image, backends, health check and drain time) with its own index, API port and data dir.
#[test]
fn compose_cluster_is_two_processes_of_one_timely_cluster() {
    let compose = compose();
    let segflow = service(&compose, "segflow");
    assert!(segflow.get("profiles").is_none(), "a plain `docker compose up` starts segflow");
    let (_, cmd) = entrypoint_and_cmd(&dockerfile());
    let listen_port: u16 = flag_value(&cmd, "--listen").unwrap().rsplit(':').next().unwrap().parse().unwrap();
    let data_dir = flag_value(&cmd, "--data-dir").unwrap();
    let segflow_env = environment(segflow);

    let mut published = BTreeMap::new();
    for name in ["segflow"].into_iter().chain(CLUSTER) {
        for (host, container) in ports(service(&compose, name)) {
            let host = host.unwrap_or_else(|| panic!("{name}: port {container} has no fixed host port"));
            if let Some(other) = published.insert(host, name) {
                panic!("host port {host} is published by both {other} and {name}");
            }
        }
    }
    let mut volumes = BTreeSet::from([mounts(segflow).into_iter().find(|m| m.target == data_dir).unwrap().source]);
    let (mut peers, mut keys, mut workers) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for (index, name) in CLUSTER.iter().enumerate() {
        let svc = service(&compose, name);
        let profiles: Vec<&str> =
            svc["profiles"].as_sequence().into_iter().flatten().filter_map(|p| p.as_str()).collect();
        assert_eq!(profiles, ["cluster"], "{name}: only `docker compose --profile cluster up` starts it");
        for key in ["build", "image", "init", "depends_on", "healthcheck", "stop_grace_period"] {
            assert_eq!(svc[key], segflow[key], "{name}: {key} differs from the segflow service's");
        }
        // timely cannot lose a process: every process restarts, whatever it exited with.
        assert!(matches!(svc["restart"].as_str(), Some("unless-stopped" | "always")), "{name}: restart");

        let env = environment(svc);
        for key in BACKEND_ENV {
            assert_eq!(env.get(key), segflow_env.get(key), "{name}: {key} differs from the segflow service's");
        }
        assert_eq!(env_default(svc, "SEGFLOW_PROCESSES"), CLUSTER.len().to_string(), "{name}");
        assert_eq!(env_default(svc, "SEGFLOW_PROCESS"), index.to_string(), "{name}: process {index}, in order");
        peers.insert(env_default(svc, "SEGFLOW_PEERS"));
        keys.insert(env["SEGFLOW_SIGNING_KEY"].clone());
        workers.insert(env_default(svc, "SEGFLOW_WORKERS"));

        // Its own API on a published port of its own, named by its public URL.
        assert!(container_ports(svc).contains(&listen_port), "{name} publishes its --listen port {listen_port}");
        let url = reqwest::Url::parse(&env_default(svc, "SEGFLOW_PUBLIC_URL")).expect("SEGFLOW_PUBLIC_URL");
        let host_port = ports(svc).into_iter().find(|(_, c)| *c == listen_port).and_then(|(h, _)| h);
        assert_eq!(url.port_or_known_default(), host_port, "{name}: {url} is not its published API port");
        // Its own named volume on the data dir.
        let data: Vec<Mount> = mounts(svc).into_iter().filter(|m| m.target == data_dir).collect();
        assert!(matches!(&data[..], [m] if !m.bind), "{name}: one named volume on {data_dir}: {data:?}");
        assert!(volumes.insert(data[0].source.clone()), "{name} shares its data volume {}", data[0].source);
    }
    assert_eq!(workers.len(), 1, "every process of a cluster has the same --workers: {workers:?}");
    assert_eq!(keys.len(), 1, "one signing key on every process: {keys:?}");
    let key = resolve_defaults(keys.first().unwrap()).unwrap();
    assert!(key.len() >= 32 && key.bytes().all(|b| b.is_ascii_hexdigit()), "signing key {key:?}: hex, ≥ 16 bytes");
    assert!(
        interpolations(keys.first().unwrap()).unwrap().iter().any(|i| i.name == "SEGFLOW_SIGNING_KEY"),
        "the signing key can be changed from the environment"
    );

    // The same timely addresses on every process: process i's is a port its own service exposes.
    assert_eq!(peers.len(), 1, "every process names the same peers: {peers:?}");
    let addresses: Vec<&str> = peers.first().unwrap().split(',').map(str::trim).collect();
    assert_eq!(addresses.len(), CLUSTER.len(), "one timely address per process: {addresses:?}");
    for (index, address) in addresses.iter().enumerate() {
        let (host, port) = address.rsplit_once(':').expect("host:port");
        let port: u16 = port.parse().unwrap_or_else(|_| panic!("timely address {address}"));
        let svc = service(&compose, host);
        assert_eq!(host, CLUSTER[index], "address {index} ({address}) is not process {index}'s service");
        assert!(exposed(svc).contains(&port), "{host} does not expose its timely port {port}");
        assert!(!container_ports(svc).contains(&port), "{host}: timely's port {port} is not for the host");
    }

    // Prometheus scrapes every process's /metrics.
    let config = yaml("deploy/prometheus/prometheus.yml");
    let mut targets = BTreeSet::new();
    for job in config["scrape_configs"].as_sequence().unwrap() {
        for group in job["static_configs"].as_sequence().unwrap() {
            targets.extend(group["targets"].as_sequence().unwrap().iter().map(|t| t.as_str().unwrap().to_string()));
        }
    }
    for name in CLUSTER {
        assert!(targets.contains(&format!("{name}:{listen_port}")), "Prometheus does not scrape {name}");
    }
}

/// Each cluster process's environment is a valid config of a two-process cluster (the real
/// `Config::load`, which refuses a cluster without shared backends, a signing key or
/// addresses), and the cluster's namespace on the backends is its own: it shares no topic,
/// consumer group, bucket or database with the single segflow service.
#[test]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment's own error
fn compose_cluster_environment_is_a_cluster_config_with_a_namespace_of_its_own() {
    use segflow::config::{Config, Overrides};
    let compose = compose();
    let load = |name: &str| {
        let svc = service(&compose, name);
        let vars: Vec<(String, String)> = environment(svc)
            .into_keys()
            .filter(|k| k != "RUST_LOG")
            .map(|k| (k.clone(), env_default(svc, &k)))
            .collect();
        let mut loaded = None;
        figment::Jail::expect_with(|jail| {
            for (key, value) in &vars {
                jail.set_env(key, value);
            }
            loaded = Some(Config::load(None, &Overrides::default()).unwrap_or_else(|e| panic!("{name}: {e}")));
            Ok(())
        });
        loaded.unwrap()
    };
    let namespace = |c: &Config| {
        (c.kafka_topic_prefix.clone(), c.kafka_group_id.clone(), c.s3_bucket_prefix.clone(), c.mongo_database.clone())
    };
    let single = load("segflow");
    let cluster: Vec<Config> = CLUSTER.iter().map(|name| load(name)).collect();
    for (index, config) in cluster.iter().enumerate() {
        assert_eq!((config.processes, config.process), (CLUSTER.len(), index));
        let addresses = config.cluster_addresses().expect("the peers are the cluster's addresses");
        assert_eq!(addresses, cluster[0].cluster_addresses().unwrap());
        assert!(config.signing_key.is_some() && config.signing_key == cluster[0].signing_key);
        assert_eq!(config.workers, cluster[0].workers);
        assert_eq!(
            (&config.kafka, &config.s3_endpoint, &config.mongo_uri),
            (&single.kafka, &single.s3_endpoint, &single.mongo_uri),
            "the compose file's backends"
        );
        assert_eq!(namespace(config), namespace(&cluster[0]), "one namespace for the whole cluster");
    }
    let (ours, theirs) = (namespace(&cluster[0]), namespace(&single));
    assert_ne!(ours.0, theirs.0, "the cluster's Kafka topics are the segflow service's");
    assert_ne!(ours.1, theirs.1, "the cluster's Kafka consumer group is the segflow service's");
    assert_ne!(ours.2, theirs.2, "the cluster's buckets are the segflow service's");
    assert_ne!(ours.3, theirs.3, "the cluster's MongoDB database is the segflow service's");
}

#[test]
fn bind_mounts_name_files_in_the_repository() {
    let compose = compose();
    let mut checked = 0;
    for (name, svc) in compose["services"].as_mapping().unwrap() {
        let name = scalar(name).unwrap();
        for mount in mounts(svc).into_iter().filter(|m| m.bind) {
            assert!(
                mount.source.starts_with("./"),
                "{name}: bind source {:?} must be relative to the repo",
                mount.source
            );
            assert!(repo().join(&mount.source).exists(), "{name}: {} does not exist in the repository", mount.source);
            checked += 1;
        }
    }
    assert!(checked >= 3, "Prometheus' config and Grafana's provisioning and dashboards are bind-mounted");
}

#[test]
fn interpolations_are_well_formed_and_have_one_default_each() {
    // The parser itself first: what compose accepts and refuses.
    assert_eq!(interpolations("a $$ b").unwrap(), vec![]);
    assert_eq!(interpolations("${A:-x${B:-y}}").unwrap().len(), 2);
    for bad in ["$", "cost: 5$", "${}", "${A:x}", "${A", "${1A}"] {
        assert!(interpolations(bad).is_err(), "{bad:?} must be refused");
    }
    assert_eq!(resolve_defaults("${A:-http://h:${P:-80}}/x").unwrap(), "http://h:80/x");

    let compose = compose();
    let mut errors = Vec::new();
    let mut defaults: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    each_string(&compose, "", &mut |path, s| match interpolations(s) {
        Err(e) => errors.push(format!("{path}: {e}")),
        Ok(found) => {
            for i in found {
                if i.op.as_deref() == Some(":-") {
                    defaults.entry(i.name).or_default().insert(i.arg);
                } else {
                    errors
                        .push(format!("{path}: ${{{}}} needs a :- default so `docker compose up` works bare", i.name));
                }
            }
        }
    });
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(defaults.contains_key("MINIO_ROOT_PASSWORD"), "credentials come from the environment");
    for (name, values) in &defaults {
        assert_eq!(values.len(), 1, "${name} has different defaults in different places: {values:?}");
    }
}

// ---- Dockerfile tests ------------------------------------------------------------------------

#[test]
fn dockerfile_builds_in_one_stage_and_runs_segflow_in_a_slim_one() {
    let file = dockerfile();
    let stages = file.stages();
    let all: Vec<&Stage> = stages.iter().collect();
    assert!(all.len() >= 2, "a multi-stage build: builder and runtime");

    let builder = all[0];
    let StageParent::Image(image) = &builder.root else { panic!("the builder starts from an image") };
    assert_eq!((image.image.as_str(), image.tag.as_deref()), ("rust", Some("1.95-bookworm")));
    let build = run_commands(builder);
    assert!(
        build.iter().any(|c| c.contains("cargo build") && c.contains("--release") && c.contains("--locked")),
        "the builder runs cargo build --release --locked: {build:?}"
    );
    assert!(build.iter().any(|c| c.contains("cmake")), "rdkafka builds librdkafka: cmake");

    let last = *all.last().unwrap();
    let StageParent::Image(image) = &last.root else { panic!("the final stage starts from an image") };
    assert!(image.image == "debian" && image.tag.as_deref().is_some_and(|t| t.ends_with("-slim")), "{image}");
    let runtime = run_commands(last);
    let installs =
        |pkg: &str| runtime.iter().any(|c| c.contains("apt-get install") && c.split_whitespace().any(|w| w == pkg));
    for pkg in ["ffmpeg", "ca-certificates", "curl"] {
        assert!(installs(pkg), "the runtime stage installs {pkg}: {runtime:?}");
    }

    // COPY --from names an earlier stage (by alias or index).
    for stage in &all {
        for copy in stage.instructions.iter().filter_map(|i| i.as_copy()) {
            for flag in copy.flags.iter().filter(|f| f.name.content == "from") {
                let from = &flag.value.content;
                let earlier = all
                    .iter()
                    .filter(|s| s.index < stage.index)
                    .any(|s| s.name.as_deref() == Some(from.as_str()) || s.index.to_string() == *from);
                assert!(earlier, "COPY --from={from} in stage {} names no earlier stage", stage.index);
            }
        }
    }
    let copied = last
        .instructions
        .iter()
        .filter_map(|i| i.as_copy())
        .find(|c| c.flags.iter().any(|f| f.name.content == "from"))
        .expect("the runtime copies the binary from the builder");
    assert_eq!(copied.destination.content, "/usr/local/bin/segflow", "on PATH, as ENTRYPOINT expects");

    let (entrypoint, cmd) = entrypoint_and_cmd(&file);
    assert_eq!(entrypoint, ["segflow"]);
    assert_eq!(cmd, ["run", "--listen", "0.0.0.0:8080", "--data-dir", "/data"]);

    let user = misc_args(last, "USER");
    assert!(user.last().is_some_and(|u| !matches!(u.split(':').next(), Some("root" | "0"))), "non-root: {user:?}");
    assert_eq!(misc_args(last, "EXPOSE"), ["8080"]);
    assert!(misc_args(last, "VOLUME").iter().any(|v| v.contains("/data")), "/data is a volume");
    let health = misc_args(last, "HEALTHCHECK");
    assert!(health.iter().any(|h| h.contains("CMD") && h.contains("http://127.0.0.1:8080/health")), "{health:?}");
    // Nothing the parser did not understand hides a typo: every instruction is a known keyword.
    let known = ["WORKDIR", "USER", "EXPOSE", "VOLUME", "HEALTHCHECK", "ADD", "SHELL", "STOPSIGNAL"];
    for instruction in &file.instructions {
        if let Instruction::Misc(misc) = instruction {
            let keyword = misc.instruction.content.to_ascii_uppercase();
            assert!(known.contains(&keyword.as_str()), "unknown Dockerfile instruction {keyword}");
        }
    }
}

#[test]
fn dockerignore_keeps_build_output_and_history_out_of_the_context() {
    let ignore = read(".dockerignore");
    let patterns: BTreeSet<&str> =
        ignore.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    for needed in ["target/", ".git/"] {
        assert!(patterns.contains(needed), ".dockerignore lacks {needed}");
    }
    for kept in ["Cargo.toml", "Cargo.lock", "src/", "src", "crates/", "crates", "benches", "tests"] {
        assert!(!patterns.contains(kept), ".dockerignore must not exclude {kept}: cargo build needs it");
    }
}

// ---- Prometheus and Grafana -------------------------------------------------------------------

#[test]
fn prometheus_scrapes_segflow_every_five_seconds() {
    let compose = compose();
    let prometheus = service(&compose, "prometheus");
    let config_flag = prometheus["command"]
        .as_sequence()
        .and_then(|c| c.iter().filter_map(|v| v.as_str()).find_map(|a| a.strip_prefix("--config.file=")))
        .unwrap_or("/etc/prometheus/prometheus.yml")
        .to_string();
    let mounted = host_path(prometheus, &config_flag).expect("the config file is bind-mounted");
    assert_eq!(mounted, repo().join("./deploy/prometheus/prometheus.yml"));

    let config = yaml("deploy/prometheus/prometheus.yml");
    let jobs = config["scrape_configs"].as_sequence().expect("scrape_configs");
    let mut segflow_job = None;
    for job in jobs {
        let name = job["job_name"].as_str().expect("job_name");
        for targets in job["static_configs"].as_sequence().expect("static_configs") {
            for target in targets["targets"].as_sequence().expect("targets") {
                let target = target.as_str().unwrap();
                let (host, port) = target.rsplit_once(':').expect("host:port");
                let port: u16 = port.parse().unwrap();
                let svc = if host == "localhost" { prometheus } else { service(&compose, host) };
                assert!(container_ports(svc).contains(&port), "job {name}: {target} is not a port {host} listens on");
                if target == "segflow:8080" {
                    segflow_job = Some(job);
                }
            }
        }
    }
    let job = segflow_job.expect("a scrape job targets segflow:8080");
    assert_eq!(job["metrics_path"].as_str().unwrap_or("/metrics"), "/metrics");
    assert_eq!(job["scrape_interval"].as_str(), Some("5s"));
}

/// The datasource uids Grafana is provisioned with, and their URLs.
fn provisioned_datasources() -> BTreeMap<String, String> {
    let dir = repo().join("deploy/grafana/provisioning/datasources");
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).expect("datasources dir") {
        let path = entry.unwrap().path();
        let relative = path.strip_prefix(repo()).unwrap().to_str().unwrap().to_string();
        for ds in yaml(&relative)["datasources"].as_sequence().expect("datasources list") {
            found.insert(ds["uid"].as_str().expect("uid").to_string(), ds["url"].as_str().expect("url").to_string());
        }
    }
    found
}

#[test]
fn grafana_is_provisioned_with_prometheus_and_the_dashboard() {
    let compose = compose();
    let grafana = service(&compose, "grafana");
    let provisioning = host_path(grafana, "/etc/grafana/provisioning").expect("provisioning is bind-mounted");
    assert!(provisioning.join("datasources").is_dir() && provisioning.join("dashboards").is_dir());

    let datasources = provisioned_datasources();
    assert!(!datasources.is_empty());
    for url in datasources.values() {
        let url = reqwest::Url::parse(url).unwrap();
        let svc = service(&compose, url.host_str().unwrap());
        assert!(container_ports(svc).contains(&url.port_or_known_default().unwrap()), "{url}");
    }

    let providers = yaml("deploy/grafana/provisioning/dashboards/segflow.yml");
    let path = providers["providers"][0]["options"]["path"].as_str().expect("provider path");
    let dir = host_path(grafana, path).expect("the dashboards dir is bind-mounted");
    assert!(dir.join("segflow.json").is_file(), "{} has the dashboard", dir.display());
    let home = env_default(grafana, "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH");
    assert!(host_path(grafana, &home).is_some_and(|p| p.is_file()), "home dashboard {home} is mounted");
    let env = environment(grafana);
    assert!(
        env.get("GF_AUTH_ANONYMOUS_ENABLED").map(String::as_str) == Some("true")
            || env.contains_key("GF_SECURITY_ADMIN_PASSWORD"),
        "anonymous viewers or an admin password from the environment"
    );
}

/// Every panel of a dashboard, rows' nested panels included.
fn panels(dashboard: &Json) -> Vec<&Json> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        all.push(panel);
        all.extend(panel["panels"].as_array().into_iter().flatten());
    }
    all
}

/// A query's PromQL with Grafana's built-in interval variables replaced, as Grafana sends it.
fn promql(expr: &str) -> String {
    let text = expr.replace("$__rate_interval", "1m").replace("$__interval", "1m").replace("$__range", "1h");
    assert!(!text.contains('$'), "{expr}: a template variable the dashboard does not define");
    text
}

/// Metric names and label names one PromQL expression uses.
#[derive(Default)]
struct Uses {
    metrics: BTreeSet<String>,
    labels: BTreeSet<String>,
}

impl ExprVisitor for Uses {
    type Error = std::convert::Infallible;

    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, Self::Error> {
        let selector = match expr {
            Expr::VectorSelector(vs) => Some(vs),
            Expr::MatrixSelector(ms) => Some(&ms.vs),
            Expr::Aggregate(agg) => {
                if let Some(LabelModifier::Include(l) | LabelModifier::Exclude(l)) = &agg.modifier {
                    self.labels.extend(l.labels.iter().cloned());
                }
                None
            }
            Expr::Binary(bin) => {
                if let Some(matching) = bin.modifier.as_ref().and_then(|m| m.matching.as_ref()) {
                    self.labels.extend(matching.labels().labels.iter().cloned());
                }
                None
            }
            _ => None,
        };
        if let Some(vs) = selector {
            self.metrics.extend(vs.name.clone());
            let matchers = vs.matchers.matchers.iter().chain(vs.matchers.or_matchers.iter().flatten());
            self.labels.extend(matchers.map(|m| m.name.clone()).filter(|n| n != "__name__"));
        }
        Ok(true)
    }
}

fn uses(expr: &str) -> Uses {
    let parsed = promql_parser::parser::parse(&promql(expr)).unwrap_or_else(|e| panic!("{expr}: invalid PromQL: {e}"));
    let mut uses = Uses::default();
    walk_expr(&mut uses, &parsed).unwrap();
    uses
}

/// The metric family a sample name belongs to (`x_bucket` → `x` for histograms).
fn family(sample: &str) -> &str {
    ["_bucket", "_sum", "_count"].iter().find_map(|s| sample.strip_suffix(s)).unwrap_or(sample)
}

#[test]
fn dashboard_is_well_formed_and_charts_every_segflow_metric() {
    let dashboard = dashboard();
    assert!(dashboard["uid"].as_str().is_some_and(|u| !u.is_empty()), "a stable uid");
    let datasources = provisioned_datasources();
    let mut ids = BTreeSet::new();
    let mut boxes: Vec<(String, [i64; 4])> = Vec::new();
    let mut charted = BTreeSet::new();
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().expect("title").to_string();
        assert!(ids.insert(panel["id"].as_i64().expect("id")), "panel id of {title:?} repeats");
        let g = &panel["gridPos"];
        let [x, y, w, h] =
            ["x", "y", "w", "h"].map(|k| g[k].as_i64().unwrap_or_else(|| panic!("{title}: gridPos.{k}")));
        assert!(x >= 0 && w > 0 && h > 0 && x + w <= 24, "{title:?} leaves the 24-column grid");
        for (other, [ox, oy, ow, oh]) in &boxes {
            let overlap = x < ox + ow && *ox < x + w && y < oy + oh && *oy < y + h;
            assert!(!overlap, "{title:?} overlaps {other:?}");
        }
        boxes.push((title.clone(), [x, y, w, h]));
        if panel["type"] == "row" {
            continue;
        }
        let uid = panel["datasource"]["uid"].as_str().unwrap_or_else(|| panic!("{title}: datasource uid"));
        assert!(datasources.contains_key(uid), "{title:?}: datasource {uid} is not provisioned");
        let targets =
            panel["targets"].as_array().filter(|t| !t.is_empty()).unwrap_or_else(|| panic!("{title}: no query"));
        let mut ref_ids = BTreeSet::new();
        for target in targets {
            assert!(ref_ids.insert(target["refId"].as_str().expect("refId")), "{title}: refId repeats");
            let expr = target["expr"].as_str().unwrap_or_else(|| panic!("{title}: a PromQL expr"));
            charted.extend(uses(expr).metrics.iter().map(|m| family(m).to_string()));
        }
    }
    let missing: Vec<&str> = CHARTED.iter().copied().filter(|m| !charted.contains(*m)).collect();
    assert!(missing.is_empty(), "metrics without a panel: {missing:?}");
}

// ---- the image's command against the real binary ----------------------------------------------

/// The segflow binary started as the image starts it; killed when dropped.
struct Image(Child);

impl Drop for Image {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts the binary with the Dockerfile's ENTRYPOINT and CMD, only the listen address and
/// data dir changed (port 0, a temp dir), without the compose backends' variables (the
/// embedded backends stand in). Returns the process and its base URL.
fn start_image_command(data_dir: &Path) -> (Image, String, String) {
    let (entrypoint, mut args) = entrypoint_and_cmd(&dockerfile());
    assert_eq!(entrypoint, ["segflow"], "the image runs the segflow binary");
    let mut swap = |flag: &str, value: &str| {
        let i = args.iter().position(|a| a == flag).unwrap_or_else(|| panic!("CMD has no {flag}"));
        args[i + 1] = value.to_string();
    };
    swap("--listen", "127.0.0.1:0");
    swap("--data-dir", data_dir.to_str().unwrap());
    let mut command = Command::new(env!("CARGO_BIN_EXE_segflow"));
    command.args(&args).env("RUST_LOG", "warn").stdout(Stdio::piped());
    // By name too: another test may set them for a moment (figment's Jail) while this spawns.
    let compose_names = environment(service(&compose(), "segflow")).into_keys();
    for key in std::env::vars().map(|(k, _)| k).chain(compose_names) {
        if ["SEGFLOW_", "KAFKA_", "MINIO_", "MONGO_", "DVR_"].iter().any(|p| key.starts_with(p)) {
            command.env_remove(key);
        }
    }
    let mut child = command.stderr(Stdio::piped()).spawn().expect("the segflow binary runs");
    // A first start prints the admin token it made, once, on stderr: the operator copies it.
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut token = None;
    let mut line = String::new();
    while token.is_none() && stderr.read_line(&mut line).unwrap() > 0 {
        token = line.split_whitespace().find(|w| w.starts_with("sft_")).map(String::from);
        line.clear();
    }
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::stderr()));
    let token = token.expect("the first start prints an admin token");
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let base = line.split_whitespace().find(|w| w.starts_with("http://")).unwrap_or_else(|| panic!("{line:?}"));
    (Image(child), base.to_string(), token)
}

/// Sample names in Prometheus text exposition, with the label names seen on each. Each sample's
/// series (`name{label="value",…}`) is parsed by the PromQL parser: the same selector syntax.
fn exposition(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut series: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let split = line.rfind('}').map(|i| i + 1).unwrap_or_else(|| line.find(' ').expect("a value"));
        let (selector, value) = line.split_at(split);
        let value = value.split_whitespace().next().expect("a value");
        assert!(value.parse::<f64>().is_ok(), "{line}: value {value:?}");
        let Ok(Expr::VectorSelector(vs)) = promql_parser::parser::parse(selector) else {
            panic!("{line}: not a series")
        };
        let labels = series.entry(vs.name.expect("a metric name")).or_default();
        labels.extend(vs.matchers.matchers.into_iter().map(|m| m.name));
    }
    series
}

/// Starts the binary exactly as the image does, checks the health check's endpoint, drives a
/// little traffic so that every labelled counter has a label set (the prometheus crate prints
/// a labelled family only once one exists), then checks that every metric and label the
/// dashboard queries is in the real `/metrics` output. SIGTERM, as `docker stop` sends, drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_command_serves_health_and_every_metric_the_dashboard_queries() {
    let dir = tempfile::tempdir().unwrap();
    let (mut image, base, token) = start_image_command(&dir.path().join("data"));
    let client = crate::common::client_with(&token);

    let health = client.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200, "the HEALTHCHECK endpoint");
    let body: Json = health.json().await.expect("/health answers JSON");
    assert!(body.is_object());

    // Live: a stream (a log append) and two chunks with a gap between them.
    let id = crate::common::start_stream_at(&client, &base, r#"{"target_duration":2}"#).await;
    for seq in [0u64, 2] {
        let bytes = format!("chunk {seq}").repeat(64).into_bytes();
        let status = client
            .put(format!("{base}/ingest/{id}/{seq}.ts"))
            .header("X-Sequence-Number", seq.to_string())
            .header("X-Duration-Ms", "2000")
            .header("X-Checksum-Sha256", crate::common::sha256_hex(&bytes))
            .body(bytes)
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success(), "ingest {seq}: {status}");
    }
    // VOD: bytes ffprobe cannot read end as a failed video, which counts an outcome.
    let junk = dir.path().join("junk.mp4");
    std::fs::write(&junk, b"not a video at all").unwrap();
    let (status, upload) = crate::common::upload_video(&client, &base, &junk, "junk").await;
    assert_eq!(status, 201, "{upload}");
    let video = upload["stream_id"].as_str().unwrap();
    let done = crate::common::wait_video_final(&client, &base, video).await;
    assert_eq!(done["status"], "failed", "{done}");

    let text = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    let series = exposition(&text);
    let dashboard = dashboard();
    let mut problems = Vec::new();
    for panel in panels(&dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            let used = uses(expr);
            let mut labels: BTreeSet<String> = TARGET_LABELS.iter().map(|l| l.to_string()).collect();
            for metric in &used.metrics {
                if SCRAPE_SERIES.contains(&metric.as_str()) {
                    continue;
                }
                match series.get(metric) {
                    Some(seen) => labels.extend(seen.iter().cloned()),
                    None => problems.push(format!("{expr}: segflow exports no {metric}")),
                }
            }
            for label in used.labels.difference(&labels) {
                problems.push(format!("{expr}: no label {label:?} on {:?}", used.metrics));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}\n/metrics was:\n{text}");
    for metric in CHARTED {
        assert!(series.keys().any(|s| family(s) == metric), "/metrics lacks {metric}");
    }

    let pid = image.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let exit = image.0.wait().unwrap();
    assert!(exit.success(), "SIGTERM (docker stop) drains and exits 0, got {exit}");
}
