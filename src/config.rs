//! The daemon's configuration: one TOML file, every key documented in `deploy/config.example.toml`.
//!
//! Parsing is strict (`deny_unknown_fields`), every key has a named default, and [`Config::load`] checks
//! what a parse cannot (exactly one source, readable secret files, rules that load) so that
//! `credit-sentinel check-config` can refuse a bad file before systemd starts or reloads the daemon. Errors
//! name the file and line. Secrets are never written in the file: it names files that hold them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::rules::line_of;

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path}:{line}: {message}")]
    Invalid { path: String, line: usize, message: String },
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory of rule files (`*.toml`, searched recursively). Relative paths are relative to the config file.
    #[serde(default = "default_rules")]
    pub rules: PathBuf,
    /// Directory for checkpoints (window state, levels, dedup memory, source positions). systemd's
    /// `StateDirectory=` sets `$STATE_DIRECTORY`, which is used when this key is absent.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// The clock.
    #[serde(default)]
    pub clock: ClockConfig,
    /// Checkpoints.
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    /// Bounds on what input can make the daemon hold (see `crate::limits`).
    #[serde(default)]
    pub limits: crate::limits::LimitsConfig,
    /// The embedded default source: JSON Lines from a file (or stdin), followed like `tail -F`.
    #[serde(default)]
    pub file: Option<Spanned<FileConfig>>,
    /// Kafka: a consumer group over the input topics, alerts and bad input produced to topics.
    #[serde(default)]
    pub kafka: Option<Spanned<KafkaConfig>>,
    /// History loaded before going live.
    #[serde(default)]
    pub bootstrap: BootstrapConfig,
    /// E-mail notifications: receivers, routes, SMTP (absent: no notifications).
    #[serde(default)]
    pub notify: Option<Spanned<crate::notify::config::NotifyConfig>>,
    /// Metrics and health over HTTP (absent: no endpoint).
    #[serde(default)]
    pub metrics: Option<crate::metrics::MetricsConfig>,
    /// `[notify]` checked and resolved (set by [`Config::parse`]).
    #[serde(skip)]
    pub notifications: Option<std::sync::Arc<crate::notify::config::Notify>>,
}

fn default_rules() -> PathBuf {
    PathBuf::from("alert-rules")
}

/// Which clock drives `now` (SPEC: "The daemon's clock is configurable").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ClockMode {
    /// `now` is wall-clock time; timers fire as real time passes.
    #[default]
    Wall,
    /// Kafka Streams' stream time: each input partition's `now` is the largest `occurred_at` read from it.
    Event,
}

/// `[clock]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockConfig {
    /// `wall` (production default) or `event`.
    #[serde(default)]
    pub mode: ClockMode,
    /// With the wall clock, events more than this many seconds in the future are bad input.
    #[serde(default = "default_future_margin_secs")]
    pub future_margin_secs: u64,
}

fn default_future_margin_secs() -> u64 {
    300
}

impl Default for ClockConfig {
    fn default() -> Self {
        ClockConfig { mode: ClockMode::default(), future_margin_secs: default_future_margin_secs() }
    }
}

/// `[checkpoint]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Seconds between checkpoints (one is also written at shutdown and before a partition is given up).
    #[serde(default = "default_checkpoint_interval_secs")]
    pub interval_secs: u64,
    /// Good checkpoints kept per partition; the older ones are the fallback when the newest is damaged.
    #[serde(default = "default_checkpoint_keep")]
    pub keep: usize,
}

fn default_checkpoint_interval_secs() -> u64 {
    30
}

fn default_checkpoint_keep() -> usize {
    2
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig { interval_secs: default_checkpoint_interval_secs(), keep: default_checkpoint_keep() }
    }
}

impl CheckpointConfig {
    /// The interval as a duration.
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_secs)
    }
}

/// `[file]`: the embedded default source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// JSON Lines file to read; `-` is stdin (stdin has no position to restore after a restart).
    pub path: PathBuf,
    /// Keep reading as the file grows, and reopen it when it is replaced or truncated (`tail -F`).
    /// With `false` the daemon stops at the end of the file.
    #[serde(default = "default_true")]
    pub follow: bool,
    /// Milliseconds between looks at a followed file that has no new line.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// Alert records are appended here as JSON Lines (relative to the state directory); absent: stdout.
    #[serde(default)]
    pub alerts: Option<PathBuf>,
    /// Rejected lines are appended here (`file:line: reason: text`, relative to the state directory);
    /// absent: logged only.
    #[serde(default)]
    pub rejects: Option<PathBuf>,
}

