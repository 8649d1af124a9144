//! The deployment files in `deploy/`, proven as far as a machine without a container engine or a
//! cluster allows (this one and CI have neither: `docker` here is only a client).
//!
//! - The Helm chart is linted by helm itself (`helm lint --strict`), rendered with several value
//!   sets, and every rendered object is validated against Kubernetes' own schemas
//!   (`kubernetes-validate --strict`); the compose file is validated against the compose
//!   specification (check-jsonschema's copy of its schema). All three tools come from PyPI.
//! - Then both are *run*, as processes on loopback. The hub container of the rendered Deployment
//!   (its command and arguments, its environment with the Secret references resolved, its Secret
//!   and emptyDir volumes at their mount paths, the image's `ENV`, `ENTRYPOINT` and `CMD` from
//!   `deploy/Dockerfile`) is started `replicaCount` times on PostgreSQL and SeaweedFS; the probes
//!   it names answer, and the replicas act as one hub. Each compose service is started from the
//!   file's own commands, environment, env files and mounted files, with the service names and
//!   ports mapped to loopback ports, and the demo is walked the way the file's comments describe
//!   it, up to a study arriving in Orthanc.
//!
//! - The systemd units pass `systemd-analyze verify`, and the hub and the connector are started
//!   as the units start them, with `deploy/*.example.toml` installed as their configuration.
//!
//! A container's (or unit's) paths are directories of a per-process root on the host: every path
//! it sees (a mount, a unit's writable path, or `/opt/ohif` that the image brings) is rewritten to
//! its host place in the environment and in mounted files. A path that is none of these fails, and
//! after the run nothing may have been written outside the writable places (what a read-only root
//! file system or `ProtectSystem=strict` would enforce). What is not covered: the images
//! themselves (the Dockerfile's build steps) and the engines' own machinery.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::Digest;

use crate::fixtures::peers::{OpenBao, Orthanc, Postgres, assert_listens_on_loopback_only, free_port, node_dir};
use crate::fixtures::seaweedfs::SeaweedFs;
use crate::fixtures::*;

/// reqwest here is built without a default TLS crypto provider.
fn tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs a deployment tool and returns what it printed, or fails with its output.
fn tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e} (tests/run.sh installs it with pip)"));
    assert!(
        out.status.success(),
        "{program} {}:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The documents of a YAML stream, as JSON (PyYAML).
fn yaml_docs(text: &str) -> Vec<Value> {
    use std::io::Write;
    let mut child = Command::new("python3")
        .args(["-c", "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d is not None]))"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("python3");
    assert!(out.status.success(), "YAML does not parse");
    serde_json::from_slice(&out.stdout).expect("json")
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

// --- processes and their file systems ------------------------------------------------------------

/// One replacement of a rewrite: paths only at path boundaries, anything else anywhere.
struct Rule {
    from: String,
    to: String,
    path: bool,
}

/// Rewrites a container's view (paths, service addresses, ports) into the host's, in one pass so
/// that nothing is rewritten twice.
#[derive(Default)]
struct Rewrite {
    rules: Vec<Rule>,
    /// Whole values (an environment variable that is just a port, or just `0.0.0.0`).
    whole: BTreeMap<String, String>,
}

impl Rewrite {
    fn text(&self, s: &str) -> String {
        let mut rules: Vec<&Rule> = self.rules.iter().collect();
        rules.sort_by_key(|r| std::cmp::Reverse(r.from.len()));
        let bytes = s.as_bytes();
        let mut out = String::with_capacity(s.len());
        let mut i = 0;
        'scan: while i < s.len() {
            for r in &rules {
                if !s[i..].starts_with(r.from.as_str()) {
                    continue;
                }
                if r.path {
                    let before = if i == 0 { None } else { Some(bytes[i - 1]) };
                    let after = bytes.get(i + r.from.len()).copied();
                    let starts = before.is_none_or(|b| matches!(b, b'"' | b'\'' | b'=' | b' '));
                    let ends = after.is_none_or(|b| matches!(b, b'/' | b'"' | b'\'' | b' ' | b'\n'));
                    if !(starts && ends) {
                        continue;
                    }
                }
                out.push_str(&r.to);
                i += r.from.len();
                continue 'scan;
            }
            let c = s[i..].chars().next().expect("char");
            out.push(c);
            i += c.len_utf8();
        }
        out
    }

    fn value(&self, s: &str) -> String {
        self.whole.get(s).cloned().unwrap_or_else(|| self.text(s))
    }
}

/// A container's file system on the host: each path the container sees is a directory or file
/// under one temporary root (or a host path the test names, for what the image brings).
struct Rootfs {
    root: tempfile::TempDir,
    paths: Vec<(String, PathBuf)>,
    files: Vec<(PathBuf, String)>,
    /// Where the container may write (emptyDirs, volumes, a unit's writable paths).
    writable: Vec<PathBuf>,
}

impl Rootfs {
    fn new() -> Rootfs {
        Rootfs { root: tempfile::tempdir().expect("tmp"), paths: Vec::new(), files: Vec::new(), writable: Vec::new() }
    }

    fn host(&self, at: &str) -> PathBuf {
        self.root.path().join(at.trim_start_matches('/'))
    }

    /// An empty writable directory at `at` (an emptyDir or a named volume).
    fn scratch(&mut self, at: &str) -> PathBuf {
        let p = self.dir(at);
        self.writable.push(p.clone());
        p
    }

    /// A directory at `at` for read-only files (a Secret volume).
    fn dir(&mut self, at: &str) -> PathBuf {
        let p = self.host(at);
        std::fs::create_dir_all(&p).expect("mkdir");
        self.paths.push((at.to_string(), p.clone()));
        p
    }

    /// Fails when the process wrote anywhere but where it may: a new file outside the writable
    /// places (in the root's read-only parts, a Secret's folder, its working directory "/"), or a
    /// changed mounted file. A read-only root file system (or ProtectSystem=strict) would have
    /// refused it.
    fn assert_writes_only_where_allowed(&self) {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() { walk(&p, out) } else { out.push(p) }
            }
        }
        let mut found = Vec::new();
        walk(self.root.path(), &mut found);
        for p in found {
            if self.writable.iter().any(|w| p.starts_with(w)) {
                continue;
            }
            let given = self.files.iter().find(|(f, _)| *f == p);
            let contents = given.unwrap_or_else(|| panic!("{} was written outside the writable places", p.display()));
            assert_eq!(std::fs::read_to_string(&p).ok().as_ref(), Some(&contents.1), "{} was changed", p.display());
        }
    }

    /// A file at `at` with `contents`, written by [`Rootfs::write`] once every path is known.
    fn file(&mut self, at: &str, contents: &str) {
        let p = self.host(at);
        self.paths.push((at.to_string(), p.clone()));
        self.files.push((p, contents.to_string()));
    }

    /// A host path the image brings at `at`.
    fn image_path(&mut self, at: &str, host: PathBuf) {
        self.paths.push((at.to_string(), host));
    }

    fn rules(&self) -> Vec<Rule> {
        self.paths.iter().map(|(at, host)| Rule { from: at.clone(), to: host.display().to_string(), path: true }).collect()
    }

    /// Writes the mounted files, rewritten. An absolute path in them (outside comments) that is
    /// not a mount (nor one the image brings) fails: with a read-only root file system it could
    /// not be written, and here it would land on the host.
    fn write(&mut self, rewrite: &Rewrite) {
        for (_, contents) in &mut self.files {
            *contents = rewrite.text(contents);
        }
        for (p, contents) in &self.files {
            for line in contents.lines().filter(|l| !l.trim_start().starts_with('#')) {
                for quote in ['"', '\''] {
                    for quoted in line.split(quote).skip(1).step_by(2) {
                        self.assert_inside(quoted, &p.display().to_string());
                    }
                }
            }
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, contents).expect("write");
        }
    }

    fn assert_inside(&self, value: &str, what: &str) {
        if value.starts_with('/') {
            let inside =
                Path::new(value).starts_with(self.root.path()) || self.paths.iter().any(|(_, host)| Path::new(value).starts_with(host));
            assert!(inside, "{what}: {value} is neither a mount nor in the image");
        }
    }

    /// A command's environment, rewritten, with the same check as [`Rootfs::write`].
    fn env(&self, rewrite: &Rewrite, env: &BTreeMap<String, String>) -> Vec<(String, String)> {
        env.iter()
            .map(|(k, v)| {
                let v = rewrite.value(v);
                self.assert_inside(&v, k);
                (k.clone(), v)
            })
            .collect()
    }
}

