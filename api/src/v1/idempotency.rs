//! `Idempotency-Key` on POSTs that create calls or messages: a client that
//! retries after a timeout gets the first answer back, and no second call
//! is placed. Keys live 24 h per account in the store, so a retry that
//! reaches another node sharing the database finds them too.

use super::error::ApiError;
use crate::store::{IdempotencyClaim, Store};
use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use std::sync::Arc;

const TTL_MS: i64 = 24 * 3600 * 1000;

type Answer = (StatusCode, Json<serde_json::Value>);

/// The request's key: 1–255 visible ASCII characters.
pub fn key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(k.to_string()))
        }
        _ => Err(ApiError::field(
            "Idempotency-Key",
            "1–255 visible ASCII characters",
        )),
    }
}

/// The wall clock in Unix ms (the REST handlers' one reading of it).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Starts a request under `key`: `Ok(Some(answer))` replays a finished
/// one; `Ok(None)` means the key is ours (finish it with a [`Guard`]); a
/// key in flight or reused for another body is refused.
pub async fn begin(
    store: &dyn Store,
    account: &str,
    key: &str,
    fingerprint: &str,
) -> Result<Option<Answer>, ApiError> {
    match store
        .claim_idempotency_key(account, key, fingerprint, now_ms(), TTL_MS)
        .await?
    {
        IdempotencyClaim::Claimed => Ok(None),
        IdempotencyClaim::InFlight => Err(ApiError::conflict(
            "Idempotency-Key",
            "a request with this Idempotency-Key is still in progress",
        )),
        IdempotencyClaim::Mismatch => Err(ApiError::field(
            "Idempotency-Key",
            "this Idempotency-Key was used with a different body",
        )),
        IdempotencyClaim::Done { status, body } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            let body = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
            Ok(Some((status, Json(body))))
        }
    }
}

/// Runs `create` under the request's Idempotency-Key (when given), kept
/// per `scope` (`call`, `msg`) with `body` as the fingerprint: a finished
/// request's answer is replayed, a request dropped mid-way (the client
/// went away) releases its key so the retry is not refused for 24 h.
pub async fn idempotent<B, F>(
    store: &Arc<dyn Store>,
    account: &str,
    headers: &HeaderMap,
    scope: &str,
    body: B,
    create: impl FnOnce(B) -> F,
) -> Result<Answer, ApiError>
where
    B: serde::Serialize,
    F: std::future::Future<Output = Result<Answer, ApiError>>,
{
    let Some(key) = key(headers)?.map(|k| format!("{scope}:{k}")) else {
        return create(body).await;
    };
    let fingerprint = serde_json::to_string(&body).unwrap_or_default();
    if let Some(done) = begin(store.as_ref(), account, &key, &fingerprint).await? {
        return Ok(done);
    }
    let guard = Guard::new(store.clone(), account, &key);
    let result = create(body).await;
    guard.finish(result.as_ref().ok()).await;
    result
}

/// Ends a request that claimed a key: [`Guard::finish`] records a success
/// (a failure releases the key, so the client may retry); dropping the
/// guard unfinished — the client went away mid-request — releases it too.
pub struct Guard {
    store: Arc<dyn Store>,
    account: String,
    key: String,
    done: bool,
}

impl Guard {
    pub fn new(store: Arc<dyn Store>, account: &str, key: &str) -> Self {
        Guard {
            store,
            account: account.to_string(),
            key: key.to_string(),
            done: false,
        }
    }

    pub async fn finish(mut self, answer: Option<&Answer>) {
        self.done = true;
        let body = answer.map(|(s, Json(b))| (s.as_u16(), b.to_string()));
        let res = self
            .store
            .finish_idempotency_key(
                &self.account,
                &self.key,
                body.as_ref().map(|(s, b)| (*s, b.as_str())),
            )
            .await;
        if let Err(e) = res {
            tracing::warn!(error = %e, "Idempotency-Key answer not stored; a retry may run again");
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let (store, account, key) = (self.store.clone(), self.account.clone(), self.key.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = store.finish_idempotency_key(&account, &key, None).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn replays_refuses_in_flight_and_other_bodies_and_forgets_failures() {
        let store = crate::store::open("sqlite::memory:").await.unwrap();
        let s = store.as_ref();
        assert!(begin(s, "a", "k1", "body").await.unwrap().is_none());
        assert_eq!(
            begin(s, "a", "k1", "body").await.unwrap_err().status,
            StatusCode::CONFLICT
        );
        // Another account's key is its own.
        assert!(begin(s, "b", "k1", "body").await.unwrap().is_none());
        let answer = (StatusCode::CREATED, Json(serde_json::json!({"id": "CA1"})));
        Guard::new(store.clone(), "a", "k1")
            .finish(Some(&answer))
            .await;
        let (st, Json(body)) = begin(s, "a", "k1", "body").await.unwrap().unwrap();
        assert_eq!(
            (st, body["id"].as_str()),
            (StatusCode::CREATED, Some("CA1"))
        );
        assert_eq!(
            begin(s, "a", "k1", "other")
                .await
                .unwrap_err()
                .detail
                .field
                .as_deref(),
            Some("Idempotency-Key")
        );
        // A failed request is not remembered.
        assert!(begin(s, "a", "k2", "x").await.unwrap().is_none());
        Guard::new(store.clone(), "a", "k2").finish(None).await;
        assert!(begin(s, "a", "k2", "x").await.unwrap().is_none());
        // Nor one dropped mid-way.
        drop(Guard::new(store.clone(), "a", "k2"));
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(begin(s, "a", "k2", "x").await.unwrap().is_none());
    }
}