fn default_true() -> bool {
    true
}

fn default_poll_ms() -> u64 {
    200
}

/// `[kafka]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Consumer group; instances with the same group share the partitions.
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Input topics; the event kind is read from each message.
    pub topics: Vec<String>,
    /// Every alert record is produced here (key = `entity_id`).
    pub alert_topic: String,
    /// Bad messages are produced here with their reason in headers; absent: counted and logged only.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    #[serde(default = "default_protocol")]
    pub security_protocol: String,
    /// SASL credentials.
    #[serde(default)]
    pub sasl: Option<SaslConfig>,
    /// TLS files.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Milliseconds a poll waits for messages.
    #[serde(default = "default_kafka_poll_ms")]
    pub poll_ms: u64,
    /// How the producers of the input topics choose a partition from the key, so that history loaded with
    /// `--bootstrap` lands in the state partition of its entity: `consistent_random` (librdkafka's default:
    /// CRC-32 of the key) or `murmur2_random` (the Java client's default).
    #[serde(default)]
    pub partitioner: Partitioner,
    /// librdkafka properties passed through to the consumer and producer (no secrets: use the files above).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// librdkafka properties for the consumer only.
    #[serde(default)]
    pub consumer_options: BTreeMap<String, String>,
    /// librdkafka properties for the producer only.
    #[serde(default)]
    pub producer_options: BTreeMap<String, String>,
}

fn default_group() -> String {
    "credit-sentinel".to_owned()
}

fn default_protocol() -> String {
    "plaintext".to_owned()
}

fn default_kafka_poll_ms() -> u64 {
    100
}

/// The input producers' partitioner (see [`KafkaConfig::partitioner`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Partitioner {
    #[default]
    ConsistentRandom,
    Murmur2Random,
}

impl Partitioner {
    /// The partition of `key` among `n`.
    pub fn partition(self, key: &[u8], n: i32) -> i32 {
        let n = n.max(1) as u32;
        match self {
            Partitioner::ConsistentRandom => (crc32fast::hash(key) % n) as i32,
            Partitioner::Murmur2Random => ((murmur2(key) & 0x7fff_ffff) % n) as i32,
        }
    }
}

/// Kafka's murmur2 (the Java client's `Utils.murmur2`, seed 0x9747b28c).
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// `[kafka.sasl]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaslConfig {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: String,
    pub username: String,
    /// File holding the password (one line; a trailing newline is ignored).
    pub password_file: PathBuf,
}

/// `[kafka.tls]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// CA certificate(s) to verify the brokers (PEM); absent: the system store.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// File holding the client key's password, if it has one.
    #[serde(default)]
    pub key_password_file: Option<PathBuf>,
}

/// `[bootstrap]`: history loaded before going live (Kafka rarely keeps three years).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BootstrapConfig {
    /// JSON Lines history files, read in order before the live source when the state directory holds no
    /// checkpoint (`run --bootstrap FILE...` adds to these).
    #[serde(default)]
    pub files: Vec<PathBuf>,
}

/// librdkafka properties that carry secrets: refused in the pass-through tables.
const SECRET_PROPERTIES: &[&str] =
    &["sasl.password", "ssl.key.password", "ssl.key.pem", "ssl_key", "sasl.oauthbearer.client.secret"];

