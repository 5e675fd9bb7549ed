//! The trace id of the request a task works for, carried across awaits (a task-local) and across
//! nodes (in call envelopes), so that every node's log lines for one request share it.

use std::future::Future;
use std::sync::Arc;

tokio::task_local! {
    static TRACE_ID: Arc<str>;
}

/// Runs `work` as part of the request traced as `trace_id`.
pub async fn traced<F: Future>(trace_id: Arc<str>, work: F) -> F::Output {
    TRACE_ID.scope(trace_id, work).await
}

/// The trace id of the request this task works for, if it works for one.
pub fn current() -> Option<Arc<str>> {
    TRACE_ID.try_with(Arc::clone).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_trace_id_is_seen_inside_its_scope_only() {
        assert_eq!(current(), None);
        let inside = traced("abc".into(), async {
            tokio::task::yield_now().await;
            current()
        })
        .await;
        assert_eq!(inside.as_deref(), Some("abc"));
        assert_eq!(current(), None);
    }
}
