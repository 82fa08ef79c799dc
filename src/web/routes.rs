//! The REST routes, read from the `google.api.http` rules of the compiled protos: the one
//! source for routing (here), the JSON bodies (`json`) and the OpenAPI document
//! (`openapi`). A new annotated RPC is routed, mapped and documented without code here.

use http::Method;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, MethodDescriptor, Value};

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Must equal this.
    Literal(String),
    /// Binds the (percent-decoded) segment to this field path of the request, e.g.
    /// `["start", "user_id"]`.
    Field(Vec<String>),
}

/// One REST route: an HTTP method and path template bound to an RPC.
#[derive(Debug, Clone)]
pub struct Route {
    /// GET, POST, PATCH, DELETE or PUT.
    pub method: Method,
    /// The template, as written in the rule (`/v1/users/{user_id}`).
    pub template: String,
    /// Its segments.
    pub segments: Vec<Segment>,
    /// `body: "*"`: the JSON body is the request message (less the path's fields).
    pub body: bool,
    /// The RPC.
    pub rpc: MethodDescriptor,
}

impl Route {
    /// `/user.v1.UserService/GetUser`: the gRPC path the route calls.
    pub fn grpc_path(&self) -> String {
        format!("/{}/{}", self.rpc.parent_service().full_name(), self.rpc.name())
    }

    /// Server-streaming RPCs are served as Server-Sent Events.
    pub fn is_stream(&self) -> bool {
        self.rpc.is_server_streaming()
    }

    /// The path variables' values when `path` matches.
    fn bind<'p>(&self, path: &[&'p str]) -> Option<Vec<(&[String], &'p str)>> {
        if path.len() != self.segments.len() {
            return None;
        }
        let mut vars = Vec::new();
        for (seg, part) in self.segments.iter().zip(path) {
            match seg {
                Segment::Literal(l) if l == part => {}
                Segment::Literal(_) => return None,
                Segment::Field(_) if part.is_empty() => return None,
                Segment::Field(f) => vars.push((f.as_slice(), *part)),
            }
        }
        Some(vars)
    }
}

/// What a request's method and path select.
pub enum Found<'r> {
    /// This route, with its path variables (field path, raw segment).
    Route(&'r Route, Vec<(&'r [String], String)>),
    /// The path exists with other methods (405, `Allow`).
    WrongMethod(Vec<Method>),
    /// No route has this path (404).
    NotFound,
}

/// Every annotated RPC's route.
pub struct Routes {
    routes: Vec<Route>,
}

/// Why the protos' rules could not be read (a build defect: the tests catch it).
#[derive(Debug, thiserror::Error)]
#[error("google.api.http rule of {rpc}: {reason}")]
pub struct RuleError {
    rpc: String,
    reason: String,
}

impl Routes {
    /// Reads the `google.api.http` rule of every method in `pool`.
    pub fn from_pool(pool: &DescriptorPool) -> Result<Routes, RuleError> {
        let Some(http) = pool.get_extension_by_name("google.api.http") else {
            return Ok(Routes { routes: Vec::new() });
        };
        let mut routes = Vec::new();
        for service in pool.services() {
            for rpc in service.methods() {
                let options = rpc.options();
                if !options.has_extension(&http) {
                    continue;
                }
                let Value::Message(rule) = options.get_extension(&http).into_owned() else {
                    continue;
                };
                routes.push(route(rpc, &rule)?);
            }
        }
        Ok(Routes { routes })
    }

    /// All routes, in proto order.
    pub fn all(&self) -> &[Route] {
        &self.routes
    }

    /// The route for `method` and `path` (already stripped of its query).
    pub fn find(&self, method: &Method, path: &str) -> Found<'_> {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let mut allowed = Vec::new();
        for r in &self.routes {
            if let Some(vars) = r.bind(&parts) {
                // HEAD is answered as GET by the HTTP layer's rules.
                if r.method == method || (r.method == Method::GET && method == Method::HEAD) {
                    let vars = vars
                        .into_iter()
                        .map(|(f, raw)| (f, decode_segment(raw)))
                        .collect();
                    return Found::Route(r, vars);
                }
                allowed.push(r.method.clone());
            }
        }
        if allowed.is_empty() {
            Found::NotFound
        } else {
            Found::WrongMethod(allowed)
        }
    }
}

fn decode_segment(raw: &str) -> String {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8_lossy()
        .into_owned()
}