/// Which source the file configures.
pub enum Source<'a> {
    File(&'a FileConfig),
    Kafka(&'a KafkaConfig),
}

impl Config {
    /// Reads, parses and checks a configuration file. Relative paths in it are resolved against its folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Io { path: name.clone(), error })?;
        let mut config = Config::parse(&name, &text)?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve(base);
        config.check_files(&name, &text)?;
        Ok(config)
    }

    /// Parses and checks the text of a configuration file (`name` is used in messages).
    pub fn parse(name: &str, text: &str) -> Result<Config, ConfigError> {
        let invalid = |line: usize, message: String| ConfigError::Invalid { path: name.to_owned(), line, message };
        let mut config: Config = toml::from_str(text)
            .map_err(|e| invalid(e.span().map_or(1, |s| line_of(text, s.start)), e.message().to_owned()))?;
        if let Some(notify) = &config.notify {
            let checked = notify.get_ref().clone().check(text, None).map_err(|(line, m)| invalid(line, m))?;
            config.notifications = Some(std::sync::Arc::new(checked));
        }
        match (&config.file, &config.kafka) {
            (None, None) => return Err(invalid(1, "no source: add a [file] or a [kafka] section".into())),
            (Some(_), Some(k)) => {
                return Err(invalid(
                    line_of(text, k.span().start),
                    "both [file] and [kafka]: choose one source".into(),
                ));
            }
            _ => {}
        }
        if config.checkpoint.interval_secs == 0 {
            return Err(invalid(key_line(text, "interval_secs"), "checkpoint.interval_secs must be at least 1".into()));
        }
        if config.checkpoint.keep == 0 {
            return Err(invalid(key_line(text, "keep"), "checkpoint.keep must be at least 1".into()));
        }
        if let Some((key, range)) = config.limits.out_of_range() {
            return Err(invalid(key_line(text, key), format!("limits.{key} must be {range}")));
        }
        if let Some(file) = &config.file
            && file.get_ref().poll_ms == 0
        {
            return Err(invalid(key_line(text, "poll_ms"), "poll_ms must be at least 1".into()));
        }
        if let Some(kafka) = &config.kafka {
            let line = line_of(text, kafka.span().start);
            let k = kafka.get_ref();
            if k.topics.is_empty() {
                return Err(invalid(key_line(text, "topics"), "kafka.topics is empty".into()));
            }
            if k.poll_ms == 0 {
                return Err(invalid(key_line(text, "poll_ms"), "poll_ms must be at least 1".into()));
            }
            for (key, out) in
                [("alert_topic", Some(&k.alert_topic)), ("dead_letter_topic", k.dead_letter_topic.as_ref())]
            {
                if let Some(out) = out
                    && k.topics.contains(out)
                {
                    return Err(invalid(key_line(text, key), format!("{key} `{out}` is also an input topic (a loop)")));
                }
            }
            if k.dead_letter_topic.as_ref() == Some(&k.alert_topic) {
                return Err(invalid(
                    key_line(text, "dead_letter_topic"),
                    "dead_letter_topic is the alert topic".into(),
                ));
            }
            let protocols = ["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"];
            if !protocols.contains(&k.security_protocol.as_str()) {
                return Err(invalid(
                    key_line(text, "security_protocol"),
                    format!("security_protocol must be one of {}", protocols.join(", ")),
                ));
            }
            if k.security_protocol.starts_with("sasl") && k.sasl.is_none() {
                return Err(invalid(line, format!("security_protocol {} needs [kafka.sasl]", k.security_protocol)));
            }
            for table in [&k.options, &k.consumer_options, &k.producer_options] {
                for key in table.keys() {
                    if SECRET_PROPERTIES.contains(&key.as_str()) {
                        return Err(invalid(
                            key_line(text, key),
                            format!("`{key}` is a secret: name a file in [kafka.sasl] or [kafka.tls] instead"),
                        ));
                    }
                    if managed_property(key) {
                        return Err(invalid(
                            key_line(text, key),
                            format!("`{key}` is set by credit-sentinel (offsets and idempotence are ours)"),
                        ));
                    }
                    if key == "statistics.interval.ms" && table.get(key).is_some_and(|v| v.trim() == "0") {
                        return Err(invalid(
                            key_line(text, key),
                            "`statistics.interval.ms` = 0 turns off the statistics the lag metric and /readyz \
                             need"
                                .to_owned(),
                        ));
                    }
                }
            }
        }
        Ok(config)
    }

    fn resolve(&mut self, base: &Path) {
        let join = |p: &mut PathBuf| {
            if p.is_relative() && p.as_os_str() != "-" {
                *p = base.join(&*p);
            }
        };
        join(&mut self.rules);
        if let Some(dir) = &mut self.state_dir {
            join(dir);
        }
        if let Some(file) = &mut self.file {
            join(&mut file.get_mut().path);
        }
        for f in &mut self.bootstrap.files {
            join(f);
        }
        if let Some(n) = &mut self.notifications {
            let c = &mut std::sync::Arc::make_mut(n).config;
            if let Some(t) = &mut c.templates {
                join(t);
            }
            if let Some(smtp) = &mut c.smtp {
                for p in [&mut smtp.ca_file, &mut smtp.password_file].into_iter().flatten() {
                    join(p);
                }
            }
        }
        if let Some(kafka) = &mut self.kafka {
            let k = kafka.get_mut();
            if let Some(sasl) = &mut k.sasl {
                join(&mut sasl.password_file);
            }
            if let Some(tls) = &mut k.tls {
                for p in [&mut tls.ca_file, &mut tls.cert_file, &mut tls.key_file, &mut tls.key_password_file]
                    .into_iter()
                    .flatten()
                {
                    join(p);
                }
            }
        }
    }

    /// Input, secret and certificate files must be readable now, not at the first reconnect; the
    /// librdkafka properties must be ones librdkafka accepts.
    fn check_files(&self, name: &str, text: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: name.to_owned(),
            line: key_line(text, key),
            message,
        };
        if let Some(file) = &self.file {
            let path = &file.get_ref().path;
            if path.as_os_str() != "-"
                && let Err(error) = std::fs::File::open(path)
            {
                return Err(invalid("path", format!("{}: {error}", path.display())));
            }
        }
        if let Some(n) = &self.notifications {
            let c = &n.config;
            if let Err(error) = crate::notify::render::Templates::load(c.templates.as_deref()) {
                return Err(invalid("templates", error.to_string()));
            }
            if let Some(smtp) = &c.smtp {
                for (key, p) in [("ca_file", &smtp.ca_file), ("password_file", &smtp.password_file)] {
                    if let Some(p) = p
                        && let Err(error) = std::fs::File::open(p)
                    {
                        return Err(invalid(key, format!("{key} {}: {error}", p.display())));
                    }
                }
            }
        }
        // Bootstrap files are not required here: once history is loaded they may be archived, and a restart
        // must not fail for it. A load that needs a missing file fails then, naming it.
        let Some(kafka) = &self.kafka else { return Ok(()) };
        let k = kafka.get_ref();
        let mut files: Vec<(&str, &Path)> = Vec::new();
        if let Some(sasl) = &k.sasl {
            files.push(("password_file", &sasl.password_file));
        }
        if let Some(tls) = &k.tls {
            for (key, p) in [
                ("ca_file", &tls.ca_file),
                ("cert_file", &tls.cert_file),
                ("key_file", &tls.key_file),
                ("key_password_file", &tls.key_password_file),
            ] {
                if let Some(p) = p {
                    files.push((key, p));
                }
            }
        }
        for (key, path) in files {
            if let Err(error) = std::fs::File::open(path) {
                return Err(invalid(key, format!("{key} {}: {error}", path.display())));
            }
        }
        let base = k.client_properties().map_err(|e| invalid("password_file", e.to_string()))?;
        for (table, extra) in [("consumer_options", &k.consumer_options), ("producer_options", &k.producer_options)] {
            let mut cc = rdkafka::ClientConfig::new();
            for (key, value) in base.iter().map(|(a, b)| (a, b)).chain(extra.iter()) {
                cc.set(key, value);
            }
            if let Err(error) = cc.create_native_config() {
                let line = line_of(text, kafka.span().start);
                return Err(ConfigError::Invalid {
                    path: name.to_owned(),
                    line,
                    message: format!("[kafka] with [kafka.{table}]: librdkafka refuses it: {error}"),
                });
            }
        }
        Ok(())
    }

    /// The configured source.
    pub fn source(&self) -> Source<'_> {
        match (&self.file, &self.kafka) {
            (_, Some(k)) => Source::Kafka(k.get_ref()),
            (Some(f), None) => Source::File(f.get_ref()),
            // `parse` refuses a file with neither.
            (None, None) => unreachable!("a parsed config has a source"),
        }
    }

    /// Checks that the rules `[notify]` names exist in `rules` (`check-config` and startup).
    pub fn check_rule_names(&self, rules: &crate::rules::RuleSet) -> Result<(), String> {
        let Some(n) = &self.notifications else { return Ok(()) };
        for r in &n.routes {
            r.matchers.check(Some(rules)).map_err(|e| format!("route at line {}: {e}", r.line))?;
        }
        Ok(())
    }

    /// The state directory: `state_dir`, else systemd's `$STATE_DIRECTORY`, else `./state`.
    pub fn state_dir(&self) -> PathBuf {
        if let Some(dir) = &self.state_dir {
            return dir.clone();
        }
        match std::env::var_os("STATE_DIRECTORY") {
            Some(dir) => PathBuf::from(dir),
            None => PathBuf::from("state"),
        }
    }
}

