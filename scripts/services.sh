#!/usr/bin/env bash
# Real test servers for segflow's end-to-end tests, all on 127.0.0.1:
#   kafka  Apache Kafka broker+controller in KRaft mode (jars from Maven Central)
#   s3     MinIO (built from its Go module source)
#   mongo  FerretDB v1 on its SQLite backend (MongoDB wire protocol; built from Go source)
# The tests talk to real servers instead of mocks; no Docker is available, so this script
# builds/downloads each server once into a cache outside the clone and runs them as plain
# background processes with pid files. `start` installs what is missing, waits until each
# server really answers, and fails loudly (with the server's log) when one cannot start.
#
# Usage: scripts/services.sh install|start|stop|status|clean [kafka|s3|mongo ...]  (default: all)
#        scripts/services.sh env        # export lines for the test suite: eval "$(... env)"
#        scripts/services.sh segflow-env [kafka|s3|mongo ...]
#                                       # the SEGFLOW_* variables that point segflow at them:
#                                       # eval "$(scripts/services.sh segflow-env)"; segflow run
# `clean` stops the servers and deletes their data (a restart with `start` keeps it).
#
# Environment (all optional):
#   SERVICES_CACHE_DIR     installs + Maven/Go caches    (default ~/.cache/segflow)
#   SERVICES_STATE_DIR  data, logs, pid files         (default /tmp/segflow-services)
#   SERVICES_KAFKA_PORT 39092, SERVICES_KAFKA_CONTROLLER_PORT 39093,
#   SERVICES_S3_PORT 39000, SERVICES_S3_CONSOLE_PORT 39001, SERVICES_MONGO_PORT 39017,
#   SERVICES_S3_ACCESS_KEY segflow, SERVICES_S3_SECRET_KEY segflow-secret
# `status` exits 3 when a named server is not running.
set -euo pipefail

SCRIPT_PATH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"

# Pinned versions. MinIO has no semver tags on the Go proxy, so it is pinned by pseudo-version
# (master of 2026-02-12, resolved once from @latest).
KAFKA_VERSION=4.1.1
LOG4J_VERSION=2.24.3 # the log4j2 line Kafka 4.1 itself ships with
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
FERRETDB_VERSION=v1.24.0 # last v1 release: the line with the SQLite backend

CACHE="${SERVICES_CACHE_DIR:-$HOME/.cache/segflow}"
STATE="${SERVICES_STATE_DIR:-/tmp/segflow-services}"

KAFKA_PORT="${SERVICES_KAFKA_PORT:-39092}"
KAFKA_CONTROLLER_PORT="${SERVICES_KAFKA_CONTROLLER_PORT:-39093}"
S3_PORT="${SERVICES_S3_PORT:-39000}"
S3_CONSOLE_PORT="${SERVICES_S3_CONSOLE_PORT:-39001}"
MONGO_PORT="${SERVICES_MONGO_PORT:-39017}"
S3_ACCESS_KEY="${SERVICES_S3_ACCESS_KEY:-segflow}"
S3_SECRET_KEY="${SERVICES_S3_SECRET_KEY:-segflow-secret}"

KAFKA_HOME="$CACHE/kafka-$KAFKA_VERSION"
MINIO_BIN="$CACHE/minio-$MINIO_VERSION/bin/minio"
FERRETDB_BIN="$CACHE/ferretdb-$FERRETDB_VERSION/bin/ferretdb"
# Fixed KRaft cluster id (base64 of "segflow-test-clu").
KAFKA_CLUSTER_ID=c2VnZmxvdy10ZXN0LWNsdQ

ALL_SERVICES=(kafka s3 mongo)

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- install

need() { command -v "$1" >/dev/null || die "'$1' is required to install $2 but is not on PATH"; }

