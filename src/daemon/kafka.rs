//! Kafka source (work in progress).
use std::sync::Arc;

use crate::config::{Config, KafkaConfig};
use crate::rules::RuleSet;

use super::{DaemonError, Handle};

pub fn run(_config: &Config, _kafka: &KafkaConfig, _rules: Arc<RuleSet>, _handle: &Handle) -> Result<(), DaemonError> {
    Err(DaemonError::Kafka("not built yet".into()))
}