/// librdkafka properties the daemon sets itself and must not be overridden.
fn managed_property(key: &str) -> bool {
    matches!(
        key,
        "enable.auto.commit"
            | "enable.auto.offset.store"
            | "enable.idempotence"
            | "group.id"
            | "bootstrap.servers"
            | "isolation.level"
            | "auto.offset.reset"
            | "acks"
            | "transactional.id"
            | "message.timeout.ms"
            | "partition.assignment.strategy"
    )
}

/// The line of the first `key =` in `text` (for errors found after parsing), else 1.
pub(crate) fn key_line(text: &str, key: &str) -> usize {
    for (i, line) in text.lines().enumerate() {
        let l = line.trim_start();
        let l = l.strip_prefix('"').unwrap_or(l);
        if let Some(rest) = l.strip_prefix(key) {
            let rest = rest.strip_prefix('"').unwrap_or(rest);
            if rest.trim_start().starts_with('=') {
                return i + 1;
            }
        }
    }
    1
}

impl KafkaConfig {
    /// The librdkafka properties shared by the consumer and the producer, secrets read from their files.
    pub fn client_properties(&self) -> std::io::Result<Vec<(String, String)>> {
        let mut props = vec![
            ("bootstrap.servers".to_owned(), self.brokers.clone()),
            ("security.protocol".to_owned(), self.security_protocol.clone()),
        ];
        if let Some(sasl) = &self.sasl {
            props.push(("sasl.mechanism".into(), sasl.mechanism.clone()));
            props.push(("sasl.username".into(), sasl.username.clone()));
            props.push(("sasl.password".into(), read_secret(&sasl.password_file)?));
        }
        if let Some(tls) = &self.tls {
            let path = |p: &PathBuf| p.display().to_string();
            if let Some(p) = &tls.ca_file {
                props.push(("ssl.ca.location".into(), path(p)));
            }
            if let Some(p) = &tls.cert_file {
                props.push(("ssl.certificate.location".into(), path(p)));
            }
            if let Some(p) = &tls.key_file {
                props.push(("ssl.key.location".into(), path(p)));
            }
            if let Some(p) = &tls.key_password_file {
                props.push(("ssl.key.password".into(), read_secret(p)?));
            }
        }
        props.extend(self.options.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(props)
    }
}

/// A secret file's content without its trailing newline.
fn read_secret(path: &Path) -> std::io::Result<String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        Config::parse("c.toml", text).err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn unknown_keys_are_refused_with_their_line() {
        let e = error("[file]\npath = \"x\"\nfolow = true\n");
        assert!(e.starts_with("c.toml:3:"), "{e}");
        assert!(e.contains("folow"), "{e}");
    }