# Go builds use their own GOPATH/GOCACHE inside $CACHE, so a second install is instant and the
# user's own Go caches are left alone.
go_cmd() {
  need go "Go servers"
  mkdir -p "$CACHE/go"
  GOPATH="$CACHE/go" GOMODCACHE="$CACHE/go/pkg/mod" GOCACHE="$CACHE/go-build" \
    GOFLAGS="-modcacherw -buildvcs=false" GOTOOLCHAIN=local CGO_ENABLED=0 nice -n 10 go "$@"
}

go_install() { # <package@version> <GOBIN dir>
  mkdir -p "$2"
  GOBIN="$2" go_cmd install -trimpath "$1"
}

install_kafka() {
  [[ -f "$KAFKA_HOME/.installed" ]] && return 0
  need java kafka
  need mvn kafka
  mkdir -p "$KAFKA_HOME"
  # kafka-tools adds the CLI classes (TopicCommand...; its Connect/Jetty dependencies are left
  # out); the log4j2 jars are the logging backend Kafka's own distribution uses (its pom has none).
  cat >"$KAFKA_HOME/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>segflow.test</groupId>
  <artifactId>kafka-server</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version>
      <exclusions><exclusion><groupId>org.apache.kafka</groupId><artifactId>connect-runtime</artifactId></exclusion></exclusions></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
  </dependencies>
  <build><plugins><plugin>
    <groupId>org.apache.maven.plugins</groupId><artifactId>maven-dependency-plugin</artifactId><version>3.8.1</version>
  </plugin></plugins></build>
</project>
EOF
  rm -rf "$KAFKA_HOME/libs.tmp"
  if ! nice -n 10 mvn -B -f "$KAFKA_HOME/pom.xml" -Dmaven.repo.local="$CACHE/m2" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$KAFKA_HOME/libs.tmp" \
    >"$KAFKA_HOME/mvn.log" 2>&1; then
    tail -n 40 "$KAFKA_HOME/mvn.log" >&2
    return 1
  fi
  rm -rf "$KAFKA_HOME/libs"
  mv "$KAFKA_HOME/libs.tmp" "$KAFKA_HOME/libs"
  touch "$KAFKA_HOME/.installed"
}

install_s3() {
  [[ -x "$MINIO_BIN" ]] && return 0
  go_install "github.com/minio/minio@$MINIO_VERSION" "$(dirname "$MINIO_BIN")"
}

install_mongo() {
  [[ -x "$FERRETDB_BIN" ]] && return 0
  # FerretDB does not support `go install ...@version`: the go tool's deprecation lookup gets a
  # 403 from the proxy for this module, and the binary panics at start without the generated
  # build/version/version.txt. So: fetch the module source, add version.txt, build it in place.
  local dir src
  dir="$(go_cmd mod download -json "github.com/FerretDB/FerretDB@$FERRETDB_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -d "$dir" ]] || die "mongo: go mod download of FerretDB $FERRETDB_VERSION gave no source"
  src="$CACHE/ferretdb-$FERRETDB_VERSION/src"
  rm -rf "$src"
  mkdir -p "$(dirname "$src")"
  cp -r "$dir" "$src"
  chmod -R u+w "$src"
  echo "$FERRETDB_VERSION" >"$src/build/version/version.txt"
  (cd "$src" && go_cmd build -trimpath -o "$FERRETDB_BIN" ./cmd/ferretdb)
}

is_installed() {
  case "$1" in
    kafka) [[ -f "$KAFKA_HOME/.installed" ]] ;;
    s3) [[ -x "$MINIO_BIN" ]] ;;
    mongo) [[ -x "$FERRETDB_BIN" ]] ;;
  esac
}

describe() {
  case "$1" in
    kafka) echo "Apache Kafka $KAFKA_VERSION (Maven Central jars)" ;;
    s3) echo "MinIO $MINIO_VERSION (go install)" ;;
    mongo) echo "FerretDB $FERRETDB_VERSION (go build)" ;;
  esac
}

