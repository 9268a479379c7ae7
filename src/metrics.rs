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

use crate::daemon::Handle;

/// `[metrics]`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the HTTP endpoint (`/metrics`, `/healthz`, `/readyz`). Loopback by default: the metrics
    /// carry no entity data, but they are for the operators' Prometheus only.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
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

impl Collector for StatsCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        use prometheus::proto::MetricType::{COUNTER, GAUGE};
        let s = self.handle.stats();
        let g = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed) as f64;
        let mut out = vec![
            family(
                "credit_sentinel_lines_total",
                "Input lines (or messages) read.",
                COUNTER,
                vec![(vec![], g(&s.lines))],
            ),
            family(
                "credit_sentinel_events_total",
                "Input lines by outcome: accepted (first seen), duplicate, rejected (bad input).",
                COUNTER,
                vec![
                    (vec![("outcome", "accepted")], g(&s.accepted)),
                    (vec![("outcome", "duplicate")], g(&s.duplicates)),
                    (vec![("outcome", "rejected")], g(&s.rejected)),
                ],
            ),
            family(
                "credit_sentinel_late_events_total",
                "Accepted events that occurred before the clock.",
                COUNTER,
                vec![(vec![], g(&s.late))],
            ),
            family(
                "credit_sentinel_alerts_total",
                "Alerts written to the alert output.",
                COUNTER,
                vec![(vec![], g(&s.alerts))],
            ),
            family(
                "credit_sentinel_checkpoints_total",
                "Checkpoints written.",
                COUNTER,
                vec![(vec![], g(&s.checkpoints))],
            ),
            family("credit_sentinel_entities", "Entities with window state.", GAUGE, vec![(vec![], g(&s.entities))]),
            family("credit_sentinel_partitions", "State partitions owned.", GAUGE, vec![(vec![], g(&s.partitions))]),
            family(
                "credit_sentinel_rule_reloads_total",
                "Rule reloads by result.",
                COUNTER,
                vec![(vec![("result", "ok")], g(&s.reloads_ok)), (vec![("result", "failed")], g(&s.reloads_failed))],
            ),
            family(
                "credit_sentinel_ready",
                "1 once state is restored and the source is being read.",
                GAUGE,
                vec![(vec![], f64::from(u8::from(self.handle.ready())))],
            ),
            family(
                "credit_sentinel_build_info",
                "The running version.",
                GAUGE,
                vec![(vec![("version", env!("CARGO_PKG_VERSION"))], 1.0)],
            ),
        ];
        if let Some(n) = self.handle.notifier() {
            let ns = &n.stats;
            let counts = n.counts();
            out.push(family(
                "credit_sentinel_notifications_total",
                "E-mails by result: queued (in the outbox), sent (accepted by the server), failed (attempts), dead (given up).",
                COUNTER,
                vec![
                    (vec![("result", "queued")], g(&ns.queued)),
                    (vec![("result", "sent")], g(&ns.sent)),
                    (vec![("result", "failed")], g(&ns.failed)),
                    (vec![("result", "dead")], g(&ns.dead)),
                ],
            ));
            out.push(family(
                "credit_sentinel_notices_total",
                "Notices by outcome: taken, silenced, inhibited.",
                COUNTER,
                vec![
                    (vec![("outcome", "taken")], counts.notices as f64),
                    (vec![("outcome", "silenced")], counts.silenced as f64),
                    (vec![("outcome", "inhibited")], counts.inhibited as f64),
                ],
            ));
            out.push(family(
                "credit_sentinel_outbox_waiting",
                "E-mails waiting in the outbox.",
                GAUGE,
                vec![(vec![], g(&ns.outbox_waiting))],
            ));
        }
        out
    }
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
                let ready = ready.ready();
                async move {
                    if ready {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready: restoring state\n")
                    }
                }
            }),
        );
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
