//! The webhook edge: voice webhooks asked on their own tasks with their
//! answers sent back to the loop, status events, and SMS rows written in
//! order before their webhook is told.

use super::DaemonError;
use crate::config::Config;
use api::store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// (call, the voice webhook's answer) for `Core::handle_voice_answer`.
pub(super) type VoiceAnswerFor = (
    crate::core::CallHandle,
    Result<api::webhook::VoiceAnswer, api::webhook::WebhookError>,
);

/// The sender and where voice answers go back to the core's loop.
pub(super) struct Hooks {
    pub sender: api::webhook::WebhookSender,
    /// SMS rows, written in order by one task (a status never overtakes
    /// its row).
    sms: mpsc::UnboundedSender<SmsWrite>,
    voice_tx: mpsc::UnboundedSender<VoiceAnswerFor>,
    voice_timeout: Duration,
    /// Where `twilio`-format requests find their account's auth token.
    store: Arc<dyn Store>,
}

impl Hooks {
    /// The sender (requests to `targets` only) and the SMS writer's task;
    /// voice answers arrive on the receiver.
    pub(super) fn start(
        cfg: &Config,
        store: Arc<dyn Store>,
        targets: api::targets::TargetPolicy,
        registry: &prometheus::Registry,
    ) -> Result<(Hooks, mpsc::UnboundedReceiver<VoiceAnswerFor>), DaemonError> {
        if cfg.webhooks.secret.as_deref().is_none_or(str::is_empty) {
            tracing::warn!("webhooks.secret is unset: webhook requests are not signed");
        }
        let (voice_tx, voice_rx) = mpsc::unbounded_channel::<VoiceAnswerFor>();
        let sender =
            api::webhook::WebhookSender::new(cfg.webhooks.secret.clone(), targets, registry)?
                .with_auth_tokens(store.clone());
        let (sms, sms_rx) = mpsc::unbounded_channel::<SmsWrite>();
        tokio::spawn(sms_writer(store.clone(), sender.clone(), sms_rx));
        let hooks = Hooks {
            sender,
            sms,
            voice_tx,
            voice_timeout: Duration::from_millis(cfg.webhooks.voice_timeout_ms.max(1)),
            store,
        };
        Ok((hooks, voice_rx))
    }

    /// Asks `url` what to do with `call`, on its own task.
    pub(super) fn ask_voice(
        &self,
        call: crate::core::CallHandle,
        url: String,
        request: api::webhook::VoiceRequest,
    ) {
        let sender = self.sender.clone();
        let tx = self.voice_tx.clone();
        let timeout = self.voice_timeout;
        let store = self.store.clone();
        tokio::spawn(async move {
            // Read at each request: a rotated token signs the next one. A
            // slow store counts against the webhook's own deadline.
            let token = match request.format {
                api::store::WebhookFormat::Json => Ok(None),
                api::store::WebhookFormat::Twilio => {
                    match tokio::time::timeout(timeout, store.account_auth_token(&request.account))
                        .await
                    {
                        Ok(Ok(t)) => Ok(t),
                        Ok(Err(e)) => Err(api::webhook::WebhookError::Http(format!(
                            "auth token not read: {e}"
                        ))),
                        Err(_) => Err(api::webhook::WebhookError::Http(
                            "auth token not read: the store timed out".into(),
                        )),
                    }
                }
            };
            let answer = match token {
                Ok(token) => {
                    sender
                        .ask_voice(&url, &request, token.as_deref(), timeout)
                        .await
                }
                Err(e) => Err(e),
            };
            let _ = tx.send((call, answer));
        });
    }

    /// Stores a finished recording's row (retried while the store is
    /// away), then tells its status callback.
    pub(super) fn recording(&self, done: media_userspace::recorder::RecordingDone) {
        let (store, sender) = (self.store.clone(), self.sender.clone());
        tokio::spawn(async move {
            let created_at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            let rec = api::store::RecordingRecord {
                id: done.spec.id.clone(),
                account_id: done.spec.account.clone(),
                call_id: done.spec.call_sid.clone(),
                path: done.spec.path.display().to_string(),
                duration_ms: i64::try_from(done.duration_ms).unwrap_or(i64::MAX),
                bytes: i64::try_from(done.bytes).unwrap_or(i64::MAX),
                status: if done.error.is_some() {
                    "failed"
                } else {
                    "completed"
                }
                .into(),
                error: done.error.clone(),
                created_at,
            };
            if done.dropped_blocks > 0 {
                tracing::warn!(recording = %rec.id, blocks = done.dropped_blocks, "recording lost audio: the disk did not keep up");
            }
            let mut wait = Duration::from_millis(100);
            for _ in 0..8 {
                match store.insert_recording(&rec).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "recording row not stored yet; retrying");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(5));
                    }
                }
            }
            if let Some(url) = done.spec.status_callback {
                sender.deliver_recording(url, api::webhook::RecordingEvent::of(&rec));
            }
        });
    }

    /// Queues an SMS row for the writer.
    pub(super) fn sms(&self, write: SmsWrite) {
        let _ = self.sms.send(write);
    }
}

/// An SMS row to write.
pub(super) enum SmsWrite {
    /// Store the row, then POST it to this webhook (an inbound SMS).
    Insert(api::store::MessageRecord, Option<String>),
    Status(String, &'static str),
}

/// Writes SMS rows in order, retrying while the store is away.
async fn sms_writer(
    store: Arc<dyn Store>,
    sender: api::webhook::WebhookSender,
    mut rx: mpsc::UnboundedReceiver<SmsWrite>,
) {
    while let Some(w) = rx.recv().await {
        let mut wait = Duration::from_millis(100);
        for _ in 0..8 {
            let res = match &w {
                SmsWrite::Insert(r, _) => store.insert_message(r).await,
                SmsWrite::Status(id, status) => {
                    store.update_message_status(id, status).await.map(|_| ())
                }
            };
            match res {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "SMS row not stored yet; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
        if let SmsWrite::Insert(r, Some(url)) = w {
            sender.deliver_message(url, api::webhook::MessageEvent::received(&r));
        }
    }
}