fn route(rpc: MethodDescriptor, rule: &DynamicMessage) -> Result<Route, RuleError> {
    let err = |reason: String| RuleError {
        rpc: rpc.full_name().to_string(),
        reason,
    };
    let text = |name: &str| {
        rule.get_field_by_name(name)
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let mut pattern = None;
    for (name, method) in [
        ("get", Method::GET),
        ("post", Method::POST),
        ("put", Method::PUT),
        ("delete", Method::DELETE),
        ("patch", Method::PATCH),
    ] {
        if rule.has_field_by_name(name) {
            pattern = Some((method, text(name)));
        }
    }
    let Some((method, template)) = pattern else {
        return Err(err("only get, post, put, delete and patch are supported".into()));
    };
    let body = match text("body").as_str() {
        "" => false,
        "*" => true,
        other => return Err(err(format!("body {other:?}: only \"*\" or none is supported"))),
    };
    if !template.starts_with('/') {
        return Err(err(format!("path {template:?} must start with /")));
    }
    let input = rpc.input();
    let mut segments = Vec::new();
    for part in template.trim_start_matches('/').split('/') {
        match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            Some(var) => {
                let path: Vec<String> = var.split('.').map(str::to_string).collect();
                field_at(&input, &path).map_err(err)?;
                segments.push(Segment::Field(path));
            }
            None if part.contains(['{', '}', '*', ':']) => {
                return Err(err(format!("path segment {part:?} is not supported")))
            }
            None => segments.push(Segment::Literal(part.to_string())),
        }
    }
    Ok(Route {
        method,
        template,
        segments,
        body,
        rpc,
    })
}

/// The scalar field at `path` (proto names) below `message`.
pub fn field_at(
    message: &MessageDescriptor,
    path: &[String],
) -> Result<prost_reflect::FieldDescriptor, String> {
    let mut message = message.clone();
    let mut found = None;
    for (i, name) in path.iter().enumerate() {
        let field = message
            .get_field_by_name(name)
            .ok_or_else(|| format!("{} has no field {name}", message.full_name()))?;
        if i + 1 < path.len() {
            match field.kind() {
                prost_reflect::Kind::Message(m) if !field.is_list() && !field.is_map() => message = m,
                _ => return Err(format!("{name} is not a message field")),
            }
        }
        found = Some(field);
    }
    found.ok_or_else(|| "empty field path".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> Routes {
        let pool = DescriptorPool::decode(crate::proto::FILE_DESCRIPTOR_SET).unwrap();
        Routes::from_pool(&pool).unwrap()
    }

    #[test]
    fn every_route_of_the_spec_comes_from_the_protos() {
        let r = routes();
        let mut got: Vec<String> = r
            .all()
            .iter()
            .map(|r| format!("{} {} {}", r.method, r.template, r.rpc.name()))
            .collect();
        got.sort();
        let mut want = vec![
            "POST /v1/auth/login Login",
            "POST /v1/auth/refresh Refresh",
            "POST /v1/auth/logout Logout",
            "GET /v1/me WhoAmI",
            "POST /v1/users CreateUser",
            "GET /v1/users ListUsers",
            "GET /v1/users/{user_id} GetUser",
            "PATCH /v1/users/{user_id} UpdateUser",
            "DELETE /v1/users/{user_id} DeleteUser",
            "POST /v1/events Publish",
            "GET /v1/users/{user_id}/events ListEvents",
            "GET /v1/users/{user_id}/cursors/{consumer_id} GetCursor",
            "POST /v1/users/{user_id}/cursors/{consumer_id}/ack Ack",
            "GET /v1/users/{start.user_id}/events/stream Follow",
        ];
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn paths_bind_variables_and_tell_404_from_405() {
        let r = routes();
        match r.find(&Method::GET, "/v1/users/42/cursors/phone%201") {
            Found::Route(route, vars) => {
                assert_eq!(route.rpc.name(), "GetCursor");
                assert_eq!(vars.len(), 2);
                assert_eq!(vars[1].1, "phone 1");
            }
            _ => panic!("GetCursor not found"),
        }
        match r.find(&Method::GET, "/v1/users/42/events/stream") {
            Found::Route(route, vars) => {
                assert!(route.is_stream());
                assert_eq!(vars[0].0, ["start".to_string(), "user_id".to_string()]);
            }
            _ => panic!("Follow not found"),
        }
        assert!(matches!(r.find(&Method::PUT, "/v1/users/42"), Found::WrongMethod(m) if m.len() == 3));
        assert!(matches!(r.find(&Method::GET, "/v1/nope"), Found::NotFound));
        assert!(matches!(
            r.find(&Method::GET, "/v1/users//events"),
            Found::NotFound
        ));
    }
}
