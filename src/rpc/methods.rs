//! The served methods: each path's service, method name, call shape and metric handles,
//! read once from the compiled descriptor sets. It does not count or time calls itself
//! (see [`super::metrics`]).

use std::{collections::HashMap, sync::Arc};

use super::metrics::{self, MethodMetrics};

/// The four gRPC call shapes, labelled as grpc-ecosystem's `grpc_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RpcKind {
    /// One request, one response.
    Unary,
    /// A request stream, one response.
    ClientStream,
    /// One request, a response stream.
    ServerStream,
    /// Both directions stream.
    BidiStream,
}

impl RpcKind {
    pub(super) fn label(self) -> &'static str {
        match self {
            RpcKind::Unary => "unary",
            RpcKind::ClientStream => "client_stream",
            RpcKind::ServerStream => "server_stream",
            RpcKind::BidiStream => "bidi_stream",
        }
    }
}

/// One RPC method and its metric handles.
pub struct MethodInfo {
    /// Fully qualified service, e.g. `user.v1.UserService`.
    pub service: &'static str,
    /// Method name, e.g. `GetUser`.
    pub method: &'static str,
    /// Call shape.
    pub kind: RpcKind,
    pub(super) metrics: MethodMetrics,
}

impl MethodInfo {
    fn new(service: &'static str, method: &'static str, kind: RpcKind) -> MethodInfo {
        MethodInfo {
            service,
            method,
            kind,
            metrics: MethodMetrics::new(service, method, kind.label()),
        }
    }
}

/// Every served method by path (`/package.Service/Method`).
pub struct MethodTable {
    by_path: HashMap<String, Arc<MethodInfo>>,
    unknown: Arc<MethodInfo>,
}

impl MethodTable {
    /// Reads services and methods from encoded `FileDescriptorSet`s. Names are leaked
    /// once (a few dozen short strings for the life of the process) so labels are
    /// `&'static str`.
    pub fn from_descriptor_sets(sets: &[&[u8]]) -> Result<MethodTable, prost::DecodeError> {
        use prost::Message as _;
        let mut by_path = HashMap::new();
        for set in sets {
            let set = prost_types::FileDescriptorSet::decode(*set)?;
            for file in set.file {
                let package = file.package.unwrap_or_default();
                for svc in file.service {
                    let svc_name = svc.name.unwrap_or_default();
                    let full = if package.is_empty() {
                        svc_name
                    } else {
                        format!("{package}.{svc_name}")
                    };
                    let service: &'static str = Box::leak(full.into_boxed_str());
                    for m in svc.method {
                        let name = m.name.unwrap_or_default();
                        let path = format!("/{service}/{name}");
                        let kind = match (
                            m.client_streaming.unwrap_or(false),
                            m.server_streaming.unwrap_or(false),
                        ) {
                            (false, false) => RpcKind::Unary,
                            (true, false) => RpcKind::ClientStream,
                            (false, true) => RpcKind::ServerStream,
                            (true, true) => RpcKind::BidiStream,
                        };
                        let method: &'static str = Box::leak(name.into_boxed_str());
                        by_path.insert(path, Arc::new(MethodInfo::new(service, method, kind)));
                    }
                }
            }
        }
        metrics::describe();
        Ok(MethodTable {
            by_path,
            unknown: Arc::new(MethodInfo::new("unknown", "unknown", RpcKind::Unary)),
        })
    }

    /// The method at `path`, or the shared `unknown` entry.
    pub fn get(&self, path: &str) -> &Arc<MethodInfo> {
        self.by_path.get(path).unwrap_or(&self.unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_kinds_come_from_the_descriptors() {
        let t = MethodTable::from_descriptor_sets(&[crate::proto::FILE_DESCRIPTOR_SET]).unwrap();
        let k = |p: &str| t.get(p).kind;
        assert_eq!(k("/user.v1.UserService/GetUser"), RpcKind::Unary);
        assert_eq!(k("/user.v1.UserService/StreamUsers"), RpcKind::ServerStream);
        assert_eq!(k("/activity.v1.ActivityService/Subscribe"), RpcKind::BidiStream);
        assert_eq!(t.get("/x.Y/Z").service, "unknown");
    }
}