cmd_install() {
  mkdir -p "$CACHE"
  # One install at a time (parallel test runs may all call `start`).
  exec 8>"$CACHE/.install.lock"
  flock 8
  local s t0
  for s in "$@"; do
    if is_installed "$s"; then
      log "$s: $(describe "$s") already installed"
      continue
    fi
    log "$s: installing $(describe "$s") into $CACHE ..."
    t0=$SECONDS
    "install_$s" || die "$s: install of $(describe "$s") failed"
    log "$s: installed in $((SECONDS - t0)) s"
  done
  exec 8>&-
}

# ---------------------------------------------------------------- processes

pidfile() { echo "$STATE/$1.pid"; }
logfile() { echo "$STATE/$1.log"; }

# What the command line of a live server of this kind must contain (guards against pid reuse).
cmd_pattern() {
  case "$1" in
    kafka) echo "kafka.Kafka" ;;
    s3) echo "minio" ;;
    mongo) echo "ferretdb" ;;
  esac
}

# Alive and not a zombie (a server that dies during `start` is our unreaped child).
alive() {
  local st
  st="$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
  [[ -n "$st" && "$st" != Z ]]
}

running_pid() { # prints the pid and succeeds if the server is running
  local f pid
  f="$(pidfile "$1")"
  [[ -f "$f" ]] || return 1
  pid="$(cat "$f")"
  [[ -n "$pid" ]] && alive "$pid" &&
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$(cmd_pattern "$1")" || return 1
  echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

ports_of() {
  case "$1" in
    kafka) echo "$KAFKA_PORT $KAFKA_CONTROLLER_PORT" ;;
    s3) echo "$S3_PORT $S3_CONSOLE_PORT" ;;
    mongo) echo "$MONGO_PORT" ;;
  esac
}

address_of() {
  case "$1" in
    kafka) echo "127.0.0.1:$KAFKA_PORT" ;;
    s3) echo "http://127.0.0.1:$S3_PORT" ;;
    mongo) echo "mongodb://127.0.0.1:$MONGO_PORT/" ;;
  esac
}

# Runs a server detached from the caller: own session, no inherited stdio or lock fd, so a test
# harness that runs `start` through a pipe is not kept waiting.
launch() { # <name> <command...>
  local name="$1"
  shift
  local lf
  lf="$(logfile "$name")"
  [[ -f "$lf" ]] && mv -f "$lf" "$lf.prev"
  setsid "$@" </dev/null >"$lf" 2>&1 9>&- &
  echo $! >"$(pidfile "$name")"
}

# ---------------------------------------------------------------- per-server start + readiness

start_kafka() {
  local dir="$STATE/kafka"
  mkdir -p "$dir/data"
  cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
num.network.threads=2
num.io.threads=2
EOF
  cat >"$dir/log4j2.properties" <<'EOF'
rootLogger.level=INFO
rootLogger.appenderRef.stdout.ref=STDOUT
appender.stdout.type=Console
appender.stdout.name=STDOUT
appender.stdout.layout.type=PatternLayout
appender.stdout.layout.pattern=[%d] %p %m (%c)%n
logger.kafka.name=kafka
logger.kafka.level=INFO
logger.state.name=state.change.logger
logger.state.level=WARN
EOF
  # Small heap, serial GC and C1 only: a test broker on a shared 2-core machine starts faster.
  local java_opts=(-Xmx512m -Xms128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true
    "-Dlog4j2.configurationFile=$dir/log4j2.properties" "-Dkafka.logs.dir=$dir")
  # Format the storage once: a restart must keep topics and offsets.
  if [[ ! -f "$dir/data/meta.properties" ]]; then
    log "kafka: formatting storage in $dir/data"
    java "${java_opts[@]}" -cp "$KAFKA_HOME/libs/*" kafka.tools.StorageTool format \
      -t "$KAFKA_CLUSTER_ID" -c "$dir/server.properties" >"$dir/format.log" 2>&1 ||
      fail_start kafka "storage format failed" "$dir/format.log"
  fi
  launch kafka java "${java_opts[@]}" -cp "$KAFKA_HOME/libs/*" kafka.Kafka "$dir/server.properties"
}
ready_kafka() { port_open "$KAFKA_PORT" && grep -q "Kafka Server started" "$(logfile kafka)"; }

