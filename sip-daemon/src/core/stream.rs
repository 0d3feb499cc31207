//! What a call on route `stream` tells the AI: the stream's ids in
//! Twilio's formats and its `customParameters`.

use super::Core;
use domain::model::Number;
use media_userspace::aistream::{Dialect, StreamSpec, new_stream_sid};
use sha2::{Digest, Sha256};

/// Twilio-shaped account SID for one of our accounts: `AC` + 32 hex
/// digits, stable for the account id.
pub fn account_sid(account_id: &str) -> String {
    let h = Sha256::digest(account_id.as_bytes());
    format!("AC{}", hex::encode(&h[..16]))
}

/// The number's own parameters (a JSON object); values that are not
/// strings are passed as their JSON text.
pub fn number_parameters(params: Option<&str>) -> Vec<(String, String)> {
    let Some(Ok(serde_json::Value::Object(map))) =
        params.map(serde_json::from_str::<serde_json::Value>)
    else {
        return Vec::new();
    };
    map.into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect()
}

impl Core {
    pub(super) fn stream_spec(
        &self,
        url: &str,
        number: &Number,
        call_sid: &str,
        from: &str,
        to: &str,
        sip_call_id: &str,
    ) -> StreamSpec {
        let dialect = number
            .dialect
            .as_deref()
            .map_or(Some(Dialect::Twilio), Dialect::parse)
            .unwrap_or_else(|| {
                tracing::warn!(number = %number.pattern, dialect = ?number.dialect, "unknown stream dialect; using twilio");
                Dialect::Twilio
            });
        let mut parameters = vec![
            ("from".to_string(), from.to_string()),
            ("to".to_string(), to.to_string()),
            ("callSid".to_string(), call_sid.to_string()),
            ("account".to_string(), number.account_id.clone()),
            ("sipCallId".to_string(), sip_call_id.to_string()),
            // The names Pipecat's runner reads for Twilio calls.
            ("from_number".to_string(), from.to_string()),
            ("to_number".to_string(), to.to_string()),
        ];
        for (k, v) in number_parameters(number.params.as_deref()) {
            // The call's own details win over a number parameter's.
            if !parameters.iter().any(|(p, _)| *p == k) {
                parameters.push((k, v));
            }
        }
        let s = &self.cfg.stream;
        StreamSpec {
            url: url.to_string(),
            dialect,
            call_sid: call_sid.to_string(),
            account_sid: account_sid(&number.account_id),
            stream_sid: new_stream_sid(),
            from: from.to_string(),
            to: to.to_string(),
            parameters,
            connect_timeout: s.answer_timeout,
            reconnect_window: s.reconnect_window,
            keepalive: s.keepalive,
            max_frame_bytes: s.max_frame_bytes,
            fork: false,
        }
    }
}

impl Core {
    /// Opens call `h`'s own media leg (echo or an AI stream); a stream's
    /// sample rate is kept, for a live redirect to keep it.
    pub(super) fn open_media_leg(
        &mut self,
        h: super::CallHandle,
        mode: media_userspace::control::LegMode,
        media: media_userspace::control::LegMedia,
    ) {
        if let (media_userspace::control::LegMode::Stream(spec), Some(c)) =
            (&mode, self.calls.get_mut(&h))
        {
            c.ai_stream = Some(super::legs::AiStream {
                rate: spec.dialect.sample_rate(),
                from: spec.from.clone(),
                to: spec.to.clone(),
                recording: None,
            });
        }
        self.out.push_back(super::Output::Media(
            media_userspace::control::MediaCommand::Open {
                leg: h.own_leg(),
                mode,
                media,
                timeout: self.cfg.media_timeout,
            },
        ));
    }

    /// Call `h`'s AI stream when it may be moved or updated: answered,
    /// still with its AI (not relayed or transferred), no transfer under
    /// way. Else the answer to give.
    pub(super) fn live_ai_stream(
        &self,
        h: super::CallHandle,
    ) -> Result<super::legs::AiStream, api::control::ControlOutcome> {
        use api::control::ControlOutcome;
        let Some(call) = self.calls.get(&h) else {
            return Err(ControlOutcome::NotLive);
        };
        let Some(stream) = call.ai_stream.clone().filter(|_| {
            call.answered_at.is_some() && call.bridge.is_none() && call.media_leg == h.own_leg()
        }) else {
            return Err(ControlOutcome::Refused(
                "the call has no AI stream to move (not answered, relayed, or transferred)",
            ));
        };
        if call.transfer.is_some() || call.refer_until.is_some() {
            return Err(ControlOutcome::Refused(
                "a transfer of this call is under way: act once that is settled",
            ));
        }
        Ok(stream)
    }

