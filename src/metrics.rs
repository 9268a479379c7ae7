//! Operators' metrics and health over HTTP (loopback by default): `/metrics` in the Prometheus text format,
//! `/healthz` (the process answers) and `/readyz` (state restored and the source being read).
//!
//! The daemon's counters live in [`Stats`] (atomics the working loop bumps); a [`Collector`] turns them into
//! metric families at each scrape, so counting costs the loop one relaxed add and nothing else. No label
//! carries an entity: label sets are fixed (outcome, result) and bounded.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, Registry, TextEncoder};

use crate::daemon::{Handle, Histogram};
use crate::event::{Kind, Reason};
use crate::rules::Action;

/// `[metrics]`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the HTTP endpoint (`/metrics`, `/healthz`, `/readyz`). Loopback by default: the metrics
    /// carry no entity data, but they are for the operators' Prometheus only.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// `/readyz` answers 200 once state is restored and the source has caught up: a file read to its end, or
    /// Kafka partitions at most this many messages behind in all (from librdkafka's statistics, reported
    /// every `statistics.interval.ms`, 5000 unless set in `[kafka.consumer_options]`).
    #[serde(default = "default_ready_max_lag")]
    pub ready_max_lag: u64,
    /// How often the regional view (entities standing at each action per region and domain) and the state
    /// size estimate are recomputed; each refresh scans every entity once.
    #[serde(default = "default_view_interval_secs")]
    pub view_interval_secs: u64,
    /// Characters of the region code that make a region of the view: 2 for provinces, 4 for cities (the
    /// default), 6 for counties.
    #[serde(default = "default_region_prefix")]
    pub region_prefix: usize,
}

impl Default for MetricsConfig {
    fn default() -> MetricsConfig {
        MetricsConfig {
            listen: default_listen(),
            ready_max_lag: default_ready_max_lag(),
            view_interval_secs: default_view_interval_secs(),
            region_prefix: default_region_prefix(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}

fn default_ready_max_lag() -> u64 {
    1000
}

fn default_view_interval_secs() -> u64 {
    15
}

fn default_region_prefix() -> usize {
    4
}

#[cfg(test)]
#[test]
fn the_endpoint_is_on_loopback_unless_configured() {
    let c: MetricsConfig = toml::from_str("").unwrap();
    assert!(c.listen.ip().is_loopback(), "{}", c.listen);
    assert_eq!(c.listen.port(), 9464);
}

/// Snapshots the daemon's counters at each scrape.
struct StatsCollector {
    handle: Handle,
    descs: Vec<Desc>,
}

fn family(
    name: &str,
    help: &str,
    kind: prometheus::proto::MetricType,
    samples: Vec<(Vec<(&str, &str)>, f64)>,
) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.into());
    f.set_help(help.into());
    f.set_field_type(kind);
    for (labels, value) in samples {
        let mut m = prometheus::proto::Metric::default();
        let pairs = labels
            .into_iter()
            .map(|(k, v)| {
                let mut l = prometheus::proto::LabelPair::default();
                l.set_name(k.into());
                l.set_value(v.into());
                l
            })
            .collect::<Vec<_>>();
        m.set_label(pairs);
        match kind {
            prometheus::proto::MetricType::COUNTER => {
                let mut c = prometheus::proto::Counter::default();
                c.set_value(value);
                m.set_counter(c);
            }
            _ => {
                let mut g = prometheus::proto::Gauge::default();
                g.set_value(value);
                m.set_gauge(g);
            }
        }
        f.mut_metric().push(m);
    }
    f
}

/// A histogram family of durations in seconds, from a [`Histogram`] (bounds up to [`MAX_BUCKET`]).
fn histogram(name: &str, help: &str, h: &Histogram) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.into());
    f.set_help(help.into());
    f.set_field_type(prometheus::proto::MetricType::HISTOGRAM);
    let mut p = prometheus::proto::Histogram::default();
    let count = h.count();
    p.set_sample_count(count);
    p.set_sample_sum(h.sum().as_secs_f64());
    let buckets = h.cumulative(MAX_BUCKET).into_iter().map(|(bound, cumulative)| {
        let mut b = prometheus::proto::Bucket::default();
        b.set_upper_bound(bound.as_secs_f64());
        b.set_cumulative_count(cumulative.min(count));
        b
    });
    p.set_bucket(buckets.collect());
    let mut m = prometheus::proto::Metric::default();
    m.set_histogram(p);
    f.mut_metric().push(m);
    f
}

/// The largest finite histogram bound (about 67 s); longer samples are in `+Inf` only.
const MAX_BUCKET: std::time::Duration = std::time::Duration::from_micros(1 << 26);

