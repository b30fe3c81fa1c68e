//! Envoy stats from a filter. A metric that fails to define becomes a no-op: stats never fail
//! a request. Envoy shows them under `wasmcustom.<name>` on the admin `/stats` page, summed
//! across workers.

use crate::host::{Host, LogLevel, MetricKind};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter(Option<u32>);

impl Counter {
    pub fn define(host: &dyn Host, name: &str) -> Counter {
        Counter(define(host, MetricKind::Counter, name))
    }
    pub fn inc(&self, host: &dyn Host) {
        self.add(host, 1);
    }
    pub fn add(&self, host: &dyn Host, n: u64) {
        if let (Some(id), Ok(n)) = (self.0, i64::try_from(n)) {
            if n != 0 {
                host.increment_metric(id, n);
            }
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gauge(Option<u32>);

impl Gauge {
    pub fn define(host: &dyn Host, name: &str) -> Gauge {
        Gauge(define(host, MetricKind::Gauge, name))
    }
    pub fn set(&self, host: &dyn Host, value: u64) {
        if let Some(id) = self.0 {
            host.record_metric(id, value);
        }
    }
}

fn define(host: &dyn Host, kind: MetricKind, name: &str) -> Option<u32> {
    match host.define_metric(kind, name) {
        Ok(id) => Some(id),
        Err(e) => {
            host.log(LogLevel::Error, &format!("cannot define metric {name}: {e}; it will not be reported"));
            None
        }
    }
}
