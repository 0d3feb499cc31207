//! The `Store` implementation both backends share (the `impl_store!`
//! macro): the same SQL (`sql.rs`), binds and row types (`rows.rs`) serve
//! SQLite and PostgreSQL.

// ---------------------------------------------------------------- Store

/// Implements [`Store`](super::Store) for a backend struct with a `pool`
/// field (`sqlx::Pool<DB>`); `$backend` is what `Store::backend` returns.
/// The body is backend-neutral: the same SQL, binds and row types serve
/// SQLite and PostgreSQL.
macro_rules! impl_store {
    ($ty:ty, $backend:literal, $db:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::Store for $ty {
            fn backend(&self) -> &'static str {
                $backend
            }

            async fn upsert_account(
                &self,
                a: &$crate::store::Account,
            ) -> $crate::store::Result<()> {
                sqlx::query($crate::store::sql::UPSERT_ACCOUNT)
                    .bind(&a.id)
                    .bind(&a.name)
                    .bind($crate::store::rows::encode_strings(&a.number_ranges))
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn list_accounts(&self) -> $crate::store::Result<Vec<$crate::store::Account>> {
                let rows = sqlx::query_as::<_, $crate::store::rows::AccountRow>(
                    $crate::store::sql::LIST_ACCOUNTS,
                )
                .fetch_all(&self.pool)
                .await?;
                $crate::store::rows::collect(rows, $crate::store::rows::account_from_row)
            }

            async fn set_account_auth_token(
                &self,
                id: &str,
                token: &str,
            ) -> $crate::store::Result<bool> {
                let r = sqlx::query($crate::store::sql::SET_ACCOUNT_AUTH_TOKEN)
                    .bind(id)
                    .bind(token)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() > 0)
            }

            async fn account_auth_token(&self, id: &str) -> $crate::store::Result<Option<String>> {
                let row: Option<(Option<String>,)> =
                    sqlx::query_as($crate::store::sql::GET_ACCOUNT_AUTH_TOKEN)
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(row.and_then(|(t,)| t))
            }

            async fn get_account(
                &self,
                id: &str,
            ) -> $crate::store::Result<Option<$crate::store::Account>> {
                sqlx::query_as::<_, $crate::store::rows::AccountRow>(
                    $crate::store::sql::GET_ACCOUNT,
                )
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .map($crate::store::rows::account_from_row)
                .transpose()
            }

            async fn upsert_trunk(&self, t: &$crate::store::Trunk) -> $crate::store::Result<()> {
                sqlx::query($crate::store::sql::UPSERT_TRUNK)
                    .bind(&t.name)
                    .bind($crate::store::rows::encode_strings(&t.source_cidrs))
                    .bind(t.outbound_address.as_deref())
                    .bind(&t.transport)
                    .bind(t.username.as_deref())
                    .bind(t.password.as_deref())
                    .bind(t.max_calls.map(i64::from))
                    .bind(t.transfer.as_deref())
                    .bind(t.account_id.as_deref())
                    .bind(t.requests_per_sec.map(i64::from))
                    .bind(
                        (!t.tls.is_empty())
                            .then(|| serde_json::to_string(&t.tls).unwrap_or_default()),
                    )
                    .bind(t.media_security.as_str())
                    .bind(t.srtp_cleartext_keying)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn list_trunks(&self) -> $crate::store::Result<Vec<$crate::store::Trunk>> {
                let rows = sqlx::query_as::<_, $crate::store::rows::TrunkRow>(
                    $crate::store::sql::LIST_TRUNKS,
                )
                .fetch_all(&self.pool)
                .await?;
                $crate::store::rows::collect(rows, $crate::store::rows::trunk_from_row)
            }

            async fn get_trunk(
                &self,
                name: &str,
            ) -> $crate::store::Result<Option<$crate::store::Trunk>> {
                sqlx::query_as::<_, $crate::store::rows::TrunkRow>($crate::store::sql::GET_TRUNK)
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await?
                    .map($crate::store::rows::trunk_from_row)
                    .transpose()
            }

            async fn delete_trunk(&self, name: &str) -> $crate::store::Result<bool> {
                let r = sqlx::query($crate::store::sql::DELETE_TRUNK)
                    .bind(name)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() > 0)
            }

            async fn upsert_number(
                &self,
                n: &$crate::store::Number,
            ) -> $crate::store::Result<bool> {
                let r = sqlx::query($crate::store::sql::UPSERT_NUMBER)
                    .bind(&n.pattern)
                    .bind(&n.account_id)
                    .bind(n.route.as_str())
                    .bind(n.target.as_deref())
                    .bind(n.dialect.as_deref())
                    .bind(n.params.as_deref())
                    .bind(n.trunk.as_deref())
                    .bind(n.max_calls.map(i64::from))
                    .bind(n.fallback.as_deref())
                    .bind(n.voice_webhook.as_deref())
                    .bind(n.sms_webhook.as_deref())
                    .bind(n.media_security.as_str())
                    .bind(n.webhook_format.as_str())
                    .bind(n.status_webhook.as_deref())
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() > 0)
            }

            async fn list_numbers(&self) -> $crate::store::Result<Vec<$crate::store::Number>> {
                let rows = sqlx::query_as::<_, $crate::store::rows::NumberRow>(
                    $crate::store::sql::LIST_NUMBERS,
                )
                .fetch_all(&self.pool)
                .await?;
                $crate::store::rows::collect(rows, $crate::store::rows::number_from_row)
            }

            async fn list_numbers_for(
                &self,
                account_id: &str,
            ) -> $crate::store::Result<Vec<$crate::store::Number>> {
                let rows = sqlx::query_as::<_, $crate::store::rows::NumberRow>(
                    $crate::store::sql::LIST_ACCOUNT_NUMBERS,
                )
                .bind(account_id)
                .fetch_all(&self.pool)
                .await?;
                $crate::store::rows::collect(rows, $crate::store::rows::number_from_row)
            }

            async fn get_number(
                &self,
                account_id: &str,
                pattern: &str,
            ) -> $crate::store::Result<Option<$crate::store::Number>> {
                sqlx::query_as::<_, $crate::store::rows::NumberRow>(
                    $crate::store::sql::GET_ACCOUNT_NUMBER,
                )
                .bind(account_id)
                .bind(pattern)
                .fetch_optional(&self.pool)
                .await?
                .map($crate::store::rows::number_from_row)
                .transpose()
            }

            async fn delete_number(&self, pattern: &str) -> $crate::store::Result<bool> {
                let r = sqlx::query($crate::store::sql::DELETE_NUMBER)
                    .bind(pattern)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() > 0)
            }

            async fn upsert_blocked(
                &self,
                b: &$crate::store::BlockedNumber,
            ) -> $crate::store::Result<()> {
                sqlx::query($crate::store::sql::UPSERT_BLOCKED)
                    .bind(&b.id)
                    .bind(&b.account_id)
                    .bind(b.number_pattern.as_deref())
                    .bind(&b.caller_pattern)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn list_blocked(
                &self,
            ) -> $crate::store::Result<Vec<$crate::store::BlockedNumber>> {
                let rows = sqlx::query_as::<_, $crate::store::rows::BlockedRow>(
                    $crate::store::sql::LIST_BLOCKED,
                )
                .fetch_all(&self.pool)
                .await?;
                $crate::store::rows::collect(rows, $crate::store::rows::blocked_from_row)
            }

            async fn list_blocked_for(
                &self,
                account_id: &str,
            ) -> $crate::store::Result<Vec<$crate::store::BlockedNumber>> {
                let rows = sqlx::query_as::<_, $crate::store::rows::BlockedRow>(
                    $crate::store::sql::LIST_ACCOUNT_BLOCKED,
                )
                .bind(account_id)
                .fetch_all(&self.pool)
                .await?;
                $crate::store::rows::collect(rows, $crate::store::rows::blocked_from_row)
            }

            async fn get_blocked(
                &self,
                account_id: &str,
                id: &str,
            ) -> $crate::store::Result<Option<$crate::store::BlockedNumber>> {
                sqlx::query_as::<_, $crate::store::rows::BlockedRow>(
                    $crate::store::sql::GET_ACCOUNT_BLOCKED,
                )
                .bind(account_id)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .map($crate::store::rows::blocked_from_row)
                .transpose()
            }

            async fn delete_blocked(&self, id: &str) -> $crate::store::Result<bool> {
                let r = sqlx::query($crate::store::sql::DELETE_BLOCKED)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() > 0)
            }

            async fn insert_denied_source(
                &self,
                d: &$crate::store::DeniedSource,
            ) -> $crate::store::Result<bool> {
                use $crate::store::rows::db_text;
                let r = sqlx::query($crate::store::sql::INSERT_DENIED_SOURCE)
                    .bind(&d.id)
                    .bind(&d.network)
                    .bind(d.reason.as_deref().map(db_text))
                    .bind(d.created_at)
                    .bind(d.expires_at)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() > 0)
            }

            async fn list_denied_sources(
                &self,
            ) -> $crate::store::Result<Vec<$crate::store::DeniedSource>> {
                let rows = sqlx::query_as::<_, $crate::store::rows::DeniedSourceRow>(
                    $crate::store::sql::LIST_DENIED_SOURCES,
                )
                .fetch_all(&self.pool)
                .await?;
                $crate::store::rows::collect(rows, $crate::store::rows::denied_source_from_row)
            }

            async fn delete_denied_source(&self, id: &str) -> $crate::store::Result<bool> {
                let r = sqlx::query($crate::store::sql::DELETE_DENIED_SOURCE)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() > 0)
            }

            async fn purge_denied_sources(&self, now_ms: i64) -> $crate::store::Result<u64> {
                let r = sqlx::query($crate::store::sql::PURGE_DENIED_SOURCES)
                    .bind(now_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected())
            }

            async fn upsert_sip_user(
                &self,
                u: &$crate::store::SipUser,
            ) -> $crate::store::Result<bool> {
                let r = sqlx::query($crate::store::sql::UPSERT_SIP_USER)
                    .bind(&u.username)
                    .bind(&u.account_id)
                    .bind(&u.realm)
                    .bind(&u.ha1_md5)
                    .bind(&u.ha1_sha256)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() > 0)
            }

            async fn list_sip_users(&self) -> $crate::store::Result<Vec<$crate::store::SipUser>> {
                let rows = sqlx::query_as::<_, $crate::store::rows::SipUserRow>(
                    $crate::store::sql::LIST_SIP_USERS,
                )
                .fetch_all(&self.pool)
                .await?;
                $crate::store::rows::collect(rows, $crate::store::rows::sip_user_from_row)
            }

            async fn list_sip_users_for(
                &self,
                account_id: &str,
            ) -> $crate::store::Result<Vec<$crate::store::SipUser>> {
                let rows = sqlx::query_as::<_, $crate::store::rows::SipUserRow>(
                    $crate::store::sql::LIST_ACCOUNT_SIP_USERS,
                )
                .bind(account_id)
                .fetch_all(&self.pool)
                .await?;
                $crate::store::rows::collect(rows, $crate::store::rows::sip_user_from_row)
            }

            async fn get_sip_user(
                &self,
                account_id: &str,
                username: &str,
            ) -> $crate::store::Result<Option<$crate::store::SipUser>> {
                sqlx::query_as::<_, $crate::store::rows::SipUserRow>(
                    $crate::store::sql::GET_ACCOUNT_SIP_USER,
                )
                .bind(account_id)
                .bind(username)
                .fetch_optional(&self.pool)
                .await?
                .map($crate::store::rows::sip_user_from_row)
                .transpose()
            }

            async fn delete_sip_user(&self, username: &str) -> $crate::store::Result<bool> {
                let mut tx = self.pool.begin().await?;
                sqlx::query($crate::store::sql::DELETE_USER_REGISTRATIONS)
                    .bind(username)
                    .execute(&mut *tx)
                    .await?;
                let r = sqlx::query($crate::store::sql::DELETE_SIP_USER)
                    .bind(username)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(r.rows_affected() > 0)
            }

            async fn upsert_registration(
                &self,
                r: &$crate::store::Registration,
            ) -> $crate::store::Result<()> {
                sqlx::query($crate::store::sql::UPSERT_REGISTRATION)
                    .bind(&r.username)
                    .bind(&r.contact)
                    .bind(r.expires_at)
                    .bind(&r.source)
                    .bind(&r.transport)
                    .bind(&r.call_id)
                    .bind(i64::from(r.cseq))
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn delete_registration(
                &self,
                username: &str,
                contact: &str,
            ) -> $crate::store::Result<()> {
                sqlx::query($crate::store::sql::DELETE_REGISTRATION)
                    .bind(username)
                    .bind(contact)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn list_registrations(
                &self,
                now_ms: i64,
            ) -> $crate::store::Result<Vec<$crate::store::Registration>> {
                let rows = sqlx::query_as::<_, $crate::store::rows::RegistrationRow>(
                    $crate::store::sql::LIST_REGISTRATIONS,
                )
                .bind(now_ms)
                .fetch_all(&self.pool)
                .await?;
                $crate::store::rows::collect(rows, $crate::store::rows::registration_from_row)
            }

            /// One transaction, events in order. `Started` inserts or does
            /// nothing, `Answered` keeps the first answer time, `Ended` only
            /// closes an open row — so re-applying a batch (after a failed
            /// commit whose outcome is unknown) changes nothing.
            ///
            /// An `Answered`/`Ended` whose row does not exist updates
            /// nothing. That cannot lose an event in practice: the queue is
            /// FIFO and a call's `Started` is pushed before its other
            /// events, so it is applied in the same or an earlier batch.
            async fn apply_cdr_batch(
                &self,
                events: &[$crate::store::CdrEvent],
            ) -> $crate::store::Result<()> {
                use $crate::store::fold::{ROWS_PER_STATEMENT, fold};
                let batch = fold(events);
                let mut tx = self.pool.begin().await?;
                // Three multi-row statements per batch instead of one per
                // event: each statement is a round trip to the driver.
                for rows in batch.started.chunks(ROWS_PER_STATEMENT) {
                    let mut qb =
                        sqlx::QueryBuilder::<$db>::new($crate::store::sql::INSERT_CALLS_HEAD);
                    qb.push_values(rows, |mut b, c| {
                        b.push_bind(c.id.clone())
                            .push_bind(c.account_id.clone())
                            .push_bind(c.direction.as_str())
                            .push_bind(c.from_number.clone())
                            .push_bind(c.to_number.clone())
                            .push_bind(c.trunk.clone())
                            .push_bind(c.sip_call_id.clone())
                            .push_bind(c.invite_at)
                            .push_bind(c.answer_at)
                            .push_bind(c.end_at)
                            .push_bind(c.end_cause.clone())
                            .push_bind(c.sip_status.map(i32::from))
                            .push_bind(c.duration_ms)
                            .push_bind(c.media_mode.clone())
                            .push_bind(c.node.clone())
                            .push_bind(
                                c.media_security
                                    .as_ref()
                                    .map($crate::store::rows::encode_legs_security),
                            );
                    });
                    qb.push($crate::store::sql::INSERT_CALLS_MERGE);
                    qb.build().execute(&mut *tx).await?;
                }
                for rows in batch.answered.chunks(ROWS_PER_STATEMENT) {
                    let mut qb =
                        sqlx::QueryBuilder::<$db>::new($crate::store::sql::ANSWER_CALLS_HEAD);
                    qb.push_values(rows, |mut b, (id, at, media)| {
                        b.push_bind(id.clone())
                            .push_bind(*at)
                            .push_bind(media.clone());
                    });
                    qb.push($crate::store::sql::ANSWER_CALLS_TAIL);
                    qb.build().execute(&mut *tx).await?;
                }
                for rows in batch.ended.chunks(ROWS_PER_STATEMENT) {
                    let mut qb = sqlx::QueryBuilder::<$db>::new($crate::store::sql::END_CALLS_HEAD);
                    qb.push_values(rows, |mut b, (id, at, cause, status, duration)| {
                        b.push_bind(id.clone())
                            .push_bind(*at)
                            .push_bind(cause.clone())
                            .push_bind(i32::from(*status))
                            .push_bind(*duration);
                    });
                    qb.push($crate::store::sql::END_CALLS_TAIL);
                    qb.build().execute(&mut *tx).await?;
                }
                for rows in batch.resume_save.chunks(ROWS_PER_STATEMENT) {
                    let mut qb =
                        sqlx::QueryBuilder::<$db>::new($crate::store::sql::SAVE_RESUME_HEAD);
                    qb.push_values(rows, |mut b, (id, node, snapshot, at)| {
                        b.push_bind(id.clone())
                            .push_bind(node.clone())
                            .push_bind(snapshot.clone())
                            .push_bind(*at);
                    });
                    qb.push($crate::store::sql::SAVE_RESUME_TAIL);
                    qb.build().execute(&mut *tx).await?;
                }
                for ids in batch.resume_drop.chunks(ROWS_PER_STATEMENT) {
                    let mut qb =
                        sqlx::QueryBuilder::<$db>::new($crate::store::sql::DROP_RESUME_HEAD);
                    let mut sep = qb.separated(", ");
                    for id in ids {
                        sep.push_bind(id.clone());
                    }
                    qb.push(")");
                    qb.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn dead_letter_cdr(
                &self,
                event: &$crate::store::CdrEvent,
                error: &str,
                at_ms: i64,
            ) -> $crate::store::Result<()> {
                use $crate::store::rows::db_text;
                // Debug text escapes what a TEXT column refuses.
                sqlx::query($crate::store::sql::INSERT_DEAD_LETTER)
                    .bind(db_text(event.call_id()).into_owned())
                    .bind(db_text(&format!("{event:?}")).into_owned())
                    .bind(db_text(error).into_owned())
                    .bind(at_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn list_cdr_dead_letters(
                &self,
            ) -> $crate::store::Result<Vec<$crate::store::DeadLetter>> {
                let rows: Vec<(String, String, String, i64)> =
                    sqlx::query_as($crate::store::sql::LIST_DEAD_LETTERS)
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows
                    .into_iter()
                    .map(|(call_id, event, error, at)| $crate::store::DeadLetter {
                        call_id,
                        event,
                        error,
                        at,
                    })
                    .collect())
            }

            async fn get_call(
                &self,
                id: &str,
            ) -> $crate::store::Result<Option<$crate::store::CallRecord>> {
                let row =
                    sqlx::query_as::<_, $crate::store::rows::CallRow>($crate::store::sql::GET_CALL)
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?;
                row.map($crate::store::rows::call_from_row).transpose()
            }

            async fn list_calls(
                &self,
                filter: &$crate::store::CallFilter,
            ) -> $crate::store::Result<Vec<$crate::store::CallRecord>> {
                let (sql, args) = $crate::store::sql::list_calls_query(filter);
                let mut q = sqlx::query_as::<_, $crate::store::rows::CallRow>(&sql);
                for arg in args {
                    q = match arg {
                        $crate::store::sql::Arg::Text(s) => q.bind(s),
                        $crate::store::sql::Arg::Int(i) => q.bind(i),
                    };
                }
                let rows = q.fetch_all(&self.pool).await?;
                $crate::store::rows::collect(rows, $crate::store::rows::call_from_row)
            }

            async fn close_interrupted_calls(
                &self,
                now_ms: i64,
                node: &str,
            ) -> $crate::store::Result<u64> {
                let mut tx = self.pool.begin().await?;
                sqlx::query($crate::store::sql::SWEEP_RESUME)
                    .execute(&mut *tx)
                    .await?;
                let r = sqlx::query($crate::store::sql::CLOSE_INTERRUPTED)
                    .bind(now_ms)
                    .bind(node)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(r.rows_affected())
            }

            async fn list_resumable_calls(
                &self,
                node: &str,
            ) -> $crate::store::Result<Vec<$crate::store::ResumableCall>> {
                let rows: Vec<(String, String)> =
                    sqlx::query_as($crate::store::sql::LIST_RESUMABLE)
                        .bind(node)
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows
                    .into_iter()
                    .map(|(id, snapshot)| $crate::store::ResumableCall { id, snapshot })
                    .collect())
            }

            async fn claim_idempotency_key(
                &self,
                account: &str,
                key: &str,
                fingerprint: &str,
                now_ms: i64,
                ttl_ms: i64,
            ) -> $crate::store::Result<$crate::store::IdempotencyClaim> {
                use $crate::store::IdempotencyClaim;
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "DELETE FROM idempotency_keys WHERE account_id = $1 AND key = $2 \
                     AND created_at < $3",
                )
                .bind(account)
                .bind(key)
                .bind(now_ms - ttl_ms)
                .execute(&mut *tx)
                .await?;
                let inserted = sqlx::query(
                    "INSERT INTO idempotency_keys (account_id, key, fingerprint, created_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (account_id, key) DO NOTHING",
                )
                .bind(account)
                .bind(key)
                .bind(fingerprint)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                let claim = if inserted == 1 {
                    IdempotencyClaim::Claimed
                } else {
                    let (f, status, body): (String, Option<i64>, Option<String>) = sqlx::query_as(
                        "SELECT fingerprint, CAST(status AS BIGINT), body FROM idempotency_keys \
                         WHERE account_id = $1 AND key = $2",
                    )
                    .bind(account)
                    .bind(key)
                    .fetch_one(&mut *tx)
                    .await?;
                    match (status, body) {
                        _ if f != fingerprint => IdempotencyClaim::Mismatch,
                        (Some(s), Some(b)) => IdempotencyClaim::Done {
                            status: u16::try_from(s).map_err(|_| {
                                $crate::store::StoreError::Corrupt {
                                    table: "idempotency_keys",
                                    column: "status",
                                    value: s.to_string(),
                                }
                            })?,
                            body: b,
                        },
                        _ => IdempotencyClaim::InFlight,
                    }
                };
                tx.commit().await?;
                Ok(claim)
            }

            async fn finish_idempotency_key(
                &self,
                account: &str,
                key: &str,
                answer: Option<(u16, &str)>,
            ) -> $crate::store::Result<()> {
                match answer {
                    Some((status, body)) => {
                        sqlx::query(
                            "UPDATE idempotency_keys SET status = $1, body = $2 \
                             WHERE account_id = $3 AND key = $4",
                        )
                        .bind(i64::from(status))
                        .bind(body)
                        .bind(account)
                        .bind(key)
                        .execute(&self.pool)
                        .await?;
                    }
                    None => {
                        sqlx::query(
                            "DELETE FROM idempotency_keys WHERE account_id = $1 AND key = $2",
                        )
                        .bind(account)
                        .bind(key)
                        .execute(&self.pool)
                        .await?;
                    }
                }
                Ok(())
            }

            async fn announce_registration(
                &self,
                notice: &$crate::store::RegistrationNotice,
            ) -> $crate::store::Result<bool> {
                if $backend != "postgres" {
                    return Ok(true);
                }
                let Ok(payload) = serde_json::to_string(notice) else {
                    return Ok(false);
                };
                if payload.len() > $crate::store::MAX_NOTICE_BYTES {
                    return Ok(false);
                }
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind($crate::store::REGISTRATION_CHANNEL)
                    .bind(payload)
                    .execute(&self.pool)
                    .await?;
                Ok(true)
            }

            async fn announce_change(&self) -> $crate::store::Result<()> {
                if $backend == "postgres" {
                    sqlx::query("SELECT pg_notify($1, '')")
                        .bind($crate::store::CHANGE_CHANNEL)
                        .execute(&self.pool)
                        .await?;
                }
                Ok(())
            }

            async fn insert_message(
                &self,
                m: &$crate::store::MessageRecord,
            ) -> $crate::store::Result<()> {
                use $crate::store::rows::db_text;
                sqlx::query($crate::store::sql::INSERT_MESSAGE)
                    .bind(&m.id)
                    .bind(&m.account_id)
                    .bind(m.direction.as_str())
                    .bind(db_text(&m.from_number).into_owned())
                    .bind(db_text(&m.to_number).into_owned())
                    .bind(db_text(&m.body).into_owned())
                    .bind(&m.status)
                    .bind(m.created_at)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn update_message_status(
                &self,
                id: &str,
                status: &str,
            ) -> $crate::store::Result<bool> {
                let r = sqlx::query("UPDATE messages SET status = $1 WHERE id = $2")
                    .bind(status)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() > 0)
            }

            async fn list_messages(
                &self,
                account_id: &str,
                limit: u32,
            ) -> $crate::store::Result<Vec<$crate::store::MessageRecord>> {
                let rows = sqlx::query_as::<_, $crate::store::rows::MessageRow>(
                    $crate::store::sql::LIST_MESSAGES,
                )
                .bind(account_id)
                .bind($crate::store::sql::clamp_limit(limit))
                .fetch_all(&self.pool)
                .await?;
                $crate::store::rows::collect(rows, $crate::store::rows::message_from_row)
            }

            async fn get_message(
                &self,
                id: &str,
            ) -> $crate::store::Result<Option<$crate::store::MessageRecord>> {
                sqlx::query_as::<_, $crate::store::rows::MessageRow>(
                    $crate::store::sql::GET_MESSAGE,
                )
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .map($crate::store::rows::message_from_row)
                .transpose()
            }

            async fn insert_recording(
                &self,
                r: &$crate::store::RecordingRecord,
            ) -> $crate::store::Result<()> {
                sqlx::query($crate::store::sql::INSERT_RECORDING)
                    .bind(&r.id)
                    .bind(&r.account_id)
                    .bind(&r.call_id)
                    .bind(&r.path)
                    .bind(r.duration_ms)
                    .bind(r.bytes)
                    .bind(&r.status)
                    .bind(r.error.as_deref())
                    .bind(r.created_at)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn list_recordings(
                &self,
                account_id: &str,
                limit: u32,
            ) -> $crate::store::Result<Vec<$crate::store::RecordingRecord>> {
                let rows = sqlx::query_as::<_, $crate::store::rows::RecordingRow>(
                    $crate::store::sql::LIST_RECORDINGS,
                )
                .bind(account_id)
                .bind($crate::store::sql::clamp_limit(limit))
                .fetch_all(&self.pool)
                .await?;
                $crate::store::rows::collect(rows, $crate::store::rows::recording_from_row)
            }

            async fn get_recording(
                &self,
                id: &str,
            ) -> $crate::store::Result<Option<$crate::store::RecordingRecord>> {
                sqlx::query_as::<_, $crate::store::rows::RecordingRow>(
                    $crate::store::sql::GET_RECORDING,
                )
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .map($crate::store::rows::recording_from_row)
                .transpose()
            }

            async fn delete_recording(&self, id: &str) -> $crate::store::Result<bool> {
                let r = sqlx::query($crate::store::sql::DELETE_RECORDING)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() > 0)
            }

            async fn register_node(
                &self,
                n: &$crate::store::NodeRecord,
            ) -> $crate::store::Result<()> {
                sqlx::query($crate::store::sql::REGISTER_NODE)
                    .bind(&n.id)
                    .bind(&n.api_address)
                    .bind(&n.version)
                    .bind(n.started_at)
                    .bind(n.heartbeat_at)
                    .bind(n.calls_active)
                    .bind(n.draining)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn heartbeat_node(
                &self,
                n: &$crate::store::NodeRecord,
            ) -> $crate::store::Result<bool> {
                let (requested,): (bool,) = sqlx::query_as($crate::store::sql::HEARTBEAT_NODE)
                    .bind(&n.id)
                    .bind(&n.api_address)
                    .bind(&n.version)
                    .bind(n.started_at)
                    .bind(n.heartbeat_at)
                    .bind(n.calls_active)
                    .bind(n.draining)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(requested)
            }

            async fn list_nodes(&self) -> $crate::store::Result<Vec<$crate::store::NodeRecord>> {
                let rows = sqlx::query_as::<_, $crate::store::rows::NodeRow>(
                    $crate::store::sql::LIST_NODES,
                )
                .fetch_all(&self.pool)
                .await?;
                $crate::store::rows::collect(rows, $crate::store::rows::node_from_row)
            }

            async fn close_lost_node_calls(
                &self,
                now_ms: i64,
                node: &str,
                lapsed_before_ms: i64,
                abandon: bool,
            ) -> $crate::store::Result<u64> {
                let mut tx = self.pool.begin().await?;
                let r = sqlx::query($crate::store::sql::CLOSE_LOST_NODE_CALLS)
                    .bind(now_ms)
                    .bind(node)
                    .bind(lapsed_before_ms)
                    .bind(abandon)
                    .execute(&mut *tx)
                    .await?;
                if abandon {
                    for sql in [
                        $crate::store::sql::ABANDON_LOST_NODE_RESUME,
                        $crate::store::sql::ABANDON_LOST_NODE_CAPACITY,
                    ] {
                        sqlx::query(sql)
                            .bind(node)
                            .bind(lapsed_before_ms)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                tx.commit().await?;
                Ok(r.rows_affected())
            }

            async fn reserve_capacity(
                &self,
                call_id: &str,
                node: &str,
                scopes: &[(String, u32)],
                at_ms: i64,
            ) -> $crate::store::Result<bool> {
                // SQLite: the write lock up front (a read upgraded to a
                // write would fail under concurrency); PostgreSQL: per
                // scope, below.
                // PostgreSQL: READ COMMITTED whatever the server's default
                // (a snapshot taken before the lock wait would miss the
                // previous holder's row and overbook), and bounded waits.
                let mut tx = if $backend == "postgres" {
                    let mut tx = self
                        .pool
                        .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
                        .await?;
                    sqlx::query("SET LOCAL lock_timeout = '1s'")
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("SET LOCAL statement_timeout = '2s'")
                        .execute(&mut *tx)
                        .await?;
                    tx
                } else {
                    self.pool.begin_with("BEGIN IMMEDIATE").await?
                };
                // One lock order (sorted scopes): two calls reserving the
                // same pair never deadlock.
                let mut sorted: Vec<&(String, u32)> = scopes.iter().collect();
                sorted.sort();
                for (scope, limit) in sorted {
                    if $backend == "postgres" {
                        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                            .bind(scope)
                            .execute(&mut *tx)
                            .await?;
                    }
                    let (held,): (i64,) = sqlx::query_as($crate::store::sql::COUNT_RESERVATIONS)
                        .bind(scope)
                        .fetch_one(&mut *tx)
                        .await?;
                    if held >= i64::from(*limit) {
                        tx.rollback().await?;
                        return Ok(false);
                    }
                    sqlx::query($crate::store::sql::INSERT_RESERVATION)
                        .bind(call_id)
                        .bind(scope)
                        .bind(node)
                        .bind(at_ms)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn release_capacity(&self, call_id: &str) -> $crate::store::Result<()> {
                sqlx::query($crate::store::sql::RELEASE_CALL_CAPACITY)
                    .bind(call_id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn release_stale_capacity(
                &self,
                node: Option<&str>,
            ) -> $crate::store::Result<u64> {
                let mut n = sqlx::query($crate::store::sql::RELEASE_ENDED_CAPACITY)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                if let Some(node) = node {
                    n += sqlx::query($crate::store::sql::RELEASE_NODE_CAPACITY)
                        .bind(node)
                        .execute(&self.pool)
                        .await?
                        .rows_affected();
                }
                Ok(n)
            }

            async fn delete_node(
                &self,
                id: &str,
                lapsed_before_ms: i64,
            ) -> $crate::store::Result<bool> {
                let r = sqlx::query($crate::store::sql::DELETE_NODE)
                    .bind(id)
                    .bind(lapsed_before_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() > 0)
            }

            async fn request_node_drain(&self, id: &str) -> $crate::store::Result<bool> {
                let r = sqlx::query($crate::store::sql::REQUEST_NODE_DRAIN)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() > 0)
            }
        }
    };
}
pub(crate) use impl_store;
