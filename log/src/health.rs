//! What is failing right now, for `/readyz`: a component reports a
//! failure when it happens (with why) and that it works when it works
//! again, so readiness heals with the component, without a restart. Like
//! Prometheus's default registry, one per process.

use std::collections::BTreeMap;
use std::sync::{LazyLock, Mutex, MutexGuard};

static FAILING: LazyLock<Mutex<BTreeMap<String, String>>> = LazyLock::new(Default::default);

static FAILING_GAUGE: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    prometheus::register_int_gauge!(
        "weir_failing_components",
        "Components failing now (what /readyz lists)"
    )
    .expect("metric registers once")
});

fn failing_now() -> MutexGuard<'static, BTreeMap<String, String>> {
    FAILING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records that `component` fails, and why (the latest reason wins).
pub fn failing(component: &str, reason: impl std::fmt::Display) {
    let mut failing = failing_now();
    failing.insert(component.to_owned(), reason.to_string());
    FAILING_GAUGE.set(failing.len() as i64);
}

/// Records that `component` works (again).
pub fn working(component: &str) {
    let mut failing = failing_now();
    if failing.remove(component).is_some() {
        FAILING_GAUGE.set(failing.len() as i64);
    }
}

/// Every failing component and why, by name.
pub fn failures() -> BTreeMap<String, String> {
    failing_now().clone()
}

/// The message of a caught panic (`&str` or `String` payloads), for
/// reporting it as a failure.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}