/// A started service; killed when dropped. Its stdout and stderr go to files.
struct Proc {
    name: String,
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command, logs: &Path) -> Proc {
        let (out, err) = (logs.join(format!("{name}.out")), logs.join(format!("{name}.err")));
        cmd.stdout(std::fs::File::create(&out).expect("log")).stderr(std::fs::File::create(&err).expect("log"));
        let child = cmd.spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
        Proc { name: name.into(), child, out, err }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Every line it logged is JSON (and it logged something).
    fn assert_json_logs(&self, why: &str) {
        let log = self.stderr();
        assert!(log.lines().count() > 0 && log.lines().all(|l| serde_json::from_str::<Value>(l).is_ok()), "JSON logs ({why}):\n{log}");
    }

    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited ({status}):\n{}\n{}", self.name, self.stdout(), self.stderr());
        }
    }

    /// Waits until `path` on `port` answers 200 (as a readiness probe would).
    async fn wait_ready(&mut self, port: u16, path: &str) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            self.assert_running();
            if client.get(format!("http://127.0.0.1:{port}{path}")).send().await.is_ok_and(|r| r.status() == 200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{} did not get ready:\n{}", self.name, self.stderr());
    }
}

/// A command in a container's environment: nothing of the test's own Ferry settings leaks in.
fn container_command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_string();
        if k.starts_with("FERRY_") || k.starts_with("MIMALLOC_") || k == "RUST_LOG" || k == "TEST_DATABASE_URL" {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// What `deploy/Dockerfile`'s final image sets up: its environment, entry point, command and
/// working directory; the binaries it copies are the workspace's.
struct Image {
    env: Vec<(String, String)>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    workdir: String,
}

fn image() -> Image {
    let file = std::fs::read_to_string(repo().join("deploy/Dockerfile")).expect("Dockerfile");
    let last = &file[file.rfind("\nFROM ").expect("a final stage")..];
    assert!(
        last.contains("COPY --from=build /src/target/release/ferry-hub /src/target/release/ferry-connector /usr/local/bin/"),
        "the image's binaries"
    );
    assert!(last.contains("COPY --from=ohif /opt/ohif /opt/ohif"), "the image's OHIF viewer");
    let mut img = Image { env: Vec::new(), entrypoint: Vec::new(), cmd: Vec::new(), workdir: "/".into() };
    for line in last.lines() {
        if let Some(rest) = line.strip_prefix("ENV ") {
            assert!(!rest.ends_with('\\'), "one-line ENV");
            for pair in rest.split_whitespace() {
                let (k, v) = pair.split_once('=').expect("ENV key=value");
                img.env.push((k.into(), v.into()));
            }
        } else if let Some(rest) = line.strip_prefix("ENTRYPOINT ") {
            img.entrypoint = serde_json::from_str(rest).expect("ENTRYPOINT [..]");
        } else if let Some(rest) = line.strip_prefix("CMD ") {
            img.cmd = serde_json::from_str(rest).expect("CMD [..]");
        } else if let Some(rest) = line.strip_prefix("WORKDIR ") {
            img.workdir = rest.trim().into();
        }
    }
    img
}

/// The workspace's build of a binary the image has on its PATH.
fn image_binary(name: &str) -> PathBuf {
    match name {
        "ferry-hub" => hub_binary(),
        "ferry-connector" => hub_binary().with_file_name("ferry-connector"),
        other => panic!("the image has no {other}"),
    }
}

async fn stow(base: &str, token: &str, files: &[Vec<u8>]) -> u16 {
    let parts: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
    reqwest::Client::new()
        .post(format!("{base}/dicomweb/studies"))
        .bearer_auth(token)
        .header("content-type", "multipart/related; type=\"application/dicom\"; boundary=ferrytest")
        .body(multipart(&parts, "ferrytest"))
        .send()
        .await
        .expect("stow")
        .status()
        .as_u16()
}

async fn retrieve(base: &str, token: &str, path: &str) -> Vec<Vec<u8>> {
    let r = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .header("accept", "multipart/related; type=\"application/dicom\"; transfer-syntax=*")
        .send()
        .await
        .expect("retrieve");
    assert_eq!(r.status(), 200, "retrieve {path}");
    let ct = r.headers()["content-type"].to_str().expect("ct").to_string();
    split_multipart(&ct, &r.bytes().await.expect("body"))
}

fn study(n: usize) -> (String, Vec<Vec<u8>>) {
    let (study, series) = (uid(), uid());
    let files = (0..n).map(|_| Synth::new(&study, &series, &uid()).bytes()).collect();
    (study, files)
}

/// A PostgreSQL database of its own: on the suite's server when it runs on PostgreSQL, else on a
/// private server started here (the chart and the compose file are for PostgreSQL).
async fn postgres_database(private: &mut Option<Postgres>) -> String {
    if let Some(url) = fresh_database().await {
        return url;
    }
    let pg = private.get_or_insert_with(Postgres::start);
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&pg.url).await.expect("connect");
    let name = format!("ferry_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&pool).await.expect("create database");
    pool.close().await;
    format!("{}/{name}", pg.url.rsplit_once('/').expect("url").0)
}

// --- Helm ------------------------------------------------------------------------------------------

type Secrets = BTreeMap<String, BTreeMap<String, String>>;

fn chart() -> String {
    repo().join("deploy/helm/ferry").display().to_string()
}

/// `helm template` with `--set` values; every object is checked against Kubernetes' schemas.
fn render(sets: &[String]) -> Vec<Value> {
    let chart = chart();
    let mut args = vec!["template", "ferry", chart.as_str()];
    for s in sets {
        args.extend(["--set", s.as_str()]);
    }
    let rendered = tool("helm", &args);
    let file = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(file.path(), &rendered).expect("write");
    tool("kubernetes-validate", &["--strict", "--quiet", file.path().to_str().expect("path")]);
    yaml_docs(&rendered)
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(docs, kind);
    assert_eq!(found.len(), 1, "one {kind}");
    found[0]
}

fn env_var<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"].as_array().expect("env").iter().find(|e| e["name"] == name)
}