    /// Moves live AI call `h` to `target` (`POST /v1/calls/{id}`):
    /// same callSid, a new streamSid, the same sample rate.
    pub(super) fn redirect_stream(
        &mut self,
        h: super::CallHandle,
        account: &str,
        target: &api::control::StreamTarget,
    ) -> api::control::ControlOutcome {
        use api::control::ControlOutcome;
        let stream = match self.live_ai_stream(h) {
            Ok(s) => s,
            Err(why) => return why,
        };
        let Some(call) = self.calls.get(&h) else {
            return ControlOutcome::NotLive;
        };
        let dialect = target.dialect.as_deref().unwrap_or("twilio");
        if Dialect::parse(dialect).map(Dialect::sample_rate) != Some(stream.rate) {
            return ControlOutcome::Refused(
                "the new dialect's sample rate differs from the stream's: choose one of the same rate",
            );
        }
        let number = stream_number_for(call.number_pattern.as_deref(), account, target);
        let spec = self.stream_spec(
            &target.url,
            &number,
            &call.sid,
            &stream.from,
            &stream.to,
            &call.dialog.key.call_id,
        );
        tracing::info!(call = h.get(), url = %target.url, "AI stream redirected");
        self.out.push_back(super::Output::Media(
            media_userspace::control::MediaCommand::Restream {
                leg: h.own_leg(),
                spec: Box::new(spec),
            },
        ));
        ControlOutcome::Accepted
    }
}

impl Core {
    /// Records live AI call `h` (both tracks) under this node's
    /// recordings directory.
    pub(super) fn record_call(
        &mut self,
        h: super::CallHandle,
        account: &str,
        recording_id: &str,
        status_callback: Option<String>,
    ) -> api::control::ControlOutcome {
        use api::control::ControlOutcome;
        let Some(dir) = self.cfg.recordings_dir.clone() else {
            return ControlOutcome::Refused(
                "recordings are not configured on this node ([recordings] dir)",
            );
        };
        // The account names a directory under `dir`: only plain names,
        // so no id (from a config file or a token's claim) leads outside.
        let plain = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !plain(account) || !plain(recording_id) {
            return ControlOutcome::Refused(
                "this account's id cannot name a recordings directory ([A-Za-z0-9_-], at most 64)",
            );
        }
        let Some(call) = self.calls.get_mut(&h) else {
            return ControlOutcome::NotLive;
        };
        if call.answered_at.is_none() || call.media_leg != h.own_leg() {
            return ControlOutcome::Refused("only answered calls with an AI stream are recorded");
        }
        let Some(stream) = call.ai_stream.as_mut() else {
            return ControlOutcome::Refused("only answered calls with an AI stream are recorded");
        };
        if stream.recording.is_some() {
            return ControlOutcome::Refused("the call is being recorded already");
        }
        stream.recording = Some(recording_id.to_string());
        let path = dir.join(account).join(format!("{recording_id}.wav"));
        let spec = media_userspace::recorder::RecordingSpec {
            id: recording_id.to_string(),
            path,
            call_sid: call.sid.clone(),
            account: account.to_string(),
            status_callback,
        };
        tracing::info!(
            call = h.get(),
            recording = recording_id,
            "recording started"
        );
        self.out.push_back(super::Output::Media(
            media_userspace::control::MediaCommand::Record {
                leg: h.own_leg(),
                spec: Box::new(spec),
            },
        ));
        ControlOutcome::Accepted
    }
}

/// What a stream started for a live call (a fork, a redirect) tells the
/// AI about the call's number: its pattern and account, and `target`.
pub(super) fn stream_number_for(
    pattern: Option<&str>,
    account: &str,
    target: &api::control::StreamTarget,
) -> Number {
    Number {
        pattern: pattern.unwrap_or_default().to_string(),
        account_id: account.to_string(),
        route: domain::model::RouteKind::Stream,
        target: Some(target.url.clone()),
        dialect: target.dialect.clone(),
        params: target.params.clone(),
        trunk: None,
        max_calls: None,
        fallback: None,
        voice_webhook: None,
        sms_webhook: None,
        status_webhook: None,
        webhook_format: Default::default(),
        media_security: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_sid_is_twilio_shaped_and_stable() {
        let a = account_sid("loopback");
        assert_eq!(a.len(), 34);
        assert!(a.starts_with("AC") && a[2..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a, account_sid("loopback"));
        assert_ne!(a, account_sid("other"));
    }

    #[test]
    fn number_parameters_accept_objects_only() {
        assert_eq!(
            number_parameters(Some(r#"{"lang":"en","retries":3}"#)),
            vec![
                ("lang".to_string(), "en".to_string()),
                ("retries".to_string(), "3".to_string())
            ]
        );
        assert!(number_parameters(Some("[1,2]")).is_empty());
        assert!(number_parameters(Some("not json")).is_empty());
        assert!(number_parameters(None).is_empty());
    }
}