start_s3() {
  mkdir -p "$STATE/minio"
  MINIO_ROOT_USER="$S3_ACCESS_KEY" MINIO_ROOT_PASSWORD="$S3_SECRET_KEY" \
    MINIO_UPDATE=off \
    launch s3 "$MINIO_BIN" server "$STATE/minio" \
    --address "127.0.0.1:$S3_PORT" --console-address "127.0.0.1:$S3_CONSOLE_PORT"
}
ready_s3() { curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$S3_PORT/minio/health/live" 2>/dev/null; }

start_mongo() {
  mkdir -p "$STATE/ferretdb/data" "$STATE/ferretdb/state"
  # --debug-addr=- turns off the metrics/pprof listener (default 127.0.0.1:8088).
  launch mongo "$FERRETDB_BIN" --handler=sqlite --sqlite-url="file:$STATE/ferretdb/data/" \
    --state-dir="$STATE/ferretdb/state" --listen-addr="127.0.0.1:$MONGO_PORT" \
    --telemetry=disable --debug-addr=- --log-level=INFO
}
ready_mongo() { port_open "$MONGO_PORT"; }

start_timeout() {
  case "$1" in
    kafka) echo 90 ;;
    s3) echo 60 ;;
    mongo) echo 30 ;;
  esac
}

# Never skip silently: name the server, show its log, leave nothing half-started, fail.
fail_start() { # <name> <reason> [log file]
  local lf="${3:-$(logfile "$1")}" # "-": no log to show
  printf '[services] ERROR: %s (%s) could not start: %s\n' "$1" "$(describe "$1")" "$2" >&2
  if [[ "$lf" != - && -f "$lf" ]]; then
    printf '[services] last 40 lines of %s:\n' "$lf" >&2
    tail -n 40 "$lf" >&2
  fi
  local pid
  pid="$(cat "$(pidfile "$1")" 2>/dev/null || true)"
  [[ -n "$pid" ]] && terminate "$pid"
  rm -f "$(pidfile "$1")"
  exit 1
}

start_one() {
  local name="$1" pid port t0
  if pid="$(running_pid "$name")"; then
    log "$name: already running (pid $pid) at $(address_of "$name")"
    return 0
  fi
  rm -f "$(pidfile "$name")"
  for port in $(ports_of "$name"); do
    port_open "$port" && fail_start "$name" "port 127.0.0.1:$port is already in use by another process" -
  done
  t0=$SECONDS
  "start_$name"
  local timeout
  timeout="$(start_timeout "$name")"
  pid="$(cat "$(pidfile "$name")")"
  # (Just-forked, the child may not have exec'd the server yet: check liveness only.)
  while ! "ready_$name"; do
    alive "$pid" || fail_start "$name" "process exited during startup"
    ((SECONDS - t0 < timeout)) || fail_start "$name" "not ready after ${timeout}s"
    sleep 0.5
  done
  log "$name: ready in $((SECONDS - t0)) s (pid $pid) at $(address_of "$name")"
}

# SIGTERM, then SIGKILL if still alive after 30 s (Kafka's clean shutdown takes a few seconds).
terminate() {
  local pid="$1" i
  alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 60; i++)); do
    alive "$pid" || return 0
    sleep 0.5
  done
  log "pid $pid still alive after 30 s, sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  while alive "$pid"; do sleep 0.2; done
}

stop_one() {
  local name="$1" pid
  if ! pid="$(running_pid "$name")"; then
    rm -f "$(pidfile "$name")"
    log "$name: not running"
    return 0
  fi
  terminate "$pid"
  rm -f "$(pidfile "$name")"
  log "$name: stopped (pid $pid)"
}