/// The objects fit together where Kubernetes only finds out at run time: the Service and the
/// Deployment select the pods' labels, named ports exist, the Ingress points at the Service.
fn assert_wired(docs: &[Value]) {
    let deployment = one(docs, "Deployment");
    let service = one(docs, "Service");
    let labels = deployment["spec"]["template"]["metadata"]["labels"].as_object().expect("labels");
    for selector in [&service["spec"]["selector"], &deployment["spec"]["selector"]["matchLabels"]] {
        for (k, v) in selector.as_object().expect("selector") {
            assert_eq!(labels.get(k), Some(v), "selector {k} matches the pods");
        }
    }
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let port_names: Vec<&Value> = container["ports"].as_array().expect("ports").iter().map(|p| &p["name"]).collect();
    for p in service["spec"]["ports"].as_array().expect("ports") {
        assert!(port_names.contains(&&p["targetPort"]), "the Service's target port {} is a container port", p["targetPort"]);
    }
    for probe in ["readinessProbe", "livenessProbe"] {
        assert!(port_names.contains(&&container[probe]["httpGet"]["port"]), "{probe} port");
    }
    for ingress in of_kind(docs, "Ingress") {
        for rule in ingress["spec"]["rules"].as_array().expect("rules") {
            for path in rule["http"]["paths"].as_array().expect("paths") {
                let backend = &path["backend"]["service"];
                assert_eq!(backend["name"], service["metadata"]["name"]);
                let names: Vec<&Value> = service["spec"]["ports"].as_array().expect("ports").iter().map(|p| &p["name"]).collect();
                assert!(names.contains(&&backend["port"]["name"]), "the Ingress's port is the Service's");
            }
        }
    }
    let volumes = deployment["spec"]["template"]["spec"]["volumes"].as_array().expect("volumes");
    for m in container["volumeMounts"].as_array().expect("mounts") {
        assert!(volumes.iter().any(|v| v["name"] == m["name"]), "mount {} has a volume", m["name"]);
    }
}

/// The command of one hub pod of the rendered Deployment, listening on `port`.
fn pod_command(docs: &[Value], secrets: &Secrets, port: u16) -> (Command, Rootfs) {
    let mut secrets = secrets.clone();
    for s in of_kind(docs, "Secret") {
        let data = s["stringData"].as_object().expect("stringData").iter().map(|(k, v)| (k.clone(), text(v).to_string())).collect();
        secrets.insert(text(&s["metadata"]["name"]).into(), data);
    }
    let secret = |name: &str, key: &str| -> String {
        secrets
            .get(name)
            .and_then(|s| s.get(key))
            .unwrap_or_else(|| panic!("the pod needs key {key} of Secret {name}, which neither the chart nor the operator provides"))
            .clone()
    };
    let deployment = one(docs, "Deployment");
    let spec = &deployment["spec"]["template"]["spec"];
    let containers = spec["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let volumes: BTreeMap<&str, &Value> = spec["volumes"].as_array().expect("volumes").iter().map(|v| (text(&v["name"]), v)).collect();
    let mut fs = Rootfs::new();
    for m in c["volumeMounts"].as_array().expect("mounts") {
        let at = text(&m["mountPath"]);
        let volume = volumes[text(&m["name"])];
        if let Some(s) = volume.get("secret") {
            let name = text(&s["secretName"]);
            match m.get("subPath") {
                Some(key) => fs.file(at, &secret(name, text(key))),
                None => {
                    fs.dir(at);
                    let keys: Vec<String> = secrets.get(name).unwrap_or_else(|| panic!("Secret {name}")).keys().cloned().collect();
                    for key in keys {
                        fs.file(&format!("{at}/{key}"), &secret(name, &key));
                    }
                }
            }
        } else if volume.get("emptyDir").is_some() {
            fs.scratch(at);
        } else {
            panic!("volume kind of {volume}");
        }
    }
    fs.image_path("/opt/ohif", crate::fixtures::ohif_dir());
    let image = image();
    let mut rewrite = Rewrite { rules: fs.rules(), ..Default::default() };
    for p in c["ports"].as_array().expect("ports") {
        rewrite.rules.push(Rule { from: format!("0.0.0.0:{}", p["containerPort"]), to: format!("127.0.0.1:{port}"), path: false });
    }
    fs.write(&rewrite);

    let mut env: BTreeMap<String, String> = image.env.iter().cloned().collect();
    let mut from_secrets = BTreeMap::new();
    for e in c["env"].as_array().expect("env") {
        let name = text(&e["name"]).to_string();
        match (e.get("value"), e.get("valueFrom")) {
            (Some(v), None) => {
                env.insert(name, text(v).to_string());
            }
            // Opaque to the container: passed as they are.
            (None, Some(from)) => {
                env.remove(&name);
                from_secrets.insert(name, secret(text(&from["secretKeyRef"]["name"]), text(&from["secretKeyRef"]["key"])));
            }
            _ => panic!("env entry {e}"),
        }
    }
    let strings = |v: &Value| -> Option<Vec<String>> { v.as_array().map(|a| a.iter().map(|s| text(s).to_string()).collect()) };
    let command = strings(&c["command"]).unwrap_or(image.entrypoint);
    let args = strings(&c["args"]).unwrap_or(image.cmd);
    let mut cmd = container_command(&image_binary(&command[0]));
    cmd.args(command[1..].iter().chain(&args).map(|a| rewrite.value(a)));
    cmd.envs(fs.env(&rewrite, &env)).envs(&from_secrets);
    if fs.paths.iter().any(|(at, _)| at == "/tmp") {
        cmd.env("TMPDIR", fs.host("/tmp"));
    }
    cmd.current_dir(rewrite.value(&image.workdir));
    (cmd, fs)
}

fn operator_secrets(database_url: &str, admin_token: &str) -> Secrets {
    let key = || format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let map = |pairs: &[(&str, String)]| pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<BTreeMap<_, _>>();
    BTreeMap::from([
        ("ferry-database".into(), map(&[("url", database_url.into())])),
        ("ferry-s3".into(), map(&[("access_key_id", "ferry".into()), ("secret_access_key", "ferry-secret".into())])),
        ("ferry-keys".into(), map(&[("kek.hex", key()), ("hub-secret.hex", key())])),
        ("ferry-admin-token".into(), map(&[("token", admin_token.into())])),
    ])
}

/// Starts every replica of the rendered Deployment at once and waits for their readiness probes.
async fn run_pods(docs: &[Value], secrets: &Secrets, ports: &[u16], logs: &Path) -> Vec<(Proc, Rootfs)> {
    let deployment = one(docs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"].as_u64(), Some(ports.len() as u64));
    let mut pods: Vec<(Proc, Rootfs)> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let (cmd, fs) = pod_command(docs, secrets, *port);
            (Proc::spawn(&format!("hub-{i}"), cmd, logs), fs)
        })
        .collect();
    let c = &deployment["spec"]["template"]["spec"]["containers"][0];
    for ((pod, _), port) in pods.iter_mut().zip(ports) {
        pod.wait_ready(*port, text(&c["readinessProbe"]["httpGet"]["path"])).await;
        assert_listens_on_loopback_only(*port);
        let live =
            reqwest::get(format!("http://127.0.0.1:{port}{}", text(&c["livenessProbe"]["httpGet"]["path"]))).await.expect("liveness");
        assert_eq!(live.status(), 200, "liveness probe");
    }
    pods
}

