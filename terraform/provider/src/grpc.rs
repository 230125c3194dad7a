//! The gRPC service Terraform talks to: `tfplugin6.Provider` and go-plugin's
//! `plugin.GRPCController/Shutdown`, dispatched by path. Anything else is
//! `UNIMPLEMENTED`, which Terraform and go-plugin treat as "not offered".

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::watch;
use tonic::body::Body;
use tonic::server::{Grpc, UnaryService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

use crate::proto;
use crate::provider::Provider;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// One unary method as a closure from request message to response message.
struct Unary<F>(F);

impl<F, Req, Resp, Fut> UnaryService<Req> for Unary<F>
where
    F: FnMut(Req) -> Fut,
    Fut: Future<Output = Resp> + Send + 'static,
{
    type Response = Resp;
    type Future = BoxFuture<Result<Response<Resp>, Status>>;

    fn call(&mut self, request: Request<Req>) -> Self::Future {
        let fut = (self.0)(request.into_inner());
        Box::pin(async move { Ok(Response::new(fut.await)) })
    }
}

async fn unary<Req, Resp, F, Fut>(req: http::Request<Body>, f: F) -> http::Response<Body>
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
    F: FnMut(Req) -> Fut,
    Fut: Future<Output = Resp> + Send + 'static,
{
    Grpc::new(ProstCodec::<Resp, Req>::default())
        .unary(Unary(f), req)
        .await
}

#[derive(Clone, Debug)]
pub struct Service {
    pub provider: Arc<Provider>,
    /// Set by `Shutdown` (Terraform is done with this plugin).
    pub shutdown: watch::Sender<bool>,
}

impl tower_service::Service<http::Request<Body>> for Service {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let p = self.provider.clone();
        let shutdown = self.shutdown.clone();
        Box::pin(async move { Ok(dispatch(p, shutdown, req).await) })
    }
}

async fn dispatch(
    p: Arc<Provider>,
    shutdown: watch::Sender<bool>,
    req: http::Request<Body>,
) -> http::Response<Body> {
    let path = req.uri().path().to_owned();
    let method = path.strip_prefix("/tfplugin6.Provider/");
    match (path.as_str(), method) {
        ("/plugin.GRPCController/Shutdown", _) => {
            unary(req, move |_: proto::Empty| {
                let _ = shutdown.send(true);
                async { proto::Empty {} }
            })
            .await
        }
        (_, Some("GetProviderSchema")) => {
            unary(req, move |_: proto::Empty| {
                let r = p.schema();
                async { r }
            })
            .await
        }
        (_, Some("ValidateProviderConfig")) => {
            unary(req, |_: proto::ValidateProviderConfigRequest| async {
                proto::ValidateProviderConfigResponse::default()
            })
            .await
        }
        (_, Some("ValidateResourceConfig")) => {
            unary(req, move |r: proto::ValidateConfigRequest| {
                let diagnostics = p.validate_resource(&r.type_name, r.config.as_ref());
                async { proto::DiagnosticsResponse { diagnostics } }
            })
            .await
        }
        (_, Some("ValidateDataResourceConfig")) => {
            unary(req, |_: proto::ValidateConfigRequest| async {
                proto::DiagnosticsResponse::default()
            })
            .await
        }
        (_, Some("UpgradeResourceState")) => {
            unary(req, move |r: proto::UpgradeResourceStateRequest| {
                let json = r.raw_state.map(|s| s.json).unwrap_or_default();
                let resp = match p.upgrade(&r.type_name, &json) {
                    Ok(v) => proto::UpgradeResourceStateResponse {
                        upgraded_state: Some(v),
                        diagnostics: Vec::new(),
                    },
                    Err(d) => proto::UpgradeResourceStateResponse {
                        upgraded_state: None,
                        diagnostics: vec![d],
                    },
                };
                async { resp }
            })
            .await
        }
        (_, Some("ConfigureProvider")) => {
            unary(req, move |r: proto::ConfigureProviderRequest| {
                let diagnostics = p.configure(r.config.as_ref());
                async { proto::DiagnosticsResponse { diagnostics } }
            })
            .await
        }
        (_, Some("ReadResource")) => {
            unary(req, move |r: proto::ReadResourceRequest| {
                let p = p.clone();
                async move {
                    let ty = r.type_name.clone();
                    match p.read(&ty, r.current_state.as_ref()).await {
                        Ok(v) => proto::ReadResourceResponse {
                            new_state: p.encode_state(&ty, &v),
                            diagnostics: Vec::new(),
                            private: r.private,
                        },
                        Err(diagnostics) => proto::ReadResourceResponse {
                            new_state: r.current_state,
                            diagnostics,
                            private: r.private,
                        },
                    }
                }
            })
            .await
        }
        (_, Some("PlanResourceChange")) => {
            unary(req, move |r: proto::PlanResourceChangeRequest| {
                let p = p.clone();
                async move { p.plan(&r).await }
            })
            .await
        }
        (_, Some("ApplyResourceChange")) => {
            unary(req, move |r: proto::ApplyResourceChangeRequest| {
                let p = p.clone();
                async move { p.apply(&r).await }
            })
            .await
        }
        (_, Some("ImportResourceState")) => {
            unary(req, move |r: proto::ImportResourceStateRequest| {
                let resp = match p.import(&r.type_name, &r.id) {
                    Ok(i) => proto::ImportResourceStateResponse {
                        imported_resources: vec![i],
                        diagnostics: Vec::new(),
                    },
                    Err(diagnostics) => proto::ImportResourceStateResponse {
                        imported_resources: Vec::new(),
                        diagnostics,
                    },
                };
                async { resp }
            })
            .await
        }
        (_, Some("ReadDataSource")) => {
            unary(req, move |r: proto::ReadDataSourceRequest| {
                let p = p.clone();
                async move {
                    match p.read_data(&r.type_name).await {
                        Ok(v) => proto::ReadDataSourceResponse {
                            state: Some(v),
                            diagnostics: Vec::new(),
                        },
                        Err(diagnostics) => proto::ReadDataSourceResponse {
                            state: None,
                            diagnostics,
                        },
                    }
                }
            })
            .await
        }
        (_, Some("StopProvider")) => {
            unary(req, |_: proto::Empty| async {
                proto::StopProviderResponse::default()
            })
            .await
        }
        _ => Status::unimplemented(format!("{path} is not offered by this plugin")).into_http(),
    }
}