impl Collector for StatsCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        use prometheus::proto::MetricType::{COUNTER, GAUGE};
        let s = self.handle.stats();
        let g = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed) as f64;
        let actions = |map: std::collections::BTreeMap<(String, Action), u64>| {
            map.into_iter()
                .map(|((rule, action), n)| (vec![("rule", rule), ("action", action.as_str().into())], n as f64))
        };
        let mut events = Vec::new();
        for kind in Kind::ALL {
            for (outcome, duplicate) in [("accepted", false), ("duplicate", true)] {
                events.push((vec![("kind", kind.as_str()), ("outcome", outcome)], s.events_of(kind, duplicate) as f64));
            }
        }
        let rejected = Reason::NAMES
            .iter()
            .enumerate()
            .map(|(i, name)| (vec![("reason", *name)], s.rejected_of(i) as f64))
            .collect();
        let notifier = self.handle.notifier();
        let limit_hits = crate::limits::Limit::ALL
            .iter()
            .map(|&l| {
                let n = s.limits.count(l) + notifier.as_ref().map_or(0, |n| n.stats.limits.count(l));
                (vec![("limit", l.as_str())], n as f64)
            })
            .collect();
        let lag =
            s.lag().into_iter().map(|((topic, p), n)| (vec![("topic", topic), ("partition", p.to_string())], n as f64));
        let view = s.view();
        let standing = |groups: std::collections::BTreeMap<String, [u64; 4]>, label: &'static str| {
            let mut out = Vec::new();
            for (group, counts) in groups {
                for action in Action::ALL {
                    out.push((
                        vec![(label, group.clone()), ("action", action.as_str().to_owned())],
                        counts[action as usize - 1] as f64,
                    ));
                }
            }
            out
        };
        let mut out = vec![
            family(
                "credit_sentinel_build_info",
                "The running version.",
                GAUGE,
                vec![(vec![("version", env!("CARGO_PKG_VERSION"))], 1.0)],
            ),
            family(
                "credit_sentinel_ready",
                "1 once state is restored and the source has caught up (what /readyz says).",
                GAUGE,
                vec![(vec![], f64::from(u8::from(self.handle.ready())))],
            ),
            family(
                "credit_sentinel_lines_total",
                "Input lines (or messages) read.",
                COUNTER,
                vec![(vec![], g(&s.lines))],
            ),
            family(
                "credit_sentinel_events_total",
                "Valid events by kind and outcome (accepted, or a duplicate dropped).",
                COUNTER,
                events,
            ),
            family("credit_sentinel_rejected_lines_total", "Bad input lines by reason.", COUNTER, rejected),
            family(
                "credit_sentinel_tokio_tasks",
                "Tasks alive in the daemon's async runtime (flat in a steady state: a growing count is a leak).",
                GAUGE,
                vec![(
                    vec![],
                    tokio::runtime::Handle::try_current().map_or(0, |h| h.metrics().num_alive_tasks()) as f64,
                )],
            ),
            family(
                "credit_sentinel_limit_hits_total",
                "Inputs refused or cut by a size limit, by limit (README, \"Limits\").",
                COUNTER,
                limit_hits,
            ),
            family(
                "credit_sentinel_late_events_total",
                "Accepted events that occurred before the clock.",
                COUNTER,
                vec![(vec![], g(&s.late))],
            ),
            family(
                "credit_sentinel_last_event_timestamp_seconds",
                "Wall-clock time the last input line was read (0: none yet).",
                GAUGE,
                vec![(vec![], g(&s.last_line_at))],
            ),
            owned(
                "credit_sentinel_alerts_total",
                "Alerts output, by rule and action.",
                COUNTER,
                actions(s.alerts_by_rule()).collect(),
            ),
            owned(
                "credit_sentinel_regional_alerts_total",
                "Regional (aggregate) alerts raised, by rule and action.",
                COUNTER,
                actions(s.regional_by_rule()).collect(),
            ),
            family("credit_sentinel_entities", "Entities with window state.", GAUGE, vec![(vec![], g(&s.entities))]),
            family(
                "credit_sentinel_state_bytes",
                "An estimate of the bytes of window state held (refreshed every view_interval_secs).",
                GAUGE,
                vec![(vec![], g(&s.state_bytes))],
            ),
            family("credit_sentinel_partitions", "State partitions owned.", GAUGE, vec![(vec![], g(&s.partitions))]),
            owned(
                "credit_sentinel_consumer_lag",
                "Kafka: messages behind the high watermark, per owned partition.",
                GAUGE,
                lag.collect(),
            ),
            histogram(
                "credit_sentinel_alert_latency_seconds",
                "Kafka: from taking a message off the consumer to handing its alerts to the producer.",
                &s.alert_latency,
            ),
            family(
                "credit_sentinel_checkpoints_total",
                "Checkpoints written.",
                COUNTER,
                vec![(vec![], g(&s.checkpoints))],
            ),
            family(
                "credit_sentinel_last_checkpoint_timestamp_seconds",
                "Wall-clock time the last checkpoint was written (0: none yet).",
                GAUGE,
                vec![(vec![], g(&s.last_checkpoint_at))],
            ),
            histogram(
                "credit_sentinel_checkpoint_duration_seconds",
                "Writing one partition's checkpoint (serialise, write, fsync, rename).",
                &s.checkpoint_duration,
            ),
            family(
                "credit_sentinel_rule_reloads_total",
                "Rule reloads by result.",
                COUNTER,
                vec![(vec![("result", "ok")], g(&s.reloads_ok)), (vec![("result", "failed")], g(&s.reloads_failed))],
            ),
            owned(
                "credit_sentinel_region_entities",
                "Entities whose highest standing level is this action, per region (code prefix; unknown: no profile).",
                GAUGE,
                standing(view.regions, "region"),
            ),
            owned(
                "credit_sentinel_domain_entities",
                "Entities whose highest standing level is this action, per domain (unknown: no profile).",
                GAUGE,
                standing(view.domains, "domain"),
            ),
        ];
        if let Some(n) = notifier {
            let ns = &n.stats;
            let counts = n.counts();
            out.push(family(
                "credit_sentinel_notifications_total",
                "E-mails by result: queued (put in the outbox), sent (accepted by the server), retried (an attempt \
                 failed; it will be retried), failed (given up, moved to outbox/dead/).",
                COUNTER,
                vec![
                    (vec![("result", "queued")], g(&ns.queued)),
                    (vec![("result", "sent")], g(&ns.sent)),
                    (vec![("result", "retried")], g(&ns.failed)),
                    (vec![("result", "failed")], g(&ns.dead)),
                ],
            ));
            out.push(family(
                "credit_sentinel_notices_total",
                "Notices (alerts and resolved levels) by outcome: taken for e-mail, silenced, inhibited.",
                COUNTER,
                vec![
                    (vec![("outcome", "taken")], counts.notices as f64),
                    (vec![("outcome", "silenced")], counts.silenced as f64),
                    (vec![("outcome", "inhibited")], counts.inhibited as f64),
                ],
            ));
            out.push(family(
                "credit_sentinel_notices_waiting",
                "Notices waiting in groups (group wait, digest, mute interval) or in e-mails being made.",
                GAUGE,
                vec![(vec![], n.waiting_notices() as f64)],
            ));
            out.push(family(
                "credit_sentinel_outbox_messages",
                "E-mails waiting in the outbox.",
                GAUGE,
                vec![(vec![], g(&ns.outbox_waiting))],
            ));
            let oldest = ns.outbox_oldest.load(Ordering::Relaxed);
            let age = if oldest == 0 { 0 } else { (crate::daemon::wall_now().max(0) as u64).saturating_sub(oldest) };
            out.push(family(
                "credit_sentinel_outbox_oldest_age_seconds",
                "Age of the oldest e-mail waiting in the outbox (0: none waits).",
                GAUGE,
                vec![(vec![], age as f64)],
            ));
        }
        out
    }
}