#[tokio::test]
async fn the_helm_chart_lints_validates_and_its_pods_run_as_one_hub() {
    tls();
    // Lint and schema checks: the default values and a set that takes every other branch.
    let oidc = [
        "oidc.providers[0].id=klinikum",
        "oidc.providers[0].label=Klinikum",
        "oidc.providers[0].issuer=https://login.klinikum.example",
        "oidc.providers[0].clientId=ferry",
    ];
    let mut variant: Vec<String> = oidc.iter().map(|s| s.to_string()).collect();
    variant.extend(
        [
            "oidc.providers[0].clientSecret=s3cret",
            "keys.provider=transit",
            "mail.smtpSecret=ferry-mail",
            "ingress.enabled=false",
            "viewer.ohif=false",
            "storage.s3.endpoint=http://seaweedfs-s3:8333",
        ]
        .map(String::from),
    );
    tool("helm", &["lint", "--strict", &chart()]);
    let mut lint = vec!["lint".to_string(), "--strict".into(), chart()];
    for s in &variant {
        lint.extend(["--set".into(), s.clone()]);
    }
    tool("helm", &lint.iter().map(String::as_str).collect::<Vec<_>>());

    let defaults = render(&[]);
    assert_wired(&defaults);
    let c = &one(&defaults, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    assert!(env_var(c, "FERRY_KEYS__TRANSIT__URL").is_none() && env_var(c, "FERRY_MAIL__SMTP_URL").is_none());
    assert!(
        one(&defaults, "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
            .as_str()
            .is_some_and(|s| s.len() == 64),
        "pods restart when the configuration changes"
    );

    let other = render(&variant);
    assert_wired(&other);
    assert!(of_kind(&other, "Ingress").is_empty(), "ingress.enabled=false");
    let c = &one(&other, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(env_var(c, "FERRY_KEYS__PROVIDER").expect("provider")["value"], "transit");
    assert_eq!(env_var(c, "FERRY_KEYS__TRANSIT__TOKEN").expect("token")["valueFrom"]["secretKeyRef"]["name"], "ferry-transit-token");
    assert_eq!(env_var(c, "FERRY_MAIL__SMTP_URL").expect("smtp")["valueFrom"]["secretKeyRef"]["name"], "ferry-mail");
    assert!(env_var(c, "FERRY_VIEWER__OHIF_DIR").is_none());
    let config = text(&one(&other, "Secret")["stringData"]["ferry-hub.toml"]);
    assert!(config.contains("[[auth.oidc]]") && config.contains("client_secret = \"s3cret\""), "{config}");
    // A provider without its client secret is refused when rendering, with the value's name.
    let chart = chart();
    let mut args = vec!["template", "ferry", chart.as_str()];
    for s in &oidc {
        args.extend(["--set", s]);
    }
    let out = Command::new("helm").args(&args).output().expect("helm");
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("oidc.providers[].clientSecret"));

    // Run: the default values on PostgreSQL and SeaweedFS, all replicas at once on one fresh
    // database (they race for the migrations as pods do).
    let weed = SeaweedFs::start("ferry").await;
    let mut private = None;
    let db = postgres_database(&mut private).await;
    let logs = tempfile::tempdir().expect("tmp");
    let ports = [free_port(), free_port()];
    let public = format!("http://127.0.0.1:{}", ports[0]);
    let docs = render(&[
        format!("publicUrl={public}"),
        format!("storage.s3.endpoint=http://127.0.0.1:{}", weed.s3),
        "storage.s3.allowHttp=true".into(),
    ]);
    assert_wired(&docs);
    let secrets = operator_secrets(&db, "helm-admin-token");
    let mut pods = run_pods(&docs, &secrets, &ports, logs.path()).await;
    let [a, b] = ports.map(|p| format!("http://127.0.0.1:{p}"));

    // What one replica stores, the other serves byte-identical; the configuration is the
    // chart's (JSON logs, the viewer from the image's path).
    let (uid1, files) = study(3);
    assert_eq!(stow(&a, "helm-admin-token", &files).await, 200);
    let mut got = retrieve(&b, "helm-admin-token", &format!("/dicomweb/studies/{uid1}")).await;
    let mut want = files.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    let r = reqwest::Client::new()
        .post(format!("{b}/api/v1/communities"))
        .bearer_auth("helm-admin-token")
        .json(&json!({"name": "Radiologie Helm", "code": "hLm1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let found: Vec<Value> = reqwest::Client::new()
        .get(format!("{a}/api/v1/communities?q=Helm"))
        .bearer_auth("helm-admin-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(reqwest::get(format!("{a}/ohif/")).await.unwrap().status(), 200, "the viewer at the image's /opt/ohif");
    let metrics = reqwest::Client::new().get(format!("{a}/metrics")).bearer_auth("helm-admin-token").send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    for (pod, fs) in &mut pods {
        pod.assert_running();
        fs.assert_writes_only_where_allowed();
        pod.assert_json_logs("the image's FERRY_LOG__FORMAT, the chart's [log] format");
    }
    drop(pods);

    // The transit branch: the key-encryption key in OpenBao, one replica.
    let bao = OpenBao::start().await;
    let db = postgres_database(&mut private).await;
    let port = free_port();
    let docs = render(&[
        format!("publicUrl=http://127.0.0.1:{port}"),
        format!("storage.s3.endpoint=http://127.0.0.1:{}", weed.s3),
        "storage.s3.allowHttp=true".into(),
        "replicaCount=1".into(),
        "keys.provider=transit".into(),
        format!("keys.transit.url={}", bao.url),
    ]);
    let mut secrets = operator_secrets(&db, "helm-admin-token");
    secrets.get_mut("ferry-keys").expect("keys").remove("kek.hex");
    secrets.insert("ferry-transit-token".into(), BTreeMap::from([("token".into(), bao.token.clone())]));
    let pods = run_pods(&docs, &secrets, &[port], logs.path()).await;
    let base = format!("http://127.0.0.1:{port}");
    let (uid2, files) = study(2);
    assert_eq!(stow(&base, "helm-admin-token", &files).await, 200);
    assert_eq!(retrieve(&base, "helm-admin-token", &format!("/dicomweb/studies/{uid2}")).await.len(), 2);
    let pool = sqlx::AnyPool::connect(&db).await.expect("connect");
    let wrapped: String = sqlx::query_scalar("SELECT wrapped_key FROM study_keys WHERE key_id = $1")
        .bind(format!("hub|{uid2}"))
        .fetch_one(&pool)
        .await
        .expect("key");
    pool.close().await;
    assert!(wrapped.starts_with("vault:v1:"), "the study key is wrapped by the key service the chart points at");
    for (_, fs) in &pods {
        fs.assert_writes_only_where_allowed();
    }
    drop(pods);
}

// --- compose ---------------------------------------------------------------------------------------

fn compose_dir() -> PathBuf {
    repo().join("deploy/compose")
}

/// A file the compose file refers to, which must be part of the repository.
fn in_repo(path: &Path) -> PathBuf {
    let p = path.canonicalize().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(p.starts_with(repo().canonicalize().expect("repo")), "{} is outside the repository", p.display());
    p
}

/// Where the compose services are reached from the host: each (service, container port) gets a
/// loopback port; published ports keep their `localhost` form.
#[derive(Default)]
struct Net {
    ports: BTreeMap<(String, u64), u16>,
    published: BTreeMap<u64, u16>,
}

impl Net {
    fn add(&mut self, service: &str, container: u64, host: u16, compose: &Value) {
        self.ports.insert((service.into(), container), host);
        for p in compose["services"][service]["ports"].as_array().into_iter().flatten() {
            let spec = text(p);
            let parts: Vec<&str> = spec.split(':').collect();
            assert_eq!(parts.first(), Some(&"127.0.0.1"), "{service} publishes on loopback only: {spec}");
            if parts.last().and_then(|c| c.parse::<u64>().ok()) == Some(container) {
                self.published.insert(container, host);
            }
        }
    }

    fn port(&self, service: &str, container: u64) -> u16 {
        self.ports[&(service.to_string(), container)]
    }

    /// The rewrite for one service: other services by name, its own listening addresses, ports.
    fn rewrite(&self, own: &str, fs: &Rootfs) -> Rewrite {
        let mut r = Rewrite { rules: fs.rules(), ..Default::default() };
        let rule = |from: String, to: String| Rule { from, to, path: false };
        for ((service, port), host) in &self.ports {
            r.rules.push(rule(format!("{service}:{port}"), format!("127.0.0.1:{host}")));
            r.rules.push(rule(format!("\"{service}\""), "\"127.0.0.1\"".into()));
            if service == own {
                r.rules.push(rule(format!("0.0.0.0:{port}"), format!("127.0.0.1:{host}")));
                r.rules.push(rule(format!("port={port}"), format!("port={host}")));
                r.whole.insert(port.to_string(), host.to_string());
            } else {
                r.rules.push(rule(format!("port = {port}"), format!("port = {host}")));
            }
        }
        for (port, host) in &self.published {
            r.rules.push(rule(format!("localhost:{port}"), format!("localhost:{host}")));
        }
        r.whole.insert("0.0.0.0".into(), "127.0.0.1".into());
        r
    }
}

/// The variables of an env file (`KEY=VALUE` lines; `#` comments), as compose and systemd read it.
fn env_file_vars(text: &str) -> impl Iterator<Item = (String, String)> + '_ {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
}

/// A service's environment: `env_file`s, then `environment`.
fn service_env(service: &Value) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for f in service["env_file"].as_array().into_iter().flatten() {
        env.extend(env_file_vars(&std::fs::read_to_string(in_repo(&compose_dir().join(text(f)))).expect("env file")));
    }
    for (k, v) in service["environment"].as_object().into_iter().flatten() {
        env.insert(k.clone(), v.as_str().map(String::from).unwrap_or_else(|| v.to_string()));
    }
    env
}

/// A service's volumes in its root: bind-mounted files of the compose folder, named volumes as
/// empty directories.
fn service_volumes(service: &Value, fs: &mut Rootfs) {
    for v in service["volumes"].as_array().into_iter().flatten() {
        let spec = text(v);
        let mut parts = spec.split(':');
        let (src, at) = (parts.next().expect("source"), parts.next().expect("target"));
        if src.starts_with('.') {
            let host = in_repo(&compose_dir().join(src));
            let contents = std::fs::read_to_string(&host).unwrap_or_else(|e| panic!("{spec}: {e}"));
            fs.file(at, &contents);
        } else {
            fs.scratch(at);
        }
    }
}

/// Orthanc's configuration from the orthancteam image's environment convention
/// (`ORTHANC__DICOM_AET` is `DicomAet`).
fn orthanc_setting(name: &str) -> String {
    name.split('_')
        .map(|w| {
            let w = w.to_lowercase();
            let mut c = w.chars();
            c.next().map(|f| f.to_uppercase().chain(c).collect::<String>()).unwrap_or_default()
        })
        .collect()
}

#[tokio::test]
async fn the_compose_file_validates_and_its_services_run_the_demo() {
    tls();
    let file = compose_dir().join("compose.yaml");
    tool("check-jsonschema", &["--builtin-schema", "vendor.compose-spec", file.to_str().expect("path")]);
    let compose = yaml_docs(&std::fs::read_to_string(&file).expect("compose")).remove(0);
    let mut services: Vec<&str> = compose["services"].as_object().expect("services").keys().map(String::as_str).collect();
    services.sort_unstable();
    assert_eq!(
        services,
        ["bucket", "connector", "hub", "idp", "orthanc", "postgres", "seaweedfs"],
        "this test runs every service of the file"
    );
    let svc = |name: &str| &compose["services"][name];
    let logs = tempfile::tempdir().expect("tmp");
    let img = image();
    let mut net = Net::default();
    for (service, port) in [("seaweedfs", 8333), ("idp", 9000), ("hub", 8080)] {
        net.add(service, port, free_port(), &compose);
    }

    // postgres: the image's first start creates the user and database of its environment; ready
    // when its healthcheck passes.
    let env = service_env(svc("postgres"));
    let pg = Postgres::start();
    let pg_port = pg.port;
    net.add("postgres", 5432, pg_port, &compose);
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(&pg.url).await.expect("connect");
    assert_eq!(env["POSTGRES_USER"], "ferry", "the private server's superuser");
    sqlx::query(sqlx::AssertSqlSafe(format!("ALTER ROLE ferry PASSWORD '{}'", env["POSTGRES_PASSWORD"])))
        .execute(&admin)
        .await
        .expect("password");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {}", env["POSTGRES_DB"]))).execute(&admin).await.expect("database");
    admin.close().await;
    pg.require_passwords();
    let check: Vec<String> = svc("postgres")["healthcheck"]["test"].as_array().expect("test").iter().map(|s| text(s).to_string()).collect();
    assert_eq!(check[0], "CMD");
    let ok = Command::new(&check[1]).args(&check[2..]).args(["-h", "127.0.0.1", "-p", &pg_port.to_string()]).output().expect("pg_isready");
    assert!(ok.status.success(), "healthcheck: {}", String::from_utf8_lossy(&ok.stdout));

    // seaweedfs: its command line and s3.json (the credentials the hub and the bucket job use).
    let mut fs_weed = Rootfs::new();
    service_volumes(svc("seaweedfs"), &mut fs_weed);
    let rw = net.rewrite("seaweedfs", &fs_weed);
    fs_weed.write(&rw);
    let args: Vec<String> = text(&svc("seaweedfs")["command"]).split_whitespace().map(|a| rw.text(a)).collect();
    let weed = SeaweedFs::spawn(&args, net.port("seaweedfs", 8333), tempfile::tempdir().expect("tmp")).await;

    // bucket: the job's own shell loop, with the AWS CLI (PyPI awscli), until it succeeds.
    let bucket = svc("bucket");
    let mut fs_bucket = Rootfs::new();
    let rw = net.rewrite("bucket", &fs_bucket);
    let home = fs_bucket.scratch("/root");
    let entry: Vec<String> = bucket["entrypoint"].as_array().expect("entrypoint").iter().map(|s| rw.text(text(s))).collect();
    let mut cmd = Command::new(&entry[0]);
    cmd.args(&entry[1..]).envs(service_env(bucket).iter().map(|(k, v)| (k, rw.value(v)))).env("HOME", &home);
    let mut job = Proc::spawn("bucket", cmd, logs.path());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = job.child.try_wait().expect("wait") {
            assert!(status.success(), "bucket job: {}", job.stderr());
            break;
        }
        assert!(Instant::now() < deadline, "the bucket job did not finish: {}{}", job.stdout(), job.stderr());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // idp: the compose file mounts tests/node's idp.mjs and package files and runs `npm ci` then
    // `node idp.mjs`; tests/run.sh ran that `npm ci` in tests/node, so it runs there.
    let idp = svc("idp");
    for v in idp["volumes"].as_array().expect("volumes") {
        let src = text(v).split(':').next().expect("src");
        let name = Path::new(src).file_name().expect("name");
        assert_eq!(in_repo(&compose_dir().join(src)), node_dir().join(name).canonicalize().expect("exists"));
    }
    let script = text(&idp["command"][2]);
    assert!(script.ends_with("&& node idp.mjs"), "{script}");
    let fs_idp = Rootfs::new();
    let rw = net.rewrite("idp", &fs_idp);
    let idp_env = service_env(idp);
    let mut cmd = Command::new("node");
    cmd.arg("idp.mjs").current_dir(node_dir()).envs(idp_env.iter().map(|(k, v)| (k, rw.value(v))));
    let mut idp_proc = Proc::spawn("idp", cmd, logs.path());
    let issuer = rw.value(&idp_env["IDP_ISSUER"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !idp_proc.stdout().starts_with("ready ") {
        idp_proc.assert_running();
        assert!(Instant::now() < deadline, "the IdP did not start: {}", idp_proc.stderr());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // hub: the image (ENV, ENTRYPOINT, CMD) with the file's environment and mounts.
    let hub = svc("hub");
    assert!(hub["entrypoint"].is_null() && hub["command"].is_null());
    let mut fs_hub = Rootfs::new();
    service_volumes(hub, &mut fs_hub);
    fs_hub.image_path("/opt/ohif", crate::fixtures::ohif_dir());
    let rw = net.rewrite("hub", &fs_hub);
    fs_hub.write(&rw);
    let mut env: BTreeMap<String, String> = img.env.iter().cloned().collect();
    env.extend(service_env(hub));
    let mut cmd = container_command(&image_binary(&img.entrypoint[0]));
    cmd.args(img.entrypoint[1..].iter().chain(&img.cmd)).envs(fs_hub.env(&rw, &env)).current_dir(rw.value(&img.workdir));
    let mut hub_proc = Proc::spawn("hub", cmd, logs.path());
    let hub_port = net.port("hub", 8080);
    hub_proc.wait_ready(hub_port, "/readyz").await;
    for port in [hub_port, net.port("idp", 9000), net.port("seaweedfs", 8333)] {
        assert_listens_on_loopback_only(port);
    }
    let public = rw.value(&env["FERRY_PUBLIC_URL"]);
    assert_eq!(public, format!("http://localhost:{hub_port}"));

    // "open http://localhost:8080 (first admin: the setup link in `docker compose logs hub`)"
    let deadline = Instant::now() + Duration::from_secs(10);
    let link = loop {
        if let Some(l) = hub_proc.stdout().split_whitespace().find(|w| w.contains("/setup?token=")) {
            break l.to_string();
        }
        assert!(Instant::now() < deadline, "no setup link: {}", hub_proc.stdout());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(link.starts_with(&format!("{public}/setup?token=")), "{link}");
    let admin = crate::fixtures::people::browser();
    let token = link.rsplit_once("token=").expect("token").1;
    let r = admin
        .post(format!("{public}/api/v1/auth/setup"))
        .json(&json!({"token": token, "email": "admin@demo.example", "password": crate::fixtures::people::PASSWORD, "name": "Demo Admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    let r = admin
        .post(format!("{public}/api/v1/auth/login"))
        .json(&json!({"email": "admin@demo.example", "password": crate::fixtures::people::PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = admin
        .post(format!("{public}/api/v1/communities"))
        .json(&json!({"name": "Radiologie Demo", "code": "dEm1", "city": "Saarbrücken"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());

    // "create a community, register a connector on its admin page, put client_id/secret into
    // deploy/compose/connector.env, then `docker compose up -d connector`"
    let r = admin.post(format!("{public}/api/v1/communities/dEm1/connectors")).json(&json!({"name": "Demo-PACS"})).send().await.unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    let creds: Value = r.json().await.unwrap();
    let orthanc_env = service_env(svc("orthanc"));
    let orthanc = Orthanc::start_configured(|c| {
        for (k, v) in &orthanc_env {
            if let Some(name) = k.strip_prefix("ORTHANC__") {
                c[orthanc_setting(name)] = match v.as_str() {
                    "true" => json!(true),
                    "false" => json!(false),
                    s => json!(s),
                };
            }
        }
        if orthanc_env.get("DICOM_WEB_PLUGIN_ENABLED").map(String::as_str) != Some("true") {
            c["Plugins"] = json!([]);
        }
    })
    .await;
    let system: Value = reqwest::get(orthanc.url("/system")).await.unwrap().json().await.unwrap();
    assert_eq!((&system["Name"], &system["DicomAet"]), (&json!("KLINIK-PACS"), &json!("PACS")), "the file's Orthanc settings");
    net.add("orthanc", 8042, orthanc.http, &compose);
    net.add("orthanc", 4242, orthanc.dicom, &compose);

    let connector = svc("connector");
    assert_eq!(connector["profiles"], json!(["clinic"]));
    let mut fs_conn = Rootfs::new();
    service_volumes(connector, &mut fs_conn);
    if !fs_conn.paths.iter().any(|(at, _)| *at == img.workdir) {
        fs_conn.scratch(&img.workdir);
    }
    let rw = net.rewrite("connector", &fs_conn);
    fs_conn.write(&rw);
    let mut env: BTreeMap<String, String> = img.env.iter().cloned().collect();
    env.extend(service_env(connector));
    // What the operator puts into connector.env in place of its placeholders.
    for (key, value) in
        [("FERRY_CONNECTOR_HUB__CLIENT_ID", &creds["client_id"]), ("FERRY_CONNECTOR_HUB__CLIENT_SECRET", &creds["client_secret"])]
    {
        assert!(env.contains_key(key), "connector.env names {key}");
        env.insert(key.into(), text(value).into());
    }
    let strings = |v: &Value| -> Vec<String> { v.as_array().expect("list").iter().map(|s| rw.value(text(s))).collect() };
    let (entry, args) = (strings(&connector["entrypoint"]), strings(&connector["command"]));
    let mut cmd = container_command(&image_binary(&entry[0]));
    cmd.args(entry[1..].iter().chain(&args)).envs(fs_conn.env(&rw, &env)).current_dir(rw.value(&img.workdir));
    let mut conn_proc = Proc::spawn("connector", cmd, logs.path());

    // A referrer signs in through the demo provider and sends a study to the community; the
    // connector stores it in Orthanc.
    let referrer = crate::fixtures::people::browser();
    let (_, r) = crate::fixtures::people::sign_in_at(&referrer, &public, &issuer, "demo", "dr.demo").await;
    assert_eq!(r.status(), 303, "signed in through the demo provider");
    let r = referrer
        .post(format!("{public}/api/v1/transfers"))
        .json(&json!({"community": "dEm1", "reason": "Zweitmeinung", "appointment": "2026-12-01", "urgency": "routine"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    let t: Value = r.json().await.unwrap();
    let id = text(&t["id"]).to_string();
    let (_, files) = study(3);
    let mut form = reqwest::multipart::Form::new();
    for (i, f) in files.iter().enumerate() {
        form = form.part("file", reqwest::multipart::Part::bytes(f.clone()).file_name(format!("IM{i}.dcm")));
    }
    let r = referrer.post(format!("{public}/api/v1/transfers/{id}/files")).multipart(form).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let r = referrer.post(format!("{public}/api/v1/transfers/{id}/send")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());

    let mut want: Vec<String> = files.iter().map(|f| hex::encode(sha2::Sha256::digest(dataset(f)))).collect();
    want.sort();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        conn_proc.assert_running();
        let state: ferry_schemas::Transfer =
            referrer.get(format!("{public}/api/v1/transfers/{id}")).send().await.unwrap().json().await.unwrap();
        if state.state == ferry_schemas::TransferState::Stored {
            break;
        }
        assert!(Instant::now() < deadline, "not stored in Orthanc: {state:?}\n{}", conn_proc.stderr());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut got: Vec<String> = orthanc.stored().await.into_values().collect();
    got.sort();
    assert_eq!(got, want, "the study arrived in the PACS unchanged");
    assert_eq!(reqwest::get(format!("{public}/ohif/")).await.unwrap().status(), 200, "the viewer");
    for p in [&mut hub_proc, &mut idp_proc] {
        p.assert_running();
    }
    fs_hub.assert_writes_only_where_allowed();
    fs_conn.assert_writes_only_where_allowed();
    drop((conn_proc, hub_proc, idp_proc, weed, pg));
}

// --- systemd ---------------------------------------------------------------------------------------

/// The `[Service]` settings of one of `deploy/`'s systemd units (key → values in order).
fn unit_service(name: &str) -> BTreeMap<String, Vec<String>> {
    let text = std::fs::read_to_string(repo().join("deploy").join(name)).expect("unit");
    let mut section = "";
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        if line.starts_with('[') {
            section = line;
        } else if section == "[Service]" {
            let (k, v) = line.split_once('=').expect("key=value");
            out.entry(k.into()).or_default().push(v.into());
        }
    }
    out
}

/// The command a unit's `ExecStart=` runs, in a root where only what the unit makes writable
/// (`ReadWritePaths=`, `StateDirectory=`; `ProtectSystem=strict` keeps the rest read-only) and the
/// files the operator puts in place exist; its `Environment=` and `EnvironmentFile=` set.
fn unit_command(name: &str, fs: &mut Rootfs, files: &[(&str, String)], mut rewrite: Rewrite) -> Command {
    let unit = unit_service(name);
    assert_eq!(unit["ProtectSystem"], ["strict"], "{name}");
    let state = unit["StateDirectory"].iter().map(|d| format!("/var/lib/{d}"));
    for dir in unit["ReadWritePaths"].iter().cloned().chain(state) {
        fs.scratch(&dir);
    }
    for (at, contents) in files {
        fs.file(at, contents);
    }
    rewrite.rules.extend(fs.rules());
    fs.write(&rewrite);
    let exec: Vec<&str> = unit["ExecStart"][0].split_whitespace().collect();
    let program = exec[0].strip_prefix("/usr/local/bin/").unwrap_or_else(|| panic!("{name} runs {}", exec[0]));
    let mut env = BTreeMap::new();
    for e in unit.get("Environment").into_iter().flatten() {
        let (k, v) = e.split_once('=').expect("K=V");
        env.insert(k.to_string(), v.to_string());
    }
    for f in unit.get("EnvironmentFile").into_iter().flatten() {
        let path = fs.host(f.trim_start_matches('-'));
        // Without a leading '-', systemd refuses to start when the file is missing.
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| if f.starts_with('-') { String::new() } else { panic!("{name}: {f}: {e}") });
        env.extend(env_file_vars(&text));
    }
    let mut cmd = container_command(&image_binary(program));
    cmd.args(exec[1..].iter().map(|a| rewrite.value(a))).envs(fs.env(&rewrite, &env));
    // systemd starts it in "/" (no WorkingDirectory=), with a private /tmp (PrivateTmp=).
    cmd.current_dir(fs.root.path());
    if unit.get("PrivateTmp").is_some_and(|v| v == &["true"]) {
        cmd.env("TMPDIR", fs.scratch("/tmp"));
    }
    cmd
}

#[tokio::test]
async fn the_systemd_units_verify_and_run_hub_and_connector_from_the_example_configs() {
    tls();
    // systemd-analyze verify, in a root with the units, the binaries and systemd's own units.
    let root = tempfile::tempdir().expect("tmp");
    for dir in ["usr/local/bin", "etc/systemd/system", "usr/lib/systemd"] {
        std::fs::create_dir_all(root.path().join(dir)).expect("mkdir");
    }
    for bin in ["ferry-hub", "ferry-connector"] {
        // verify looks for an executable there (inside the root: a link out of it would not do);
        // the run below uses the real binaries.
        use std::os::unix::fs::PermissionsExt;
        let at = root.path().join("usr/local/bin").join(bin);
        std::fs::write(&at, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&at, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let copied = Command::new("cp").args(["-r", "/lib/systemd/system"]).arg(root.path().join("usr/lib/systemd/")).status().expect("cp");
    assert!(copied.success(), "systemd's units (Debian package systemd)");
    let mut units = Vec::new();
    for name in ["ferry-hub.service", "ferry-connector.service"] {
        let to = root.path().join("etc/systemd/system").join(name);
        std::fs::copy(repo().join("deploy").join(name), &to).expect("copy");
        units.push(to);
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.path().display()))
        .args(&units)
        .output()
        .expect("systemd-analyze");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify:\n{said}");

    // The hub as ferry-hub.service starts it, the example configuration installed as its config.
    let logs = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let mut fs = Rootfs::new();
    let example = std::fs::read_to_string(repo().join("deploy/ferry-hub.example.toml")).expect("example");
    let listen =
        Rewrite { rules: vec![Rule { from: "127.0.0.1:8080".into(), to: format!("127.0.0.1:{port}"), path: false }], ..Default::default() };
    let cmd = unit_command("ferry-hub.service", &mut fs, &[("/etc/ferry/ferry-hub.toml", example)], listen);
    let mut hub = Proc::spawn("hub", cmd, logs.path());
    hub.wait_ready(port, "/readyz").await;
    assert_listens_on_loopback_only(port);
    let state = fs.host("/var/lib/ferry");
    assert!(state.join("ferry.db").exists() && state.join("keys/kek.hex").exists(), "database and keys in the state directory");
    assert!(hub.stdout().contains("/setup?token="), "the first admin's setup link, for the journal");
    hub.assert_json_logs("the unit's Environment=");
    fs.assert_writes_only_where_allowed();
    drop(hub);

    // The connector as ferry-connector.service starts it: the example configuration, the secret in
    // its EnvironmentFile; it delivers a transfer into a PACS (Orthanc).
    let app = spawn_app().await;
    app.community("Radiologie Unit", "uNt1", "Homburg").await;
    let (id, secret) = app.connector("uNt1").await;
    let orthanc = Orthanc::start(&format!("{}/dicomweb", app.base)).await;
    let example = std::fs::read_to_string(repo().join("deploy/ferry-connector.example.toml")).expect("example");
    let env_file = format!("FERRY_CONNECTOR_HUB__CLIENT_ID={id}\nFERRY_CONNECTOR_HUB__CLIENT_SECRET={secret}\n");
    let rule = |from: &str, to: String| Rule { from: from.into(), to, path: false };
    let site = Rewrite {
        rules: vec![
            rule("https://ferry.example.org", app.base.clone()),
            rule("\"pacs.klinik.local\"", "\"127.0.0.1\"".into()),
            rule("port = 104", format!("port = {}", orthanc.dicom)),
        ],
        ..Default::default()
    };
    let mut fs = Rootfs::new();
    let cmd = unit_command(
        "ferry-connector.service",
        &mut fs,
        &[("/etc/ferry/ferry-connector.toml", example), ("/etc/ferry/ferry-connector.env", env_file)],
        site,
    );
    let mut connector = Proc::spawn("connector", cmd, logs.path());
    let referrer = app.person("unit.ref@example.test", "Dr. Unit").await;
    let (_, files) = study(2);
    let named: Vec<(&str, Vec<u8>)> = files.iter().map(|f| ("x.dcm", f.clone())).collect();
    let t = app.send_transfer(&referrer, "uNt1", &named).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        connector.assert_running();
        let seen = crate::fixtures::site::transfer(&app, &referrer, text(&t["id"])).await;
        if seen.state == ferry_schemas::TransferState::Stored {
            break;
        }
        assert!(Instant::now() < deadline, "not stored: {seen:?}\n{}", connector.stderr());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(orthanc.stored().await.len(), 2);
    assert!(fs.host("/var/lib/ferry-connector").read_dir().expect("state").next().is_some(), "state in the unit's StateDirectory");
    fs.assert_writes_only_where_allowed();
}
