//! The CoAP resources of the device API and the one mapping of platform errors to CoAP codes.
//!
//! | path | method | does |
//! |---|---|---|
//! | `api/v1/{token}/telemetry` | POST | telemetry (2.04) |
//! | `api/v1/{token}/attributes` | POST | client attributes (2.04) |
//! | `api/v1/{token}/attributes` | GET | attributes (`?clientKeys=a,b&sharedKeys=c`); with Observe: shared-attribute updates |
//! | `api/v1/{token}/rpc` | GET + Observe | server-side RPC requests |
//! | `api/v1/{token}/rpc` | POST | client-side RPC, answered in the response |
//! | `api/v1/{token}/rpc/{id}` | POST | the reply to RPC `id` |
//! | `api/v1/provision` | POST | self-provisioning |
//! | `fw/{token}`, `sw/{token}`, `api/v1/{token}/firmware` | GET | the assigned image: `?size=&chunk=` one chunk, else block-wise (Block2); see `firmware` |

use std::sync::Arc;

use coap_lite::{ObserveOption, RequestType as Method, ResponseType as Status};
use ib_core::firmware::Kind;
use ib_core::{CoreError, DeviceCtx, Platform};
use serde_json::Value;

/// What the server loop should do with a request.
pub enum Outcome {
    /// Answer with a status and (JSON) payload.
    Reply(Status, Vec<u8>),
    /// 2.05 with (part of) a firmware image.
    Image(crate::firmware::ImageReply),
    /// Answer 2.04 once this commit is done (telemetry is acknowledged only when stored).
    Stored(store::Commit),
    /// Register an observation of the device's attributes (`rpc = false`) or RPCs, answering
    /// with `initial` now.
    Observe {
        ctx: Arc<DeviceCtx>,
        rpc: bool,
        initial: Vec<u8>,
    },
}

/// A request, as the loop decoded it.
pub struct Request<'a> {
    pub method: Method,
    pub path: &'a [String],
    pub query: &'a [String],
    pub observe: Option<ObserveOption>,
    /// The Block2 option (image downloads).
    pub block2: Option<crate::firmware::Block2>,
    pub payload: &'a [u8],
}

/// The CoAP code for a platform error.
pub fn status_of(e: &CoreError) -> Status {
    match e {
        CoreError::Invalid(_) => Status::BadRequest,
        CoreError::Unauthorized => Status::Unauthorized,
        CoreError::NotFound(_) => Status::NotFound,
        CoreError::AlreadyExists(_) | CoreError::Conflict(_) => Status::Conflict,
        CoreError::Unavailable(_) => Status::ServiceUnavailable,
        CoreError::Timeout => Status::GatewayTimeout,
        CoreError::Storage(_) | CoreError::Store(_) => Status::InternalServerError,
        CoreError::DiskFull => Status::ServiceUnavailable,
    }
}

fn error(e: CoreError) -> Outcome {
    Outcome::Reply(status_of(&e), e.to_string().into_bytes())
}

fn ok(status: Status, v: Option<Value>) -> Outcome {
    Outcome::Reply(
        status,
        v.map(|v| v.to_string().into_bytes()).unwrap_or_default(),
    )
}

fn query_keys(query: &[String], name: &str) -> Option<Vec<String>> {
    query
        .iter()
        .find_map(|q| q.strip_prefix(name)?.strip_prefix('='))
        .map(ib_core::payload::split_keys)
}

/// Handles one (reassembled) request.
pub fn handle(p: &Platform, req: &Request) -> Outcome {
    let path: Vec<&str> = req.path.iter().map(String::as_str).collect();
    let (token, rest) = match path.as_slice() {
        ["api", "v1", "provision"] if req.method == Method::Post => {
            return ok(Status::Content, Some(p.provision(req.payload)));
        }
        ["api", "v1", token, rest @ ..] if !rest.is_empty() => (*token, rest),
        // ThingsBoard's OTA resources.
        ["fw", token] => (*token, &["firmware"][..]),
        ["sw", token] => (*token, &["software"][..]),
        _ => return Outcome::Reply(Status::NotFound, b"no such resource".to_vec()),
    };
    let ctx = match p.auth_token(token) {
        Ok(ctx) => ctx,
        Err(_) => {
            return Outcome::Reply(
                Status::Unauthorized,
                b"unknown or expired access token".to_vec(),
            )
        }
    };
    p.touch(&ctx, "coap");
    let result = match (req.method, rest) {
        (Method::Post, ["telemetry"]) => p.post_telemetry(&ctx, req.payload).map(Outcome::Stored),
        (Method::Post, ["attributes"]) => p
            .post_attributes(&ctx, req.payload)
            .map(|_| ok(Status::Changed, None)),
        (Method::Get, ["attributes"]) => {
            let (client, shared) = (
                query_keys(req.query, "clientKeys"),
                query_keys(req.query, "sharedKeys"),
            );
            if req.observe == Some(ObserveOption::Register) {
                p.attributes
                    .values(&ctx.id, ib_core::attributes::Scope::Shared, None)
                    .map(|m| Outcome::Observe {
                        ctx: ctx.clone(),
                        rpc: false,
                        initial: Value::Object(m).to_string().into_bytes(),
                    })
            } else {
                p.request_attributes(&ctx.id, client, shared)
                    .map(|v| ok(Status::Content, Some(v)))
            }
        }
        (Method::Get, ["rpc"]) if req.observe == Some(ObserveOption::Register) => {
            Ok(Outcome::Observe {
                ctx: ctx.clone(),
                rpc: true,
                initial: Vec::new(),
            })
        }
        (Method::Get, ["rpc"]) => Ok(Outcome::Reply(Status::Content, Vec::new())),
        (Method::Post, ["rpc"]) => p
            .client_rpc(&ctx, req.payload)
            .map(|v| ok(Status::Content, Some(v))),
        (Method::Post, ["rpc", id]) => match id.parse::<i64>() {
            Ok(id) => p
                .rpc_reply(&ctx, id, req.payload)
                .map(|_| ok(Status::Changed, None)),
            Err(_) => Err(CoreError::Invalid(format!("RPC id {id:?} is not a number"))),
        },
        (Method::Get, ["firmware"]) => {
            crate::firmware::image(p, &ctx, Kind::Firmware, req.query, req.block2)
                .map(Outcome::Image)
        }
        (Method::Get, ["software"]) => {
            crate::firmware::image(p, &ctx, Kind::Software, req.query, req.block2)
                .map(Outcome::Image)
        }
        (_, ["telemetry" | "attributes" | "rpc" | "firmware" | "software"] | ["rpc", _]) => Ok(
            Outcome::Reply(Status::MethodNotAllowed, b"method not allowed".to_vec()),
        ),
        _ => Ok(Outcome::Reply(
            Status::NotFound,
            b"no such resource".to_vec(),
        )),
    };
    result.unwrap_or_else(|e| {
        tracing::info!(device = %ctx.id, error = %e, "CoAP request refused");
        metrics::counter!("device_messages_rejected_total").increment(1);
        error(e)
    })
}