/// [`family`] with owned label values.
fn owned(
    name: &str,
    help: &str,
    kind: prometheus::proto::MetricType,
    samples: Vec<(Vec<(&str, String)>, f64)>,
) -> MetricFamily {
    let borrowed = samples.iter().map(|(l, v)| (l.iter().map(|(k, v)| (*k, v.as_str())).collect(), *v)).collect();
    family(name, help, kind, borrowed)
}

/// The registry of the daemon's metrics.
pub fn registry(handle: &Handle) -> Registry {
    let registry = Registry::new();
    // The registry checks descriptions for collisions; one stands for the collector's families.
    let descs = Desc::new("credit_sentinel_lines_total".into(), "Input lines read.".into(), vec![], Default::default())
        .into_iter()
        .collect();
    if let Err(error) = registry.register(Box::new(StatsCollector { handle: handle.clone(), descs })) {
        tracing::error!(%error, "metrics collector not registered");
    }
    registry
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    handle: Handle,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::StatusCode;
    use axum::routing::get;
    let registry = registry(&handle);
    let ready = handle.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move {
                    let mut body = Vec::new();
                    match TextEncoder::new().encode(&registry.gather(), &mut body) {
                        Ok(()) => (StatusCode::OK, [("content-type", "text/plain; version=0.0.4")], body),
                        Err(e) => (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            [("content-type", "text/plain")],
                            e.to_string().into_bytes(),
                        ),
                    }
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    if ready.ready() {
                        (StatusCode::OK, "ready\n".to_owned())
                    } else if !ready.restored() {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready: restoring state\n".to_owned())
                    } else {
                        let lag: u64 = ready.stats().lag().values().sum();
                        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: catching up (lag {lag} messages)\n"))
                    }
                }
            }),
        );
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