# ---------------------------------------------------------------- commands

lock_state() { # serialises start/stop of concurrent callers
  mkdir -p "$STATE"
  exec 9>"$STATE/.lock"
  flock 9
}

cmd_start() {
  cmd_install "$@"
  lock_state
  local s
  for s in "$@"; do start_one "$s"; done
}

cmd_stop() {
  lock_state
  local s
  for s in "$@"; do stop_one "$s"; done
}

cmd_clean() {
  cmd_stop "$@"
  local s
  for s in "$@"; do
    case "$s" in
      kafka) rm -rf "$STATE/kafka" ;;
      s3) rm -rf "$STATE/minio" ;;
      mongo) rm -rf "$STATE/ferretdb" ;;
    esac
    rm -f "$(logfile "$s")" "$(logfile "$s").prev"
    log "$s: data deleted"
  done
}

cmd_status() {
  local s pid rc=0
  for s in "$@"; do
    if pid="$(running_pid "$s")"; then
      printf '%-6s running  pid %-8s %s\n' "$s" "$pid" "$(address_of "$s")"
    else
      printf '%-6s stopped%s\n' "$s" "$(is_installed "$s" || echo ' (not installed)')"
      rc=3
    fi
  done
  return "$rc"
}

cmd_env() {
  local kv
  for kv in "SERVICES_TEST_KAFKA=127.0.0.1:$KAFKA_PORT" \
    "SERVICES_TEST_S3_ENDPOINT=http://127.0.0.1:$S3_PORT" \
    "SERVICES_TEST_S3_ACCESS_KEY=$S3_ACCESS_KEY" \
    "SERVICES_TEST_S3_SECRET_KEY=$S3_SECRET_KEY" \
    "SERVICES_TEST_S3_REGION=us-east-1" \
    "SERVICES_TEST_MONGO_URI=mongodb://127.0.0.1:$MONGO_PORT/" \
    "SERVICES_SCRIPT=$SCRIPT_PATH"; do
    printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}"
  done
}

# The variables `segflow run` reads (see the README's configuration table), for the named servers.
cmd_segflow_env() {
  local s kv vars=()
  for s in "$@"; do
    case "$s" in
      kafka) vars+=("SEGFLOW_KAFKA=127.0.0.1:$KAFKA_PORT") ;;
      s3) vars+=("SEGFLOW_S3_ENDPOINT=http://127.0.0.1:$S3_PORT" "SEGFLOW_S3_ACCESS_KEY=$S3_ACCESS_KEY"
        "SEGFLOW_S3_SECRET_KEY=$S3_SECRET_KEY") ;;
      mongo) vars+=("SEGFLOW_MONGO_URI=mongodb://127.0.0.1:$MONGO_PORT/") ;;
    esac
  done
  for kv in "${vars[@]}"; do printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}"; done
}

usage() { # [exit code]
  sed -n '2,/^set -euo/p' "$SCRIPT_PATH" | sed '$d; s/^# \{0,1\}//' >&2
  exit "${1:-2}"
}

main() {
  [[ $# -ge 1 ]] || usage
  local cmd="$1"
  shift
  local names=("$@") s
  [[ ${#names[@]} -gt 0 ]] || names=("${ALL_SERVICES[@]}")
  for s in "${names[@]}"; do
    case "$s" in
      kafka | s3 | mongo) ;;
      *) die "unknown server '$s' (expected: ${ALL_SERVICES[*]})" ;;
    esac
  done
  case "$cmd" in
    install) cmd_install "${names[@]}" ;;
    start) cmd_start "${names[@]}" ;;
    stop) cmd_stop "${names[@]}" ;;
    status) cmd_status "${names[@]}" ;;
    clean) cmd_clean "${names[@]}" ;;
    env) cmd_env ;;
    segflow-env) cmd_segflow_env "${names[@]}" ;;
    -h | --help | help) usage 0 ;;
    *) usage ;;
  esac
}

main "$@"
