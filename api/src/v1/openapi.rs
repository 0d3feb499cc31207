//! The OpenAPI 3.1 document, generated from the handlers' annotations and
//! the schema types (`GET /v1/openapi.json`).

use super::error::{ErrorBody, ErrorDetail};
use super::schema::*;
use super::{
    accounts, blocked_numbers as blocks, call_actions as live, calls, denied_sources as ds,
    messages, nodes, numbers, recordings, sip_users, trunks,
};
use axum::http::header;
use axum::response::IntoResponse;
use std::sync::OnceLock;
use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Voice gateway REST API",
        description = "Numbers, trunks, blocked callers, SIP users, the SIP deny set, call records, live call control and the cluster's nodes. \
            Every request carries `Authorization: Bearer <JWT>`; the token's `account` claim scopes it. \
            Errors are `{\"error\": {\"code\", \"message\", \"field\"}}`.",
    ),
    paths(
        accounts::list_accounts, accounts::get_account, accounts::put_account, accounts::rotate_auth_token,
        trunks::list_trunks, trunks::get_trunk, trunks::put_trunk, trunks::delete_trunk,
        numbers::list_numbers, numbers::get_number, numbers::put_number, numbers::delete_number,
        blocks::list_blocks, blocks::create_block, blocks::get_block, blocks::delete_block,
        sip_users::list_sip_users, sip_users::get_sip_user, sip_users::put_sip_user, sip_users::delete_sip_user,
        ds::list_denied_sources, ds::create_denied_source, ds::get_denied_source, ds::delete_denied_source,
        calls::list_calls, calls::create_call, calls::get_call, live::hangup_call, live::send_dtmf, live::transfer_call,
        live::start_stream, live::stop_stream, live::update_call,
        messages::list_messages, messages::send_message, messages::get_message,
        recordings::start_recording, recordings::list_recordings, recordings::get_recording,
        recordings::download_recording, recordings::delete_recording,
        nodes::list_nodes, nodes::drain_node, nodes::delete_node,
    ),
    components(schemas(
        ErrorBody, ErrorDetail, AccountIn, AccountOut, AccountPage, AuthTokenOut, TrunkIn, TrunkOut, TrunkPage, crate::store::TrunkTls, crate::store::MediaSecurity, crate::store::LegsSecurity,
        StreamSpec, NumberIn, NumberOut, NumberPage, BlockIn, BlockOut, BlockPage, SipUserIn,
        SipUserOut, SipUserPage, DeniedSourceIn, crate::store::DeniedSource, DeniedSourcePage, CallIn, CallOut, CallPage, MessageIn, MessageOut, MessagePage, RecordingIn, RecordingOut, RecordingPage, CallActionOut, CallUpdateIn, DtmfIn, TransferIn,
        NodeOut, NodeList, NodeDrainOut,
    )),
    modifiers(&BearerAuth, &CommonErrors),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The error answers any operation may give, documented on each (the
/// handlers list only their own).
struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::Operation;
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = |why: &str| {
            ResponseBuilder::new()
                .description(why)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        let add = |op: &mut Operation| {
            let mut common = vec![
                ("400", "Malformed request (JSON syntax, path encoding)"),
                ("401", "Missing, expired or invalid bearer token"),
                ("403", "The token lacks the admin claim or an account"),
                ("404", "No such resource for this account"),
                (
                    "422",
                    "A field or query parameter is invalid (`error.field` names it)",
                ),
                ("429", "Rate limited; see Retry-After"),
                (
                    "503",
                    "The store or the signalling core is unavailable; retry",
                ),
            ];
            if op.request_body.is_some() {
                common.push(("413", "Body larger than 64 KiB"));
                common.push(("415", "Body is not application/json"));
            }
            for (code, why) in common {
                op.responses
                    .responses
                    .entry(code.to_string())
                    .or_insert_with(|| error(why).into());
            }
        };
        for item in doc.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                add(op);
            }
        }
    }
}

/// The document as JSON text (built once).
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    })
}

pub fn document_json() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document())
}

#[cfg(test)]
mod tests {
    #[test]
    fn document_is_openapi_3_1_with_every_route() {
        let doc: serde_json::Value = serde_json::from_str(super::document()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        let paths = doc["paths"].as_object().unwrap();
        for p in [
            "/v1/accounts/{id}",
            "/v1/trunks/{name}",
            "/v1/numbers/{number}",
            "/v1/blocked-numbers",
            "/v1/sip-users/{username}",
            "/v1/denied-sources",
            "/v1/denied-sources/{id}",
            "/v1/calls",
            "/v1/calls/{id}/hangup",
            "/v1/messages",
            "/v1/messages/{id}",
        ] {
            assert!(paths.contains_key(p), "{p} missing");
        }
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
    }
}
