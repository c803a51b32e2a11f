//! The gRPC tool service of `grpc-tool-server` and `grpc-tool-client`
//! (`proto/tools.proto`), shared with the loopback tests and the bench.
//!
//! - [`pb`]: the code generated from `proto/tools.proto` (protox, no system
//!   `protoc`) and its [`FILE_DESCRIPTOR_SET`](pb::FILE_DESCRIPTOR_SET);
//! - [`Tools`]: the handlers, which read the receipt of the decision;
//! - [`capability_layer`]: the `CapabilityLayer` for this service (its
//!   descriptors and tool names);
//! - [`spawn`]: the server on a loopback listener, behind an API-key
//!   interceptor that says who is calling, then the capability layer;
//!   the service reads and writes compressed messages
//!   ([`tool_service`]: gzip, deflate, zstd, as the layer does).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use capnagent::JsonValue;
use capnagent::{Auditor, Capability, HolderKey, Timestamp, Verifier};
use capnagent_tonic::{
    AuthenticatedCaller, CapabilityLayer, Descriptors, Grpc, RECEIPT_METADATA, Verified, client,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::InterceptorLayer;
use tonic::transport::Server;
use tonic::{Request, Response, Status, Streaming};

use crate::{PLANNER, PLANNER_API_KEY, constant_time_eq};

pub mod pb {
    //! Generated from `proto/tools.proto` by `build.rs`.
    #![allow(missing_docs, clippy::all)]

    tonic::include_proto!("tools.v1");

    /// The encoded `FileDescriptorSet` of `proto/tools.proto`: what the
    /// capability layer decodes request messages with, and what a client
    /// computes a holder-of-key proof's args with.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/tools_descriptor.bin"));
}

use pb::tool_service_server::{ToolService, ToolServiceServer};
use pb::{LogLine, PurchaseReply, PurchaseRequest, UploadSummary, WireReply, WireRequest};

/// Method path of `Purchase`.
pub const PURCHASE: &str = "/tools.v1.ToolService/Purchase";
/// Method path of `Wire`.
pub const WIRE: &str = "/tools.v1.ToolService/Wire";
/// Method path of `UploadLogs` (client streaming).
pub const UPLOAD_LOGS: &str = "/tools.v1.ToolService/UploadLogs";

/// The tool name caveats use for `Purchase`.
pub const PURCHASE_TOOL: &str = "checkout.purchase";
/// The tool name caveats use for `Wire`.
pub const WIRE_TOOL: &str = "bank.wire";
/// The tool name caveats use for `UploadLogs`.
pub const UPLOAD_LOGS_TOOL: &str = "logs.upload";

/// The metadata key of the demo API key, which says who is calling.
pub const API_KEY_METADATA: &str = "x-api-key";

/// The handlers. A protected instance refuses any call that did not pass
/// the capability layer (`INTERNAL`: a wiring bug), answers with the
/// signature of the receipt that allowed the call, and (unless told not
/// to) returns the whole receipt in the response metadata
/// `capnagent-receipt-bin`.
#[derive(Debug, Clone)]
pub struct Tools {
    unprotected: bool,
    echo_receipts: bool,
    next_id: Arc<AtomicU64>,
}

impl Tools {
    /// Handlers that require a [`Verified`] call.
    pub fn protected() -> Tools {
        Tools {
            unprotected: false,
            echo_receipts: true,
            next_id: Arc::default(),
        }
    }

    /// Handlers for a server without the layer (the bench's baseline).
    pub fn unprotected() -> Tools {
        Tools {
            unprotected: true,
            echo_receipts: false,
            next_id: Arc::default(),
        }
    }

    /// Whether replies carry the allowing receipt in their metadata (the
    /// bench turns it off, so that both servers send the same replies).
    pub fn echo_receipts(mut self, echo: bool) -> Tools {
        self.echo_receipts = echo;
        self
    }

    /// The proof that the call was allowed (`None` without the layer).
    fn verified<T>(&self, request: &Request<T>) -> Result<Option<Verified>, Status> {
        if self.unprotected {
            return Ok(None);
        }
        capnagent_tonic::verified(request).map(|v| Some(v.clone()))
    }

    fn next_id(&self, prefix: &str) -> String {
        format!(
            "{prefix}-{}",
            self.next_id.fetch_add(1, Ordering::Relaxed) + 1
        )
    }
}

/// The signature of the receipt that allowed the call ("" without one).
fn signature(verified: &Option<Verified>) -> String {
    verified
        .as_ref()
        .map(|v| v.receipt().signature_hex())
        .unwrap_or_default()
}

impl Tools {
    /// The reply, with the allowing receipt's JSON in the response metadata
    /// [`RECEIPT_METADATA`] (the same key a denial carries it in).
    fn reply<T>(&self, verified: Option<Verified>, message: T) -> Response<T> {
        let mut response = Response::new(message);
        if let Some(verified) = verified.filter(|_| self.echo_receipts) {
            response.metadata_mut().insert_bin(
                RECEIPT_METADATA,
                MetadataValue::from_bytes(verified.receipt().to_json().as_bytes()),
            );
        }
        response
    }
}

#[tonic::async_trait]
impl ToolService for Tools {
    async fn purchase(
        &self,
        request: Request<PurchaseRequest>,
    ) -> Result<Response<PurchaseReply>, Status> {
        let verified = self.verified(&request)?;
        let message = PurchaseReply {
            order_id: self.next_id("order"),
            receipt_signature: signature(&verified),
        };
        Ok(self.reply(verified, message))
    }

    async fn wire(&self, request: Request<WireRequest>) -> Result<Response<WireReply>, Status> {
        let verified = self.verified(&request)?;
        let message = WireReply {
            transfer_id: self.next_id("transfer"),
            receipt_signature: signature(&verified),
        };
        Ok(self.reply(verified, message))
    }

    async fn upload_logs(
        &self,
        request: Request<Streaming<LogLine>>,
    ) -> Result<Response<UploadSummary>, Status> {
        let verified = self.verified(&request)?;
        let mut stream = request.into_inner();
        let mut lines = 0;
        while stream.message().await?.is_some() {
            lines += 1;
        }
        Ok(self.reply(verified, UploadSummary { lines }))
    }
}

/// Demo authentication as a tonic interceptor: `x-api-key` names the
/// caller, inserted as [`AuthenticatedCaller`] for the capability layer.
/// Calls without a known key never reach it. (A real server would look
/// keys up in a store, or take the caller from the client certificate.)
#[allow(clippy::result_large_err)] // tonic's interceptor signature
pub fn authenticate(mut request: Request<()>) -> Result<Request<()>, Status> {
    let key = request
        .metadata()
        .get(API_KEY_METADATA)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if constant_time_eq(key, PLANNER_API_KEY.as_bytes()) {
        request
            .extensions_mut()
            .insert(AuthenticatedCaller::new(PLANNER));
        Ok(request)
    } else {
        Err(Status::unauthenticated("unknown API key"))
    }
}

/// The capability layer for this service: its descriptors (so `arg.*`
/// caveats see the request messages) and friendly tool names. Fails when
/// the audit key is the root key, or the descriptors do not decode.
pub fn capability_layer(
    verifier: Verifier,
    auditor: Auditor,
) -> Result<CapabilityLayer, Box<dyn std::error::Error + Send + Sync>> {
    let grpc = Grpc::new()
        .file_descriptor_set(pb::FILE_DESCRIPTOR_SET)?
        .tool_name(PURCHASE, PURCHASE_TOOL)
        .tool_name(WIRE, WIRE_TOOL)
        .tool_name(UPLOAD_LOGS, UPLOAD_LOGS_TOOL);
    Ok(CapabilityLayer::with_protocol(verifier, auditor, grpc)?)
}

/// The encodings the service reads and writes: every one tonic supports,
/// which are the ones the capability layer reads (a call in another is
/// refused by the layer, `UNIMPLEMENTED`, before it is allowed).
pub const COMPRESSION: [CompressionEncoding; 3] = [
    CompressionEncoding::Gzip,
    CompressionEncoding::Deflate,
    CompressionEncoding::Zstd,
];

/// The generated server for `tools`, accepting compressed requests in
/// every encoding of [`COMPRESSION`] (grpcio and tonic clients that
/// compress) and compressing replies for clients that accept one.
pub fn tool_service(tools: Tools) -> ToolServiceServer<Tools> {
    COMPRESSION
        .into_iter()
        .fold(ToolServiceServer::new(tools), |server, encoding| {
            server.accept_compressed(encoding).send_compressed(encoding)
        })
}

/// Serves `tools` on `listener` until `shutdown` resolves, behind
/// [`authenticate`] and then, with `Some(layer)`, the capability layer;
/// with `None`, unprotected (the bench's baseline, same interceptor).
pub async fn serve(
    listener: TcpListener,
    capabilities: Option<CapabilityLayer>,
    tools: Tools,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let incoming = TcpListenerStream::new(listener);
    // The first layer added runs first: authenticate, then check.
    let mut server = Server::builder().layer(InterceptorLayer::new(authenticate));
    let tools = tool_service(tools);
    match capabilities {
        Some(capabilities) => {
            server
                .layer(capabilities)
                .add_service(tools)
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
        None => {
            server
                .add_service(tools)
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
    }
}

/// A server running in the background; see [`spawn`].
#[derive(Debug)]
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Running {
    /// `http://<addr>`, for a tonic client.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Shuts the server down and waits for it.
    pub async fn stop(self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        // The server may have stopped already; then there is no one to tell.
        let _ = self.shutdown.send(());
        self.task.await??;
        Ok(())
    }
}

/// Starts [`serve`] on `addr` (port 0 for any free port) in a tokio task.
pub async fn spawn(
    addr: SocketAddr,
    capabilities: Option<CapabilityLayer>,
    tools: Tools,
) -> std::io::Result<Running> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (shutdown, stop) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, capabilities, tools, async {
        // A dropped sender stops the server too.
        let _ = stop.await;
    }));
    Ok(Running {
        addr,
        shutdown,
        task,
    })
}

