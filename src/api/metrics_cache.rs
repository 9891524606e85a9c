//! The body of `GET /performance-metrics`, rendered once per published view.
//!
//! The document depends only on the engine's published [`View`] (its `timestamp` is the
//! sample's, not the request's), the sidecar target's status and the worker id. So the
//! rendered bytes are kept with the `Arc<View>` they came from and answered again while the
//! engine has published nothing newer (`Arc::ptr_eq`) and the target's status is unchanged;
//! the first request after a change renders anew. Between two samples every request then
//! costs a pointer comparison and a reference-count increment instead of a render.
//!
//! Its gzip form is kept beside it, compressed on the first request that asks for it
//! ([`Compressed`]): once per view, not once per request.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use serde_json::Value;

use super::document::MetricsDocument;
use super::gzip::Compressed;
use crate::engine::View;
use crate::reload::ConfigStatus;
use crate::sample::TargetStatus;

/// The last rendered body and what it was rendered from.
#[derive(Debug, Default)]
pub(super) struct MetricsCache {
    last: Mutex<Option<Rendered>>,
}

#[derive(Debug)]
struct Rendered {
    view: Arc<View>,
    target: Option<TargetStatus>,
    config: Option<Arc<ConfigStatus>>,
    document: Arc<Compressed>,
}

impl Rendered {
    fn matches(
        &self,
        view: &Arc<View>,
        target: &Option<TargetStatus>,
        config: &Option<Arc<ConfigStatus>>,
    ) -> bool {
        let same_config = match (&self.config, config) {
            (Some(kept), Some(now)) => Arc::ptr_eq(kept, now),
            (None, None) => true,
            _ => false,
        };
        Arc::ptr_eq(&self.view, view) && self.target == *target && same_config
    }
}

impl MetricsCache {
    /// The JSON body for `view` and `target`: the kept one when it was rendered from the same
    /// view and target status, else a fresh render (which is then kept).
    pub(super) fn body(
        &self,
        worker_id: &Value,
        view: Arc<View>,
        target: Option<TargetStatus>,
        config: Option<Arc<ConfigStatus>>,
    ) -> Result<Bytes, serde_json::Error> {
        self.document(worker_id, view, target, config)
            .map(|document| document.plain().clone())
    }

    /// Like [`MetricsCache::body`], with the gzip form kept beside the plain one.
    pub(super) fn document(
        &self,
        worker_id: &Value,
        view: Arc<View>,
        target: Option<TargetStatus>,
        config: Option<Arc<ConfigStatus>>,
    ) -> Result<Arc<Compressed>, serde_json::Error> {
        if let Some(hit) = self
            .lock()
            .as_ref()
            .filter(|last| last.matches(&view, &target, &config))
        {
            return Ok(Arc::clone(&hit.document));
        }
        // Rendered outside the lock, so requests on other threads are not held up; two
        // requests racing on a new view may both render it, and either result is the same.
        let document = MetricsDocument::new(worker_id, &view)
            .with_target(target.clone())
            .with_config(config.as_deref());
        let document = Arc::new(Compressed::new(Bytes::from(serde_json::to_vec(&document)?)));
        *self.lock() = Some(Rendered {
            view,
            target,
            config,
            document: Arc::clone(&document),
        });
        Ok(document)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Rendered>> {
        // Nothing can panic while the lock is held; a poisoned lock still holds a whole value.
        self.last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use perfpilot_strategies::Snapshot;

    use super::*;
    use crate::sample::TargetState;

    fn view(rss_bytes: u64) -> Arc<View> {
        let mut snapshot = Snapshot::empty(SystemTime::UNIX_EPOCH + Duration::from_secs(1));
        snapshot.rss_bytes = Some(rss_bytes);
        Arc::new(View::of(Arc::new(snapshot), Duration::from_secs(1)))
    }

    fn target(state: TargetState) -> Option<TargetStatus> {
        Some(TargetStatus {
            selector: "pid 4242".to_owned(),
            pid: Some(4242),
            cgroup: None,
            state,
            reason: None,
            since: SystemTime::UNIX_EPOCH,
            connections: None,
            connections_basis: None,
        })
    }

    fn fresh(view: &View, target: Option<TargetStatus>) -> Vec<u8> {
        let worker = Value::from(7);
        serde_json::to_vec(&MetricsDocument::new(&worker, view).with_target(target)).unwrap()
    }

    #[test]
    fn the_same_view_is_answered_from_the_kept_bytes() {
        let cache = MetricsCache::default();
        let worker = Value::from(7);
        let first_view = view(1);
        let first = cache
            .body(&worker, Arc::clone(&first_view), None, None)
            .unwrap();
        let again = cache
            .body(&worker, Arc::clone(&first_view), None, None)
            .unwrap();
        assert_eq!(first, fresh(&first_view, None));
        // The very same buffer, not a second render.
        assert_eq!(again.as_ptr(), first.as_ptr());
    }

    #[test]
    fn a_new_view_or_target_status_is_rendered_anew() {
        let cache = MetricsCache::default();
        let worker = Value::from(7);
        let old = view(1);
        cache.body(&worker, Arc::clone(&old), None, None).unwrap();

        let new = view(2);
        let body = cache.body(&worker, Arc::clone(&new), None, None).unwrap();
        assert_eq!(body, fresh(&new, None));
        assert_ne!(body, fresh(&old, None));

        let running = cache
            .body(
                &worker,
                Arc::clone(&new),
                target(TargetState::Running),
                None,
            )
            .unwrap();
        assert_eq!(running, fresh(&new, target(TargetState::Running)));
        let gone = cache
            .body(
                &worker,
                Arc::clone(&new),
                target(TargetState::NotFound),
                None,
            )
            .unwrap();
        assert_eq!(gone, fresh(&new, target(TargetState::NotFound)));
        assert_ne!(gone, running);
    }
}
