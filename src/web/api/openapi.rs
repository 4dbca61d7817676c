//! What the OpenAPI document says beyond the handlers' annotations: the
//! `bearer` security scheme they name, the WebSocket route, the tags, and a
//! description for every response an annotation left undescribed (by its
//! status, so the generic ones read the same everywhere).
//!
//! Owns: [`Extras`]. Must not import: sqlx, redis.

use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ComponentsBuilder, OpenApi, RefOr, Required, ResponseBuilder};
use utoipa::Modify;

/// Adds what the annotations cannot say (see the module doc).
pub struct Extras;

impl Modify for Extras {
    fn modify(&self, doc: &mut OpenApi) {
        doc.components
            .get_or_insert_with(|| ComponentsBuilder::new().build())
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("JWT")
                        .description(Some(
                            "A token from POST /api/auth/register or /api/auth/login, \
                             sent as `Authorization: Bearer <token>`.",
                        ))
                        .build(),
                ),
            );
        doc.paths.paths.insert("/ws/{id}".into(), websocket());
        for item in doc.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                for (status, response) in &mut op.responses.responses {
                    if let RefOr::T(r) = response {
                        if r.description.is_empty() {
                            r.description = generic(status).into();
                        }
                    }
                }
            }
        }
    }
}

/// What a status means on every route that can answer it.
pub fn generic(status: &str) -> &'static str {
    match status {
        "200" => "Done; the body is the result.",
        "201" => "Created; the body is the new resource.",
        "204" => "Done; no body.",
        "400" => "The request is malformed or a value is invalid; `error.message` says which.",
        "401" => "No valid token: missing, malformed, expired or revoked.",
        "403" => "Signed in, but not allowed to do this; `error.message` says why.",
        "404" => "No such document, user or version.",
        "409" => "The request conflicts with the current state (e.g. a version out of range).",
        "413" => "The body, or the document it would make, is over the size limit.",
        "429" => "Too many requests: slow down; `Retry-After` says when to try again.",
        "503" => "Unavailable: shutting down, a backend unreachable, or too busy; retry later.",
        _ => "See `error.code` and `error.message`.",
    }
}

fn query(name: &str, description: &str) -> utoipa::openapi::path::Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(description))
        .build()
}

fn response(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description)
}

/// `GET /ws/{id}`: the upgrade, its parameters and refusals. The messages
/// themselves are the protocol page's subject.
fn websocket() -> PathItem {
    let op = OperationBuilder::new()
        .tag("websocket")
        .operation_id(Some("websocket"))
        .summary(Some("Open a document's live session (WebSocket upgrade)"))
        .description(Some(
            "Upgrades to a WebSocket speaking Tandem protocol v1: the server sends `init` \
             (content, version, who is here), then every committed `op`, `cursor`, \
             `user_joined`/`user_left` and `meta`; the client sends `op`, `cursor`, \
             `undo`, `redo` and `ping`. The messages, error codes and close codes are \
             described on [the WebSocket protocol page](/docs/protocol).\n\n\
             Send the token as `Authorization: Bearer <token>`, or — for clients that \
             cannot set headers — as `?token=`. \"Try it out\" here cannot open a \
             WebSocket; use a WebSocket client (`scripts/tandem-ws`, or \
             `tandem-client.js`).",
        ))
        .parameter(
            ParameterBuilder::new()
                .name("id")
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some("The document id: 1–64 of `[A-Za-z0-9_.:@-]`.")),
        )
        .parameter(query(
            "client",
            "A stable id for this tab or process (kept across reconnects: resent ops are \
             recognised by it); the server answers with its scoped form in `init.client`.",
        ))
        .parameter(query(
            "version",
            "Resume from this version: the server replays what came after it.",
        ))
        .parameter(query(
            "history",
            "The `init.history` that `version` belongs to; a resume replays only within it.",
        ))
        .parameter(query(
            "token",
            "The bearer token, for clients that cannot send an Authorization header.",
        ))
        .parameter(query(
            "user_id",
            "Anonymous identity (only when the server runs with ALLOW_ANONYMOUS=true).",
        ))
        .parameter(query("name", "Anonymous display name (with `user_id`)."))
        .response(
            "101",
            response("Switching Protocols: the WebSocket is open; the first message is `init`."),
        )
        .response("400", response(generic("400")))
        .response("401", response(generic("401")))
        .response(
            "403",
            response("The Origin is not allowed, or the user has no access to the document."),
        )
        .response("404", response(generic("404")))
        .response(
            "429",
            response(
                "The user holds MAX_SOCKETS_PER_USER sessions, or the address \
                 MAX_CONNS_PER_IP connections.",
            ),
        )
        .response("503", response(generic("503")))
        .security(SecurityRequirement::new("bearer", Vec::<String>::new()));
    PathItem::new(HttpMethod::Get, op)
}

#[cfg(test)]
mod tests {
    use utoipa::OpenApi as _;

    use super::super::ApiDoc;

    #[test]
    fn every_response_is_described_and_the_scheme_is_declared() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let scheme = &doc["components"]["securitySchemes"]["bearer"];
        assert_eq!(scheme["scheme"], "bearer");
        let mut n = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for (status, r) in op["responses"].as_object().unwrap() {
                    let d = r["description"].as_str().unwrap_or_default();
                    assert!(!d.is_empty(), "{method} {path} {status} undescribed");
                    n += 1;
                }
                for req in op["security"].as_array().into_iter().flatten() {
                    for name in req.as_object().unwrap().keys() {
                        assert!(doc["components"]["securitySchemes"][name].is_object());
                    }
                }
            }
        }
        assert!(n > 50, "{n} responses");
        assert!(doc["paths"]["/ws/{id}"]["get"]["responses"]["101"].is_object());
    }
}