    #[test]
    fn exactly_one_source() {
        assert!(error("rules = \"r\"\n").contains("no source"));
        let both = "[file]\npath = \"x\"\n[kafka]\nbrokers = \"b\"\ntopics = [\"t\"]\nalert_topic = \"a\"\n";
        assert!(error(both).starts_with("c.toml:3: both"), "{}", error(both));
    }

    #[test]
    fn secrets_and_managed_properties_cannot_be_passed_through() {
        let base = "[kafka]\nbrokers = \"b\"\ntopics = [\"t\"]\nalert_topic = \"a\"\n[kafka.options]\n";
        let e = error(&format!("{base}\"sasl.password\" = \"hunter2\"\n"));
        assert!(e.starts_with("c.toml:6:") && e.contains("secret"), "{e}");
        let e = error(&format!("{base}\"enable.auto.commit\" = \"true\"\n"));
        assert!(e.contains("set by credit-sentinel"), "{e}");
        assert!(error(&format!("{base}\"fetch.wait.max.ms\" = \"50\"\n")).is_empty());
        // The lag metric and /readyz need librdkafka's statistics.
        let e = error(&format!("{base}\"statistics.interval.ms\" = \"0\"\n"));
        assert!(e.starts_with("c.toml:6:") && e.contains("/readyz"), "{e}");
        assert!(error(&format!("{base}\"statistics.interval.ms\" = \"1000\"\n")).is_empty());
    }

    #[test]
    fn murmur2_matches_the_java_client() {
        // Values of org.apache.kafka.common.utils.Utils.murmur2 (as used by its tests and partitioners).
        assert_eq!(murmur2(b"21") as i32, -973932308);
        assert_eq!(murmur2(b"foobar") as i32, -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string") as i32, -1486304829);
        assert_eq!(murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32, -58897971);
        assert_eq!(murmur2(b"abc") as i32, 479470107);
    }

    #[test]
    fn defaults_are_named_values() {
        let c = Config::parse("c.toml", "[file]\npath = \"events.jsonl\"\n").unwrap();
        assert_eq!(c.clock.mode, ClockMode::Wall);
        assert_eq!(c.clock.future_margin_secs, default_future_margin_secs());
        assert_eq!(c.checkpoint.interval_secs, default_checkpoint_interval_secs());
        assert!(c.file.unwrap().get_ref().follow);
    }
}