/// The tool name [`capability_layer`] gives a method path (the path itself
/// for a method it does not name).
pub fn tool_for(path: &str) -> &str {
    match path {
        PURCHASE => PURCHASE_TOOL,
        WIRE => WIRE_TOOL,
        UPLOAD_LOGS => UPLOAD_LOGS_TOOL,
        other => other,
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a client sends with each call: the API key (who it is), the
/// capability token, and for a holder-bound capability a fresh proof over
/// the call's tool and args.
pub struct Credentials {
    api_key: MetadataValue<Ascii>,
    token: String,
    holder: Option<(HolderKey, Capability)>,
    descriptors: Descriptors,
}

impl Credentials {
    /// Bearer credentials.
    pub fn new(api_key: &str, token: &str) -> Result<Credentials, BoxError> {
        let mut api_key = MetadataValue::try_from(api_key)?;
        api_key.set_sensitive(true);
        Ok(Credentials {
            api_key,
            token: token.to_owned(),
            holder: None,
            descriptors: Descriptors::decode(pb::FILE_DESCRIPTOR_SET)?,
        })
    }

    /// Signs a proof with `holder` on every call (the token must be bound
    /// to its public key).
    pub fn with_holder_key(mut self, holder: HolderKey) -> Result<Credentials, capnagent::Error> {
        let cap = Capability::parse(&self.token)?;
        self.holder = Some((holder, cap));
        Ok(self)
    }

    /// A unary call of `path` with `message`, at the wall-clock time: the
    /// proof's args are computed from the message exactly as the server's
    /// layer computes them.
    pub fn unary<M: prost::Message>(&self, path: &str, message: M) -> Result<Request<M>, BoxError> {
        // Only a proof needs the args.
        let args = match self.holder {
            Some(_) => self.descriptors.args_for(path, &message)?,
            None => JsonValue::Null,
        };
        self.request(path, message, &args, unix_millis())
    }

    /// A call of `path` whose args (for the proof) are `args`, proved at
    /// `now_ms`. For a streaming call the args are `null`.
    pub fn request<T>(
        &self,
        path: &str,
        message: T,
        args: &JsonValue,
        now_ms: u64,
    ) -> Result<Request<T>, BoxError> {
        let mut request = Request::new(message);
        let metadata = request.metadata_mut();
        metadata.insert(API_KEY_METADATA, self.api_key.clone());
        client::bearer(metadata, &self.token)?;
        if let Some((holder, cap)) = &self.holder {
            client::attach_proof(metadata, holder, cap, tool_for(path), args, now_ms)?;
        }
        Ok(request)
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("token", &format_args!(".."))
            .field("holder", &self.holder.as_ref().map(|(key, _)| key))
            .finish_non_exhaustive()
    }
}

/// The wall clock in milliseconds since the Unix epoch.
pub fn unix_millis() -> u64 {
    Timestamp::now().unix_millis()
}
