//! A small REST client for one server: any call (status and JSON body),
//! registering a user, creating a document; and the error body's code.
//!
//! Must not import: `tandem_core` (REST is driven over HTTP only).

use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

use crate::server::TestServer;

/// Calls on one server, with or without a bearer token.
pub struct Api<'a> {
    server: &'a TestServer,
    http: Client,
}

impl<'a> Api<'a> {
    pub fn new(server: &'a TestServer) -> Self {
        Api {
            server,
            http: Client::new(),
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, self.server.http(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Register and return (token, user id).
    pub async fn user(&self, name: &str) -> (String, String) {
        let body = json!({"username": name, "password": "correct horse battery", "name": name.to_uppercase()});
        let (st, v) = self
            .call(Method::POST, "/api/auth/register", None, Some(body))
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        (
            v["token"].as_str().unwrap().into(),
            v["user"]["id"].as_str().unwrap().into(),
        )
    }

    pub async fn create(&self, token: &str, title: &str, content: &str) -> Value {
        let body = json!({"title": title, "content": content});
        let (st, v) = self
            .call(Method::POST, "/api/documents", Some(token), Some(body))
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        v
    }
}

impl Api<'_> {
    /// Create a document and return its id.
    pub async fn create_id(&self, token: &str, title: &str, content: &str) -> String {
        let v = self.create(token, title, content).await;
        v["id"].as_str().unwrap().to_owned()
    }

    /// `GET /api/documents/{id}` as `token`: status and body.
    pub async fn document(&self, token: &str, id: &str) -> (StatusCode, Value) {
        let path = format!("/api/documents/{id}");
        self.call(Method::GET, &path, Some(token), None).await
    }
}

pub fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}
