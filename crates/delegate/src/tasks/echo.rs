//! `echo`: the result is the payload. It proves the whole round trip (assignment,
//! acquisition, reporting) without touching anything outside the delegate.

use serde_json::Value;

use super::TaskOutcome;

pub(super) fn run(payload: Value) -> TaskOutcome {
    TaskOutcome::success(payload)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use crate::cancel::CancelToken;
    use crate::tasks::tests::tt;
    use crate::tasks::{BuiltIn, Runner};

    #[tokio::test]
    async fn echo_returns_its_payload() {
        let payload = json!({"greeting": "hello", "n": [1, 2, 3]});
        let out = Runner::new(&[BuiltIn::Echo])
            .run(&tt("echo"), payload.clone(), Duration::from_secs(5), CancelToken::new())
            .await;
        assert!(out.succeeded);
        assert_eq!(out.result, payload);
    }
}
