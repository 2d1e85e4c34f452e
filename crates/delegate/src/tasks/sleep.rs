//! `sleep`: waits `{"ms": N}` milliseconds. It occupies a slot of capacity without doing
//! anything, which is what load, timeout and cancellation tests need. Cancellation and
//! the timeout come from the runner, which drops this future.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{TaskOutcome, parse_payload};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    ms: u64,
}

pub(super) async fn run(payload: Value) -> TaskOutcome {
    let Payload { ms } = match parse_payload(payload) {
        Ok(p) => p,
        Err(refused) => return refused,
    };
    tokio::time::sleep(Duration::from_millis(ms)).await;
    TaskOutcome::success(json!({"slept_ms": ms}))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use crate::cancel::CancelToken;
    use crate::tasks::tests::tt;
    use crate::tasks::{BuiltIn, Runner};

    #[tokio::test]
    async fn sleep_waits_and_says_how_long() {
        let out = Runner::new(&[BuiltIn::Sleep])
            .run(
                &tt("sleep"),
                json!({"ms": 5}),
                Duration::from_secs(5),
                CancelToken::new(),
            )
            .await;
        assert!(out.succeeded);
        assert_eq!(out.result, json!({"slept_ms": 5}));
    }

    #[tokio::test]
    async fn sleep_refuses_a_payload_without_ms() {
        let runner = Runner::new(&[BuiltIn::Sleep]);
        for bad in [
            json!({}),
            json!({"ms": -1}),
            json!({"ms": 1, "extra": true}),
            json!("5"),
        ] {
            let out = runner
                .run(&tt("sleep"), bad.clone(), Duration::from_secs(5), CancelToken::new())
                .await;
            assert_eq!(out.error_code(), Some("bad_payload"), "{bad}");
        }
    }
}
